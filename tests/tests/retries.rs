//! Retries, the sweep, update expiry and obsolescence on the embedded
//! SQLite store. `aws_retries.rs` runs the same scenarios on DynamoDB.

mod retry_scenarios;
mod support;

use osdeploy_shared::service::ServiceConfig;
use retry_scenarios::Harness;

#[tokio::test]
async fn mdm_retries_until_failed() {
    retry_scenarios::mdm_retries_until_failed(&Harness::sqlite(ServiceConfig::default())).await;
}

#[tokio::test]
async fn ddm_retry_syncs_device() {
    retry_scenarios::ddm_retry_syncs_device(&Harness::sqlite(ServiceConfig::default())).await;
}

#[tokio::test]
async fn stalled_targets_pushed_then_failed() {
    retry_scenarios::stalled_targets_pushed_then_failed(&Harness::sqlite(ServiceConfig::default()))
        .await;
}

#[tokio::test]
async fn expiry_deprecates_waiting_targets() {
    retry_scenarios::expiry_deprecates_waiting_targets(&Harness::sqlite(ServiceConfig::default()))
        .await;
}

#[tokio::test]
async fn devices_at_target_become_obsolete() {
    retry_scenarios::devices_at_target_become_obsolete(&Harness::sqlite(ServiceConfig::default()))
        .await;
}
