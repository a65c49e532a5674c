//! The export phase of `osdeploy-bench`: events exports of growing size on
//! the local server, with rows per second and peak resident memory.
//!
//! Each size gets its own database. The bench enrolls one device, creates
//! an operation for it and appends the events straight to the store,
//! untimed. Then it stops that server and starts itself again as a child
//! process (`--export-child-database`) on the same database. The child
//! starts a server, requests the export over HTTP and runs the export job
//! itself. Only the job is timed: paging through SQLite, writing the CSV
//! and copying it into the blob folder.
//!
//! Seeding 100,000 events grows the seeding process's heap, and freed heap
//! stays resident, so the export runs in a fresh process whose memory
//! reflects the export alone. The child reports its whole-process peak
//! (`VmHWM` at exit), and the peak of the job alone: `VmHWM` after it was
//! reset by writing `5` to `/proc/self/clear_refs` just before the job.
//! Linux only; on other systems the memory columns read "n/a".

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use osdeploy_cli::server::{self, ClockMode, ServeConfig, ServerHandle};
use osdeploy_shared::domain::{Actor, EVENT_RETENTION, Event, EventType};
use osdeploy_shared::ports::{EventStore, Job};
use osdeploy_shared::service::ServiceConfig;
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, BenchError, CLOCK_START, Phone, admin_json, create_operation, enroll};

/// Events appended per store call while seeding.
const SEED_BATCH: usize = 1000;

/// One measured export.
pub struct ExportRun {
    pub events: usize,
    pub rows: Option<u64>,
    pub elapsed: Duration,
    pub file_bytes: Option<u64>,
    /// Resident memory just before the job, in KiB.
    pub rss_before_kib: Option<u64>,
    /// Peak resident memory during the job, in KiB.
    pub peak_kib: Option<u64>,
    /// Peak resident memory of the whole export process, in KiB.
    pub process_peak_kib: Option<u64>,
}

impl ExportRun {
    pub fn rows_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.rows.unwrap_or(0) as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Reads a `kB` field such as `VmHWM` from `/proc/self/status`.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resets `VmHWM` to the current resident size (Linux 4.0 and later).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

async fn start_server(
    runtime: &tokio::runtime::Handle,
    database: PathBuf,
    id_seed: u64,
) -> Result<ServerHandle, BenchError> {
    let start: Timestamp = CLOCK_START
        .parse()
        .map_err(|e| BenchError::Unexpected(format!("invalid clock start {CLOCK_START}: {e}")))?;
    let config = ServeConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        database,
        catalog_file: None,
        clock: ClockMode::Accelerated { start, speed: 1.0 },
        admin_token: Some(ADMIN_TOKEN.to_string()),
        service: ServiceConfig::default(),
        id_seed: Some(id_seed),
        // The bench runs the export job itself, to time it alone.
        run_scheduler: false,
    };
    runtime
        .spawn(server::start(config))
        .await
        .map_err(BenchError::ServerTask)?
        .map_err(BenchError::Serve)
}

/// Builds `count` events of one operation, one second apart, with the
/// details a failing and retrying download records.
fn seed_events(operation_id: &str, device_id: &str, start: Timestamp, count: usize) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let at = start + jiff::SignedDuration::from_secs(i as i64);
            Event {
                id: format!("01BENCH{i:019}"),
                operation_id: operation_id.to_string(),
                device_id: Some(device_id.to_string()),
                event_type: EventType::DownloadFailed,
                details: json!({
                    "from": "downloading",
                    "to": "retry",
                    "signal": "attempt_failed",
                    "error": "Download failed: the network connection was lost, \"retrying\"",
                    "attempt": i % 5 + 1,
                    "will_retry": true,
                    "detail": format!("download {}%", i % 100),
                    "download_percent": i % 100,
                }),
                actor: Actor::Device,
                at,
                expires_at: at + EVENT_RETENTION,
            }
        })
        .collect()
}

/// Seeds a new database with `count` events and measures their export in
/// a child process.
async fn measure_one(
    runtime: &tokio::runtime::Handle,
    client: &reqwest::Client,
    count: usize,
) -> Result<ExportRun, BenchError> {
    let dir = tempfile::tempdir().map_err(BenchError::TempDir)?;
    let database = dir.path().join("export-bench.db");
    let server = start_server(runtime, database.clone(), 7).await?;
    let base = server.url();
    let phone = Phone::new(0);
    enroll(client, &base, &phone).await?;
    let creation = create_operation(client, &base, std::slice::from_ref(&phone)).await?;
    let operation_id = creation.operation_id;

    eprintln!("seeding {count} events");
    let start = server.services.now();
    for batch in seed_events(&operation_id, &phone.udid, start, count).chunks(SEED_BATCH) {
        server.store.append(batch).await?;
    }
    server.stop().await;

    eprintln!("exporting {count} events in a child process");
    let report = run_child_process(&database, &operation_id)?;
    let field = |name: &str| report[name].as_u64();
    Ok(ExportRun {
        events: count,
        rows: field("rows"),
        elapsed: Duration::from_micros(field("micros").unwrap_or(0)),
        file_bytes: field("file_bytes"),
        rss_before_kib: field("rss_before_kib"),
        peak_kib: field("job_peak_kib"),
        process_peak_kib: field("process_peak_kib"),
    })
}

/// Runs this binary with `--export-child-database` and returns the JSON
/// line it prints.
fn run_child_process(database: &Path, operation_id: &str) -> Result<Value, BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Unexpected(format!("could not find the bench binary: {e}")))?;
    let output = std::process::Command::new(&exe)
        .arg("--export-child-database")
        .arg(database)
        .arg("--export-child-operation")
        .arg(operation_id)
        .output()
        .map_err(|e| BenchError::Unexpected(format!("could not run {}: {e}", exe.display())))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BenchError::Unexpected(format!(
            "the export child process failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    serde_json::from_str(stdout.trim()).map_err(|source| BenchError::Json {
        context: "the export child's report",
        source,
    })
}

/// Runs in the child process: starts a server on the seeded `database`,
/// exports the events of `operation_id` and returns the measurements as
/// one JSON object.
pub fn run_child(database: &Path, operation_id: &str) -> Result<Value, BenchError> {
    let server_runtime = super::runtime("osdeploy-server")?;
    let client_runtime = super::runtime("bench-client")?;
    let handle = server_runtime.handle().clone();
    let mut report = client_runtime.block_on(export_in_child(handle, database, operation_id))?;
    drop(client_runtime);
    drop(server_runtime);
    // VmHWM now covers the time since the reset before the job; the
    // process peak is the larger of that and the start-up's peak.
    let process_peak_kib = status_kib("VmHWM:").max(report["startup_peak_kib"].as_u64());
    report["process_peak_kib"] = json!(process_peak_kib);
    Ok(report)
}

async fn export_in_child(
    runtime: tokio::runtime::Handle,
    database: &Path,
    operation_id: &str,
) -> Result<Value, BenchError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(BenchError::Client)?;
    let server = start_server(&runtime, database.to_path_buf(), 8).await?;
    let base = server.url();
    let (status, accepted) = admin_json(
        &client,
        reqwest::Method::POST,
        &format!("{base}/api/v1/exports"),
        Some(&json!({ "kind": "events", "operation_id": operation_id })),
    )
    .await?;
    let export_id = match (status, accepted["id"].as_str()) {
        (202, Some(id)) => id.to_string(),
        _ => {
            return Err(BenchError::Status {
                context: "requesting the export".into(),
                status,
                body: accepted.to_string(),
            });
        }
    };

    // The reset below loses the peak of the start-up, so it is read first.
    let startup_peak_kib = status_kib("VmHWM:");
    let memory = reset_peak();
    let rss_before_kib = memory.then(|| status_kib("VmRSS:")).flatten();
    let services = server.services.clone();
    let job = Job::Export {
        export_id: export_id.clone(),
    };
    let started = Instant::now();
    runtime
        .spawn(async move { services.run_job(&job).await })
        .await
        .map_err(BenchError::ServerTask)?
        .map_err(|e| BenchError::Unexpected(format!("export job failed: {e}")))?;
    let elapsed = started.elapsed();
    let job_peak_kib = memory.then(|| status_kib("VmHWM:")).flatten();

    let (_, export) = admin_json(
        &client,
        reqwest::Method::GET,
        &format!("{base}/api/v1/exports/{export_id}"),
        None,
    )
    .await?;
    if export["state"] != "done" {
        return Err(BenchError::Unexpected(format!(
            "export {export_id} did not finish: {export}"
        )));
    }
    let key = format!("exports/{export_id}/events.csv");
    let file_bytes = server
        .blobs
        .object_path(&key)
        .ok()
        .and_then(|path| std::fs::metadata(path).ok())
        .map(|m| m.len());
    server.stop().await;
    Ok(json!({
        "rows": export["rows"],
        "micros": elapsed.as_micros() as u64,
        "file_bytes": file_bytes,
        "rss_before_kib": rss_before_kib,
        "job_peak_kib": job_peak_kib,
        "startup_peak_kib": startup_peak_kib,
    }))
}

/// Measures an events export for each size in `counts`, in order.
pub async fn measure(
    runtime: tokio::runtime::Handle,
    counts: &[usize],
) -> Result<Vec<ExportRun>, BenchError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(BenchError::Client)?;
    let mut runs = Vec::new();
    for &count in counts {
        runs.push(measure_one(&runtime, &client, count).await?);
    }
    Ok(runs)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// Renders the export runs as a Markdown section.
pub fn render(out: &mut String, runs: &[ExportRun]) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "### Exports\n");
    let _ = writeln!(
        out,
        "An events export of one operation in a fresh process, timed from the start to the end of the export job (read SQLite in pages of {}, write the CSV, copy it into the blob folder). Rows include the operation's own events. Memory is resident set size: the export process's peak, and before and at the peak of the job alone.\n",
        osdeploy_shared::service::exports::EXPORT_PAGE_SIZE
    );
    let _ = writeln!(
        out,
        "| Events | Rows | Time | Rows per second | File | Process peak RSS | RSS before job | Job peak RSS | Job growth |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for run in runs {
        let growth = match (run.peak_kib, run.rss_before_kib) {
            (Some(peak), Some(before)) => Some(peak.saturating_sub(before)),
            _ => None,
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} s | {:.0} | {} MiB | {} MiB | {} MiB | {} MiB | {} MiB |",
            run.events,
            run.rows.map_or("n/a".into(), |r| r.to_string()),
            run.elapsed.as_secs_f64(),
            run.rows_per_second(),
            run.file_bytes
                .map_or("n/a".into(), |b| format!("{:.1}", b as f64 / 1_048_576.0)),
            mib(run.process_peak_kib),
            mib(run.rss_before_kib),
            mib(run.peak_kib),
            mib(growth),
        );
    }
    let _ = writeln!(out);
}
