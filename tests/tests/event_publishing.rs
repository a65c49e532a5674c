//! Stored events reach the in-process publisher of `osdeploy serve`.

mod support;

use std::time::Duration;

use osdeploy_shared::domain::{Event, EventType};
use serde_json::json;
use support::{TestDevice, TestServer, create};
use tokio::sync::broadcast;

/// Receives events until one of `event_type` for `device_id` arrives, or
/// returns what arrived when the channel stays quiet for two seconds.
async fn wait_for(
    receiver: &mut broadcast::Receiver<Event>,
    event_type: EventType,
    device_id: &str,
) -> Result<Event, Vec<String>> {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), receiver.recv()).await {
            Ok(Ok(event)) => {
                if event.event_type == event_type && event.device_id.as_deref() == Some(device_id) {
                    return Ok(event);
                }
                seen.push(event.event_type.as_str().to_string());
            }
            Ok(Err(e)) => {
                seen.push(format!("receive error: {e}"));
                return Err(seen);
            }
            Err(_) => return Err(seen),
        }
    }
}

#[tokio::test]
async fn status_report_publishes_stored_event() {
    let server = TestServer::start().await;
    let mut events = server.handle().publisher.subscribe();
    let phone = TestDevice::iphone("PHONE-PUB", "18.7", "22H20");
    phone.enroll(&server).await;

    let operation = create(
        &server,
        json!({
            "update": { "product_version": "26.6.1" },
            "protocol": "ddm",
            "targets": { "device_ids": [phone.udid] },
            "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-25T22:00:00", "time_zone": "device_local" },
        }),
    )
    .await;
    let created = wait_for(&mut events, EventType::DeviceAdded, &phone.udid).await;
    assert!(
        created.is_ok(),
        "device_added was not published: {created:?}"
    );

    let sync = phone
        .idle(&server)
        .await
        .expect("DeclarativeManagement command");
    phone.answer(&server, &sync, phone.acknowledge(&sync)).await;
    let (_, items) = phone.ddm(&server, "declaration-items", None).await;
    let enforcement = items["Declarations"]["Configurations"]
        .as_array()
        .and_then(|all| {
            all.iter().find(|c| {
                c["Identifier"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("osdeploy.enforcement."))
            })
        })
        .cloned()
        .expect("enforcement declaration listed");
    let report = json!({
        "management": { "declarations": {
            "activations": [], "assets": [], "management": [],
            "configurations": [{
                "identifier": enforcement["Identifier"],
                "server-token": enforcement["ServerToken"],
                "active": true,
                "valid": "valid",
            }],
        }},
        "softwareupdate": { "install-state": "none" },
    });
    assert_eq!(phone.status(&server, report).await, reqwest::StatusCode::OK);
    assert_eq!(
        server
            .statuses(&operation)
            .await
            .get(&phone.udid)
            .map(String::as_str),
        Some("approved"),
        "the status report must move the target for this test to mean anything"
    );

    let approved = wait_for(&mut events, EventType::Approved, &phone.udid).await;
    let approved = approved.expect("approved event published after the status report");
    assert_eq!(approved.operation_id, operation);
    let stored = server.event_types(&operation).await;
    assert!(
        stored.iter().any(|t| t == "approved"),
        "the published event is also in the audit trail: {stored:?}"
    );
}
