//! Retries, the sweep, update expiry and obsolescence on the embedded
//! SQLite store. `aws_retries.rs` runs the same scenarios on DynamoDB.

mod retry_scenarios;
mod support;

use std::time::{Duration, Instant};

use jiff::SignedDuration;
use osdeploy_shared::adapters::local_scheduler;
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

/// The loop of `osdeploy serve` sweeps on its own, from its first tick on.
#[tokio::test]
async fn local_loop_runs_sweep() {
    let harness = Harness::sqlite(ServiceConfig::default());
    let (operation, mac) = retry_scenarios::mac_in_retry(&harness).await;
    harness.advance(SignedDuration::from_mins(16));
    let pushes = harness.push.sent();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(local_scheduler::run(
        harness.services.clone(),
        harness.schedules.clone(),
        stopped,
    ));
    let started = Instant::now();
    let mut next_attempt_at = harness.target(&operation, &mac.udid).await.next_attempt_at;
    while next_attempt_at.is_some() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(local_scheduler::TICK).await;
        next_attempt_at = harness.target(&operation, &mac.udid).await.next_attempt_at;
    }
    let _ = stop.send(true);
    running.await.expect("scheduler loop stops");

    assert_eq!(next_attempt_at, None, "the loop started the due attempt");
    assert_eq!(harness.queued(&mac.udid).await, vec!["ScheduleOSUpdate"]);
    assert_eq!(
        harness.push.sent(),
        pushes + 1,
        "the device was pushed once"
    );
}
