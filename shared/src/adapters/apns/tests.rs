//! [`ApnsPush`] against a mock APNs on 127.0.0.1 that speaks HTTP/2 over
//! plain TCP (prior knowledge). The mock does not check client
//! certificates, so the certificate and key are only checked as PEM here:
//! [`ApnsPush::new`] loads them into the client, and a broken pair is rejected.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, Version};
use axum::response::IntoResponse;
use axum::routing::post;

use super::*;
use crate::ports::contract::fixtures::device;

const CERTIFICATE: &str = include_str!("testdata/push-cert.pem");
const KEY: &str = include_str!("testdata/push-key.pem");
const TOPIC: &str = "com.apple.mgmt.External.0f1e2d3c-test";

/// Tokens the mock responds to with a fixed error status.
const GONE_TOKEN: &str = "0410";
const BAD_TOKEN: &str = "0400";
const BROKEN_TOKEN: &str = "0500";

/// One request the mock received.
#[derive(Debug, Clone)]
struct Received {
    token: String,
    version: Version,
    topic: Option<String>,
    priority: Option<String>,
    body: serde_json::Value,
}

#[derive(Default)]
struct Mock {
    received: Mutex<Vec<Received>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

async fn handle(
    State(mock): State<Arc<Mock>>,
    Path(token): Path<String>,
    request: Request,
) -> impl IntoResponse {
    let now = mock.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    mock.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let version = request.version();
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let topic = header("apns-topic");
    let priority = header("apns-priority");

    let body = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    // Holding each request a moment lets concurrent ones overlap.
    tokio::time::sleep(Duration::from_millis(30)).await;
    mock.received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Received {
            token: token.clone(),
            version,
            topic,
            priority,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        });
    mock.in_flight.fetch_sub(1, Ordering::SeqCst);
    let reply = |status: StatusCode, reason: &str| {
        (status, axum::Json(serde_json::json!({ "reason": reason }))).into_response()
    };
    match token.as_str() {
        GONE_TOKEN => reply(StatusCode::GONE, "Unregistered"),
        BAD_TOKEN => reply(StatusCode::BAD_REQUEST, "BadDeviceToken"),
        BROKEN_TOKEN => reply(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
        _ => StatusCode::OK.into_response(),
    }
}

/// Starts the mock on 127.0.0.1; returns its base URL, state and stopper.
async fn start_mock() -> (String, Arc<Mock>, tokio::sync::oneshot::Sender<()>) {
    let mock = Arc::new(Mock::default());
    let app = Router::new()
        .route("/3/device/{token}", post(handle))
        .with_state(mock.clone());
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
    (base, mock, stop)
}

fn settings(base_url: &str, max_concurrent: usize) -> ApnsSettings {
    ApnsSettings {
        base_url: base_url.to_string(),
        certificate_pem: CERTIFICATE.to_string(),
        key_pem: KEY.to_string(),
        topic: None,
        max_concurrent,
        timeout: Duration::from_secs(5),
    }
}

fn device_with(udid: &str, token: Option<&str>, magic: Option<&str>) -> Device {
    let mut device = device(udid);
    device.push_token = token.map(str::to_string);
    device.push_magic = magic.map(str::to_string);
    device
}

#[test]
fn topic_comes_from_subject_uid() {
    assert_eq!(topic_from_certificate(CERTIFICATE).as_deref(), Some(TOPIC));
}

#[test]
fn topic_absent_without_certificate() {
    assert_eq!(topic_from_certificate(KEY), None);
    assert_eq!(topic_from_certificate(""), None);
}

#[test]
fn certificate_and_key_load() {
    let push = ApnsPush::new(&settings(DEFAULT_APNS_URL, 4));
    let push = push.expect("the test certificate and key load");
    assert_eq!(push.topic(), TOPIC);
}

#[test]
fn broken_identity_is_rejected() {
    let mut broken = settings(DEFAULT_APNS_URL, 4);
    broken.topic = Some(TOPIC.to_string());
    broken.key_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
    let result = ApnsPush::new(&broken);
    assert!(
        matches!(result, Err(ApnsError::InvalidIdentity(_))),
        "{result:?}"
    );
}

#[test]
fn explicit_topic_overrides_certificate() {
    let mut explicit = settings(DEFAULT_APNS_URL, 4);
    explicit.topic = Some("com.apple.mgmt.External.other".into());
    let push = ApnsPush::new(&explicit).expect("client");
    assert_eq!(push.topic(), "com.apple.mgmt.External.other");
}

#[test]
fn non_http_base_url_is_rejected() {
    let result = ApnsPush::new(&settings("api.push.apple.com", 4));
    assert!(
        matches!(result, Err(ApnsError::InvalidBaseUrl(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn push_posts_mdm_magic_over_http2() {
    let (base, mock, _stop) = start_mock().await;
    let push = ApnsPush::new(&settings(&base, 4)).expect("client");
    let devices = [device_with("dev-1", Some("00aabbcc"), Some("magic-1"))];

    let report = push.send(&devices).await;
    assert_eq!(report.sent, vec!["dev-1".to_string()]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let received = mock
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.token, "00aabbcc");
    assert_eq!(request.version, Version::HTTP_2);
    assert_eq!(request.topic.as_deref(), Some(TOPIC));
    assert_eq!(request.priority.as_deref(), Some("10"));
    assert_eq!(request.body, serde_json::json!({ "mdm": "magic-1" }));
}

#[tokio::test]
async fn push_sorts_outcomes_per_device() {
    let (base, _mock, _stop) = start_mock().await;
    let push = ApnsPush::new(&settings(&base, 4)).expect("client");
    let devices = [
        device_with("ok", Some("0a0b"), Some("m")),
        device_with("gone", Some(GONE_TOKEN), Some("m")),
        device_with("bad", Some(BAD_TOKEN), Some("m")),
        device_with("broken", Some(BROKEN_TOKEN), Some("m")),
        device_with("no-token", None, Some("m")),
        device_with("no-magic", Some("0a0b"), None),
        device_with("not-hex", Some("../../admin"), Some("m")),
    ];

    let mut report = push.send(&devices).await;
    report.failed.sort();
    report.skipped.sort();
    assert_eq!(report.sent, vec!["ok".to_string()]);
    assert_eq!(report.unregistered, vec!["gone".to_string()]);
    assert_eq!(
        report.failed,
        vec![
            ("bad".to_string(), 400, "BadDeviceToken".to_string()),
            ("broken".to_string(), 500, "InternalServerError".to_string()),
        ]
    );
    assert_eq!(
        report.skipped,
        vec![
            "no-magic".to_string(),
            "no-token".to_string(),
            "not-hex".to_string()
        ]
    );
}

#[tokio::test]
async fn push_bounds_requests_in_flight() {
    let (base, mock, _stop) = start_mock().await;
    let push = ApnsPush::new(&settings(&base, 2)).expect("client");
    let devices: Vec<Device> = (0..8)
        .map(|i| device_with(&format!("dev-{i}"), Some(&format!("{i:02x}")), Some("m")))
        .collect();

    let report = push.send(&devices).await;
    assert_eq!(report.sent.len(), 8);
    let max = mock.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 2, "{max} requests were in flight at once");
    assert!(max >= 1, "no request reached the mock");
}

#[tokio::test]
async fn push_port_succeeds_despite_failures() {
    let (base, mock, _stop) = start_mock().await;
    let push = ApnsPush::new(&settings(&base, 4)).expect("client");
    let devices = [device_with("broken", Some(BROKEN_TOKEN), Some("m"))];

    let result = Push::push(&push, &devices).await;
    assert!(result.is_ok(), "{result:?}");
    let received = mock
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len();
    assert_eq!(received, 1);
}

#[tokio::test]
async fn unreachable_apns_is_reported() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let push = ApnsPush::new(&settings(&base, 4)).expect("client");

    let report = push
        .send(&[device_with("dev-1", Some("0a0b"), Some("m"))])
        .await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].1, 0);
}
