//! CSV exports on `osdeploy serve` (SQLite and the local blob folder),
//! through HTTP: the job, the signed download, the CSV contents, and
//! event retention in reads and exports.

mod support;

use jiff::SignedDuration;
use osdeploy_shared::domain::{Actor, EVENT_RETENTION, Event, EventType};
use osdeploy_shared::ports::EventStore;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestDevice, TestServer, create};

/// Device names that need quoting, neutralising or UTF-8 care, each with
/// the name a spreadsheet must show.
const AWKWARD_NAMES: [(&str, &str); 6] = [
    (
        "=HYPERLINK(\"http://example.invalid\",\"x\")",
        "'=HYPERLINK(\"http://example.invalid\",\"x\")",
    ),
    ("Mac, \"Pro\"", "Mac, \"Pro\""),
    ("line one\nline two", "line one\nline two"),
    ("東京オフィスのiPhone", "東京オフィスのiPhone"),
    ("iPhone de Zoë", "iPhone de Zoë"),
    ("@admin", "'@admin"),
];

fn ddm_request(udids: &[String]) -> Value {
    json!({
        "update": { "product_version": "26.6.1" },
        "protocol": "ddm",
        "targets": { "device_ids": udids },
        "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-29T22:00:00", "time_zone": "device_local" },
    })
}

/// Enrolls one iPhone per awkward name and creates a DDM operation on them.
async fn operation_with_awkward_names(server: &TestServer) -> (String, Vec<TestDevice>) {
    let mut devices = Vec::new();
    for (index, (name, _)) in AWKWARD_NAMES.iter().enumerate() {
        let mut device = TestDevice::iphone(&format!("EXPORT-{index}"), "18.7", "22H20");
        device.name = name.to_string();
        device.enroll(server).await;
        devices.push(device);
    }
    let udids: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
    let operation_id = create(server, ddm_request(&udids)).await;
    (operation_id, devices)
}

/// Requests an export, runs the due job and returns the finished export.
async fn finished_export(server: &TestServer, request: &Value) -> Value {
    let (status, accepted) = server.post("/exports", request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "export request: {accepted}");
    assert_eq!(accepted["state"], "queued");
    assert!(accepted["url"].is_null(), "a queued export has no URL");
    let id = accepted["id"].as_str().expect("export id").to_string();
    assert!(
        server.run_due_schedules().await >= 1,
        "the export job must be due at once"
    );
    let (status, export) = server.get(&format!("/exports/{id}")).await;
    assert_eq!(status, StatusCode::OK, "export state: {export}");
    assert_eq!(export["state"], "done", "export: {export}");
    export
}

/// Downloads a URL without the admin token; returns status, headers, body.
async fn download(url: &str) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let response = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .expect("download request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("download body").to_vec();
    (status, headers, body)
}

/// Parses CSV bytes with the `csv` crate: the header and the records.
fn parse_csv(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
    let header = reader
        .headers()
        .expect("header row")
        .iter()
        .map(str::to_string)
        .collect();
    let records = reader
        .records()
        .map(|r| {
            r.expect("valid CSV record")
                .iter()
                .map(str::to_string)
                .collect()
        })
        .collect();
    (header, records)
}

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("column {name} missing from {header:?}"))
}

#[tokio::test]
async fn device_export_round_trips_names() {
    let server = TestServer::start().await;
    let (operation_id, devices) = operation_with_awkward_names(&server).await;

    let export = finished_export(
        &server,
        &json!({ "kind": "devices", "operation_id": operation_id }),
    )
    .await;
    assert_eq!(export["kind"], "devices");
    assert_eq!(export["rows"], devices.len());
    let url = export["url"].as_str().expect("download URL");
    let (status, headers, body) = download(url).await;
    assert_eq!(status, StatusCode::OK);
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/csv"),
        "content type {content_type}"
    );

    let text = String::from_utf8(body.clone()).expect("the export is UTF-8");
    assert!(text.ends_with("\r\n"), "records end with CRLF");
    assert!(
        !text.starts_with('\u{feff}'),
        "the file has no byte order mark"
    );
    for line in text.split("\r\n") {
        assert!(
            !line.starts_with(['=', '+', '@']),
            "no record may start with a formula: {line:?}"
        );
    }
    let (header, records) = parse_csv(&body);
    assert_eq!(header[0], "device_id");
    assert_eq!(records.len(), devices.len());
    let name_column = column(&header, "device_name");
    let id_column = column(&header, "device_id");
    let updated_column = column(&header, "updated_at");
    for (device, (_, shown)) in devices.iter().zip(AWKWARD_NAMES) {
        let record = records
            .iter()
            .find(|r| r[id_column] == device.udid)
            .unwrap_or_else(|| panic!("device {} missing from the export", device.udid));
        assert_eq!(record[name_column], shown, "name of {}", device.udid);
        assert_eq!(record.len(), header.len(), "width of {}", device.udid);
        let updated: jiff::Timestamp = record[updated_column]
            .parse()
            .expect("updated_at is an ISO 8601 time");
        assert!(
            record[updated_column].ends_with('Z'),
            "times are UTC: {}",
            record[updated_column]
        );
        assert_eq!(updated, server.now());
    }
    server.stop().await;
}

#[tokio::test]
async fn events_older_than_retention_vanish() {
    let server = TestServer::start().await;
    let device = TestDevice::iphone("RETAIN-1", "18.7", "22H20");
    device.enroll(&server).await;
    let operation_id = create(&server, ddm_request(std::slice::from_ref(&device.udid))).await;
    let created_at = server.now();

    // An event two days after the operation's creation, still within
    // retention when the creation events are 91 days old.
    server.advance(SignedDuration::from_hours(48));
    let later = server.now();
    let recent = Event {
        id: "01KRECENTEVENT0000000000000".into(),
        operation_id: operation_id.clone(),
        device_id: Some(device.udid.clone()),
        event_type: EventType::DownloadFailed,
        details: json!({ "error": "not enough space", "attempt": 1, "will_retry": true }),
        actor: Actor::Device,
        at: later,
        expires_at: later + EVENT_RETENTION,
    };
    server
        .handle()
        .store
        .append(std::slice::from_ref(&recent))
        .await
        .expect("append the recent event");
    let (_, before) = server
        .get(&format!("/operations/{operation_id}/events"))
        .await;
    assert!(
        before["items"].as_array().map_or(0, Vec::len) >= 2,
        "the creation events and the recent one are listed: {before}"
    );

    server.advance(SignedDuration::from_hours(89 * 24));
    assert_eq!(
        server.now().duration_since(created_at),
        SignedDuration::from_hours(91 * 24)
    );
    let (status, after) = server
        .get(&format!("/operations/{operation_id}/events"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> = after["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(
        listed,
        vec![recent.id.as_str()],
        "only the 89-day-old event is listed after 91 days"
    );

    let expired_ids: Vec<String> = before["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .filter(|id| *id != recent.id)
        .map(str::to_string)
        .collect();
    let export = finished_export(
        &server,
        &json!({ "kind": "events", "operation_id": operation_id }),
    )
    .await;
    let (status, _, body) = download(export["url"].as_str().expect("url")).await;
    assert_eq!(status, StatusCode::OK);
    let (header, records) = parse_csv(&body);
    let id_column = column(&header, "id");
    let exported: Vec<&str> = records.iter().map(|r| r[id_column].as_str()).collect();
    for id in &expired_ids {
        assert!(
            !exported.contains(&id.as_str()),
            "event {id}, 91 days old, must not be exported: {exported:?}"
        );
    }
    // Running the due schedules (the update's expiry among them) may add
    // events; the export must match the list read at the same time.
    let (_, listed_now) = server
        .get(&format!("/operations/{operation_id}/events?limit=1000"))
        .await;
    let listed_now: Vec<&str> = listed_now["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(exported, listed_now, "the export reads what the list reads");
    assert_eq!(export["rows"], exported.len());
    let recent_row = records
        .iter()
        .find(|r| r[id_column] == recent.id)
        .expect("the 89-day-old event is exported");
    assert_eq!(recent_row[column(&header, "error")], "not enough space");
    assert_eq!(recent_row[column(&header, "attempt")], "1");
    assert_eq!(recent_row[column(&header, "type")], "download_failed");

    // The scheduled purge deletes what reads already hide.
    let purged = server
        .handle()
        .store
        .purge_expired(server.now())
        .await
        .expect("purge");
    assert_eq!(
        purged,
        expired_ids.len() as u64,
        "every event older than 90 days is purged"
    );
    server.stop().await;
}

#[tokio::test]
async fn download_rejects_tampering_and_expiry() {
    let server = TestServer::start().await;
    let (operation_id, _) = operation_with_awkward_names(&server).await;
    let export = finished_export(
        &server,
        &json!({ "kind": "events", "operation_id": operation_id }),
    )
    .await;
    let url = export["url"].as_str().expect("url").to_string();
    let (status, _, _) = download(&url).await;
    assert_eq!(status, StatusCode::OK, "the untouched URL works");

    let (base, query) = url.split_once('?').expect("URL has a query");
    let expires: i64 = query
        .split('&')
        .find_map(|p| p.strip_prefix("expires="))
        .and_then(|e| e.parse().ok())
        .expect("expires parameter");
    let signature = query
        .split('&')
        .find_map(|p| p.strip_prefix("signature="))
        .expect("signature parameter");
    let mut flipped = signature.to_string().into_bytes();
    flipped[10] = if flipped[10] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).expect("hex");
    let other_key = base.replace("events.csv", "export.json");
    let cases = [
        (
            "changed signature",
            format!("{base}?expires={expires}&signature={flipped}"),
        ),
        (
            "later expiry",
            format!("{base}?expires={}&signature={signature}", expires + 3600),
        ),
        (
            "other key",
            format!("{other_key}?expires={expires}&signature={signature}"),
        ),
        ("no signature", format!("{base}?expires={expires}")),
        ("no query", base.to_string()),
    ];
    for (case, tampered) in cases {
        let (status, _, body) = download(&tampered).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{case}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    // The default link lifetime is one hour.
    server.advance(SignedDuration::from_mins(60));
    let (status, _, body) = download(&url).await;
    assert_eq!(
        status,
        StatusCode::GONE,
        "an expired URL: {}",
        String::from_utf8_lossy(&body)
    );
    // A new GET mints a new URL that works again.
    let (_, fresh) = server
        .get(&format!("/exports/{}", export["id"].as_str().expect("id")))
        .await;
    let (status, _, _) = download(fresh["url"].as_str().expect("fresh url")).await;
    assert_eq!(status, StatusCode::OK, "a freshly minted URL works");
    server.stop().await;
}

#[tokio::test]
async fn export_requests_are_validated() {
    let server = TestServer::start().await;
    let cases = [
        (json!({}), "kind"),
        (json!({ "kind": "events" }), "operation_id"),
        (
            json!({ "kind": "events", "operation_id": "no-such-operation" }),
            "operation_id",
        ),
        (
            json!({ "kind": "operations", "filters": { "from": "yesterday" } }),
            "filters.from",
        ),
    ];
    for (request, field) in cases {
        let (status, body) = server.post("/exports", &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "request {request}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
        assert_eq!(
            body["error"]["details"][0]["field"], field,
            "request {request}: {body}"
        );
    }
    let (status, _) = server.get("/exports/01KNOSUCHEXPORT0000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .admin_raw(
            reqwest::Method::POST,
            "/exports",
            None,
            Some(br#"{"kind":"operations"}"#.to_vec()),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "exports need the token");
    server.stop().await;
}

#[tokio::test]
async fn operations_export_applies_filters() {
    let server = TestServer::start().await;
    let (operation_id, devices) = operation_with_awkward_names(&server).await;

    let (status, accepted) = server
        .post(
            "/exports",
            &json!({ "kind": "operations", "filters": { "protocol": "ddm" } }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(accepted["filters"]["protocol"], "ddm");
    server.run_due_schedules().await;
    let (_, export) = server
        .get(&format!(
            "/exports/{}",
            accepted["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(export["state"], "done", "{export}");
    let (_, _, body) = download(export["url"].as_str().expect("url")).await;
    let (header, records) = parse_csv(&body);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0][column(&header, "id")], operation_id);
    assert_eq!(records[0][column(&header, "protocol")], "ddm");
    assert_eq!(
        records[0][column(&header, "total_devices")],
        devices.len().to_string()
    );
    assert_eq!(
        records[0][column(&header, "pending_devices")],
        devices.len().to_string()
    );

    let export = finished_export(
        &server,
        &json!({ "kind": "operations", "filters": { "protocol": "mdm" } }),
    )
    .await;
    assert_eq!(export["rows"], 0, "no MDM operation exists");
    let (_, _, body) = download(export["url"].as_str().expect("url")).await;
    let (header, records) = parse_csv(&body);
    assert!(records.is_empty());
    assert_eq!(header[0], "id", "an empty export still has its header");
    server.stop().await;
}

/// Returns the rows of the events table, expired ones included.
fn stored_events(server: &osdeploy_cli::server::ServerHandle) -> i64 {
    server
        .store
        .table_counts()
        .expect("table counts")
        .get("events")
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn serve_loop_purges_expired_events() {
    use osdeploy_cli::server::{self, ClockMode, ServeConfig};
    use osdeploy_shared::domain::ManualClock;
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("temporary directory");
    let clock = Arc::new(ManualClock::new(
        support::START.parse().expect("start instant"),
    ));
    let handle = server::start(ServeConfig {
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        database: dir.path().join("osdeploy.db"),
        catalog_file: None,
        clock: ClockMode::Manual(clock.clone()),
        admin_token: Some(support::TOKEN.to_string()),
        service: osdeploy_shared::service::ServiceConfig::default(),
        id_seed: Some(3),
        // As `osdeploy serve` runs it: the loop purges at start and then
        // every 24 hours of service-clock time.
        run_scheduler: true,
    })
    .await
    .expect("server starts");

    // Expires an hour from now, so the purge at start keeps it.
    let now = osdeploy_shared::domain::Clock::now(clock.as_ref());
    let event = Event {
        id: "01KPURGEDBYTHELOOP000000000".into(),
        operation_id: "01KNOOPERATION000000000000".into(),
        device_id: None,
        event_type: EventType::OperationCreated,
        details: json!({}),
        actor: Actor::System,
        at: now - EVENT_RETENTION + SignedDuration::from_hours(1),
        expires_at: now + SignedDuration::from_hours(1),
    };
    handle
        .store
        .append(std::slice::from_ref(&event))
        .await
        .expect("append");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(stored_events(&handle), 1, "an unexpired event is kept");

    clock.advance(SignedDuration::from_hours(25));
    let mut remaining = stored_events(&handle);
    for _ in 0..50 {
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        remaining = stored_events(&handle);
    }
    assert_eq!(
        remaining, 0,
        "the serve loop must purge the expired event within 5 s"
    );
    handle.stop().await;
}
