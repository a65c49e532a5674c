//! Tests of the adapter's pure parts: keys, hashing, counters, cursors and
//! item codecs. The contract suites run against a DynamoDB emulator from
//! the tests crate (`tests/tests/aws_dynamodb_contract.rs`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use jiff::{SignedDuration, Timestamp};

use super::catalog::{MAX_ITEM_BYTES, check_catalog_size};
use super::codec::{
    self, Item, counts_sk, created_key, decode_device, device_attributes, key, n, nanos, s,
    search_text, sortable_time, stable_hash, ttl_seconds,
};
use super::counts::{OperationPartition, ShardDelta, may_change_state, shard_of};
use super::cursor::{self, CursorScope};
use super::schema::COUNTER_SHARDS;
use super::write::{Expr, UpdateExpr};
use crate::domain::{OperationState, TargetStatus};
use crate::ports::StoreError;
use crate::ports::contract::fixtures::{T0, at_minute, device, operation};

fn instant(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("test instant {text:?}: {e}"))
}

#[test]
fn sortable_time_orders_like_time() {
    let instants = [
        Timestamp::MIN,
        instant("1969-12-31T23:59:59.999999999Z"),
        Timestamp::UNIX_EPOCH,
        instant("1970-01-01T00:00:00.000000001Z"),
        instant("2026-08-22T09:00:00Z"),
        Timestamp::MAX,
    ];
    let keys: Vec<String> = instants.iter().map(|t| sortable_time(*t)).collect();
    for pair in keys.windows(2) {
        assert!(
            pair[0] < pair[1],
            "{} must sort before {}",
            pair[0],
            pair[1]
        );
    }
    for key in &keys {
        assert_eq!(key.len(), 22, "fixed width for {key}");
    }
}

#[test]
fn created_key_breaks_ties_by_id() {
    let a = created_key(T0, "op-a");
    let b = created_key(T0, "op-b");
    let later = created_key(at_minute(1), "op-a");
    assert!(a < b, "same instant: id order");
    assert!(
        b < later,
        "a later instant sorts after every id of an earlier one"
    );
    assert!(
        a.as_str() >= sortable_time(T0).as_str(),
        "from is inclusive: the bare time sorts before its keys"
    );
    assert!(
        a.as_str() < sortable_time(at_minute(1)).as_str(),
        "to is exclusive: keys of an earlier time sort before the bare later time"
    );
}

#[test]
fn stable_hash_matches_fnv1a() {
    // Published FNV-1a 64-bit test vectors.
    let cases = [
        ("", 0xcbf2_9ce4_8422_2325_u64),
        ("a", 0xaf63_dc4c_8601_ec8c),
        ("foobar", 0x8594_4171_f739_67e8),
    ];
    for (text, expected) in cases {
        assert_eq!(stable_hash(text), expected, "FNV-1a of {text:?}");
    }
}

#[test]
fn shards_cover_all_counter_items() {
    let mut used = [0usize; COUNTER_SHARDS as usize];
    for n in 0..1600 {
        let shard = shard_of(&format!("00008110-{n:016X}"));
        assert!(shard < COUNTER_SHARDS, "shard {shard} out of range");
        used[shard as usize] += 1;
    }
    for (shard, count) in used.iter().enumerate() {
        assert!(
            *count > 50,
            "1600 UDIDs must spread over every shard; shard {shard} got {count}"
        );
    }
    assert_eq!(
        counts_sk(3),
        "COUNTS#03",
        "counter sort keys are two digits"
    );
}

#[test]
fn state_changing_moves() {
    use TargetStatus::*;
    let cases = [
        (Pending, Approved, true),
        (Pending, Installed, true),
        (Approved, Downloading, false),
        (Downloading, Retry, false),
        (Installing, Installed, true),
        (Retry, Failed, true),
        (Installed, Installed, false),
        (Approved, Pending, true),
    ];
    for (from, to, expected) in cases {
        assert_eq!(
            may_change_state(from, to),
            expected,
            "may_change_state({from}, {to})"
        );
    }
}

#[test]
fn shard_delta_stamps_times() {
    use TargetStatus::*;
    let left_pending = ShardDelta::new("op-1", "dev-1").moved(Pending, Approved, T0);
    assert_eq!(left_pending.started_at, Some(T0), "leaving pending starts");
    assert_eq!(left_pending.settled_at, None, "approved is not final");

    let finished = ShardDelta::new("op-1", "dev-1").moved(Installing, Installed, T0);
    assert_eq!(finished.started_at, None, "a later move does not restart");
    assert_eq!(finished.settled_at, Some(T0), "a final status settles");

    let added_final = ShardDelta::new("op-1", "dev-1").added(Obsolete, T0);
    assert_eq!(
        added_final.started_at,
        Some(T0),
        "a final target added starts"
    );
    assert_eq!(
        added_final.settled_at,
        Some(T0),
        "a final target added settles"
    );

    let removed_active = ShardDelta::new("op-1", "dev-1").removed(Downloading, T0);
    assert_eq!(
        removed_active.settled_at,
        Some(T0),
        "an active target leaving settles"
    );
    let removed_final = ShardDelta::new("op-1", "dev-1").removed(Installed, T0);
    assert_eq!(
        removed_final.settled_at, None,
        "a final target leaving does not"
    );
}

#[test]
fn shard_deltas_merge_per_item() {
    use TargetStatus::*;
    let mut first = ShardDelta::new("op-1", "dev-1").moved(Pending, Approved, at_minute(5));
    let second = ShardDelta::new("op-1", "dev-1").moved(Approved, Installed, at_minute(2));
    assert!(first.same_item(&second), "same operation and UDID");
    first.merge(&second);
    assert_eq!(first.counts[&Pending], -1, "pending delta");
    assert_eq!(first.counts[&Approved], 0, "approved delta cancels out");
    assert_eq!(first.counts[&Installed], 1, "installed delta");
    assert_eq!(first.started_at, Some(at_minute(5)), "earliest start");
    assert_eq!(first.settled_at, Some(at_minute(2)), "latest settle");
    let other_operation = ShardDelta::new("op-2", "dev-1");
    assert!(
        !first.same_item(&other_operation),
        "another operation's shard"
    );
}

#[test]
fn unchanged_shard_delta_writes_nothing() {
    use TargetStatus::*;
    let mut delta = ShardDelta::new("op-1", "dev-1").removed(Failed, T0);
    delta.merge(&ShardDelta::new("op-1", "dev-1").added(Failed, T0));
    delta.settled_at = None;
    delta.started_at = None;
    assert!(delta.write("state").is_none(), "a zero delta is no write");
}

#[test]
fn update_expression_clauses() {
    let mut update = UpdateExpr::default();
    update.set("data", s("x"));
    update.set_or_remove("current_operation_id", None);
    update.add("pending", -1);
    update.set_if_absent("started_at", n(1));
    assert_eq!(
        update.expression(),
        "SET #data = :v0, #started_at = if_not_exists(#started_at, :v2) \
         REMOVE #current_operation_id ADD #pending :v1"
    );
    let empty = Expr::default();
    assert!(empty.names().is_none(), "no names map when empty");
    assert!(empty.values().is_none(), "no values map when empty");
}

fn shard_item(
    shard: u64,
    counts: &[(TargetStatus, i64)],
    started: Option<Timestamp>,
    settled: Option<Timestamp>,
) -> Item {
    let mut item = key("OP#op-1".to_string(), counts_sk(shard));
    for (status, count) in counts {
        item.insert(status.as_str().to_string(), n(*count));
    }
    if let Some(at) = started {
        item.insert("started_at".to_string(), nanos(at));
    }
    if let Some(at) = settled {
        item.insert("settled_at".to_string(), nanos(at));
    }
    item
}

fn meta_item(cancelled: Option<Timestamp>) -> Item {
    let mut item = key("OP#op-1".to_string(), "META");
    let data = serde_json::to_string(&operation("op-1")).unwrap_or_default();
    item.insert("data".to_string(), s(data));
    if let Some(at) = cancelled {
        item.insert("cancelled_at".to_string(), nanos(at));
    }
    item
}

#[test]
fn partition_sums_shards() {
    use TargetStatus::*;
    let items = vec![
        meta_item(None),
        shard_item(
            0,
            &[(Pending, 0), (Installed, 2)],
            Some(at_minute(3)),
            Some(at_minute(9)),
        ),
        shard_item(7, &[(Obsolete, 1)], Some(at_minute(1)), Some(at_minute(4))),
    ];
    let partition = OperationPartition::from_items(items)
        .ok()
        .flatten()
        .expect("a partition with META");
    let operation = partition
        .into_operation()
        .unwrap_or_else(|e| panic!("decoding the operation: {e:?}"));
    assert_eq!(operation.counts.get(Installed), 2, "installed summed");
    assert_eq!(operation.counts.get(Obsolete), 1, "obsolete summed");
    assert_eq!(operation.state, OperationState::Finished, "all final");
    assert_eq!(operation.started_at, Some(at_minute(1)), "earliest start");
    assert_eq!(operation.finished_at, Some(at_minute(9)), "latest settle");
}

#[test]
fn partition_without_meta_is_none() {
    let items = vec![shard_item(0, &[(TargetStatus::Pending, 1)], None, None)];
    let partition = OperationPartition::from_items(items);
    assert!(
        matches!(partition, Ok(None)),
        "counters without META are no operation"
    );
}

#[test]
fn cancelled_partition_hides_later_start() {
    use TargetStatus::*;
    let items = vec![
        meta_item(Some(at_minute(2))),
        shard_item(1, &[(Cancelled, 1)], Some(at_minute(5)), Some(at_minute(5))),
    ];
    let partition = OperationPartition::from_items(items)
        .ok()
        .flatten()
        .expect("a partition with META");
    assert_eq!(
        partition.state(),
        OperationState::Cancelled,
        "cancel is stored"
    );
    let operation = partition
        .into_operation()
        .unwrap_or_else(|e| panic!("decoding the operation: {e:?}"));
    assert_eq!(
        operation.started_at, None,
        "a target moved after the cancel does not start the operation"
    );
    assert_eq!(operation.finished_at, None, "cancelled is not finished");
    assert_eq!(operation.cancelled_at, Some(at_minute(2)), "cancel time");
}

fn scope(partition: &str) -> CursorScope<'_> {
    CursorScope {
        list: "targets",
        attributes: &["pk", "sk", "target_op", "target_udid"],
        partition: ("target_op", partition),
    }
}

fn page_key() -> Item {
    HashMap::from([
        ("pk".to_string(), s("DEVICE#dev-1")),
        ("sk".to_string(), s("TARGET#op-1")),
        ("target_op".to_string(), s("op-1")),
        ("target_udid".to_string(), s("dev-1")),
    ])
}

#[test]
fn cursor_round_trips() {
    let encoded = cursor::encode(&scope("op-1"), &page_key())
        .unwrap_or_else(|e| panic!("encoding a cursor: {e:?}"));
    let decoded = cursor::decode(&scope("op-1"), &encoded)
        .unwrap_or_else(|e| panic!("decoding a cursor: {e:?}"));
    assert_eq!(decoded, page_key(), "the key survives the round trip");
}

#[test]
fn cursor_rejects_foreign_keys() {
    let encoded = cursor::encode(&scope("op-1"), &page_key())
        .unwrap_or_else(|e| panic!("encoding a cursor: {e:?}"));
    let other_list = CursorScope {
        list: "devices",
        ..scope("op-1")
    };
    let mut extra = page_key();
    extra.insert("extra".to_string(), s("x"));
    let with_extra = cursor::encode(&scope("op-1"), &extra)
        .unwrap_or_else(|e| panic!("encoding a cursor: {e:?}"));
    let cases: Vec<(&str, CursorScope<'_>, String)> = vec![
        ("another operation", scope("op-2"), encoded.clone()),
        ("another list", other_list, encoded.clone()),
        ("an extra attribute", scope("op-1"), with_extra),
        (
            "not base64",
            scope("op-1"),
            "%% not a cursor %%".to_string(),
        ),
        (
            "base64 of no JSON",
            scope("op-1"),
            "bm90IGpzb24".to_string(),
        ),
        (
            "a truncated cursor",
            scope("op-1"),
            encoded[..encoded.len() / 2].to_string(),
        ),
    ];
    for (label, scope, cursor) in cases {
        let decoded = cursor::decode(&scope, &cursor);
        assert!(
            matches!(decoded, Err(StoreError::InvalidCursor(_))),
            "a cursor with {label} must be invalid, got {decoded:?}"
        );
    }
}

#[test]
fn cursor_rejects_number_keys() {
    let mut key = page_key();
    key.insert(
        "target_udid".to_string(),
        AttributeValue::N("1".to_string()),
    );
    assert!(
        cursor::encode(&scope("op-1"), &key).is_err(),
        "only string keys are encoded"
    );
}

#[test]
fn ttl_rounds_up_to_seconds() {
    let cases = [
        (T0, T0.as_second()),
        (T0 + SignedDuration::from_nanos(1), T0.as_second() + 1),
        (T0 + SignedDuration::from_millis(999), T0.as_second() + 1),
        (T0 + SignedDuration::from_secs(1), T0.as_second() + 1),
    ];
    for (at, expected) in cases {
        assert_eq!(ttl_seconds(at), expected, "TTL of {at}");
    }
}

#[test]
fn search_text_folds_case() {
    assert_eq!(
        search_text(Some("ÉCOLE iPad"), Some("DMPX7")),
        "école ipad\u{1f}dmpx7"
    );
    assert_eq!(
        search_text(None, Some("SN1")),
        "\u{1f}sn1",
        "unnamed device"
    );
}

#[test]
fn device_attributes_override_data() {
    let mut stored = device("dev-1");
    stored.current_operation_id = Some("op-stale".to_string());
    stored.revision = 3;
    let mut item: Item = HashMap::new();
    for (name, value) in device_attributes(&stored).unwrap_or_default() {
        if let Some(value) = value {
            item.insert(name.to_string(), value);
        }
    }
    item.insert("revision".to_string(), n(7));
    item.insert("current_operation_id".to_string(), s("op-new"));
    item.insert("touched_at".to_string(), nanos(at_minute(30)));
    let decoded = decode_device(&item).unwrap_or_else(|e| panic!("decoding: {e:?}"));
    assert_eq!(decoded.revision, 7, "the revision attribute wins");
    assert_eq!(
        decoded.current_operation_id.as_deref(),
        Some("op-new"),
        "the current operation attribute wins"
    );
    assert_eq!(decoded.last_seen_at, at_minute(30), "a later touch wins");

    item.insert(
        "touched_at".to_string(),
        nanos(T0 - SignedDuration::from_mins(1)),
    );
    let decoded = decode_device(&item).unwrap_or_else(|e| panic!("decoding: {e:?}"));
    assert_eq!(decoded.last_seen_at, T0, "an earlier touch does not");

    item.remove("current_operation_id");
    let decoded = decode_device(&item).unwrap_or_else(|e| panic!("decoding: {e:?}"));
    assert_eq!(
        decoded.current_operation_id, None,
        "no attribute, no operation"
    );
}

#[test]
fn missing_attribute_is_backend_error() {
    let item: Item = HashMap::new();
    let decoded = decode_device(&item);
    assert!(
        matches!(decoded, Err(StoreError::Backend { .. })),
        "an item without data is a backend error, got {decoded:?}"
    );
    let wrong_type: Item = HashMap::from([("data".to_string(), n(1))]);
    assert!(
        codec::require_s(&wrong_type, "device", "data").is_err(),
        "a number where a string belongs is an error"
    );
}

#[test]
fn catalog_size_limit() {
    assert!(
        check_catalog_size(105 * 1024).is_ok(),
        "a 105 KB catalog fits"
    );
    assert!(
        check_catalog_size(MAX_ITEM_BYTES).is_err(),
        "a catalog of the whole item size leaves no room for its key"
    );
}
