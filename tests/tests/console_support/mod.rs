//! The read side of the operations console, checked through the admin
//! router on any store: the summary and the list queries of its figures,
//! operation details, the stale flag, the per-device timeline and the
//! preview's readiness check. `console_api.rs` runs these on SQLite and
//! `aws_console_api.rs` on DynamoDB.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use jiff::{SignedDuration, Timestamp};
use lambda_http::tower::ServiceExt;
use osdeploy_shared::adapters::{RecordedPush, SqliteStore};
use osdeploy_shared::catalog::Catalog;
use osdeploy_shared::domain::{
    Actor, Device, Event, EventType, InstallSettings, ManualClock, Operation, OperationType,
    Protocol, Reminder, TargetStatus, TimeZoneRule, UlidGenerator,
};
use osdeploy_shared::http::{AppState, admin_router};
use osdeploy_shared::ports::contract::fixtures::{
    assign_new, create_device, device, event, insert_operation, move_target, operation, target,
};
use osdeploy_shared::ports::{CatalogStore, DeviceStore, EventStore, GroupStore, OperationStore};
use osdeploy_shared::service::{Ports, ServiceConfig, Services};
use serde_json::{Value, json};

/// The service clock: the date of the bundled catalog snapshot, so that
/// its updates are signed.
pub const NOW: &str = "2026-08-22T09:00:00Z";

pub fn now() -> Timestamp {
    NOW.parse().expect("NOW is an RFC 3339 instant")
}

/// A store that serves every port the console reads.
pub trait ConsoleStore:
    DeviceStore + GroupStore + OperationStore + EventStore + CatalogStore + 'static
{
}

impl<T> ConsoleStore for T where
    T: DeviceStore + GroupStore + OperationStore + EventStore + CatalogStore + 'static
{
}

/// The admin router over `store`, with a manual clock at [`NOW`].
pub struct Console<S> {
    pub store: Arc<S>,
    pub app: axum::Router,
}

impl<S: ConsoleStore> Console<S> {
    pub fn new(store: Arc<S>) -> Console<S> {
        // Schedules are not read here; an in-memory SQLite store takes them
        // so that DynamoDB runs need no EventBridge Scheduler.
        let scheduling = Arc::new(SqliteStore::in_memory().expect("in-memory store"));
        let mut ports = Ports::from_store(
            scheduling,
            Arc::new(RecordedPush::default()),
            Arc::new(osdeploy_shared::adapters::MemoryBlobStore::new()),
            Arc::new(osdeploy_shared::adapters::ChannelPublisher::default()),
        );
        ports.devices = store.clone();
        ports.groups = store.clone();
        ports.operations = store.clone();
        ports.events = store.clone();
        ports.catalogs = store.clone();
        let services = Services::new(
            ports,
            Arc::new(ManualClock::new(now())),
            Arc::new(UlidGenerator::seeded(3)),
            Arc::new(Catalog::bundled().clone()),
            ServiceConfig::default(),
        );
        let app = admin_router(AppState {
            services: Arc::new(services),
            admin_token: None,
        });
        Console { store, app }
    }

    pub async fn send(&self, method: &str, uri: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let uri = if uri.starts_with("/api/v1") {
            uri.to_string()
        } else {
            format!("/api/v1{uri}")
        };
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/json")
            .body(match body {
                Some(body) => Body::from(body.to_string()),
                None => Body::empty(),
            })
            .expect("request");
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("response body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("{method} {uri} returned a body that is not JSON ({e}): {bytes:?}")
            })
        };
        (status, value)
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send("GET", uri, None).await
    }

    /// Follows `next_cursor` from `uri` to the last page; returns every item.
    pub async fn all(&self, uri: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let separator = if uri.contains('?') { '&' } else { '?' };
        let mut next = uri.to_string();
        for _ in 0..1000 {
            let (status, page) = self.get(&next).await;
            assert_eq!(status, StatusCode::OK, "GET {next}: {page}");
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(cursor) => next = format!("{uri}{separator}cursor={cursor}"),
                None => return items,
            }
        }
        panic!("GET {uri} still had a next_cursor after 1000 pages");
    }
}

/// Checks `value` against a schema of the OpenAPI document, appending one
/// message per mismatch to `errors`. Covers what the document uses: `$ref`,
/// `oneOf`, `type` (one or a list), `enum`, `const`, `properties`,
/// `required`, `additionalProperties` and `items`.
fn check_schema(
    value: &Value,
    schema: &Value,
    document: &Value,
    at: &str,
    errors: &mut Vec<String>,
) {
    if let Some(reference) = schema["$ref"].as_str() {
        let target = document
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or(&Value::Null);
        return check_schema(value, target, document, at, errors);
    }
    if let Some(branches) = schema["oneOf"].as_array() {
        let matching = branches
            .iter()
            .filter(|branch| {
                let mut branch_errors = Vec::new();
                check_schema(value, branch, document, at, &mut branch_errors);
                branch_errors.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!(
                "{at}: matches {matching} oneOf branches, expected 1: {value}"
            ));
        }
        return;
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        errors.push(format!("{at}: expected {constant}, got {value}"));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not in the enum {allowed:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let type_matches = |name: &str| match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t)) {
        errors.push(format!("{at}: expected type {types:?}, got {value}"));
        return;
    }
    if let Value::Object(map) = value {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or("");
            if !map.contains_key(name) {
                errors.push(format!("{at}: missing required member {name:?}"));
            }
        }
        for (name, member) in map {
            let path = format!("{at}/{name}");
            match schema["properties"].get(name) {
                Some(member_schema) => check_schema(member, member_schema, document, &path, errors),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => errors.push(format!("{path}: member not in the schema")),
                    Value::Object(_) => {
                        let extra = &schema["additionalProperties"];
                        check_schema(member, extra, document, &path, errors)
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (n, item) in items.iter().enumerate() {
            check_schema(item, item_schema, document, &format!("{at}/{n}"), errors);
        }
    }
}

/// Asserts that `body`, returned with `status` by `method path` (the
/// document's path template), matches the response schema the OpenAPI
/// document gives for that status.
pub fn assert_documented(method: &str, path: &str, status: StatusCode, body: &Value) {
    let document: Value = serde_json::from_str(osdeploy_shared::http::admin::OPENAPI_JSON)
        .expect("openapi.json is JSON");
    let operation = &document["paths"][path][method.to_lowercase()];
    assert!(operation.is_object(), "openapi.json has no {method} {path}");
    let mut response = &operation["responses"][status.as_str()];
    if let Some(reference) = response["$ref"].as_str() {
        response = document
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or(&Value::Null);
    }
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "openapi.json documents no JSON body for {status} of {method} {path}"
    );
    let mut errors = Vec::new();
    check_schema(body, schema, &document, "", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {path} returned {status} with a body that does not match openapi.json:\n{}",
        errors.join("\n")
    );
}

fn at(text: &str) -> Timestamp {
    text.parse().expect("fixture instant")
}

/// Stores an operation created at `created_at` with one target per
/// status in `statuses`, each on a new device named `<id>-dev-<n>`.
async fn operation_with_targets<S: ConsoleStore>(
    store: &S,
    template: Operation,
    statuses: &[TargetStatus],
) -> Operation {
    let id = template.id.clone();
    insert_operation(store, template).await;
    for (n, status) in statuses.iter().enumerate() {
        let udid = format!("{id}-dev-{n}");
        create_device(store, device(&udid)).await;
        assign_new(store, target(&id, &udid)).await;
        if *status != TargetStatus::Pending {
            move_target(
                store,
                &id,
                &udid,
                *status,
                now() - SignedDuration::from_hours(1),
            )
            .await;
        }
    }
    osdeploy_shared::ports::contract::fixtures::read_operation(store, &id).await
}

/// Checks the summary's counts against hand-built operations around the
/// period's edges, and that every figure's list query lists exactly as
/// many operations.
pub async fn summary_counts_match_list_queries<S: ConsoleStore>(console: &Console<S>) {
    let store = console.store.as_ref();
    let from = at("2026-08-01T00:00:00Z");
    let to = at("2026-08-15T00:00:00Z");
    let second = SignedDuration::from_secs(1);
    let made =
        |id: &str, created_at: Timestamp, kind: OperationType, protocol: Protocol| Operation {
            kind,
            protocol,
            created_at,
            ..operation(id)
        };
    use OperationType::*;
    use Protocol::*;
    use TargetStatus::*;
    // Outside the period on either side.
    operation_with_targets(
        store,
        made("op-before", from - second, AdminInitiated, Ddm),
        &[Downloading],
    )
    .await;
    operation_with_targets(store, made("op-at-end", to, Migrated, Mdm), &[Installed]).await;
    // Inside it.
    operation_with_targets(store, made("op-at-start", from, AdminInitiated, Ddm), &[]).await;
    operation_with_targets(
        store,
        made(
            "op-running",
            from + SignedDuration::from_hours(24),
            AdminInitiated,
            Ddm,
        ),
        &[Downloading, Pending],
    )
    .await;
    operation_with_targets(
        store,
        made(
            "op-done",
            from + SignedDuration::from_hours(48),
            Migrated,
            Mdm,
        ),
        &[Installed, Failed],
    )
    .await;
    operation_with_targets(
        store,
        made(
            "op-stopped",
            from + SignedDuration::from_hours(72),
            UserInitiated,
            Ddm,
        ),
        &[Pending],
    )
    .await;
    store
        .mark_cancelled("op-stopped", from + SignedDuration::from_hours(73))
        .await
        .expect("cancel op-stopped");
    operation_with_targets(
        store,
        made("op-last", to - second, AdminInitiated, Mdm),
        &[Pending],
    )
    .await;

    let (status, summary) = console
        .get("/operations/summary?from=2026-08-01T00:00:00Z&to=2026-08-15T00:00:00Z")
        .await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_documented("GET", "/operations/summary", status, &summary);
    assert_eq!(summary["from"], "2026-08-01T00:00:00Z");
    assert_eq!(summary["to"], "2026-08-15T00:00:00Z");

    let expected: Vec<(&str, i64)> = vec![
        ("/total", 5),
        ("/by_state/scheduled", 2),
        ("/by_state/in_progress", 1),
        ("/by_state/finished", 1),
        ("/by_state/cancelled", 1),
        ("/by_type/admin_initiated", 3),
        ("/by_type/user_initiated", 1),
        ("/by_type/migrated", 1),
        ("/by_protocol/ddm", 3),
        ("/by_protocol/mdm", 2),
    ];
    for (pointer, count) in &expected {
        let figure = summary.pointer(pointer).unwrap_or(&Value::Null);
        assert_eq!(
            figure["count"],
            json!(count),
            "summary figure {pointer}: {figure}"
        );
        let href = figure["href"]
            .as_str()
            .unwrap_or_else(|| panic!("figure {pointer} has no href: {figure}"));
        let listed = console.all(href).await;
        assert_eq!(
            listed.len() as i64,
            *count,
            "GET {href} must list as many operations as figure {pointer} counts"
        );
        // With a small page size the query still reproduces the figure.
        let paged = console.all(&format!("{href}&limit=1")).await;
        assert_eq!(paged.len() as i64, *count, "GET {href}&limit=1");
    }
    let listed = console
        .all(summary["total"]["href"].as_str().unwrap_or(""))
        .await;
    let mut ids: Vec<String> = listed
        .iter()
        .filter_map(|o| o["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "op-at-start",
            "op-done",
            "op-last",
            "op-running",
            "op-stopped"
        ],
        "the total's list holds the operations created in [from, to)"
    );

    let (status, rejected) = console
        .get("/operations/summary?from=2026-08-15T00:00:00Z&to=2026-08-01T00:00:00Z")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "from after to: {rejected}");
    assert_documented("GET", "/operations/summary", status, &rejected);

    let (status, page) = console.get("/operations?view=history&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_documented("GET", "/operations", status, &page);
}

/// Checks the operations list's filters combined with each other and with
/// the ongoing and history views.
pub async fn operation_filters_combine<S: ConsoleStore>(console: &Console<S>) {
    let store = console.store.as_ref();
    let created = at("2026-08-10T00:00:00Z");
    let with_version = |id: &str, protocol: Protocol, version: &str, groups: &[&str]| {
        let mut made = Operation {
            protocol,
            created_at: created,
            group_ids: groups.iter().map(|g| g.to_string()).collect(),
            ..operation(id)
        };
        made.update.product_version = version.parse().expect("version");
        made
    };
    use TargetStatus::*;
    operation_with_targets(
        store,
        with_version("op-a", Protocol::Ddm, "26.2", &["g-1"]),
        &[Downloading],
    )
    .await;
    operation_with_targets(
        store,
        with_version("op-b", Protocol::Mdm, "26.2", &["g-1"]),
        &[Installed],
    )
    .await;
    operation_with_targets(
        store,
        with_version("op-c", Protocol::Ddm, "26.3", &["g-2"]),
        &[Installed],
    )
    .await;
    operation_with_targets(
        store,
        with_version("op-d", Protocol::Ddm, "26.2", &[]),
        &[Pending],
    )
    .await;

    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("view=ongoing", vec!["op-a", "op-d"]),
        ("view=history", vec!["op-b", "op-c"]),
        ("view=history&product_version=26.2", vec!["op-b"]),
        ("view=ongoing&group_id=g-1", vec!["op-a"]),
        ("view=ongoing&state=finished", vec![]),
        (
            "view=history&state=finished,in_progress",
            vec!["op-b", "op-c"],
        ),
        (
            "state=in_progress,finished&protocol=ddm",
            vec!["op-a", "op-c"],
        ),
        (
            "product_version=26.2&group_id=g-1&protocol=mdm",
            vec!["op-b"],
        ),
        (
            "from=2026-08-10T00:00:00Z&to=2026-08-10T00:00:01Z&state=scheduled",
            vec!["op-d"],
        ),
        ("from=2026-08-10T00:00:01Z", vec![]),
    ];
    for (query, expected) in cases {
        let listed = console.all(&format!("/operations?{query}&limit=1")).await;
        let mut ids: Vec<String> = listed
            .iter()
            .filter_map(|o| o["id"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        assert_eq!(ids, expected, "GET /operations?{query}");
    }
}

/// Checks that the operation details hold what the console shows.
pub async fn operation_details_complete<S: ConsoleStore>(console: &Console<S>) {
    let store = console.store.as_ref();
    let scheduled = Operation {
        install: InstallSettings::EnforceAtSchedule {
            local_date_time: "2026-08-29T22:00:00".parse().expect("local date time"),
            time_zone: TimeZoneRule::Named("Europe/Berlin".into()),
            add_to_catalog: true,
            reminders: vec![Reminder {
                hours_before: 24,
                repeat_every_hours: 6,
            }],
        },
        created_at: now() - SignedDuration::from_hours(5),
        ..operation("op-details")
    };
    use TargetStatus::*;
    operation_with_targets(store, scheduled, &[Installed, Downloading, Pending]).await;

    let (status, details) = console.get("/operations/op-details").await;
    assert_eq!(status, StatusCode::OK, "{details}");
    assert_documented("GET", "/operations/{id}", status, &details);
    assert_eq!(details["id"], "op-details");
    assert_eq!(details["type"], "admin_initiated");
    assert_eq!(details["protocol"], "ddm");
    assert_eq!(details["state"], "in_progress");
    assert_eq!(details["update"]["name"], "macOS 26.2");
    assert_eq!(details["update"]["product_version"], "26.2");
    assert_eq!(details["update"]["builds"], json!(["25C56"]));
    assert_eq!(details["completed_devices"], 1);
    assert_eq!(details["total_devices"], 3);
    assert_eq!(details["counts"]["installed"], 1);
    assert_eq!(details["counts"]["downloading"], 1);
    assert_eq!(details["counts"]["pending"], 1);
    let started: Timestamp = details["started_at"]
        .as_str()
        .unwrap_or_else(|| panic!("started_at missing: {details}"))
        .parse()
        .expect("started_at is RFC 3339");
    assert_eq!(
        details["elapsed_seconds"],
        json!(now().duration_since(started).as_secs()),
        "elapsed_seconds runs from started_at to now"
    );
    let installation = &details["installation"];
    assert_eq!(installation["method"], "enforce_at_schedule");
    assert_eq!(installation["local_date_time"], "2026-08-29T22:00:00");
    assert_eq!(installation["time_zone"], "Europe/Berlin");
    assert_eq!(installation["add_to_catalog"], true);
    assert_eq!(installation["reminders"][0]["hours_before"], 24);
    assert_eq!(installation["reminders"][0]["repeat_every_hours"], 6);
    assert!(
        installation["reminder_delivery"].is_string(),
        "{installation}"
    );

    insert_operation(store, operation("op-now")).await;
    let (status, immediate) = console.get("/operations/op-now").await;
    assert_eq!(status, StatusCode::OK, "{immediate}");
    assert_documented("GET", "/operations/{id}", status, &immediate);
    assert_eq!(
        immediate["installation"],
        json!({ "method": "install_immediately" })
    );
    assert_eq!(immediate["started_at"], Value::Null);
    assert_eq!(immediate["elapsed_seconds"], Value::Null);
    assert_eq!(immediate["total_devices"], 0);

    let (status, missing) = console.get("/operations/op-unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_documented("GET", "/operations/{id}", status, &missing);
}

/// Checks the stale flag and last check-in on an operation's device list.
pub async fn device_list_flags_stale_targets<S: ConsoleStore>(console: &Console<S>) {
    let store = console.store.as_ref();
    insert_operation(store, operation("op-stale")).await;
    let rows = [
        ("dev-a-recent", 1, TargetStatus::Pending, false),
        ("dev-b-silent", 100, TargetStatus::Downloading, true),
        ("dev-c-silent-done", 100, TargetStatus::Installed, false),
        ("dev-d-edge", 72, TargetStatus::Pending, false),
    ];
    for (udid, hours_silent, status, _) in rows {
        let seen = now() - SignedDuration::from_hours(hours_silent);
        create_device(
            store,
            Device {
                last_seen_at: seen,
                ..device(udid)
            },
        )
        .await;
        assign_new(store, target("op-stale", udid)).await;
        if status != TargetStatus::Pending {
            move_target(store, "op-stale", udid, status, now()).await;
        }
    }

    let (status, first_page) = console.get("/operations/op-stale/devices?limit=3").await;
    assert_documented("GET", "/operations/{id}/devices", status, &first_page);
    let listed = console.all("/operations/op-stale/devices?limit=3").await;
    let by_id: BTreeMap<String, &Value> = listed
        .iter()
        .map(|t| (t["device_id"].as_str().unwrap_or("").to_string(), t))
        .collect();
    assert_eq!(
        by_id.len(),
        rows.len(),
        "every target listed once: {listed:?}"
    );
    for (udid, hours_silent, _, stale) in rows {
        let row = by_id[udid];
        assert_eq!(row["stale"], stale, "stale flag of {udid}: {row}");
        let expected_seen = (now() - SignedDuration::from_hours(hours_silent)).to_string();
        assert_eq!(
            row["last_seen_at"],
            json!(expected_seen),
            "last_seen_at of {udid}"
        );
    }

    let filtered = console
        .all("/operations/op-stale/devices?status=downloading&q=B-SILENT")
        .await;
    assert_eq!(filtered.len(), 1, "status and q together: {filtered:?}");
    assert_eq!(filtered[0]["stale"], true);
}

/// Checks the per-device timeline: every operation's events of the device
/// in time order with their kinds, expired events hidden, pages stable.
pub async fn timeline_merges_operations<S: ConsoleStore>(console: &Console<S>) {
    let store = console.store.as_ref();
    create_device(store, device("dev-t")).await;
    create_device(store, device("dev-other")).await;
    let base = now() - SignedDuration::from_hours(10);
    let minute = |n: i64| base + SignedDuration::from_mins(n);
    let by_admin = |mut e: Event| {
        e.actor = Actor::Administrator;
        e
    };
    let by_device = |mut e: Event| {
        e.actor = Actor::Device;
        e
    };
    let written = vec![
        by_admin(event(
            "op-a",
            Some("dev-t"),
            EventType::DeviceAdded,
            minute(1),
        )),
        event("op-a", Some("dev-t"), EventType::CommandSent, minute(2)),
        by_device(event(
            "op-a",
            Some("dev-t"),
            EventType::CommandAcknowledged,
            minute(3),
        )),
        event("op-a", None, EventType::OperationStarted, minute(4)),
        event("op-a", Some("dev-other"), EventType::CommandSent, minute(5)),
        by_admin(event(
            "op-b",
            Some("dev-t"),
            EventType::DeviceMigration,
            minute(6),
        )),
        by_device(event(
            "op-b",
            Some("dev-t"),
            EventType::DeclarationsSynced,
            minute(7),
        )),
        by_device(event(
            "op-b",
            Some("dev-t"),
            EventType::DownloadStarted,
            minute(8),
        )),
        Event {
            expires_at: now() - SignedDuration::from_secs(1),
            ..event("op-b", Some("dev-t"), EventType::CommandError, minute(9))
        },
    ];
    let mut shuffled = written.clone();
    shuffled.reverse();
    store.append(&shuffled).await.expect("append events");

    let expected = [
        (0, "admin_action", "op-a"),
        (1, "command_sent", "op-a"),
        (2, "command_result", "op-a"),
        (5, "admin_action", "op-b"),
        (6, "status_change", "op-b"),
        (7, "status_change", "op-b"),
    ];
    for limit in [1, 2, 50] {
        let entries = console
            .all(&format!("/devices/dev-t/timeline?limit={limit}"))
            .await;
        let got: Vec<(String, String, String)> = entries
            .iter()
            .map(|e| {
                (
                    e["id"].as_str().unwrap_or("").to_string(),
                    e["kind"].as_str().unwrap_or("").to_string(),
                    e["operation_id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String, String)> = expected
            .iter()
            .map(|(i, kind, op)| (written[*i].id.clone(), kind.to_string(), op.to_string()))
            .collect();
        assert_eq!(got, want, "timeline of dev-t with limit {limit}");
    }
    let (status, first) = console.get("/devices/dev-t/timeline?limit=1").await;
    assert_documented("GET", "/devices/{udid}/timeline", status, &first);
    let (status, whole) = console.get("/devices/dev-t/timeline?limit=50").await;
    assert_documented("GET", "/devices/{udid}/timeline", status, &whole);
    assert_eq!(first["items"][0]["type"], "device_added");
    assert_eq!(first["items"][0]["actor"], "administrator");
    assert_eq!(first["items"][0]["at"], json!(minute(1).to_string()));

    let (status, missing) = console.get("/devices/dev-unknown/timeline").await;
    assert_documented("GET", "/devices/{udid}/timeline", status, &missing);
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "timeline of an unknown device"
    );
    let (status, _) = console
        .get("/devices/dev-t/timeline?cursor=%25%25bad")
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "timeline with a forged cursor"
    );
}

/// Checks the readiness part of the preview, one device per flag.
pub async fn preview_flags_unready_devices<S: ConsoleStore>(console: &Console<S>) {
    let store = console.store.as_ref();
    let recent = now() - SignedDuration::from_hours(1);
    let mac = |udid: &str| Device {
        os_version: Some("15.7.7".parse().expect("version")),
        build_version: Some("24G720".into()),
        last_seen_at: recent,
        ..device(udid)
    };
    let devices = vec![
        mac("mac-ready"),
        Device {
            last_seen_at: now() - SignedDuration::from_hours(100),
            ..mac("mac-silent")
        },
        Device {
            bootstrap_token: None,
            ..mac("mac-no-token")
        },
        Device {
            supervised: Some(false),
            ..mac("mac-unsupervised")
        },
        Device {
            os_version: Some("13.6".parse().expect("version")),
            build_version: Some("22G120".into()),
            ..mac("mac-ventura")
        },
    ];
    let udids: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
    for d in devices {
        create_device(store, d).await;
    }
    // 26.5 expires on 2026-08-30: a deadline before it, then one after.
    let request = |local: &str| {
        json!({
            "update": { "product_version": "26.5" },
            "protocol": "ddm",
            "targets": { "device_ids": udids },
            "install": { "method": "enforce_at_schedule", "local_date_time": local, "time_zone": "device_local" },
        })
    };

    let (status, preview) = console
        .send(
            "POST",
            "/operations/preview",
            Some(&request("2026-08-28T22:00:00")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_documented("POST", "/operations/preview", status, &preview);
    let readiness = &preview["readiness"];
    assert_eq!(readiness["silent_after_hours"], 72);
    let flags_of = |readiness: &Value| -> BTreeMap<String, Vec<String>> {
        readiness["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let codes = d["flags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["code"].as_str().map(str::to_string))
                    .collect();
                (d["device_id"].as_str().unwrap_or("").to_string(), codes)
            })
            .collect()
    };
    let flags = flags_of(readiness);
    let expected: BTreeMap<String, Vec<String>> = [
        ("mac-silent", vec!["silent"]),
        ("mac-no-token", vec!["bootstrap_token_missing"]),
        (
            "mac-unsupervised",
            vec!["unsupervised_mac", "ddm_unsupported"],
        ),
        ("mac-ventura", vec!["ddm_unsupported"]),
    ]
    .into_iter()
    .map(|(id, codes)| {
        (
            id.to_string(),
            codes.into_iter().map(str::to_string).collect(),
        )
    })
    .collect();
    assert_eq!(
        flags, expected,
        "readiness flags before the expiry: {readiness}"
    );
    assert_eq!(readiness["ready"], 1);
    assert_eq!(readiness["flagged"], 4);
    assert_eq!(readiness["by_flag"]["ddm_unsupported"], 2);

    let (status, preview) = console
        .send(
            "POST",
            "/operations/preview",
            Some(&request("2026-09-05T22:00:00")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let flags = flags_of(&preview["readiness"]);
    for udid in ["mac-ready", "mac-silent", "mac-no-token"] {
        assert!(
            flags
                .get(udid)
                .is_some_and(|codes| codes.iter().any(|c| c == "update_expires_before_deadline")),
            "{udid} gets a build that expires before a 2026-09-05 deadline: {flags:?}"
        );
    }
    assert_eq!(preview["readiness"]["ready"], 0);
}

/// Checks the bodies of the other read routes against the OpenAPI
/// document: inventory, groups, updates, an operation's events and the
/// errors of invalid queries.
pub async fn read_routes_match_document<S: ConsoleStore>(console: &Console<S>) {
    let store = console.store.as_ref();
    create_device(store, device("dev-1")).await;
    create_device(
        store,
        Device {
            platform: None,
            os_version: None,
            model: None,
            supervised: None,
            ..device("dev-2")
        },
    )
    .await;
    store
        .create_group(&osdeploy_shared::ports::contract::fixtures::group("g-1"))
        .await
        .expect("create group");
    store
        .set_members("g-1", &["dev-1".to_string()])
        .await
        .expect("set members");
    insert_operation(store, operation("op-1")).await;
    assign_new(store, target("op-1", "dev-1")).await;
    let events = vec![
        event(
            "op-1",
            None,
            EventType::OperationCreated,
            now() - SignedDuration::from_hours(2),
        ),
        event(
            "op-1",
            Some("dev-1"),
            EventType::CommandSent,
            now() - SignedDuration::from_hours(1),
        ),
    ];
    store.append(&events).await.expect("append events");

    let cases = [
        ("/devices", "/devices?limit=5", StatusCode::OK),
        ("/devices/{udid}", "/devices/dev-1", StatusCode::OK),
        ("/devices/{udid}", "/devices/dev-2", StatusCode::OK),
        (
            "/devices/{udid}",
            "/devices/dev-unknown",
            StatusCode::NOT_FOUND,
        ),
        ("/device-groups", "/device-groups", StatusCode::OK),
        ("/device-groups/{id}", "/device-groups/g-1", StatusCode::OK),
        (
            "/device-groups/{id}/members",
            "/device-groups/g-1/members",
            StatusCode::OK,
        ),
        ("/updates", "/updates?platform=macos", StatusCode::OK),
        ("/updates", "/updates?device_id=dev-1", StatusCode::OK),
        (
            "/operations",
            "/operations?state=bogus",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/operations/{id}/events",
            "/operations/op-1/events",
            StatusCode::OK,
        ),
        (
            "/operations/{id}/events",
            "/operations/op-1/events?type=bogus",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/operations/{id}/devices",
            "/operations/op-1/devices?limit=0",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (template, uri, expected) in cases {
        let (status, body) = console.get(uri).await;
        assert_eq!(status, expected, "GET {uri}: {body}");
        assert_documented("GET", template, status, &body);
    }

    // Exports: the queued record, its state, and a rejected request.
    let request =
        json!({ "kind": "events", "operation_id": "op-1", "filters": { "type": "command_sent" } });
    let (status, queued) = console
        .send("POST", "/api/v1/exports", Some(&request))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "POST /exports: {queued}");
    assert_documented("POST", "/exports", status, &queued);
    let id = queued["id"].as_str().expect("export id");
    let (status, export) = console.get(&format!("/exports/{id}")).await;
    assert_eq!(status, StatusCode::OK, "GET /exports/{id}: {export}");
    assert_documented("GET", "/exports/{id}", status, &export);
    let (status, rejected) = console
        .send("POST", "/api/v1/exports", Some(&json!({ "kind": "bogus" })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{rejected}");
    assert_documented("POST", "/exports", status, &rejected);
}
