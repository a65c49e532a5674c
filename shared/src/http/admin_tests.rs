//! Checks of the admin route table against the OpenAPI document and the
//! mounted router.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::{OPENAPI_JSON, mounted_routes};
use crate::adapters::RecordedPush;
use crate::adapters::sqlite::SqliteStore;
use crate::catalog::Catalog;
use crate::domain::{ManualClock, UlidGenerator};
use crate::http::{AppState, admin_router};
use crate::service::{Ports, ServiceConfig, Services};

const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    match serde_json::from_str(OPENAPI_JSON) {
        Ok(value) => value,
        Err(error) => panic!("openapi.json is not valid JSON: {error}"),
    }
}

/// Collects every (method, path) the document names, with upper-case methods.
fn documented_routes(document: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let Some(paths) = document["paths"].as_object() else {
        panic!("openapi.json has no paths object");
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            panic!("path item {path} is not an object");
        };
        for method in item.keys().filter(|k| HTTP_METHODS.contains(&k.as_str())) {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

fn mounted() -> BTreeSet<(String, String)> {
    mounted_routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect()
}

#[test]
fn document_is_openapi_3_1() {
    let document = document();
    let version = document["openapi"].as_str().unwrap_or("");
    assert!(version.starts_with("3.1."), "openapi version {version:?}");
    assert_eq!(document["servers"][0]["url"], "/api/v1");
}

#[test]
fn every_mounted_route_is_documented() {
    let documented = documented_routes(&document());
    let missing: Vec<_> = mounted().difference(&documented).cloned().collect();
    assert!(
        missing.is_empty(),
        "routes mounted but missing from openapi.json: {missing:?}"
    );
}

#[test]
fn every_documented_route_is_mounted() {
    let documented = documented_routes(&document());
    let extra: Vec<_> = documented.difference(&mounted()).cloned().collect();
    assert!(
        extra.is_empty(),
        "routes in openapi.json that the router does not mount: {extra:?}"
    );
}

/// Every `$ref` names a schema or response the document defines.
#[test]
fn document_references_resolve() {
    fn walk(value: &Value, document: &Value, broken: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    let pointer = reference.trim_start_matches('#');
                    if document.pointer(pointer).is_none() {
                        broken.push(reference.clone());
                    }
                }
                map.values().for_each(|v| walk(v, document, broken));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, document, broken)),
            _ => {}
        }
    }
    let document = document();
    let mut broken = Vec::new();
    walk(&document, &document, &mut broken);
    assert!(broken.is_empty(), "unresolved $ref: {broken:?}");
}

/// Every path parameter in a path has a parameter entry, and back.
#[test]
fn path_parameters_are_declared() {
    let document = document();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        let in_path: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        for (method, operation) in item.as_object().into_iter().flatten() {
            let declared: BTreeSet<String> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect();
            assert_eq!(declared, in_path, "path parameters of {method} {path}");
        }
    }
}

fn app() -> axum::Router {
    let store = match SqliteStore::in_memory() {
        Ok(store) => Arc::new(store),
        Err(error) => panic!("opening an in-memory store failed: {error:?}"),
    };
    let ports = Ports::from_store(
        store,
        Arc::new(RecordedPush::default()),
        Arc::new(crate::adapters::MemoryBlobStore::new()),
        Arc::new(crate::adapters::ChannelPublisher::default()),
    );
    let start = jiff::Timestamp::constant(1_787_389_200, 0);
    let services = Services::new(
        ports,
        Arc::new(ManualClock::new(start)),
        Arc::new(UlidGenerator::seeded(1)),
        Arc::new(Catalog::bundled().clone()),
        ServiceConfig::default(),
    );
    admin_router(AppState {
        services: Arc::new(services),
        admin_token: None,
    })
}

/// Sends `method path` with parameters filled in and returns the status and
/// whether the body is empty. Axum's own 404 and 405 have no body, but the
/// handlers' errors are JSON.
async fn probe(app: &axum::Router, method: &str, path: &str) -> (StatusCode, bool) {
    let concrete = path
        .split('/')
        .map(|s| if s.starts_with('{') { "probe-id" } else { s })
        .collect::<Vec<_>>()
        .join("/");
    let method = match Method::from_bytes(method.as_bytes()) {
        Ok(method) => method,
        Err(error) => panic!("method {method:?}: {error}"),
    };
    let request = Request::builder()
        .method(method)
        .uri(format!("/api/v1{concrete}"))
        .header("content-type", "application/json")
        .body(Body::from("{}"));
    let request = match request {
        Ok(request) => request,
        Err(error) => panic!("building a request for {path}: {error}"),
    };
    let response = match app.clone().oneshot(request).await {
        Ok(response) => response,
        Err(error) => match error {},
    };
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => panic!("reading the body of {path}: {error}"),
    };
    (status, body.is_empty())
}

#[tokio::test]
async fn router_mounts_exactly_the_table() {
    let app = app();
    for (method, path) in mounted() {
        let (status, empty) = probe(&app, &method, &path).await;
        let unrouted =
            status == StatusCode::METHOD_NOT_ALLOWED || (status == StatusCode::NOT_FOUND && empty);
        assert!(
            !unrouted,
            "{method} {path} is in route_table but the router answered {status}"
        );
    }
    // The probe distinguishes a missing route from a mounted one.
    let (status, empty) = probe(&app, "GET", "/no-such-route").await;
    assert!(
        status == StatusCode::NOT_FOUND && empty,
        "an unknown route answered {status}"
    );
}

#[tokio::test]
async fn openapi_route_serves_document() {
    let app = app();
    let request = Request::builder()
        .uri("/api/v1/openapi.json")
        .body(Body::empty());
    let Ok(request) = request else {
        panic!("building the request failed");
    };
    let response = match app.oneshot(request).await {
        Ok(response) => response,
        Err(error) => match error {},
    };
    assert_eq!(response.status(), StatusCode::OK);
    let body = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => panic!("reading the body: {error}"),
    };
    let served: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => panic!("the served document is not JSON: {error}"),
    };
    assert_eq!(served, document());
}
