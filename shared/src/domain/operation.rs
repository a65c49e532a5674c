//! Operations: one update, one protocol, a set of targets and an installation method.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::DateTime;
use serde::{Deserialize, Serialize};

use super::platform::{OsVersion, Platform};
use super::status::TargetStatus;

/// The origin of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationType {
    /// Created by an administrator.
    AdminInitiated,
    /// Recorded when a user installed a version no running operation gave the device.
    UserInitiated,
    /// Imported from another management tool or an earlier deployment.
    Migrated,
}

/// The device-management protocol an operation speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Declarative Device Management: the enforcement declaration.
    Ddm,
    /// Legacy MDM commands: ScheduleOSUpdate and friends.
    Mdm,
}

/// Lifecycle of an operation, derived from its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// Created; no device has acted on it yet.
    Scheduled,
    /// At least one device has moved past Pending.
    InProgress,
    /// Every target it still lists is in a final status.
    Finished,
    /// Cancelled by an administrator.
    Cancelled,
}

macro_rules! snake_case_text {
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        "unknown value {other:?}: expected one of {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

snake_case_text!(OperationType {
    AdminInitiated => "admin_initiated",
    UserInitiated => "user_initiated",
    Migrated => "migrated",
});
snake_case_text!(Protocol { Ddm => "ddm", Mdm => "mdm" });
snake_case_text!(OperationState {
    Scheduled => "scheduled",
    InProgress => "in_progress",
    Finished => "finished",
    Cancelled => "cancelled",
});

/// The time zone an enforcement deadline is read in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum TimeZoneRule {
    /// Each device's own time zone.
    DeviceLocal,
    /// One IANA zone for every device.
    Named(String),
}

impl From<TimeZoneRule> for String {
    fn from(rule: TimeZoneRule) -> String {
        match rule {
            TimeZoneRule::DeviceLocal => "device_local".to_string(),
            TimeZoneRule::Named(name) => name,
        }
    }
}

impl From<String> for TimeZoneRule {
    fn from(text: String) -> TimeZoneRule {
        if text == "device_local" {
            TimeZoneRule::DeviceLocal
        } else {
            TimeZoneRule::Named(text)
        }
    }
}

/// When and how often users are reminded before the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// How long before the deadline the first reminder goes out, in hours.
    pub hours_before: u32,
    /// Hours between reminders from then until the deadline; 0 sends one reminder.
    #[serde(default)]
    pub repeat_every_hours: u32,
}

/// The installation method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum InstallSettings {
    /// Install at a local date and time, with an optional catalog entry and reminders.
    EnforceAtSchedule {
        /// Deadline as a local wall-clock time, read in `time_zone`.
        local_date_time: DateTime,
        time_zone: TimeZoneRule,
        /// Whether users may install from Software Update before the deadline.
        #[serde(default)]
        add_to_catalog: bool,
        #[serde(default)]
        reminders: Vec<Reminder>,
    },
    /// Start as soon as the update is available on the device.
    InstallImmediately,
}

impl InstallSettings {
    pub fn method_name(&self) -> &'static str {
        match self {
            InstallSettings::EnforceAtSchedule { .. } => "enforce_at_schedule",
            InstallSettings::InstallImmediately => "install_immediately",
        }
    }
}

/// The update an operation installs. Each device gets its own build of
/// `product_version` (recorded on its target), so only the set is kept here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationUpdate {
    /// Marketing name and version, such as "macOS 26.6.2".
    pub name: String,
    pub product_version: OsVersion,
    pub platforms: Vec<Platform>,
    /// Every build the targets use, sorted.
    pub builds: Vec<String>,
    pub release_date: Option<jiff::civil::Date>,
    /// The earliest expiration among the builds in use: after it, waiting
    /// targets become Deprecated.
    pub expires_at: Option<Timestamp>,
}

/// Number of targets in each status, indexed by [`TargetStatus::index`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts(pub [i64; 13]);

impl StatusCounts {
    pub fn get(&self, status: TargetStatus) -> i64 {
        self.0[status.index()]
    }

    pub fn add(&mut self, status: TargetStatus, delta: i64) {
        self.0[status.index()] += delta;
    }

    pub fn total(&self) -> i64 {
        self.0.iter().sum()
    }

    /// Targets in a final status.
    pub fn completed(&self) -> i64 {
        TargetStatus::ALL
            .iter()
            .filter(|s| s.is_final())
            .map(|s| self.get(*s))
            .sum()
    }

    /// Derives the lifecycle state of an operation that was not cancelled.
    pub fn derived_state(&self) -> OperationState {
        let total = self.total();
        if total > 0 && self.completed() == total {
            OperationState::Finished
        } else if total == 0 || self.get(TargetStatus::Pending) == total {
            OperationState::Scheduled
        } else {
            OperationState::InProgress
        }
    }
}

impl Serialize for StatusCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(13))?;
        for status in TargetStatus::ALL {
            map.serialize_entry(status.as_str(), &self.get(status))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for StatusCounts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<TargetStatus, i64>::deserialize(deserializer)?;
        let mut counts = StatusCounts::default();
        for (status, n) in map {
            counts.add(status, n);
        }
        Ok(counts)
    }
}

/// An OS-update operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: OperationType,
    pub protocol: Protocol,
    pub update: OperationUpdate,
    pub install: InstallSettings,
    pub state: OperationState,
    pub counts: StatusCounts,
    /// Creator: an administrator's name, or "system".
    pub created_by: String,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub cancelled_at: Option<Timestamp>,
    /// Device groups the operation targeted, for filtering.
    #[serde(default)]
    pub group_ids: Vec<String>,
}

impl Operation {
    /// Cancel is offered for scheduled and in-progress DDM operations only:
    /// an acknowledged MDM command cannot be withdrawn.
    pub fn cancel_refusal(&self) -> Option<&'static str> {
        match (self.state, self.protocol) {
            (OperationState::Cancelled, _) => Some("operation is already cancelled"),
            (OperationState::Finished, _) => Some("operation has finished"),
            (_, Protocol::Mdm) => Some(
                "MDM operations cannot be cancelled: an acknowledged MDM command cannot be withdrawn",
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_derive_lifecycle() {
        let mut counts = StatusCounts::default();
        assert_eq!(counts.derived_state(), OperationState::Scheduled);
        counts.add(TargetStatus::Pending, 2);
        assert_eq!(counts.derived_state(), OperationState::Scheduled);
        counts.add(TargetStatus::Pending, -1);
        counts.add(TargetStatus::Downloading, 1);
        assert_eq!(counts.derived_state(), OperationState::InProgress);
        counts.add(TargetStatus::Pending, -1);
        counts.add(TargetStatus::Obsolete, 1);
        counts.add(TargetStatus::Downloading, -1);
        counts.add(TargetStatus::Installed, 1);
        assert_eq!(counts.derived_state(), OperationState::Finished);
        assert_eq!(counts.completed(), 2);
    }

    #[test]
    fn counts_serialize_by_status_name() {
        let mut counts = StatusCounts::default();
        counts.add(TargetStatus::UserApproved, 3);
        let json = serde_json::to_value(counts).unwrap();
        assert_eq!(json["user_approved"], 3);
        assert_eq!(json["pending"], 0);
        let back: StatusCounts = serde_json::from_value(json).unwrap();
        assert_eq!(back, counts);
    }

    #[test]
    fn install_settings_json_shape() {
        let settings: InstallSettings = serde_json::from_str(
            r#"{"method":"enforce_at_schedule","local_date_time":"2026-08-25T22:00:00","time_zone":"device_local","add_to_catalog":true}"#,
        )
        .unwrap();
        let InstallSettings::EnforceAtSchedule {
            time_zone,
            add_to_catalog,
            ..
        } = &settings
        else {
            panic!("expected a schedule, got {settings:?}");
        };
        assert_eq!(*time_zone, TimeZoneRule::DeviceLocal);
        assert!(add_to_catalog);
        let immediate: InstallSettings =
            serde_json::from_str(r#"{"method":"install_immediately"}"#).unwrap();
        assert_eq!(immediate, InstallSettings::InstallImmediately);
    }

    #[test]
    fn enums_parse_their_json_names() {
        assert_eq!(
            "in_progress".parse::<OperationState>(),
            Ok(OperationState::InProgress)
        );
        assert_eq!("ddm".parse::<Protocol>(), Ok(Protocol::Ddm));
        assert_eq!(
            "migrated".parse::<OperationType>(),
            Ok(OperationType::Migrated)
        );
        assert!("DDM".parse::<Protocol>().is_err());
    }
}
