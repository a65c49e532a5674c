//! The MDM check-in and server URLs.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;

use super::{ApiError, AppState};
use crate::apple::MAX_DEVICE_BODY_BYTES;
use crate::service::checkin::CheckinReply;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mdm/checkin", put(checkin))
        .route("/mdm/connect", put(connect))
}

/// Reads a request body of at most `limit` bytes, returning 413 past it.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            ApiError::too_large(limit)
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

async fn device_body(body: Body) -> Result<Bytes, ApiError> {
    let body = read_body(body, MAX_DEVICE_BODY_BYTES).await?;
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_device_message",
            "empty body: expected a plist",
        ));
    }
    Ok(body)
}

fn with_type(body: Vec<u8>, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn checkin(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let body = device_body(body).await?;
    let reply = state
        .services
        .handle_checkin(&body)
        .await
        .map_err(log_device_error)?;
    Ok(match reply {
        CheckinReply::Empty => StatusCode::OK.into_response(),
        CheckinReply::Plist(body) => with_type(body, "application/xml"),
        CheckinReply::Json(body) if body.is_empty() => StatusCode::OK.into_response(),
        CheckinReply::Json(body) => with_type(body, "application/json"),
    })
}

async fn connect(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let body = device_body(body).await?;
    let next = state
        .services
        .handle_connect(&body)
        .await
        .map_err(log_device_error)?;
    Ok(match next {
        Some(command) => with_type(command, "application/xml"),
        None => StatusCode::OK.into_response(),
    })
}

/// Device mistakes are worth a warning (a misbehaving device or client),
/// not an error; store failures are logged by the error mapping.
fn log_device_error(error: crate::service::ServiceError) -> ApiError {
    if !matches!(error, crate::service::ServiceError::Store(_)) {
        tracing::warn!(error = %error, "device request rejected");
    }
    ApiError::from(error)
}
