//! The in-process scheduler for `osdeploy serve`: schedules live in the
//! store, so a restart loses none; a loop fires the due ones.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use crate::ports::{Job, ScheduleStore};
use crate::service::Services;

/// How often the loop looks for due schedules, in real time.
pub const TICK: Duration = Duration::from_millis(100);

/// How often expired events are purged, in service-clock time.
pub const PURGE_EVERY: SignedDuration = SignedDuration::from_hours(24);

/// How often the retry and stall sweep runs, in service-clock time.
pub const SWEEP_EVERY: SignedDuration = SignedDuration::from_mins(5);

/// Runs due schedules until `shutdown` turns true. Each schedule is removed
/// after its job ran; a job that fails is logged and retried on the next tick.
pub async fn run(
    services: Arc<Services>,
    schedules: Arc<dyn ScheduleStore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next_purge: Option<Timestamp> = None;
    let mut next_sweep: Option<Timestamp> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        if let Err(e) = services.flush_last_seen().await {
            tracing::warn!(error = %e, "could not record last-seen times");
        }
        tick(&services, schedules.as_ref()).await;
        let now = services.now();
        if next_purge.is_none_or(|at| at <= now) {
            match services.run_job(&Job::PurgeEvents).await {
                Ok(report) if report.purged > 0 => {
                    tracing::info!(count = report.purged, "expired events purged")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "event purge failed"),
            }
            next_purge = Some(now + PURGE_EVERY);
        }
        if next_sweep.is_none_or(|at| at <= now) {
            sweep(&services).await;
            next_sweep = Some(now + SWEEP_EVERY);
        }
    }
    if let Err(e) = services.flush_last_seen().await {
        tracing::warn!(error = %e, "could not record last-seen times at shutdown");
    }
}

/// Runs the retry and stall sweep once, logging its failure.
pub async fn sweep(services: &Services) {
    match services.run_job(&Job::Sweep).await {
        Ok(report) => tracing::debug!(
            retried = report.retried,
            pushed = report.pushed,
            stalled = report.stalled,
            "sweep ran"
        ),
        Err(e) => tracing::warn!(error = %e, "sweep failed; running it again at the next interval"),
    }
}

/// Runs every schedule due now, once. Returns how many ran.
pub async fn tick(services: &Services, schedules: &dyn ScheduleStore) -> usize {
    let now = services.now();
    let due = match schedules.due(now, 100).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "could not read due schedules");
            return 0;
        }
    };
    let mut ran = 0;
    for schedule in due {
        match services.run_job(&schedule.job).await {
            Ok(report) => {
                tracing::debug!(schedule = %schedule.id, count = report.targets, "schedule ran");
                if let Err(e) = schedules.remove(&schedule.id).await {
                    tracing::warn!(schedule = %schedule.id, error = %e, "could not remove a schedule that ran");
                }
                ran += 1;
            }
            Err(e) => {
                tracing::warn!(schedule = %schedule.id, error = %e, "schedule failed; retrying on the next tick")
            }
        }
    }
    ran
}
