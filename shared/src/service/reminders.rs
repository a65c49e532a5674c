//! Reminders before an enforcement deadline.
//!
//! Creating an operation that enforces at a schedule with `reminders`
//! schedules one [`Job::Reminder`] per time zone and reminder instant
//! (computed by [`reminder_instants`], with wall-clock hours in the zone).
//! Instants already past at creation are skipped. Schedule ids are
//! `reminder:<operation id>:<zone>:<unix seconds>`, so scheduling again
//! replaces a schedule instead of adding one, and cancelling the operation
//! removes them with its other schedules.
//!
//! What a reminder does depends on the protocol:
//! - MDM macOS targets of the zone that still wait for the deadline (not
//!   installing, not user approved, InstallASAP not yet sent) get
//!   `ScheduleOSUpdate` with InstallAction `NotifyOnly`, which downloads the
//!   update and notifies the user, and a push. Each gets a `reminder_sent`
//!   event with channel `mdm_notify_only`.
//! - MDM iOS and iPadOS targets get no command: Apple documents `NotifyOnly`
//!   for macOS only, and no other InstallAction notifies without installing.
//!   The DownloadOnly sent at the start already puts the update in Settings.
//!   The zone's summary event counts them as `not_reminded`.
//! - DDM targets get nothing from the server, because the OS shows its own
//!   notifications before the declaration's TargetLocalDateTime. One
//!   `reminder_sent` event for the operation (no device) per zone and
//!   instant, with channel `os_notification`, keeps the reminder in the
//!   audit trail.
//!
//! NOTE: a job delivered twice (EventBridge Scheduler delivers at least
//! once) sends NotifyOnly and records the events twice.

use jiff::Timestamp;
use serde_json::json;

use super::jobs::JobReport;
use super::mdm::queue;
use super::{ServiceResult, Services};
use crate::apple::mdm::{Command, InstallAction, OsUpdateItem, ScheduleOsUpdate};
use crate::domain::deadline::{ZoneDeadline, deadline_instant, parse_time_zone};
use crate::domain::reminders::{ReminderInstant, reminder_instants};
use crate::domain::{
    Actor, EventType, InstallSettings, Operation, OperationState, Platform, Protocol, Target,
    TargetStatus,
};
use crate::ports::{Change, CommandWrite, Job, Schedule, TargetFilter};

/// Channel of a reminder sent as `ScheduleOSUpdate` NotifyOnly.
pub const CHANNEL_MDM_NOTIFY_ONLY: &str = "mdm_notify_only";
/// Channel of a reminder the OS shows itself (DDM enforcement).
pub const CHANNEL_OS_NOTIFICATION: &str = "os_notification";

/// Returns the stable schedule id of one reminder.
pub fn reminder_schedule_id(operation_id: &str, time_zone: &str, at: Timestamp) -> String {
    format!("reminder:{operation_id}:{time_zone}:{}", at.as_second())
}

/// Computes the reminder instants of an operation in one zone; empty for
/// install-immediately, for no reminders and for an unknown zone.
pub fn operation_reminders(operation: &Operation, time_zone: &str) -> Vec<ReminderInstant> {
    let InstallSettings::EnforceAtSchedule {
        local_date_time,
        reminders,
        ..
    } = &operation.install
    else {
        return Vec::new();
    };
    match parse_time_zone(time_zone) {
        Ok(zone) => reminder_instants(*local_date_time, &zone, reminders),
        Err(e) => {
            tracing::warn!(operation_id = %operation.id, time_zone, error = %e, "no reminders for an unknown time zone");
            Vec::new()
        }
    }
}

impl Services {
    /// Schedules the reminders of a new operation for each of its deadline
    /// zones, skipping instants at or before now. Returns how many it scheduled.
    pub(super) async fn schedule_reminders(
        &self,
        operation: &Operation,
        deadlines: &[ZoneDeadline],
    ) -> ServiceResult<usize> {
        let now = self.now();
        let mut scheduled = 0;
        for deadline in deadlines {
            for reminder in operation_reminders(operation, &deadline.zone_name) {
                if reminder.at <= now {
                    continue;
                }
                self.ports
                    .scheduler
                    .schedule(&Schedule {
                        id: reminder_schedule_id(&operation.id, &deadline.zone_name, reminder.at),
                        due_at: reminder.at,
                        job: Job::Reminder {
                            operation_id: operation.id.clone(),
                            time_zone: deadline.zone_name.clone(),
                            due_at: reminder.at,
                        },
                    })
                    .await?;
                scheduled += 1;
            }
        }
        Ok(scheduled)
    }

    /// Runs one reminder: NotifyOnly to waiting MDM Macs of the zone, or one
    /// audit event for a DDM operation. Cancelled and finished operations
    /// get nothing.
    pub(super) async fn run_reminder(
        &self,
        operation_id: &str,
        time_zone: &str,
        due_at: Timestamp,
    ) -> ServiceResult<JobReport> {
        let Some(operation) = self.ports.operations.get_operation(operation_id).await? else {
            return Ok(JobReport::default());
        };
        if matches!(
            operation.state,
            OperationState::Cancelled | OperationState::Finished
        ) {
            return Ok(JobReport::default());
        }
        let InstallSettings::EnforceAtSchedule {
            local_date_time, ..
        } = &operation.install
        else {
            return Ok(JobReport::default());
        };
        let deadline_at = parse_time_zone(time_zone)
            .ok()
            .map(|zone| deadline_instant(*local_date_time, &zone));
        let hours_before = operation_reminders(&operation, time_zone)
            .into_iter()
            .find(|r| r.at == due_at)
            .map(|r| r.hours_before);
        let details = ReminderDetails {
            due_at,
            time_zone,
            deadline_at,
            hours_before,
        };

        let targets = self
            .all_targets(
                operation_id,
                &TargetFilter {
                    time_zone: Some(time_zone.to_string()),
                    active_only: true,
                    ..Default::default()
                },
            )
            .await?;
        let waiting: Vec<Target> = targets.into_iter().filter(still_waiting).collect();

        let report = match operation.protocol {
            Protocol::Ddm => {
                let event = self.event(
                    operation_id,
                    None,
                    EventType::ReminderSent,
                    Actor::System,
                    details.json(CHANNEL_OS_NOTIFICATION, json!({ "devices": waiting.len() })),
                );
                self.ports.events.append(&[event]).await?;
                JobReport::default()
            }
            Protocol::Mdm => self.remind_mdm(&operation, waiting, &details).await?,
        };
        tracing::info!(operation_id = %operation_id, time_zone = %time_zone, due_at = %due_at, count = report.targets, "reminder sent");
        Ok(report)
    }

    async fn remind_mdm(
        &self,
        operation: &Operation,
        waiting: Vec<Target>,
        details: &ReminderDetails<'_>,
    ) -> ServiceResult<JobReport> {
        let (macs, others): (Vec<Target>, Vec<Target>) = waiting
            .into_iter()
            .partition(|t| t.platform == Platform::MacOs);
        let udids: Vec<String> = macs.iter().map(|t| t.device_id.clone()).collect();
        let mut devices = Vec::new();
        for chunk in udids.chunks(100) {
            devices.extend(self.ports.devices.get_devices(chunk).await?);
        }
        let now = self.now();
        let mut woken = Vec::new();
        for target in &macs {
            let Some(device) = devices.iter().find(|d| d.udid == target.device_id) else {
                continue;
            };
            if device.current_operation_id.as_deref() != Some(operation.id.as_str()) {
                continue;
            }
            let Some(command) = queue(
                self,
                &device.udid,
                Some(&operation.id),
                notify_only(target),
                now,
            ) else {
                continue;
            };
            let event = self.event(
                &operation.id,
                Some(&device.udid),
                EventType::ReminderSent,
                Actor::System,
                details.json(
                    CHANNEL_MDM_NOTIFY_ONLY,
                    json!({ "command_uuid": command.uuid, "request_type": command.request_type }),
                ),
            );
            // The command is queued without touching the target, so a
            // reminder never conflicts with a device report in flight.
            self.ports
                .devices
                .commit(Change {
                    events: vec![event],
                    commands: vec![CommandWrite::Put(command)],
                    ..Default::default()
                })
                .await?;
            woken.push(device.clone());
        }
        for chunk in woken.chunks(1000) {
            self.ports.push.push(chunk).await?;
        }
        if !others.is_empty() {
            let event = self.event(
                &operation.id,
                None,
                EventType::ReminderSent,
                Actor::System,
                details.json(
                    "none",
                    json!({
                        "reminded": woken.len(),
                        "not_reminded": others.len(),
                        "reason": "NotifyOnly is macOS only; iOS and iPadOS already list the downloaded update in Settings",
                    }),
                ),
            );
            self.ports.events.append(&[event]).await?;
        }
        Ok(JobReport {
            targets: woken.len(),
            ..JobReport::default()
        })
    }
}

/// Returns whether a target still waits for its deadline: not in a final
/// status, not installing, not started by the user and not yet sent InstallASAP.
fn still_waiting(target: &Target) -> bool {
    !target.status.is_final()
        && !matches!(
            target.status,
            TargetStatus::Installing | TargetStatus::UserApproved
        )
        && !target.install_requested
}

fn notify_only(target: &Target) -> Command {
    let action = InstallAction::NotifyOnly;
    let item = match &target.product_key {
        Some(key) => OsUpdateItem::for_product_key(key.clone(), action),
        None => OsUpdateItem::for_version(target.target_version.to_string(), action),
    };
    Command::ScheduleOsUpdate(ScheduleOsUpdate {
        updates: vec![item],
    })
}

/// The details every `reminder_sent` event of one reminder carries.
struct ReminderDetails<'a> {
    due_at: Timestamp,
    time_zone: &'a str,
    deadline_at: Option<Timestamp>,
    /// Wall-clock hours before the deadline; `None` when the operation's
    /// reminders no longer name this instant.
    hours_before: Option<u32>,
}

impl ReminderDetails<'_> {
    fn json(&self, channel: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut value = json!({
            "reminder_at": self.due_at,
            "time_zone": self.time_zone,
            "deadline_at": self.deadline_at,
            "hours_before_deadline": self.hours_before,
            "channel": channel,
        });
        if let (Some(object), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
            object.extend(extra);
        }
        value
    }
}
