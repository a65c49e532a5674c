//! Store decorators that publish the events a write stored.
//!
//! Every event the use cases store goes through one of three writes:
//! [`DeviceStore::commit`], [`OperationStore::assign`] and
//! [`EventStore::append`]. [`publish_stored_events`] wraps those ports so
//! that, once a write succeeds, its events go to the [`EventPublisher`] as
//! well. Publishing is best effort: the audit trail already contains
//! the events, so a publish error is logged with the number of events and the
//! write still succeeds. A write that fails publishes nothing.
//!
//! The other methods delegate unchanged. A method added to one of the
//! three traits needs a delegating line here too.
//!
//! NOTE: publishing runs after the write and before the caller continues,
//! so the publisher's latency, and its retries while a bus is unavailable,
//! add to the device request that stored the events.

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::domain::{Device, Event, Operation, Target};
use crate::ports::{
    AssignOutcome, Assignment, Change, CommitOutcome, DeviceContext, DeviceFilter, DeviceStore,
    EventFilter, EventPublisher, EventStore, OperationFilter, OperationStore, Page, PageRequest,
    StoreResult, TargetFilter,
};

/// The three event-writing ports, wrapped.
pub struct PublishingPorts {
    pub devices: Arc<dyn DeviceStore>,
    pub operations: Arc<dyn OperationStore>,
    pub events: Arc<dyn EventStore>,
}

/// Wraps the ports that store events so that each successful write also
/// publishes its events to `publisher`.
pub fn publish_stored_events(
    devices: Arc<dyn DeviceStore>,
    operations: Arc<dyn OperationStore>,
    events: Arc<dyn EventStore>,
    publisher: Arc<dyn EventPublisher>,
) -> PublishingPorts {
    PublishingPorts {
        devices: Arc::new(Publishing {
            inner: devices,
            publisher: publisher.clone(),
        }),
        operations: Arc::new(Publishing {
            inner: operations,
            publisher: publisher.clone(),
        }),
        events: Arc::new(Publishing {
            inner: events,
            publisher,
        }),
    }
}

/// A port that publishes the events its writes stored.
struct Publishing<P: ?Sized> {
    inner: Arc<P>,
    publisher: Arc<dyn EventPublisher>,
}

impl<P: ?Sized> Publishing<P> {
    /// Publishes events already stored; logs a failure instead of returning it.
    async fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.publisher.publish(events).await {
            let first_event_id = events.first().map(|event| event.id.as_str());
            tracing::warn!(
                error = %e,
                count = events.len(),
                first_event_id,
                "could not publish stored events; they remain in the audit trail"
            );
        }
    }
}

#[async_trait]
impl DeviceStore for Publishing<dyn DeviceStore> {
    async fn get_device(&self, udid: &str) -> StoreResult<Option<Device>> {
        self.inner.get_device(udid).await
    }

    async fn get_devices(&self, udids: &[String]) -> StoreResult<Vec<Device>> {
        self.inner.get_devices(udids).await
    }

    async fn load_context(&self, udid: &str) -> StoreResult<Option<DeviceContext>> {
        self.inner.load_context(udid).await
    }

    async fn list_devices(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Device>> {
        self.inner.list_devices(filter, page).await
    }

    async fn touch_devices(&self, seen: &[(String, Timestamp)]) -> StoreResult<()> {
        self.inner.touch_devices(seen).await
    }

    async fn commit(&self, change: Change) -> StoreResult<CommitOutcome> {
        // The change moves into the store, so keep the events to publish.
        let events = change.events.clone();
        let outcome = self.inner.commit(change).await?;
        self.publish(&events).await;
        Ok(outcome)
    }
}

#[async_trait]
impl OperationStore for Publishing<dyn OperationStore> {
    async fn insert_operation(&self, operation: &Operation) -> StoreResult<()> {
        self.inner.insert_operation(operation).await
    }

    async fn get_operation(&self, id: &str) -> StoreResult<Option<Operation>> {
        self.inner.get_operation(id).await
    }

    async fn list_operations(
        &self,
        filter: &OperationFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Operation>> {
        self.inner.list_operations(filter, page).await
    }

    async fn assign(
        &self,
        assignments: Vec<Assignment>,
    ) -> StoreResult<(Vec<AssignOutcome>, CommitOutcome)> {
        // Only assignments that applied stored their events; outcomes come
        // back in the order of the assignments.
        let events: Vec<Vec<Event>> = assignments.iter().map(|a| a.events.clone()).collect();
        let (outcomes, commit) = self.inner.assign(assignments).await?;
        let stored: Vec<Event> = events
            .into_iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == AssignOutcome::Assigned)
            .flat_map(|(events, _)| events)
            .collect();
        self.publish(&stored).await;
        Ok((outcomes, commit))
    }

    async fn get_target(&self, operation_id: &str, udid: &str) -> StoreResult<Option<Target>> {
        self.inner.get_target(operation_id, udid).await
    }

    async fn list_targets(
        &self,
        operation_id: &str,
        filter: &TargetFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Target>> {
        self.inner.list_targets(operation_id, filter, page).await
    }

    async fn mark_cancelled(&self, operation_id: &str, at: Timestamp) -> StoreResult<()> {
        self.inner.mark_cancelled(operation_id, at).await
    }

    async fn lookup_idempotency_key(&self, key: &str) -> StoreResult<Option<String>> {
        self.inner.lookup_idempotency_key(key).await
    }

    async fn claim_idempotency_key(
        &self,
        key: &str,
        operation_id: &str,
        at: Timestamp,
    ) -> StoreResult<Option<String>> {
        self.inner
            .claim_idempotency_key(key, operation_id, at)
            .await
    }
}

#[async_trait]
impl EventStore for Publishing<dyn EventStore> {
    async fn append(&self, events: &[Event]) -> StoreResult<()> {
        self.inner.append(events).await?;
        self.publish(events).await;
        Ok(())
    }

    async fn list_events(
        &self,
        operation_id: &str,
        filter: &EventFilter,
        now: Timestamp,
        page: &PageRequest,
    ) -> StoreResult<Page<Event>> {
        self.inner
            .list_events(operation_id, filter, now, page)
            .await
    }

    async fn list_device_events(
        &self,
        device_id: &str,
        now: Timestamp,
        page: &PageRequest,
    ) -> StoreResult<Page<Event>> {
        self.inner.list_device_events(device_id, now, page).await
    }

    async fn purge_expired(&self, now: Timestamp) -> StoreResult<u64> {
        self.inner.purge_expired(now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::{ChannelPublisher, SqliteStore};
    use crate::domain::EventType;
    use crate::ports::contract::fixtures::{T0, at_minute, device, event};
    use crate::ports::{DeviceWrite, StoreError};
    use tokio::sync::broadcast::error::TryRecvError;

    /// A publisher whose bus is always down.
    struct FailingPublisher;

    #[async_trait]
    impl EventPublisher for FailingPublisher {
        async fn publish(&self, _events: &[Event]) -> StoreResult<()> {
            Err(StoreError::InvalidInput("bus unavailable".into()))
        }
    }

    fn wrap(store: &Arc<SqliteStore>, publisher: Arc<dyn EventPublisher>) -> PublishingPorts {
        publish_stored_events(store.clone(), store.clone(), store.clone(), publisher)
    }

    fn two_events() -> Vec<Event> {
        vec![
            event("op-1", Some("dev-1"), EventType::CommandSent, at_minute(1)),
            event("op-1", None, EventType::OperationStarted, at_minute(2)),
        ]
    }

    async fn stored(store: &SqliteStore) -> Vec<Event> {
        store
            .list_events("op-1", &EventFilter::default(), T0, &PageRequest::first(10))
            .await
            .expect("list events")
            .items
    }

    #[tokio::test]
    async fn commit_publishes_its_events() {
        let store = Arc::new(SqliteStore::in_memory().expect("store"));
        let channel = Arc::new(ChannelPublisher::default());
        let mut receiver = channel.subscribe();
        let ports = wrap(&store, channel);
        let events = two_events();
        let change = Change {
            events: events.clone(),
            ..Change::default()
        };
        ports.devices.commit(change).await.expect("commit");

        assert_eq!(receiver.try_recv().as_ref(), Ok(&events[0]));
        assert_eq!(receiver.try_recv().as_ref(), Ok(&events[1]));
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
    }

    #[tokio::test]
    async fn append_publishes_its_events() {
        let store = Arc::new(SqliteStore::in_memory().expect("store"));
        let channel = Arc::new(ChannelPublisher::default());
        let mut receiver = channel.subscribe();
        let ports = wrap(&store, channel);
        let events = two_events();
        ports.events.append(&events).await.expect("append");

        assert_eq!(receiver.try_recv().as_ref(), Ok(&events[0]));
        assert_eq!(receiver.try_recv().as_ref(), Ok(&events[1]));
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
    }

    #[tokio::test]
    async fn publish_error_keeps_write() {
        let store = Arc::new(SqliteStore::in_memory().expect("store"));
        let ports = wrap(&store, Arc::new(FailingPublisher));
        let events = two_events();
        let change = Change {
            events: events[..1].to_vec(),
            ..Change::default()
        };
        let committed = ports.devices.commit(change).await;
        assert!(committed.is_ok(), "commit failed: {committed:?}");
        let appended = ports.events.append(&events[1..]).await;
        assert!(appended.is_ok(), "append failed: {appended:?}");
        assert_eq!(stored(&store).await, events);
    }

    #[tokio::test]
    async fn failed_commit_publishes_nothing() {
        let store = Arc::new(SqliteStore::in_memory().expect("store"));
        let channel = Arc::new(ChannelPublisher::default());
        let mut receiver = channel.subscribe();
        let ports = wrap(&store, channel);
        // Expecting revision 3 of a device that does not exist conflicts.
        let change = Change {
            device: Some(DeviceWrite {
                device: device("dev-1"),
                expected_revision: Some(3),
            }),
            events: two_events(),
            ..Change::default()
        };
        let result = ports.devices.commit(change).await;
        assert!(
            matches!(result, Err(StoreError::Conflict(_))),
            "expected a conflict, got {result:?}"
        );
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
        assert!(stored(&store).await.is_empty());
    }
}
