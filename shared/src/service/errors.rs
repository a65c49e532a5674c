//! Errors the use cases return, mapped to HTTP statuses by the `http` layer.

use serde::Serialize;

use crate::ports::StoreError;

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// JSON path of the field, such as `targets.device_ids[2]`.
    pub field: String,
    /// The offending value, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Machine-readable reason, such as `unknown_device`.
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            value: None,
            code,
            message: message.into(),
        }
    }

    pub fn with_value(mut self, value: impl Serialize) -> Self {
        self.value = serde_json::to_value(value).ok();
        self
    }
}

/// Errors that stop a use case.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is invalid; `details` names each offending field.
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<FieldError>,
    },
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    /// The request conflicts with the current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A device that has not enrolled, or a request without valid credentials.
    #[error("{message}")]
    Forbidden { message: String },
    /// A device message that is malformed or unknown.
    #[error("{message}")]
    BadDeviceInput { message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The catalog refresh failed; the catalog in use is unchanged.
    #[error(transparent)]
    CatalogRefresh(#[from] super::jobs::CatalogRefreshError),
}

impl ServiceError {
    pub fn invalid(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("invalid request: {}", one.message),
            many => format!("invalid request: {} problems, see details", many.len()),
        };
        ServiceError::Invalid { message, details }
    }

    pub fn invalid_field(
        field: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::invalid(vec![FieldError::new(field, code, message)])
    }

    /// The error for a device request from a device that is not enrolled.
    pub fn not_enrolled(udid: &str) -> Self {
        ServiceError::Forbidden {
            message: format!(
                "device {udid} is not enrolled: send Authenticate and TokenUpdate to the check-in URL first"
            ),
        }
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        ServiceError::NotFound {
            what,
            id: id.into(),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
