//! Installation settings (reminders, user-initiated installs, imports) on
//! the embedded SQLite store. `aws_settings.rs` runs the same scenarios on
//! DynamoDB and EventBridge Scheduler.

mod settings_support;

use std::sync::Arc;

use osdeploy_shared::adapters::{RecordedPush, SqliteStore};
use osdeploy_shared::service::Ports;
use settings_support::Harness;

fn harness() -> Harness {
    let store = Arc::new(SqliteStore::in_memory().expect("in-memory SQLite"));
    let ports = Ports::from_store(
        store.clone(),
        Arc::new(RecordedPush::default()),
        Arc::new(osdeploy_shared::adapters::MemoryBlobStore::new()),
        Arc::new(osdeploy_shared::adapters::ChannelPublisher::default()),
    );
    Harness::new(ports, store)
}

#[tokio::test]
async fn mdm_reminders_fire_per_zone() {
    settings_support::mdm_reminders_fire_per_zone(&harness()).await;
}

#[tokio::test]
async fn mdm_iphone_gets_no_notify_only() {
    settings_support::mdm_iphone_gets_no_notify_only(&harness()).await;
}

#[tokio::test]
async fn ddm_reminders_are_audit_events() {
    settings_support::ddm_reminders_are_audit_events(&harness()).await;
}

#[tokio::test]
async fn user_installs_are_recorded() {
    settings_support::user_installs_are_recorded(&harness()).await;
}

#[tokio::test]
async fn import_creates_migrated_operation() {
    settings_support::import_creates_migrated_operation(&harness()).await;
}

#[tokio::test]
async fn ddm_install_reason_is_user_approval() {
    settings_support::ddm_install_reason_is_user_approval(&harness()).await;
}

#[tokio::test]
async fn ddm_deferral_hides_update() {
    settings_support::ddm_deferral_hides_update(&harness()).await;
}
