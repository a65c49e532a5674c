//! The sweep: starts the retries that are due and wakes or fails stalled
//! targets. The local loop runs it every few minutes, and on AWS a rule
//! fires `{"job":"sweep"}` periodically.
//!
//! The sweep reads through the store's lists, never the whole table: the
//! operations in progress, then each operation's targets one status at a
//! time (`targets_by_status` on DynamoDB).
//!
//! How the next attempt starts differs by protocol:
//! - MDM: the `ScheduleOSUpdate` is queued again (`InstallASAP` once the
//!   install was requested or the deadline passed, else the download) and
//!   the device is pushed, so it checks in and fetches the command.
//! - DDM: the enforcement declaration has not changed, and the device keeps
//!   enforcing it and retries the update by itself. The sweep queues a
//!   `DeclarativeManagement` command and pushes the device, so the device
//!   synchronizes its declarations and sends a fresh status report. Changing
//!   the declaration would make the device schedule the update from scratch,
//!   which is not what a retry after a transient failure needs.
//!
//! A target is stalled when it sits in an active status with no report (or,
//! when it waits in Approved, Downloaded or a DDM retry, no report since its
//! deadline) for longer than [`ServiceConfig::stall_push_after`](super::ServiceConfig):
//! its device is pushed at every sweep. After
//! [`ServiceConfig::stall_fail_after`](super::ServiceConfig) the sweep
//! counts a failed attempt with reason `stalled`, which moves the target to
//! Retry or, with the attempts used up, to Failed.

use jiff::Timestamp;
use serde_json::json;

use super::jobs::JobReport;
use super::mdm::{command_for_target, queue, retry_instruction};
use super::progress::Work;
use super::{ServiceResult, Services};
use crate::apple::mdm::{Command, DeclarativeManagementCommand};
use crate::domain::{
    Actor, Device, EventType, OperationState, Protocol, REASON_STALLED, Signal, Target,
    TargetStatus,
};
use crate::ports::{OperationFilter, PageRequest, StoreError, TargetFilter};

/// Statuses in which a target waits for the device to report progress.
/// Pending is left out: a device that never accepted the instruction has
/// not started an attempt.
const ACTIVE_STATUSES: [TargetStatus; 6] = [
    TargetStatus::Approved,
    TargetStatus::UserApproved,
    TargetStatus::Downloading,
    TargetStatus::Preparing,
    TargetStatus::Downloaded,
    TargetStatus::Installing,
];

/// Operations read per page.
const OPERATION_PAGE: usize = 100;

/// Devices per push call.
const PUSH_BATCH: usize = 1000;

/// Attempts at one target write before the sweep leaves it to the next run.
const WRITE_ATTEMPTS: usize = 5;

/// The sweep's decision for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    StartAttempt,
    Push,
    FailStalled,
    Nothing,
}

impl Services {
    /// Runs one sweep over every operation in progress.
    pub(super) async fn run_sweep(&self) -> ServiceResult<JobReport> {
        let now = self.now();
        let mut report = JobReport::default();
        let mut to_push: Vec<Device> = Vec::new();
        let mut stalled_ids: Vec<String> = Vec::new();

        for operation_id in self.operations_in_progress().await? {
            let mut candidates = self
                .all_targets(&operation_id, &by_status(TargetStatus::Retry))
                .await?;
            for status in ACTIVE_STATUSES {
                candidates.extend(self.all_targets(&operation_id, &by_status(status)).await?);
            }
            for target in candidates {
                match self.action_for(&target, now) {
                    Action::StartAttempt => {
                        if let Some(device) = self.start_next_attempt(&target).await? {
                            report.retried += 1;
                            report.targets += 1;
                            to_push.push(device);
                        }
                    }
                    Action::Push => stalled_ids.push(target.device_id.clone()),
                    Action::FailStalled => {
                        if self.fail_stalled(&target).await? {
                            report.stalled += 1;
                            report.targets += 1;
                        }
                    }
                    Action::Nothing => {}
                }
            }
        }

        for chunk in stalled_ids.chunks(PUSH_BATCH) {
            let devices = self.ports.devices.get_devices(chunk).await?;
            report.pushed += devices.len();
            to_push.extend(devices);
        }
        for chunk in to_push.chunks(PUSH_BATCH) {
            self.ports.push.push(chunk).await?;
        }
        tracing::info!(
            retried = report.retried,
            pushed = report.pushed,
            stalled = report.stalled,
            "sweep finished"
        );
        Ok(report)
    }

    /// Ids of the operations in progress, from the operations list.
    ///
    /// NOTE: the state is derived from the counts, so the list reads every
    /// operation not cancelled and filters afterwards: the cost of a sweep
    /// grows with the history of finished operations.
    async fn operations_in_progress(&self) -> ServiceResult<Vec<String>> {
        let filter = OperationFilter {
            states: vec![OperationState::InProgress],
            ..Default::default()
        };
        let mut ids = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .ports
                .operations
                .list_operations(
                    &filter,
                    &PageRequest {
                        limit: OPERATION_PAGE,
                        cursor,
                    },
                )
                .await?;
            ids.extend(page.items.into_iter().map(|operation| operation.id));
            cursor = page.next_cursor;
            if cursor.is_none() {
                return Ok(ids);
            }
        }
    }

    fn action_for(&self, target: &Target, now: Timestamp) -> Action {
        if target.status == TargetStatus::Retry
            && let Some(at) = target.next_attempt_at
        {
            return if at <= now {
                Action::StartAttempt
            } else {
                Action::Nothing
            };
        }
        // An active target, or one in Retry whose next attempt is under way.
        let quiet = now.duration_since(stall_clock_start(target));
        if quiet >= self.config.stall_fail_after {
            Action::FailStalled
        } else if quiet >= self.config.stall_push_after {
            Action::Push
        } else {
            Action::Nothing
        }
    }

    /// Starts the next attempt of a target in Retry and returns its device
    /// to push, or `None` when the target changed in the meantime.
    async fn start_next_attempt(&self, listed: &Target) -> ServiceResult<Option<Device>> {
        for _ in 0..WRITE_ATTEMPTS {
            let now = self.now();
            let Some(context) = self.ports.devices.load_context(&listed.device_id).await? else {
                return Ok(None);
            };
            let Some(target) = context
                .target
                .clone()
                .filter(|t| t.operation_id == listed.operation_id)
                .filter(|t| t.status == TargetStatus::Retry)
                .filter(|t| t.next_attempt_at.is_some_and(|at| at <= now))
            else {
                return Ok(None);
            };
            let mut work = Work::new(context);
            let command = self.queue_attempt_command(&mut work, &target, now);
            let Some(stored) = work.target_mut() else {
                return Ok(None);
            };
            stored.next_attempt_at = None;
            stored.updated_at = now;
            // An idle check-in that queued the MDM command already recorded
            // the retry event.
            let recorded = target.protocol == Protocol::Mdm && command.is_none();
            if !recorded {
                let policy = self
                    .config
                    .retry_policy
                    .for_reason(target.last_error.as_deref().unwrap_or_default());
                work.event(
                    self,
                    EventType::Retry,
                    Actor::System,
                    json!({
                        "attempt": target.failures + 1,
                        "max_attempts": policy.max_attempts,
                        "reason": target.last_error,
                        "last_error": target.last_error,
                        "due_at": target.next_attempt_at,
                        "protocol": target.protocol,
                        "command_uuid": command,
                    }),
                );
            }
            let device = work.device.clone();
            match self.ports.devices.commit(work.into_change()).await {
                Ok(_) => {
                    tracing::info!(operation_id = %target.operation_id, device_id = %target.device_id, attempt = target.failures + 1, "retry started");
                    return Ok(Some(device));
                }
                Err(StoreError::Conflict(message)) => {
                    tracing::debug!(device_id = %target.device_id, %message, "retrying the start of an attempt after a conflicting write");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Queues the command that makes the device try again, unless one is
    /// already waiting (an idle check-in may have queued it first). Returns
    /// the queued command's UUID.
    fn queue_attempt_command(
        &self,
        work: &mut Work,
        target: &Target,
        now: Timestamp,
    ) -> Option<String> {
        let (request_type, operation_id) = match target.protocol {
            Protocol::Mdm => ("ScheduleOSUpdate", Some(target.operation_id.as_str())),
            Protocol::Ddm => ("DeclarativeManagement", None),
        };
        let waiting = work
            .commands
            .iter()
            .any(|c| c.request_type == request_type && c.operation_id.as_deref() == operation_id);
        if waiting {
            return None;
        }
        let device = work.device.clone();
        let command = match target.protocol {
            Protocol::Mdm => {
                let stored = work.target_mut()?;
                command_for_target(self, &device, stored, retry_instruction(target, now), now)?
            }
            Protocol::Ddm => queue(
                self,
                &device.udid,
                None,
                Command::DeclarativeManagement(DeclarativeManagementCommand::default()),
                now,
            )?,
        };
        let uuid = command.uuid.clone();
        work.commands.push(command.clone());
        work.put_command(command);
        Some(uuid)
    }

    /// Counts a failed attempt with reason `stalled` for a target that has
    /// not reported for [`super::ServiceConfig::stall_fail_after`]. Returns
    /// whether the target changed.
    async fn fail_stalled(&self, listed: &Target) -> ServiceResult<bool> {
        for _ in 0..WRITE_ATTEMPTS {
            let now = self.now();
            let Some(context) = self.ports.devices.load_context(&listed.device_id).await? else {
                return Ok(false);
            };
            let Some(target) = context
                .target
                .clone()
                .filter(|t| t.operation_id == listed.operation_id)
            else {
                return Ok(false);
            };
            let quiet = now.duration_since(stall_clock_start(&target));
            let waiting_for_backoff =
                target.status == TargetStatus::Retry && target.next_attempt_at.is_some();
            if target.status.is_final()
                || waiting_for_backoff
                || quiet < self.config.stall_fail_after
            {
                return Ok(false);
            }
            let mut work = Work::new(context);
            let hours = quiet.as_secs() / 3600;
            work.apply_as(
                self,
                Signal::AttemptFailed {
                    reason: format!("{REASON_STALLED}: no report for {hours}h"),
                    retryable: true,
                },
                None,
                json!({ "stalled_status": target.status, "last_report_at": target.updated_at }),
                Actor::System,
            );
            if work.is_empty() {
                return Ok(false);
            }
            match self.ports.devices.commit(work.into_change()).await {
                Ok(outcome) => {
                    self.record_state_changes(&outcome.state_changes).await?;
                    tracing::info!(operation_id = %target.operation_id, device_id = %target.device_id, status = %target.status, hours, "stalled attempt counted as failed");
                    return Ok(true);
                }
                Err(StoreError::Conflict(message)) => {
                    tracing::debug!(device_id = %target.device_id, %message, "retrying a stalled target after a conflicting write");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }
}

/// Returns the instant from which a quiet target counts as stalled: its
/// last change, or its deadline for a target that waits for it. Before the
/// deadline an accepted or downloaded update has nothing to report.
fn stall_clock_start(target: &Target) -> Timestamp {
    // A DDM device retries by itself, and before the deadline it may wait
    // for it, so a DDM retry under way counts from the deadline too.
    let waits_for_deadline = match target.status {
        TargetStatus::Approved | TargetStatus::Downloaded => true,
        TargetStatus::Retry => target.protocol == Protocol::Ddm,
        _ => false,
    };
    match target.deadline_at {
        Some(deadline) if waits_for_deadline => target.updated_at.max(deadline),
        _ => target.updated_at,
    }
}

fn by_status(status: TargetStatus) -> TargetFilter {
    TargetFilter {
        status: Some(status),
        ..Default::default()
    }
}
