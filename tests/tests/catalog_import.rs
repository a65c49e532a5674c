//! `osdeploy catalog import`: validation, storage, and the server using the
//! imported catalog in place of the bundled snapshot.

mod support;

use std::path::PathBuf;

use osdeploy_cli::catalog_cmd;
use osdeploy_cli::server::{self, ClockMode, ServeConfig};
use osdeploy_shared::service::ServiceConfig;
use serde_json::{Value, json};

fn bundled_pmv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/catalog/pmv.json")
}

#[tokio::test]
async fn import_rejects_a_malformed_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("broken.json");
    std::fs::write(&file, b"{\"PublicAssetSets\": 3}").expect("write fixture");
    let error = catalog_cmd::import(&file, &dir.path().join("db.sqlite"))
        .await
        .expect_err("malformed catalog");
    let message = error.to_string();
    assert!(message.contains("broken.json"), "{message}");
    assert!(
        message.contains("not a valid Apple software-lookup"),
        "{message}"
    );
}

#[tokio::test]
async fn import_warns_when_everything_expired() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let summary = catalog_cmd::import(&bundled_pmv(), &dir.path().join("db.sqlite"))
        .await
        .expect("import");
    assert!(summary.contains("imported"), "{summary}");
    assert!(
        summary.contains("every update in this file has expired"),
        "{summary}"
    );
}

#[tokio::test]
async fn server_uses_the_imported_catalog() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = dir.path().join("db.sqlite");
    // A catalog with one macOS release that the bundled snapshot lacks.
    let mut pmv: Value =
        serde_json::from_slice(&std::fs::read(bundled_pmv()).expect("bundled pmv")).expect("json");
    let mac_devices = pmv["PublicAssetSets"]["macOS"][0]["SupportedDevices"].clone();
    let entry = json!({
        "ProductVersion": "26.7", "Build": "25H10", "PostingDate": "2026-12-01",
        "ExpirationDate": "2027-03-01", "SupportedDevices": mac_devices,
    });
    pmv["PublicAssetSets"]["macOS"]
        .as_array_mut()
        .expect("macOS bucket")
        .push(entry);
    let file = dir.path().join("pmv.json");
    std::fs::write(&file, serde_json::to_vec(&pmv).expect("json")).expect("write catalog");
    let summary = catalog_cmd::import(&file, &database).await.expect("import");
    assert!(!summary.contains("has expired"), "{summary}");

    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("loopback"),
        database,
        catalog_file: None,
        clock: ClockMode::Accelerated {
            start: "2026-12-04T09:00:00Z".parse().expect("instant"),
            speed: 1.0,
        },
        admin_token: Some(support::TOKEN.into()),
        service: ServiceConfig::default(),
        id_seed: Some(1),
        run_scheduler: false,
    };
    let handle = server::start(config).await.expect("server starts");
    let response: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/updates?platform=macos", handle.url()))
        .bearer_auth(support::TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let versions: Vec<&str> = response["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["product_version"].as_str())
        .collect();
    assert_eq!(
        versions,
        vec!["26.7"],
        "only the imported, unexpired release is deployable on 2026-12-04"
    );
    handle.stop().await;
}
