//! Validation of `POST /operations` and the other admin inputs: every
//! rejected request is a 4xx whose body names the offending field and value,
//! and nothing is created.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TOKEN, TestDevice, TestServer};

/// The devices every case draws from, enrolled on a fresh server.
struct Fleet {
    /// Supervised Mac on 15.7.7 in America/Los_Angeles.
    los_angeles: TestDevice,
    /// Supervised Mac on 15.7.7 in Asia/Tokyo.
    tokyo: TestDevice,
    /// Supervised Mac on macOS 13, too old for DDM enforcement.
    ventura: TestDevice,
    /// Unsupervised Mac on 15.7.7.
    unsupervised: TestDevice,
}

async fn enroll_fleet(server: &TestServer) -> Fleet {
    let los_angeles = TestDevice::mac("MAC-LA", "15.7.7", "24G720");
    let tokyo = TestDevice::mac("MAC-TOKYO", "15.7.7", "24G720");
    let ventura = TestDevice::mac("MAC-13", "13.7.4", "22H420");
    let mut unsupervised = TestDevice::mac("MAC-UNSUPERVISED", "15.7.7", "24G720");
    unsupervised.supervised = false;
    for device in [&los_angeles, &tokyo, &ventura, &unsupervised] {
        device.enroll(server).await;
    }
    los_angeles
        .set_time_zone(server, "America/Los_Angeles")
        .await;
    tokyo.set_time_zone(server, "Asia/Tokyo").await;
    Fleet {
        los_angeles,
        tokyo,
        ventura,
        unsupervised,
    }
}

/// Builds a valid request for `udids`. Each case overrides one part of it.
fn request(udids: &[&str]) -> Value {
    json!({
        "update": { "product_version": "15.7.9" },
        "protocol": "mdm",
        "targets": { "device_ids": udids },
        "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-29T22:00:00", "time_zone": "device_local" },
    })
}

fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    *body
        .pointer_mut(pointer)
        .expect("field present in the base request") = value;
    body
}

fn without(mut body: Value, key: &str) -> Value {
    body.as_object_mut().expect("object").remove(key);
    body
}

fn without_in(mut body: Value, object: &str, key: &str) -> Value {
    body[object]
        .as_object_mut()
        .expect("nested object")
        .remove(key);
    body
}

/// One rejected request and the detail it must carry.
struct Case<'a> {
    name: &'static str,
    body: Value,
    field: &'static str,
    code: &'static str,
    /// The offending value, when the field has one.
    value: Option<Value>,
    /// Text the detail's message must contain, such as the value or a zone.
    mentions: &'a str,
}

/// Asserts a 400 `invalid_request` with a detail for `field`.
fn assert_rejected(
    name: &str,
    status: StatusCode,
    body: &Value,
    field: &str,
    code: &str,
    value: Option<&Value>,
    mentions: &str,
) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{name}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{name}: the error has a message: {body}"
    );
    let details = body["error"]["details"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let detail = details
        .iter()
        .find(|d| d["field"] == field)
        .unwrap_or_else(|| panic!("{name}: no detail for field {field}: {body}"));
    assert_eq!(detail["code"], code, "{name}: {detail}");
    match value {
        Some(value) => assert_eq!(&detail["value"], value, "{name}: {detail}"),
        None => assert!(
            detail.get("value").is_none(),
            "{name}: a missing field has no value: {detail}"
        ),
    }
    let message = detail["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "{name}: the message {message:?} mentions {mentions:?}"
    );
}

async fn operation_count(server: &TestServer) -> usize {
    server.all("/operations").await.len()
}

#[tokio::test]
async fn create_rejects_each_invalid_field() {
    let server = TestServer::start().await;
    let fleet = enroll_fleet(&server).await;
    let la = fleet.los_angeles.udid.as_str();
    let tokyo = fleet.tokyo.udid.as_str();
    let ventura = fleet.ventura.udid.as_str();
    let unsupervised = fleet.unsupervised.udid.as_str();
    let base = request(&[la]);

    let cases = [
        Case {
            name: "unknown device id",
            body: request(&[la, "NO-SUCH-DEVICE"]),
            field: "targets.device_ids[1]",
            code: "unknown_device",
            value: Some(json!("NO-SUCH-DEVICE")),
            mentions: "NO-SUCH-DEVICE",
        },
        Case {
            name: "unknown group id",
            body: with(
                base.clone(),
                "/targets",
                json!({ "group_ids": ["01NOSUCHGROUP"] }),
            ),
            field: "targets.group_ids[0]",
            code: "unknown_group",
            value: Some(json!("01NOSUCHGROUP")),
            mentions: "01NOSUCHGROUP",
        },
        Case {
            name: "version not in the catalog",
            body: with(base.clone(), "/update/product_version", json!("99.1")),
            field: "update.product_version",
            code: "update_not_in_catalog",
            value: Some(json!("99.1")),
            mentions: "99.1",
        },
        Case {
            name: "malformed version",
            body: with(base.clone(), "/update/product_version", json!("26.6.x")),
            field: "update.product_version",
            code: "invalid",
            value: Some(json!("26.6.x")),
            mentions: "26.6.x",
        },
        Case {
            name: "missing version",
            body: with(base.clone(), "/update", json!({})),
            field: "update.product_version",
            code: "missing",
            value: None,
            mentions: "required",
        },
        Case {
            name: "missing protocol",
            body: without(base.clone(), "protocol"),
            field: "protocol",
            code: "missing",
            value: None,
            mentions: "required",
        },
        Case {
            name: "unknown protocol",
            body: with(base.clone(), "/protocol", json!("carrier-pigeon")),
            field: "protocol",
            code: "invalid",
            value: Some(json!("carrier-pigeon")),
            mentions: "carrier-pigeon",
        },
        Case {
            name: "DDM on macOS 13",
            body: with(request(&[ventura]), "/protocol", json!("ddm")),
            field: "targets",
            code: "protocol_unsupported",
            value: Some(json!(ventura)),
            mentions: ventura,
        },
        Case {
            name: "unsupervised Mac over DDM",
            body: with(request(&[unsupervised]), "/protocol", json!("ddm")),
            field: "targets",
            code: "unsupervised_mac",
            value: Some(json!(unsupervised)),
            mentions: unsupervised,
        },
        Case {
            name: "unsupervised Mac over MDM",
            body: request(&[unsupervised]),
            field: "targets",
            code: "unsupervised_mac",
            value: Some(json!(unsupervised)),
            mentions: unsupervised,
        },
        Case {
            // 10:00 on 2026-08-22 in Tokyo is 01:00Z, before the clock's 09:00Z.
            name: "deadline past in the device's zone",
            body: with(
                request(&[tokyo]),
                "/install/local_date_time",
                json!("2026-08-22T10:00:00"),
            ),
            field: "install.local_date_time",
            code: "deadline_in_past",
            value: Some(json!("2026-08-22T10:00:00")),
            mentions: "Asia/Tokyo",
        },
        Case {
            name: "deadline past in the named zone",
            body: with(
                with(
                    base.clone(),
                    "/install/local_date_time",
                    json!("2026-08-22T10:00:00"),
                ),
                "/install/time_zone",
                json!("Asia/Tokyo"),
            ),
            field: "install.local_date_time",
            code: "deadline_in_past",
            value: Some(json!("2026-08-22T10:00:00")),
            mentions: "Asia/Tokyo",
        },
        Case {
            name: "unknown time zone",
            body: with(base.clone(), "/install/time_zone", json!("Mars/Olympus")),
            field: "install.time_zone",
            code: "unknown_time_zone",
            value: Some(json!("Mars/Olympus")),
            mentions: "Mars/Olympus",
        },
        Case {
            name: "malformed local date-time",
            body: with(
                base.clone(),
                "/install/local_date_time",
                json!("2026-08-29 22:00"),
            ),
            field: "install.local_date_time",
            code: "invalid",
            value: Some(json!("2026-08-29 22:00")),
            mentions: "2026-08-29 22:00",
        },
        Case {
            name: "missing local date-time",
            body: without_in(base.clone(), "install", "local_date_time"),
            field: "install.local_date_time",
            code: "missing",
            value: None,
            mentions: "required",
        },
        Case {
            name: "missing install",
            body: without(base.clone(), "install"),
            field: "install",
            code: "missing",
            value: None,
            mentions: "required",
        },
        Case {
            name: "missing install method",
            body: without_in(base.clone(), "install", "method"),
            field: "install.method",
            code: "missing",
            value: None,
            mentions: "required",
        },
        Case {
            name: "unknown install method",
            body: with(base.clone(), "/install/method", json!("whenever")),
            field: "install.method",
            code: "invalid",
            value: Some(json!("whenever")),
            mentions: "whenever",
        },
        Case {
            name: "missing targets",
            body: without(base.clone(), "targets"),
            field: "targets",
            code: "missing",
            value: None,
            mentions: "device_id",
        },
        Case {
            name: "empty targets",
            body: with(base.clone(), "/targets", json!({ "device_ids": [] })),
            field: "targets",
            code: "missing",
            value: None,
            mentions: "device_id",
        },
    ];

    for case in &cases {
        let (status, body) = server.post("/operations", &case.body).await;
        assert_rejected(
            case.name,
            status,
            &body,
            case.field,
            case.code,
            case.value.as_ref(),
            case.mentions,
        );
    }
    assert_eq!(
        operation_count(&server).await,
        0,
        "no rejected request creates an operation"
    );
    server.stop().await;
}

#[tokio::test]
async fn deadline_past_only_in_tokyo() {
    let server = TestServer::start().await;
    let fleet = enroll_fleet(&server).await;
    // 10:00 on 2026-08-22 has passed in Tokyo (01:00Z) but not in Los
    // Angeles (17:00Z); the clock reads 09:00Z.
    let body = with(
        request(&[&fleet.los_angeles.udid]),
        "/install/local_date_time",
        json!("2026-08-22T10:00:00"),
    );
    let (status, preview) = server.post("/operations/preview", &body).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["deadlines"][0]["zone_name"], "America/Los_Angeles");
    assert_eq!(preview["deadlines"][0]["instant"], "2026-08-22T17:00:00Z");

    let both = with(
        body.clone(),
        "/targets/device_ids",
        json!([fleet.los_angeles.udid, fleet.tokyo.udid]),
    );
    let (status, rejected) = server.post("/operations", &both).await;
    assert_rejected(
        "Tokyo and Los Angeles",
        status,
        &rejected,
        "install.local_date_time",
        "deadline_in_past",
        Some(&json!("2026-08-22T10:00:00")),
        "Asia/Tokyo",
    );
    let message = rejected["error"]["details"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains(&fleet.tokyo.udid),
        "the message names the device: {message}"
    );
    assert!(
        !message.contains("America/Los_Angeles"),
        "only the zone whose deadline passed is blamed: {message}"
    );
    assert_eq!(operation_count(&server).await, 0);

    let (status, created) = server.post("/operations", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    server.stop().await;
}

#[tokio::test]
async fn expired_update_is_rejected() {
    let server = TestServer::start().await;
    let mac = TestDevice::mac("MAC-EXPIRY", "15.7.7", "24G720");
    mac.enroll(&server).await;
    let body = json!({
        "update": { "product_version": "26.5" },
        "protocol": "mdm",
        "targets": { "device_ids": [mac.udid] },
        "install": { "method": "install_immediately" },
    });
    // Before its expiration (2026-08-30) the same request is valid.
    let (status, preview) = server.post("/operations/preview", &body).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["targets"].as_array().map(Vec::len), Some(1));

    server
        .clock
        .set("2026-09-01T09:00:00Z".parse().expect("instant"));
    let (status, rejected) = server.post("/operations", &body).await;
    assert_rejected(
        "expired update",
        status,
        &rejected,
        "update.product_version",
        "update_expired",
        Some(&json!("26.5")),
        "expired",
    );
    let (status, preview) = server.post("/operations/preview", &body).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "preview rejects it too: {preview}"
    );
    assert_eq!(operation_count(&server).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn preview_lists_what_create_rejects() {
    let server = TestServer::start().await;
    let fleet = enroll_fleet(&server).await;
    let cases = [
        ("ddm", fleet.ventura.udid.as_str(), "protocol_unsupported"),
        ("ddm", fleet.unsupervised.udid.as_str(), "unsupervised_mac"),
        ("mdm", fleet.unsupervised.udid.as_str(), "unsupervised_mac"),
    ];
    for (protocol, udid, code) in cases {
        let body = with(
            request(&[&fleet.los_angeles.udid, udid]),
            "/protocol",
            json!(protocol),
        );
        let (status, preview) = server.post("/operations/preview", &body).await;
        assert_eq!(status, StatusCode::OK, "{protocol} {udid}: {preview}");
        let incompatible = preview["incompatible"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(incompatible.len(), 1, "{protocol} {udid}: {preview}");
        assert_eq!(incompatible[0]["device_id"], udid);
        assert_eq!(incompatible[0]["code"], code);
        assert!(
            incompatible[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(udid)),
            "{protocol}: the reason names the device: {preview}"
        );
        let planned: Vec<&str> = preview["targets"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["device_id"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(planned, vec![fleet.los_angeles.udid.as_str()]);

        let (status, rejected) = server.post("/operations", &body).await;
        assert_rejected(
            &format!("create {protocol} with {udid}"),
            status,
            &rejected,
            "targets",
            code,
            Some(&json!(udid)),
            udid,
        );
    }
    assert_eq!(operation_count(&server).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn invalid_json_body_is_rejected() {
    let server = TestServer::start().await;
    let bodies: [(&str, &[u8]); 4] = [
        ("truncated", b"{\"update\": {\"product_version\": "),
        ("not JSON", b"update=15.7.9"),
        ("wrong type", b"{\"targets\": {\"device_ids\": \"MAC-1\"}}"),
        ("empty", b""),
    ];
    for (name, bytes) in bodies {
        for path in ["/operations", "/operations/preview"] {
            let (status, body) = server
                .admin_raw(
                    Method::POST,
                    path,
                    Some(&format!("Bearer {TOKEN}")),
                    Some(bytes.to_vec()),
                )
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name} {path}: {body}");
            assert_eq!(body["error"]["code"], "invalid_request", "{name}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("invalid JSON body")),
                "{name} {path}: {body}"
            );
        }
    }
    assert_eq!(operation_count(&server).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn query_parameters_are_validated() {
    let server = TestServer::start().await;
    // (path, field, value, text the message must contain)
    let cases = [
        ("/operations?state=bogus", "state", "bogus", "bogus"),
        (
            "/operations?state=scheduled,bogus",
            "state",
            "scheduled,bogus",
            "bogus",
        ),
        ("/operations?limit=0", "limit", "0", "1 to 1000"),
        ("/operations?limit=1001", "limit", "1001", "1 to 1000"),
        ("/operations?limit=ten", "limit", "ten", "1 to 1000"),
        ("/operations?view=bogus", "view", "bogus", "ongoing"),
        (
            "/operations?protocol=carrier-pigeon",
            "protocol",
            "carrier-pigeon",
            "carrier-pigeon",
        ),
        (
            "/operations?from=yesterday",
            "from",
            "yesterday",
            "RFC 3339",
        ),
        ("/devices?limit=0", "limit", "0", "1 to 1000"),
        (
            "/devices?platform=windows",
            "platform",
            "windows",
            "windows",
        ),
    ];
    for (path, field, value, mentions) in cases {
        let (status, body) = server.get(path).await;
        assert_rejected(
            path,
            status,
            &body,
            field,
            "invalid",
            Some(&json!(value)),
            mentions,
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn tampered_cursor_is_rejected() {
    let server = TestServer::start().await;
    for udid in ["MAC-A", "MAC-B", "MAC-C"] {
        TestDevice::mac(udid, "15.7.7", "24G720")
            .enroll(&server)
            .await;
    }
    let (status, page) = server.get("/devices?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let (status, next) = server
        .get(&format!("/devices?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(status, StatusCode::OK, "the untouched cursor works: {next}");

    // Base64url of "abc", the unit separator and an id: the creation time is not a number.
    let bad_time = "YWJjHzAxSzAwMDAwMDAwMDAwMDAwMDAwMDAwMDA";
    let cases = [
        ("not base64", format!("/devices?cursor={cursor}*")),
        ("cut short", format!("/devices?cursor={}", &cursor[..1])),
        (
            "another list's cursor",
            format!("/operations?cursor={cursor}"),
        ),
        (
            "bad creation time",
            format!("/operations?cursor={bad_time}"),
        ),
    ];
    for (name, path) in cases {
        let (status, body) = server.get(&path).await;
        let value = path.split("cursor=").nth(1).unwrap_or_default();
        assert_rejected(
            name,
            status,
            &body,
            "cursor",
            "invalid",
            Some(&json!(value)),
            "next_cursor",
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn admin_token_is_required() {
    let server = TestServer::start().await;
    let cases = [
        ("missing", None),
        ("wrong token", Some("Bearer not-the-token".to_string())),
        ("longer token", Some(format!("Bearer {TOKEN}x"))),
        ("wrong scheme", Some(format!("Basic {TOKEN}"))),
        ("no scheme", Some(TOKEN.to_string())),
    ];
    for (name, authorization) in &cases {
        for (method, path, body) in [
            (Method::GET, "/operations", None),
            (Method::GET, "/devices", None),
            (
                Method::POST,
                "/operations",
                Some(request(&["MAC-ANY"]).to_string().into_bytes()),
            ),
        ] {
            let (status, response) = server
                .admin_raw(method.clone(), path, authorization.as_deref(), body)
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{name} {method} {path}: {response}"
            );
            assert_eq!(response["error"]["code"], "unauthorized", "{name}");
            assert!(
                response["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Bearer")),
                "{name}: the message says how to authenticate: {response}"
            );
        }
    }
    let (status, _) = server.get("/operations").await;
    assert_eq!(status, StatusCode::OK, "the right token is accepted");
    server.stop().await;
}

#[tokio::test]
async fn patch_device_rejects_unknown_zone() {
    let server = TestServer::start().await;
    let mac = TestDevice::mac("MAC-ZONE", "15.7.7", "24G720");
    mac.enroll(&server).await;
    mac.set_time_zone(&server, "Europe/Paris").await;
    let path = format!("/devices/{}", mac.udid);
    let (status, body) = server
        .patch(&path, &json!({ "time_zone": "Mars/Olympus" }))
        .await;
    assert_rejected(
        "unknown zone",
        status,
        &body,
        "time_zone",
        "unknown_time_zone",
        Some(&json!("Mars/Olympus")),
        "Mars/Olympus",
    );
    let (_, device) = server.get(&path).await;
    assert_eq!(device["time_zone"], "Europe/Paris", "the zone is unchanged");
    server.stop().await;
}
