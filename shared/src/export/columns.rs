//! The columns of each export kind: what the list views show that an
//! auditor needs, in a fixed order. Times are UTC ISO 8601; lists of ids
//! are joined with single spaces (ids never contain one); nested settings
//! and event details are compact JSON in one cell.

use serde::Serialize;
use serde_json::Value;

use super::ExportKind;
use super::csv::Cell;
use crate::domain::{Event, TargetStatus};
use crate::service::views::{OperationView, TargetView};

/// Columns of an operations export before the per-status device counts.
const OPERATION_COLUMNS: [&str; 18] = [
    "id",
    "type",
    "protocol",
    "state",
    "update_name",
    "product_version",
    "builds",
    "release_date",
    "update_expires_at",
    "installation",
    "created_by",
    "created_at",
    "started_at",
    "finished_at",
    "cancelled_at",
    "elapsed_seconds",
    "total_devices",
    "completed_devices",
];

/// Columns of a device-status export.
pub const DEVICE_COLUMNS: [&str; 17] = [
    "device_id",
    "device_name",
    "serial_number",
    "status",
    "detail",
    "attempts",
    "last_error",
    "next_attempt_at",
    "target_version",
    "target_build",
    "major_upgrade",
    "time_zone",
    "zone_source",
    "deadline_at",
    "target_local_date_time",
    "group_ids",
    "updated_at",
];

/// Columns of an events export. `error`, `attempt`, `detail` and
/// `download_percent` repeat the details fields of those names, so that a
/// spreadsheet can filter on them; `details` has every field.
pub const EVENT_COLUMNS: [&str; 11] = [
    "at",
    "id",
    "operation_id",
    "device_id",
    "type",
    "actor",
    "error",
    "attempt",
    "detail",
    "download_percent",
    "details",
];

/// Returns the header row of `kind`.
pub fn header(kind: ExportKind) -> Vec<String> {
    match kind {
        ExportKind::Operations => OPERATION_COLUMNS
            .iter()
            .map(|name| name.to_string())
            .chain(
                TargetStatus::ALL
                    .iter()
                    .map(|status| format!("{}_devices", status.as_str())),
            )
            .chain(std::iter::once("group_ids".to_string()))
            .collect(),
        ExportKind::Devices => DEVICE_COLUMNS.iter().map(|n| n.to_string()).collect(),
        ExportKind::Events => EVENT_COLUMNS.iter().map(|n| n.to_string()).collect(),
    }
}

/// Returns the serde name of a unit enum value, such as `user_initiated`.
fn serde_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn compact_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub fn operation_row(view: &OperationView) -> Vec<Cell<'_>> {
    let mut cells = vec![
        Cell::text(view.id.as_str()),
        Cell::text(serde_name(&view.kind)),
        Cell::text(serde_name(&view.protocol)),
        Cell::text(serde_name(&view.state)),
        Cell::text(view.update.name.as_str()),
        Cell::text(view.update.product_version.as_str()),
        Cell::text(view.update.builds.join(" ")),
        view.update
            .release_date
            .map_or(Cell::Empty, |date| Cell::text(date.to_string())),
        Cell::optional_time(view.update.expires_at),
        Cell::text(compact_json(&view.installation)),
        Cell::text(view.created_by.as_str()),
        Cell::time(view.created_at),
        Cell::optional_time(view.started_at),
        Cell::optional_time(view.finished_at),
        Cell::optional_time(view.cancelled_at),
        view.elapsed_seconds.map_or(Cell::Empty, Cell::Number),
        Cell::Number(view.total_devices),
        Cell::Number(view.completed_devices),
    ];
    cells.extend(
        TargetStatus::ALL
            .iter()
            .map(|status| Cell::Number(view.counts.get(*status))),
    );
    cells.push(Cell::text(view.group_ids.join(" ")));
    cells
}

pub fn device_row(view: &TargetView) -> Vec<Cell<'_>> {
    vec![
        Cell::text(view.device_id.as_str()),
        Cell::optional(view.device_name.as_deref()),
        Cell::optional(view.serial_number.as_deref()),
        Cell::text(view.status.as_str()),
        Cell::optional(view.detail.as_deref()),
        Cell::Number(i64::from(view.attempts)),
        Cell::optional(view.last_error.as_deref()),
        Cell::optional_time(view.next_attempt_at),
        Cell::text(view.target_version.as_str()),
        Cell::text(view.target_build.as_str()),
        Cell::boolean(view.major_upgrade),
        Cell::optional(view.time_zone.as_deref()),
        view.zone_source
            .map_or(Cell::Empty, |source| Cell::text(serde_name(&source))),
        Cell::optional_time(view.deadline_at),
        Cell::optional(view.target_local_date_time.as_deref()),
        Cell::text(view.group_ids.join(" ")),
        Cell::time(view.updated_at),
    ]
}

pub fn event_row(event: &Event) -> Vec<Cell<'_>> {
    let details = &event.details;
    let error = details
        .get("error")
        .or_else(|| details.get("last_error"))
        .and_then(Value::as_str);
    vec![
        Cell::time(event.at),
        Cell::text(event.id.as_str()),
        Cell::text(event.operation_id.as_str()),
        Cell::optional(event.device_id.as_deref()),
        Cell::text(event.event_type.as_str()),
        Cell::text(serde_name(&event.actor)),
        Cell::optional(error),
        details
            .get("attempt")
            .and_then(Value::as_i64)
            .map_or(Cell::Empty, Cell::Number),
        Cell::optional(details.get("detail").and_then(Value::as_str)),
        details
            .get("download_percent")
            .and_then(Value::as_i64)
            .map_or(Cell::Empty, Cell::Number),
        Cell::text(compact_json(details)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_header_width() {
        let event = Event {
            id: "01J".into(),
            operation_id: "op-1".into(),
            device_id: None,
            event_type: crate::domain::EventType::Retry,
            details: serde_json::json!({ "error": "no space", "attempt": 2 }),
            actor: crate::domain::Actor::Device,
            at: "2026-08-22T09:00:00Z".parse().expect("time"),
            expires_at: "2026-11-20T09:00:00Z".parse().expect("time"),
        };
        let row = event_row(&event);
        assert_eq!(row.len(), header(ExportKind::Events).len());
        assert_eq!(row[6], Cell::text("no space"));
        assert_eq!(row[7], Cell::Number(2));
        assert_eq!(row[5], Cell::text("device"));
    }
}
