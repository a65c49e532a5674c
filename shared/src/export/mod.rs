//! CSV exports of the operations list, an operation's device statuses and
//! an operation's events.
//!
//! An export request names an [`ExportKind`] and the same filters as the
//! matching list route. It runs as a job. The request is stored as an
//! [`ExportRecord`] in the blob store at `exports/<id>/export.json`. The
//! job pages through the store with the list calls (queries on keys and
//! indexes, no scans) and writes each page to a temporary file through a
//! buffered writer. Then it uploads the file to `exports/<id>/<kind>.csv`.
//! Memory contains one page of rows at a time, whatever the export's size.
//!
//! The file format is described in [`csv`]: RFC 4180, UTF-8, a header row,
//! times in UTC ISO 8601 and formula-like text neutralised. The columns of
//! each kind are in [`columns`].

pub mod columns;
pub mod csv;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::ports::{EventFilter, OperationFilter, TargetFilter};

/// The rows an export contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportKind {
    /// The operations list, as `GET /operations`.
    Operations,
    /// One operation's device statuses, as `GET /operations/{id}/devices`.
    Devices,
    /// One operation's events, as `GET /operations/{id}/events`.
    Events,
}

impl ExportKind {
    pub const ALL: [ExportKind; 3] = [
        ExportKind::Operations,
        ExportKind::Devices,
        ExportKind::Events,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Operations => "operations",
            ExportKind::Devices => "devices",
            ExportKind::Events => "events",
        }
    }
}

impl std::str::FromStr for ExportKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ExportKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                format!("unknown export kind {text:?}: expected operations, devices or events")
            })
    }
}

/// The rows an export selects: a kind with its parsed filters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExportQuery {
    Operations {
        filter: OperationFilter,
    },
    Devices {
        operation_id: String,
        filter: TargetFilter,
    },
    Events {
        operation_id: String,
        filter: EventFilter,
    },
}

impl ExportQuery {
    pub fn kind(&self) -> ExportKind {
        match self {
            ExportQuery::Operations { .. } => ExportKind::Operations,
            ExportQuery::Devices { .. } => ExportKind::Devices,
            ExportQuery::Events { .. } => ExportKind::Events,
        }
    }

    pub fn operation_id(&self) -> Option<&str> {
        match self {
            ExportQuery::Operations { .. } => None,
            ExportQuery::Devices { operation_id, .. }
            | ExportQuery::Events { operation_id, .. } => Some(operation_id),
        }
    }
}

/// Life cycle of an export job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportState {
    /// Accepted; the job has not started.
    Queued,
    /// The job is writing the file.
    Running,
    /// The file is stored and can be downloaded.
    Done,
    /// The job stopped, and `error` gives the reason. Request a new export to retry.
    Failed,
}

/// The stored state of one export, kept as JSON beside its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportRecord {
    /// ULID, so exports sort by creation time.
    pub id: String,
    #[serde(flatten)]
    pub query: ExportQuery,
    /// The filters as the request sent them, echoed back to the client.
    pub filters: BTreeMap<String, String>,
    pub state: ExportState,
    /// Data rows in the file, the header not counted; set when done.
    pub rows: Option<u64>,
    /// Blob key of the CSV file; set when done.
    pub file_key: Option<String>,
    /// The error that stopped the export; set when failed.
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// Returns the blob key of an export's record.
pub fn record_key(export_id: &str) -> String {
    format!("exports/{export_id}/export.json")
}

/// Returns the blob key of an export's CSV file.
pub fn file_key(export_id: &str, kind: ExportKind) -> String {
    format!("exports/{export_id}/{}.csv", kind.as_str())
}

/// Content type of the CSV files; `header=present` is RFC 4180's parameter
/// for files that start with a header row.
pub const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8; header=present";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventType, OperationState};

    #[test]
    fn record_round_trips_through_json() {
        let record = ExportRecord {
            id: "01JEXPORT".into(),
            query: ExportQuery::Events {
                operation_id: "op-1".into(),
                filter: EventFilter {
                    device_id: Some("udid-1".into()),
                    event_type: Some(EventType::DownloadFailed),
                },
            },
            filters: BTreeMap::from([("type".to_string(), "download_failed".to_string())]),
            state: ExportState::Queued,
            rows: None,
            file_key: None,
            error: None,
            created_at: "2026-08-22T09:00:00Z".parse().expect("time"),
            started_at: None,
            finished_at: None,
        };
        let json = serde_json::to_value(&record).expect("serialize");
        assert_eq!(json["kind"], "events");
        assert_eq!(json["operation_id"], "op-1");
        let back: ExportRecord = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, record);
    }

    #[test]
    fn operations_filter_survives_storage() {
        let query = ExportQuery::Operations {
            filter: OperationFilter {
                states: vec![OperationState::InProgress],
                from: Some("2026-08-01T00:00:00Z".parse().expect("time")),
                ..Default::default()
            },
        };
        let json = serde_json::to_string(&query).expect("serialize");
        let back: ExportQuery = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, query);
    }

    #[test]
    fn kind_parses_its_own_names() {
        for kind in ExportKind::ALL {
            assert_eq!(kind.as_str().parse::<ExportKind>(), Ok(kind));
        }
        assert!("targets".parse::<ExportKind>().is_err());
    }
}
