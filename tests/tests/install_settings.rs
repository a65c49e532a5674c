//! Installation settings through the HTTP API on SQLite: add to catalog on
//! MDM, installs the user starts before InstallASAP, and the import route.

mod support;

use osdeploy_shared::apple::mdm::{
    Command, CommandEnvelope, CommandResult, CommandStatus, InstallAction, OsUpdateState,
    OsUpdateStatusItem, OsUpdateStatusResponse, ScheduleOsUpdateResponse, UpdateResult,
    UpdateResultAction, UpdateResultStatus,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestDevice, TestServer, create, hours, minutes};

const KEY: &str = "MSU_UPDATE_24G830_patch_15.7.9";

fn install_action(envelope: &CommandEnvelope) -> Option<InstallAction> {
    match &envelope.command {
        Command::ScheduleOsUpdate(payload) => payload.updates.first().map(|u| u.install_action),
        _ => None,
    }
}

fn schedule_result(
    device: &TestDevice,
    envelope: &CommandEnvelope,
    status: UpdateResultStatus,
) -> CommandResult {
    CommandResult::new(
        device.udid.clone(),
        Some(envelope.command_uuid.clone()),
        CommandStatus::Acknowledged,
    )
    .with_response(&ScheduleOsUpdateResponse {
        update_results: vec![UpdateResult {
            product_key: KEY.into(),
            install_action: UpdateResultAction::DownloadOnly,
            status,
            error_chain: None,
        }],
    })
    .expect("schedule result")
}

fn status_result(
    device: &TestDevice,
    envelope: &CommandEnvelope,
    state: OsUpdateState,
    downloaded: bool,
) -> CommandResult {
    CommandResult::new(
        device.udid.clone(),
        Some(envelope.command_uuid.clone()),
        CommandStatus::Acknowledged,
    )
    .with_response(&OsUpdateStatusResponse {
        os_update_status: vec![OsUpdateStatusItem {
            product_key: KEY.into(),
            is_downloaded: downloaded,
            download_percent_complete: if downloaded { 1.0 } else { 0.0 },
            status: state,
            max_deferrals: None,
            deferrals_remaining: None,
            next_scheduled_install: None,
            past_notifications: None,
        }],
    })
    .expect("status result")
}

fn schedule_body(device_ids: &[&str], add_to_catalog: bool) -> Value {
    json!({
        "update": { "product_version": "15.7.9" },
        "protocol": "mdm",
        "targets": { "device_ids": device_ids },
        "install": {
            "method": "enforce_at_schedule",
            "local_date_time": "2026-09-10T09:00:00",
            "time_zone": "UTC",
            "add_to_catalog": add_to_catalog,
        },
    })
}

/// Events of one type for one device.
async fn device_events(
    server: &TestServer,
    operation: &str,
    udid: &str,
    event_type: &str,
) -> Vec<Value> {
    server
        .events(operation)
        .await
        .into_iter()
        .filter(|e| e["type"] == event_type && e["device_id"] == udid)
        .collect()
}

#[tokio::test]
async fn add_to_catalog_sends_install_later() {
    let server = TestServer::start().await;
    let listed = TestDevice::mac("MAC-LISTED", "15.7.7", "24G720");
    let hidden = TestDevice::mac("MAC-HIDDEN", "15.7.7", "24G720");
    listed.enroll(&server).await;
    hidden.enroll(&server).await;
    create(&server, schedule_body(&[&listed.udid], true)).await;
    create(&server, schedule_body(&[&hidden.udid], false)).await;

    let command = listed.idle(&server).await.expect("ScheduleOSUpdate");
    assert_eq!(install_action(&command), Some(InstallAction::InstallLater));
    let command = hidden.idle(&server).await.expect("ScheduleOSUpdate");
    assert_eq!(install_action(&command), Some(InstallAction::DownloadOnly));
    server.stop().await;
}

#[tokio::test]
async fn install_before_asap_is_user_approved() {
    let server = TestServer::start().await;
    let mac = TestDevice::mac("MAC-EARLY", "15.7.7", "24G720");
    mac.enroll(&server).await;
    let operation = create(&server, schedule_body(&[&mac.udid], true)).await;

    // The user installs from Software Update right after InstallLater.
    let command = mac.idle(&server).await.expect("ScheduleOSUpdate");
    mac.answer(
        &server,
        &command,
        schedule_result(&mac, &command, UpdateResultStatus::Installing),
    )
    .await;

    assert_eq!(server.statuses(&operation).await[&mac.udid], "installing");
    let approvals = device_events(&server, &operation, &mac.udid, "user_approval").await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["details"]["to"], "user_approved");
    let types: Vec<String> = server
        .events(&operation)
        .await
        .iter()
        .filter(|e| e["device_id"] == mac.udid.as_str())
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect();
    let approval = types.iter().position(|t| t == "user_approval");
    let started = types.iter().position(|t| t == "installation_started");
    assert!(
        approval.is_some() && approval < started,
        "user approval comes before the installation starts: {types:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn install_after_download_records_approval() {
    let server = TestServer::start().await;
    let mac = TestDevice::mac("MAC-LATE", "15.7.7", "24G720");
    mac.enroll(&server).await;
    let operation = create(&server, schedule_body(&[&mac.udid], false)).await;

    let command = mac.idle(&server).await.expect("ScheduleOSUpdate");
    mac.answer(
        &server,
        &command,
        schedule_result(&mac, &command, UpdateResultStatus::Idle),
    )
    .await;
    for (state, downloaded, expected) in [
        (OsUpdateState::Idle, true, "downloaded"),
        (OsUpdateState::Installing, true, "installing"),
    ] {
        server.advance(minutes(15));
        let query = mac.idle(&server).await.expect("OSUpdateStatus");
        assert_eq!(query.command.request_type(), "OSUpdateStatus");
        mac.answer(
            &server,
            &query,
            status_result(&mac, &query, state, downloaded),
        )
        .await;
        assert_eq!(server.statuses(&operation).await[&mac.udid], expected);
    }

    let approvals = device_events(&server, &operation, &mac.udid, "user_approval").await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["details"]["from"], "downloaded");
    assert_eq!(approvals[0]["details"]["status_unchanged"], true);
    server.stop().await;
}

#[tokio::test]
async fn import_route_creates_migrated_operation() {
    let server = TestServer::start().await;
    let done = TestDevice::mac("MAC-DONE", "15.7.7", "24G720");
    let waiting = TestDevice::mac("MAC-WAITING", "15.7.7", "24G720");
    done.enroll(&server).await;
    waiting.enroll(&server).await;

    let body = json!({
        "source": "jamf:policy-42",
        "protocol": "mdm",
        "update": { "product_version": "15.7.9" },
        "targets": { "device_ids": [done.udid, waiting.udid] },
        "install": {
            "method": "enforce_at_schedule",
            "local_date_time": "2026-09-10T09:00:00",
            "time_zone": "UTC",
            "reminders": [{ "hours_before": 24 }],
        },
        "statuses": { "MAC-DONE": "installed" },
    });
    let (status, created) = server.post("/operations/import", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["type"], "migrated");
    assert_eq!(created["protocol"], "mdm");
    assert_eq!(created["not_moved"], json!([]));
    let operation = created["id"].as_str().expect("operation id").to_string();
    let statuses = server.statuses(&operation).await;
    assert_eq!(statuses[&done.udid], "installed");
    assert_eq!(statuses[&waiting.udid], "pending");
    assert!(
        done.idle(&server).await.is_none(),
        "an imported installed device gets no command"
    );
    let command = waiting.idle(&server).await.expect("ScheduleOSUpdate");
    assert_eq!(install_action(&command), Some(InstallAction::DownloadOnly));
    let reminders: Vec<_> = server
        .schedules_of(&operation)
        .await
        .into_iter()
        .filter(|s| s.id.starts_with("reminder:"))
        .collect();
    assert_eq!(
        reminders.len(),
        1,
        "an import schedules reminders like a create"
    );
    assert_eq!(reminders[0].due_at.to_string(), "2026-09-09T09:00:00Z");

    let (status, replay) = server
        .post_with_headers("/operations/import", &body, &[("Idempotency-Key", "k1")])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{replay}");
    let (status, again) = server
        .post_with_headers("/operations/import", &body, &[("Idempotency-Key", "k1")])
        .await;
    assert_eq!(status, StatusCode::OK, "a repeated key replays: {again}");
    assert_eq!(again["id"], replay["id"]);
    server.stop().await;
}

#[tokio::test]
async fn import_route_rejects_bad_fields() {
    let server = TestServer::start().await;
    let mac = TestDevice::mac("MAC-BAD", "15.7.7", "24G720");
    mac.enroll(&server).await;
    let cases = [
        (
            "missing source",
            json!({
                "protocol": "mdm",
                "update": { "product_version": "15.7.9" },
                "targets": { "device_ids": [mac.udid] },
                "install": { "method": "install_immediately" },
            }),
            "source",
            "missing",
        ),
        (
            "status of a device not in targets",
            json!({
                "source": "munki",
                "protocol": "mdm",
                "update": { "product_version": "15.7.9" },
                "targets": { "device_ids": [mac.udid] },
                "install": { "method": "install_immediately" },
                "statuses": { "MAC-OTHER": "installed" },
            }),
            "statuses.MAC-OTHER",
            "unknown_device",
        ),
        (
            "status that cannot be imported",
            json!({
                "source": "munki",
                "protocol": "mdm",
                "update": { "product_version": "15.7.9" },
                "targets": { "device_ids": [mac.udid] },
                "install": { "method": "install_immediately" },
                "statuses": { "MAC-BAD": "deprecated" },
            }),
            "statuses.MAC-BAD",
            "invalid",
        ),
        (
            "create field checked as in POST /operations",
            json!({
                "source": "munki",
                "protocol": "smtp",
                "update": { "product_version": "15.7.9" },
                "targets": { "device_ids": [mac.udid] },
                "install": { "method": "install_immediately" },
            }),
            "protocol",
            "invalid",
        ),
    ];
    for (name, body, field, code) in cases {
        let (status, answer) = server.post("/operations/import", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {answer}");
        assert_eq!(
            answer["error"]["code"], "invalid_request",
            "{name}: {answer}"
        );
        let details = answer["error"]["details"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            details
                .iter()
                .any(|d| d["field"] == field && d["code"] == code),
            "{name}: expected {field} {code} in {answer}"
        );
    }
    let (_, list) = server.get("/operations").await;
    assert_eq!(list["items"], json!([]), "nothing was created");
    server.stop().await;
}

#[tokio::test]
async fn mdm_reenrollment_records_user_install() {
    let server = TestServer::start().await;
    let mut mac = TestDevice::mac("MAC-SELF", "15.7.7", "24G720");
    mac.enroll(&server).await;
    let (_, before) = server.get("/operations?type=user_initiated").await;
    assert_eq!(
        before["items"],
        json!([]),
        "the first inventory of a device is no install"
    );

    // The user updated the Mac outside osdeploy; it enrolls again, and the
    // inventory query shows the new version.
    mac.os_version = "15.7.9".into();
    mac.build = "24G830".into();
    mac.enroll(&server).await;

    let (status, list) = server.get("/operations?type=user_initiated").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["protocol"], "mdm");
    assert_eq!(items[0]["update"]["product_version"], "15.7.9");
    let operation = items[0]["id"].as_str().expect("operation id").to_string();
    assert_eq!(server.statuses(&operation).await[&mac.udid], "installed");
    let completed = device_events(&server, &operation, &mac.udid, "installation_completed").await;
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["details"]["from_version"], "15.7.7");
    assert_eq!(completed[0]["details"]["source"], "mdm_device_information");
    server.stop().await;
}

#[tokio::test]
async fn daily_inventory_records_user_install() {
    let server = TestServer::start().await;
    let mut mac = TestDevice::mac("MAC-DAILY", "15.7.7", "24G720");
    mac.enroll(&server).await;

    server.advance(hours(23));
    assert!(
        mac.idle(&server).await.is_none(),
        "no inventory query within a day of enrollment"
    );

    // The user updated the Mac outside osdeploy and it stays enrolled.
    mac.os_version = "15.7.9".into();
    mac.build = "24G830".into();
    server.advance(hours(2));
    let query = mac.idle(&server).await.expect("a daily inventory query");
    assert_eq!(query.command.request_type(), "DeviceInformation");
    let next = mac.answer(&server, &query, mac.acknowledge(&query)).await;
    assert!(next.is_none(), "nothing else queued");
    assert!(
        mac.idle(&server).await.is_none(),
        "the next query waits another day"
    );

    let (status, list) = server.get("/operations?type=user_initiated").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["update"]["product_version"], "15.7.9");
    let operation = items[0]["id"].as_str().expect("operation id").to_string();
    assert_eq!(server.statuses(&operation).await[&mac.udid], "installed");
    let stored = server.stored_device(&mac.udid).await.expect("device");
    assert_eq!(
        stored.os_version.map(|v| v.to_string()).as_deref(),
        Some("15.7.9")
    );
    server.stop().await;
}
