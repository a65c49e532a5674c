//! The Lambda functions' services publish stored events to the EventBridge
//! bus named by `OSDEPLOY_EVENT_BUS`, against moto's server. A queue
//! subscribed to the bus reads back what arrived.

mod aws_support;

use std::time::Duration;

use aws_support::{client, endpoint, unique_tables};
use jiff::Timestamp;
use osdeploy_shared::adapters::aws::dynamodb::create_tables;
use osdeploy_shared::adapters::aws::{AwsSettings, DynamoStore, EventBridgePublisher};
use osdeploy_shared::domain::{EventType, OperationState, UlidGenerator};
use osdeploy_shared::ports::contract::fixtures::{at_minute, event};
use osdeploy_shared::ports::{Change, EventFilter, EventPublisher, EventStore, PageRequest};
use serde_json::Value;

/// A bus with a rule that copies every osdeploy event into a queue.
struct Bus {
    name: String,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

fn unique(prefix: &str) -> String {
    let ids = UlidGenerator::from_entropy();
    format!(
        "{prefix}-{}",
        osdeploy_shared::domain::IdGenerator::ulid(&ids, Timestamp::now()).to_lowercase()
    )
}

async fn new_bus() -> Bus {
    let sdk = AwsSettings::emulator(&endpoint()).sdk_config().await;
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let name = unique("osdeploy-bus");
    events
        .create_event_bus()
        .name(&name)
        .send()
        .await
        .expect("CreateEventBus");
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("osdeploy-bus-copy"))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url()
        .expect("queue URL")
        .to_string();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .expect("queue ARN");
    events
        .put_rule()
        .name("copy-all")
        .event_bus_name(&name)
        .event_pattern(r#"{"source": ["osdeploy"]}"#)
        .send()
        .await
        .expect("PutRule");
    events
        .put_targets()
        .rule("copy-all")
        .event_bus_name(&name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("PutTargets");
    Bus {
        name,
        sqs,
        queue_url,
    }
}

impl Bus {
    /// Reads up to `expected` messages within at most `polls` one-second receives.
    async fn received(&self, expected: usize, polls: usize) -> Vec<Value> {
        let mut messages = Vec::new();
        for _ in 0..polls {
            if messages.len() >= expected {
                break;
            }
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("ReceiveMessage");
            for message in output.messages() {
                let body = message.body().expect("message body");
                messages.push(serde_json::from_str(body).expect("message is JSON"));
            }
        }
        messages
    }
}

#[tokio::test]
async fn function_services_publish_to_bus() {
    let bus = new_bus().await;
    let tables = unique_tables("publish");
    create_tables(&client().await, &tables)
        .await
        .expect("create tables");
    let variables: std::collections::HashMap<&str, String> = [
        ("OSDEPLOY_STATE_TABLE", tables.state.clone()),
        ("OSDEPLOY_EVENTS_TABLE", tables.events.clone()),
        (
            "OSDEPLOY_EXPORTS_BUCKET",
            "osdeploy-test-exports".to_string(),
        ),
        ("OSDEPLOY_EVENT_BUS", bus.name.clone()),
        ("OSDEPLOY_AWS_ENDPOINT", endpoint()),
    ]
    .into_iter()
    .collect();
    let config = osdeploy_functions::Config::from_lookup(|name| variables.get(name).cloned())
        .expect("function configuration");
    let services = osdeploy_functions::services(&config)
        .await
        .expect("services");

    // The commit path: a device change with one event.
    let committed = event(
        "op-pub",
        Some("dev-1"),
        EventType::CommandSent,
        at_minute(1),
    );
    let change = Change {
        events: vec![committed.clone()],
        ..Change::default()
    };
    services.ports.devices.commit(change).await.expect("commit");
    // The append path: the lifecycle event the services record.
    services
        .record_state_changes(&[(
            "op-pub".to_string(),
            OperationState::Scheduled,
            OperationState::InProgress,
        )])
        .await
        .expect("record state change");

    let received = bus.received(2, 20).await;
    assert_eq!(received.len(), 2, "messages on the bus: {received:?}");
    let detail_types: Vec<&str> = received
        .iter()
        .filter_map(|m| m["detail-type"].as_str())
        .collect();
    assert!(detail_types.contains(&"command_sent"), "{detail_types:?}");
    assert!(
        detail_types.contains(&"operation_started"),
        "{detail_types:?}"
    );
    let published_ids: Vec<&str> = received
        .iter()
        .filter_map(|m| m["detail"]["id"].as_str())
        .collect();
    assert!(
        published_ids.contains(&committed.id.as_str()),
        "published ids {published_ids:?}"
    );

    // Both events are also in the audit trail, under the same ids.
    let store = DynamoStore::new(client().await, tables);
    let stored = store
        .list_events(
            "op-pub",
            &EventFilter::default(),
            at_minute(0),
            &PageRequest::first(10),
        )
        .await
        .expect("list events");
    let mut stored_ids: Vec<&str> = stored.items.iter().map(|e| e.id.as_str()).collect();
    let mut published_ids = published_ids;
    stored_ids.sort();
    published_ids.sort();
    assert_eq!(stored_ids, published_ids);
}

#[tokio::test]
async fn publish_failure_keeps_stored_event() {
    let tables = unique_tables("publish-fail");
    create_tables(&client().await, &tables)
        .await
        .expect("create tables");
    // A bus that was never created, so PutEvents fails.
    let missing_bus = unique("osdeploy-missing-bus");
    let direct = EventBridgePublisher::connect(&AwsSettings::emulator(&endpoint()), &missing_bus)
        .await
        .expect("publisher")
        .with_retry_delay(Duration::ZERO);
    let probe = [event("op-probe", None, EventType::Retry, at_minute(1))];
    assert!(
        direct.publish(&probe).await.is_err(),
        "publishing to a missing bus must fail for this test to mean anything"
    );
    let variables: std::collections::HashMap<&str, String> = [
        ("OSDEPLOY_STATE_TABLE", tables.state.clone()),
        ("OSDEPLOY_EVENTS_TABLE", tables.events.clone()),
        (
            "OSDEPLOY_EXPORTS_BUCKET",
            "osdeploy-test-exports".to_string(),
        ),
        ("OSDEPLOY_EVENT_BUS", missing_bus),
        ("OSDEPLOY_AWS_ENDPOINT", endpoint()),
    ]
    .into_iter()
    .collect();
    let config = osdeploy_functions::Config::from_lookup(|name| variables.get(name).cloned())
        .expect("function configuration");
    let services = osdeploy_functions::services(&config)
        .await
        .expect("services");

    let result = tokio::time::timeout(
        Duration::from_secs(30),
        services.record_state_changes(&[(
            "op-fail".to_string(),
            OperationState::Scheduled,
            OperationState::InProgress,
        )]),
    )
    .await
    .expect("the write finishes within 30 s");
    assert!(result.is_ok(), "the write failed: {result:?}");

    let store = DynamoStore::new(client().await, tables);
    let stored = store
        .list_events(
            "op-fail",
            &EventFilter::default(),
            at_minute(0),
            &PageRequest::first(10),
        )
        .await
        .expect("list events");
    assert_eq!(stored.items.len(), 1, "{:?}", stored.items);
}
