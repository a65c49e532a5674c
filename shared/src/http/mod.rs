//! HTTP handlers shared by the local server and the Lambda functions:
//! request decoding, the admin API, the device endpoints, and the mapping
//! from errors to statuses.

pub mod admin;
pub mod device;
pub mod downloads;
pub mod error;
pub mod exports;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::service::Services;

pub use error::ApiError;

/// The state every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    /// Bearer token for the admin API; `None` when an outer layer (API
    /// Gateway's JWT authorizer) has already authorized the request.
    pub admin_token: Option<Arc<str>>,
}

/// Builds the whole application: the admin API under `/api/v1` and the
/// device endpoints.
pub fn router(state: AppState) -> Router {
    admin_router(state.clone()).merge(device_router(state))
}

/// Only the admin API under `/api/v1`, for its own Lambda function.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .nest("/api/v1", admin::routes(state.clone()))
        .layer(middleware::from_fn_with_state(state.clone(), date_header))
        .with_state(state)
}

/// Only the device endpoints, for their own Lambda functions.
pub fn device_router(state: AppState) -> Router {
    Router::new()
        .merge(device::routes())
        .layer(middleware::from_fn_with_state(state.clone(), date_header))
        .with_state(state)
}

/// Stamps responses with the service clock, which can run accelerated in
/// demos: simulated devices read the server's time from `Date`.
async fn date_header(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let now = state.services.now();
    let text = now.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().insert(header::DATE, value);
    }
    response
}
