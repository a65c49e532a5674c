//! Declarative status reports: the JSON a device sends in the `Data` of a
//! DeclarativeManagement check-in to the `status` endpoint.
//!
//! Status item names are dotted (`softwareupdate.install-state`), but the
//! report nests them as objects, one level per dot:
//! `{"softwareupdate": {"install-state": "downloading"}}`.
//! [`parse_status_report`] walks that tree into a [`ParsedStatus`]. An item
//! absent from the report stays `None`, which means unchanged since the last
//! report (unless `FullReport` is true). Unknown items and values never
//! fail the parse. They go to [`ParsedStatus::unknown`] with their path.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::apple::WireError;
use crate::apple::error::json_kind;

/// Status item names, as subscribed to and as reported (dot-joined).
pub mod status_items {
    pub const OS_VERSION: &str = "device.operating-system.version";
    pub const BUILD_VERSION: &str = "device.operating-system.build-version";
    pub const OS_FAMILY: &str = "device.operating-system.family";
    pub const OS_MARKETING_NAME: &str = "device.operating-system.marketing-name";
    pub const SUPPLEMENTAL_BUILD_VERSION: &str =
        "device.operating-system.supplemental.build-version";
    pub const SUPPLEMENTAL_EXTRA_VERSION: &str =
        "device.operating-system.supplemental.extra-version";
    pub const INSTALL_STATE: &str = "softwareupdate.install-state";
    pub const PENDING_VERSION: &str = "softwareupdate.pending-version";
    pub const FAILURE_REASON: &str = "softwareupdate.failure-reason";
    pub const INSTALL_REASON: &str = "softwareupdate.install-reason";
    pub const DEVICE_ID: &str = "softwareupdate.device-id";
    pub const BETA_ENROLLMENT: &str = "softwareupdate.beta-enrollment";
    pub const DECLARATIONS: &str = "management.declarations";
    pub const CLIENT_CAPABILITIES: &str = "management.client-capabilities";

    /// Every item [`ParsedStatus`](super::ParsedStatus) has a field for.
    pub const KNOWN: &[&str] = &[
        OS_VERSION,
        BUILD_VERSION,
        OS_FAMILY,
        OS_MARKETING_NAME,
        SUPPLEMENTAL_BUILD_VERSION,
        SUPPLEMENTAL_EXTRA_VERSION,
        INSTALL_STATE,
        PENDING_VERSION,
        FAILURE_REASON,
        INSTALL_REASON,
        DEVICE_ID,
        BETA_ENROLLMENT,
        DECLARATIONS,
        CLIENT_CAPABILITIES,
    ];
}

tolerant_enum! {
    /// `softwareupdate.install-state`.
    pub enum InstallState {
        /// No update pending, and the previous one succeeded.
        None => "none",
        /// An update is waiting to start. Apple's schema describes this
        /// value but leaves it out of the value list.
        Waiting => "waiting",
        Downloading => "downloading",
        /// Downloaded and prepared, ready to install.
        Prepared => "prepared",
        Installing => "installing",
        Failed => "failed",
    }
}

tolerant_enum! {
    /// Trigger of a pending update, in `softwareupdate.install-reason`.
    pub enum InstallReason {
        SystemSettings => "system-settings",
        InstallTonight => "install-tonight",
        AutoUpdate => "auto-update",
        /// The user acted on a notification.
        Notification => "notification",
        SetupAssistant => "setup-assistant",
        /// The `softwareupdate` command-line tool.
        CommandLine => "command-line",
        /// An MDM command.
        Mdm => "mdm",
        /// A declarative configuration.
        Declaration => "declaration",
    }
}

tolerant_enum! {
    /// `valid` of a declaration in `management.declarations`.
    pub enum DeclarationValidity {
        /// Wire value `unknown`: the device has not determined validity yet.
        Undetermined => "unknown",
        /// See the declaration's `reasons`.
        Invalid => "invalid",
        Valid => "valid",
    }
}

/// `softwareupdate.pending-version`. Both strings are empty when no update
/// is pending, and both include any Rapid Security Response suffix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingVersion {
    #[serde(rename = "os-version")]
    pub os_version: String,
    #[serde(rename = "build-version")]
    pub build_version: String,
}

/// `softwareupdate.failure-reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReason {
    /// Failures of the current update, 0 when none or nothing is pending.
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339 time of the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// `softwareupdate.install-reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallReasonStatus {
    /// Empty when no update is pending.
    #[serde(rename = "reason")]
    pub reasons: Vec<InstallReason>,
    /// The declaration that caused the update, present only with the
    /// `declaration` reason.
    #[serde(
        rename = "declaration-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub declaration_id: Option<String>,
}

/// A reason in a declaration's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReason {
    /// Such as `Error.ConfigurationCannotBeApplied`.
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// A declaration's status in `management.declarations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclarationStatus {
    pub identifier: String,
    #[serde(rename = "server-token")]
    pub server_token: String,
    pub active: bool,
    pub valid: DeclarationValidity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<StatusReason>>,
}

/// `management.declarations`. Each list is `None` when absent from the
/// report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclarationsStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<Vec<DeclarationStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configurations: Option<Vec<DeclarationStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<Vec<DeclarationStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management: Option<Vec<DeclarationStatus>>,
}

/// A reason in a status report's `Errors`. These keys are capitalized,
/// unlike [`StatusReason`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReason {
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(
        rename = "Description",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<String>,
    #[serde(rename = "Details", default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// A status item the device could not report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusError {
    #[serde(rename = "StatusItem")]
    pub status_item: String,
    #[serde(rename = "Reasons", default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<ErrorReason>>,
}

/// A status report as sent on the wire, with the items nested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    #[serde(rename = "StatusItems")]
    pub status_items: Map<String, Value>,
    #[serde(rename = "Errors", default)]
    pub errors: Vec<StatusError>,
    /// True when the report contains the full status (a "safety sync", about
    /// once a day) rather than the changes since the last report.
    #[serde(rename = "FullReport", default)]
    pub full_report: bool,
}

impl StatusReport {
    /// Builds a report from the typed fields of `status`. Its `unknown`
    /// entries are not sent. Add raw items with [`Self::insert_item`].
    ///
    /// # Errors
    ///
    /// Returns [`WireError::SerializeJson`] if a field fails to serialize.
    pub fn from_status(status: &ParsedStatus) -> Result<Self, WireError> {
        let mut report = StatusReport {
            status_items: Map::new(),
            errors: status.errors.clone(),
            full_report: status.full_report,
        };
        for (name, value) in status.typed_items()? {
            report.insert_item(name, value);
        }
        Ok(report)
    }

    /// Inserts `value` under the dotted item `name`, nesting one object per
    /// dot. A non-object value on the way is replaced by an object.
    pub fn insert_item(&mut self, name: &str, value: Value) {
        let mut parts: Vec<&str> = name.split('.').collect();
        let Some(leaf) = parts.pop() else {
            return;
        };
        let mut map = &mut self.status_items;
        for part in parts {
            let entry = map
                .entry(part.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(inner) = entry else {
                return;
            };
            map = inner;
        }
        map.insert(leaf.to_owned(), value);
    }

    /// Serializes the report as JSON.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::SerializeJson`] if serialization fails.
    pub fn to_json(&self) -> Result<Vec<u8>, WireError> {
        serde_json::to_vec(self).map_err(|source| WireError::SerializeJson {
            context: "status report",
            source,
        })
    }
}

/// The typed content of one status report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedStatus {
    /// `FullReport`, false when absent.
    pub full_report: bool,
    /// Items the device could not report.
    pub errors: Vec<StatusError>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    /// Such as `macOS` or `iOS`.
    pub os_family: Option<String>,
    pub os_marketing_name: Option<String>,
    /// Build with the Rapid Security Response letter, such as `20A123a`.
    pub supplemental_build_version: Option<String>,
    /// Rapid Security Response letter, such as `a`.
    pub supplemental_extra_version: Option<String>,
    pub install_state: Option<InstallState>,
    pub pending_version: Option<PendingVersion>,
    pub failure_reason: Option<FailureReason>,
    pub install_reason: Option<InstallReasonStatus>,
    pub software_update_device_id: Option<String>,
    /// Empty string when the device is in no beta program.
    pub beta_enrollment: Option<String>,
    pub declarations: Option<DeclarationsStatus>,
    /// `management.client-capabilities`, kept as sent.
    pub client_capabilities: Option<Value>,
    /// Unknown items, unknown values and malformed entries, with their
    /// paths (dotted, with `[i]` for array elements).
    pub unknown: Vec<(String, Value)>,
}

impl ParsedStatus {
    /// Returns the set fields as `(item name, JSON value)` pairs.
    fn typed_items(&self) -> Result<Vec<(&'static str, Value)>, WireError> {
        use status_items::*;

        fn json<T: Serialize>(value: &T) -> Result<Value, WireError> {
            serde_json::to_value(value).map_err(|source| WireError::SerializeJson {
                context: "status item",
                source,
            })
        }

        let mut items = Vec::new();
        let strings = [
            (OS_VERSION, &self.os_version),
            (BUILD_VERSION, &self.build_version),
            (OS_FAMILY, &self.os_family),
            (OS_MARKETING_NAME, &self.os_marketing_name),
            (SUPPLEMENTAL_BUILD_VERSION, &self.supplemental_build_version),
            (SUPPLEMENTAL_EXTRA_VERSION, &self.supplemental_extra_version),
            (DEVICE_ID, &self.software_update_device_id),
            (BETA_ENROLLMENT, &self.beta_enrollment),
        ];
        for (name, value) in strings {
            if let Some(value) = value {
                items.push((name, Value::String(value.clone())));
            }
        }
        if let Some(state) = &self.install_state {
            items.push((INSTALL_STATE, Value::String(state.as_str().to_owned())));
        }
        if let Some(pending) = &self.pending_version {
            items.push((PENDING_VERSION, json(pending)?));
        }
        if let Some(failure) = &self.failure_reason {
            items.push((FAILURE_REASON, json(failure)?));
        }
        if let Some(reason) = &self.install_reason {
            items.push((INSTALL_REASON, json(reason)?));
        }
        if let Some(declarations) = &self.declarations {
            items.push((DECLARATIONS, json(declarations)?));
        }
        if let Some(capabilities) = &self.client_capabilities {
            items.push((CLIENT_CAPABILITIES, capabilities.clone()));
        }
        Ok(items)
    }
}

/// Parses a status report.
///
/// # Errors
///
/// Returns [`WireError::MalformedJson`] when `data` is not JSON, and
/// [`WireError::InvalidStatusReport`] when the root is not an object or
/// `StatusItems` is absent or not an object. Everything else that is odd
/// goes to [`ParsedStatus::unknown`].
pub fn parse_status_report(data: &[u8]) -> Result<ParsedStatus, WireError> {
    let root: Value = serde_json::from_slice(data).map_err(|source| WireError::MalformedJson {
        context: "status report",
        source,
    })?;
    let Value::Object(mut root) = root else {
        return Err(WireError::InvalidStatusReport {
            detail: format!("the root is {}, expected an object", json_kind(&root)),
        });
    };
    let items = match root.remove("StatusItems") {
        Some(Value::Object(items)) => items,
        Some(other) => {
            return Err(WireError::InvalidStatusReport {
                detail: format!("StatusItems is {}, expected an object", json_kind(&other)),
            });
        }
        None => {
            return Err(WireError::InvalidStatusReport {
                detail: "StatusItems is missing".to_owned(),
            });
        }
    };

    let mut status = ParsedStatus::default();
    for (key, value) in root {
        match (key.as_str(), value) {
            ("FullReport", Value::Bool(full)) => status.full_report = full,
            ("Errors", Value::Array(errors)) => {
                for (index, error) in errors.into_iter().enumerate() {
                    let path = format!("Errors[{index}]");
                    if let Some(error) =
                        decode_object::<StatusError>(&path, &error, &mut status.unknown)
                    {
                        status.errors.push(error);
                    }
                }
            }
            (_, value) => status.unknown.push((key, value)),
        }
    }
    walk_items("", &items, &mut status);
    Ok(status)
}

/// Visits the nested item tree. A path that names a known item is parsed,
/// and an object on the way to a known item is entered. Anything else is
/// unknown.
fn walk_items(prefix: &str, items: &Map<String, Value>, status: &mut ParsedStatus) {
    for (key, value) in items {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if let Some(name) = status_items::KNOWN.iter().find(|name| **name == path) {
            apply_item(name, value, status);
        } else if let (Value::Object(inner), true) = (value, leads_to_known_item(&path)) {
            walk_items(&path, inner, status);
        } else {
            status.unknown.push((path, value.clone()));
        }
    }
}

fn leads_to_known_item(path: &str) -> bool {
    status_items::KNOWN.iter().any(|name| {
        name.len() > path.len() && name.starts_with(path) && name.as_bytes()[path.len()] == b'.'
    })
}

fn apply_item(name: &'static str, value: &Value, status: &mut ParsedStatus) {
    use status_items::*;

    let unknown = &mut status.unknown;
    match name {
        OS_VERSION => status.os_version = string_item(name, value, unknown),
        BUILD_VERSION => status.build_version = string_item(name, value, unknown),
        OS_FAMILY => status.os_family = string_item(name, value, unknown),
        OS_MARKETING_NAME => status.os_marketing_name = string_item(name, value, unknown),
        SUPPLEMENTAL_BUILD_VERSION => {
            status.supplemental_build_version = string_item(name, value, unknown)
        }
        SUPPLEMENTAL_EXTRA_VERSION => {
            status.supplemental_extra_version = string_item(name, value, unknown)
        }
        DEVICE_ID => status.software_update_device_id = string_item(name, value, unknown),
        BETA_ENROLLMENT => status.beta_enrollment = string_item(name, value, unknown),
        INSTALL_STATE => {
            status.install_state = string_item(name, value, unknown).map(|state| {
                let state = InstallState::from_wire(&state);
                if state.is_unknown() {
                    unknown.push((name.to_owned(), value.clone()));
                }
                state
            });
        }
        PENDING_VERSION => status.pending_version = decode_object(name, value, unknown),
        FAILURE_REASON => status.failure_reason = decode_object(name, value, unknown),
        INSTALL_REASON => {
            let reason: Option<InstallReasonStatus> = decode_object(name, value, unknown);
            if let Some(reason) = &reason {
                for (index, item) in reason.reasons.iter().enumerate() {
                    if item.is_unknown() {
                        unknown.push((
                            format!("{name}.reason[{index}]"),
                            Value::String(item.as_str().to_owned()),
                        ));
                    }
                }
            }
            status.install_reason = reason;
        }
        DECLARATIONS => status.declarations = parse_declarations(name, value, unknown),
        CLIENT_CAPABILITIES => status.client_capabilities = Some(value.clone()),
        _ => unknown.push((name.to_owned(), value.clone())),
    }
}

fn string_item(path: &str, value: &Value, unknown: &mut Vec<(String, Value)>) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        other => {
            unknown.push((path.to_owned(), other.clone()));
            None
        }
    }
}

/// Decodes an object item as `T`. A value that does not decode goes to
/// `unknown` whole, and keys that `T` does not keep go to `unknown` one by
/// one.
fn decode_object<T: DeserializeOwned + Serialize>(
    path: &str,
    value: &Value,
    unknown: &mut Vec<(String, Value)>,
) -> Option<T> {
    let Value::Object(input) = value else {
        unknown.push((path.to_owned(), value.clone()));
        return None;
    };
    let Ok(decoded) = serde_json::from_value::<T>(value.clone()) else {
        unknown.push((path.to_owned(), value.clone()));
        return None;
    };
    // A key is kept when serializing the decoded value writes it back; this
    // finds extra keys without a hand-kept list of field names.
    if let Ok(Value::Object(kept)) = serde_json::to_value(&decoded) {
        for (key, item) in input {
            if !kept.contains_key(key) {
                unknown.push((format!("{path}.{key}"), item.clone()));
            }
        }
    }
    Some(decoded)
}

fn parse_declarations(
    path: &str,
    value: &Value,
    unknown: &mut Vec<(String, Value)>,
) -> Option<DeclarationsStatus> {
    let Value::Object(lists) = value else {
        unknown.push((path.to_owned(), value.clone()));
        return None;
    };
    let mut status = DeclarationsStatus::default();
    for (key, list) in lists {
        let list_path = format!("{path}.{key}");
        let target = match key.as_str() {
            "activations" => &mut status.activations,
            "configurations" => &mut status.configurations,
            "assets" => &mut status.assets,
            "management" => &mut status.management,
            _ => {
                unknown.push((list_path, list.clone()));
                continue;
            }
        };
        let Value::Array(elements) = list else {
            unknown.push((list_path, list.clone()));
            continue;
        };
        let mut parsed = Vec::with_capacity(elements.len());
        for (index, element) in elements.iter().enumerate() {
            let element_path = format!("{list_path}[{index}]");
            let Some(declaration) =
                decode_object::<DeclarationStatus>(&element_path, element, unknown)
            else {
                continue;
            };
            if declaration.valid.is_unknown() {
                unknown.push((
                    format!("{element_path}.valid"),
                    Value::String(declaration.valid.as_str().to_owned()),
                ));
            }
            parsed.push(declaration);
        }
        *target = Some(parsed);
    }
    Some(status)
}
