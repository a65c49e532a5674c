//! An MDM operation end to end: ScheduleOSUpdate, progress polls, the
//! per-zone deadline, NotNow, retries, errors and the version check.

mod support;

use osdeploy_shared::apple::mdm::{
    Command, CommandEnvelope, CommandResult, CommandStatus, DeviceInformationResponse,
    InstallAction, OsUpdateState, OsUpdateStatusItem, OsUpdateStatusResponse,
    ScheduleOsUpdateResponse, UpdateResult, UpdateResultAction, UpdateResultStatus,
};
use reqwest::StatusCode;
use serde_json::json;
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
            product_key: KEY.into(),
            install_action: action,
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
    percent: f64,
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
            download_percent_complete: percent,
            status: state,
            max_deferrals: None,
            deferrals_remaining: None,
            next_scheduled_install: None,
            past_notifications: None,
        }],
    })
    .expect("status result")
}

async fn status_of(server: &TestServer, operation_id: &str, udid: &str) -> String {
    server
        .statuses(operation_id)
        .await
        .get(udid)
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn mdm_operation_runs_to_installed() {
    let server = TestServer::start().await;
    let berlin = TestDevice::mac("MAC-BERLIN", "15.7.7", "24G720");
    let new_york = TestDevice::mac("MAC-NEWYORK", "15.7.7", "24G720");
    let refusing = TestDevice::mac("MAC-ERROR", "15.7.7", "24G720");
    for device in [&berlin, &new_york, &refusing] {
        device.enroll(&server).await;
    }
    for (device, zone) in [
        (&berlin, "Europe/Berlin"),
        (&new_york, "America/New_York"),
        (&refusing, "America/New_York"),
    ] {
        let (status, body) = server
            .patch(
                &format!("/devices/{}", device.udid),
                &json!({ "time_zone": zone }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let request = json!({
        "update": { "product_version": "15.7.9" },
        "protocol": "mdm",
        "targets": { "device_ids": [berlin.udid, new_york.udid, refusing.udid] },
        "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-24T22:00:00", "time_zone": "device_local" },
    });
    let (status, preview) = server.post("/operations/preview", &request).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let deadlines = preview["deadlines"].as_array().expect("deadlines");
    assert_eq!(deadlines.len(), 2, "{preview}");
    assert_eq!(deadlines[0]["zone_name"], "Europe/Berlin");
    assert_eq!(deadlines[0]["instant"], "2026-08-24T20:00:00Z");
    assert_eq!(deadlines[1]["instant"], "2026-08-25T02:00:00Z");
    let operation = create(&server, request).await;

    // Berlin: DownloadOnly, accepted, then progress from OSUpdateStatus.
    let command = berlin.idle(&server).await.expect("ScheduleOSUpdate");
    assert_eq!(install_action(&command), Some(InstallAction::DownloadOnly));
    let next = berlin
        .answer(
            &server,
            &command,
            schedule_result(
                &berlin,
                &command,
                UpdateResultAction::DownloadOnly,
                UpdateResultStatus::Idle,
            ),
        )
        .await;
    assert!(next.is_none());
    assert_eq!(
        status_of(&server, &operation, &berlin.udid).await,
        "approved"
    );

    let progress = [
        (OsUpdateState::Downloading, false, 0.4, "downloading"),
        (OsUpdateState::Downloading, true, 1.0, "preparing"),
        (OsUpdateState::Idle, true, 1.0, "downloaded"),
    ];
    for (state, downloaded, percent, expected) in progress {
        server.advance(minutes(15));
        let query = berlin.idle(&server).await.expect("OSUpdateStatus");
        assert_eq!(query.command.request_type(), "OSUpdateStatus");
        berlin
            .answer(
                &server,
                &query,
                status_result(&berlin, &query, state, downloaded, percent),
            )
            .await;
        assert_eq!(status_of(&server, &operation, &berlin.udid).await, expected);
    }

    // New York: NotNow keeps the command, then a retryable failure.
    let command = new_york.idle(&server).await.expect("ScheduleOSUpdate");
    let not_now = CommandResult::new(
        new_york.udid.clone(),
        Some(command.command_uuid.clone()),
        CommandStatus::NotNow,
    );
    assert!(new_york.answer(&server, &command, not_now).await.is_none());
    assert_eq!(
        status_of(&server, &operation, &new_york.udid).await,
        "pending"
    );
    let again = new_york
        .idle(&server)
        .await
        .expect("the NotNow command again");
    assert_eq!(again.command_uuid, command.command_uuid);
    new_york
        .answer(
            &server,
            &again,
            schedule_result(
                &new_york,
                &again,
                UpdateResultAction::DownloadOnly,
                UpdateResultStatus::DownloadInsufficientSpace,
            ),
        )
        .await;
    assert_eq!(
        status_of(&server, &operation, &new_york.udid).await,
        "retry"
    );
    let (_, targets) = server
        .get(&format!("/operations/{operation}/devices?status=retry"))
        .await;
    assert_eq!(targets["items"][0]["attempts"], 1);
    assert_eq!(
        targets["items"][0]["last_error"],
        "DownloadInsufficientSpace"
    );

    // Nothing is resent before the backoff ends; after it the command comes back.
    server.advance(minutes(30));
    assert!(new_york.idle(&server).await.is_none());
    server.advance(minutes(31));
    let retry = new_york
        .idle(&server)
        .await
        .expect("retried ScheduleOSUpdate");
    assert_eq!(retry.command.request_type(), "ScheduleOSUpdate");
    new_york
        .answer(
            &server,
            &retry,
            schedule_result(
                &new_york,
                &retry,
                UpdateResultAction::DownloadOnly,
                UpdateResultStatus::Idle,
            ),
        )
        .await;
    assert_eq!(
        status_of(&server, &operation, &new_york.udid).await,
        "approved"
    );

    // A repeated result for an answered command changes nothing.
    let events_before = server.events(&operation).await.len();
    new_york
        .answer(
            &server,
            &retry,
            schedule_result(
                &new_york,
                &retry,
                UpdateResultAction::DownloadOnly,
                UpdateResultStatus::DownloadFailed,
            ),
        )
        .await;
    assert_eq!(
        status_of(&server, &operation, &new_york.udid).await,
        "approved"
    );
    assert_eq!(server.events(&operation).await.len(), events_before);

    // The third Mac answers with an error: Failed at once.
    let command = refusing.idle(&server).await.expect("ScheduleOSUpdate");
    let error = CommandResult::new(
        refusing.udid.clone(),
        Some(command.command_uuid.clone()),
        CommandStatus::Error,
    );
    refusing.answer(&server, &command, error).await;
    assert_eq!(
        status_of(&server, &operation, &refusing.udid).await,
        "failed"
    );

    // Berlin's deadline: InstallASAP for Berlin only.
    server
        .clock
        .set("2026-08-24T20:00:00Z".parse().expect("deadline"));
    assert_eq!(server.run_due_schedules().await, 1);
    let install = berlin.idle(&server).await.expect("InstallASAP");
    assert_eq!(install_action(&install), Some(InstallAction::InstallAsap));
    berlin
        .answer(
            &server,
            &install,
            schedule_result(
                &berlin,
                &install,
                UpdateResultAction::InstallAsap,
                UpdateResultStatus::Installing,
            ),
        )
        .await;
    assert_eq!(
        status_of(&server, &operation, &berlin.udid).await,
        "installing"
    );

    // After the reboot the device reports its new version through DeviceInformation.
    server.advance(minutes(40));
    let query = berlin.idle(&server).await.expect("DeviceInformation");
    assert_eq!(query.command.request_type(), "DeviceInformation");
    let mut updated = berlin.clone();
    updated.os_version = "15.7.9".into();
    updated.build = "24G830".into();
    let answer = CommandResult::new(
        berlin.udid.clone(),
        Some(query.command_uuid.clone()),
        CommandStatus::Acknowledged,
    )
    .with_response(&DeviceInformationResponse {
        query_responses: updated.query_responses(),
    })
    .expect("device information");
    berlin.answer(&server, &query, answer).await;
    assert_eq!(
        status_of(&server, &operation, &berlin.udid).await,
        "installed"
    );
    let (_, device) = server.get(&format!("/devices/{}", berlin.udid)).await;
    assert_eq!(device["os_version"], "15.7.9");
    assert_eq!(device["current_operation_id"], serde_json::Value::Null);

    // New York's deadline sends InstallASAP to the remaining New York device only.
    server
        .clock
        .set("2026-08-25T02:00:00Z".parse().expect("deadline"));
    assert_eq!(server.run_due_schedules().await, 1);
    let install = new_york.idle(&server).await.expect("InstallASAP");
    assert_eq!(install_action(&install), Some(InstallAction::InstallAsap));
    // More than a day after enrollment, a device with no active target gets
    // the daily inventory query, but never another install command.
    let after_failure = refusing.idle(&server).await;
    assert!(
        after_failure
            .as_ref()
            .is_none_or(|c| c.command.request_type() == "DeviceInformation"),
        "a failed device gets no install command: {after_failure:?}"
    );

    let (_, overview) = server.get(&format!("/operations/{operation}")).await;
    assert_eq!(overview["state"], "in_progress");
    assert_eq!(overview["counts"]["installed"], 1);
    assert_eq!(overview["counts"]["failed"], 1);
    assert_eq!(overview["counts"]["approved"], 1);
    assert_eq!(overview["completed_devices"], 2);
    assert_eq!(overview["total_devices"], 3);
    assert_eq!(overview["can_cancel"], false);

    let events = server.events(&operation).await;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for expected in [
        "operation_created",
        "device_added",
        "command_sent",
        "approved",
        "download_started",
        "download_completed",
        "preparation_completed",
        "command_not_now",
        "download_failed",
        "retry",
        "deadline_reached",
        "installation_started",
        "installation_completed",
        "command_error",
        "failed",
        "operation_started",
    ] {
        assert!(
            types.contains(&expected),
            "no {expected} event in {types:?}"
        );
    }
    let (status, cancel) = server
        .post(&format!("/operations/{operation}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{cancel}");
    server.stop().await;
}

#[tokio::test]
async fn mdm_immediate_install_and_stale_result() {
    let server = TestServer::start().await;
    let mac = TestDevice::mac("MAC-NOW", "15.7.7", "24G720");
    mac.enroll(&server).await;
    let operation = create(
        &server,
        json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": [mac.udid] },
            "install": { "method": "install_immediately" },
        }),
    )
    .await;
    let install = mac.idle(&server).await.expect("InstallASAP");
    assert_eq!(install_action(&install), Some(InstallAction::InstallAsap));
    mac.answer(
        &server,
        &install,
        schedule_result(
            &mac,
            &install,
            UpdateResultAction::InstallAsap,
            UpdateResultStatus::Downloading,
        ),
    )
    .await;
    server.advance(minutes(15));
    let query = mac.idle(&server).await.expect("OSUpdateStatus");
    mac.answer(
        &server,
        &query,
        status_result(&mac, &query, OsUpdateState::Installing, true, 1.0),
    )
    .await;
    assert_eq!(
        status_of(&server, &operation, &mac.udid).await,
        "installing"
    );

    // A status query answered late, after a newer command went out, is stale.
    server.advance(minutes(15));
    let version_query = mac.idle(&server).await.expect("DeviceInformation");
    assert_eq!(version_query.command.request_type(), "DeviceInformation");
    mac.answer(&server, &version_query, mac.acknowledge(&version_query))
        .await;
    assert_eq!(
        status_of(&server, &operation, &mac.udid).await,
        "installing",
        "the old version changes nothing"
    );
    server.advance(hours(1));
    let mut updated = mac.clone();
    updated.os_version = "15.7.9".into();
    let query = mac.idle(&server).await.expect("another DeviceInformation");
    mac.answer(&server, &query, updated.acknowledge(&query))
        .await;
    assert_eq!(status_of(&server, &operation, &mac.udid).await, "installed");
    let (_, overview) = server.get(&format!("/operations/{operation}")).await;
    assert_eq!(overview["state"], "finished");
    let types: Vec<String> = server
        .events(&operation)
        .await
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect();
    assert!(
        types.contains(&"operation_completed".to_string()),
        "{types:?}"
    );
    server.stop().await;
}
