//! The in-process [`EventPublisher`]: a broadcast channel that
//! `osdeploy serve` and tests subscribe to.

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::domain::Event;
use crate::ports::{EventPublisher, StoreResult};

/// Events each subscriber can fall behind by before it misses some.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Publishes events to every current subscriber, in order.
///
/// Delivery is best effort, as on a bus with no rule: publishing with no
/// subscriber drops the events and still succeeds, and a subscriber more
/// than the capacity behind receives `RecvError::Lagged` and misses the
/// oldest events.
#[derive(Debug, Clone)]
pub struct ChannelPublisher {
    sender: broadcast::Sender<Event>,
}

impl ChannelPublisher {
    /// Creates a channel that keeps up to `capacity` events for a slow subscriber.
    /// A capacity of zero is raised to one, the smallest tokio accepts.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        ChannelPublisher { sender }
    }

    /// Returns a receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

impl Default for ChannelPublisher {
    fn default() -> Self {
        ChannelPublisher::new(DEFAULT_CAPACITY)
    }
}

#[async_trait]
impl EventPublisher for ChannelPublisher {
    async fn publish(&self, events: &[Event]) -> StoreResult<()> {
        for event in events {
            // send fails only when there is no receiver, so the event is dropped.
            if self.sender.send(event.clone()).is_err() {
                tracing::trace!(event_id = %event.id, "no subscriber for a published event");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventType;
    use crate::ports::contract::fixtures::{at_minute, event};
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};

    #[tokio::test]
    async fn subscribers_receive_events_in_order() {
        let publisher = ChannelPublisher::default();
        let mut first = publisher.subscribe();
        let mut second = publisher.subscribe();
        let events = vec![
            event("op-1", None, EventType::OperationCreated, at_minute(1)),
            event("op-1", Some("dev-1"), EventType::CommandSent, at_minute(2)),
        ];
        publisher.publish(&events).await.expect("publish");

        for receiver in [&mut first, &mut second] {
            assert_eq!(receiver.recv().await.as_ref(), Ok(&events[0]));
            assert_eq!(receiver.recv().await.as_ref(), Ok(&events[1]));
            assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
        }
    }

    #[tokio::test]
    async fn publish_without_subscriber_succeeds() {
        let publisher = ChannelPublisher::default();
        let events = [event(
            "op-1",
            None,
            EventType::OperationCreated,
            at_minute(1),
        )];
        assert!(publisher.publish(&events).await.is_ok());

        let mut late = publisher.subscribe();
        assert_eq!(
            late.try_recv(),
            Err(TryRecvError::Empty),
            "a subscriber must not receive events published before it subscribed"
        );
    }

    #[tokio::test]
    async fn slow_subscriber_is_told_it_lagged() {
        let publisher = ChannelPublisher::new(2);
        let mut receiver = publisher.subscribe();
        let events: Vec<Event> = (1..=3)
            .map(|minute| event("op-1", None, EventType::Retry, at_minute(minute)))
            .collect();
        publisher.publish(&events).await.expect("publish");

        assert_eq!(receiver.recv().await, Err(RecvError::Lagged(1)));
        assert_eq!(receiver.recv().await.as_ref(), Ok(&events[1]));
        assert_eq!(receiver.recv().await.as_ref(), Ok(&events[2]));
    }
}
