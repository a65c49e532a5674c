//! Keys, attribute names and the mapping between records and items.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::DynamoError;
use crate::domain::{Device, Event, Group, Target, TargetStatus};
use crate::ports::{CommandState, QueuedCommand, StoreError, StoreResult};

pub(super) type Item = HashMap<String, AttributeValue>;

// Key attributes of the state table.
pub(super) const PK: &str = "pk";
pub(super) const SK: &str = "sk";

// Key attributes of the events table.
pub(super) const EVENT_OPERATION: &str = "operation_id";
pub(super) const EVENT_ID: &str = "id";

// Sort keys and prefixes of the state table.
pub(super) const META: &str = "META";
pub(super) const OPERATION_PREFIX: &str = "OP#";
pub(super) const TARGET_PREFIX: &str = "TARGET#";
pub(super) const COMMAND_PREFIX: &str = "CMD#";
pub(super) const COUNTS_PREFIX: &str = "COUNTS#";
pub(super) const MEMBER_PREFIX: &str = "MEMBER#";
pub(super) const CATALOG_PK: &str = "CATALOG";
pub(super) const LATEST: &str = "LATEST";

// Constant partition values of the list indexes.
pub(super) const INVENTORY_PARTITION: &str = "DEVICE";
pub(super) const OPERATION_LIST_PARTITION: &str = "OPERATION";
pub(super) const GROUP_LIST_PARTITION: &str = "GROUP";

// Attribute names shared by several records.
pub(super) const DATA: &str = "data";
pub(super) const REVISION: &str = "revision";
pub(super) const STATUS: &str = "status";
pub(super) const SEARCH: &str = "search";
pub(super) const GROUP_IDS: &str = "group_ids";
pub(super) const TIME_ZONE: &str = "time_zone";

// Device item attributes.
pub(super) const CURRENT_OPERATION: &str = "current_operation_id";
pub(super) const TOUCHED_AT: &str = "touched_at";
pub(super) const INVENTORY_PK: &str = "inventory_pk";
pub(super) const UDID: &str = "udid";
pub(super) const PLATFORM: &str = "platform";
pub(super) const OS_VERSION: &str = "os_version";

// Target item attributes.
pub(super) const TARGET_OP: &str = "target_op";
pub(super) const TARGET_OP_STATUS: &str = "target_op_status";
pub(super) const TARGET_UDID: &str = "target_udid";
pub(super) const OPERATION_ID: &str = "operation_id";

// Command item attributes.
pub(super) const UUID: &str = "uuid";
pub(super) const REQUEST_TYPE: &str = "request_type";
pub(super) const BODY: &str = "body";
pub(super) const COMMAND_STATE: &str = "state";
pub(super) const CREATED_AT: &str = "created_at";

// Operation item attributes.
pub(super) const OPERATION_LIST: &str = "operation_list";
pub(super) const CREATED_KEY: &str = "created_key";
pub(super) const KIND: &str = "kind";
pub(super) const PROTOCOL: &str = "protocol";
pub(super) const PRODUCT_VERSION: &str = "product_version";
pub(super) const CANCELLED_AT: &str = "cancelled_at";

// Counter shard attributes (besides one number per status name).
pub(super) const STARTED_AT: &str = "started_at";
pub(super) const SETTLED_AT: &str = "settled_at";

// Group and member attributes.
pub(super) const GROUP_LIST: &str = "group_list";
pub(super) const GROUP_ID: &str = "group_id";
pub(super) const MEMBER_UDID: &str = "member_udid";
pub(super) const MEMBER_GROUP: &str = "member_group";

// Event item attributes.
pub(super) const DEVICE_KEY: &str = "device_key";
pub(super) const DEVICE_ID: &str = "device_id";
pub(super) const EVENT_TYPE: &str = "event_type";
pub(super) const EXPIRES_AT: &str = "expires_at";
pub(super) const EXPIRES_NS: &str = "expires_ns";
pub(super) const EXPIRY_SHARD: &str = "expiry_shard";

// Other items.
pub(super) const IDEMPOTENT_OPERATION: &str = "operation_id";
pub(super) const RAW: &str = "raw";
pub(super) const IMPORTED_AT: &str = "imported_at";

pub(super) fn device_pk(udid: &str) -> String {
    format!("DEVICE#{udid}")
}

pub(super) fn target_sk(operation_id: &str) -> String {
    format!("{TARGET_PREFIX}{operation_id}")
}

pub(super) fn command_sk(uuid: &str) -> String {
    format!("{COMMAND_PREFIX}{uuid}")
}

pub(super) fn operation_pk(id: &str) -> String {
    format!("{OPERATION_PREFIX}{id}")
}

pub(super) fn counts_sk(shard: u64) -> String {
    format!("{COUNTS_PREFIX}{shard:02}")
}

pub(super) fn group_pk(id: &str) -> String {
    format!("GROUP#{id}")
}

pub(super) fn member_sk(udid: &str) -> String {
    format!("{MEMBER_PREFIX}{udid}")
}

pub(super) fn idempotency_pk(key: &str) -> String {
    format!("IDEMPOTENCY#{key}")
}

/// Returns the partition value of the status index: an operation's targets in one status.
/// Statuses contain no `#`, so two (operation, status) pairs never collide.
pub(super) fn operation_status_key(operation_id: &str, status: TargetStatus) -> String {
    format!("{operation_id}#{}", status.as_str())
}

/// Returns the partition value of the events-by-device index. Composite keys can collide
/// for ids that contain the separator, so readers also compare the decoded
/// event's operation and device.
pub(super) fn event_device_key(operation_id: &str, device_id: &str) -> String {
    format!("{operation_id}\u{1f}{device_id}")
}

pub(super) fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([
        (PK.to_string(), AttributeValue::S(pk)),
        (SK.to_string(), AttributeValue::S(sk.into())),
    ])
}

pub(super) fn event_key(operation_id: &str, id: &str) -> Item {
    HashMap::from([
        (EVENT_OPERATION.to_string(), s(operation_id)),
        (EVENT_ID.to_string(), s(id)),
    ])
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Encodes a timestamp as a number of nanoseconds since the Unix epoch, exactly.
pub(super) fn nanos(at: Timestamp) -> AttributeValue {
    n(at.as_nanosecond())
}

/// Offset that makes every jiff timestamp's nanosecond count positive.
const SORTABLE_OFFSET: i128 = 1_000_000_000_000_000_000_000;

/// Encodes a timestamp as a fixed-width string whose byte order is time
/// order, for string sort keys.
pub(super) fn sortable_time(at: Timestamp) -> String {
    format!("{:022}", at.as_nanosecond() + SORTABLE_OFFSET)
}

/// Returns the sort key of the operations list: creation time, then id, so that two
/// operations created at the same instant still have a fixed order.
pub(super) fn created_key(created_at: Timestamp, id: &str) -> String {
    format!("{}#{id}", sortable_time(created_at))
}

/// Hashes `text` with FNV-1a (64-bit), which is stable across processes,
/// releases and platforms, unlike the standard library's seeded hasher.
pub(super) fn stable_hash(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Returns the lower-cased name and serial number, the haystack of the `q` filters. The
/// unit separator keeps a match from spanning both fields.
pub(super) fn search_text(name: Option<&str>, serial: Option<&str>) -> String {
    format!(
        "{}\u{1f}{}",
        name.unwrap_or("").to_lowercase(),
        serial.unwrap_or("").to_lowercase()
    )
}

pub(super) fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::backend("encode record", e))
}

pub(super) fn from_json<T: DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::backend("decode record", e))
}

fn missing(record: &'static str, attribute: &'static str) -> StoreError {
    StoreError::backend(
        "decode item",
        DynamoError::MissingAttribute { record, attribute },
    )
}

fn invalid(record: &'static str, attribute: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::backend(
        "decode item",
        DynamoError::InvalidAttribute {
            record,
            attribute,
            reason: reason.into(),
        },
    )
}

/// Returns a string attribute, if present. A present attribute of another type is an error.
pub(super) fn get_s<'a>(
    item: &'a Item,
    record: &'static str,
    attribute: &'static str,
) -> StoreResult<Option<&'a str>> {
    match item.get(attribute) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(text)) => Ok(Some(text)),
        Some(_) => Err(invalid(record, attribute, "expected a string")),
    }
}

pub(super) fn require_s<'a>(
    item: &'a Item,
    record: &'static str,
    attribute: &'static str,
) -> StoreResult<&'a str> {
    get_s(item, record, attribute)?.ok_or_else(|| missing(record, attribute))
}

/// Returns a number attribute as an i128, if present.
pub(super) fn get_i128(
    item: &Item,
    record: &'static str,
    attribute: &'static str,
) -> StoreResult<Option<i128>> {
    match item.get(attribute) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(text)) => text
            .parse()
            .map(Some)
            .map_err(|_| invalid(record, attribute, "expected an integer")),
        Some(_) => Err(invalid(record, attribute, "expected a number")),
    }
}

pub(super) fn require_u64(
    item: &Item,
    record: &'static str,
    attribute: &'static str,
) -> StoreResult<u64> {
    let value = get_i128(item, record, attribute)?.ok_or_else(|| missing(record, attribute))?;
    u64::try_from(value).map_err(|_| invalid(record, attribute, "expected a non-negative integer"))
}

pub(super) fn get_time(
    item: &Item,
    record: &'static str,
    attribute: &'static str,
) -> StoreResult<Option<Timestamp>> {
    get_i128(item, record, attribute)?
        .map(|ns| {
            Timestamp::from_nanosecond(ns)
                .map_err(|_| invalid(record, attribute, "nanoseconds out of range"))
        })
        .transpose()
}

pub(super) fn require_blob<'a>(
    item: &'a Item,
    record: &'static str,
    attribute: &'static str,
) -> StoreResult<&'a [u8]> {
    match item.get(attribute) {
        Some(AttributeValue::B(blob)) => Ok(blob.as_ref()),
        Some(_) => Err(invalid(record, attribute, "expected binary")),
        None => Err(missing(record, attribute)),
    }
}

pub(super) fn string_list(values: &[String]) -> AttributeValue {
    AttributeValue::L(values.iter().map(|v| s(v.clone())).collect())
}

/// Lists the attributes of a device's META item as (name, value) pairs, where
/// `None` means "remove the attribute". The item's `revision` is written by
/// the caller, because creates, updates and assignments set it differently.
pub(super) fn device_attributes(
    device: &Device,
) -> StoreResult<Vec<(&'static str, Option<AttributeValue>)>> {
    Ok(vec![
        (DATA, Some(s(to_json(device)?))),
        (INVENTORY_PK, Some(s(INVENTORY_PARTITION))),
        (UDID, Some(s(device.udid.clone()))),
        (
            SEARCH,
            Some(s(search_text(
                device.name.as_deref(),
                device.serial_number.as_deref(),
            ))),
        ),
        (PLATFORM, device.platform.map(|p| s(p.as_str()))),
        (
            OS_VERSION,
            device.os_version.as_ref().map(|v| s(v.to_string())),
        ),
        (
            CURRENT_OPERATION,
            device.current_operation_id.clone().map(s),
        ),
    ])
}

/// Decodes a device META item. `revision` and `current_operation_id` come
/// from their own attributes (assignments change them without rewriting
/// `data`), and `last_seen_at` is the later of `data` and `touched_at`.
pub(super) fn decode_device(item: &Item) -> StoreResult<Device> {
    let mut device: Device = from_json(require_s(item, "device", DATA)?)?;
    device.revision = require_u64(item, "device", REVISION)?;
    device.current_operation_id = get_s(item, "device", CURRENT_OPERATION)?.map(str::to_string);
    if let Some(touched) = get_time(item, "device", TOUCHED_AT)?
        && touched > device.last_seen_at
    {
        device.last_seen_at = touched;
    }
    Ok(device)
}

/// Builds the full item of a target at `revision`.
pub(super) fn target_item(target: &Target, revision: u64) -> StoreResult<Item> {
    let mut stored = target.clone();
    stored.revision = revision;
    let mut item = key(
        device_pk(&stored.device_id),
        target_sk(&stored.operation_id),
    );
    item.insert(DATA.into(), s(to_json(&stored)?));
    item.insert(REVISION.into(), n(revision));
    item.insert(STATUS.into(), s(stored.status.as_str()));
    item.insert(OPERATION_ID.into(), s(stored.operation_id.clone()));
    item.insert(TARGET_OP.into(), s(stored.operation_id.clone()));
    item.insert(TARGET_UDID.into(), s(stored.device_id.clone()));
    item.insert(
        TARGET_OP_STATUS.into(),
        s(operation_status_key(&stored.operation_id, stored.status)),
    );
    item.insert(
        SEARCH.into(),
        s(search_text(
            stored.device_name.as_deref(),
            stored.serial_number.as_deref(),
        )),
    );
    item.insert(GROUP_IDS.into(), string_list(&stored.group_ids));
    if let Some(zone) = &stored.time_zone {
        item.insert(TIME_ZONE.into(), s(zone.clone()));
    }
    Ok(item)
}

pub(super) fn decode_target(item: &Item) -> StoreResult<Target> {
    let mut target: Target = from_json(require_s(item, "target", DATA)?)?;
    target.revision = require_u64(item, "target", REVISION)?;
    Ok(target)
}

pub(super) fn target_status(item: &Item) -> StoreResult<TargetStatus> {
    require_s(item, "target", STATUS)?
        .parse()
        .map_err(|e: String| invalid("target", STATUS, e))
}

fn command_state_text(state: CommandState) -> &'static str {
    match state {
        CommandState::Queued => "queued",
        CommandState::Sent => "sent",
        CommandState::NotNow => "not_now",
    }
}

fn command_state_from(text: &str) -> StoreResult<CommandState> {
    match text {
        "queued" => Ok(CommandState::Queued),
        "sent" => Ok(CommandState::Sent),
        "not_now" => Ok(CommandState::NotNow),
        other => Err(invalid(
            "command",
            COMMAND_STATE,
            format!("unknown command state {other:?}"),
        )),
    }
}

pub(super) fn command_item(command: &QueuedCommand) -> Item {
    let mut item = key(device_pk(&command.device_id), command_sk(&command.uuid));
    item.insert(UUID.into(), s(command.uuid.clone()));
    if let Some(operation_id) = &command.operation_id {
        item.insert(OPERATION_ID.into(), s(operation_id.clone()));
    }
    item.insert(REQUEST_TYPE.into(), s(command.request_type.clone()));
    item.insert(
        BODY.into(),
        AttributeValue::B(Blob::new(command.body.clone())),
    );
    item.insert(COMMAND_STATE.into(), s(command_state_text(command.state)));
    item.insert(CREATED_AT.into(), nanos(command.created_at));
    item
}

pub(super) fn decode_command(item: &Item, device_id: &str) -> StoreResult<QueuedCommand> {
    Ok(QueuedCommand {
        uuid: require_s(item, "command", UUID)?.to_string(),
        device_id: device_id.to_string(),
        operation_id: get_s(item, "command", OPERATION_ID)?.map(str::to_string),
        request_type: require_s(item, "command", REQUEST_TYPE)?.to_string(),
        body: require_blob(item, "command", BODY)?.to_vec(),
        state: command_state_from(require_s(item, "command", COMMAND_STATE)?)?,
        created_at: get_time(item, "command", CREATED_AT)?
            .ok_or_else(|| missing("command", CREATED_AT))?,
    })
}

pub(super) fn group_item(group: &Group) -> StoreResult<Item> {
    let mut item = key(group_pk(&group.id), META);
    item.insert(DATA.into(), s(to_json(group)?));
    item.insert(GROUP_LIST.into(), s(GROUP_LIST_PARTITION));
    item.insert(GROUP_ID.into(), s(group.id.clone()));
    Ok(item)
}

pub(super) fn decode_group(item: &Item) -> StoreResult<Group> {
    from_json(require_s(item, "group", DATA)?)
}

/// Returns seconds since the epoch, rounded up, for DynamoDB's TTL: the item is
/// never deleted before the event's exact expiry.
pub(super) fn ttl_seconds(at: Timestamp) -> i64 {
    let seconds = at.as_second();
    if at.subsec_nanosecond() > 0 {
        seconds + 1
    } else {
        seconds
    }
}

pub(super) fn event_item(event: &Event, expiry_shards: u64) -> StoreResult<Item> {
    let mut item = event_key(&event.operation_id, &event.id);
    item.insert(DATA.into(), s(to_json(event)?));
    item.insert(EVENT_TYPE.into(), s(event.event_type.as_str()));
    item.insert(EXPIRES_AT.into(), n(ttl_seconds(event.expires_at)));
    item.insert(EXPIRES_NS.into(), nanos(event.expires_at));
    item.insert(
        EXPIRY_SHARD.into(),
        s(format!(
            "EXPIRY#{:02}",
            stable_hash(&event.id) % expiry_shards
        )),
    );
    if let Some(device_id) = &event.device_id {
        item.insert(DEVICE_ID.into(), s(device_id.clone()));
        item.insert(
            DEVICE_KEY.into(),
            s(event_device_key(&event.operation_id, device_id)),
        );
    }
    Ok(item)
}

pub(super) fn decode_event(item: &Item) -> StoreResult<Event> {
    from_json(require_s(item, "event", DATA)?)
}
