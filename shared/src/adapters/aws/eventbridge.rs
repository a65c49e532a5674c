//! Domain events on an Amazon EventBridge bus.
//!
//! Each [`Event`] becomes one PutEvents entry on the configured bus, with
//! `Source` [`SOURCE`], `DetailType` the event type (`command_sent`, ...),
//! `Time` the event's time and `Detail` the event as JSON, the same fields
//! the audit trail stores. Rules on the bus match on these.
//!
//! PutEvents takes at most [`MAX_ENTRIES_PER_REQUEST`] entries and
//! [`MAX_REQUEST_SIZE`] bytes per request, so events go in order in batches
//! that fit both. Entries that the bus rejects (the response marks them with
//! an error code) are sent again once, after [`RETRY_DELAY`]. Errors of the
//! whole request are retried by the SDK's own retry policy.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use jiff::Timestamp;

use super::AwsSettings;
use crate::domain::Event;
use crate::ports::{EventPublisher, StoreError, StoreResult};

/// `Source` of every entry.
pub const SOURCE: &str = "osdeploy";

/// Maximum number of entries in one PutEvents request.
pub const MAX_ENTRIES_PER_REQUEST: usize = 10;

/// Maximum size of the entries in one PutEvents request (256 KiB), counted
/// as [`EventEntry::size`] does.
pub const MAX_REQUEST_SIZE: usize = 256 * 1024;

/// Bytes AWS counts for an entry's `Time` field.
const TIME_FIELD_SIZE: usize = 14;

/// Pause before failed entries are sent again.
pub const RETRY_DELAY: Duration = Duration::from_millis(200);

/// One event as a PutEvents entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEntry {
    pub event_id: String,
    pub detail_type: String,
    /// The event as JSON.
    pub detail: String,
    pub time: Timestamp,
}

impl EventEntry {
    pub fn from_event(event: &Event) -> StoreResult<Self> {
        let detail = serde_json::to_string(event)
            .map_err(|e| StoreError::backend("encode event detail", e))?;
        Ok(EventEntry {
            event_id: event.id.clone(),
            detail_type: event.event_type.as_str().to_string(),
            detail,
            time: event.at,
        })
    }

    /// Size as AWS counts it toward [`MAX_REQUEST_SIZE`]: 14 bytes for
    /// `Time` plus the UTF-8 bytes of `Source`, `DetailType` and `Detail`
    /// (the entries carry no `Resources`).
    pub fn size(&self) -> usize {
        TIME_FIELD_SIZE + SOURCE.len() + self.detail_type.len() + self.detail.len()
    }
}

/// Error code and message of one entry the bus rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    pub code: String,
    pub message: String,
}

/// An entry that still failed after its retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEntry {
    pub event_id: String,
    pub error: EntryError,
}

/// Errors from EventBridge, kept as the `source` of [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
pub enum EventBridgeError {
    #[error("EventBridge PutEvents to bus {bus:?} failed")]
    Call {
        bus: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "EventBridge bus {bus:?} rejected {} events after one retry: {}",
        failures.len(),
        summarize(failures)
    )]
    FailedEntries {
        bus: String,
        failures: Vec<FailedEntry>,
    },
}

fn summarize(failures: &[FailedEntry]) -> String {
    failures
        .iter()
        .map(|f| format!("{} ({}: {})", f.event_id, f.error.code, f.error.message))
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`EventPublisher`] on an EventBridge bus.
#[derive(Debug, Clone)]
pub struct EventBridgePublisher {
    client: Client,
    bus_name: String,
    retry_delay: Duration,
}

impl EventBridgePublisher {
    /// Publishes to `bus_name`, a bus name or ARN. Rejects an empty name or
    /// one with whitespace.
    pub fn new(client: Client, bus_name: impl Into<String>) -> StoreResult<Self> {
        let bus_name = bus_name.into();
        if bus_name.is_empty() || bus_name.chars().any(char::is_whitespace) {
            return Err(StoreError::InvalidInput(format!(
                "invalid event bus name {bus_name:?}: give the bus name or ARN, \
                 such as \"osdeploy-events\""
            )));
        }
        Ok(EventBridgePublisher {
            client,
            bus_name,
            retry_delay: RETRY_DELAY,
        })
    }

    /// Builds the client from `aws`, then as [`EventBridgePublisher::new`].
    pub async fn connect(aws: &AwsSettings, bus_name: impl Into<String>) -> StoreResult<Self> {
        Self::new(Client::new(&aws.sdk_config().await), bus_name)
    }

    /// Changes the pause before failed entries are sent again.
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Sends one PutEvents request; returns each entry's error, in order.
    /// Entries without a result in the response are handled by the caller.
    async fn put_events(
        &self,
        batch: Vec<EventEntry>,
    ) -> Result<Vec<Option<EntryError>>, EventBridgeError> {
        let entries: Vec<PutEventsRequestEntry> = batch
            .into_iter()
            .map(|entry| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus_name)
                    .source(SOURCE)
                    .detail_type(entry.detail_type)
                    .detail(entry.detail)
                    .time(DateTime::from_millis(entry.time.as_millisecond()))
                    .build()
            })
            .collect();
        let output = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| EventBridgeError::Call {
                bus: self.bus_name.clone(),
                source: e.into(),
            })?;
        Ok(output
            .entries()
            .iter()
            .map(|result| {
                result.error_code().map(|code| EntryError {
                    code: code.to_string(),
                    message: result.error_message().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[Event]) -> StoreResult<()> {
        let entries = events
            .iter()
            .map(EventEntry::from_event)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut failures = Vec::new();
        for batch in batches(entries)? {
            let failed = send_with_retry(batch, self.retry_delay, |batch| self.put_events(batch))
                .await
                .map_err(|e| StoreError::backend("publish events", e))?;
            failures.extend(failed);
        }
        if failures.is_empty() {
            return Ok(());
        }
        for failure in &failures {
            tracing::warn!(
                bus = %self.bus_name,
                event_id = %failure.event_id,
                code = %failure.error.code,
                message = %failure.error.message,
                "EventBridge rejected an event after one retry"
            );
        }
        Err(StoreError::backend(
            "publish events",
            EventBridgeError::FailedEntries {
                bus: self.bus_name.clone(),
                failures,
            },
        ))
    }
}

/// Splits `entries`, in order, into requests of at most
/// [`MAX_ENTRIES_PER_REQUEST`] entries and [`MAX_REQUEST_SIZE`] bytes.
/// Rejects the whole list, before anything is sent, when one entry alone is
/// larger than a request may be.
pub fn batches(entries: Vec<EventEntry>) -> StoreResult<Vec<Vec<EventEntry>>> {
    if let Some(entry) = entries.iter().find(|e| e.size() > MAX_REQUEST_SIZE) {
        return Err(StoreError::InvalidInput(format!(
            "event {} ({}) is {} bytes as an EventBridge entry, over the limit of \
             {MAX_REQUEST_SIZE}; keep large details out of events",
            entry.event_id,
            entry.detail_type,
            entry.size()
        )));
    }
    let mut batches: Vec<Vec<EventEntry>> = Vec::new();
    let mut current: Vec<EventEntry> = Vec::new();
    let mut current_size = 0;
    for entry in entries {
        let size = entry.size();
        if current.len() == MAX_ENTRIES_PER_REQUEST || current_size + size > MAX_REQUEST_SIZE {
            batches.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current_size += size;
        current.push(entry);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    Ok(batches)
}

/// Sends `batch` with `send`, then sends the entries that failed once more
/// after `delay`. Returns the entries that failed both times.
pub async fn send_with_retry<F, Fut, E>(
    batch: Vec<EventEntry>,
    delay: Duration,
    mut send: F,
) -> Result<Vec<FailedEntry>, E>
where
    F: FnMut(Vec<EventEntry>) -> Fut,
    Fut: Future<Output = Result<Vec<Option<EntryError>>, E>>,
{
    let failed = failed_entries(batch.clone(), send(batch).await?);
    if failed.is_empty() {
        return Ok(Vec::new());
    }
    tracing::info!(count = failed.len(), "retrying events EventBridge rejected");
    tokio::time::sleep(delay).await;
    let retry: Vec<EventEntry> = failed.into_iter().map(|(entry, _)| entry).collect();
    let still_failed = failed_entries(retry.clone(), send(retry).await?);
    Ok(still_failed
        .into_iter()
        .map(|(entry, error)| FailedEntry {
            event_id: entry.event_id,
            error,
        })
        .collect())
}

/// Pairs each sent entry with its error. The response lists results in
/// request order; an entry without a result counts as failed.
fn failed_entries(
    sent: Vec<EventEntry>,
    results: Vec<Option<EntryError>>,
) -> Vec<(EventEntry, EntryError)> {
    let mut results = results.into_iter();
    sent.into_iter()
        .filter_map(|entry| {
            let error = results.next().unwrap_or_else(|| {
                Some(EntryError {
                    code: "MissingResult".to_string(),
                    message: "the response has no result for this entry".to_string(),
                })
            });
            error.map(|error| (entry, error))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::domain::EventType;
    use crate::ports::contract::fixtures::{at_minute, event};

    fn entry(id: &str, detail_len: usize) -> EventEntry {
        EventEntry {
            event_id: id.to_string(),
            detail_type: "command_sent".to_string(),
            detail: "x".repeat(detail_len),
            time: at_minute(0),
        }
    }

    fn ids(batch: &[EventEntry]) -> Vec<String> {
        batch.iter().map(|e| e.event_id.clone()).collect()
    }

    fn throttled() -> EntryError {
        EntryError {
            code: "ThrottlingException".to_string(),
            message: "Rate exceeded".to_string(),
        }
    }

    #[test]
    fn entry_carries_type_and_json() {
        let event = event("op-1", Some("dev-1"), EventType::CommandSent, at_minute(3));
        let entry = EventEntry::from_event(&event).expect("entry");

        assert_eq!(entry.event_id, event.id);
        assert_eq!(entry.detail_type, "command_sent");
        assert_eq!(entry.time, at_minute(3));
        let decoded: Event = serde_json::from_str(&entry.detail).expect("detail is an Event");
        assert_eq!(decoded, event);
        assert_eq!(
            entry.size(),
            14 + "osdeploy".len() + "command_sent".len() + entry.detail.len()
        );
    }

    #[test]
    fn batches_hold_at_most_ten() {
        let entries: Vec<EventEntry> = (0..25).map(|i| entry(&format!("e{i:02}"), 10)).collect();
        let batches = batches(entries.clone()).expect("batches");
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();

        assert_eq!(sizes, vec![10, 10, 5]);
        assert_eq!(
            batches.concat(),
            entries,
            "batches must keep every entry in order"
        );
    }

    #[test]
    fn batches_stay_under_size_limit() {
        // Three entries of 100 KiB: two fit in 256 KiB, three do not.
        let entries: Vec<EventEntry> = (0..3)
            .map(|i| entry(&format!("big{i}"), 100 * 1024))
            .collect();
        let batches = batches(entries).expect("batches");

        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
        for batch in &batches {
            let size: usize = batch.iter().map(EventEntry::size).sum();
            assert!(
                size <= MAX_REQUEST_SIZE,
                "batch of {size} bytes is over the limit"
            );
        }
    }

    #[test]
    fn entry_filling_request_alone_is_accepted() {
        let overhead = entry("e", 0).size();
        let exact = entry("exact", MAX_REQUEST_SIZE - overhead);
        let batches = batches(vec![entry("small", 1), exact.clone()]).expect("batches");
        assert_eq!(batches, vec![vec![entry("small", 1)], vec![exact]]);
    }

    #[test]
    fn oversized_entry_is_rejected() {
        let overhead = entry("e", 0).size();
        let entries = vec![
            entry("small", 1),
            entry("huge", MAX_REQUEST_SIZE - overhead + 1),
        ];
        let result = batches(entries);
        let Err(StoreError::InvalidInput(message)) = result else {
            panic!("an entry over 256 KiB must be rejected, got {result:?}");
        };
        assert!(
            message.contains("huge"),
            "the message must name the event: {message}"
        );
    }

    #[tokio::test]
    async fn retry_resends_only_failed_entries() {
        let calls: Mutex<Vec<Vec<String>>> = Mutex::new(Vec::new());
        let batch = vec![entry("a", 1), entry("b", 1), entry("c", 1)];
        let failed = send_with_retry(batch, Duration::ZERO, |sent| {
            let mut calls = calls.lock().expect("lock");
            calls.push(ids(&sent));
            let first_call = calls.len() == 1;
            let results = sent
                .iter()
                .map(|e| (first_call && e.event_id == "b").then(throttled))
                .collect();
            async move { Ok::<_, String>(results) }
        })
        .await
        .expect("send");

        assert_eq!(failed, Vec::new(), "b succeeded on its retry");
        let calls = calls.into_inner().expect("lock");
        assert_eq!(calls, vec![vec!["a", "b", "c"], vec!["b"]]);
    }

    #[tokio::test]
    async fn retry_happens_only_once() {
        let calls = Mutex::new(0);
        let batch = vec![entry("a", 1), entry("b", 1)];
        let failed = send_with_retry(batch, Duration::ZERO, |sent| {
            *calls.lock().expect("lock") += 1;
            let results = sent
                .iter()
                .map(|e| (e.event_id == "a").then(throttled))
                .collect();
            async move { Ok::<_, String>(results) }
        })
        .await
        .expect("send");

        assert_eq!(
            failed,
            vec![FailedEntry {
                event_id: "a".to_string(),
                error: throttled()
            }]
        );
        assert_eq!(*calls.lock().expect("lock"), 2, "one call and one retry");
    }

    #[tokio::test]
    async fn missing_results_count_as_failures() {
        let batch = vec![entry("a", 1), entry("b", 1)];
        // Every response lacks the result of its last entry.
        let failed = send_with_retry(batch, Duration::ZERO, |sent| {
            let results = vec![None; sent.len() - 1];
            async move { Ok::<_, String>(results) }
        })
        .await
        .expect("send");
        assert_eq!(ids_of(&failed), vec!["b"]);
        assert_eq!(failed[0].error.code, "MissingResult");
    }

    #[tokio::test]
    async fn call_error_is_returned() {
        let batch = vec![entry("a", 1)];
        let result = send_with_retry(batch, Duration::ZERO, |_sent| async {
            Err::<Vec<Option<EntryError>>, _>("connection refused".to_string())
        })
        .await;
        assert_eq!(result, Err("connection refused".to_string()));
    }

    #[test]
    fn bus_name_is_validated() {
        let client = Client::from_conf(
            aws_sdk_eventbridge::Config::builder()
                .behavior_version(aws_sdk_eventbridge::config::BehaviorVersion::latest())
                .build(),
        );
        assert!(EventBridgePublisher::new(client.clone(), "osdeploy-events").is_ok());
        for name in ["", "osdeploy events", "bus\n"] {
            let result = EventBridgePublisher::new(client.clone(), name);
            assert!(
                matches!(result, Err(StoreError::InvalidInput(_))),
                "bus name {name:?} must be rejected"
            );
        }
    }

    fn ids_of(failed: &[FailedEntry]) -> Vec<&str> {
        failed.iter().map(|f| f.event_id.as_str()).collect()
    }
}
