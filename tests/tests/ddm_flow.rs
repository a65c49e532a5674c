//! A DDM operation end to end: declarations and tokens, status reports
//! (incremental, nested, with unknown values), retries and installation.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestDevice, TestServer, create, minutes};

async fn status_of(server: &TestServer, operation_id: &str, udid: &str) -> String {
    server
        .statuses(operation_id)
        .await
        .get(udid)
        .cloned()
        .unwrap_or_default()
}

fn declaration_status(identifier: &str, token: &str, valid: &str) -> Value {
    json!({ "management": { "declarations": {
        "activations": [], "assets": [], "management": [],
        "configurations": [{ "identifier": identifier, "server-token": token, "active": valid == "valid", "valid": valid }],
    }}})
}

#[tokio::test]
async fn ddm_operation_runs_to_installed() {
    let server = TestServer::start().await;
    let phone = TestDevice::iphone("PHONE-1", "18.7", "22H20");
    phone.enroll(&server).await;
    let (_, device) = server.get(&format!("/devices/{}", phone.udid)).await;
    assert_eq!(device["ddm_capable"], true, "{device}");
    assert_eq!(device["time_zone"], "Europe/Berlin");

    let (_, tokens) = phone.ddm(&server, "tokens", None).await;
    let before = tokens["SyncTokens"]["DeclarationsToken"]
        .as_str()
        .expect("token")
        .to_string();

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
    let sync = phone
        .idle(&server)
        .await
        .expect("DeclarativeManagement command");
    assert_eq!(sync.command.request_type(), "DeclarativeManagement");
    phone.answer(&server, &sync, phone.acknowledge(&sync)).await;

    let (status, tokens) = phone.ddm(&server, "tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    let token = tokens["SyncTokens"]["DeclarationsToken"]
        .as_str()
        .expect("token")
        .to_string();
    assert_ne!(
        token, before,
        "a new declaration changes the DeclarationsToken"
    );
    let (_, again) = phone.ddm(&server, "tokens", None).await;
    assert_eq!(
        again["SyncTokens"]["DeclarationsToken"],
        token.as_str(),
        "no change, same token"
    );

    let (_, items) = phone.ddm(&server, "declaration-items", None).await;
    assert_eq!(items["DeclarationsToken"], token.as_str());
    let configurations = items["Declarations"]["Configurations"]
        .as_array()
        .expect("configurations");
    let enforcement = configurations
        .iter()
        .find(|c| {
            c["Identifier"]
                .as_str()
                .is_some_and(|id| id.starts_with("osdeploy.enforcement."))
        })
        .expect("enforcement declaration listed");
    let identifier = enforcement["Identifier"]
        .as_str()
        .expect("identifier")
        .to_string();
    let server_token = enforcement["ServerToken"]
        .as_str()
        .expect("server token")
        .to_string();
    assert_eq!(
        items["Declarations"]["Activations"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    for key in ["Assets", "Management"] {
        assert!(
            items["Declarations"][key].is_array(),
            "{key} is always present"
        );
    }

    let (status, declaration) = phone
        .ddm(
            &server,
            &format!("declaration/configuration/{identifier}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        declaration["Type"],
        "com.apple.configuration.softwareupdate.enforcement.specific"
    );
    assert_eq!(declaration["ServerToken"], server_token.as_str());
    assert_eq!(declaration["Payload"]["TargetOSVersion"], "26.6.1");
    assert_eq!(declaration["Payload"]["TargetBuildVersion"], "23G83");
    assert_eq!(
        declaration["Payload"]["TargetLocalDateTime"],
        "2026-08-25T22:00:00"
    );
    let (status, _) = phone
        .ddm(&server, "declaration/configuration/not-ours", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Accepted: the declaration is active and valid, install-state none.
    let mut report = declaration_status(&identifier, &server_token, "valid");
    report["softwareupdate"] = json!({ "install-state": "none" });
    assert_eq!(phone.status(&server, report).await, StatusCode::OK);
    assert_eq!(
        status_of(&server, &operation, &phone.udid).await,
        "approved"
    );

    // Incremental reports: a missing item means unchanged.
    let steps = [
        (
            json!({ "softwareupdate": { "install-state": "downloading", "pending-version": { "os-version": "26.6.1", "build-version": "23G83" } } }),
            "downloading",
        ),
        (
            json!({ "softwareupdate": { "failure-reason": { "count": 1, "reason": "insufficient space" }, "install-state": "waiting" } }),
            "retry",
        ),
        (
            json!({ "softwareupdate": { "install-state": "downloading" } }),
            "downloading",
        ),
        (
            json!({ "softwareupdate": { "install-state": "prepared" } }),
            "downloaded",
        ),
        (
            json!({ "softwareupdate": { "install-state": "downloading" } }),
            "downloaded",
        ),
        (
            json!({ "softwareupdate": { "install-state": "paused-by-a-future-os" } }),
            "downloaded",
        ),
        (
            json!({ "device": { "future-item": { "x": 1 } } }),
            "downloaded",
        ),
        (
            json!({ "softwareupdate": { "install-state": "installing" } }),
            "installing",
        ),
        (
            json!({ "softwareupdate": { "install-state": "none" }, "device": { "operating-system": { "version": "26.6.1", "build-version": "23G83" } } }),
            "installed",
        ),
    ];
    for (items, expected) in steps {
        server.advance(minutes(10));
        assert_eq!(
            phone.status(&server, items.clone()).await,
            StatusCode::OK,
            "{items}"
        );
        assert_eq!(
            status_of(&server, &operation, &phone.udid).await,
            expected,
            "after {items}"
        );
    }
    let (_, device) = server.get(&format!("/devices/{}", phone.udid)).await;
    assert_eq!(device["os_version"], "26.6.1");

    let (_, tokens) = phone.ddm(&server, "tokens", None).await;
    assert_ne!(
        tokens["SyncTokens"]["DeclarationsToken"],
        token.as_str(),
        "the enforcement is withdrawn once installed"
    );

    let events = server.events(&operation).await;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for expected in [
        "approved",
        "download_started",
        "download_failed",
        "download_completed",
        "installation_started",
        "installation_completed",
        "report_ignored",
        "unknown_value",
        "operation_completed",
    ] {
        assert!(
            types.contains(&expected),
            "no {expected} event in {types:?}"
        );
    }
    let (_, overview) = server.get(&format!("/operations/{operation}")).await;
    assert_eq!(overview["state"], "finished");
    server.stop().await;
}

#[tokio::test]
async fn ddm_user_install_and_full_report() {
    let server = TestServer::start().await;
    let phone = TestDevice::iphone("PHONE-2", "18.7", "22H20");
    phone.enroll(&server).await;
    let operation = create(
        &server,
        json!({
            "update": { "product_version": "26.6.1" },
            "protocol": "ddm",
            "targets": { "device_ids": [phone.udid] },
            "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-25T22:00:00", "time_zone": "Asia/Tokyo" },
        }),
    )
    .await;
    let (_, items) = phone.ddm(&server, "declaration-items", None).await;
    let enforcement = items["Declarations"]["Configurations"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|d| {
                    d["Identifier"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("osdeploy.enforcement."))
                })
                .cloned()
        })
        .expect("enforcement");
    let identifier = enforcement["Identifier"].as_str().expect("identifier");
    let (_, declaration) = phone
        .ddm(
            &server,
            &format!("declaration/configuration/{identifier}"),
            None,
        )
        .await;
    assert_eq!(
        declaration["Payload"]["TargetLocalDateTime"], "2026-08-25T15:00:00",
        "22:00 in Tokyo is 15:00 in Berlin, the device's zone"
    );
    let mut report = declaration_status(
        identifier,
        enforcement["ServerToken"].as_str().expect("token"),
        "valid",
    );
    report["softwareupdate"] =
        json!({ "install-state": "waiting", "install-reason": { "reason": ["system-settings"] } });
    let full = json!({ "StatusItems": report, "Errors": [], "FullReport": true });
    let (status, _) = phone
        .ddm(
            &server,
            "status",
            Some(serde_json::to_vec(&full).expect("json")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        status_of(&server, &operation, &phone.udid).await,
        "user_approved"
    );
    let types: Vec<String> = server
        .events(&operation)
        .await
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect();
    assert!(types.contains(&"user_approval".to_string()), "{types:?}");
    server.stop().await;
}

#[tokio::test]
async fn ddm_immediate_uses_a_passed_deadline() {
    let server = TestServer::start().await;
    let phone = TestDevice::iphone("PHONE-3", "18.7", "22H20");
    phone.enroll(&server).await;
    create(
        &server,
        json!({
            "update": { "product_version": "26.6.1" },
            "protocol": "ddm",
            "targets": { "device_ids": [phone.udid] },
            "install": { "method": "install_immediately" },
        }),
    )
    .await;
    let (_, items) = phone.ddm(&server, "declaration-items", None).await;
    let identifier = items["Declarations"]["Configurations"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .filter_map(|d| d["Identifier"].as_str())
                .find(|id| id.starts_with("osdeploy.enforcement."))
                .map(str::to_string)
        })
        .expect("enforcement");
    let (_, declaration) = phone
        .ddm(
            &server,
            &format!("declaration/configuration/{identifier}"),
            None,
        )
        .await;
    // The server clock is 2026-08-22T09:00:00Z; at UTC-12 that is 21:00 the day before.
    assert_eq!(
        declaration["Payload"]["TargetLocalDateTime"],
        "2026-08-21T21:00:00"
    );
    server.stop().await;
}
