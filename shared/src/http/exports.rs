//! `POST /api/v1/exports` and `GET /api/v1/exports/{id}`.
//!
//! A request body is `{"kind": "operations" | "devices" | "events",
//! "operation_id": "...", "filters": {"name": "value", ...}}`. `filters`
//! takes the query parameters of the matching list route as strings, and
//! the same functions parse them. `operation_id` is required for `devices`
//! and `events` and rejected for `operations`. Every problem is reported
//! as its own entry in the error's `details`.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::admin::{
    EVENT_FILTER_PARAMS, OPERATION_FILTER_PARAMS, TARGET_FILTER_PARAMS, event_filter, json_body,
    operation_filter, target_filter,
};
use super::{ApiError, AppState};
use crate::export::{ExportKind, ExportQuery};
use crate::service::FieldError;
use crate::service::exports::ExportView;

/// Top-level fields of an export request.
const REQUEST_FIELDS: [&str; 3] = ["kind", "operation_id", "filters"];

pub(crate) async fn create_export(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, ApiError> {
    let request: Value = json_body(body).await?;
    let (query, filters) = parse_request(&request).map_err(|details| {
        let message = match details.as_slice() {
            [one] => format!("invalid export request: {}", one.message),
            many => format!(
                "invalid export request: {} problems, see details",
                many.len()
            ),
        };
        let mut error = ApiError::bad_request(message);
        error.details = details;
        error
    })?;
    let view = state.services.create_export(query, filters).await?;
    let location = format!("/api/v1/exports/{}", view.id);
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

pub(crate) async fn get_export(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ExportView>, ApiError> {
    Ok(Json(state.services.get_export(&id).await?))
}

/// Checks an export request and builds its query and the filters as sent.
/// Returns every problem found, one [`FieldError`] each.
fn parse_request(
    request: &Value,
) -> Result<(ExportQuery, BTreeMap<String, String>), Vec<FieldError>> {
    let mut problems = Vec::new();
    let Some(fields) = request.as_object() else {
        return Err(vec![FieldError::new(
            "",
            "invalid_type",
            "the body must be a JSON object such as {\"kind\": \"operations\"}",
        )]);
    };
    for name in fields.keys() {
        if !REQUEST_FIELDS.contains(&name.as_str()) {
            problems.push(FieldError::new(
                name.clone(),
                "unknown_field",
                format!("unknown field {name:?}; the fields are kind, operation_id and filters"),
            ));
        }
    }

    let kind = match fields.get("kind") {
        None | Some(Value::Null) => {
            problems.push(FieldError::new(
                "kind",
                "required",
                "kind is required: operations, devices or events",
            ));
            None
        }
        Some(Value::String(text)) => match text.parse::<ExportKind>() {
            Ok(kind) => Some(kind),
            Err(message) => {
                problems.push(FieldError::new("kind", "invalid", message).with_value(text));
                None
            }
        },
        Some(other) => {
            problems.push(
                FieldError::new("kind", "invalid_type", "kind must be a string").with_value(other),
            );
            None
        }
    };

    let operation_id = match fields.get("operation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        Some(other) => {
            problems.push(
                FieldError::new(
                    "operation_id",
                    "invalid_type",
                    "operation_id must be a non-empty string",
                )
                .with_value(other),
            );
            None
        }
    };

    let filters = string_filters(fields.get("filters"), &mut problems);

    let Some(kind) = kind else {
        return Err(problems);
    };
    let allowed: &[&str] = match kind {
        ExportKind::Operations => &OPERATION_FILTER_PARAMS,
        ExportKind::Devices => &TARGET_FILTER_PARAMS,
        ExportKind::Events => &EVENT_FILTER_PARAMS,
    };
    for name in filters.keys() {
        if !allowed.contains(&name.as_str()) {
            problems.push(FieldError::new(
                format!("filters.{name}"),
                "unknown_filter",
                format!(
                    "{} exports take no filter {name:?}; the filters are {}",
                    kind.as_str(),
                    allowed.join(", ")
                ),
            ));
        }
    }
    match (kind, &operation_id) {
        (ExportKind::Operations, Some(id)) => problems.push(
            FieldError::new(
                "operation_id",
                "not_allowed",
                "operations exports cover every operation; remove operation_id",
            )
            .with_value(id),
        ),
        (ExportKind::Devices | ExportKind::Events, None) => problems.push(FieldError::new(
            "operation_id",
            "required",
            format!("operation_id is required for {} exports", kind.as_str()),
        )),
        _ => {}
    }

    let parsed = match kind {
        ExportKind::Operations => operation_filter(&filters).and_then(|filter| match filter {
            Some(filter) => Ok(ExportQuery::Operations { filter }),
            None => Err(super::admin::invalid_query(
                "state",
                filters.get("state").map(String::as_str).unwrap_or_default(),
                "no state in this list is part of the chosen view, so the export would be empty"
                    .into(),
            )),
        }),
        ExportKind::Devices => target_filter(&filters).map(|filter| ExportQuery::Devices {
            operation_id: operation_id.clone().unwrap_or_default(),
            filter,
        }),
        ExportKind::Events => event_filter(&filters).map(|filter| ExportQuery::Events {
            operation_id: operation_id.clone().unwrap_or_default(),
            filter,
        }),
    };
    match parsed {
        Ok(query) if problems.is_empty() => Ok((query, filters)),
        Ok(_) => Err(problems),
        Err(error) => {
            // The list routes name a query parameter; here it is a field of
            // `filters`.
            problems.extend(error.details.into_iter().map(|mut detail| {
                detail.field = format!("filters.{}", detail.field);
                detail
            }));
            Err(problems)
        }
    }
}

/// Reads `filters`: an object whose values are strings, as query
/// parameters are. Other values are reported in `problems` and left out.
fn string_filters(
    filters: Option<&Value>,
    problems: &mut Vec<FieldError>,
) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    match filters {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (name, value) in entries {
                match value {
                    Value::String(text) => {
                        map.insert(name.clone(), text.clone());
                    }
                    other => problems.push(
                        FieldError::new(
                            format!("filters.{name}"),
                            "invalid_type",
                            format!("filter {name} must be a string, as in the list route's query"),
                        )
                        .with_value(other),
                    ),
                }
            }
        }
        Some(other) => problems.push(
            FieldError::new(
                "filters",
                "invalid_type",
                "filters must be an object such as {\"state\": \"in_progress\"}",
            )
            .with_value(other),
        ),
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(request: Value) -> Vec<(String, &'static str)> {
        match parse_request(&request) {
            Ok(parsed) => panic!("request {request} must be rejected, got {parsed:?}"),
            Err(details) => details.into_iter().map(|d| (d.field, d.code)).collect(),
        }
    }

    #[test]
    fn request_errors_name_each_field() {
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (json!({}), vec![("kind", "required")]),
            (json!({"kind": "targets"}), vec![("kind", "invalid")]),
            (json!({"kind": 3}), vec![("kind", "invalid_type")]),
            (
                json!({"kind": "events"}),
                vec![("operation_id", "required")],
            ),
            (
                json!({"kind": "operations", "operation_id": "op-1"}),
                vec![("operation_id", "not_allowed")],
            ),
            (
                json!({"kind": "operations", "filters": {"state": "dancing"}}),
                vec![("filters.state", "invalid")],
            ),
            (
                json!({"kind": "operations", "filters": {"limit": "5"}}),
                vec![("filters.limit", "unknown_filter")],
            ),
            (
                json!({"kind": "devices", "operation_id": "op-1", "filters": {"status": 1}}),
                vec![("filters.status", "invalid_type")],
            ),
            (
                json!({"kind": "events", "operation_id": "op-1", "extra": true}),
                vec![("extra", "unknown_field")],
            ),
            (
                json!({"kind": "events", "filters": {"type": "nope"}}),
                vec![("operation_id", "required"), ("filters.type", "invalid")],
            ),
        ];
        for (request, expected) in cases {
            let expected: Vec<(String, &str)> = expected
                .into_iter()
                .map(|(field, code)| (field.to_string(), code))
                .collect();
            assert_eq!(problems(request.clone()), expected, "request {request}");
        }
    }

    #[test]
    fn valid_request_keeps_filters() {
        let request = json!({
            "kind": "events",
            "operation_id": "op-1",
            "filters": {"type": "download_failed", "device_id": "UDID-1"},
        });
        let (query, filters) = parse_request(&request).expect("valid request");
        let ExportQuery::Events {
            operation_id,
            filter,
        } = query
        else {
            panic!("an events request must give an events query, got {query:?}");
        };
        assert_eq!(operation_id, "op-1");
        assert_eq!(filter.device_id.as_deref(), Some("UDID-1"));
        assert_eq!(
            filter.event_type,
            Some(crate::domain::EventType::DownloadFailed)
        );
        assert_eq!(filters.len(), 2);
    }
}
