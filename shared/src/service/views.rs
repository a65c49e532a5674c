//! JSON shapes the admin API returns.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::{Device, InstallSettings, Operation, Protocol, Target};

/// An operation as the console's overview shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OperationView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: crate::domain::OperationType,
    pub protocol: Protocol,
    pub state: crate::domain::OperationState,
    pub update: UpdateView,
    pub created_by: String,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub cancelled_at: Option<Timestamp>,
    /// Seconds since the start, up to the finish or cancellation.
    pub elapsed_seconds: Option<i64>,
    pub completed_devices: i64,
    pub total_devices: i64,
    pub counts: crate::domain::StatusCounts,
    pub installation: Value,
    pub can_cancel: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_unavailable_reason: Option<&'static str>,
    pub group_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpdateView {
    pub name: String,
    pub product_version: String,
    pub builds: Vec<String>,
    pub release_date: Option<jiff::civil::Date>,
    pub expires_at: Option<Timestamp>,
}

impl OperationView {
    pub fn new(operation: &Operation, now: Timestamp) -> Self {
        let end = operation
            .finished_at
            .or(operation.cancelled_at)
            .unwrap_or(now);
        let elapsed_seconds = operation
            .started_at
            .map(|start| end.duration_since(start).as_secs().max(0));
        let refusal = operation.cancel_refusal();
        OperationView {
            id: operation.id.clone(),
            kind: operation.kind,
            protocol: operation.protocol,
            state: operation.state,
            update: UpdateView {
                name: operation.update.name.clone(),
                product_version: operation.update.product_version.to_string(),
                builds: operation.update.builds.clone(),
                release_date: operation.update.release_date,
                expires_at: operation.update.expires_at,
            },
            created_by: operation.created_by.clone(),
            created_at: operation.created_at,
            started_at: operation.started_at,
            finished_at: operation.finished_at,
            cancelled_at: operation.cancelled_at,
            elapsed_seconds,
            completed_devices: operation.counts.completed(),
            total_devices: operation.counts.total(),
            counts: operation.counts,
            installation: installation_view(&operation.install, operation.protocol),
            can_cancel: refusal.is_none(),
            cancel_unavailable_reason: refusal,
            group_ids: operation.group_ids.clone(),
        }
    }
}

/// Renders the installation settings, with how each one reaches the devices.
pub fn installation_view(settings: &InstallSettings, protocol: Protocol) -> Value {
    let mut view = serde_json::to_value(settings).unwrap_or(Value::Null);
    if let (InstallSettings::EnforceAtSchedule { reminders, .. }, Value::Object(map)) =
        (settings, &mut view)
        && !reminders.is_empty()
    {
        let delivery = match protocol {
            Protocol::Mdm => {
                "the server sends a NotifyOnly nudge to macOS devices at each reminder"
            }
            Protocol::Ddm => {
                "devices show the OS's own deadline notifications; the server sends none"
            }
        };
        map.insert("reminder_delivery".into(), json!(delivery));
    }
    view
}

/// A device with the operation it is in.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    pub udid: String,
    pub serial_number: Option<String>,
    pub name: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub platform: Option<crate::domain::Platform>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub supervised: Option<bool>,
    pub ddm_capable: bool,
    pub time_zone: Option<String>,
    pub enrollment: crate::domain::EnrollmentState,
    pub bootstrap_token_escrowed: bool,
    pub enrolled_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub current_operation_id: Option<String>,
}

impl From<&Device> for DeviceView {
    fn from(device: &Device) -> Self {
        DeviceView {
            udid: device.udid.clone(),
            serial_number: device.serial_number.clone(),
            name: device.name.clone(),
            model: device.model.clone(),
            model_name: device.model_name.clone(),
            platform: device.platform,
            os_version: device.os_version.as_ref().map(|v| v.to_string()),
            build_version: device.build_version.clone(),
            supervised: device.supervised,
            ddm_capable: device.supports_ddm(),
            time_zone: device.time_zone.clone(),
            enrollment: device.enrollment,
            bootstrap_token_escrowed: device.bootstrap_token.is_some(),
            enrolled_at: device.enrolled_at,
            last_seen_at: device.last_seen_at,
            current_operation_id: device.current_operation_id.clone(),
        }
    }
}

/// One target row of an operation's device list.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    pub device_id: String,
    pub device_name: Option<String>,
    pub serial_number: Option<String>,
    pub status: crate::domain::TargetStatus,
    pub detail: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<Timestamp>,
    pub target_version: String,
    pub target_build: String,
    pub major_upgrade: bool,
    pub time_zone: Option<String>,
    pub zone_source: Option<crate::domain::ZoneSource>,
    pub deadline_at: Option<Timestamp>,
    pub target_local_date_time: Option<String>,
    pub group_ids: Vec<String>,
    pub updated_at: Timestamp,
    /// The device's last check-in; `None` when it was not read or the
    /// device record is gone.
    pub last_seen_at: Option<Timestamp>,
    /// Whether the target is not in a final status and its device has not
    /// checked in for longer than `ServiceConfig::silent_after`.
    pub stale: bool,
}

impl From<&Target> for TargetView {
    fn from(target: &Target) -> Self {
        TargetView {
            device_id: target.device_id.clone(),
            device_name: target.device_name.clone(),
            serial_number: target.serial_number.clone(),
            status: target.status,
            detail: target.detail.clone(),
            attempts: target.failures,
            last_error: target.last_error.clone(),
            next_attempt_at: target.next_attempt_at,
            target_version: target.target_version.to_string(),
            target_build: target.target_build.clone(),
            major_upgrade: target.major_upgrade,
            time_zone: target.time_zone.clone(),
            zone_source: target.zone_source,
            deadline_at: target.deadline_at,
            target_local_date_time: target
                .target_local_date_time
                .map(crate::domain::deadline::format_target_local_date_time),
            group_ids: target.group_ids.clone(),
            updated_at: target.updated_at,
            last_seen_at: None,
            stale: false,
        }
    }
}
