//! The catalog refresh on the AWS path, against moto's DynamoDB and a
//! catalog server on 127.0.0.1: the scheduled-job handler stores the
//! downloaded catalog, and the next cold start of a function uses it.

mod aws_support;

use aws_support::{client, endpoint, unique_tables};
use axum::Router;
use axum::routing::get;
use osdeploy_shared::adapters::aws::dynamodb::create_tables;
use osdeploy_shared::catalog::{Catalog, ModelIndex};
use serde_json::json;

const SNAPSHOT: &[u8] = include_bytes!("../../shared/data/catalog/pmv.json");

/// Returns the bundled snapshot cut to the first entry of every bucket, so
/// that it differs from the catalog a function starts with.
fn trimmed_snapshot() -> Vec<u8> {
    let mut pmv: serde_json::Value = serde_json::from_slice(SNAPSHOT).expect("snapshot JSON");
    for set in pmv.as_object_mut().expect("snapshot object").values_mut() {
        for bucket in set.as_object_mut().expect("set object").values_mut() {
            if let Some(entries) = bucket.as_array_mut() {
                entries.truncate(1);
            }
        }
    }
    serde_json::to_vec(&pmv).expect("encode trimmed snapshot")
}

/// Starts a server on 127.0.0.1 that serves `body` at `/pmv`; returns its
/// URL and the sender that stops it.
async fn start_catalog_server(body: Vec<u8>) -> (String, tokio::sync::oneshot::Sender<()>) {
    let app = Router::new().route("/pmv", get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen on a loopback port");
    let url = format!("http://{}/pmv", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    (url, stop)
}

#[tokio::test]
async fn refreshed_catalog_survives_cold_start() {
    let trimmed = trimmed_snapshot();
    let expected = Catalog::from_pmv_json(&trimmed, ModelIndex::bundled())
        .expect("trimmed catalog")
        .updates()
        .len();
    assert_ne!(expected, Catalog::bundled().updates().len());
    let (url, stop) = start_catalog_server(trimmed.clone()).await;
    let tables = unique_tables("catalog");
    create_tables(&client().await, &tables)
        .await
        .expect("create tables");
    let variables: std::collections::HashMap<&str, String> = [
        ("OSDEPLOY_STATE_TABLE", tables.state.clone()),
        ("OSDEPLOY_EVENTS_TABLE", tables.events.clone()),
        ("OSDEPLOY_AWS_ENDPOINT", endpoint()),
        ("OSDEPLOY_CATALOG_URL", url),
        // Required at cold start; this test writes no export.
        (
            "OSDEPLOY_EXPORTS_BUCKET",
            "osdeploy-test-exports".to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let config = osdeploy_functions::Config::from_lookup(|name| variables.get(name).cloned())
        .expect("function configuration");

    let scheduled = osdeploy_functions::services(&config)
        .await
        .expect("services");
    let output =
        osdeploy_functions::handle_job_event(&scheduled, json!({ "job": "refresh_catalog" })).await;
    assert_eq!(
        output,
        Ok(json!({ "job": "refresh_catalog", "targets": 0 }))
    );
    let _ = stop.send(());

    assert_eq!(scheduled.catalog().updates().len(), expected);

    // A new instance reads the stored catalog at cold start.
    let next = osdeploy_functions::services(&config)
        .await
        .expect("services");
    assert_eq!(next.catalog().updates().len(), expected);
    let stored = osdeploy_shared::ports::CatalogStore::latest_catalog(
        &osdeploy_shared::adapters::aws::DynamoStore::new(client().await, tables),
    )
    .await
    .expect("read stored catalog");
    assert_eq!(stored, Some(trimmed));
}
