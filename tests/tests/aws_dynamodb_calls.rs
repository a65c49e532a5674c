//! DynamoDB calls per device request, counted at the HTTP layer of the
//! client while the real use cases serve an iPhone through a DDM
//! operation. The budget: a request that changes nothing is one read, and
//! a report that changes something is one read and one write (a
//! transaction, or a single conditional write when the change is one
//! item). A report that moves the operation's lifecycle state costs one
//! more read and the append of the `operation_started` or
//! `operation_completed` event.

mod aws_support;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_support::{CallLog, fresh_store, recording_client};
use osdeploy_shared::adapters::{ChannelPublisher, LocalBlobStore, RecordedPush, SqliteStore};
use osdeploy_shared::apple::mdm::{CommandEnvelope, CommandResult, CommandStatus, parse_command};
use osdeploy_shared::catalog::Catalog;
use osdeploy_shared::domain::{ManualClock, UlidGenerator};
use osdeploy_shared::ports::{DeviceStore, OperationStore, PageRequest, TargetFilter};
use osdeploy_shared::service::checkin::CheckinReply;
use osdeploy_shared::service::operations::CreateOperationRequest;
use osdeploy_shared::service::{Ports, ServiceConfig, Services};
use serde_json::{Value, json};
use support::{TestDevice, plist_xml};

const READS: &[&str] = &["GetItem", "Query", "BatchGetItem"];
const WRITES: &[&str] = &[
    "TransactWriteItems",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
];

async fn connect(services: &Services, result: CommandResult) -> Option<CommandEnvelope> {
    let body = result.to_plist_xml().expect("result plist");
    let reply = services
        .handle_connect(&body)
        .await
        .expect("command result accepted");
    reply.map(|body| parse_command(&body).expect("a valid command"))
}

async fn ddm(services: &Services, udid: &str, endpoint: &str, data: Option<Value>) -> Value {
    let mut dict = plist::Dictionary::new();
    dict.insert("MessageType".into(), "DeclarativeManagement".into());
    dict.insert("UDID".into(), udid.into());
    dict.insert("Endpoint".into(), endpoint.into());
    if let Some(data) = data {
        let bytes = serde_json::to_vec(&data).expect("status JSON");
        dict.insert("Data".into(), plist::Value::Data(bytes));
    }
    match services
        .handle_checkin(&plist_xml(dict))
        .await
        .expect("declarative management check-in accepted")
    {
        CheckinReply::Json(body) if body.is_empty() => Value::Null,
        CheckinReply::Json(body) => serde_json::from_slice(&body).expect("JSON reply"),
        other => panic!("a declarative management check-in returns JSON, got {other:?}"),
    }
}

fn report(items: Value) -> Value {
    json!({ "StatusItems": items, "Errors": [], "FullReport": false })
}

/// Calls of the last step, by operation.
fn calls_by_operation(log: &CallLog) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in log.take() {
        *counts.entry(call).or_insert(0) += 1;
    }
    counts
}

fn total(calls: &BTreeMap<String, usize>, operations: &[&str]) -> usize {
    operations
        .iter()
        .map(|op| calls.get(*op).copied().unwrap_or(0))
        .sum()
}

struct Step {
    label: &'static str,
    calls: BTreeMap<String, usize>,
}

/// Checks one step against its budget and keeps it for the summary.
fn check(steps: &mut Vec<Step>, log: &CallLog, label: &'static str, reads: usize, writes: usize) {
    let calls = calls_by_operation(log);
    let known: usize = total(&calls, READS) + total(&calls, WRITES);
    let all: usize = calls.values().sum();
    assert_eq!(all, known, "{label}: unexpected kinds of calls {calls:?}");
    assert_eq!(total(&calls, READS), reads, "{label}: reads in {calls:?}");
    assert_eq!(
        total(&calls, WRITES),
        writes,
        "{label}: writes in {calls:?}"
    );
    steps.push(Step { label, calls });
}

#[tokio::test]
async fn calls_per_checkin_and_report() {
    let (client, log) = recording_client().await;
    let store = Arc::new(fresh_store(&client, "calls").await);
    let schedules = Arc::new(SqliteStore::in_memory().expect("in-memory schedule store"));
    let blob_dir = tempfile::tempdir().expect("temporary directory");
    let ports = Ports {
        devices: store.clone(),
        groups: store.clone(),
        operations: store.clone(),
        events: store.clone(),
        scheduler: schedules.clone(),
        schedules: Some(schedules),
        catalogs: store.clone(),
        push: Arc::new(RecordedPush::default()),
        // Blobs are not part of the DynamoDB call budget; a folder will do.
        blobs: Arc::new(
            LocalBlobStore::open(
                blob_dir.path(),
                [7u8; 32],
                "/downloads",
                Arc::new(ManualClock::new(support::START.parse().expect("start"))),
            )
            .expect("local blob store"),
        ),
        publisher: Arc::new(ChannelPublisher::default()),
    };
    let clock = Arc::new(ManualClock::new(
        support::START.parse().expect("start instant"),
    ));
    let services = Services::new(
        ports,
        clock.clone(),
        Arc::new(UlidGenerator::seeded(7)),
        Arc::new(Catalog::bundled().clone()),
        ServiceConfig::default(),
    );

    // Enrollment: Authenticate, TokenUpdate, then the inventory query.
    let phone = TestDevice::iphone("PHONE-CALLS", "18.7", "22H20");
    for body in [phone.authenticate_body(), phone.token_update_body()] {
        services
            .handle_checkin(&body)
            .await
            .expect("enrollment check-in");
    }
    let idle = || CommandResult::new(phone.udid.clone(), None, CommandStatus::Idle);
    let mut next = connect(&services, idle()).await;
    while let Some(envelope) = next {
        next = connect(&services, phone.acknowledge(&envelope)).await;
    }

    let request: CreateOperationRequest = serde_json::from_value(json!({
        "update": { "product_version": "26.6.1" },
        "protocol": "ddm",
        "targets": { "device_ids": [phone.udid] },
        "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-25T22:00:00", "time_zone": "device_local" },
    }))
    .expect("create request");
    let created = services
        .create_operation(&request, None, "admin")
        .await
        .expect("operation created");
    let operation_id = created.operation.id.clone();
    let mut steps = Vec::new();
    log.take();
    let sync = connect(&services, idle())
        .await
        .expect("the operation queued a command");
    assert_eq!(
        sync.command.request_type(),
        "DeclarativeManagement",
        "a DDM operation syncs declarations first"
    );
    check(
        &mut steps,
        &log,
        "MDM Idle, a command queued (marked sent)",
        1,
        1,
    );
    let after = connect(&services, phone.acknowledge(&sync)).await;
    assert!(after.is_none(), "nothing else is queued, got {after:?}");
    check(
        &mut steps,
        &log,
        "MDM acknowledgement (command removed)",
        1,
        1,
    );

    let items = ddm(&services, &phone.udid, "declaration-items", None).await;
    let enforcement = items["Declarations"]["Configurations"]
        .as_array()
        .and_then(|all| {
            all.iter().find(|d| {
                d["Identifier"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("osdeploy.enforcement."))
            })
        })
        .cloned()
        .expect("the enforcement declaration is listed");
    let accepted = json!({
        "management": { "declarations": {
            "activations": [], "assets": [], "management": [],
            "configurations": [{
                "identifier": enforcement["Identifier"],
                "server-token": enforcement["ServerToken"],
                "active": true, "valid": "valid",
            }],
        }},
        "softwareupdate": { "install-state": "none" },
    });
    log.take();

    connect(&services, idle()).await;
    check(&mut steps, &log, "MDM Idle, no command queued", 1, 0);

    ddm(&services, &phone.udid, "tokens", None).await;
    check(&mut steps, &log, "DDM tokens check-in", 1, 0);

    ddm(&services, &phone.udid, "status", Some(report(accepted))).await;
    // A lifecycle change costs one more read of the operation, the
    // conditional write that claims the change, and the event's append.
    check(
        &mut steps,
        &log,
        "status report, pending -> approved, operation starts",
        2,
        3,
    );

    let downloading = json!({ "softwareupdate": { "install-state": "downloading", "pending-version": { "os-version": "26.6.1", "build-version": "23G83" } } });
    ddm(
        &services,
        &phone.udid,
        "status",
        Some(report(downloading.clone())),
    )
    .await;
    check(
        &mut steps,
        &log,
        "status report, approved -> downloading",
        1,
        1,
    );

    ddm(&services, &phone.udid, "status", Some(report(downloading))).await;
    check(&mut steps, &log, "status report that changes nothing", 1, 0);

    let installing = json!({ "softwareupdate": { "install-state": "installing" } });
    ddm(&services, &phone.udid, "status", Some(report(installing))).await;
    check(
        &mut steps,
        &log,
        "status report, downloading -> installing",
        1,
        1,
    );

    let installed = json!({
        "softwareupdate": { "install-state": "none" },
        "device": { "operating-system": { "version": "26.6.1", "build-version": "23G83" } },
    });
    ddm(&services, &phone.udid, "status", Some(report(installed))).await;
    check(
        &mut steps,
        &log,
        "status report, installing -> installed, operation completes",
        2,
        3,
    );

    let target = store
        .get_target(&operation_id, &phone.udid)
        .await
        .expect("get_target")
        .expect("the target exists");
    assert_eq!(
        target.status.as_str(),
        "installed",
        "the reports drove the target to installed"
    );
    let listed = store
        .list_targets(
            &operation_id,
            &TargetFilter::default(),
            &PageRequest::first(10),
        )
        .await
        .expect("list_targets");
    assert_eq!(listed.items.len(), 1, "one target in the operation");
    let device = store
        .get_device(&phone.udid)
        .await
        .expect("get_device")
        .expect("the device exists");
    assert_eq!(
        device.os_version.map(|v| v.to_string()).as_deref(),
        Some("26.6.1"),
        "the last report updated the inventory"
    );

    println!("DynamoDB calls per device request (moto's server, counted per HTTP request):");
    for step in &steps {
        println!("  {:<62} {:?}", step.label, step.calls);
    }
}
