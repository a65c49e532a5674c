//! Storage, scheduling and push ports.
//!
//! The traits are shaped by DynamoDB's access patterns so that the embedded
//! SQLite adapter and the AWS adapter can both honour them: get by key, query
//! by key prefix and sort range, conditional write, and transactions of at
//! most [`MAX_TRANSACTION_ITEMS`] items. Each role has its own narrow trait;
//! each method's doc states its contract.
//!
//! Concurrency model: every mutable record carries a `revision`. Writes that
//! depend on what the caller read name the revision they expect, and a write
//! whose expectation no longer holds fails with [`StoreError::Conflict`]
//! without changing anything. Callers re-read and retry.

#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Device, Event, EventType, Group, Operation, OperationState, OperationType, Platform, Protocol,
    Target, TargetStatus,
};

/// DynamoDB's limit on items in one `TransactWriteItems` call; the embedded
/// store honours it too so that both behave alike.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// Errors from any store adapter.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write found a different revision or state than expected.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A cursor that this store did not issue, or one that was tampered with.
    #[error("invalid cursor {0:?}: pass back the next_cursor of a previous page unchanged")]
    InvalidCursor(String),
    /// An argument outside the port's rules, such as a blob key with `..`.
    /// The message names the value, the rule and the fix. Nothing was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The backend failed; the detail is in `source`.
    #[error("store {operation} failed")]
    Backend {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    pub fn backend(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Backend {
            operation,
            source: source.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A page request: at most `limit` items after the opaque `cursor`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub fn first(limit: usize) -> Self {
        PageRequest {
            limit,
            cursor: None,
        }
    }
}

/// One page of a list, with the cursor of the next page when there is one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Filters for the device inventory.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Case-insensitive substring of the name or serial number.
    pub q: Option<String>,
    pub group_id: Option<String>,
    pub os_version: Option<String>,
    pub platform: Option<Platform>,
}

/// A device with what the device endpoints need to reply to it, read in one go
/// (one query of the device's partition on DynamoDB).
#[derive(Debug, Clone)]
pub struct DeviceContext {
    pub device: Device,
    /// The target of the device's current operation, if it has one.
    pub target: Option<Target>,
    /// Commands without a result yet, oldest first.
    pub commands: Vec<QueuedCommand>,
}

/// The life-cycle stage of a queued MDM command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Waiting to be sent.
    Queued,
    /// Sent; no result yet.
    Sent,
    /// The device replied NotNow. The command is sent again after its next Idle.
    NotNow,
}

/// An MDM command waiting for a device.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedCommand {
    /// CommandUUID, a ULID so that newer commands sort after older ones.
    pub uuid: String,
    pub device_id: String,
    pub operation_id: Option<String>,
    pub request_type: String,
    /// The command's plist body, as sent.
    pub body: Vec<u8>,
    pub state: CommandState,
    pub created_at: Timestamp,
}

/// A change to one command, inside a [`Change`].
#[derive(Debug, Clone, PartialEq)]
pub enum CommandWrite {
    /// Add or replace the command.
    Put(QueuedCommand),
    /// The device answered it: remove it from the queue.
    Remove { device_id: String, uuid: String },
}

/// A device write inside a [`Change`]: the new record and the revision the
/// caller read (`None` to create it, failing if it exists).
#[derive(Debug, Clone)]
pub struct DeviceWrite {
    pub device: Device,
    pub expected_revision: Option<u64>,
}

/// A target write inside a [`Change`]: the new record, the revision and
/// status the caller read. The store moves the operation's counts from
/// `previous_status` to the new status in the same transaction and derives
/// the operation's lifecycle state from the counts.
#[derive(Debug, Clone)]
pub struct TargetWrite {
    pub target: Target,
    pub expected_revision: u64,
    pub previous_status: TargetStatus,
}

/// Everything one device report changes, written in one transaction: the
/// device, its target with the operation's counts, events and commands.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub device: Option<DeviceWrite>,
    pub target: Option<TargetWrite>,
    pub events: Vec<Event>,
    pub commands: Vec<CommandWrite>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.device.is_none()
            && self.target.is_none()
            && self.events.is_empty()
            && self.commands.is_empty()
    }
}

/// The lifecycle-state changes a transaction made to operations, so the caller
/// can record `operation_started` and `operation_completed` events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// `(operation id, state before, state after)` for each operation whose
    /// derived state changed.
    pub state_changes: Vec<(String, OperationState, OperationState)>,
}

/// Device inventory and the device-side transaction.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    async fn get_device(&self, udid: &str) -> StoreResult<Option<Device>>;

    /// Devices by UDID; unknown UDIDs are left out. Order follows `udids`.
    async fn get_devices(&self, udids: &[String]) -> StoreResult<Vec<Device>>;

    /// Reads the device, its current target and its pending commands in one read.
    async fn load_context(&self, udid: &str) -> StoreResult<Option<DeviceContext>>;

    /// Inventory list ordered by UDID.
    async fn list_devices(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Device>>;

    /// Records when devices were last seen. Not transactional and not
    /// revision-checked: a later time never goes back to an earlier one.
    async fn touch_devices(&self, seen: &[(String, Timestamp)]) -> StoreResult<()>;

    /// Applies a [`Change`] atomically. Fails with [`StoreError::Conflict`],
    /// changing nothing, when a device or target revision differs from the
    /// one expected. The store bumps each written revision by one.
    async fn commit(&self, change: Change) -> StoreResult<CommitOutcome>;
}

/// Device groups.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// Creates a group; conflict when the id exists.
    async fn create_group(&self, group: &Group) -> StoreResult<()>;
    async fn get_group(&self, id: &str) -> StoreResult<Option<Group>>;
    /// Replaces name and time zone; not found when the id is unknown.
    async fn update_group(&self, group: &Group) -> StoreResult<()>;
    async fn list_groups(&self, page: &PageRequest) -> StoreResult<Page<Group>>;
    /// Replaces the member list. Idempotent.
    async fn set_members(&self, group_id: &str, udids: &[String]) -> StoreResult<()>;
    async fn members(&self, group_id: &str) -> StoreResult<Vec<String>>;
    /// Groups of each device, for the given devices.
    async fn groups_of(&self, udids: &[String]) -> StoreResult<Vec<(String, Group)>>;
}

/// Filters for the operations list. Serializable so that an export job
/// can store the filter it runs with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperationFilter {
    pub states: Vec<OperationState>,
    pub product_version: Option<String>,
    pub group_id: Option<String>,
    pub kind: Option<OperationType>,
    pub protocol: Option<Protocol>,
    /// Created at or after.
    pub from: Option<Timestamp>,
    /// Created before.
    pub to: Option<Timestamp>,
}

/// Filters for an operation's targets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetFilter {
    pub status: Option<TargetStatus>,
    pub group_id: Option<String>,
    /// Case-insensitive substring of the device name or serial number.
    pub q: Option<String>,
    pub time_zone: Option<String>,
    /// Only targets not in a final status.
    pub active_only: bool,
}

/// Puts one device into an operation, moving it out of another if needed.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub target: Target,
    /// The device's current operation as the caller read it; the write is
    /// conditional on it being unchanged.
    pub expected_current: Option<String>,
    /// The target being replaced in the earlier operation, with the revision
    /// the caller read: it is removed from that operation's list and counts.
    pub replaces: Option<(String, u64)>,
    pub events: Vec<Event>,
    pub commands: Vec<QueuedCommand>,
}

/// The result of one [`Assignment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignOutcome {
    Assigned,
    /// The device's current operation or replaced target changed since it
    /// was read; nothing was written for this device.
    Conflict,
}

/// Operations, their targets and their lifecycle.
#[async_trait]
pub trait OperationStore: Send + Sync {
    /// Stores a new operation with zero counts. Conflict when the id exists.
    async fn insert_operation(&self, operation: &Operation) -> StoreResult<()>;

    /// Returns the operation with its current counts and derived state.
    async fn get_operation(&self, id: &str) -> StoreResult<Option<Operation>>;

    /// Operations, newest first.
    async fn list_operations(
        &self,
        filter: &OperationFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Operation>>;

    /// Applies up to [`MAX_TRANSACTION_ITEMS`] assignments. Each assignment
    /// is atomic on its own (device pointer, removed target, new target,
    /// counts of both operations, events, commands); a conflicting one is
    /// reported and leaves nothing behind, and the others still apply.
    async fn assign(
        &self,
        assignments: Vec<Assignment>,
    ) -> StoreResult<(Vec<AssignOutcome>, CommitOutcome)>;

    async fn get_target(&self, operation_id: &str, udid: &str) -> StoreResult<Option<Target>>;

    /// Lists an operation's targets ordered by device id.
    async fn list_targets(
        &self,
        operation_id: &str,
        filter: &TargetFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Target>>;

    /// Marks the operation cancelled at `at`. Conflict when it is already
    /// cancelled or finished. Targets are cancelled one by one afterwards.
    async fn mark_cancelled(&self, operation_id: &str, at: Timestamp) -> StoreResult<()>;

    /// Returns the operation recorded for an idempotency key, if any.
    async fn lookup_idempotency_key(&self, key: &str) -> StoreResult<Option<String>>;

    /// Records `operation_id` for an idempotency key, or returns the
    /// operation already recorded for it.
    async fn claim_idempotency_key(
        &self,
        key: &str,
        operation_id: &str,
        at: Timestamp,
    ) -> StoreResult<Option<String>>;
}

/// Filters for an operation's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventFilter {
    pub device_id: Option<String>,
    pub event_type: Option<EventType>,
}

/// The audit trail.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends events outside any other write. Idempotent by event id.
    async fn append(&self, events: &[Event]) -> StoreResult<()>;

    /// An operation's events in time order, leaving out events that expired
    /// at `now` even if they have not been purged yet.
    async fn list_events(
        &self,
        operation_id: &str,
        filter: &EventFilter,
        now: Timestamp,
        page: &PageRequest,
    ) -> StoreResult<Page<Event>>;

    /// Lists a device's events across all operations in time (ULID) order,
    /// for its timeline, leaving out events that expired at `now` even if
    /// they have not been purged yet. Events without a device are not listed.
    async fn list_device_events(
        &self,
        device_id: &str,
        now: Timestamp,
        page: &PageRequest,
    ) -> StoreResult<Page<Event>>;

    /// Deletes events that expired at `now`; returns how many.
    async fn purge_expired(&self, now: Timestamp) -> StoreResult<u64>;
}

/// Work the scheduler runs at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// MDM enforcement deadline for the devices of one time zone.
    MdmDeadline {
        operation_id: String,
        time_zone: String,
    },
    /// The operation's update expires: waiting targets become Deprecated.
    UpdateExpiry { operation_id: String },
    /// Purge events past their retention.
    PurgeEvents,
    /// Start retries that are due and wake or fail stalled targets, across
    /// every operation in progress. Runs periodically, not per operation.
    Sweep,
    /// A reminder before the enforcement deadline, for the devices of one time zone.
    Reminder {
        operation_id: String,
        time_zone: String,
        due_at: Timestamp,
    },
    /// Write the CSV file of one export request.
    Export { export_id: String },
    /// Download Apple's catalog, store it and use it from now on.
    RefreshCatalog,
}

impl Job {
    pub fn operation_id(&self) -> Option<&str> {
        match self {
            Job::MdmDeadline { operation_id, .. }
            | Job::UpdateExpiry { operation_id }
            | Job::Reminder { operation_id, .. } => Some(operation_id),
            Job::PurgeEvents | Job::Sweep | Job::Export { .. } | Job::RefreshCatalog => None,
        }
    }
}

/// A one-time schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Stable name, so scheduling the same job twice replaces it.
    pub id: String,
    pub due_at: Timestamp,
    pub job: Job,
}

/// One-time schedules. Locally they live in the store and an in-process loop
/// fires them, so they survive a restart.
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Creates or replaces the schedule with this id.
    async fn schedule(&self, schedule: &Schedule) -> StoreResult<()>;
    /// Removes every schedule of an operation (cancel).
    async fn cancel_operation_schedules(&self, operation_id: &str) -> StoreResult<()>;
}

/// Schedules the local loop reads; the AWS scheduler fires schedules itself.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Schedules due at `now`, earliest first.
    async fn due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<Schedule>>;
    /// Removes a schedule after it ran. Idempotent.
    async fn remove(&self, id: &str) -> StoreResult<()>;
    /// Every schedule, for inspection and tests.
    async fn all(&self) -> StoreResult<Vec<Schedule>>;
}

/// Imported catalogs (Apple's pmv JSON, as imported).
#[async_trait]
pub trait CatalogStore: Send + Sync {
    async fn put_catalog(&self, raw: &[u8], imported_at: Timestamp) -> StoreResult<()>;
    /// The latest imported catalog, if any.
    async fn latest_catalog(&self) -> StoreResult<Option<Vec<u8>>>;
}

/// Wakes a device so that it checks in.
#[async_trait]
pub trait Push: Send + Sync {
    /// Sends `{"mdm": PushMagic}` to each device's push token. Devices without
    /// a token are skipped. Best effort: the command waits in the queue either way.
    async fn push(&self, devices: &[Device]) -> StoreResult<()>;
}

/// Maximum lifetime of a [`BlobStore::download_url`]: 7 days, the maximum
/// `X-Amz-Expires` of an S3 presigned URL (SigV4).
pub const MAX_DOWNLOAD_URL_EXPIRY: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Maximum blob key length in bytes, S3's limit on object keys.
pub const MAX_BLOB_KEY_LEN: usize = 1024;

/// Checks `key` against the [`BlobStore`] key rules: 1 to
/// [`MAX_BLOB_KEY_LEN`] bytes of ASCII letters, digits, `.`, `_`, `-` and
/// `/`, where `/` separates non-empty segments and no segment is `.` or
/// `..`. Keys that pass need no escaping in a URL path or a file path.
pub fn validate_blob_key(key: &str) -> StoreResult<()> {
    let invalid = |rule: &str| {
        Err(StoreError::InvalidInput(format!(
            "invalid blob key {key:?}: {rule}; use a key such as \"exports/op-1/targets.csv\""
        )))
    };
    if key.is_empty() || key.len() > MAX_BLOB_KEY_LEN {
        return invalid(&format!("a key has 1 to {MAX_BLOB_KEY_LEN} bytes"));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return invalid(&format!(
            "character {c:?} is not allowed (allowed: ASCII letters, digits, '.', '_', '-', '/')"
        ));
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return invalid("a key must not start or end with '/' or contain \"//\"");
        }
        if segment == "." || segment == ".." {
            return invalid("a path segment must not be \".\" or \"..\"");
        }
    }
    Ok(())
}

/// Checks that a download URL lifetime is positive and at most
/// [`MAX_DOWNLOAD_URL_EXPIRY`].
pub fn validate_download_expiry(expires_in: SignedDuration) -> StoreResult<()> {
    if expires_in <= SignedDuration::ZERO {
        return Err(StoreError::InvalidInput(format!(
            "invalid download URL expiry {expires_in:#}: it must be positive"
        )));
    }
    if expires_in > MAX_DOWNLOAD_URL_EXPIRY {
        return Err(StoreError::InvalidInput(format!(
            "invalid download URL expiry {expires_in:#}: the maximum is 7 days (168h), \
             the longest an S3 presigned URL can be valid; pass a shorter expiry"
        )));
    }
    Ok(())
}

/// Export files (CSV and JSON reports) that administrators download.
///
/// Keys follow [`validate_blob_key`]; every method rejects an invalid key
/// with [`StoreError::InvalidInput`] before touching storage. Writes are
/// whole-object: a reader sees the old body or the new one, never a mix.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `body` under `key`, replacing any earlier body and content type.
    ///
    /// NOTE: the body is held in memory and sent in one request. One S3
    /// PutObject takes up to 5 GiB; exports far below that need no multipart
    /// upload.
    async fn put(&self, key: &str, content_type: &str, body: Vec<u8>) -> StoreResult<()>;

    /// Stores the contents of the local file at `path` under `key`, like
    /// [`BlobStore::put`], reading the file as a stream so that memory does
    /// not grow with its size. The file is left in place.
    async fn put_file(
        &self,
        key: &str,
        content_type: &str,
        path: &std::path::Path,
    ) -> StoreResult<()>;

    /// Returns the body stored under `key`, or `None` when there is none.
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Deletes the body under `key`. Idempotent: deleting a missing key succeeds.
    async fn delete(&self, key: &str) -> StoreResult<()>;

    /// Returns a URL that lets its holder GET `key` without other credentials
    /// until `expires_in` from now. Rejects an expiry that is not positive or
    /// longer than [`MAX_DOWNLOAD_URL_EXPIRY`] with [`StoreError::InvalidInput`].
    /// The key need not exist yet: the URL is signed, not checked.
    async fn download_url(&self, key: &str, expires_in: SignedDuration) -> StoreResult<String>;
}

/// Sends domain events to subscribers outside the audit trail, such as
/// notifications and integrations. The audit trail itself is [`EventStore`].
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes `events` in order, and succeeds only when every event was
    /// accepted. After an error some events may already be published, so a
    /// retry can repeat them. Subscribers deduplicate by event id.
    async fn publish(&self, events: &[Event]) -> StoreResult<()>;
}
