//! Table definitions: the key schema, global secondary indexes and TTL that
//! `create_tables` creates and that the SAM template declares as well.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};

use super::codec::{
    CREATED_KEY, DEVICE_ID, DEVICE_KEY, EVENT_ID, EVENT_OPERATION, EXPIRES_AT, EXPIRES_NS,
    EXPIRY_SHARD, GROUP_ID, GROUP_LIST, INVENTORY_PK, MEMBER_GROUP, MEMBER_UDID, OPERATION_LIST,
    OS_VERSION, PK, PLATFORM, SEARCH, SK, TARGET_OP, TARGET_OP_STATUS, TARGET_UDID, UDID,
};
use super::{DynamoError, DynamoTables};
use crate::ports::{StoreError, StoreResult};

/// Counter shards per operation. Each target's counts live in the shard its
/// device's UDID hashes to, so an operation's status changes spread over
/// this many items instead of one.
pub const COUNTER_SHARDS: u64 = 16;

/// Partitions of the expiry index, so that event writes spread over this
/// many index partitions instead of one.
pub const EXPIRY_SHARDS: u64 = 16;

/// The events table's TTL attribute: epoch seconds, rounded up from the
/// event's `expires_at`.
pub const TTL_ATTRIBUTE: &str = EXPIRES_AT;

/// State table index: every device by UDID (`inventory_pk` is the constant
/// `DEVICE`), projecting only the attributes the inventory filters on.
pub const INVENTORY: &str = "inventory";
/// State table index: an operation's targets by UDID.
pub const TARGETS_BY_OPERATION: &str = "targets_by_operation";
/// State table index: an operation's targets in one status, by UDID.
pub const TARGETS_BY_STATUS: &str = "targets_by_status";
/// State table index: every operation by creation time and id.
pub const OPERATIONS_BY_CREATED: &str = "operations_by_created";
/// State table index: every group by id.
pub const GROUPS_BY_ID: &str = "groups_by_id";
/// State table index: a device's group memberships.
pub const MEMBERS_BY_DEVICE: &str = "members_by_device";
/// Events table index: an operation's events for one device, in ULID order.
pub const EVENTS_BY_DEVICE: &str = "events_by_device";
/// Events table index: a device's events across operations, in ULID order,
/// for its timeline.
pub const DEVICE_TIMELINE: &str = "device_timeline";
/// Events table index: events by exact expiry, for `purge_expired`.
pub const EVENTS_BY_EXPIRY: &str = "events_by_expiry";

/// How long `create_tables` waits for a new table to become active.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

fn attribute(name: &str, kind: ScalarAttributeType) -> StoreResult<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(|e| StoreError::backend("define table", e))
}

fn key_element(name: &str, kind: KeyType) -> StoreResult<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| StoreError::backend("define table", e))
}

fn index(
    name: &str,
    partition: &str,
    sort: &str,
    projection: Projection,
) -> StoreResult<GlobalSecondaryIndex> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key_element(partition, KeyType::Hash)?)
        .key_schema(key_element(sort, KeyType::Range)?)
        .projection(projection)
        .build()
        .map_err(|e| StoreError::backend("define table", e))
}

fn all() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::All)
        .build()
}

fn keys_only() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::KeysOnly)
        .build()
}

fn include(attributes: &[&str]) -> Projection {
    attributes
        .iter()
        .fold(
            Projection::builder().projection_type(ProjectionType::Include),
            |builder, name| builder.non_key_attributes(*name),
        )
        .build()
}

/// Creates the state and events tables with their indexes, on demand
/// capacity, and turns on the events table's TTL. A table that exists
/// already is left as it is, so that local runs can call this at every
/// start.
pub async fn create_tables(client: &Client, tables: &DynamoTables) -> StoreResult<()> {
    let string = || ScalarAttributeType::S;
    let state_created = create_table(
        client,
        &tables.state,
        (PK, SK),
        vec![
            attribute(PK, string())?,
            attribute(SK, string())?,
            attribute(INVENTORY_PK, string())?,
            attribute(UDID, string())?,
            attribute(TARGET_OP, string())?,
            attribute(TARGET_OP_STATUS, string())?,
            attribute(TARGET_UDID, string())?,
            attribute(OPERATION_LIST, string())?,
            attribute(CREATED_KEY, string())?,
            attribute(GROUP_LIST, string())?,
            attribute(GROUP_ID, string())?,
            attribute(MEMBER_UDID, string())?,
            attribute(MEMBER_GROUP, string())?,
        ],
        vec![
            index(
                INVENTORY,
                INVENTORY_PK,
                UDID,
                include(&[PLATFORM, OS_VERSION, SEARCH]),
            )?,
            index(TARGETS_BY_OPERATION, TARGET_OP, TARGET_UDID, all())?,
            index(TARGETS_BY_STATUS, TARGET_OP_STATUS, TARGET_UDID, all())?,
            index(OPERATIONS_BY_CREATED, OPERATION_LIST, CREATED_KEY, all())?,
            index(GROUPS_BY_ID, GROUP_LIST, GROUP_ID, all())?,
            index(MEMBERS_BY_DEVICE, MEMBER_UDID, MEMBER_GROUP, keys_only())?,
        ],
    )
    .await?;
    if state_created {
        wait_until_active(client, &tables.state).await?;
    }

    let events_created = create_table(
        client,
        &tables.events,
        (EVENT_OPERATION, EVENT_ID),
        vec![
            attribute(EVENT_OPERATION, string())?,
            attribute(EVENT_ID, string())?,
            attribute(DEVICE_KEY, string())?,
            attribute(DEVICE_ID, string())?,
            attribute(EXPIRY_SHARD, string())?,
            attribute(EXPIRES_NS, ScalarAttributeType::N)?,
        ],
        vec![
            index(EVENTS_BY_DEVICE, DEVICE_KEY, EVENT_ID, all())?,
            index(DEVICE_TIMELINE, DEVICE_ID, EVENT_ID, all())?,
            index(EVENTS_BY_EXPIRY, EXPIRY_SHARD, EXPIRES_NS, keys_only())?,
        ],
    )
    .await?;
    if events_created {
        wait_until_active(client, &tables.events).await?;
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(TTL_ATTRIBUTE)
            .build()
            .map_err(|e| StoreError::backend("define table", e))?;
        client
            .update_time_to_live()
            .table_name(&tables.events)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|e| StoreError::backend("enable TTL", e))?;
    }
    Ok(())
}

/// Creates one table; returns false when it exists already.
async fn create_table(
    client: &Client,
    name: &str,
    (partition, sort): (&str, &str),
    attributes: Vec<AttributeDefinition>,
    indexes: Vec<GlobalSecondaryIndex>,
) -> StoreResult<bool> {
    let result = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key_element(partition, KeyType::Hash)?)
        .key_schema(key_element(sort, KeyType::Range)?)
        .set_attribute_definitions(Some(attributes))
        .set_global_secondary_indexes(Some(indexes))
        .send()
        .await;
    match result {
        Ok(_) => {
            tracing::info!(table = name, "created DynamoDB table");
            Ok(true)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|service| service.is_resource_in_use_exception()) =>
        {
            tracing::info!(table = name, "DynamoDB table exists; left as it is");
            Ok(false)
        }
        Err(e) => Err(StoreError::backend("create table", e)),
    }
}

async fn wait_until_active(client: &Client, name: &str) -> StoreResult<()> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let described = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| StoreError::backend("describe table", e))?;
        let status = described.table().and_then(|t| t.table_status());
        if status == Some(&TableStatus::Active) {
            return Ok(());
        }
        if started.elapsed() >= ACTIVE_TIMEOUT {
            return Err(StoreError::backend(
                "create table",
                DynamoError::TableNotActive {
                    table: name.to_string(),
                    seconds: ACTIVE_TIMEOUT.as_secs(),
                },
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
