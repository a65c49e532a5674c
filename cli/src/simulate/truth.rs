//! Ground truth: what the simulator did to each device, and the final status
//! the server should give the device's target because of it.

use super::mix::TargetUpdate;

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

/// What the server has been told about the device's current target, kept
/// to predict the target's final status.
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
    pub(crate) told_installing: bool,
    /// The server has received an OS version at or above the target.
    pub(crate) told_on_target: bool,
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
