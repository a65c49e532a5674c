//! Applying device signals to a target, collecting everything one report
//! changes into a single store transaction.

use serde_json::{Value, json};

use super::Services;
use crate::domain::status::apply;
use crate::domain::{
    Actor, Device, EventType, Outcome, Signal, Target, TargetStatus, TransitionError,
};
use crate::ports::{Change, CommandWrite, DeviceContext, DeviceWrite, QueuedCommand, TargetWrite};

/// The device and target as read, with the changes one report makes.
pub struct Work {
    pub device: Device,
    device_revision: u64,
    device_changed: bool,
    pub target: Option<Target>,
    target_revision: u64,
    previous_status: TargetStatus,
    /// Whether the target had a report before this one, for [`Work::undo_mark_reported`].
    previously_reported: bool,
    target_changed: bool,
    pub commands: Vec<QueuedCommand>,
    pub events: Vec<crate::domain::Event>,
    pub command_writes: Vec<CommandWrite>,
}

impl Work {
    pub fn new(context: DeviceContext) -> Self {
        let target_revision = context.target.as_ref().map_or(0, |t| t.revision);
        let previous_status = context
            .target
            .as_ref()
            .map_or(TargetStatus::Pending, |t| t.status);
        let previously_reported = context.target.as_ref().is_some_and(|t| t.reported);
        Work {
            device_revision: context.device.revision,
            device: context.device,
            device_changed: false,
            target: context.target,
            target_revision,
            previous_status,
            previously_reported,
            target_changed: false,
            commands: context.commands,
            events: Vec::new(),
            command_writes: Vec::new(),
        }
    }

    pub fn device_mut(&mut self) -> &mut Device {
        self.device_changed = true;
        &mut self.device
    }

    pub fn target_mut(&mut self) -> Option<&mut Target> {
        self.target_changed = true;
        self.target.as_mut()
    }

    /// Returns the target when it is still active.
    pub fn active_target(&self) -> Option<&Target> {
        self.target.as_ref().filter(|t| !t.status.is_final())
    }

    pub fn event(
        &mut self,
        services: &Services,
        event_type: EventType,
        actor: Actor,
        details: Value,
    ) {
        let Some(target) = &self.target else { return };
        let event = services.event(
            &target.operation_id,
            Some(&self.device.udid),
            event_type,
            actor,
            details,
        );
        self.events.push(event);
    }

    pub fn put_command(&mut self, command: QueuedCommand) {
        self.command_writes.push(CommandWrite::Put(command));
    }

    /// Notes that the device reported something for its target, which
    /// decides Installed versus Obsolete later.
    pub fn mark_reported(&mut self) {
        if let Some(target) = &mut self.target
            && !target.reported
            && !target.status.is_final()
        {
            target.reported = true;
            self.target_changed = true;
        }
    }

    /// Takes back [`Work::mark_reported`] for a reply that carried no news
    /// about the update (a `ScheduleOSUpdate` that scheduled nothing), so that
    /// a device found on the target afterwards is still Obsolete.
    pub fn undo_mark_reported(&mut self) {
        if let Some(target) = &mut self.target
            && !self.previously_reported
            && target.status == TargetStatus::Pending
        {
            target.reported = false;
        }
    }

    /// Runs one signal the device reported through the state machine and
    /// records the result.
    pub fn apply(
        &mut self,
        services: &Services,
        signal: Signal,
        detail: Option<String>,
        extra: Value,
    ) {
        self.apply_as(services, signal, detail, extra, Actor::Device);
    }

    /// Runs one signal through the state machine and records the result,
    /// with `actor` on the events it writes.
    pub fn apply_as(
        &mut self,
        services: &Services,
        signal: Signal,
        detail: Option<String>,
        extra: Value,
        actor: Actor,
    ) {
        let now = services.now();
        let Some(target) = self.target.as_mut() else {
            return;
        };
        let outcome = apply(
            &target.progress(),
            &signal,
            &services.config.retry_policy,
            now,
        );
        match outcome {
            Ok(Outcome::Moved(change)) => {
                target.status = change.to;
                target.failures = change.failures;
                target.next_attempt_at = change.next_attempt_at;
                if let Some(error) = &change.error {
                    target.last_error = Some(error.clone());
                }
                if detail.is_some() {
                    target.detail = detail.clone();
                }
                target.reported = true;
                target.updated_at = now;
                let mut details = json!({
                    "from": change.from,
                    "to": change.to,
                    "signal": signal.name(),
                });
                if let Some(detail) = &detail {
                    details["detail"] = json!(detail);
                }
                if let Some(error) = &change.error {
                    let policy = services.config.retry_policy.for_reason(error);
                    details["error"] = json!(error);
                    details["reason"] = json!(error);
                    details["attempt"] = json!(change.failures);
                    details["max_attempts"] = json!(policy.max_attempts);
                    details["will_retry"] = json!(change.to == TargetStatus::Retry);
                }
                if let Some(at) = change.next_attempt_at {
                    details["next_attempt_at"] = json!(at);
                }
                if let (Value::Object(extra), Value::Object(map)) = (extra, &mut details) {
                    map.extend(extra);
                }
                let event = services.event(
                    &target.operation_id,
                    Some(&target.device_id),
                    match &change.error {
                        Some(reason) => EventType::for_failure(change.from, change.to, reason),
                        None => EventType::for_move(change.from, change.to),
                    },
                    actor,
                    details,
                );
                self.events.push(event);
                self.target_changed = true;
                if change.to.is_final()
                    && self.device.current_operation_id.as_deref()
                        == Some(target.operation_id.as_str())
                {
                    self.device.current_operation_id = None;
                    self.device_changed = true;
                }
            }
            Ok(Outcome::Duplicate) => {
                if let Some(detail) = detail
                    && target.detail.as_deref() != Some(detail.as_str())
                    && !target.status.is_final()
                {
                    target.detail = Some(detail);
                    target.updated_at = now;
                    self.target_changed = true;
                }
            }
            // The user started the install after the download: the status
            // stays where it is (User Approved ranks below Downloading), but
            // the approval is recorded so the trail shows who started it.
            Ok(Outcome::Stale)
                if signal == Signal::UserStarted
                    && !target.install_requested
                    && target.status != TargetStatus::Installing =>
            {
                let mut details = json!({
                    "from": target.status,
                    "to": target.status,
                    "signal": signal.name(),
                    "status_unchanged": true,
                });
                if let (Value::Object(extra), Value::Object(map)) = (extra, &mut details) {
                    map.extend(extra);
                }
                let event = services.event(
                    &target.operation_id,
                    Some(&target.device_id),
                    EventType::UserApproval,
                    Actor::Device,
                    details,
                );
                self.events.push(event);
            }
            Ok(Outcome::Stale) => {
                let details =
                    json!({ "reason": "stale", "signal": signal.name(), "status": target.status });
                let event = services.event(
                    &target.operation_id,
                    Some(&target.device_id),
                    EventType::ReportIgnored,
                    Actor::Device,
                    details,
                );
                self.events.push(event);
            }
            Ok(Outcome::NoChange) => {}
            Err(
                error @ (TransitionError::FinalStatus { .. } | TransitionError::NotAllowed { .. }),
            ) => {
                tracing::debug!(
                    operation_id = %target.operation_id,
                    device_id = %target.device_id,
                    error = %error,
                    "signal rejected by the state machine"
                );
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.device_changed
            && !self.target_changed
            && self.events.is_empty()
            && self.command_writes.is_empty()
    }

    /// Builds the transaction for everything recorded.
    pub fn into_change(self) -> Change {
        Change {
            device: self.device_changed.then(|| DeviceWrite {
                device: self.device.clone(),
                expected_revision: Some(self.device_revision),
            }),
            target: match (self.target_changed, self.target) {
                (true, Some(target)) => Some(TargetWrite {
                    target,
                    expected_revision: self.target_revision,
                    previous_status: self.previous_status,
                }),
                _ => None,
            },
            events: self.events,
            commands: self.command_writes,
        }
    }
}
