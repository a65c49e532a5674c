//! An operation's life beyond one device's progress: devices moving between
//! operations, racing creations, cancellation, restarts, idempotent
//! creation, group targets and devices already up to date.

mod support;

use std::collections::BTreeMap;

use osdeploy_shared::apple::mdm::{
    Command, CommandEnvelope, CommandResult, CommandStatus, InstallAction,
    ScheduleOsUpdateResponse, UpdateResult, UpdateResultAction, UpdateResultStatus,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestDevice, TestServer, create, minutes};

fn mdm_request(udids: &[&str], version: &str) -> Value {
    json!({
        "update": { "product_version": version },
        "protocol": "mdm",
        "targets": { "device_ids": udids },
        "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-29T22:00:00", "time_zone": "device_local" },
    })
}

fn ddm_request(udids: &[&str]) -> Value {
    json!({
        "update": { "product_version": "26.6.1" },
        "protocol": "ddm",
        "targets": { "device_ids": udids },
        "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-29T22:00:00", "time_zone": "device_local" },
    })
}

/// The first update of a ScheduleOSUpdate: its version and install action.
fn scheduled(envelope: &CommandEnvelope) -> Option<(Option<String>, InstallAction)> {
    match &envelope.command {
        Command::ScheduleOsUpdate(payload) => payload
            .updates
            .first()
            .map(|u| (u.product_version.clone(), u.install_action)),
        _ => None,
    }
}

fn schedule_result(
    device: &TestDevice,
    envelope: &CommandEnvelope,
    product_key: &str,
    action: UpdateResultAction,
    status: UpdateResultStatus,
) -> CommandResult {
    CommandResult::new(
        device.udid.clone(),
        Some(envelope.command_uuid.clone()),
        CommandStatus::Acknowledged,
    )
    .with_response(&ScheduleOsUpdateResponse {
        update_results: vec![UpdateResult {
            product_key: product_key.into(),
            install_action: action,
            status,
            error_chain: None,
        }],
    })
    .expect("schedule result")
}

/// Sends the result of the device's pending ScheduleOSUpdate with `action` and `status`.
async fn answer_schedule(
    server: &TestServer,
    device: &TestDevice,
    action: UpdateResultAction,
    status: UpdateResultStatus,
) {
    let command = device.idle(server).await.expect("ScheduleOSUpdate");
    assert_eq!(command.command.request_type(), "ScheduleOSUpdate");
    let result = schedule_result(
        device,
        &command,
        "MSU_UPDATE_24G830_patch_15.7.9",
        action,
        status,
    );
    device.answer(server, &command, result).await;
}

async fn status_of(server: &TestServer, operation_id: &str, udid: &str) -> Option<String> {
    server.statuses(operation_id).await.get(udid).cloned()
}

async fn current_operation(server: &TestServer, udid: &str) -> Value {
    let (status, device) = server.get(&format!("/devices/{udid}")).await;
    assert_eq!(status, StatusCode::OK, "{device}");
    device["current_operation_id"].clone()
}

async fn overview(server: &TestServer, operation_id: &str) -> Value {
    let (status, body) = server.get(&format!("/operations/{operation_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Events of one type for one device.
async fn device_events(
    server: &TestServer,
    operation_id: &str,
    udid: &str,
    event_type: &str,
) -> Vec<Value> {
    server
        .events(operation_id)
        .await
        .into_iter()
        .filter(|e| e["type"] == event_type && e["device_id"] == udid)
        .collect()
}

#[tokio::test]
async fn device_moves_to_newer_operation() {
    let server = TestServer::start().await;
    let moving = TestDevice::mac("MAC-MOVING", "15.7.7", "24G720");
    let staying = TestDevice::mac("MAC-STAYING", "15.7.7", "24G720");
    moving.enroll(&server).await;
    staying.enroll(&server).await;
    let old = create(
        &server,
        mdm_request(&[&moving.udid, &staying.udid], "15.7.9"),
    )
    .await;

    answer_schedule(
        &server,
        &moving,
        UpdateResultAction::DownloadOnly,
        UpdateResultStatus::Idle,
    )
    .await;
    let command = staying.idle(&server).await.expect("ScheduleOSUpdate");
    let error = CommandResult::new(
        staying.udid.clone(),
        Some(command.command_uuid.clone()),
        CommandStatus::Error,
    );
    staying.answer(&server, &command, error).await;
    assert_eq!(
        status_of(&server, &old, &moving.udid).await.as_deref(),
        Some("approved")
    );
    assert_eq!(
        status_of(&server, &old, &staying.udid).await.as_deref(),
        Some("failed")
    );
    assert_eq!(overview(&server, &old).await["state"], "in_progress");

    server.advance(minutes(5));
    let newer = mdm_request(&[&moving.udid], "26.6.2");
    let (status, preview) = server.post("/operations/preview", &newer).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["moves"][0]["device_id"], moving.udid.as_str());
    assert_eq!(preview["moves"][0]["from_operation_id"], old.as_str());
    assert_eq!(preview["moves"][0]["from_status"], "approved");
    assert_eq!(preview["targets"][0]["moves_from"], old.as_str());
    let new = create(&server, newer).await;

    // The device left the old operation's list and counts.
    let old_statuses = server.statuses(&old).await;
    assert!(
        !old_statuses.contains_key(&moving.udid),
        "the moved device is no longer listed in the old operation: {old_statuses:?}"
    );
    assert_eq!(old_statuses.len(), 1);
    let old_view = overview(&server, &old).await;
    assert_eq!(old_view["total_devices"], 1, "{old_view}");
    assert_eq!(old_view["counts"]["approved"], 0, "{old_view}");
    assert_eq!(old_view["counts"]["failed"], 1, "{old_view}");
    // Its only remaining target is final, so the old operation finished.
    assert_eq!(old_view["state"], "finished", "{old_view}");
    assert!(
        server
            .event_types(&old)
            .await
            .contains(&"operation_completed".to_string())
    );

    assert_eq!(
        status_of(&server, &new, &moving.udid).await.as_deref(),
        Some("pending")
    );
    assert_eq!(overview(&server, &new).await["total_devices"], 1);
    assert_eq!(current_operation(&server, &moving.udid).await, new.as_str());

    for operation in [&old, &new] {
        let migrations = device_events(&server, operation, &moving.udid, "device_migration").await;
        assert_eq!(migrations.len(), 1, "one device_migration in {operation}");
        assert_eq!(migrations[0]["details"]["from_operation_id"], old.as_str());
        assert_eq!(migrations[0]["details"]["to_operation_id"], new.as_str());
    }

    // The old operation's queued commands went with it: the next command
    // is the new operation's update.
    let command = moving
        .idle(&server)
        .await
        .expect("the new ScheduleOSUpdate");
    let (version, _) = scheduled(&command).expect("a ScheduleOSUpdate");
    assert_eq!(version.as_deref(), Some("26.6.2"));
    server.stop().await;
}

#[tokio::test]
async fn moved_device_leaves_old_running() {
    let server = TestServer::start().await;
    let moving = TestDevice::mac("MAC-LEAVING", "15.7.7", "24G720");
    let waiting = TestDevice::mac("MAC-WAITING", "15.7.7", "24G720");
    moving.enroll(&server).await;
    waiting.enroll(&server).await;
    let old = create(
        &server,
        mdm_request(&[&moving.udid, &waiting.udid], "15.7.9"),
    )
    .await;
    answer_schedule(
        &server,
        &moving,
        UpdateResultAction::DownloadOnly,
        UpdateResultStatus::Downloading,
    )
    .await;
    answer_schedule(
        &server,
        &waiting,
        UpdateResultAction::DownloadOnly,
        UpdateResultStatus::Idle,
    )
    .await;

    server.advance(minutes(5));
    create(&server, mdm_request(&[&moving.udid], "26.6.2")).await;

    // The other target is still waiting, so the old operation keeps running
    // with counts that match its list.
    let old_view = overview(&server, &old).await;
    let old_statuses = server.statuses(&old).await;
    assert_eq!(old_view["state"], "in_progress", "{old_view}");
    assert_eq!(old_view["total_devices"], 1, "{old_view}");
    assert_eq!(old_view["counts"]["approved"], 1, "{old_view}");
    assert_eq!(
        old_statuses,
        BTreeMap::from([(waiting.udid.clone(), "approved".to_string())])
    );
    assert_eq!(
        current_operation(&server, &waiting.udid).await,
        old.as_str()
    );
    server.stop().await;
}

#[tokio::test]
async fn installing_device_is_not_moved() {
    let server = TestServer::start().await;
    let installing = TestDevice::mac("MAC-INSTALLING", "15.7.7", "24G720");
    let free = TestDevice::mac("MAC-FREE", "15.7.7", "24G720");
    installing.enroll(&server).await;
    free.enroll(&server).await;
    let first = create(
        &server,
        json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": [installing.udid] },
            "install": { "method": "install_immediately" },
        }),
    )
    .await;
    answer_schedule(
        &server,
        &installing,
        UpdateResultAction::InstallAsap,
        UpdateResultStatus::Installing,
    )
    .await;
    assert_eq!(
        status_of(&server, &first, &installing.udid)
            .await
            .as_deref(),
        Some("installing")
    );

    server.advance(minutes(5));
    let request = mdm_request(&[&installing.udid, &free.udid], "26.6.2");
    let (status, preview) = server.post("/operations/preview", &request).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let not_moved = preview["not_moved"].as_array().cloned().unwrap_or_default();
    assert_eq!(not_moved.len(), 1, "{preview}");
    assert_eq!(not_moved[0]["device_id"], installing.udid.as_str());
    assert_eq!(not_moved[0]["code"], "installing_elsewhere");
    assert!(
        not_moved[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&first)),
        "the reason names the operation it is installing in: {preview}"
    );
    assert_eq!(preview["moves"], json!([]), "{preview}");
    assert_eq!(preview["targets"].as_array().map(Vec::len), Some(1));

    let (status, created) = server.post("/operations", &request).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let second = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        created["not_moved"][0]["device_id"],
        installing.udid.as_str()
    );

    assert_eq!(
        status_of(&server, &first, &installing.udid)
            .await
            .as_deref(),
        Some("installing"),
        "the installing device stays in its operation"
    );
    assert_eq!(
        status_of(&server, &second, &installing.udid).await,
        None,
        "the new operation does not list it"
    );
    assert_eq!(
        status_of(&server, &second, &free.udid).await.as_deref(),
        Some("pending")
    );
    assert_eq!(
        current_operation(&server, &installing.udid).await,
        first.as_str()
    );
    assert!(
        device_events(&server, &first, &installing.udid, "device_migration")
            .await
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creations_split_devices() {
    let server = TestServer::start().await;
    let devices: Vec<TestDevice> = (0..50)
        .map(|i| TestDevice::mac(&format!("RACE-{i:02}"), "15.7.7", "24G720"))
        .collect();
    for device in &devices {
        device.enroll(&server).await;
    }
    let udids: Vec<&str> = devices.iter().map(|d| d.udid.as_str()).collect();
    let immediately = |version: &str| {
        json!({
            "update": { "product_version": version },
            "protocol": "mdm",
            "targets": { "device_ids": udids },
            "install": { "method": "install_immediately" },
        })
    };
    let (first, second) = (immediately("15.7.9"), immediately("26.6.2"));

    let mut earlier: Vec<String> = Vec::new();
    for round in 0..4 {
        server.advance(minutes(1));
        let ((status_a, a), (status_b, b)) = tokio::join!(
            server.post("/operations", &first),
            server.post("/operations", &second)
        );
        assert_eq!(status_a, StatusCode::CREATED, "round {round}: {a}");
        assert_eq!(status_b, StatusCode::CREATED, "round {round}: {b}");
        let ids = [
            a["id"].as_str().expect("id").to_string(),
            b["id"].as_str().expect("id").to_string(),
        ];
        let lists = [
            server.statuses(&ids[0]).await,
            server.statuses(&ids[1]).await,
        ];

        for udid in &udids {
            let holders: Vec<&String> = ids
                .iter()
                .zip(&lists)
                .filter(|(_, list)| list.contains_key(*udid))
                .map(|(id, _)| id)
                .collect();
            assert_eq!(
                holders.len(),
                1,
                "round {round}: {udid} is in exactly one operation, found {holders:?}"
            );
            assert_eq!(
                current_operation(&server, udid).await,
                holders[0].as_str(),
                "round {round}: {udid}'s current operation"
            );
        }
        let totals: Vec<i64> = {
            let mut totals = Vec::new();
            for id in &ids {
                let view = overview(&server, id).await;
                let counts = view["counts"].as_object().expect("counts");
                let sum: i64 = counts.values().filter_map(Value::as_i64).sum();
                assert_eq!(
                    view["total_devices"].as_i64(),
                    Some(sum),
                    "round {round}: total matches the counts"
                );
                totals.push(sum);
            }
            totals
        };
        assert_eq!(totals[0] + totals[1], 50, "round {round}: {totals:?}");
        assert_eq!(
            totals[0] as usize,
            lists[0].len(),
            "round {round}: counts match the list"
        );
        assert_eq!(totals[1] as usize, lists[1].len());

        // From the second round on every device arrived from another
        // operation, and both sides recorded the move.
        if round > 0 {
            let mut events: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for (id, list) in ids.iter().zip(&lists) {
                for udid in list.keys() {
                    if !events.contains_key(id) {
                        events.insert(id.clone(), server.events(id).await);
                    }
                    let arrival = |e: &&Value| {
                        e["type"] == "device_migration"
                            && e["device_id"] == udid.as_str()
                            && e["details"]["to_operation_id"] == id.as_str()
                    };
                    let arrivals: Vec<Value> = events[id].iter().filter(arrival).cloned().collect();
                    assert_eq!(arrivals.len(), 1, "round {round}: {udid} arrived once");
                    let from = arrivals[0]["details"]["from_operation_id"]
                        .as_str()
                        .expect("from_operation_id")
                        .to_string();
                    if !events.contains_key(&from) {
                        events.insert(from.clone(), server.events(&from).await);
                    }
                    assert_eq!(
                        events[&from].iter().filter(arrival).count(),
                        1,
                        "round {round}: {from} recorded {udid} leaving"
                    );
                }
            }
        }

        for id in &earlier {
            assert!(
                server.statuses(id).await.is_empty(),
                "round {round}: every device left earlier operation {id}"
            );
            assert_eq!(overview(&server, id).await["total_devices"], 0);
        }
        earlier.extend(ids);
    }
    server.stop().await;
}

/// Returns the Identifier and ServerToken of the enforcement declaration
/// listed for a device, if any.
async fn listed_enforcement(server: &TestServer, device: &TestDevice) -> Option<(String, String)> {
    let (status, items) = device.ddm(server, "declaration-items", None).await;
    assert_eq!(status, StatusCode::OK, "{items}");
    items["Declarations"]["Configurations"]
        .as_array()?
        .iter()
        .find(|c| {
            c["Identifier"]
                .as_str()
                .is_some_and(|id| id.starts_with("osdeploy.enforcement."))
        })
        .map(|c| {
            (
                c["Identifier"].as_str().unwrap_or_default().to_string(),
                c["ServerToken"].as_str().unwrap_or_default().to_string(),
            )
        })
}

async fn declarations_token(server: &TestServer, device: &TestDevice) -> String {
    let (status, tokens) = device.ddm(server, "tokens", None).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokens["SyncTokens"]["DeclarationsToken"]
        .as_str()
        .expect("DeclarationsToken")
        .to_string()
}

fn accepted(identifier: &str, token: &str, install_state: &str) -> Value {
    json!({
        "management": { "declarations": {
            "activations": [], "assets": [], "management": [],
            "configurations": [{ "identifier": identifier, "server-token": token, "active": true, "valid": "valid" }],
        }},
        "softwareupdate": { "install-state": install_state },
    })
}

fn running(version: &str, build: &str) -> Value {
    json!({
        "softwareupdate": { "install-state": "none" },
        "device": { "operating-system": { "version": version, "build-version": build } },
    })
}

#[tokio::test]
async fn cancel_withdraws_waiting_devices() {
    let server = TestServer::start().await;
    let pending = TestDevice::iphone("PHONE-PENDING", "18.7", "22H20");
    let downloading = TestDevice::iphone("PHONE-DOWNLOADING", "18.7", "22H20");
    let installing = TestDevice::iphone("PHONE-INSTALLING", "18.7", "22H20");
    let installed = TestDevice::iphone("PHONE-INSTALLED", "18.7", "22H20");
    let phones = [&pending, &downloading, &installing, &installed];
    for phone in phones {
        phone.enroll(&server).await;
    }
    let udids: Vec<&str> = phones.iter().map(|p| p.udid.as_str()).collect();
    let operation = create(&server, ddm_request(&udids)).await;

    let mut tokens = BTreeMap::new();
    let mut enforcement = None;
    for phone in phones {
        let sync = phone.idle(&server).await.expect("DeclarativeManagement");
        phone.answer(&server, &sync, phone.acknowledge(&sync)).await;
        tokens.insert(phone.udid.clone(), declarations_token(&server, phone).await);
        enforcement = listed_enforcement(&server, phone).await;
        assert!(enforcement.is_some(), "{} has the declaration", phone.udid);
    }
    let (identifier, server_token) = enforcement.expect("enforcement declaration");
    server.advance(minutes(10));
    let reports = [
        (
            &downloading,
            vec![accepted(&identifier, &server_token, "downloading")],
        ),
        (
            &installing,
            vec![accepted(&identifier, &server_token, "installing")],
        ),
        (
            &installed,
            vec![
                accepted(&identifier, &server_token, "installing"),
                running("26.6.1", "23G83"),
            ],
        ),
    ];
    for (phone, items) in &reports {
        for item in items {
            assert_eq!(phone.status(&server, item.clone()).await, StatusCode::OK);
        }
    }
    let before = server.statuses(&operation).await;
    let expected: BTreeMap<String, String> = [
        (&pending, "pending"),
        (&downloading, "downloading"),
        (&installing, "installing"),
        (&installed, "installed"),
    ]
    .into_iter()
    .map(|(p, s)| (p.udid.clone(), s.to_string()))
    .collect();
    assert_eq!(before, expected);
    assert!(
        !server.schedules_of(&operation).await.is_empty(),
        "the update's expiry is scheduled"
    );
    assert_eq!(overview(&server, &operation).await["can_cancel"], true);

    server.advance(minutes(10));
    let (status, cancelled) = server
        .post(&format!("/operations/{operation}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["can_cancel"], false);
    assert!(cancelled["cancelled_at"].is_string(), "{cancelled}");

    let after = server.statuses(&operation).await;
    for (phone, status) in [
        (&pending, "cancelled"),
        (&downloading, "cancelled"),
        (&installing, "installing"),
        (&installed, "installed"),
    ] {
        assert_eq!(
            after.get(&phone.udid).map(String::as_str),
            Some(status),
            "{} after cancel",
            phone.udid
        );
    }

    // The waiting devices lose the declaration and get a DeclarativeManagement command.
    for phone in [&pending, &downloading] {
        let sync = phone.idle(&server).await.expect("DeclarativeManagement");
        assert_eq!(sync.command.request_type(), "DeclarativeManagement");
        phone.answer(&server, &sync, phone.acknowledge(&sync)).await;
        assert_ne!(
            declarations_token(&server, phone).await,
            tokens[&phone.udid],
            "{}: the DeclarationsToken changes",
            phone.udid
        );
        assert_eq!(
            listed_enforcement(&server, phone).await,
            None,
            "{}: the enforcement declaration is withdrawn",
            phone.udid
        );
        assert_eq!(current_operation(&server, &phone.udid).await, Value::Null);
        assert_eq!(
            device_events(&server, &operation, &phone.udid, "declarations_withdrawn")
                .await
                .len(),
            1
        );
    }
    // The installing device keeps its declaration and its operation.
    assert_eq!(
        listed_enforcement(&server, &installing).await,
        Some((identifier.clone(), server_token.clone()))
    );
    assert_eq!(
        current_operation(&server, &installing.udid).await,
        operation.as_str()
    );
    let types = server.event_types(&operation).await;
    for expected in [
        "operation_cancellation_requested",
        "operation_cancelled",
        "cancelled",
        "declarations_withdrawn",
    ] {
        assert!(
            types.contains(&expected.to_string()),
            "no {expected} in {types:?}"
        );
    }
    assert!(
        server.schedules_of(&operation).await.is_empty(),
        "a cancelled operation keeps no schedules"
    );

    // After the cancel the installing device still reaches its final status,
    // and a cancelled device's late report changes nothing.
    server.advance(minutes(30));
    assert_eq!(
        installing.status(&server, running("26.6.1", "23G83")).await,
        StatusCode::OK
    );
    assert_eq!(
        downloading
            .status(
                &server,
                json!({ "softwareupdate": { "install-state": "prepared" } })
            )
            .await,
        StatusCode::OK
    );
    let last = server.statuses(&operation).await;
    assert_eq!(
        last.get(&installing.udid).map(String::as_str),
        Some("installed")
    );
    assert_eq!(
        last.get(&downloading.udid).map(String::as_str),
        Some("cancelled")
    );
    let view = overview(&server, &operation).await;
    assert_eq!(
        view["state"], "cancelled",
        "a cancelled operation stays cancelled"
    );
    assert_eq!(view["counts"]["installed"], 2, "{view}");
    assert_eq!(view["counts"]["cancelled"], 2, "{view}");

    let (status, again) = server
        .post(&format!("/operations/{operation}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["error"]["code"], "cannot_cancel");
    assert!(
        again["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already cancelled")),
        "{again}"
    );
    server.stop().await;
}

#[tokio::test]
async fn mdm_operation_cannot_be_cancelled() {
    let server = TestServer::start().await;
    let mac = TestDevice::mac("MAC-KEEP", "15.7.7", "24G720");
    mac.enroll(&server).await;
    mac.set_time_zone(&server, "Europe/Berlin").await;
    let operation = create(&server, mdm_request(&[&mac.udid], "15.7.9")).await;
    answer_schedule(
        &server,
        &mac,
        UpdateResultAction::DownloadOnly,
        UpdateResultStatus::Idle,
    )
    .await;
    let schedules: Vec<String> = server
        .schedules_of(&operation)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert!(
        schedules.iter().any(|id| id.starts_with("deadline:")),
        "the MDM deadline is scheduled: {schedules:?}"
    );

    let view = overview(&server, &operation).await;
    assert_eq!(view["can_cancel"], false);
    assert!(view["cancel_unavailable_reason"].is_string(), "{view}");
    let (status, refused) = server
        .post(&format!("/operations/{operation}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "cannot_cancel");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MDM")),
        "the reason names the protocol: {refused}"
    );

    assert_eq!(overview(&server, &operation).await["state"], "in_progress");
    assert_eq!(
        status_of(&server, &operation, &mac.udid).await.as_deref(),
        Some("approved")
    );
    let still: Vec<String> = server
        .schedules_of(&operation)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(still, schedules, "a refused cancel keeps the deadline");
    server.stop().await;
}

/// Everything an operation shows, for comparison across a restart.
async fn record(
    server: &TestServer,
    operation: &str,
) -> (Value, BTreeMap<String, String>, Vec<Value>) {
    (
        overview(server, operation).await,
        server.statuses(operation).await,
        server.events(operation).await,
    )
}

#[tokio::test]
async fn restart_keeps_mdm_operation() {
    let mut server = TestServer::start().await;
    let berlin = TestDevice::mac("MAC-R-BERLIN", "15.7.7", "24G720");
    let busy = TestDevice::mac("MAC-R-BUSY", "15.7.7", "24G720");
    let downloading = TestDevice::mac("MAC-R-DOWNLOADING", "15.7.7", "24G720");
    for device in [&berlin, &busy, &downloading] {
        device.enroll(&server).await;
    }
    berlin.set_time_zone(&server, "Europe/Berlin").await;
    busy.set_time_zone(&server, "America/New_York").await;
    downloading.set_time_zone(&server, "America/New_York").await;
    let operation = create(
        &server,
        json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": [berlin.udid, busy.udid, downloading.udid] },
            "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-24T22:00:00", "time_zone": "device_local" },
        }),
    )
    .await;
    answer_schedule(
        &server,
        &berlin,
        UpdateResultAction::DownloadOnly,
        UpdateResultStatus::Idle,
    )
    .await;
    answer_schedule(
        &server,
        &downloading,
        UpdateResultAction::DownloadOnly,
        UpdateResultStatus::Downloading,
    )
    .await;
    let not_now = busy.idle(&server).await.expect("ScheduleOSUpdate");
    let result = CommandResult::new(
        busy.udid.clone(),
        Some(not_now.command_uuid.clone()),
        CommandStatus::NotNow,
    );
    busy.answer(&server, &not_now, result).await;

    server.advance(minutes(10));
    let before = record(&server, &operation).await;
    let schedules = server.schedules_of(&operation).await;
    assert_eq!(
        before.1,
        BTreeMap::from([
            (berlin.udid.clone(), "approved".to_string()),
            (busy.udid.clone(), "pending".to_string()),
            (downloading.udid.clone(), "approved".to_string()),
        ])
    );

    server = server.restart().await;
    let after = record(&server, &operation).await;
    assert_eq!(after.0, before.0, "the operation is unchanged");
    assert_eq!(after.1, before.1, "every target is unchanged");
    assert_eq!(after.2, before.2, "every event is kept");
    assert_eq!(server.schedules_of(&operation).await, schedules);

    // A NotNow command is still queued for its device.
    let again = busy.idle(&server).await.expect("the NotNow command again");
    assert_eq!(again.command_uuid, not_now.command_uuid);

    // Berlin's deadline fires from the stored schedule, then New York's.
    server
        .clock
        .set("2026-08-24T20:00:00Z".parse().expect("deadline"));
    assert_eq!(server.run_due_schedules().await, 1);
    let install = berlin.idle(&server).await.expect("InstallASAP");
    assert_eq!(
        scheduled(&install).map(|(_, action)| action),
        Some(InstallAction::InstallAsap)
    );
    server
        .clock
        .set("2026-08-25T02:00:00Z".parse().expect("deadline"));
    assert_eq!(server.run_due_schedules().await, 1);
    for device in [&busy, &downloading] {
        let install = device.idle(&server).await.expect("InstallASAP");
        assert_eq!(
            scheduled(&install).map(|(_, action)| action),
            Some(InstallAction::InstallAsap),
            "{}",
            device.udid
        );
    }
    assert!(
        server
            .schedules_of(&operation)
            .await
            .iter()
            .all(|s| !s.id.starts_with("deadline:"))
    );

    let events = server.events(&operation).await;
    for event in &before.2 {
        assert!(
            events.iter().any(|e| e["id"] == event["id"]),
            "event {} survives",
            event["id"]
        );
    }
    let deadlines = events
        .iter()
        .filter(|e| e["type"] == "deadline_reached")
        .count();
    assert_eq!(deadlines, 3, "one deadline_reached per device");
    server.stop().await;
}

#[tokio::test]
async fn restart_keeps_ddm_declarations() {
    let mut server = TestServer::start().await;
    let phone = TestDevice::iphone("PHONE-RESTART", "18.7", "22H20");
    phone.enroll(&server).await;
    let operation = create(&server, ddm_request(&[&phone.udid])).await;
    let sync = phone.idle(&server).await.expect("DeclarativeManagement");
    phone.answer(&server, &sync, phone.acknowledge(&sync)).await;
    let (identifier, token) = listed_enforcement(&server, &phone)
        .await
        .expect("enforcement declaration");
    assert_eq!(
        phone
            .status(&server, accepted(&identifier, &token, "downloading"))
            .await,
        StatusCode::OK
    );
    server.advance(minutes(10));
    let path = format!("declaration/configuration/{identifier}");
    let before = record(&server, &operation).await;
    let tokens_before = declarations_token(&server, &phone).await;
    let (_, declaration_before) = phone.ddm(&server, &path, None).await;
    assert_eq!(
        before.1.get(&phone.udid).map(String::as_str),
        Some("downloading")
    );

    server = server.restart().await;
    let after = record(&server, &operation).await;
    assert_eq!(after.0, before.0, "the operation is unchanged");
    assert_eq!(after.1, before.1, "the target is unchanged");
    assert_eq!(after.2, before.2, "every event is kept");
    assert_eq!(declarations_token(&server, &phone).await, tokens_before);
    assert_eq!(
        listed_enforcement(&server, &phone).await,
        Some((identifier.clone(), token.clone()))
    );
    let (status, declaration_after) = phone.ddm(&server, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(declaration_after, declaration_before);

    server.advance(minutes(30));
    assert_eq!(
        phone.status(&server, running("26.6.1", "23G83")).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&server, &operation, &phone.udid).await.as_deref(),
        Some("installed")
    );
    assert_eq!(overview(&server, &operation).await["state"], "finished");
    server.stop().await;
}

#[tokio::test]
async fn idempotency_key_creates_once() {
    let server = TestServer::start().await;
    let mac = TestDevice::mac("MAC-ONCE", "15.7.7", "24G720");
    mac.enroll(&server).await;
    let request = mdm_request(&[&mac.udid], "15.7.9");
    let key = [("Idempotency-Key", "create-once-1")];

    let (status, first) = server
        .post_with_headers("/operations", &request, &key)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    server.advance(minutes(1));
    let (status, second) = server
        .post_with_headers("/operations", &request, &key)
        .await;
    assert_eq!(status, StatusCode::OK, "a repeat returns 200: {second}");
    assert_eq!(second["id"], first["id"]);

    let operations = server.all("/operations").await;
    assert_eq!(operations.len(), 1, "one operation");
    let id = first["id"].as_str().expect("id");
    let created = server
        .event_types(id)
        .await
        .iter()
        .filter(|t| *t == "operation_created")
        .count();
    assert_eq!(created, 1);
    assert_eq!(server.statuses(id).await.len(), 1);

    let (status, other) = server
        .post_with_headers(
            "/operations",
            &request,
            &[("Idempotency-Key", "create-once-2")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "another key creates: {other}");
    assert_ne!(other["id"], first["id"]);

    let long = "k".repeat(256);
    for bad in ["", long.as_str()] {
        let (status, body) = server
            .post_with_headers("/operations", &request, &[("Idempotency-Key", bad)])
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "key of {} characters: {body}",
            bad.len()
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Idempotency-Key")),
            "{body}"
        );
    }
    assert_eq!(server.all("/operations").await.len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_create_once() {
    let server = TestServer::start().await;
    let mac = TestDevice::mac("MAC-TWICE", "15.7.7", "24G720");
    mac.enroll(&server).await;
    let request = mdm_request(&[&mac.udid], "15.7.9");
    for round in 0..5 {
        server.advance(minutes(1));
        let key = format!("concurrent-{round}");
        let header = [("Idempotency-Key", key.as_str())];
        let ((status_a, a), (status_b, b)) = tokio::join!(
            server.post_with_headers("/operations", &request, &header),
            server.post_with_headers("/operations", &request, &header)
        );
        // One creates. The other replays it, or gets a 409 while the first
        // is still writing and replays it on retry.
        let (created, repeat, repeat_status) = match (status_a, status_b) {
            (StatusCode::CREATED, other) => (a, b, other),
            (other, StatusCode::CREATED) => (b, a, other),
            _ => panic!("round {round}: no request created the operation: {a} {b}"),
        };
        let repeat = match repeat_status {
            StatusCode::OK => repeat,
            StatusCode::CONFLICT => {
                assert_eq!(
                    repeat["error"]["code"], "idempotency_key_in_use",
                    "round {round}: {repeat}"
                );
                let (status, retried) = server
                    .post_with_headers("/operations", &request, &header)
                    .await;
                assert_eq!(status, StatusCode::OK, "round {round}: retry: {retried}");
                retried
            }
            other => panic!("round {round}: the repeat got {other}: {repeat}"),
        };
        assert_eq!(
            repeat["id"], created["id"],
            "round {round}: the same operation"
        );
        assert_eq!(
            server.all("/operations").await.len(),
            round + 1,
            "round {round}: one operation per key"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn group_zone_reaches_targets() {
    let server = TestServer::start().await;
    let zoneless = TestDevice::mac("MAC-G-ZONELESS", "15.7.7", "24G720");
    let chicago = TestDevice::mac("MAC-G-CHICAGO", "15.7.7", "24G720");
    let later = TestDevice::mac("MAC-G-LATER", "15.7.7", "24G720");
    for device in [&zoneless, &chicago, &later] {
        device.enroll(&server).await;
    }
    chicago.set_time_zone(&server, "America/Chicago").await;
    let (status, group) = server
        .post(
            "/device-groups",
            &json!({ "name": "Tokyo office", "time_zone": "Asia/Tokyo" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let group_id = group["id"].as_str().expect("group id").to_string();
    let members = format!("/device-groups/{group_id}/members");
    let (status, body) = server
        .put(
            &members,
            &json!({ "device_ids": [zoneless.udid, chicago.udid] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let operation = create(
        &server,
        json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "group_ids": [group_id] },
            "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-29T22:00:00", "time_zone": "device_local" },
        }),
    )
    .await;
    let targets_path = format!("/operations/{operation}/devices");
    let targets: BTreeMap<String, Value> = server
        .all(&targets_path)
        .await
        .into_iter()
        .map(|t| (t["device_id"].as_str().unwrap_or_default().to_string(), t))
        .collect();
    assert_eq!(targets.len(), 2, "{targets:?}");
    let tokyo = &targets[&zoneless.udid];
    assert_eq!(tokyo["time_zone"], "Asia/Tokyo");
    assert_eq!(tokyo["zone_source"], "group");
    assert_eq!(tokyo["deadline_at"], "2026-08-29T13:00:00Z");
    assert_eq!(tokyo["group_ids"], json!([group_id]));
    let own = &targets[&chicago.udid];
    assert_eq!(
        own["time_zone"], "America/Chicago",
        "the device's own zone wins"
    );
    assert_eq!(own["zone_source"], "device");
    assert_eq!(own["deadline_at"], "2026-08-30T03:00:00Z");
    assert_eq!(
        overview(&server, &operation).await["group_ids"],
        json!([group_id])
    );
    let listed = server
        .all(&format!("/operations?group_id={group_id}"))
        .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], operation.as_str());

    // Changing the group afterwards leaves the operation as created.
    let (status, body) = server
        .put(&members, &json!({ "device_ids": [later.udid] }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .patch(
            &format!("/device-groups/{group_id}"),
            &json!({ "time_zone": "Europe/London" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let after: BTreeMap<String, Value> = server
        .all(&targets_path)
        .await
        .into_iter()
        .map(|t| (t["device_id"].as_str().unwrap_or_default().to_string(), t))
        .collect();
    assert_eq!(
        after, targets,
        "membership and zone changes do not alter the targets"
    );
    let by_group = server
        .all(&format!("{targets_path}?group_id={group_id}"))
        .await;
    assert_eq!(
        by_group.len(),
        2,
        "targets keep the groups they were created with"
    );
    assert_eq!(current_operation(&server, &later.udid).await, Value::Null);
    let mut zones: Vec<String> = server
        .schedules_of(&operation)
        .await
        .into_iter()
        .filter(|s| s.id.starts_with("deadline:"))
        .map(|s| s.id)
        .collect();
    zones.sort();
    assert_eq!(
        zones,
        vec![
            format!("deadline:{operation}:America/Chicago"),
            format!("deadline:{operation}:Asia/Tokyo"),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn current_device_becomes_obsolete() {
    let server = TestServer::start().await;
    let current = TestDevice::mac("MAC-CURRENT", "15.7.9", "24G830");
    let behind = TestDevice::mac("MAC-BEHIND", "15.7.7", "24G720");
    current.enroll(&server).await;
    behind.enroll(&server).await;
    let operation = create(
        &server,
        json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": [current.udid, behind.udid] },
            "install": { "method": "install_immediately" },
        }),
    )
    .await;
    let statuses = server.statuses(&operation).await;
    assert_eq!(
        statuses.get(&current.udid).map(String::as_str),
        Some("obsolete")
    );
    assert_eq!(
        statuses.get(&behind.udid).map(String::as_str),
        Some("pending")
    );
    let obsolete = device_events(&server, &operation, &current.udid, "obsolete").await;
    assert_eq!(obsolete.len(), 1);
    assert_eq!(obsolete[0]["details"]["current_version"], "15.7.9");
    assert_eq!(current_operation(&server, &current.udid).await, Value::Null);
    assert_eq!(
        current_operation(&server, &behind.udid).await,
        operation.as_str()
    );
    assert!(
        current.idle(&server).await.is_none(),
        "an obsolete device gets no command"
    );
    let view = overview(&server, &operation).await;
    assert_eq!(view["counts"]["obsolete"], 1);
    assert_eq!(view["completed_devices"], 1);
    assert_eq!(view["total_devices"], 2);

    // With only up-to-date devices the operation is finished at once.
    let only = create(
        &server,
        json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": [current.udid] },
            "install": { "method": "install_immediately" },
        }),
    )
    .await;
    assert_eq!(overview(&server, &only).await["state"], "finished");
    server.stop().await;
}
