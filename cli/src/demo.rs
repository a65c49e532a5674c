//! `osdeploy demo`: a server and a simulated fleet on a temporary database,
//! through a DDM and an MDM operation for Macs and a DDM operation for
//! iPhones, run to the end and checked against what the simulator did.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use jiff::Timestamp;
use osdeploy_shared::domain::Platform;
use osdeploy_shared::service::ServiceConfig;
use serde_json::{Value, json};

use crate::admin_client::AdminClient;
use crate::server::{self, ClockMode, ServeConfig};
use crate::simulate::{Fleet, FleetConfig, SimDevice};

/// The date of the bundled catalog snapshot, so its updates are still signed.
pub const DEMO_START: &str = "2026-08-22T09:00:00Z";

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Simulated devices (at least 500 for the full demo).
    #[arg(long, default_value_t = 600)]
    pub devices: usize,
    /// Seed of the fleet; the same seed plays the same fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many times faster than real time the server clock runs.
    #[arg(long, default_value_t = 1200.0)]
    pub speed: f64,
    /// Give up after this many seconds of real time.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// One operation of the demo.
struct DemoOperation {
    label: &'static str,
    id: String,
    targets: usize,
}

/// Errors that stop the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("server failed to start")]
    Server(#[from] server::ServeError),
    #[error("simulated fleet failed")]
    Fleet(#[from] crate::simulate::SimError),
    #[error("admin API call failed")]
    Admin(#[from] crate::admin_client::AdminError),
    #[error("could not create a temporary directory")]
    TempDir(#[source] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

/// Measurements and findings of one demo run.
#[derive(Debug, Default)]
pub struct DemoOutcome {
    /// Devices whose final status differs from the simulator's record, with both statuses.
    pub mismatches: Vec<(String, String, String)>,
    pub operations: Vec<Value>,
    pub events: BTreeMap<String, usize>,
    pub wall: Duration,
    /// Peak resident set of this process, in KiB, where the OS reports it.
    pub peak_rss_kib: Option<u64>,
}

pub async fn run(args: DemoArgs) -> ExitCode {
    match run_demo(&args).await {
        Ok(outcome) if outcome.mismatches.is_empty() => ExitCode::SUCCESS,
        Ok(outcome) => {
            eprintln!(
                "error: {} devices ended in a status other than the one the simulator drove them to",
                outcome.mismatches.len()
            );
            ExitCode::FAILURE
        }
        Err(e) => crate::report_error(&e),
    }
}

fn pick(devices: &[SimDevice], wanted: impl Fn(&SimDevice) -> bool) -> Vec<&SimDevice> {
    devices.iter().filter(|d| wanted(d)).collect()
}

fn major(device: &SimDevice) -> u32 {
    device
        .os_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Runs the whole demo and prints its summary.
pub async fn run_demo(args: &DemoArgs) -> Result<DemoOutcome, DemoError> {
    let started = Instant::now();
    if args.devices < 10 {
        return Err(DemoError::Setup(format!(
            "--devices {} is too few; use at least 10",
            args.devices
        )));
    }
    let dir = tempfile::tempdir().map_err(DemoError::TempDir)?;
    let token = "demo-admin-token".to_string();
    let start: Timestamp = DEMO_START
        .parse()
        .map_err(|e| DemoError::Setup(format!("bad start instant: {e}")))?;
    let handle = server::start(ServeConfig {
        listen: "127.0.0.1:0"
            .parse()
            .map_err(|e| DemoError::Setup(format!("bad listen address: {e}")))?,
        database: dir.path().join("demo.db"),
        catalog_file: None,
        clock: ClockMode::Accelerated {
            start,
            speed: args.speed,
        },
        admin_token: Some(token.clone()),
        service: ServiceConfig::default(),
        id_seed: Some(args.seed),
        run_scheduler: true,
    })
    .await?;
    let url = handle.url();
    let admin = AdminClient::new(&url, &token);
    println!(
        "osdeploy demo: server on {url}, clock from {DEMO_START} at {}x, {} simulated devices (seed {})",
        args.speed, args.devices, args.seed
    );

    let mut fleet = Fleet::new(FleetConfig {
        devices: args.devices,
        seed: args.seed,
        poll_interval: jiff::SignedDuration::from_mins(20),
        ..FleetConfig::default()
    })?;
    fleet.enroll(&url).await?;
    // Let the devices return their inventory before the demo chooses targets.
    for _ in 0..3 {
        fleet.tick(&url).await?;
    }

    // macOS does not report its time zone over MDM: inventory gets it.
    let macs: Vec<SimDevice> = fleet
        .devices()
        .iter()
        .filter(|d| d.platform == Platform::MacOs)
        .cloned()
        .collect();
    for mac in &macs {
        admin
            .patch(
                &format!("/devices/{}", mac.udid),
                &json!({ "time_zone": mac.time_zone }),
            )
            .await?;
    }

    let devices = fleet.devices().to_vec();
    let ddm_macs = pick(&devices, |d| {
        d.platform == Platform::MacOs && d.supervised && major(d) >= 15
    });
    let mdm_macs = pick(&devices, |d| {
        d.platform == Platform::MacOs && d.supervised && major(d) < 15
    });
    let phones = pick(&devices, |d| d.platform != Platform::MacOs && d.ddm_capable);
    let ids = |list: &[&SimDevice]| list.iter().map(|d| d.udid.clone()).collect::<Vec<_>>();
    // Local time anywhere is at most UTC+14, so a wall-clock time 16 hours
    // past the current UTC time is still ahead in every device's zone.
    let now = handle.services.now();
    let deadline = (now + jiff::SignedDuration::from_hours(16))
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .datetime()
        .round(jiff::Unit::Hour)
        .map_err(|e| DemoError::Setup(format!("could not compute the deadline: {e}")))?
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let plans = [
        (
            "macOS DDM",
            json!({
                "update": { "product_version": fleet.config().targets.macos.version },
                "protocol": "ddm",
                "targets": { "device_ids": ids(&ddm_macs) },
                "install": { "method": "enforce_at_schedule", "local_date_time": deadline.as_str(), "time_zone": "device_local", "add_to_catalog": true },
            }),
        ),
        (
            "macOS MDM",
            json!({
                "update": { "product_version": fleet.config().targets.macos.version },
                "protocol": "mdm",
                "targets": { "device_ids": ids(&mdm_macs) },
                "install": {
                    "method": "enforce_at_schedule",
                    "local_date_time": deadline.as_str(),
                    "time_zone": "device_local",
                    // NotifyOnly nudges 8 and 4 hours before each zone's deadline.
                    "reminders": [{ "hours_before": 8, "repeat_every_hours": 4 }],
                },
            }),
        ),
        (
            "iOS DDM",
            json!({
                "update": { "product_version": fleet.config().targets.ios.version },
                "protocol": "ddm",
                "targets": { "device_ids": ids(&phones) },
                "install": { "method": "install_immediately" },
            }),
        ),
    ];
    let mut operations = Vec::new();
    for (label, body) in plans {
        let preview = admin.post("/operations/preview", &body).await?;
        let incompatible = preview["incompatible"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        if incompatible > 0 {
            return Err(DemoError::Setup(format!(
                "{label}: {incompatible} devices incompatible: {}",
                preview["incompatible"]
            )));
        }
        let created = admin.post("/operations", &body).await?;
        let id = created["id"].as_str().unwrap_or_default().to_string();
        let targets = created["total_devices"].as_u64().unwrap_or(0) as usize;
        println!(
            "created {label} operation {id}: {} to {targets} devices",
            created["update"]["name"].as_str().unwrap_or("?")
        );
        operations.push(DemoOperation { label, id, targets });
    }

    let finished = Arc::new(AtomicBool::new(false));
    let monitor = tokio::spawn(monitor(
        admin.clone(),
        operations
            .iter()
            .map(|o| (o.label, o.id.clone(), o.targets))
            .collect(),
        finished.clone(),
    ));
    let run = fleet
        .run_until(&url, Duration::from_secs(args.timeout), |_| {
            finished.load(Ordering::Relaxed)
        })
        .await;
    finished.store(true, Ordering::Relaxed);
    let _ = monitor.await;
    run?;

    // Compare every target's final status with the simulator's record.
    let mut outcome = DemoOutcome::default();
    println!();
    for operation in &operations {
        let overview = admin.get(&format!("/operations/{}", operation.id)).await?;
        let targets = admin
            .all(&format!("/operations/{}/devices", operation.id))
            .await?;
        for target in &targets {
            let udid = target["device_id"].as_str().unwrap_or_default();
            let actual = target["status"].as_str().unwrap_or_default();
            let expected = fleet.expected_status(udid).unwrap_or("(none)");
            if actual != expected {
                outcome.mismatches.push((
                    udid.to_string(),
                    expected.to_string(),
                    actual.to_string(),
                ));
            }
        }
        let events = admin
            .all(&format!("/operations/{}/events", operation.id))
            .await?;
        let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
        for event in &events {
            *by_type
                .entry(event["type"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        print_summary(operation, &overview, events.len(), &by_type);
        for (event_type, n) in by_type {
            *outcome.events.entry(event_type).or_default() += n;
        }
        outcome.operations.push(overview);
    }
    print_dashboard(&admin).await?;
    if let Some(operation) = operations.first() {
        print_export(&admin, operation).await?;
    }
    let stats = fleet.stats();
    outcome.wall = started.elapsed();
    outcome.peak_rss_kib = peak_rss_kib();
    println!(
        "fleet: {} devices, {} requests, {} errors, {} commands answered, {} status reports, {} NotNow, {} failures injected, {} user installs",
        stats.devices,
        stats.requests,
        stats.errors,
        stats.commands_answered,
        stats.status_reports_sent,
        stats.not_nows,
        stats.failures_injected,
        stats.user_early_installs
    );
    println!(
        "wall time {:.1} s, server clock now {}, peak memory {}",
        outcome.wall.as_secs_f64(),
        handle
            .services
            .now()
            .round(jiff::Unit::Second)
            .unwrap_or(handle.services.now()),
        outcome
            .peak_rss_kib
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "unknown".into())
    );
    if outcome.mismatches.is_empty() {
        println!("every device ended in the status the simulator drove it to");
    } else {
        println!(
            "{} devices differ from the simulator's record (device: expected, server):",
            outcome.mismatches.len()
        );
        for (udid, expected, actual) in outcome.mismatches.iter().take(20) {
            println!("  {udid}: expected {expected}, server says {actual}");
        }
    }
    handle.stop().await;
    Ok(outcome)
}

fn print_summary(
    operation: &DemoOperation,
    overview: &Value,
    events: usize,
    by_type: &BTreeMap<String, usize>,
) {
    let counts: Vec<String> = overview["counts"]
        .as_object()
        .map(|counts| {
            counts
                .iter()
                .filter(|(_, n)| n.as_i64().unwrap_or(0) > 0)
                .map(|(status, n)| format!("{status} {n}"))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "{} ({}): {}, {} of {} devices completed in {} s of server time: {}",
        operation.label,
        operation.id,
        overview["state"].as_str().unwrap_or("?"),
        overview["completed_devices"],
        overview["total_devices"],
        overview["elapsed_seconds"],
        counts.join(", ")
    );
    let notable: Vec<String> = [
        "retry",
        "reminder_sent",
        "download_failed",
        "installation_failed",
        "user_approval",
        "command_not_now",
        "obsolete",
        "deprecated",
        "unknown_value",
        "report_ignored",
    ]
    .iter()
    .filter_map(|t| by_type.get(*t).map(|n| format!("{t} {n}")))
    .collect();
    println!("  {events} events recorded ({})", notable.join(", "));
}

/// Prints the dashboard summary of the demo's period, each figure with the
/// list query that reproduces it.
async fn print_dashboard(admin: &AdminClient) -> Result<(), DemoError> {
    let summary = admin
        .get(&format!("/operations/summary?from={DEMO_START}"))
        .await?;
    let figure = |value: &Value| value["count"].as_u64().unwrap_or(0);
    let group = |name: &str| -> String {
        summary[name]
            .as_object()
            .map(|figures| {
                figures
                    .iter()
                    .map(|(key, value)| format!("{key} {}", figure(value)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    println!(
        "dashboard since {DEMO_START}: {} operations ({}); by type: {}; by protocol: {}",
        figure(&summary["total"]),
        group("by_state"),
        group("by_type"),
        group("by_protocol")
    );
    if let Some(href) = summary["by_state"]["finished"]["href"].as_str() {
        println!("  finished operations list: {href}");
    }
    Ok(())
}

/// Exports an operation's events to CSV through the export job and prints
/// the signed download link.
async fn print_export(admin: &AdminClient, operation: &DemoOperation) -> Result<(), DemoError> {
    let queued = admin
        .post(
            "/exports",
            &json!({ "kind": "events", "operation_id": operation.id }),
        )
        .await?;
    let id = queued["id"].as_str().unwrap_or_default().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let export = admin.get(&format!("/exports/{id}")).await?;
        match export["state"].as_str() {
            Some("done") => {
                let url = export["url"].as_str().unwrap_or_default();
                // Fetch the link as a browser would: no bearer token, the
                // signature in the URL is the credential.
                let body = reqwest::get(url)
                    .await
                    .and_then(|response| response.error_for_status())
                    .map_err(|e| DemoError::Setup(format!("failed to download export {id}: {e}")))?
                    .bytes()
                    .await
                    .map_err(|e| {
                        DemoError::Setup(format!("failed to download export {id}: {e}"))
                    })?;
                println!(
                    "export {id}: {} events of {} as CSV ({} bytes downloaded), link valid until {}:\n  {url}",
                    export["rows"],
                    operation.label,
                    body.len(),
                    export["expires_at"].as_str().unwrap_or("?"),
                );
                return Ok(());
            }
            Some("failed") => {
                return Err(DemoError::Setup(format!(
                    "export {id} failed: {}",
                    export["error"]
                )));
            }
            _ if Instant::now() > deadline => {
                return Err(DemoError::Setup(format!(
                    "export {id} timed out: not done within 60 s ({export})"
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Shows progress until every operation finished or `finished` is set.
async fn monitor(
    admin: AdminClient,
    operations: Vec<(&'static str, String, usize)>,
    finished: Arc<AtomicBool>,
) {
    let terminal = std::io::stdout().is_terminal();
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos:>4}/{len:4} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let progress: Vec<ProgressBar> = operations
        .iter()
        .map(|(label, _, total)| {
            let bar = if terminal {
                bars.add(ProgressBar::new(*total as u64))
            } else {
                ProgressBar::hidden()
            };
            bar.set_style(style.clone());
            bar.set_prefix(*label);
            bar
        })
        .collect();
    let mut last_line = Instant::now() - Duration::from_secs(60);
    while !finished.load(Ordering::Relaxed) {
        let mut all_done = true;
        let mut lines = Vec::new();
        for ((label, id, _), bar) in operations.iter().zip(&progress) {
            let Ok(overview) = admin.get(&format!("/operations/{id}")).await else {
                all_done = false;
                continue;
            };
            let state = overview["state"].as_str().unwrap_or("?").to_string();
            let completed = overview["completed_devices"].as_u64().unwrap_or(0);
            bar.set_position(completed);
            bar.set_message(state.clone());
            lines.push(format!(
                "{label}: {state} {completed}/{}",
                overview["total_devices"]
            ));
            all_done &= state == "finished";
        }
        if !terminal && last_line.elapsed() >= Duration::from_secs(5) {
            println!("progress: {}", lines.join("; "));
            last_line = Instant::now();
        }
        if all_done {
            finished.store(true, Ordering::Relaxed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for bar in progress {
        bar.finish();
    }
}

/// Peak resident set size of this process (`VmHWM`), in KiB, on Linux.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}
