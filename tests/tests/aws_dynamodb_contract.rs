//! The storage contract suites, unchanged, against the DynamoDB store on
//! moto's server, plus what only the DynamoDB layout has: its tables and
//! indexes, cursors, counter shards, batched assignments, the TTL attribute
//! and the item size limit.

mod aws_support;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ProjectionType, TimeToLiveStatus};
use aws_support::{CallLog, client, fresh_store, recording_client, unique_tables};
use osdeploy_shared::adapters::aws::dynamodb::{
    DEVICE_TIMELINE, DynamoStore, EVENTS_BY_DEVICE, EVENTS_BY_EXPIRY, GROUPS_BY_ID, INVENTORY,
    MEMBERS_BY_DEVICE, OPERATIONS_BY_CREATED, TARGETS_BY_OPERATION, TARGETS_BY_STATUS,
    TTL_ATTRIBUTE, create_tables,
};
use osdeploy_shared::domain::{EventType, OperationState, Target, TargetStatus};
use osdeploy_shared::ports::contract::fixtures::{
    T0, assign_new, at_minute, command, create_device, device, event, insert_operation,
    move_target, operation, read_context, read_operation, read_target, target,
};
use osdeploy_shared::ports::contract::{self, expect_ok};
use osdeploy_shared::ports::{
    AssignOutcome, Assignment, CatalogStore, Change, CommandWrite, EventFilter, EventStore,
    OperationStore, PageRequest, QueuedCommand, StoreError, TargetFilter,
};

/// Fails when any request path scanned a table: every list must be a Query.
fn assert_no_scan(log: &CallLog, suite: &str) {
    assert_eq!(
        log.count("Scan"),
        0,
        "the {suite} contract suite sent Scan requests; every read must be a GetItem, Query or BatchGetItem"
    );
}

#[tokio::test]
async fn device_contract() {
    let (client, log) = recording_client().await;
    contract::devices::run_all(|| fresh_store(&client, "devices")).await;
    assert_no_scan(&log, "device");
}

#[tokio::test]
async fn group_contract() {
    let (client, log) = recording_client().await;
    contract::groups::run_all(|| fresh_store(&client, "groups")).await;
    assert_no_scan(&log, "group");
}

#[tokio::test]
async fn operation_contract() {
    let (client, log) = recording_client().await;
    contract::operations::run_all(|| fresh_store(&client, "operations")).await;
    assert_no_scan(&log, "operation");
}

#[tokio::test]
async fn event_contract() {
    let (client, log) = recording_client().await;
    contract::events::run_all(|| fresh_store(&client, "events")).await;
    assert_no_scan(&log, "event");
}

#[tokio::test]
async fn catalog_contract() {
    let (client, log) = recording_client().await;
    contract::catalog::run_all(|| fresh_store(&client, "catalog")).await;
    assert_no_scan(&log, "catalog");
}

/// Key schema of a table or index as (attribute, key type) pairs.
fn key_pairs(elements: &[aws_sdk_dynamodb::types::KeySchemaElement]) -> Vec<(String, KeyType)> {
    elements
        .iter()
        .map(|e| (e.attribute_name().to_string(), e.key_type().clone()))
        .collect()
}

/// Indexes of a table by name, with their key schema and projection.
async fn describe_indexes(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> (
    Vec<(String, KeyType)>,
    BTreeMap<String, (Vec<(String, KeyType)>, ProjectionType, Vec<String>)>,
) {
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("DescribeTable");
    let table = described.table().expect("table description");
    let indexes = table
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            let projection = index.projection().expect("index projection");
            let mut included = projection.non_key_attributes().to_vec();
            included.sort();
            (
                index.index_name().unwrap_or_default().to_string(),
                (
                    key_pairs(index.key_schema()),
                    projection
                        .projection_type()
                        .cloned()
                        .expect("projection type"),
                    included,
                ),
            )
        })
        .collect();
    (key_pairs(table.key_schema()), indexes)
}

fn hash_range(partition: &str, sort: &str) -> Vec<(String, KeyType)> {
    vec![
        (partition.to_string(), KeyType::Hash),
        (sort.to_string(), KeyType::Range),
    ]
}

/// The tables `create_tables` makes are the ones docs/dynamodb.md and the
/// SAM template describe.
#[tokio::test]
async fn tables_have_documented_keys() {
    let client = client().await;
    let tables = unique_tables("schema");
    expect_ok(create_tables(&client, &tables).await, "create_tables");
    expect_ok(
        create_tables(&client, &tables).await,
        "create_tables on existing tables",
    );

    let (state_key, state_indexes) = describe_indexes(&client, &tables.state).await;
    assert_eq!(state_key, hash_range("pk", "sk"), "state table key");
    let expected_state = [
        (
            INVENTORY,
            hash_range("inventory_pk", "udid"),
            ProjectionType::Include,
            vec!["os_version", "platform", "search"],
        ),
        (
            TARGETS_BY_OPERATION,
            hash_range("target_op", "target_udid"),
            ProjectionType::All,
            vec![],
        ),
        (
            TARGETS_BY_STATUS,
            hash_range("target_op_status", "target_udid"),
            ProjectionType::All,
            vec![],
        ),
        (
            OPERATIONS_BY_CREATED,
            hash_range("operation_list", "created_key"),
            ProjectionType::All,
            vec![],
        ),
        (
            GROUPS_BY_ID,
            hash_range("group_list", "group_id"),
            ProjectionType::All,
            vec![],
        ),
        (
            MEMBERS_BY_DEVICE,
            hash_range("member_udid", "member_group"),
            ProjectionType::KeysOnly,
            vec![],
        ),
    ];
    assert_eq!(
        state_indexes.keys().cloned().collect::<BTreeSet<_>>(),
        expected_state
            .iter()
            .map(|(name, ..)| name.to_string())
            .collect::<BTreeSet<_>>(),
        "state table indexes"
    );
    for (name, keys, projection, included) in expected_state {
        let (found_keys, found_projection, found_included) = &state_indexes[name];
        assert_eq!(found_keys, &keys, "key schema of index {name}");
        assert_eq!(found_projection, &projection, "projection of index {name}");
        assert_eq!(
            found_included,
            &included.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "attributes projected into index {name}"
        );
    }

    let (events_key, event_indexes) = describe_indexes(&client, &tables.events).await;
    assert_eq!(
        events_key,
        hash_range("operation_id", "id"),
        "events table key"
    );
    assert_eq!(
        event_indexes.keys().cloned().collect::<BTreeSet<_>>(),
        [EVENTS_BY_DEVICE, DEVICE_TIMELINE, EVENTS_BY_EXPIRY]
            .iter()
            .map(|name| name.to_string())
            .collect::<BTreeSet<_>>(),
        "events table indexes"
    );
    let (device_keys, device_projection, _) = &event_indexes[EVENTS_BY_DEVICE];
    assert_eq!(
        device_keys,
        &hash_range("device_key", "id"),
        "events_by_device keys"
    );
    assert_eq!(
        device_projection,
        &ProjectionType::All,
        "events_by_device projection"
    );
    let (timeline_keys, timeline_projection, _) = &event_indexes[DEVICE_TIMELINE];
    assert_eq!(
        timeline_keys,
        &hash_range("device_id", "id"),
        "device_timeline keys"
    );
    assert_eq!(
        timeline_projection,
        &ProjectionType::All,
        "device_timeline projection"
    );
    let (expiry_keys, expiry_projection, _) = &event_indexes[EVENTS_BY_EXPIRY];
    assert_eq!(
        expiry_keys,
        &hash_range("expiry_shard", "expires_ns"),
        "events_by_expiry keys"
    );
    assert_eq!(
        expiry_projection,
        &ProjectionType::KeysOnly,
        "events_by_expiry projection"
    );

    let ttl = client
        .describe_time_to_live()
        .table_name(&tables.events)
        .send()
        .await
        .expect("DescribeTimeToLive");
    let ttl = ttl.time_to_live_description().expect("TTL description");
    assert_eq!(ttl.attribute_name(), Some(TTL_ATTRIBUTE), "TTL attribute");
    assert_eq!(TTL_ATTRIBUTE, "expires_at", "documented TTL attribute name");
    assert_eq!(
        ttl.time_to_live_status(),
        Some(&TimeToLiveStatus::Enabled),
        "TTL status"
    );
}

async fn raw_items(
    store: &DynamoStore,
    table: &str,
    key: &str,
    value: &str,
) -> Vec<BTreeMap<String, AttributeValue>> {
    let output = store
        .client()
        .query()
        .table_name(table)
        .key_condition_expression("#k = :v")
        .expression_attribute_names("#k", key)
        .expression_attribute_values(":v", AttributeValue::S(value.to_string()))
        .consistent_read(true)
        .send()
        .await
        .expect("raw Query");
    output
        .items()
        .iter()
        .map(|item| item.clone().into_iter().collect())
        .collect()
}

/// Status changes of many devices land on several counter items, and the
/// operation sums them and derives its times from them.
#[tokio::test]
async fn counts_spread_over_shards() {
    let client = client().await;
    let store = fresh_store(&client, "shards").await;
    insert_operation(&store, operation("op-1")).await;
    let udids: Vec<String> = (0..48).map(|n| format!("dev-{n:02}")).collect();
    for udid in &udids {
        create_device(&store, device(udid)).await;
    }
    let assignments = udids
        .iter()
        .map(|udid| Assignment {
            target: target("op-1", udid),
            expected_current: None,
            replaces: None,
            events: Vec::new(),
            commands: Vec::new(),
        })
        .collect();
    let (outcomes, _) = expect_ok(store.assign(assignments).await, "assign");
    assert!(
        outcomes.iter().all(|o| *o == AssignOutcome::Assigned),
        "every assignment must apply, got {outcomes:?}"
    );
    for (n, udid) in udids.iter().enumerate() {
        move_target(
            &store,
            "op-1",
            udid,
            TargetStatus::Downloading,
            at_minute(1 + n as i64),
        )
        .await;
    }
    for (n, udid) in udids.iter().enumerate() {
        move_target(
            &store,
            "op-1",
            udid,
            TargetStatus::Installed,
            at_minute(100 + n as i64),
        )
        .await;
    }

    let partition = raw_items(&store, &store.tables().state, "pk", "OP#op-1").await;
    let shards: Vec<&BTreeMap<String, AttributeValue>> = partition
        .iter()
        .filter(|item| matches!(item.get("sk"), Some(AttributeValue::S(sk)) if sk.starts_with("COUNTS#")))
        .collect();
    assert!(
        shards.len() > 1,
        "48 devices must spread over more than one counter item, found {}",
        shards.len()
    );
    assert!(
        shards.len() <= 16,
        "an operation has at most 16 counter items, found {}",
        shards.len()
    );

    let finished = read_operation(&store, "op-1").await;
    assert_eq!(
        finished.counts.get(TargetStatus::Installed),
        48,
        "installed count"
    );
    assert_eq!(finished.counts.total(), 48, "total count");
    assert_eq!(finished.state, OperationState::Finished, "derived state");
    assert_eq!(
        finished.started_at,
        Some(at_minute(1)),
        "started_at is when the first target left pending"
    );
    assert_eq!(
        finished.finished_at,
        Some(at_minute(147)),
        "finished_at is when the last target settled"
    );
}

/// In a call whose assignments span several transactions, each stale
/// assignment is reported as a conflict and every other one applies.
#[tokio::test]
async fn assign_isolates_conflicts_across_transactions() {
    let (client, log) = recording_client().await;
    let store = fresh_store(&client, "conflicts").await;
    insert_operation(&store, operation("op-old")).await;
    insert_operation(&store, operation("op-new")).await;
    let udids: Vec<String> = (0..60).map(|n| format!("dev-{n:02}")).collect();
    for udid in &udids {
        create_device(&store, device(udid)).await;
    }
    for stale in ["dev-10", "dev-50"] {
        assign_new(&store, target("op-old", stale)).await;
    }
    let assignments: Vec<Assignment> = udids
        .iter()
        .map(|udid| Assignment {
            target: target("op-new", udid),
            expected_current: None,
            replaces: None,
            events: vec![event("op-new", Some(udid), EventType::DeviceAdded, T0)],
            commands: vec![command(udid, T0)],
        })
        .collect();
    log.take();
    let (outcomes, _) = expect_ok(store.assign(assignments).await, "assign");
    let transactions = log.count("TransactWriteItems");

    for (udid, outcome) in udids.iter().zip(&outcomes) {
        let expected = if udid == "dev-10" || udid == "dev-50" {
            AssignOutcome::Conflict
        } else {
            AssignOutcome::Assigned
        };
        assert_eq!(outcome, &expected, "outcome of {udid}");
    }
    assert!(
        transactions >= 3,
        "240 writes need at least three transactions of 100 items, saw {transactions}"
    );
    let counted = read_operation(&store, "op-new").await;
    assert_eq!(
        counted.counts.get(TargetStatus::Pending),
        58,
        "applied assignments counted"
    );
    assert_eq!(
        read_operation(&store, "op-old").await.counts.total(),
        2,
        "conflicting devices stay counted in their operation"
    );
    let events = expect_ok(
        store
            .list_events(
                "op-new",
                &EventFilter::default(),
                T0,
                &PageRequest::first(1000),
            )
            .await,
        "list_events",
    );
    assert_eq!(
        events.items.len(),
        58,
        "only applied assignments write events"
    );
    for stale in ["dev-10", "dev-50"] {
        let context = read_context(&store, stale).await;
        assert_eq!(
            context.device.current_operation_id.as_deref(),
            Some("op-old"),
            "{stale} stays in its operation"
        );
        assert!(
            context.commands.is_empty(),
            "{stale} gets no command from a conflicting assignment"
        );
    }
}

/// Moving a device drops the commands queued for its old operation and
/// keeps the others, as the SQLite store does.
#[tokio::test]
async fn move_drops_old_operation_commands() {
    let client = client().await;
    let store = fresh_store(&client, "move").await;
    insert_operation(&store, operation("op-old")).await;
    insert_operation(&store, operation("op-new")).await;
    create_device(&store, device("dev-1")).await;
    let old = assign_new(&store, target("op-old", "dev-1")).await;

    let of_old = QueuedCommand {
        operation_id: Some("op-old".to_string()),
        request_type: "ScheduleOSUpdate".to_string(),
        ..command("dev-1", at_minute(1))
    };
    let unrelated = command("dev-1", at_minute(2));
    let change = Change {
        commands: vec![
            CommandWrite::Put(of_old.clone()),
            CommandWrite::Put(unrelated.clone()),
        ],
        ..Change::default()
    };
    expect_ok(
        osdeploy_shared::ports::DeviceStore::commit(&store, change).await,
        "queue commands",
    );

    let new_command = QueuedCommand {
        operation_id: Some("op-new".to_string()),
        ..command("dev-1", at_minute(3))
    };
    let assignment = Assignment {
        target: target("op-new", "dev-1"),
        expected_current: Some("op-old".to_string()),
        replaces: Some(("op-old".to_string(), old.revision)),
        events: Vec::new(),
        commands: vec![new_command.clone()],
    };
    let (outcomes, _) = expect_ok(store.assign(vec![assignment]).await, "assign");

    assert_eq!(outcomes, [AssignOutcome::Assigned], "the move applies");
    assert_eq!(
        read_context(&store, "dev-1").await.commands,
        vec![unrelated, new_command],
        "the old operation's command is dropped, the others stay"
    );
}

/// Replacing a device's target in the same operation writes the target in
/// place with the next revision and moves its count within one shard.
#[tokio::test]
async fn replace_in_same_operation() {
    let client = client().await;
    let store = fresh_store(&client, "replace").await;
    insert_operation(&store, operation("op-1")).await;
    create_device(&store, device("dev-1")).await;
    assign_new(&store, target("op-1", "dev-1")).await;
    move_target(&store, "op-1", "dev-1", TargetStatus::Failed, at_minute(1)).await;
    let failed = read_target(&store, "op-1", "dev-1").await;

    let assignment = Assignment {
        target: Target {
            created_at: at_minute(2),
            updated_at: at_minute(2),
            ..target("op-1", "dev-1")
        },
        expected_current: Some("op-1".to_string()),
        replaces: Some(("op-1".to_string(), failed.revision)),
        events: Vec::new(),
        commands: Vec::new(),
    };
    let (outcomes, commit) = expect_ok(store.assign(vec![assignment]).await, "assign");

    assert_eq!(
        outcomes,
        [AssignOutcome::Assigned],
        "the replacement applies"
    );
    assert_eq!(
        commit.state_changes,
        [(
            "op-1".to_string(),
            OperationState::Finished,
            OperationState::Scheduled
        )],
        "a pending target replacing the only final one makes the operation scheduled again"
    );
    let replaced = read_target(&store, "op-1", "dev-1").await;
    assert_eq!(
        replaced.status,
        TargetStatus::Pending,
        "the new target is stored"
    );
    assert_eq!(
        replaced.revision,
        failed.revision + 1,
        "the replacement continues the revision count"
    );
    let counts = read_operation(&store, "op-1").await.counts;
    assert_eq!(counts.get(TargetStatus::Failed), 0, "failed count");
    assert_eq!(counts.get(TargetStatus::Pending), 1, "pending count");
}

/// A cursor of one operation's targets is rejected for another operation,
/// and an edited cursor is rejected too.
#[tokio::test]
async fn cursor_of_another_list_is_rejected() {
    let client = client().await;
    let store = fresh_store(&client, "cursor").await;
    for id in ["op-1", "op-2"] {
        insert_operation(&store, operation(id)).await;
    }
    for udid in ["dev-1", "dev-2", "dev-3"] {
        create_device(&store, device(udid)).await;
        assign_new(&store, target("op-1", udid)).await;
    }
    let first = expect_ok(
        store
            .list_targets("op-1", &TargetFilter::default(), &PageRequest::first(1))
            .await,
        "list_targets",
    );
    let cursor = first
        .next_cursor
        .expect("a first page of one has a next cursor");
    let own = expect_ok(
        store
            .list_targets(
                "op-1",
                &TargetFilter::default(),
                &PageRequest {
                    limit: 10,
                    cursor: Some(cursor.clone()),
                },
            )
            .await,
        "list_targets with its own cursor",
    );
    let rest: Vec<String> = own.items.into_iter().map(|t| t.device_id).collect();
    assert_eq!(
        rest,
        ["dev-2", "dev-3"],
        "the cursor continues after the first page"
    );

    let other = store
        .list_targets(
            "op-2",
            &TargetFilter::default(),
            &PageRequest {
                limit: 10,
                cursor: Some(cursor.clone()),
            },
        )
        .await;
    assert!(
        matches!(other, Err(StoreError::InvalidCursor(_))),
        "a cursor of op-1 used for op-2 must be invalid, got {other:?}"
    );
    let by_status = store
        .list_targets(
            "op-1",
            &TargetFilter {
                status: Some(TargetStatus::Pending),
                ..TargetFilter::default()
            },
            &PageRequest {
                limit: 10,
                cursor: Some(cursor.clone()),
            },
        )
        .await;
    assert!(
        matches!(by_status, Err(StoreError::InvalidCursor(_))),
        "a cursor of the unfiltered list used with a status filter must be invalid, got {by_status:?}"
    );
    let mut edited = cursor.clone();
    edited.insert(edited.len() / 2, 'A');
    let edited_result = store
        .list_targets(
            "op-1",
            &TargetFilter::default(),
            &PageRequest {
                limit: 10,
                cursor: Some(edited),
            },
        )
        .await;
    assert!(
        matches!(edited_result, Err(StoreError::InvalidCursor(_))),
        "an edited cursor must be invalid, got {edited_result:?}"
    );
}

/// Apple's catalog as bundled (about 105 KB) fits in one item. A catalog
/// over the 400 KB item limit is rejected and leaves the stored one.
#[tokio::test]
async fn catalog_item_size_limit() {
    let client = client().await;
    let store = fresh_store(&client, "catalog-size").await;
    let bundled = include_bytes!("../../shared/data/catalog/pmv.json").to_vec();
    assert!(
        bundled.len() > 100_000,
        "the bundled catalog is the full pmv JSON"
    );
    expect_ok(
        store.put_catalog(&bundled, T0).await,
        "put_catalog of the bundled catalog",
    );
    assert_eq!(
        expect_ok(store.latest_catalog().await, "latest_catalog"),
        Some(bundled.clone()),
        "the bundled catalog reads back byte for byte"
    );

    let oversized = vec![b' '; 400 * 1024];
    let rejected = store.put_catalog(&oversized, at_minute(1)).await;
    let Err(StoreError::Backend { source, .. }) = &rejected else {
        panic!("a 400 KB catalog must be rejected as a backend error, got {rejected:?}");
    };
    assert!(
        source.to_string().contains("item size limit"),
        "the error must name the item size limit, got {source}"
    );
    assert_eq!(
        expect_ok(store.latest_catalog().await, "latest_catalog"),
        Some(bundled),
        "a rejected catalog leaves the stored one"
    );
}

/// Events carry the TTL attribute in epoch seconds, rounded up, so DynamoDB
/// never deletes an event before it expires.
#[tokio::test]
async fn events_carry_ttl_seconds() {
    let client = client().await;
    let store = fresh_store(&client, "ttl").await;
    let mut written = event("op-1", Some("dev-1"), EventType::CommandSent, T0);
    written.expires_at = T0 + jiff::SignedDuration::from_millis(1500);
    expect_ok(store.append(std::slice::from_ref(&written)).await, "append");
    let items = raw_items(&store, &store.tables().events, "operation_id", "op-1").await;
    assert_eq!(items.len(), 1, "one event item");
    assert_eq!(
        items[0].get(TTL_ATTRIBUTE),
        Some(&AttributeValue::N((T0.as_second() + 2).to_string())),
        "the TTL is the expiry in whole seconds, rounded up"
    );
    let listed = expect_ok(
        store
            .list_events(
                "op-1",
                &EventFilter::default(),
                T0 + jiff::SignedDuration::from_millis(1499),
                &PageRequest::first(10),
            )
            .await,
        "list_events",
    );
    assert_eq!(
        listed.items,
        vec![written],
        "visible until its exact expiry"
    );
}
