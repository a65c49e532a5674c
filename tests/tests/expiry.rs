//! Apple stops signing an update: waiting targets become Deprecated,
//! installing ones carry on.

mod support;

use serde_json::json;
use support::{TestDevice, TestServer, create};

#[tokio::test]
async fn expiry_deprecates_waiting_targets() {
    let server = TestServer::start().await;
    let waiting = TestDevice::mac("MAC-WAIT", "15.7.7", "24G720");
    let installing = TestDevice::mac("MAC-INST", "15.7.7", "24G720");
    waiting.enroll(&server).await;
    installing.enroll(&server).await;
    // 15.7.8 (24G824) expires on 2026-11-04; the deadline is after that.
    let operation = create(
        &server,
        json!({
            "update": { "product_version": "15.7.8" },
            "protocol": "mdm",
            "targets": { "device_ids": [waiting.udid, installing.udid] },
            "install": { "method": "enforce_at_schedule", "local_date_time": "2026-11-10T10:00:00", "time_zone": "UTC" },
        }),
    )
    .await;
    let (_, overview) = server.get(&format!("/operations/{operation}")).await;
    assert_eq!(overview["update"]["expires_at"], "2026-11-05T00:00:00Z");

    // One device reports that it is installing before the expiry.
    let command = installing.idle(&server).await.expect("ScheduleOSUpdate");
    let installing_result = osdeploy_shared::apple::mdm::CommandResult::new(
        installing.udid.clone(),
        Some(command.command_uuid.clone()),
        osdeploy_shared::apple::mdm::CommandStatus::Acknowledged,
    )
    .with_response(&osdeploy_shared::apple::mdm::ScheduleOsUpdateResponse {
        update_results: vec![osdeploy_shared::apple::mdm::UpdateResult {
            product_key: "MSU_UPDATE_24G824_patch_15.7.8".into(),
            install_action: osdeploy_shared::apple::mdm::UpdateResultAction::DownloadOnly,
            status: osdeploy_shared::apple::mdm::UpdateResultStatus::Installing,
            error_chain: None,
        }],
    })
    .expect("result");
    installing
        .answer(&server, &command, installing_result)
        .await;

    server
        .clock
        .set("2026-11-04T23:59:59Z".parse().expect("instant"));
    assert_eq!(
        server.run_due_schedules().await,
        0,
        "nothing is due before the end of the expiration day"
    );
    server
        .clock
        .set("2026-11-05T00:00:00Z".parse().expect("instant"));
    assert_eq!(server.run_due_schedules().await, 1);

    let statuses = server.statuses(&operation).await;
    assert_eq!(statuses[&waiting.udid], "deprecated");
    assert_eq!(statuses[&installing.udid], "installing");
    let deprecated: Vec<_> = server
        .events(&operation)
        .await
        .into_iter()
        .filter(|e| e["type"] == "deprecated")
        .collect();
    assert_eq!(deprecated.len(), 1);
    assert_eq!(deprecated[0]["device_id"], waiting.udid.as_str());
    let (_, device) = server.get(&format!("/devices/{}", waiting.udid)).await;
    assert_eq!(
        device["current_operation_id"],
        serde_json::Value::Null,
        "a deprecated device is free for a new operation"
    );
    server.stop().await;
}
