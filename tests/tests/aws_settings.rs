//! Installation settings (reminders, user-initiated installs, imports) on
//! DynamoDB and EventBridge Scheduler, both on the local emulator (moto).
//! The scenarios are the ones `settings_sqlite.rs` runs on SQLite. moto
//! stores schedules without firing them, so the harness reads the due ones
//! back through the adapter and runs their jobs.

mod aws_support;
mod settings_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use osdeploy_shared::adapters::RecordedPush;
use osdeploy_shared::adapters::aws::{AwsSettings, EventBridgeScheduler, SchedulerSettings};
use osdeploy_shared::service::Ports;
use settings_support::Harness;

const TARGET_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:osdeploy-scheduled-job";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/osdeploy-scheduler";

static GROUPS: AtomicU64 = AtomicU64::new(0);

/// Creates fresh tables and a fresh schedule group, and services over them.
async fn harness(label: &str) -> Harness {
    let settings = AwsSettings::emulator(&aws_support::endpoint());
    let client = aws_support::client().await;
    let store = Arc::new(aws_support::fresh_store(&client, label).await);

    let group = format!(
        "osdeploy-settings-{}-{}",
        std::process::id(),
        GROUPS.fetch_add(1, Ordering::Relaxed)
    );
    aws_sdk_scheduler::Client::new(&settings.sdk_config().await)
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateScheduleGroup {group}: {e:?}"));
    let scheduler = Arc::new(
        EventBridgeScheduler::connect(
            &settings,
            SchedulerSettings {
                group_name: group,
                target_arn: TARGET_ARN.to_string(),
                role_arn: ROLE_ARN.to_string(),
            },
        )
        .await
        .expect("scheduler settings"),
    );
    let ports = Ports {
        devices: store.clone(),
        groups: store.clone(),
        operations: store.clone(),
        events: store.clone(),
        scheduler: scheduler.clone(),
        schedules: None,
        catalogs: store,
        push: Arc::new(RecordedPush::default()),
        publisher: Arc::new(osdeploy_shared::adapters::ChannelPublisher::default()),
        blobs: Arc::new(osdeploy_shared::adapters::MemoryBlobStore::new()),
    };
    Harness::new(ports, scheduler)
}

#[tokio::test]
async fn mdm_reminders_fire_per_zone() {
    settings_support::mdm_reminders_fire_per_zone(&harness("reminders").await).await;
}

#[tokio::test]
async fn mdm_iphone_gets_no_notify_only() {
    settings_support::mdm_iphone_gets_no_notify_only(&harness("reminders-ios").await).await;
}

#[tokio::test]
async fn ddm_reminders_are_audit_events() {
    settings_support::ddm_reminders_are_audit_events(&harness("reminders-ddm").await).await;
}

#[tokio::test]
async fn user_installs_are_recorded() {
    settings_support::user_installs_are_recorded(&harness("user-installs").await).await;
}

#[tokio::test]
async fn import_creates_migrated_operation() {
    settings_support::import_creates_migrated_operation(&harness("import").await).await;
}

#[tokio::test]
async fn ddm_install_reason_is_user_approval() {
    settings_support::ddm_install_reason_is_user_approval(&harness("user-approval").await).await;
}

#[tokio::test]
async fn ddm_deferral_hides_update() {
    settings_support::ddm_deferral_hides_update(&harness("deferral").await).await;
}
