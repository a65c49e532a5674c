//! Ground truth: what the simulator did to each device, and the final status
//! the server should give the device's target because of it.

use super::device::{Machine, at_or_above};
use super::profile::{DeviceRole, FailurePlan, TargetUpdate};

/// Failed attempts after which the server marks a target failed: the
/// default `RetryPolicy::max_attempts` of the server (3).
pub(crate) const SERVER_MAX_ATTEMPTS: u32 = 3;

/// The final status the device's target should reach, as the server's
/// target statuses spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExpectedStatus {
    Installed,
    Failed,
    Obsolete,
    Cancelled,
}

impl ExpectedStatus {
    /// Returns the server's name of the status, such as `installed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedStatus::Installed => "installed",
            ExpectedStatus::Failed => "failed",
            ExpectedStatus::Obsolete => "obsolete",
            ExpectedStatus::Cancelled => "cancelled",
        }
    }
}

/// Counts of what one device did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// HTTP requests sent, failed ones included.
    pub requests: u64,
    /// Requests that failed or got an HTTP error status.
    pub errors: u64,
    /// Command results other than Idle polls that the server accepted.
    pub commands_answered: u64,
    pub status_reports_sent: u64,
    /// DDM `tokens` requests.
    pub token_checks: u64,
    pub declarations_fetched: u64,
    /// Failures the device reported, MDM and DDM together.
    pub failures_injected: u32,
    pub not_nows: u32,
    pub user_early_installs: u32,
    /// Reboots onto a new OS version.
    pub updates_installed: u32,
}

/// Reports the server has received about the device's current target,
/// kept to predict the target's final status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TargetRecord {
    /// The update the device was last instructed to install.
    pub(crate) target: Option<TargetUpdate>,
    /// The instruction came as a DDM declaration. The server reads DDM
    /// status reports only for DDM targets.
    pub(crate) ddm: bool,
    /// The operation was cancelled before the server saw the install start.
    pub(crate) cancelled: bool,
    /// Failures the server has received for this target.
    pub(crate) failures_reported: u32,
    /// The server has received an `Installing` state.
    pub(crate) reported_installing: bool,
    /// The server has received an OS version at or above the target.
    pub(crate) reported_on_target: bool,
}

impl TargetRecord {
    /// Starts the record of a new target, forgetting the previous one.
    pub(crate) fn start(&mut self, target: TargetUpdate) {
        *self = TargetRecord {
            target: Some(target),
            ..TargetRecord::default()
        };
    }
}

/// One device's ground truth, as the demo compares it with the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTruth {
    pub udid: String,
    /// The update the device was instructed to install, or the scenario
    /// target for a device that already runs it.
    pub target: Option<TargetUpdate>,
    /// `None` for a device that is not in any operation yet, and for
    /// unsupervised Macs.
    pub expected: Option<ExpectedStatus>,
    /// Whether the server has received every report it needs to reach
    /// `expected`.
    pub settled: bool,
    pub counters: DeviceCounters,
}

/// A fact that reaches the server once the request carrying it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// A command result other than an Idle poll.
    CommandResult { not_now: bool },
    /// The install started.
    Installing,
    /// The device runs this OS version.
    OnTarget(String),
    /// The job has failed this many times.
    Failures(u32),
}

impl Machine {
    /// Records that the operation holding this device was cancelled. The target stays
    /// installed when the server already saw the install start, and failed
    /// when the server already gave up.
    pub(crate) fn cancel(&mut self) {
        match self.expected() {
            None => {
                if self.device.role == DeviceRole::Updatable {
                    self.record.start(self.scenario_target.clone());
                    self.record.cancelled = true;
                }
            }
            Some(ExpectedStatus::Obsolete | ExpectedStatus::Cancelled) => {}
            Some(_) => {
                let record = &self.record;
                let final_on_server = record.reported_installing
                    || record.reported_on_target
                    || record.failures_reported >= SERVER_MAX_ATTEMPTS;
                if !final_on_server {
                    self.record.cancelled = true;
                }
            }
        }
    }

    /// Returns the final status the server should give this device's target.
    pub(crate) fn expected(&self) -> Option<ExpectedStatus> {
        match self.device.role {
            DeviceRole::Unsupervised => return None,
            DeviceRole::AlreadyOnTarget if self.record.target.is_none() => {
                return Some(ExpectedStatus::Obsolete);
            }
            _ => {}
        }
        self.record.target.as_ref()?;
        let record = &self.record;
        if record.cancelled {
            return Some(ExpectedStatus::Cancelled);
        }
        if record.reported_on_target {
            return Some(ExpectedStatus::Installed);
        }
        if record.failures_reported >= SERVER_MAX_ATTEMPTS {
            return Some(ExpectedStatus::Failed);
        }
        match self.device.behaviour.failure {
            FailurePlan::Persistent(_) => Some(ExpectedStatus::Failed),
            _ => Some(ExpectedStatus::Installed),
        }
    }

    /// Returns whether the server has everything it needs to reach the
    /// expected status.
    pub(crate) fn settled(&self) -> bool {
        match self.expected() {
            None => false,
            Some(ExpectedStatus::Obsolete | ExpectedStatus::Cancelled) => true,
            Some(ExpectedStatus::Installed) => self.record.reported_on_target,
            Some(ExpectedStatus::Failed) => self.record.failures_reported >= SERVER_MAX_ATTEMPTS,
        }
    }

    pub(crate) fn truth(&self) -> DeviceTruth {
        let target = match (self.device.role, &self.record.target) {
            (_, Some(target)) => Some(target.clone()),
            (DeviceRole::AlreadyOnTarget, None) => Some(self.scenario_target.clone()),
            _ => None,
        };
        DeviceTruth {
            udid: self.device.udid.clone(),
            target,
            expected: self.expected(),
            settled: self.settled(),
            counters: self.counters.clone(),
        }
    }

    /// Notes that the server accepted a report of this device's state.
    pub(crate) fn delivered(&mut self, delivery: &Delivery) {
        match delivery {
            Delivery::CommandResult { not_now } => {
                self.counters.commands_answered += 1;
                if *not_now {
                    self.counters.not_nows += 1;
                }
            }
            Delivery::Installing => self.record.reported_installing = true,
            Delivery::OnTarget(version) => {
                let reached = self
                    .record
                    .target
                    .as_ref()
                    .is_some_and(|target| at_or_above(version, &target.version));
                if reached {
                    self.record.reported_on_target = true;
                }
            }
            Delivery::Failures(count) => {
                self.record.failures_reported = self.record.failures_reported.max(*count);
            }
        }
    }
}
