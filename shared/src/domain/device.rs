//! Devices and groups.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::platform::{OsVersion, Platform};

/// The device's stage in the MDM enrollment handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentState {
    /// `Authenticate` received; the device has no push token yet.
    Authenticated,
    /// `TokenUpdate` received: the device is managed.
    Enrolled,
    /// `CheckOut` received: the device left management.
    CheckedOut,
}

/// A managed device, keyed by UDID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub udid: String,
    pub serial_number: Option<String>,
    pub name: Option<String>,
    /// Model identifier such as `Mac14,7` or `iPhone15,2`.
    pub model: Option<String>,
    /// Marketing model name such as "MacBook Pro".
    pub model_name: Option<String>,
    pub platform: Option<Platform>,
    pub os_version: Option<OsVersion>,
    pub build_version: Option<String>,
    pub supervised: Option<bool>,
    /// Identifier the device uses with Apple's update service (the board id on Macs).
    pub software_update_device_id: Option<String>,
    /// IANA zone from inventory (an administrator's PATCH, or iOS DeviceInformation).
    pub time_zone: Option<String>,
    pub enrollment: EnrollmentState,
    pub topic: Option<String>,
    /// APNs device token, hex. Secret-ish: never logged.
    pub push_token: Option<String>,
    /// Never logged.
    pub push_magic: Option<String>,
    /// Escrowed bootstrap token (Apple silicon Macs need it to install
    /// updates without a user). Never logged.
    pub bootstrap_token: Option<Vec<u8>>,
    /// Whether the device has synced declarations at least once.
    pub ddm_active: bool,
    pub enrolled_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// When the server last queued a DeviceInformation query for a device
    /// in no operation; `None` until the first such refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_requested_at: Option<Timestamp>,
    /// The running operation this device is in, if any.
    pub current_operation_id: Option<String>,
    /// Optimistic-concurrency version, bumped by every write.
    pub revision: u64,
}

/// The reason a device cannot take an update over a protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "code", content = "message")]
pub enum Incompatibility {
    /// macOS needs supervision for both ScheduleOSUpdate and the enforcement declaration.
    UnsupervisedMac(String),
    /// DDM enforcement needs macOS 14+ (supervised) or iOS/iPadOS 17+.
    DdmUnsupported(String),
    /// The device has not reported its platform, model or OS version yet.
    InventoryIncomplete(String),
}

impl Device {
    /// Returns whether the device can be enforced through the DDM declaration:
    /// macOS 14+ supervised, or iOS/iPadOS 17+.
    pub fn supports_ddm(&self) -> bool {
        match (self.platform, &self.os_version) {
            (Some(Platform::MacOs), Some(v)) => v.major() >= 14 && self.supervised == Some(true),
            (Some(Platform::Ios | Platform::IpadOs), Some(v)) => v.major() >= 17,
            _ => false,
        }
    }

    /// Returns why the device cannot be updated over `protocol`, or `None`.
    pub fn incompatibility(&self, protocol: super::Protocol) -> Option<Incompatibility> {
        let (Some(platform), Some(version)) = (self.platform, &self.os_version) else {
            return Some(Incompatibility::InventoryIncomplete(format!(
                "device {} has not reported its platform and OS version yet",
                self.udid
            )));
        };
        if platform == Platform::MacOs && self.supervised != Some(true) {
            return Some(Incompatibility::UnsupervisedMac(format!(
                "device {} is an unsupervised Mac: neither ScheduleOSUpdate nor the enforcement declaration works without supervision",
                self.udid
            )));
        }
        if protocol == super::Protocol::Ddm && !self.supports_ddm() {
            return Some(Incompatibility::DdmUnsupported(format!(
                "device {} runs {} {version}: DDM enforcement needs macOS 14 or later, or iOS and iPadOS 17 or later; use protocol \"mdm\"",
                self.udid,
                platform.marketing_name()
            )));
        }
        None
    }
}

/// A named set of devices with an optional time zone for its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub time_zone: Option<String>,
    pub created_at: Timestamp,
}
