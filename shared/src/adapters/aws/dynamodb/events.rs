//! [`EventStore`]: the events table, one partition per operation in ULID order.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};
use jiff::Timestamp;

use super::DynamoStore;
use super::codec::{
    DEVICE_ID, DEVICE_KEY, EVENT_ID, EVENT_OPERATION, EVENT_TYPE, EXPIRES_NS, EXPIRY_SHARD,
    decode_event, event_device_key, event_item, event_key, nanos, require_s, s,
};
use super::cursor::{self, CursorScope};
use super::devices::{page_limit, unique_events};
use super::read::{QuerySpec, batch_write, query_all, query_page};
use super::schema::{DEVICE_TIMELINE, EVENTS_BY_DEVICE, EVENTS_BY_EXPIRY, EXPIRY_SHARDS};
use crate::domain::Event;
use crate::ports::{EventFilter, EventStore, Page, PageRequest, StoreError, StoreResult};

#[async_trait]
impl EventStore for DynamoStore {
    /// BatchWriteItem puts, 25 a call. An event appended again is written
    /// again with the same key, so the store keeps one copy.
    async fn append(&self, events: &[Event]) -> StoreResult<()> {
        let mut requests = Vec::new();
        for event in unique_events(events) {
            let put = PutRequest::builder()
                .set_item(Some(event_item(event, EXPIRY_SHARDS)?))
                .build()
                .map_err(|e| StoreError::backend("append events", e))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        batch_write(&self.client, &self.tables.events, requests, "append events").await
    }

    /// Queries the operation's partition, or `events_by_device` for the
    /// device filter, in ULID order. Expired events (TTL deletes them only
    /// some time after they expire) and the type filter are a
    /// FilterExpression.
    async fn list_events(
        &self,
        operation_id: &str,
        filter: &EventFilter,
        now: Timestamp,
        page: &PageRequest,
    ) -> StoreResult<Page<Event>> {
        let device_key = filter
            .device_id
            .as_deref()
            .map(|device| event_device_key(operation_id, device));
        let (scope, spec) = match &device_key {
            Some(device_key) => (
                CursorScope {
                    list: "device events",
                    attributes: &[EVENT_OPERATION, EVENT_ID, DEVICE_KEY],
                    partition: (DEVICE_KEY, device_key),
                },
                QuerySpec::index(
                    &self.tables.events,
                    EVENTS_BY_DEVICE,
                    DEVICE_KEY,
                    device_key,
                ),
            ),
            None => (
                CursorScope {
                    list: "events",
                    attributes: &[EVENT_OPERATION, EVENT_ID],
                    partition: (EVENT_OPERATION, operation_id),
                },
                QuerySpec::partition(&self.tables.events, EVENT_OPERATION, operation_id),
            ),
        };
        let mut spec = spec.filter(|e| {
            let mut clauses = vec![format!("{} > {}", e.name(EXPIRES_NS), e.value(nanos(now)))];
            if let Some(event_type) = filter.event_type {
                clauses.push(format!(
                    "{} = {}",
                    e.name(EVENT_TYPE),
                    e.value(s(event_type.as_str()))
                ));
            }
            if let Some(device_id) = &filter.device_id {
                clauses.push(format!(
                    "{} = {}",
                    e.name(DEVICE_ID),
                    e.value(s(device_id.clone()))
                ));
            }
            clauses
        });
        spec.limit = Some(page_limit(page));
        spec.start = cursor::start(&scope, page.cursor.as_deref())?;
        let (items, last) = query_page(&self.client, &spec, "list events").await?;
        let mut events = Vec::with_capacity(items.len());
        for item in &items {
            let event = decode_event(item)?;
            if event.operation_id == operation_id {
                events.push(event);
            }
        }
        Ok(Page {
            items: events,
            next_cursor: cursor::next(&scope, last)?,
        })
    }

    /// Queries the `device_timeline` index (`device_id`, then ULID) in
    /// order. Expired events are a FilterExpression, so a page can hold
    /// fewer than `limit` events and still have a next cursor.
    async fn list_device_events(
        &self,
        device_id: &str,
        now: Timestamp,
        page: &PageRequest,
    ) -> StoreResult<Page<Event>> {
        let scope = CursorScope {
            list: "device timeline",
            attributes: &[EVENT_OPERATION, EVENT_ID, DEVICE_ID],
            partition: (DEVICE_ID, device_id),
        };
        let mut spec = QuerySpec::index(&self.tables.events, DEVICE_TIMELINE, DEVICE_ID, device_id)
            .filter(|e| vec![format!("{} > {}", e.name(EXPIRES_NS), e.value(nanos(now)))]);
        spec.limit = Some(page_limit(page));
        spec.start = cursor::start(&scope, page.cursor.as_deref())?;
        let (items, last) = query_page(&self.client, &spec, "list device events").await?;
        let events = items
            .iter()
            .map(decode_event)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page {
            items: events,
            next_cursor: cursor::next(&scope, last)?,
        })
    }

    /// Queries each partition of `events_by_expiry` for events that expired
    /// at `now` and deletes them with BatchWriteItem. DynamoDB's TTL deletes
    /// expired events too, so in AWS this mostly finds nothing; it exists so
    /// that purging behaves the same on every store.
    ///
    /// NOTE: the count is of the events the index listed. An event that TTL
    /// deleted after the index was read is counted although this call did
    /// not delete it.
    async fn purge_expired(&self, now: Timestamp) -> StoreResult<u64> {
        let mut requests = Vec::new();
        for shard in 0..EXPIRY_SHARDS {
            let partition = format!("EXPIRY#{shard:02}");
            let spec = QuerySpec::index(
                &self.tables.events,
                EVENTS_BY_EXPIRY,
                EXPIRY_SHARD,
                &partition,
            )
            .and_key(|e| format!("{} <= {}", e.name(EXPIRES_NS), e.value(nanos(now))));
            for item in query_all(&self.client, spec, "purge events").await? {
                let operation_id = require_s(&item, "event", EVENT_OPERATION)?;
                let id = require_s(&item, "event", EVENT_ID)?;
                let delete = DeleteRequest::builder()
                    .set_key(Some(event_key(operation_id, id)))
                    .build()
                    .map_err(|e| StoreError::backend("purge events", e))?;
                requests.push(WriteRequest::builder().delete_request(delete).build());
            }
        }
        let purged = requests.len() as u64;
        batch_write(&self.client, &self.tables.events, requests, "purge events").await?;
        Ok(purged)
    }
}
