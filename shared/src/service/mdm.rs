//! MDM commands for targets, and what their results mean for the state machine.
//!
//! How an installation method maps onto MDM:
//! - enforce at a schedule: `ScheduleOSUpdate` with `DownloadOnly` when the
//!   operation starts (`InstallLater` on macOS when "add to catalog" is on,
//!   so the user can install early from Software Update), then
//!   `InstallASAP` at the deadline instant of the device's zone;
//! - install immediately: `InstallASAP` at once.
//!
//! Progress comes from `OSUpdateStatus` queries sent when the device checks
//! in idle, and the new version from a `DeviceInformation` query once the
//! device is installing (macOS does not put OSVersion in Authenticate).

use jiff::Timestamp;

use super::Services;
use crate::apple::mdm::{
    Command, CommandEnvelope, DeclarativeManagementCommand, DeviceInformation, InstallAction,
    OsUpdateItem, OsUpdateState, OsUpdateStatusResponse, ScheduleOsUpdate,
    ScheduleOsUpdateResponse, UpdateResult, UpdateResultAction, UpdateResultStatus,
};
use crate::domain::{Device, Platform, Signal, Target, TargetStatus};
use crate::ports::{CommandState, QueuedCommand};

/// The instruction the server sends a device for its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdmInstruction {
    /// Download now, install at the deadline.
    Download { add_to_catalog: bool },
    /// Install as soon as possible.
    InstallNow,
    /// Fetch declarations again (DDM operations).
    SyncDeclarations,
    /// Ask for download and install progress.
    StatusQuery,
    /// Ask for the OS version and inventory.
    VersionQuery,
}

/// Builds the queued command for an instruction and records it on the
/// target. `None` when the command cannot be encoded (logged).
pub fn command_for_target(
    services: &Services,
    device: &Device,
    target: &mut Target,
    instruction: MdmInstruction,
    now: Timestamp,
) -> Option<QueuedCommand> {
    let command = match instruction {
        MdmInstruction::Download { add_to_catalog } => {
            let action = if add_to_catalog && target.platform == Platform::MacOs {
                InstallAction::InstallLater
            } else {
                InstallAction::DownloadOnly
            };
            schedule_os_update(target, action)
        }
        MdmInstruction::InstallNow => {
            target.install_requested = true;
            schedule_os_update(target, InstallAction::InstallAsap)
        }
        MdmInstruction::SyncDeclarations => {
            Command::DeclarativeManagement(DeclarativeManagementCommand::default())
        }
        MdmInstruction::StatusQuery => Command::OsUpdateStatus,
        MdmInstruction::VersionQuery => {
            Command::DeviceInformation(DeviceInformation::rollout_queries())
        }
    };
    let queued = queue(
        services,
        &device.udid,
        Some(&target.operation_id),
        command,
        now,
    )?;
    target.last_command_uuid = Some(queued.uuid.clone());
    Some(queued)
}

/// Picks the instruction that starts the next attempt of a target in Retry:
/// the install itself once it was requested or its deadline passed (or when
/// the operation installs immediately), else the download again.
pub fn retry_instruction(target: &Target, now: Timestamp) -> MdmInstruction {
    let deadline_passed = target.deadline_at.is_none_or(|at| at <= now);
    if target.install_requested || deadline_passed {
        MdmInstruction::InstallNow
    } else {
        MdmInstruction::Download {
            add_to_catalog: false,
        }
    }
}

fn schedule_os_update(target: &Target, action: InstallAction) -> Command {
    let item = match &target.product_key {
        Some(key) => OsUpdateItem::for_product_key(key.clone(), action),
        None => OsUpdateItem::for_version(target.target_version.to_string(), action),
    };
    Command::ScheduleOsUpdate(ScheduleOsUpdate {
        updates: vec![item],
    })
}

/// Encodes a command as a queued command with a fresh CommandUUID.
/// Returns a queued DeviceInformation query for the OS version, build and
/// model fields the rollout reads, as sent at enrollment and by the daily
/// inventory refresh.
pub fn inventory_query(services: &Services, udid: &str, now: Timestamp) -> Option<QueuedCommand> {
    queue(
        services,
        udid,
        None,
        Command::DeviceInformation(DeviceInformation::rollout_queries()),
        now,
    )
}

pub fn queue(
    services: &Services,
    udid: &str,
    operation_id: Option<&str>,
    command: Command,
    now: Timestamp,
) -> Option<QueuedCommand> {
    let uuid = services.ids.ulid(now);
    let request_type = command.request_type().to_string();
    let envelope = CommandEnvelope::new(uuid.clone(), command);
    match envelope.to_plist_xml() {
        Ok(body) => Some(QueuedCommand {
            uuid,
            device_id: udid.to_string(),
            operation_id: operation_id.map(str::to_string),
            request_type,
            body,
            state: CommandState::Queued,
            created_at: now,
        }),
        Err(e) => {
            tracing::error!(device_id = %udid, request_type = %request_type, error = %e, "could not encode MDM command");
            None
        }
    }
}

/// Signals from a `ScheduleOSUpdate` result, with the ProductKey the device chose.
pub fn schedule_result_signals(
    target: &Target,
    response: &ScheduleOsUpdateResponse,
) -> (Vec<Signal>, Option<String>, bool) {
    let Some(result) = pick_update_result(target, &response.update_results) else {
        // Nothing scheduled: the device may already run the target.
        return (Vec::new(), None, true);
    };
    let product_key = Some(result.product_key.clone());
    if result.install_action == UpdateResultAction::Error {
        let signal = Signal::AttemptFailed {
            reason: format!(
                "ScheduleOSUpdate InstallAction Error, Status {}",
                result.status.as_str()
            ),
            retryable: false,
        };
        return (vec![signal], product_key, false);
    }
    let signals = match &result.status {
        UpdateResultStatus::Idle | UpdateResultStatus::Downloading => vec![Signal::Accepted],
        // Installing before InstallASAP was sent: the user started it.
        UpdateResultStatus::Installing if !target.install_requested => {
            vec![Signal::Accepted, Signal::UserStarted, Signal::Installing]
        }
        UpdateResultStatus::Installing => vec![Signal::Accepted, Signal::Installing],
        UpdateResultStatus::DownloadRequiresComputer
        | UpdateResultStatus::DownloadInsufficientSpace
        | UpdateResultStatus::DownloadInsufficientPower
        | UpdateResultStatus::DownloadInsufficientNetwork
        | UpdateResultStatus::InstallInsufficientSpace
        | UpdateResultStatus::InstallInsufficientPower
        | UpdateResultStatus::InstallPhoneCallInProgress => vec![Signal::AttemptFailed {
            reason: result.status.as_str().to_string(),
            retryable: true,
        }],
        UpdateResultStatus::DownloadFailed | UpdateResultStatus::InstallFailed => {
            vec![Signal::AttemptFailed {
                reason: result.status.as_str().to_string(),
                retryable: false,
            }]
        }
        UpdateResultStatus::Unknown(_) => Vec::new(),
    };
    (signals, product_key, false)
}

fn pick_update_result<'a>(
    target: &Target,
    results: &'a [UpdateResult],
) -> Option<&'a UpdateResult> {
    results
        .iter()
        .find(|r| matches_update(target, &r.product_key))
        .or_else(|| results.first())
}

/// Whether a ProductKey names the target's update: the key the device gave
/// before, or one that carries the target build or version.
fn matches_update(target: &Target, product_key: &str) -> bool {
    match &target.product_key {
        Some(key) => key == product_key,
        None => {
            product_key.contains(target.target_build.as_str())
                || product_key.contains(target.target_version.as_str())
        }
    }
}

/// The reading of an `OSUpdateStatus` result for the target.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusReading {
    Signals(Vec<Signal>, String),
    /// The update is not listed: the device installed it or dropped it.
    Vanished,
    NothingNew,
}

/// Returns the progress an `OSUpdateStatus` result gives for the target's
/// update, for the details of the event a status move records:
/// `download_percent` (0 to 100, from `DownloadPercentComplete` 0.0 to
/// 1.0), `is_downloaded` and the device's `os_update_status`. MDM reports
/// no install percentage. Empty when the update is not listed.
pub fn status_progress(target: &Target, response: &OsUpdateStatusResponse) -> serde_json::Value {
    let Some(item) = response
        .os_update_status
        .iter()
        .find(|item| matches_update(target, &item.product_key))
    else {
        return serde_json::json!({});
    };
    let percent = (item.download_percent_complete.clamp(0.0, 1.0) * 100.0).round() as i64;
    serde_json::json!({
        "download_percent": percent,
        "is_downloaded": item.is_downloaded,
        "os_update_status": item.status.as_str(),
    })
}

pub fn status_result_reading(target: &Target, response: &OsUpdateStatusResponse) -> StatusReading {
    let item = response
        .os_update_status
        .iter()
        .find(|item| matches_update(target, &item.product_key));
    let Some(item) = item else {
        return if response.os_update_status.is_empty()
            || target.product_key.is_some()
            || target.status != TargetStatus::Pending
        {
            StatusReading::Vanished
        } else {
            StatusReading::NothingNew
        };
    };
    let percent = (item.download_percent_complete * 100.0).round();
    match &item.status {
        OsUpdateState::Downloading
            if item.is_downloaded || item.download_percent_complete >= 1.0 =>
        {
            StatusReading::Signals(vec![Signal::Preparing], "downloaded, preparing".into())
        }
        OsUpdateState::Downloading => {
            StatusReading::Signals(vec![Signal::Downloading], format!("download {percent}%"))
        }
        OsUpdateState::Idle if item.is_downloaded => StatusReading::Signals(
            vec![Signal::Downloaded],
            "downloaded, ready to install".into(),
        ),
        OsUpdateState::Installing if !target.install_requested => StatusReading::Signals(
            vec![Signal::UserStarted, Signal::Installing],
            "installing, started by the user".into(),
        ),
        OsUpdateState::Installing => {
            StatusReading::Signals(vec![Signal::Installing], "installing".into())
        }
        OsUpdateState::Idle | OsUpdateState::Unknown(_) => StatusReading::NothingNew,
    }
}
