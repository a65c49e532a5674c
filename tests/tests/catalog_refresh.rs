//! The catalog refresh job against an HTTP server on 127.0.0.1 that serves
//! the bundled snapshot, a broken body, an oversized body, a slow body and
//! an error status.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use osdeploy_shared::adapters::catalog_source::{CatalogFetchError, CatalogSource};
use osdeploy_shared::adapters::{ChannelPublisher, RecordedPush, SqliteStore};
use osdeploy_shared::catalog::{Catalog, ModelIndex};
use osdeploy_shared::domain::{ManualClock, UlidGenerator};
use osdeploy_shared::ports::{CatalogStore, Job};
use osdeploy_shared::service::jobs::CatalogRefreshError;
use osdeploy_shared::service::{Ports, ServiceConfig, ServiceError, Services};
use serde_json::json;

const SNAPSHOT: &[u8] = include_bytes!("../../shared/data/catalog/pmv.json");

/// A valid catalog with no updates, so a refresh visibly changes it.
const EMPTY_CATALOG: &[u8] =
    br#"{"PublicAssetSets":{"iOS":[],"macOS":[]},"AssetSets":{"iOS":[],"macOS":[]}}"#;

/// Size limit of every case: room for the snapshot, not for `/huge`.
const SMALL_LIMIT: usize = SNAPSHOT.len() + 1024;

struct CatalogServer {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl CatalogServer {
    async fn start() -> CatalogServer {
        let app = Router::new()
            .route("/pmv", get(|| async { SNAPSHOT }))
            .route(
                "/broken",
                get(|| async { &br#"{"PublicAssetSets": {"iOS": [ {"ProductVersion""#[..] }),
            )
            .route(
                "/not-a-catalog",
                get(|| async { axum::Json(json!({ "error": "maintenance" })) }),
            )
            .route("/huge", get(|| async { vec![b' '; SMALL_LIMIT + 1] }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    SNAPSHOT
                }),
            )
            .route(
                "/unavailable",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "try later") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen on a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        CatalogServer {
            base,
            stop: Some(stop),
        }
    }

    fn source(&self, path: &str) -> CatalogSource {
        CatalogSource {
            url: format!("{}{path}", self.base),
            ca_file: None,
            max_bytes: SMALL_LIMIT,
            timeout: Duration::from_millis(500),
        }
    }
}

impl Drop for CatalogServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Services on an in-memory store that start with an empty catalog.
fn services(source: CatalogSource) -> (Services, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::in_memory().expect("in-memory store"));
    let ports = Ports::from_store(
        store.clone(),
        Arc::new(RecordedPush::default()),
        Arc::new(osdeploy_shared::adapters::MemoryBlobStore::new()),
        Arc::new(ChannelPublisher::default()),
    );
    let empty =
        Catalog::from_pmv_json(EMPTY_CATALOG, ModelIndex::bundled()).expect("empty catalog");
    let config = ServiceConfig {
        catalog_source: source,
        ..ServiceConfig::default()
    };
    let services = Services::new(
        ports,
        Arc::new(ManualClock::new(
            "2026-08-22T09:00:00Z".parse().expect("instant"),
        )),
        Arc::new(UlidGenerator::seeded(3)),
        Arc::new(empty),
        config,
    );
    (services, store)
}

#[test]
fn refresh_job_json_tag() {
    let job: Job = serde_json::from_value(json!({ "job": "refresh_catalog" })).expect("job");
    assert_eq!(job, Job::RefreshCatalog);
    assert_eq!(
        serde_json::to_value(&Job::RefreshCatalog).expect("JSON"),
        json!({ "job": "refresh_catalog" })
    );
}

#[tokio::test]
async fn refresh_stores_and_uses_catalog() {
    let server = CatalogServer::start().await;
    let (services, store) = services(server.source("/pmv"));
    assert!(services.catalog().updates().is_empty());

    let report = services.run_job(&Job::RefreshCatalog).await;
    assert!(report.is_ok(), "refresh failed: {report:?}");

    let in_use = services.catalog();
    assert!(!in_use.updates().is_empty());
    assert_eq!(in_use.updates().len(), Catalog::bundled().updates().len());
    let stored = store.latest_catalog().await.expect("read stored catalog");
    assert_eq!(stored.as_deref(), Some(SNAPSHOT));
}

/// Checks that an error is the one a failing source must produce.
type ErrorCheck = fn(&CatalogRefreshError) -> bool;

/// Returns each failing source: the path served and the error expected.
fn failing_cases() -> Vec<(&'static str, ErrorCheck)> {
    vec![
        ("/broken", |e| {
            matches!(e, CatalogRefreshError::Invalid { .. })
        }),
        ("/not-a-catalog", |e| {
            matches!(e, CatalogRefreshError::Invalid { .. })
        }),
        ("/huge", |e| {
            matches!(
                e,
                CatalogRefreshError::Fetch(CatalogFetchError::TooLarge { .. })
            )
        }),
        ("/slow", |e| {
            matches!(
                e,
                CatalogRefreshError::Fetch(CatalogFetchError::TimedOut { .. })
            )
        }),
        ("/unavailable", |e| {
            matches!(
                e,
                CatalogRefreshError::Fetch(CatalogFetchError::Status { status: 503, .. })
            )
        }),
    ]
}

#[tokio::test]
async fn failed_refresh_keeps_current_catalog() {
    let server = CatalogServer::start().await;
    for (path, expected) in failing_cases() {
        let (services, store) = services(server.source(path));
        let before = services.catalog();

        let started = std::time::Instant::now();
        let result = services.run_job(&Job::RefreshCatalog).await;
        let error = match result {
            Err(ServiceError::CatalogRefresh(error)) => error,
            other => panic!("{path}: expected a catalog refresh error, got {other:?}"),
        };
        assert!(expected(&error), "{path}: unexpected error {error:?}");
        assert!(
            error.to_string().contains(&server.source(path).url),
            "{path}: the message must name the URL: {error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: the refresh took {:?}",
            started.elapsed()
        );
        assert!(
            Arc::ptr_eq(&before, &services.catalog()),
            "{path}: the catalog in use changed"
        );
        let stored = store.latest_catalog().await.expect("read stored catalog");
        assert_eq!(stored, None, "{path}: a catalog was stored");
    }
}

/// Starts a raw HTTP/1.1 server on 127.0.0.1 that responds to one request with
/// a chunked body of `SMALL_LIMIT + 1` bytes and no Content-Length, so only
/// the running count can stop it.
async fn start_chunked_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen on a loopback port");
    let url = format!("http://{}/chunked", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        let chunk = vec![b' '; 16 * 1024];
        let mut sent = 0;
        while sent <= SMALL_LIMIT {
            let head = format!("{:x}\r\n", chunk.len());
            let written = async {
                socket.write_all(head.as_bytes()).await?;
                socket.write_all(&chunk).await?;
                socket.write_all(b"\r\n").await
            }
            .await;
            if written.is_err() {
                return;
            }
            sent += chunk.len();
        }
        let _ = socket.write_all(b"0\r\n\r\n").await;
    });
    url
}

#[tokio::test]
async fn chunked_body_over_limit_is_rejected() {
    let url = start_chunked_server().await;
    let source = CatalogSource {
        url: url.clone(),
        ca_file: None,
        max_bytes: SMALL_LIMIT,
        timeout: Duration::from_secs(5),
    };
    let (services, store) = services(source);

    let result = services.refresh_catalog().await;
    assert!(
        matches!(
            result,
            Err(CatalogRefreshError::Fetch(
                CatalogFetchError::TooLarge { .. }
            ))
        ),
        "{result:?}"
    );
    let stored = store.latest_catalog().await.expect("read stored catalog");
    assert_eq!(stored, None);
}

#[tokio::test]
async fn refresh_rule_event_runs_job() {
    let server = CatalogServer::start().await;
    let (services, store) = services(server.source("/pmv"));

    let output =
        osdeploy_functions::handle_job_event(&services, json!({ "job": "refresh_catalog" })).await;
    assert_eq!(
        output,
        Ok(json!({ "job": "refresh_catalog", "targets": 0 }))
    );
    let stored = store.latest_catalog().await.expect("read stored catalog");
    assert_eq!(stored.as_deref(), Some(SNAPSHOT));
}

#[tokio::test]
async fn unknown_job_event_is_rejected() {
    let server = CatalogServer::start().await;
    let (services, _store) = services(server.source("/pmv"));

    let output = osdeploy_functions::handle_job_event(&services, json!({ "job": "nap" })).await;
    let error = output.expect_err("an unknown job is rejected");
    assert!(error.contains("nap"), "{error}");
    assert!(error.contains("refresh_catalog"), "{error}");
}
