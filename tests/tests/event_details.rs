//! Event details carry what an auditor needs: error messages and retry
//! attempts on failures, and download or install progress on progress
//! moves, over MDM and DDM.

mod support;

use osdeploy_shared::apple::mdm::{
    CommandEnvelope, CommandResult, CommandStatus, OsUpdateState, OsUpdateStatusItem,
    OsUpdateStatusResponse, ScheduleOsUpdateResponse, UpdateResult, UpdateResultAction,
    UpdateResultStatus,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestDevice, TestServer, create, minutes};

/// The product key of macOS 15.7.9 in the bundled catalog's terms.
const KEY: &str = "MSU_UPDATE_24G830_patch_15.7.9";

fn acknowledged(device: &TestDevice, envelope: &CommandEnvelope) -> CommandResult {
    CommandResult::new(
        device.udid.clone(),
        Some(envelope.command_uuid.clone()),
        CommandStatus::Acknowledged,
    )
}

fn schedule_result(
    device: &TestDevice,
    envelope: &CommandEnvelope,
    status: UpdateResultStatus,
) -> CommandResult {
    acknowledged(device, envelope)
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

fn status_result(device: &TestDevice, envelope: &CommandEnvelope, percent: f64) -> CommandResult {
    acknowledged(device, envelope)
        .with_response(&OsUpdateStatusResponse {
            os_update_status: vec![OsUpdateStatusItem {
                product_key: KEY.into(),
                is_downloaded: false,
                download_percent_complete: percent,
                status: OsUpdateState::Downloading,
                max_deferrals: None,
                deferrals_remaining: None,
                next_scheduled_install: None,
                past_notifications: None,
            }],
        })
        .expect("status result")
}

/// The details of the device's events of `event_type`, oldest first.
async fn details_of(
    server: &TestServer,
    operation_id: &str,
    udid: &str,
    event_type: &str,
) -> Vec<Value> {
    let (status, page) = server
        .get(&format!(
            "/operations/{operation_id}/events?device_id={udid}&type={event_type}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["details"].clone())
        .collect()
}

#[tokio::test]
async fn mdm_events_carry_progress_and_errors() {
    let server = TestServer::start().await;
    let downloading = TestDevice::mac("MAC-PROGRESS", "15.7.7", "24G720");
    let failing = TestDevice::mac("MAC-NOSPACE", "15.7.7", "24G720");
    for device in [&downloading, &failing] {
        device.enroll(&server).await;
    }
    let operation = create(
        &server,
        json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": [downloading.udid, failing.udid] },
            "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-24T22:00:00", "time_zone": "device_local" },
        }),
    )
    .await;

    let command = downloading.idle(&server).await.expect("ScheduleOSUpdate");
    downloading
        .answer(
            &server,
            &command,
            schedule_result(&downloading, &command, UpdateResultStatus::Idle),
        )
        .await;
    server.advance(minutes(15));
    let query = downloading.idle(&server).await.expect("OSUpdateStatus");
    assert_eq!(query.command.request_type(), "OSUpdateStatus");
    downloading
        .answer(&server, &query, status_result(&downloading, &query, 0.4))
        .await;
    let started = details_of(&server, &operation, &downloading.udid, "download_started").await;
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["download_percent"], 40);
    assert_eq!(started[0]["is_downloaded"], false);
    assert_eq!(started[0]["os_update_status"], "Downloading");
    assert_eq!(started[0]["detail"], "download 40%");

    let command = failing.idle(&server).await.expect("ScheduleOSUpdate");
    failing
        .answer(
            &server,
            &command,
            schedule_result(
                &failing,
                &command,
                UpdateResultStatus::DownloadInsufficientSpace,
            ),
        )
        .await;
    let failed = details_of(&server, &operation, &failing.udid, "download_failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["error"], "DownloadInsufficientSpace");
    assert_eq!(failed[0]["attempt"], 1);
    assert_eq!(failed[0]["will_retry"], true);
    server.stop().await;
}

#[tokio::test]
async fn ddm_events_carry_install_state_and_errors() {
    let server = TestServer::start().await;
    let phone = TestDevice::iphone("PHONE-DETAILS", "18.7", "22H20");
    phone.enroll(&server).await;
    let operation = create(
        &server,
        json!({
            "update": { "product_version": "26.6.1" },
            "protocol": "ddm",
            "targets": { "device_ids": [phone.udid] },
            "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-29T22:00:00", "time_zone": "device_local" },
        }),
    )
    .await;

    // The device reports progress without the declaration's status, which
    // a real device sends separately; the target moves on the install state.
    let reports = [
        (
            json!({ "softwareupdate": { "install-state": "downloading", "pending-version": { "os-version": "26.6.1", "build-version": "23G83" } } }),
            "download_started",
            "downloading",
        ),
        (
            json!({ "softwareupdate": { "install-state": "installing" } }),
            "installation_started",
            "installing",
        ),
    ];
    for (items, event_type, install_state) in reports {
        assert_eq!(phone.status(&server, items).await, StatusCode::OK);
        let details = details_of(&server, &operation, &phone.udid, event_type).await;
        assert_eq!(details.len(), 1, "{event_type}: {details:?}");
        assert_eq!(details[0]["install_state"], install_state, "{event_type}");
    }

    let failure = json!({ "softwareupdate": { "failure-reason": { "count": 1, "reason": "insufficient space" }, "install-state": "waiting" } });
    assert_eq!(phone.status(&server, failure).await, StatusCode::OK);
    let failed = details_of(&server, &operation, &phone.udid, "installation_failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["error"], "insufficient space");
    assert_eq!(failed[0]["attempt"], 1);
    assert_eq!(failed[0]["device_failure_count"], 1);
    server.stop().await;
}
