//! One error type that turns itself into a response. Bad input gets a clear
//! 4xx and is not logged as an error. Internal errors get a generic body and
//! are logged once with their detail.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::service::{FieldError, ServiceError};

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token: send Authorization: Bearer <OSDEPLOY_ADMIN_TOKEN>",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Invalid { message, details } => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_request",
                message,
                details,
            },
            ServiceError::NotFound { what, id } => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} {id:?} not found"),
            ),
            ServiceError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            ServiceError::Forbidden { message } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            ServiceError::BadDeviceInput { message } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_device_message", message)
            }
            ServiceError::Store(crate::ports::StoreError::InvalidInput(message)) => {
                ApiError::bad_request(message)
            }
            ServiceError::Store(crate::ports::StoreError::InvalidCursor(cursor)) => {
                let hint = "pass back the next_cursor of a previous page unchanged";
                let mut error = ApiError::bad_request(format!("invalid cursor {cursor:?}: {hint}"));
                error.details.push(
                    FieldError::new("cursor", "invalid", format!("invalid cursor: {hint}"))
                        .with_value(cursor),
                );
                error
            }
            ServiceError::CatalogRefresh(error) => {
                tracing::error!(error = %error, source = ?std::error::Error::source(&error), "catalog refresh failed");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "catalog_refresh_failed",
                    error.to_string(),
                )
            }
            ServiceError::Store(error) => {
                tracing::error!(error = %error, source = ?std::error::Error::source(&error), "request failed in the store");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server log has the detail",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
            }
        });
        (self.status, axum::Json(body)).into_response()
    }
}
