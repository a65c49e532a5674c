//! `osdeploy simulate`: a fleet of simulated devices against a running server.

use std::process::ExitCode;
use std::time::Duration;

use crate::simulate::{Fleet, FleetConfig};

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Base URL of the server (plain HTTP on a loopback address).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Number of devices.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Seed of every random choice; the same seed gives the same fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Minutes of server time between a device's check-ins.
    #[arg(long, default_value_t = 15)]
    pub poll_minutes: i64,
    /// Stop after this many seconds of real time.
    #[arg(long, default_value_t = 3600)]
    pub seconds: u64,
}

pub async fn run(args: SimulateArgs) -> ExitCode {
    let config = FleetConfig {
        devices: args.devices,
        seed: args.seed,
        poll_interval: jiff::SignedDuration::from_mins(args.poll_minutes),
        ..FleetConfig::default()
    };
    let mut fleet = match Fleet::new(config) {
        Ok(fleet) => fleet,
        Err(e) => return crate::report_error(&e),
    };
    if let Err(e) = fleet.enroll(&args.server).await {
        return crate::report_error(&e);
    }
    println!(
        "{} devices enrolled with {}; playing them until Ctrl-C or {} s",
        args.devices, args.server, args.seconds
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let result = fleet
        .run_until(&args.server, Duration::from_secs(args.seconds), |_| {
            stop.load(std::sync::atomic::Ordering::Relaxed)
        })
        .await;
    let stats = fleet.stats();
    println!(
        "{} requests, {} errors, {} commands answered, {} status reports, {} updates installed",
        stats.requests,
        stats.errors,
        stats.commands_answered,
        stats.status_reports_sent,
        stats.updates_installed
    );
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(crate::simulate::SimError::RunTimedOut { .. }) => ExitCode::SUCCESS,
        Err(e) => crate::report_error(&e),
    }
}
