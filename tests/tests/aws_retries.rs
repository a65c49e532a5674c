//! Retries, the sweep, update expiry and obsolescence on DynamoDB, with
//! schedules in EventBridge Scheduler, both on moto. `retries.rs` runs the
//! same scenarios on SQLite.
//!
//! moto stores schedules but never fires them, so the scenarios list the
//! due ones and run their jobs, as the scheduled-job function would.

mod aws_support;
mod retry_scenarios;
mod support;

use std::sync::Arc;

use osdeploy_shared::adapters::RecordedPush;
use osdeploy_shared::adapters::aws::{AwsSettings, EventBridgeScheduler, SchedulerSettings};
use osdeploy_shared::service::{Ports, ServiceConfig};
use retry_scenarios::Harness;

const TARGET_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:osdeploy-scheduled-job";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/osdeploy-scheduler";

/// Returns a schedule group name no other run uses (at most 64 characters).
fn unique_group_name(label: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("osdeploy-{label}-{}-{millis}", std::process::id())
}

/// Services on fresh DynamoDB tables and a fresh schedule group.
async fn aws_harness(label: &str) -> Harness {
    harness_with(aws_support::client().await, label).await
}

async fn harness_with(client: aws_sdk_dynamodb::Client, label: &str) -> Harness {
    let endpoint = aws_support::endpoint();
    let store = Arc::new(aws_support::fresh_store(&client, label).await);

    let sdk = AwsSettings::emulator(&endpoint).sdk_config().await;
    let scheduler_client = aws_sdk_scheduler::Client::new(&sdk);
    let group = unique_group_name(label);
    if let Err(error) = scheduler_client
        .create_schedule_group()
        .name(&group)
        .send()
        .await
    {
        panic!("creating schedule group {group} on the emulator at {endpoint} failed: {error:?}");
    }
    let scheduler = Arc::new(
        EventBridgeScheduler::new(
            scheduler_client,
            SchedulerSettings {
                group_name: group,
                target_arn: TARGET_ARN.to_string(),
                role_arn: ROLE_ARN.to_string(),
            },
        )
        .expect("scheduler settings"),
    );

    let push = Arc::new(RecordedPush::default());
    let clock = retry_scenarios::start_clock();
    let ports = Ports {
        devices: store.clone(),
        groups: store.clone(),
        operations: store.clone(),
        events: store.clone(),
        scheduler: scheduler.clone(),
        schedules: None,
        catalogs: store,
        push: push.clone(),
        publisher: Arc::new(osdeploy_shared::adapters::ChannelPublisher::default()),
        blobs: Arc::new(osdeploy_shared::adapters::MemoryBlobStore::new()),
    };
    Harness {
        services: retry_scenarios::services(ports, clock.clone(), ServiceConfig::default()),
        clock,
        push,
        schedules: scheduler,
    }
}

#[tokio::test]
async fn mdm_retries_until_failed() {
    retry_scenarios::mdm_retries_until_failed(&aws_harness("retry-mdm").await).await;
}

#[tokio::test]
async fn ddm_retry_syncs_device() {
    retry_scenarios::ddm_retry_syncs_device(&aws_harness("retry-ddm").await).await;
}

#[tokio::test]
async fn stalled_targets_pushed_then_failed() {
    retry_scenarios::stalled_targets_pushed_then_failed(&aws_harness("stall").await).await;
}

#[tokio::test]
async fn expiry_deprecates_waiting_targets() {
    retry_scenarios::expiry_deprecates_waiting_targets(&aws_harness("expiry").await).await;
}

#[tokio::test]
async fn devices_at_target_become_obsolete() {
    retry_scenarios::devices_at_target_become_obsolete(&aws_harness("obsolete").await).await;
}

#[tokio::test]
async fn sweep_reads_without_scan() {
    let (client, calls) = aws_support::recording_client().await;
    let harness = harness_with(client, "sweep-calls").await;
    retry_scenarios::stalled_targets_pushed_then_failed(&harness).await;

    calls.take();
    let report = harness.sweep().await;
    assert_eq!(report.pushed, 0, "the stalled attempt is under way again");
    assert_eq!(calls.count("Scan"), 0, "the sweep never scans");
    assert!(calls.count("Query") > 0, "the sweep queries the lists");
}
