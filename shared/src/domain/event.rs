//! The audit trail.

use std::fmt;
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::status::TargetStatus;

/// How long events are kept.
pub const EVENT_RETENTION: SignedDuration = SignedDuration::from_hours(90 * 24);

/// The party that caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    Administrator,
    Device,
    System,
}

macro_rules! event_types {
    ($($variant:ident => $text:literal),+ $(,)?) => {
        /// Kinds of audit event.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum EventType { $($variant),+ }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $text),+ }
            }
        }

        impl FromStr for EventType {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(EventType::$variant),)+
                    other => Err(format!("unknown event type {other:?}")),
                }
            }
        }
    };
}

event_types! {
    OperationCreated => "operation_created",
    OperationStarted => "operation_started",
    OperationCompleted => "operation_completed",
    OperationCancellationRequested => "operation_cancellation_requested",
    OperationCancelled => "operation_cancelled",
    DeviceAdded => "device_added",
    DeviceMigration => "device_migration",
    CommandSent => "command_sent",
    CommandAcknowledged => "command_acknowledged",
    CommandNotNow => "command_not_now",
    CommandError => "command_error",
    DeclarationsSynced => "declarations_synced",
    DeclarationsWithdrawn => "declarations_withdrawn",
    Approved => "approved",
    UserApproval => "user_approval",
    DownloadStarted => "download_started",
    DownloadCompleted => "download_completed",
    DownloadFailed => "download_failed",
    PreparationCompleted => "preparation_completed",
    InstallationStarted => "installation_started",
    InstallationCompleted => "installation_completed",
    InstallationFailed => "installation_failed",
    Retry => "retry",
    Obsolete => "obsolete",
    Failed => "failed",
    Cancelled => "cancelled",
    Deprecated => "deprecated",
    DeadlineReached => "deadline_reached",
    ReminderSent => "reminder_sent",
    ReportIgnored => "report_ignored",
    UnknownValue => "unknown_value",
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventType {
    /// Returns the event recorded when a target moves from `from` to `to`.
    /// Failures are named by the phase they interrupted.
    pub fn for_move(from: TargetStatus, to: TargetStatus) -> EventType {
        use TargetStatus::*;
        match to {
            Pending => EventType::DeviceAdded,
            Approved => EventType::Approved,
            UserApproved => EventType::UserApproval,
            Downloading => EventType::DownloadStarted,
            Preparing => EventType::DownloadCompleted,
            Downloaded if from == Preparing => EventType::PreparationCompleted,
            Downloaded => EventType::DownloadCompleted,
            Installing => EventType::InstallationStarted,
            Installed => EventType::InstallationCompleted,
            Retry | Failed if from == Installing || from == Downloaded => {
                EventType::InstallationFailed
            }
            Retry | Failed if matches!(from, Downloading | Preparing) => EventType::DownloadFailed,
            Retry => EventType::Retry,
            Failed => EventType::Failed,
            Obsolete => EventType::Obsolete,
            Cancelled => EventType::Cancelled,
            Deprecated => EventType::Deprecated,
        }
    }
}

impl EventType {
    /// Returns the event for a move into Retry or Failed. The failure reason names
    /// the phase when the status the target left does not (a download that
    /// failed before the device reported any progress, say).
    pub fn for_failure(from: TargetStatus, to: TargetStatus, reason: &str) -> EventType {
        let by_status = EventType::for_move(from, to);
        if matches!(
            by_status,
            EventType::DownloadFailed | EventType::InstallationFailed
        ) {
            return by_status;
        }
        if reason.starts_with("Download") {
            EventType::DownloadFailed
        } else if reason.starts_with("Install") {
            EventType::InstallationFailed
        } else {
            by_status
        }
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// ULID: sorts by time.
    pub id: String,
    pub operation_id: String,
    pub device_id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Free-form details: statuses, error messages, attempts, progress.
    pub details: serde_json::Value,
    pub actor: Actor,
    pub at: Timestamp,
    /// When the event drops out of reads (and, on DynamoDB, its TTL).
    pub expires_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip() {
        for event_type in EventType::ALL {
            assert_eq!(event_type.as_str().parse::<EventType>(), Ok(*event_type));
            assert_eq!(
                serde_json::to_string(event_type).unwrap(),
                format!("\"{}\"", event_type.as_str())
            );
        }
    }

    #[test]
    fn failures_are_named_by_phase() {
        use TargetStatus::*;
        assert_eq!(
            EventType::for_move(Downloading, Retry),
            EventType::DownloadFailed
        );
        assert_eq!(
            EventType::for_move(Installing, Failed),
            EventType::InstallationFailed
        );
        assert_eq!(EventType::for_move(Approved, Failed), EventType::Failed);
        assert_eq!(
            EventType::for_move(Preparing, Downloaded),
            EventType::PreparationCompleted
        );
        assert_eq!(
            EventType::for_move(Downloading, Downloaded),
            EventType::DownloadCompleted
        );
    }
}
