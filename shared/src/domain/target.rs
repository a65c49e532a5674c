//! Targets: one device in one operation.

use jiff::Timestamp;
use jiff::civil::DateTime;
use serde::{Deserialize, Serialize};

use super::deadline::ZoneSource;
use super::operation::Protocol;
use super::platform::{OsVersion, Platform};
use super::status::{Progress, TargetStatus};

/// One device in one operation, with everything the device endpoints need
/// to serve it without reading the operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub operation_id: String,
    pub device_id: String,
    pub protocol: Protocol,
    pub platform: Platform,
    pub status: TargetStatus,
    /// Human-readable detail of the latest change ("download 40%", an error).
    pub detail: Option<String>,
    /// Failed attempts so far.
    pub failures: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<Timestamp>,
    /// Whether the device has reported anything for this target.
    pub reported: bool,
    pub target_version: OsVersion,
    /// The build this device gets (one version can ship as several builds).
    pub target_build: String,
    /// Whether the update is a major upgrade for this device.
    pub major_upgrade: bool,
    /// Time zone the deadline is read in for this device, and where it came from.
    pub time_zone: Option<String>,
    pub zone_source: Option<ZoneSource>,
    /// The deadline instant for this device; `None` for install-immediately.
    pub deadline_at: Option<Timestamp>,
    /// DDM only: the `TargetLocalDateTime` this device is given.
    pub target_local_date_time: Option<DateTime>,
    /// MDM only: the ProductKey the device reported for the update.
    pub product_key: Option<String>,
    /// MDM only: whether the install instruction (InstallASAP) has been sent.
    pub install_requested: bool,
    /// MDM only: the newest command sent for this target; results for older
    /// commands are stale.
    pub last_command_uuid: Option<String>,
    /// DDM only: the failure count from the latest `softwareupdate.failure-reason`.
    pub device_failure_count: u32,
    /// The update expired before this device installed it, at this instant.
    pub expires_at: Option<Timestamp>,
    /// Copied from the device at creation, for lists, filters and search.
    pub device_name: Option<String>,
    pub serial_number: Option<String>,
    pub group_ids: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Optimistic-concurrency version, bumped by every write.
    pub revision: u64,
}

impl Target {
    /// The state-machine view of this target.
    pub fn progress(&self) -> Progress<'_> {
        Progress {
            status: self.status,
            failures: self.failures,
            reported: self.reported,
            target_version: &self.target_version,
            target_build: &self.target_build,
        }
    }
}
