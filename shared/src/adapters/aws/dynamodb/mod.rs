//! The DynamoDB store: every store port except the scheduler, on two tables.
//!
//! The layout follows the access patterns the ports allow (get by key, query
//! by key prefix and sort range, conditional writes, transactions of at most
//! [`MAX_TRANSACTION_ITEMS`](crate::ports::MAX_TRANSACTION_ITEMS) items), and
//! no request path scans a table. `docs/dynamodb.md` describes the tables,
//! keys, indexes and every access pattern with its cost.
//!
//! - The state table keeps each device in its own partition with its targets
//!   and queued commands, so a check-in reads everything in one Query. An
//!   operation's partition contains the operation and 16 counter shards.
//! - The events table keeps each operation's audit trail in ULID order, with
//!   a TTL attribute so that DynamoDB deletes events after their retention.
//!
//! Records are stored as JSON in a `data` attribute beside the attributes
//! that keys, indexes and filters need, as the SQLite store keeps them in a
//! `data` column. Attributes that a write changes without rewriting the JSON
//! (`revision`, `current_operation_id`, `touched_at`) take precedence over
//! the copy in `data` when an item is read.

mod assign;
mod catalog;
mod codec;
mod counts;
mod cursor;
mod devices;
mod events;
mod groups;
mod operations;
mod read;
mod schema;
mod write;

#[cfg(test)]
mod tests;

use aws_sdk_dynamodb::Client;

pub use schema::{
    COUNTER_SHARDS, DEVICE_TIMELINE, EVENTS_BY_DEVICE, EVENTS_BY_EXPIRY, EXPIRY_SHARDS,
    GROUPS_BY_ID, INVENTORY, MEMBERS_BY_DEVICE, OPERATIONS_BY_CREATED, TARGETS_BY_OPERATION,
    TARGETS_BY_STATUS, TTL_ATTRIBUTE, create_tables,
};

/// Names of the two tables the store uses. Nothing in the adapter hard-codes
/// them, so that tests and deployments choose their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoTables {
    /// Devices, targets, commands, operations with their counters, groups,
    /// idempotency keys and the catalog.
    pub state: String,
    /// The audit trail, with a TTL on `expires_at`.
    pub events: String,
}

impl DynamoTables {
    /// Tables named `<prefix>-state` and `<prefix>-events`.
    pub fn with_prefix(prefix: &str) -> Self {
        DynamoTables {
            state: format!("{prefix}-state"),
            events: format!("{prefix}-events"),
        }
    }
}

/// Failures specific to the DynamoDB adapter. They reach callers as the
/// `source` of [`StoreError::Backend`](crate::ports::StoreError::Backend),
/// and never carry item contents.
#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    #[error("{record} item has no attribute {attribute:?}")]
    MissingAttribute {
        record: &'static str,
        attribute: &'static str,
    },
    #[error("{record} item has an invalid {attribute:?} attribute: {reason}")]
    InvalidAttribute {
        record: &'static str,
        attribute: &'static str,
        reason: String,
    },
    #[error(
        "{what} needs {items} items in one transaction, over DynamoDB's limit of {limit}: \
         split it into smaller changes"
    )]
    TooManyItems {
        what: String,
        items: usize,
        limit: usize,
    },
    #[error("{count} assignments in one call, over the limit of {limit}: split them into chunks")]
    TooManyAssignments { count: usize, limit: usize },
    #[error(
        "{what} of {bytes} bytes exceeds DynamoDB's item size limit of {limit} bytes: \
         store a smaller one"
    )]
    ItemTooLarge {
        what: &'static str,
        bytes: usize,
        limit: usize,
    },
    #[error("DynamoDB left {count} {what} unprocessed after {attempts} attempts: retry later")]
    Unprocessed {
        what: &'static str,
        count: usize,
        attempts: u32,
    },
    #[error("transaction cancelled with reasons [{codes}]")]
    Cancelled { codes: String },
    #[error("table {table} did not become active within {seconds} s: check it in the console")]
    TableNotActive { table: String, seconds: u64 },
}

/// The DynamoDB-backed store. Implements [`DeviceStore`](crate::ports::DeviceStore),
/// [`GroupStore`](crate::ports::GroupStore), [`OperationStore`](crate::ports::OperationStore),
/// [`EventStore`](crate::ports::EventStore) and [`CatalogStore`](crate::ports::CatalogStore).
/// Schedules belong to EventBridge Scheduler, not to this store.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    tables: DynamoTables,
}

impl DynamoStore {
    /// Creates a store on existing tables, which [`create_tables`] makes.
    pub fn new(client: Client, tables: DynamoTables) -> Self {
        DynamoStore { client, tables }
    }

    pub fn tables(&self) -> &DynamoTables {
        &self.tables
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}
