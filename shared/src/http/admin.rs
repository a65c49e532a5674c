//! The admin API: JSON, snake_case, bearer token, cursor pagination.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, patch, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::device::read_body;
use super::{ApiError, AppState};
use crate::catalog::DeviceIdentity;
use crate::domain::{EventType, OperationState, OperationType, Platform, Protocol, TargetStatus};
use crate::ports::{DeviceFilter, EventFilter, OperationFilter, PageRequest, TargetFilter};
use crate::service::FieldError;
use crate::service::import::ImportOperationRequest;
use crate::service::inventory::{DevicePatch, GroupInput};
use crate::service::operations::CreateOperationRequest;
use crate::service::views::{DeviceView, OperationView};

/// Largest admin request body; a 10,000-device create request is about 0.5 MB.
pub const MAX_ADMIN_BODY_BYTES: usize = 4 * 1024 * 1024;
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

/// One admin route: method, path under `/api/v1`, handler.
struct AdminRoute {
    method: Method,
    path: &'static str,
    handler: MethodRouter<AppState>,
}

fn route(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> AdminRoute {
    AdminRoute {
        method,
        path,
        handler,
    }
}

/// Lists every admin route. [`routes`] mounts exactly these, and the
/// OpenAPI test compares them with the document in both directions, so a
/// new route goes into this table and into `openapi.json`, nowhere else.
fn route_table() -> Vec<AdminRoute> {
    vec![
        route(Method::GET, "/openapi.json", get(openapi_document)),
        route(Method::GET, "/updates", get(list_updates)),
        route(Method::GET, "/devices", get(list_devices)),
        route(Method::GET, "/devices/{udid}", get(get_device)),
        route(Method::PATCH, "/devices/{udid}", patch(patch_device)),
        route(
            Method::GET,
            "/devices/{udid}/timeline",
            get(device_timeline),
        ),
        route(Method::GET, "/device-groups", get(list_groups)),
        route(Method::POST, "/device-groups", post(create_group)),
        route(Method::GET, "/device-groups/{id}", get(get_group)),
        route(Method::PATCH, "/device-groups/{id}", patch(update_group)),
        route(Method::PUT, "/device-groups/{id}/members", put(set_members)),
        route(Method::GET, "/device-groups/{id}/members", get(get_members)),
        route(Method::POST, "/operations/preview", post(preview_operation)),
        route(Method::GET, "/operations/summary", get(operations_summary)),
        route(Method::GET, "/operations", get(list_operations)),
        route(Method::POST, "/operations", post(create_operation)),
        route(Method::POST, "/operations/import", post(import_operation)),
        route(Method::GET, "/operations/{id}", get(get_operation)),
        route(
            Method::POST,
            "/operations/{id}/cancel",
            post(cancel_operation),
        ),
        route(Method::GET, "/operations/{id}/devices", get(list_targets)),
        route(Method::GET, "/operations/{id}/events", get(list_events)),
        route(
            Method::POST,
            "/exports",
            post(super::exports::create_export),
        ),
        route(
            Method::GET,
            "/exports/{id}",
            get(super::exports::get_export),
        ),
    ]
}

/// The method and path (under `/api/v1`, with `{name}` parameters) of
/// every mounted admin route, in table order.
pub fn mounted_routes() -> Vec<(Method, &'static str)> {
    route_table()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

pub fn routes(state: AppState) -> Router<AppState> {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for AdminRoute { path, handler, .. } in route_table() {
        let merged = match by_path.remove(path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        by_path.insert(path, merged);
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
        .layer(middleware::from_fn_with_state(state, require_token))
}

/// The OpenAPI 3.1 document of the admin API, served at `/api/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

async fn openapi_document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.admin_token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok =
            presented.is_some_and(|token| constant_time_eq(token.as_bytes(), expected.as_bytes()));
        if !ok {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = read_body(body, MAX_ADMIN_BODY_BYTES).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn page(query: &BTreeMap<String, String>) -> Result<PageRequest, ApiError> {
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(invalid_query(
                    "limit",
                    text,
                    format!("limit must be a whole number from 1 to {MAX_PAGE}"),
                ));
            }
        },
    };
    Ok(PageRequest {
        limit,
        cursor: query.get("cursor").cloned(),
    })
}

pub(crate) fn invalid_query(field: &str, value: &str, message: String) -> ApiError {
    let mut error = ApiError::bad_request(format!("invalid query parameter {field}: {message}"));
    error
        .details
        .push(FieldError::new(field, "invalid", message).with_value(value));
    error
}

fn parse_param<T: std::str::FromStr<Err = String>>(
    query: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e| invalid_query(name, text, e)),
    }
}

fn parse_time(
    query: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<jiff::Timestamp>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e| {
            invalid_query(
                name,
                text,
                format!("expected an RFC 3339 time such as 2026-08-22T09:00:00Z: {e}"),
            )
        }),
    }
}

fn page_json<T, V: serde::Serialize>(page: crate::ports::Page<T>, view: impl Fn(&T) -> V) -> Value {
    json!({
        "items": page.items.iter().map(view).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })
}

async fn list_updates(
    State(state): State<AppState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let services = &state.services;
    let now = services.now();
    let catalog = services.catalog();
    let platform: Option<Platform> = parse_param(&query, "platform")?;
    let mut udids: Vec<String> = query
        .get("device_id")
        .map(|ids| {
            ids.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(group_id) = query.get("group_id") {
        udids.extend(services.group_members(group_id).await?);
    }
    if udids.is_empty() {
        let items: Vec<Value> = catalog
            .versions(platform, now)
            .into_iter()
            .filter(|v| !v.expired)
            .map(|v| {
                json!({
                    "name": v.name,
                    "platform": v.platform,
                    "product_version": v.product_version,
                    "product_version_extra": v.product_version_extra,
                    "builds": v.builds,
                    "release_date": v.release_date,
                    "expiration_date": v.expiration_date,
                    "background_security_improvement": v.background_security_improvement,
                    "device_models": v.device_count,
                    "protocols": ["ddm", "mdm"],
                })
            })
            .collect();
        return Ok(Json(json!({ "items": items, "next_cursor": null })));
    }
    let devices = services
        .ports
        .devices
        .get_devices(&udids)
        .await
        .map_err(crate::service::ServiceError::from)?;
    for udid in &udids {
        if !devices.iter().any(|d| &d.udid == udid) {
            return Err(crate::service::ServiceError::not_found("device", udid.clone()).into());
        }
    }
    // One row per version, with the devices it applies to and how.
    let mut rows: BTreeMap<(Platform, String), Value> = BTreeMap::new();
    for device in &devices {
        let (Some(model), Some(device_platform), Some(version)) = (
            device.model.as_deref(),
            device.platform,
            device.os_version.as_ref(),
        ) else {
            continue;
        };
        let identity = DeviceIdentity {
            model,
            software_update_device_id: device.software_update_device_id.as_deref(),
            platform: device_platform,
            os_version: version,
            build: device.build_version.as_deref(),
        };
        for deployable in catalog.deployable_for(&identity, now) {
            let update = deployable.update;
            let key = (update.platform, update.name());
            let row = rows.entry(key).or_insert_with(|| json!({
                "name": update.name(),
                "platform": update.platform,
                "product_version": update.product_version,
                "product_version_extra": update.product_version_extra,
                "builds": [],
                "release_date": update.release_date,
                "expiration_date": update.expiration_date,
                "background_security_improvement": update.background_security_improvement,
                "devices": 0, "major_for": 0, "minor_for": 0, "ddm_capable": 0, "mdm_capable": 0,
            }));
            if let Some(builds) = row["builds"].as_array_mut()
                && !builds.iter().any(|b| b == update.build.as_str())
            {
                builds.push(json!(update.build));
            }
            let bump =
                |row: &mut Value, key: &str| row[key] = json!(row[key].as_i64().unwrap_or(0) + 1);
            bump(row, "devices");
            bump(
                row,
                if deployable.upgrade == crate::catalog::UpgradeKind::Major {
                    "major_for"
                } else {
                    "minor_for"
                },
            );
            if device.incompatibility(Protocol::Ddm).is_none() {
                bump(row, "ddm_capable");
            }
            if device.incompatibility(Protocol::Mdm).is_none() {
                bump(row, "mdm_capable");
            }
        }
    }
    let items: Vec<Value> = rows
        .into_values()
        .map(|mut row| {
            let devices = row["devices"].as_i64().unwrap_or(0);
            let mut protocols = Vec::new();
            if row["ddm_capable"].as_i64() == Some(devices) {
                protocols.push("ddm");
            }
            if row["mdm_capable"].as_i64() == Some(devices) {
                protocols.push("mdm");
            }
            row["protocols"] = json!(protocols);
            row
        })
        .collect();
    Ok(Json(json!({ "items": items, "next_cursor": null })))
}

async fn list_devices(
    State(state): State<AppState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filter = DeviceFilter {
        q: query.get("q").cloned(),
        group_id: query.get("group_id").cloned(),
        os_version: query.get("os_version").cloned(),
        platform: parse_param(&query, "platform")?,
    };
    let page = state.services.list_devices(&filter, &page(&query)?).await?;
    Ok(Json(page_json(page, |d| DeviceView::from(d))))
}

async fn get_device(
    State(state): State<AppState>,
    Path(udid): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    Ok(Json(DeviceView::from(
        &state.services.get_device(&udid).await?,
    )))
}

async fn patch_device(
    State(state): State<AppState>,
    Path(udid): Path<String>,
    body: Body,
) -> Result<Json<DeviceView>, ApiError> {
    let patch: DevicePatch = json_body(body).await?;
    Ok(Json(DeviceView::from(
        &state.services.patch_device(&udid, patch).await?,
    )))
}

async fn list_groups(
    State(state): State<AppState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let page = state.services.list_groups(&page(&query)?).await?;
    Ok(Json(page_json(page, Clone::clone)))
}

async fn create_group(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let input: GroupInput = json_body(body).await?;
    let group = state.services.create_group(input).await?;
    Ok((StatusCode::CREATED, Json(group)).into_response())
}

async fn get_group(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let group = state.services.get_group(&id).await?;
    Ok(Json(serde_json::to_value(group).unwrap_or(Value::Null)))
}

async fn update_group(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let input: GroupInput = json_body(body).await?;
    let group = state.services.update_group(&id, input).await?;
    Ok(Json(serde_json::to_value(group).unwrap_or(Value::Null)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Members {
    device_ids: Vec<String>,
}

async fn set_members(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let members: Members = json_body(body).await?;
    let device_ids = state
        .services
        .set_group_members(&id, members.device_ids)
        .await?;
    Ok(Json(json!({ "group_id": id, "device_ids": device_ids })))
}

async fn get_members(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let device_ids = state.services.group_members(&id).await?;
    Ok(Json(json!({ "group_id": id, "device_ids": device_ids })))
}

async fn preview_operation(
    State(state): State<AppState>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: CreateOperationRequest = json_body(body).await?;
    let plan = state.services.plan_operation(&request).await?;
    let readiness = state.services.readiness(&request, &plan).await?;
    let mut body = serde_json::to_value(&plan).unwrap_or(Value::Null);
    body["readiness"] = serde_json::to_value(&readiness).unwrap_or(Value::Null);
    Ok(Json(body))
}

async fn create_operation(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: CreateOperationRequest = json_body(body).await?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(key) = &key
        && (key.is_empty() || key.len() > 255)
    {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    let created = state
        .services
        .create_operation(&request, key.as_deref(), "administrator")
        .await?;
    let now = state.services.now();
    let status = if created.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut body =
        serde_json::to_value(OperationView::new(&created.operation, now)).unwrap_or(Value::Null);
    body["not_moved"] = json!(created.not_moved);
    Ok((status, Json(body)).into_response())
}

/// `POST /operations/import`: creates a `migrated` operation from an
/// existing deployment, with the same response as `POST /operations`.
async fn import_operation(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: ImportOperationRequest = json_body(body).await?;
    let key = idempotency_key(&headers)?;
    let created = state
        .services
        .import_operation(&request, key.as_deref(), "administrator")
        .await?;
    Ok(created_response(&state, created))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(key) = &key
        && (key.is_empty() || key.len() > 255)
    {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    Ok(key)
}

fn created_response(state: &AppState, created: crate::service::operations::Created) -> Response {
    let now = state.services.now();
    let status = if created.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut body =
        serde_json::to_value(OperationView::new(&created.operation, now)).unwrap_or(Value::Null);
    body["not_moved"] = json!(created.not_moved);
    (status, Json(body)).into_response()
}

async fn list_operations(
    State(state): State<AppState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let Some(filter) = operation_filter(&query)? else {
        return Ok(Json(json!({ "items": [], "next_cursor": null })));
    };
    let now = state.services.now();
    let page = state
        .services
        .list_operations(&filter, &page(&query)?)
        .await?;
    Ok(Json(page_json(page, |o| OperationView::new(o, now))))
}

/// Query parameters [`operation_filter`] reads.
pub(crate) const OPERATION_FILTER_PARAMS: [&str; 8] = [
    "state",
    "product_version",
    "group_id",
    "from",
    "to",
    "type",
    "protocol",
    "view",
];

/// Parses the filters of `GET /operations`, shared with operations exports.
/// Returns `None` when the filters can match no operation: a `view` and a
/// `state` that have no state in common.
pub(crate) fn operation_filter(
    query: &BTreeMap<String, String>,
) -> Result<Option<OperationFilter>, ApiError> {
    let mut states: Vec<OperationState> = match query.get("state") {
        None => Vec::new(),
        Some(text) => text
            .split(',')
            .map(|s| s.parse().map_err(|e| invalid_query("state", text, e)))
            .collect::<Result<_, _>>()?,
    };
    let view_states = match query.get("view").map(String::as_str) {
        None => None,
        Some("ongoing") => Some([OperationState::Scheduled, OperationState::InProgress]),
        Some("history") => Some([OperationState::Finished, OperationState::Cancelled]),
        Some(other) => {
            return Err(invalid_query(
                "view",
                other,
                "expected \"ongoing\" or \"history\"".into(),
            ));
        }
    };
    // A view and a state filter together list the states both allow.
    if let Some(view_states) = view_states {
        if states.is_empty() {
            states.extend(view_states);
        } else {
            states.retain(|s| view_states.contains(s));
            if states.is_empty() {
                return Ok(None);
            }
        }
    }
    Ok(Some(OperationFilter {
        states,
        product_version: query.get("product_version").cloned(),
        group_id: query.get("group_id").cloned(),
        kind: parse_param::<OperationType>(query, "type")?,
        protocol: parse_param::<Protocol>(query, "protocol")?,
        from: parse_time(query, "from")?,
        to: parse_time(query, "to")?,
    }))
}

async fn get_operation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, ApiError> {
    let operation = state.services.get_operation(&id).await?;
    Ok(Json(OperationView::new(&operation, state.services.now())))
}

async fn cancel_operation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, ApiError> {
    let operation = state.services.cancel_operation(&id).await?;
    Ok(Json(OperationView::new(&operation, state.services.now())))
}

async fn list_targets(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filter = target_filter(&query)?;
    let page = state
        .services
        .list_target_views(&id, &filter, &page(&query)?)
        .await?;
    Ok(Json(page_json(page, Clone::clone)))
}

async fn list_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filter = event_filter(&query)?;
    let page = state
        .services
        .list_events(&id, &filter, &page(&query)?)
        .await?;
    Ok(Json(page_json(page, Clone::clone)))
}

async fn operations_summary(
    State(state): State<AppState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let summary = state
        .services
        .operations_summary(parse_time(&query, "from")?, parse_time(&query, "to")?)
        .await?;
    Ok(Json(serde_json::to_value(&summary).unwrap_or(Value::Null)))
}

async fn device_timeline(
    State(state): State<AppState>,
    Path(udid): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let page = state
        .services
        .device_timeline(&udid, &page(&query)?)
        .await?;
    Ok(Json(page_json(page, Clone::clone)))
}

/// Query parameters [`target_filter`] reads.
pub(crate) const TARGET_FILTER_PARAMS: [&str; 3] = ["status", "group_id", "q"];

/// Parses the filters of `GET /operations/{id}/devices`, shared with
/// device-status exports.
pub(crate) fn target_filter(query: &BTreeMap<String, String>) -> Result<TargetFilter, ApiError> {
    Ok(TargetFilter {
        status: parse_param::<TargetStatus>(query, "status")?,
        group_id: query.get("group_id").cloned(),
        q: query.get("q").cloned(),
        ..Default::default()
    })
}

/// Query parameters [`event_filter`] reads.
pub(crate) const EVENT_FILTER_PARAMS: [&str; 2] = ["device_id", "type"];

/// Parses the filters of `GET /operations/{id}/events`, shared with events
/// exports.
pub(crate) fn event_filter(query: &BTreeMap<String, String>) -> Result<EventFilter, ApiError> {
    Ok(EventFilter {
        device_id: query.get("device_id").cloned(),
        event_type: parse_param::<EventType>(query, "type")?,
    })
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
