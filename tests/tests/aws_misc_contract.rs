//! The S3, EventBridge Scheduler and EventBridge adapters against moto's
//! server: the blob and scheduler contract suites, the settings each
//! schedule and object is written with, and events read back from a queue
//! subscribed to the bus.
//!
//! moto checks request shapes and stores what it is given. It does not
//! verify signatures, time zones or schedule expressions, so the adapters'
//! unit tests cover those.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::types::{
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindowMode};
use jiff::SignedDuration;
use jiff::civil::date;
use osdeploy_shared::adapters::aws::scheduler::schedule_name;
use osdeploy_shared::adapters::aws::{
    AwsSettings, EventBridgePublisher, EventBridgeScheduler, S3BlobStore, SchedulerSettings,
};
use osdeploy_shared::domain::deadline::{deadline_instant, parse_time_zone};
use osdeploy_shared::domain::{Event, EventType};
use osdeploy_shared::ports::contract::fixtures::{at_minute, event};
use osdeploy_shared::ports::contract::{blobs, schedules};
use osdeploy_shared::ports::{
    BlobStore, EventPublisher, Job, Schedule, ScheduleStore, Scheduler, StoreError,
};

const TARGET_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:osdeploy-enforce";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/osdeploy-scheduler";

/// Returns the emulator endpoint. Fails, never skips, when it is not set,
/// and rejects any address off this machine because the tests create and
/// delete resources there.
fn endpoint() -> String {
    let endpoint = match std::env::var("OSDEPLOY_TEST_AWS_ENDPOINT") {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "OSDEPLOY_TEST_AWS_ENDPOINT is not set: these tests need moto's server. Run \
             `make test`, or run `scripts/moto.sh start` and then \
             `export OSDEPLOY_TEST_AWS_ENDPOINT=http://127.0.0.1:$(cat .moto.port)`"
        ),
    };
    let local = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|prefix| endpoint.starts_with(prefix));
    assert!(
        local,
        "OSDEPLOY_TEST_AWS_ENDPOINT={endpoint:?} is not a local emulator: point it at \
         http://127.0.0.1:<port> where scripts/moto.sh started moto"
    );
    endpoint
}

fn settings() -> AwsSettings {
    AwsSettings::emulator(&endpoint())
}

/// Returns a name unique within this run and unlikely to repeat across runs
/// against the same moto: `<prefix>-<process id>-<counter>-<nanoseconds>`.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn s3_client() -> aws_sdk_s3::Client {
    let sdk_config = settings().sdk_config().await;
    let config = aws_sdk_s3::config::Builder::from(&sdk_config)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Creates a bucket with default encryption (SSE-S3) and every public
/// access blocked, the settings of the production export bucket, and
/// returns a store on it.
async fn new_bucket_store() -> S3BlobStore {
    let store = new_plain_bucket_store().await;
    let client = s3_client().await;
    let bucket = store.bucket().to_string();
    let by_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .expect("encryption default");
    let encryption = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(by_default)
                .build(),
        )
        .build()
        .expect("encryption configuration");
    client
        .put_bucket_encryption()
        .bucket(&bucket)
        .server_side_encryption_configuration(encryption)
        .send()
        .await
        .expect("PutBucketEncryption");
    client
        .put_public_access_block()
        .bucket(&bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .expect("PutPublicAccessBlock");
    store
}

/// Creates a bucket without default encryption and returns a store on it.
async fn new_plain_bucket_store() -> S3BlobStore {
    let bucket = unique_name("osdeploy-exports");
    s3_client()
        .await
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket");
    S3BlobStore::connect(&settings(), bucket).await
}

async fn scheduler_client() -> aws_sdk_scheduler::Client {
    aws_sdk_scheduler::Client::new(&settings().sdk_config().await)
}

/// Creates a schedule group and returns a scheduler on it.
async fn new_group_scheduler() -> EventBridgeScheduler {
    let group = unique_name("osdeploy-schedules");
    scheduler_client()
        .await
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .expect("CreateScheduleGroup");
    let scheduler = EventBridgeScheduler::connect(
        &settings(),
        SchedulerSettings {
            group_name: group,
            target_arn: TARGET_ARN.to_string(),
            role_arn: ROLE_ARN.to_string(),
        },
    )
    .await;
    scheduler.expect("scheduler settings")
}

#[tokio::test]
async fn blob_contract_on_s3() {
    blobs::run_all(new_bucket_store).await;
}

#[tokio::test]
async fn s3_objects_use_sse_aes256() {
    // moto applies a bucket's default encryption to every object, so only a
    // bucket without one shows that the adapter requests SSE itself.
    let store = new_plain_bucket_store().await;
    store
        .put(
            "exports/op-1/targets.csv",
            "text/csv",
            b"udid\nA1\n".to_vec(),
        )
        .await
        .expect("put");
    let head = s3_client()
        .await
        .head_object()
        .bucket(store.bucket())
        .key("exports/op-1/targets.csv")
        .send()
        .await
        .expect("HeadObject");

    assert_eq!(
        head.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    assert_eq!(head.content_type(), Some("text/csv"));
}

#[tokio::test]
async fn presigned_url_downloads_object() {
    let store = new_bucket_store().await;
    let body = b"udid,status\nA1,installed\n".to_vec();
    store
        .put("exports/op-1/targets.csv", "text/csv", body.clone())
        .await
        .expect("put");
    let url = store
        .download_url("exports/op-1/targets.csv", SignedDuration::from_mins(5))
        .await
        .expect("download_url");

    // A plain GET with no credentials but the URL's own: moto routes it to
    // the object (it does not check the signature).
    let response = reqwest::get(&url).await.expect("GET presigned URL");
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    let downloaded = response.bytes().await.expect("body");
    assert_eq!(downloaded.to_vec(), body);
}

#[tokio::test]
async fn schedule_contract_on_eventbridge_scheduler() {
    schedules::run_all(new_group_scheduler).await;
}

#[tokio::test]
async fn deadline_schedule_settings() {
    let scheduler = new_group_scheduler().await;
    // 02:30 does not exist in Berlin on 2026-03-29; the deadline is 03:30
    // CEST, the instant the local scheduler uses.
    let berlin = parse_time_zone("Europe/Berlin").expect("zone");
    let due_at = deadline_instant(date(2026, 3, 29).at(2, 30, 0, 0), &berlin);
    let operation_id = "01KBZK4Q7YJ4T9V2M8P6N3R5WX";
    let schedule = Schedule {
        id: format!("deadline:{operation_id}:Europe/Berlin"),
        due_at,
        job: Job::MdmDeadline {
            operation_id: operation_id.to_string(),
            time_zone: "Europe/Berlin".to_string(),
        },
    };
    scheduler.schedule(&schedule).await.expect("schedule");

    let name = schedule_name(&schedule.id, &schedule.job).expect("name");
    let stored = scheduler_client()
        .await
        .get_schedule()
        .name(&name)
        .group_name(&scheduler.settings().group_name)
        .send()
        .await
        .expect("GetSchedule");
    let target = stored.target().expect("target");
    let input: Schedule =
        serde_json::from_str(target.input().expect("input")).expect("input is a Schedule");

    assert_eq!(
        stored.schedule_expression(),
        Some("at(2026-03-29T03:30:00)")
    );
    assert_eq!(stored.schedule_expression_timezone(), Some("Europe/Berlin"));
    assert_eq!(
        stored.action_after_completion(),
        Some(&ActionAfterCompletion::Delete)
    );
    assert_eq!(
        stored.flexible_time_window().map(|w| w.mode()),
        Some(&FlexibleTimeWindowMode::Off)
    );
    assert_eq!(target.arn(), TARGET_ARN);
    assert_eq!(target.role_arn(), ROLE_ARN);
    assert_eq!(
        input, schedule,
        "the input must carry the id, instant and job"
    );
    assert_eq!(
        stored.group_name(),
        Some(scheduler.settings().group_name.as_str())
    );
}

#[tokio::test]
async fn unknown_zone_is_rejected_before_calling() {
    let scheduler = new_group_scheduler().await;
    let schedule = Schedule {
        id: "deadline:op-1:Mars/Olympus_Mons".to_string(),
        due_at: at_minute(60),
        job: Job::MdmDeadline {
            operation_id: "op-1".to_string(),
            time_zone: "Mars/Olympus_Mons".to_string(),
        },
    };
    let result = scheduler.schedule(&schedule).await;

    assert!(
        matches!(result, Err(StoreError::InvalidInput(_))),
        "an unknown zone must be rejected, got {result:?}"
    );
    assert_eq!(
        scheduler.all().await.expect("all"),
        Vec::new(),
        "nothing may be written for a rejected schedule"
    );
}

/// An event bus whose events also land in an SQS queue, so the test can
/// read back what the publisher sent.
struct Bus {
    publisher: EventBridgePublisher,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

async fn new_bus() -> Bus {
    let sdk_config = settings().sdk_config().await;
    let events = aws_sdk_eventbridge::Client::new(&sdk_config);
    let sqs = aws_sdk_sqs::Client::new(&sdk_config);

    let bus_name = unique_name("osdeploy-events");
    events
        .create_event_bus()
        .name(&bus_name)
        .send()
        .await
        .expect("CreateEventBus");

    let queue_url = sqs
        .create_queue()
        .queue_name(unique_name("osdeploy-events-copy"))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url()
        .expect("queue URL")
        .to_string();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes");
    let queue_arn = attributes
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("queue ARN")
        .clone();

    events
        .put_rule()
        .name("copy-osdeploy-events")
        .event_bus_name(&bus_name)
        .event_pattern(r#"{"source": ["osdeploy"]}"#)
        .send()
        .await
        .expect("PutRule");
    events
        .put_targets()
        .rule("copy-osdeploy-events")
        .event_bus_name(&bus_name)
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

    let publisher = EventBridgePublisher::new(events, bus_name)
        .expect("bus name")
        .with_retry_delay(Duration::ZERO);
    Bus {
        publisher,
        sqs,
        queue_url,
    }
}

impl Bus {
    /// Reads messages until there are `expected` of them or `polls`
    /// receives of up to one second each have passed.
    async fn received(&self, expected: usize, polls: usize) -> Vec<serde_json::Value> {
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

/// Returns 23 events (three requests of at most ten) with two of about
/// 100 KiB, so that the size limit also splits a request.
fn published_events() -> Vec<Event> {
    let mut events: Vec<Event> = (0..23)
        .map(|i| {
            let kind = EventType::ALL[i % EventType::ALL.len()];
            event(
                "op-1",
                Some(&format!("dev-{i:02}")),
                kind,
                at_minute(i as i64),
            )
        })
        .collect();
    for big in &mut events[3..5] {
        big.details = serde_json::json!({ "padding": "x".repeat(100 * 1024) });
    }
    events
}

#[tokio::test]
async fn published_events_reach_bus_rules() {
    let bus = new_bus().await;
    let events = published_events();
    bus.publisher.publish(&events).await.expect("publish");
    let received = bus.received(events.len(), 20).await;

    assert_eq!(received.len(), events.len(), "every event must arrive once");
    let mut decoded: Vec<Event> = received
        .iter()
        .map(|m| serde_json::from_value(m["detail"].clone()).expect("detail is an Event"))
        .collect();
    decoded.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        decoded, events,
        "each detail must be the event as published"
    );
    for message in &received {
        let detail_type = message["detail"]["type"].as_str().expect("type");
        let time: jiff::Timestamp = message["time"]
            .as_str()
            .expect("time")
            .parse()
            .expect("time is RFC 3339");
        let at: jiff::Timestamp = message["detail"]["at"]
            .as_str()
            .expect("at")
            .parse()
            .expect("at is RFC 3339");
        assert_eq!(message["source"], "osdeploy");
        assert_eq!(message["detail-type"], detail_type);
        assert_eq!(time, at, "Time must be the event's time");
    }
}

#[tokio::test]
async fn oversized_event_is_not_published() {
    let bus = new_bus().await;
    let mut events = published_events();
    events[0].details = serde_json::json!({ "padding": "x".repeat(300 * 1024) });
    let result = bus.publisher.publish(&events).await;

    assert!(
        matches!(result, Err(StoreError::InvalidInput(_))),
        "an event over 256 KiB must be rejected, got {result:?}"
    );
    assert_eq!(
        bus.received(1, 2).await.len(),
        0,
        "no event of a rejected list may be sent"
    );
}

#[tokio::test]
async fn publish_to_missing_bus_fails() {
    let sdk_config = settings().sdk_config().await;
    let publisher = EventBridgePublisher::new(
        aws_sdk_eventbridge::Client::new(&sdk_config),
        unique_name("osdeploy-no-such-bus"),
    )
    .expect("bus name")
    .with_retry_delay(Duration::ZERO);
    let events = [event(
        "op-1",
        None,
        EventType::OperationCreated,
        at_minute(1),
    )];
    let result = publisher.publish(&events).await;

    assert!(
        matches!(result, Err(StoreError::Backend { .. })),
        "publishing to a bus that does not exist must fail, got {result:?}"
    );
}
