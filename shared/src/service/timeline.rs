//! The per-device timeline of `GET /devices/{udid}/timeline`: the device's
//! audit events from every operation in time order, each tagged with what
//! kind of step it records.

use serde::Serialize;

use super::{ServiceResult, Services};
use crate::domain::{Actor, Event, EventType};
use crate::ports::{Page, PageRequest};

/// Kind of step a timeline entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    /// An MDM command went to the device.
    CommandSent,
    /// The device replied to a command: acknowledged, not now, or error.
    CommandResult,
    /// The device's update status moved, from a DDM status report or an
    /// MDM reply; also declarations synced or withdrawn.
    StatusChange,
    /// An administrator acted on the device: added it, moved it, cancelled.
    AdminAction,
    /// The server acted on its own: deadlines, reminders, retries, expiry.
    System,
}

/// Returns the kind of step `event` records. An administrator's events are
/// admin actions whatever their type.
pub fn timeline_kind(event: &Event) -> TimelineKind {
    use EventType::*;
    if event.actor == Actor::Administrator {
        return TimelineKind::AdminAction;
    }
    match event.event_type {
        CommandSent => TimelineKind::CommandSent,
        CommandAcknowledged | CommandNotNow | CommandError => TimelineKind::CommandResult,
        DeclarationsSynced
        | DeclarationsWithdrawn
        | Approved
        | UserApproval
        | DownloadStarted
        | DownloadCompleted
        | DownloadFailed
        | PreparationCompleted
        | InstallationStarted
        | InstallationCompleted
        | InstallationFailed
        | Obsolete
        | Failed
        | Deprecated => TimelineKind::StatusChange,
        OperationCreated
        | OperationStarted
        | OperationCompleted
        | OperationCancellationRequested
        | OperationCancelled
        | DeviceAdded
        | DeviceMigration
        | Cancelled
        | Retry
        | DeadlineReached
        | ReminderSent
        | ReportIgnored
        | UnknownValue => TimelineKind::System,
    }
}

/// One row of a device's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    /// The event's id (a ULID).
    pub id: String,
    pub at: jiff::Timestamp,
    pub kind: TimelineKind,
    /// The audit event type, such as `command_sent` or `download_started`.
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub operation_id: String,
    pub actor: Actor,
    pub details: serde_json::Value,
}

impl From<&Event> for TimelineEntry {
    fn from(event: &Event) -> Self {
        TimelineEntry {
            id: event.id.clone(),
            at: event.at,
            kind: timeline_kind(event),
            event_type: event.event_type,
            operation_id: event.operation_id.clone(),
            actor: event.actor,
            details: event.details.clone(),
        }
    }
}

impl Services {
    /// Lists a device's timeline, oldest first, across every operation it
    /// has been in. Expired events are left out. Not found when the device
    /// is unknown.
    pub async fn device_timeline(
        &self,
        udid: &str,
        page: &PageRequest,
    ) -> ServiceResult<Page<TimelineEntry>> {
        self.get_device(udid).await?;
        let events = self
            .ports
            .events
            .list_device_events(udid, self.now(), page)
            .await?;
        Ok(Page {
            items: events.items.iter().map(TimelineEntry::from).collect(),
            next_cursor: events.next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: EventType, actor: Actor) -> Event {
        Event {
            id: "01J00000000000000000000000".into(),
            operation_id: "op-1".into(),
            device_id: Some("dev-1".into()),
            event_type,
            details: serde_json::Value::Null,
            actor,
            at: jiff::Timestamp::UNIX_EPOCH,
            expires_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn kind_by_event_type_and_actor() {
        let cases = [
            (
                EventType::CommandSent,
                Actor::System,
                TimelineKind::CommandSent,
            ),
            (
                EventType::CommandAcknowledged,
                Actor::Device,
                TimelineKind::CommandResult,
            ),
            (
                EventType::CommandNotNow,
                Actor::Device,
                TimelineKind::CommandResult,
            ),
            (
                EventType::CommandError,
                Actor::Device,
                TimelineKind::CommandResult,
            ),
            (
                EventType::DownloadStarted,
                Actor::Device,
                TimelineKind::StatusChange,
            ),
            (
                EventType::InstallationCompleted,
                Actor::Device,
                TimelineKind::StatusChange,
            ),
            (
                EventType::DeclarationsSynced,
                Actor::Device,
                TimelineKind::StatusChange,
            ),
            (
                EventType::DeviceAdded,
                Actor::Administrator,
                TimelineKind::AdminAction,
            ),
            (
                EventType::Cancelled,
                Actor::Administrator,
                TimelineKind::AdminAction,
            ),
            (
                EventType::DeadlineReached,
                Actor::System,
                TimelineKind::System,
            ),
        ];
        for (event_type, actor, expected) in cases {
            assert_eq!(
                timeline_kind(&event(event_type, actor)),
                expected,
                "{event_type} by {actor:?}"
            );
        }
    }
}
