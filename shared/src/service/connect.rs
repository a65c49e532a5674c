//! The MDM server URL (`PUT /mdm/connect`): command results in, next command out.

use serde_json::json;

use super::mdm::{
    MdmInstruction, StatusReading, command_for_target, schedule_result_signals,
    status_result_reading,
};
use super::progress::Work;
use super::user_initiated::{InstallSource, UserInstall, find_user_install};
use super::{ServiceError, ServiceResult, Services};
use crate::apple::UnknownValue;
use crate::apple::mdm::{CommandResponse, CommandResult, CommandStatus, parse_result};
use crate::domain::{
    Actor, EnrollmentState, EventType, OsVersion, Platform, Protocol, Signal, TargetStatus,
};
use crate::ports::{CommandState, CommandWrite, DeviceContext, QueuedCommand, StoreError};

/// Request types whose results are recorded as audit events; status and
/// inventory polls are not, or they would drown the trail.
const AUDITED_COMMANDS: &[&str] = &["ScheduleOSUpdate", "DeclarativeManagement"];

/// Finds an install the user started outside any running operation in an
/// acknowledged DeviceInformation result that this server asked for.
fn mdm_user_install(context: &DeviceContext, result: &CommandResult) -> Option<UserInstall> {
    if result.status != CommandStatus::Acknowledged {
        return None;
    }
    let uuid = result.command_uuid.as_deref()?;
    let requested = context
        .commands
        .iter()
        .any(|c| c.uuid == uuid && c.request_type == "DeviceInformation");
    if !requested {
        return None;
    }
    let answers = result.device_information().ok()??.query_responses;
    let version = answers.os_version.as_deref()?.parse::<OsVersion>().ok()?;
    find_user_install(
        context,
        Some((&version, answers.build_version.as_deref())),
        None,
        InstallSource::MdmDeviceInformation,
    )
}

impl Services {
    /// Handles one command result and returns the next command's plist, or
    /// `None` for an empty response.
    pub async fn handle_connect(&self, body: &[u8]) -> ServiceResult<Option<Vec<u8>>> {
        let result = parse_result(body).map_err(|e| ServiceError::BadDeviceInput {
            message: e.to_string(),
        })?;
        let Some(udid) = result.udid.clone() else {
            return Err(ServiceError::BadDeviceInput {
                message: "command result has no UDID; user enrollments are not supported".into(),
            });
        };
        for _ in 0..5 {
            let Some(context) = self.ports.devices.load_context(&udid).await? else {
                return Err(ServiceError::not_enrolled(&udid));
            };
            if context.device.enrollment != EnrollmentState::Enrolled {
                return Err(ServiceError::not_enrolled(&udid));
            }
            let user_install = mdm_user_install(&context, &result);
            let mut work = Work::new(context);
            if result.status != CommandStatus::Idle {
                self.record_result(&mut work, &result);
            }
            let next = self.next_command(&mut work, result.status == CommandStatus::Idle);
            let reply = next.as_ref().map(|c| c.body.clone());
            if work.is_empty() {
                self.note_seen(&udid);
                return Ok(reply);
            }
            self.note_seen(&udid);
            match self.ports.devices.commit(work.into_change()).await {
                Ok(outcome) => {
                    self.record_state_changes(&outcome.state_changes).await?;
                    if let Some(install) = user_install {
                        self.record_user_install(install).await?;
                    }
                    return Ok(reply);
                }
                Err(StoreError::Conflict(message)) => {
                    tracing::debug!(device_id = %udid, %message, "retrying a command result after a conflicting write");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Conflict {
            code: "busy",
            message: format!(
                "device {udid} changed repeatedly while its result was recorded; send it again"
            ),
        })
    }

    fn record_result(&self, work: &mut Work, result: &CommandResult) {
        let udid = work.device.udid.clone();
        let Some(uuid) = result.command_uuid.clone() else {
            tracing::debug!(device_id = %udid, "result without CommandUUID ignored");
            return;
        };
        let Some(command) = work.commands.iter().find(|c| c.uuid == uuid).cloned() else {
            // A repeated result for a command already removed, or a command this
            // server never sent.
            tracing::debug!(device_id = %udid, command_uuid = %uuid, "ignored a result for an unknown or already removed command");
            return;
        };
        let for_target = work
            .target
            .as_ref()
            .is_some_and(|t| command.operation_id.as_deref() == Some(t.operation_id.as_str()));
        let stale = for_target
            && work
                .target
                .as_ref()
                .and_then(|t| t.last_command_uuid.as_deref())
                .is_some_and(|latest| uuid.as_str() < latest);
        let audited = AUDITED_COMMANDS.contains(&command.request_type.as_str());

        if result.status == CommandStatus::NotNow {
            let mut again = command.clone();
            again.state = CommandState::NotNow;
            work.command_writes.push(CommandWrite::Put(again));
            if for_target && audited {
                work.event(
                    self,
                    EventType::CommandNotNow,
                    Actor::Device,
                    json!({ "command_uuid": uuid, "request_type": command.request_type }),
                );
            }
            return;
        }
        work.command_writes.push(CommandWrite::Remove {
            device_id: udid.clone(),
            uuid: uuid.clone(),
        });
        if work.device.platform.is_none() || command.request_type == "DeviceInformation" {
            self.record_inventory(work, result);
        }
        if !for_target {
            return;
        }
        if stale {
            work.event(
                self,
                EventType::ReportIgnored,
                Actor::Device,
                json!({ "reason": "stale", "command_uuid": uuid, "request_type": command.request_type }),
            );
            return;
        }
        // A DeviceInformation result decides Installed versus Obsolete by
        // itself, so it does not count as an earlier report.
        if command.request_type != "DeviceInformation" {
            work.mark_reported();
        }
        match &result.status {
            CommandStatus::Acknowledged => {
                if audited {
                    work.event(
                        self,
                        EventType::CommandAcknowledged,
                        Actor::Device,
                        json!({ "command_uuid": uuid, "request_type": command.request_type }),
                    );
                }
                self.record_acknowledged(work, &command, result);
            }
            CommandStatus::Error | CommandStatus::CommandFormatError => {
                let chain: Vec<String> = result
                    .error_chain()
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}: {}",
                            e.error_domain.as_deref().unwrap_or("?"),
                            e.error_code.map(|c| c.to_string()).unwrap_or_default(),
                            e.localized_description.as_deref().unwrap_or("")
                        )
                    })
                    .collect();
                work.event(
                    self,
                    EventType::CommandError,
                    Actor::Device,
                    json!({ "command_uuid": uuid, "request_type": command.request_type, "status": result.status.as_str(), "error_chain": chain }),
                );
                if command.request_type == "ScheduleOSUpdate" {
                    let reason = format!(
                        "ScheduleOSUpdate {}: {}",
                        result.status.as_str(),
                        chain.join("; ")
                    );
                    work.apply(
                        self,
                        Signal::AttemptFailed {
                            reason,
                            retryable: false,
                        },
                        None,
                        json!({ "command_uuid": uuid }),
                    );
                }
            }
            CommandStatus::Unknown(value) => {
                work.event(
                    self,
                    EventType::UnknownValue,
                    Actor::Device,
                    json!({ "key": "Status", "value": value, "command_uuid": uuid }),
                );
            }
            CommandStatus::Idle | CommandStatus::NotNow => {}
        }
    }

    fn record_acknowledged(
        &self,
        work: &mut Work,
        command: &QueuedCommand,
        result: &CommandResult,
    ) {
        self.record_unknown_values(work, result.unknown_values());
        match command.request_type.as_str() {
            "ScheduleOSUpdate" => {
                let Ok(Some(response)) = result.schedule_os_update() else {
                    return;
                };
                self.record_unknown_values(work, response.unknown_values());
                let Some(target) = work.target.clone() else {
                    return;
                };
                let (signals, product_key, nothing_scheduled) =
                    schedule_result_signals(&target, &response);
                if let Some(key) = product_key
                    && target.product_key.as_deref() != Some(key.as_str())
                    && let Some(target) = work.target_mut()
                {
                    target.product_key = Some(key);
                }
                let waiting = matches!(target.status, TargetStatus::Pending | TargetStatus::Retry);
                for signal in signals {
                    // An instruction accepted while the device already made
                    // progress (InstallASAP after a download) is no news.
                    if signal == Signal::Accepted && !waiting {
                        continue;
                    }
                    work.apply(self, signal, None, json!({ "command_uuid": command.uuid }));
                }
                if nothing_scheduled {
                    work.undo_mark_reported();
                    self.queue_for_target(work, MdmInstruction::VersionQuery);
                }
            }
            "OSUpdateStatus" => {
                let Ok(Some(response)) = result.os_update_status() else {
                    return;
                };
                self.record_unknown_values(work, response.unknown_values());
                let Some(target) = work.target.clone() else {
                    return;
                };
                match status_result_reading(&target, &response) {
                    StatusReading::Signals(signals, detail) => {
                        let progress = super::mdm::status_progress(&target, &response);
                        for signal in signals {
                            work.apply(self, signal, Some(detail.clone()), progress.clone());
                        }
                    }
                    StatusReading::Vanished => {
                        if target.install_requested || target.status == TargetStatus::Installing {
                            self.queue_for_target(work, MdmInstruction::VersionQuery);
                        } else if matches!(
                            target.status,
                            TargetStatus::Downloading
                                | TargetStatus::Preparing
                                | TargetStatus::Downloaded
                        ) {
                            work.apply(
                                self,
                                Signal::AttemptFailed {
                                    reason: format!("{}: the update is no longer listed by the device before it was installed", crate::domain::REASON_UPDATE_VANISHED),
                                    retryable: true,
                                },
                                None,
                                json!({}),
                            );
                        } else {
                            self.queue_for_target(work, MdmInstruction::VersionQuery);
                        }
                    }
                    StatusReading::NothingNew => {}
                }
            }
            "DeviceInformation" => {
                let version = work.device.os_version.clone();
                let build = work.device.build_version.clone();
                if let Some(version) = version
                    && work.active_target().is_some()
                {
                    work.apply(self, Signal::Running { version, build }, None, json!({}));
                }
            }
            _ => {}
        }
    }

    /// Records values outside the known sets as `unknown_value` events, so
    /// that a newer OS's statuses show in the trail instead of vanishing.
    fn record_unknown_values(&self, work: &mut Work, unknown: Vec<UnknownValue>) {
        for unknown in unknown {
            work.event(
                self,
                EventType::UnknownValue,
                Actor::Device,
                json!({ "key": unknown.path, "value": unknown.value }),
            );
        }
    }

    /// Copies inventory from a result carrying `QueryResponses` and, the
    /// first time a DDM-capable device reports, turns on declarative management.
    fn record_inventory(&self, work: &mut Work, result: &CommandResult) {
        let Ok(Some(info)) = result.device_information() else {
            return;
        };
        let answers = info.query_responses;
        let first_report = work.device.os_version.is_none();
        let device = work.device_mut();
        if let Some(version) = answers
            .os_version
            .as_deref()
            .and_then(|v| v.parse::<OsVersion>().ok())
        {
            device.os_version = Some(version);
        }
        if answers.build_version.is_some() {
            device.build_version = answers.build_version.clone();
        }
        let model = answers.product_name.clone().or(answers.model.clone());
        if let Some(model) = model.filter(|m| Platform::from_model_identifier(m).is_some()) {
            device.platform = Platform::from_model_identifier(&model);
            device.model = Some(model);
        }
        if answers.model_name.is_some() {
            device.model_name = answers.model_name.clone();
        }
        if answers.serial_number.is_some() {
            device.serial_number = answers.serial_number.clone();
        }
        if answers.device_name.is_some() {
            device.name = answers.device_name.clone();
        }
        if answers.is_supervised.is_some() {
            device.supervised = answers.is_supervised;
        }
        if answers.software_update_device_id.is_some() {
            device.software_update_device_id = answers.software_update_device_id.clone();
        }
        if let Some(zone) = answers.time_zone.as_deref()
            && crate::domain::deadline::parse_time_zone(zone).is_ok()
        {
            device.time_zone = Some(zone.to_string());
        }
        if first_report && work.device.supports_ddm() && !work.device.ddm_active {
            let now = self.now();
            let udid = work.device.udid.clone();
            let command = crate::apple::mdm::Command::DeclarativeManagement(Default::default());
            if let Some(queued) = super::mdm::queue(self, &udid, None, command, now) {
                work.commands.push(queued.clone());
                work.put_command(queued);
            }
        }
    }

    fn queue_for_target(&self, work: &mut Work, instruction: MdmInstruction) {
        let now = self.now();
        let device = work.device.clone();
        let Some(target) = work.target_mut() else {
            return;
        };
        if let Some(command) = command_for_target(self, &device, target, instruction, now) {
            work.commands.push(command.clone());
            work.put_command(command);
        }
    }

    /// Picks the command to send next and marks it sent. On an idle check-in
    /// NotNow commands become eligible again, and an MDM target with nothing
    /// queued gets a progress or version query, or its retry when it is due.
    fn next_command(&self, work: &mut Work, idle: bool) -> Option<QueuedCommand> {
        let answered: Vec<String> = work
            .command_writes
            .iter()
            .filter_map(|w| match w {
                CommandWrite::Remove { uuid, .. } => Some(uuid.clone()),
                CommandWrite::Put(c) if c.state == CommandState::NotNow => Some(c.uuid.clone()),
                CommandWrite::Put(_) => None,
            })
            .collect();
        let eligible = |c: &QueuedCommand| {
            !answered.contains(&c.uuid)
                && match c.state {
                    CommandState::Queued => true,
                    CommandState::Sent => idle,
                    CommandState::NotNow => idle,
                }
        };
        if !work.commands.iter().any(eligible) && idle {
            self.plan_poll(work);
            if !work.commands.iter().any(eligible) {
                self.plan_inventory_refresh(work);
            }
        }
        let mut next = work.commands.iter().find(|c| eligible(c)).cloned()?;
        if next.state != CommandState::Sent {
            next.state = CommandState::Sent;
            work.command_writes.push(CommandWrite::Put(next.clone()));
        }
        Some(next)
    }

    /// Queues a DeviceInformation query for an idle device in no operation
    /// once [`super::ServiceConfig::inventory_refresh_every`] has passed
    /// since enrollment or the last refresh. Its result updates the
    /// inventory and records an update the user installed on their own as a
    /// user-initiated operation, which MDM reports nowhere else.
    fn plan_inventory_refresh(&self, work: &mut Work) {
        if work.active_target().is_some() {
            return;
        }
        let now = self.now();
        let last = work
            .device
            .inventory_requested_at
            .unwrap_or(work.device.enrolled_at);
        if now < last + self.config.inventory_refresh_every {
            return;
        }
        let udid = work.device.udid.clone();
        let Some(command) = super::mdm::inventory_query(self, &udid, now) else {
            return;
        };
        work.device_mut().inventory_requested_at = Some(now);
        work.commands.push(command.clone());
        work.put_command(command);
    }

    fn plan_poll(&self, work: &mut Work) {
        let now = self.now();
        let Some(target) = work.active_target().cloned() else {
            return;
        };
        if target.protocol != Protocol::Mdm {
            return;
        }
        let pending_for_target = work
            .commands
            .iter()
            .any(|c| c.operation_id.as_deref() == Some(target.operation_id.as_str()));
        if pending_for_target {
            return;
        }
        match target.status {
            TargetStatus::Retry => {
                if target.next_attempt_at.is_some_and(|at| at <= now) {
                    let deadline_passed = target.deadline_at.is_some_and(|at| at <= now);
                    let instruction = if target.install_requested
                        || deadline_passed
                        || target.deadline_at.is_none()
                    {
                        MdmInstruction::InstallNow
                    } else {
                        let add_to_catalog = false;
                        MdmInstruction::Download { add_to_catalog }
                    };
                    work.event(
                        self,
                        EventType::Retry,
                        Actor::System,
                        json!({ "attempt": target.failures + 1, "last_error": target.last_error }),
                    );
                    self.queue_for_target(work, instruction);
                }
            }
            TargetStatus::Installing => self.queue_for_target(work, MdmInstruction::VersionQuery),
            // Pending with nothing queued: the device replied to the instruction with
            // a value this server does not know, so ask where the device is.
            _ => self.queue_for_target(work, MdmInstruction::StatusQuery),
        }
    }
}
