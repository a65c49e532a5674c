//! Migrated operations: `POST /operations/import` takes over a deployment
//! that another tool (or an earlier osdeploy) started.
//!
//! The request is a create request (`protocol`, `update`, `targets`,
//! `install`) plus the `source` it comes from and, optionally, the status
//! each device had there. It goes through the same planning and checks as
//! `POST /operations`, and creates an operation of type `migrated`. Devices
//! imported as `installed` or `failed` get no command; the others get what
//! a new operation sends, so the devices report where they stand.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::operations::{
    CreateOperationRequest, Created, Origin, TargetSelection, UpdateSelection,
};
use super::{FieldError, ServiceError, ServiceResult, Services};
use crate::domain::{OperationType, TargetStatus};

/// Maximum length of `source`.
pub const MAX_SOURCE_LEN: usize = 200;

/// Statuses an import may give a device: the progress statuses and the two
/// outcomes a deployment elsewhere can have reached. Retry, Obsolete,
/// Cancelled and Deprecated are this server's own conclusions.
pub const IMPORTABLE_STATUSES: [TargetStatus; 9] = [
    TargetStatus::Pending,
    TargetStatus::Approved,
    TargetStatus::UserApproved,
    TargetStatus::Downloading,
    TargetStatus::Preparing,
    TargetStatus::Downloaded,
    TargetStatus::Installing,
    TargetStatus::Installed,
    TargetStatus::Failed,
];

/// Body of `POST /operations/import`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImportOperationRequest {
    /// The tool or deployment the operation comes from, such as "jamf:policy-42".
    pub source: Option<String>,
    pub protocol: Option<String>,
    pub update: Option<UpdateSelection>,
    pub targets: Option<TargetSelection>,
    /// Same shape as `install` in `POST /operations`.
    pub install: Option<serde_json::Value>,
    /// Status per device id; devices left out start as Pending.
    #[serde(default)]
    pub statuses: BTreeMap<String, String>,
}

impl Services {
    /// Creates a `migrated` operation from an existing deployment.
    pub async fn import_operation(
        &self,
        request: &ImportOperationRequest,
        idempotency_key: Option<&str>,
        created_by: &str,
    ) -> ServiceResult<Created> {
        let mut problems = Vec::new();
        let source = check_source(request.source.as_deref(), &mut problems);
        let statuses = check_statuses(request, &mut problems);
        let create = CreateOperationRequest {
            update: request.update.clone(),
            protocol: request.protocol.clone(),
            targets: request.targets.clone(),
            install: request.install.clone(),
        };
        if !problems.is_empty() {
            // Report the create fields' problems too, in one response.
            if let Err(ServiceError::Invalid { details, .. }) = self.plan_operation(&create).await {
                problems.extend(details);
            }
            return Err(ServiceError::invalid(problems));
        }
        let origin = Origin {
            kind: OperationType::Migrated,
            statuses,
            details: serde_json::json!({
                "source": source,
                "imported_statuses": request.statuses.len(),
            }),
        };
        self.create_operation_from(&create, idempotency_key, created_by, &origin)
            .await
    }
}

fn check_source(source: Option<&str>, problems: &mut Vec<FieldError>) -> String {
    match source.map(str::trim) {
        None | Some("") => {
            problems.push(FieldError::new(
                "source",
                "missing",
                "source is required: name the tool or deployment the operation comes from, such as \"jamf:policy-42\"",
            ));
            String::new()
        }
        Some(text) if text.chars().count() > MAX_SOURCE_LEN => {
            problems.push(
                FieldError::new(
                    "source",
                    "invalid",
                    format!("source has {} characters, more than the maximum of {MAX_SOURCE_LEN}; shorten it", text.chars().count()),
                )
                .with_value(text),
            );
            String::new()
        }
        Some(text) => text.to_string(),
    }
}

fn check_statuses(
    request: &ImportOperationRequest,
    problems: &mut Vec<FieldError>,
) -> BTreeMap<String, TargetStatus> {
    let device_ids: Vec<&String> = request
        .targets
        .as_ref()
        .map(|t| t.device_ids.iter().collect())
        .unwrap_or_default();
    let allowed: Vec<&str> = IMPORTABLE_STATUSES.iter().map(|s| s.as_str()).collect();
    let mut statuses = BTreeMap::new();
    for (udid, text) in &request.statuses {
        let field = format!("statuses.{udid}");
        if !device_ids.contains(&udid) {
            problems.push(
                FieldError::new(
                    field.clone(),
                    "unknown_device",
                    format!("device {udid:?} has a status but is not in targets.device_ids; add it there or remove its status"),
                )
                .with_value(udid),
            );
        }
        match text.parse::<TargetStatus>() {
            Ok(status) if IMPORTABLE_STATUSES.contains(&status) => {
                statuses.insert(udid.clone(), status);
            }
            _ => problems.push(
                FieldError::new(
                    field,
                    "invalid",
                    format!(
                        "status {text:?} of device {udid:?} cannot be imported: expected one of {}",
                        allowed.join(", ")
                    ),
                )
                .with_value(text),
            ),
        }
    }
    statuses
}
