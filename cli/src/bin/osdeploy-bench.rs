//! `osdeploy-bench`: measures the local server on 127.0.0.1 and prints a
//! Markdown report.
//!
//! The server (`osdeploy_cli::server::start`, SQLite in WAL mode) and the
//! clients run in this one process on two separate tokio runtimes of two
//! worker threads each, so both share the machine's cores. Every measured run
//! stops after a request count or a time limit, whichever comes first, and
//! the report names the limit that ended it. The phases:
//!
//! 1. MDM check-ins: enrolled devices polling `PUT /mdm/connect` with an
//!    Idle result while no command is queued.
//! 2. DDM status reports from targets of a DDM operation: five passes that
//!    each move every target one status forward, and one pass that repeats
//!    a report and changes nothing.
//! 3. The HTTP floor: a bare axum handler that reads the body and returns an
//!    empty 200, driven by the same client code with the same bodies.
//! 4. Enrolling the fleet and creating one operation over all of it.
//! 5. Peak resident memory of the release `osdeploy demo`.
//! 6. Events exports of 10,000 and 100,000 rows: rows per second and peak
//!    resident memory (see `bench_exports.rs`).
//!
//! This is a measurement, not a test: nothing here asserts a time.

#[path = "../bench_exports.rs"]
mod bench_exports;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use clap::Parser;
use jiff::Timestamp;
use osdeploy_cli::server::{self, ClockMode, ServeConfig, ServerHandle};
use osdeploy_shared::apple::MAX_DEVICE_BODY_BYTES;
use osdeploy_shared::apple::mdm::{
    CommandResult, CommandStatus, DeviceInformationResponse, QueryResponses, parse_command,
};
use osdeploy_shared::service::ServiceConfig;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "bench-admin-token";
/// Service-clock start: the bundled catalog offers iOS 26.6.1 to an
/// `iPhone15,2` on iOS 18.7 at this instant.
const CLOCK_START: &str = "2026-08-22T09:00:00Z";
const MODEL: &str = "iPhone15,2";
const RUNNING_VERSION: &str = "18.7";
const RUNNING_BUILD: &str = "22H20";
const TARGET_VERSION: &str = "26.6.1";
const TIME_ZONE: &str = "Europe/Berlin";
/// Design budget for one check-in or status report on the local server.
const BUDGET_P99: Duration = Duration::from_millis(5);
/// Commands a device acknowledges while enrolling before the bench counts it as failed.
const MAX_ENROLL_COMMANDS: usize = 4;
/// Interval between reads of the demo's `/proc/<pid>/status`.
const MEMORY_POLL: Duration = Duration::from_millis(50);

#[derive(Parser, Debug)]
#[command(
    name = "osdeploy-bench",
    about = "Measure the osdeploy local server on 127.0.0.1 and print a Markdown report"
)]
struct Args {
    /// Devices to enroll. The operation-creation phase targets all of them.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Devices that poll in the check-in phase and report in the status phase.
    #[arg(long, default_value_t = 2_000)]
    active_devices: usize,
    /// Concurrent clients of the check-in phase, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 32])]
    concurrency: Vec<usize>,
    /// Concurrent clients of the status-report phase, comma separated. Each
    /// level gets its own equal share of the active devices.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
    report_concurrency: Vec<usize>,
    /// Concurrent clients while enrolling.
    #[arg(long, default_value_t = 16)]
    enroll_concurrency: usize,
    /// Maximum requests in one measured check-in run.
    #[arg(long, default_value_t = 20_000)]
    max_requests: usize,
    /// Maximum seconds of one measured run (a check-in level or a report pass).
    #[arg(long, default_value_t = 8.0)]
    max_seconds: f64,
    /// Maximum seconds for enrolling all devices.
    #[arg(long, default_value_t = 90.0)]
    enroll_seconds: f64,
    /// Seconds `osdeploy demo` may run before the bench stops it.
    #[arg(long, default_value_t = 120.0)]
    demo_seconds: f64,
    /// Skip the `osdeploy demo` peak-memory phase.
    #[arg(long)]
    skip_demo: bool,
    /// Events in each measured export, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000])]
    export_events: Vec<usize>,
    /// Run only the export phase.
    #[arg(long)]
    only_exports: bool,
    /// Internal: export the events of a seeded database in this process and
    /// print the measurements as JSON (the export phase runs itself so).
    #[arg(long, hide = true, requires = "export_child_operation")]
    export_child_database: Option<PathBuf>,
    /// Internal: the operation whose events the child process exports.
    #[arg(long, hide = true)]
    export_child_operation: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("could not start a tokio runtime")]
    Runtime(#[source] std::io::Error),
    #[error("could not create a temporary directory for the database")]
    TempDir(#[source] std::io::Error),
    #[error("the osdeploy server did not start")]
    Serve(#[source] server::ServeError),
    #[error("the bare HTTP server could not listen on 127.0.0.1")]
    BareListen(#[source] std::io::Error),
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("{context} failed")]
    Http {
        context: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{context} returned HTTP {status}: {body}")]
    Status {
        context: String,
        status: u16,
        body: String,
    },
    #[error("could not encode a device message")]
    Wire(#[from] osdeploy_shared::apple::WireError),
    #[error("could not encode or decode JSON for {context}")]
    Json {
        context: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("store query failed")]
    Store(#[from] osdeploy_shared::ports::StoreError),
    #[error("unexpected server response: {0}")]
    Unexpected(String),
    #[error("the server task stopped before it started")]
    ServerTask(#[source] tokio::task::JoinError),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let (Some(database), Some(operation_id)) =
        (&args.export_child_database, &args.export_child_operation)
    {
        return match bench_exports::run_child(database, operation_id) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: export child: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("OSDEPLOY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(&args) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            let mut message = format!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                let _ = write!(message, ": {cause}");
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(name: &str) -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)
}

fn run(args: &Args) -> Result<String, BenchError> {
    let machine = Machine::read();
    let server_runtime = runtime("osdeploy-server")?;
    let client_runtime = runtime("bench-client")?;
    if args.only_exports {
        let exports = client_runtime.block_on(bench_exports::measure(
            server_runtime.handle().clone(),
            &args.export_events,
        ))?;
        let mut out = String::new();
        let _ = writeln!(out, "## osdeploy benchmark: exports\n");
        render_machine(&mut out, args, &machine);
        bench_exports::render(&mut out, &exports);
        return Ok(out);
    }
    let measured =
        client_runtime.block_on(measure_servers(args, server_runtime.handle().clone()))?;
    let exports = client_runtime.block_on(bench_exports::measure(
        server_runtime.handle().clone(),
        &args.export_events,
    ))?;
    drop(client_runtime);
    drop(server_runtime);
    let demo = if args.skip_demo {
        DemoOutcome::Skipped
    } else {
        eprintln!("running osdeploy demo for its peak memory");
        measure_demo(Duration::from_secs_f64(args.demo_seconds))
    };
    let mut report = render(args, &machine, &measured, &demo);
    bench_exports::render(&mut report, &exports);
    Ok(report)
}

// ---------------------------------------------------------------------------
// Load driver and statistics

/// The limit that ended a measured run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Count,
    Time,
}

/// One measured run: every request's latency, from send to the last body byte.
#[derive(Debug, Clone)]
struct Run {
    requests: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Vec<Duration>,
    stopped_by: Vec<Stop>,
}

impl Run {
    fn merge(runs: &[Run]) -> Run {
        let mut latencies: Vec<Duration> = runs.iter().flat_map(|r| r.latencies.clone()).collect();
        latencies.sort_unstable();
        Run {
            requests: runs.iter().map(|r| r.requests).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
            first_error: runs.iter().find_map(|r| r.first_error.clone()),
            elapsed: runs.iter().map(|r| r.elapsed).sum(),
            latencies,
            stopped_by: runs.iter().flat_map(|r| r.stopped_by.clone()).collect(),
        }
    }

    fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.requests as f64 / seconds
        } else {
            0.0
        }
    }

    /// Nearest-rank percentile of the sorted latencies.
    fn percentile(&self, q: f64) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies[rank - 1]
    }

    fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or(Duration::ZERO)
    }

    fn stopped_by(&self) -> String {
        let by_time = self.stopped_by.iter().filter(|s| **s == Stop::Time).count();
        match (self.stopped_by.len(), by_time) {
            (_, 0) => "count".into(),
            (1, 1) => "time".into(),
            (n, t) => format!("time in {t} of {n}"),
        }
    }
}

/// A bounded load: `concurrency` clients send `PUT url` with the bodies in
/// order (wrapping around) until `max_requests` are sent or `max_time` passes.
#[derive(Clone)]
struct Load {
    client: reqwest::Client,
    url: String,
    bodies: Arc<Vec<Bytes>>,
    concurrency: usize,
    max_requests: usize,
    max_time: Duration,
    /// Count a non-empty response body as an error (a check-in with no work
    /// queued must get an empty 200).
    expect_empty: bool,
}

async fn drive(load: Load) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..load.concurrency.max(1) {
        let load = load.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= load.max_requests || start.elapsed() >= load.max_time {
                    break;
                }
                let body = load.bodies[i % load.bodies.len()].clone();
                let sent = Instant::now();
                let outcome = send_put(&load.client, &load.url, body).await;
                latencies.push(sent.elapsed());
                let problem = match outcome {
                    Ok((200, reply)) if load.expect_empty && !reply.is_empty() => Some(format!(
                        "non-empty reply of {} bytes where none was expected",
                        reply.len()
                    )),
                    Ok((200, _)) => None,
                    Ok((status, reply)) => Some(format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&reply)
                    )),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(problem) = problem {
                    errors += 1;
                    first_error.get_or_insert(problem);
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut run = Run {
        requests: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        stopped_by: Vec::new(),
    };
    for worker in workers {
        match worker.await {
            Ok((latencies, errors, first_error)) => {
                run.latencies.extend(latencies);
                run.errors += errors;
                if run.first_error.is_none() {
                    run.first_error = first_error;
                }
            }
            Err(e) => {
                run.errors += 1;
                run.first_error
                    .get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
    run.elapsed = start.elapsed();
    run.requests = run.latencies.len();
    run.latencies.sort_unstable();
    run.stopped_by = vec![if run.requests >= load.max_requests {
        Stop::Count
    } else {
        Stop::Time
    }];
    run
}

async fn send_put(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
) -> Result<(u16, Bytes), reqwest::Error> {
    let response = client.put(url).body(body).send().await?;
    let status = response.status().as_u16();
    let reply = response.bytes().await?;
    Ok((status, reply))
}

// ---------------------------------------------------------------------------
// Simulated devices

fn plist_xml(dict: plist::Dictionary) -> Result<Bytes, BenchError> {
    let mut out = Vec::new();
    plist::Value::Dictionary(dict)
        .to_writer_xml(&mut out)
        .map_err(|source| {
            BenchError::Wire(osdeploy_shared::apple::WireError::SerializePlist { source })
        })?;
    Ok(Bytes::from(out))
}

/// An iPhone that enrolls, polls and sends DDM status reports.
struct Phone {
    udid: String,
}

impl Phone {
    fn new(index: usize) -> Phone {
        Phone {
            udid: format!("BENCH-{index:06}"),
        }
    }

    fn serial(&self) -> String {
        format!("F2L{}", self.udid)
    }

    fn authenticate(&self) -> Result<Bytes, BenchError> {
        let mut dict = plist::Dictionary::new();
        dict.insert("MessageType".into(), "Authenticate".into());
        dict.insert("Topic".into(), "com.apple.mgmt.External.bench".into());
        dict.insert("UDID".into(), self.udid.clone().into());
        dict.insert("SerialNumber".into(), self.serial().into());
        dict.insert("ProductName".into(), MODEL.into());
        dict.insert("OSVersion".into(), RUNNING_VERSION.into());
        dict.insert("BuildVersion".into(), RUNNING_BUILD.into());
        plist_xml(dict)
    }

    fn token_update(&self) -> Result<Bytes, BenchError> {
        let mut dict = plist::Dictionary::new();
        dict.insert("MessageType".into(), "TokenUpdate".into());
        dict.insert("Topic".into(), "com.apple.mgmt.External.bench".into());
        dict.insert("UDID".into(), self.udid.clone().into());
        dict.insert("Token".into(), plist::Value::Data(vec![1, 2, 3, 4]));
        dict.insert("PushMagic".into(), format!("magic-{}", self.udid).into());
        plist_xml(dict)
    }

    fn idle(&self) -> Result<Bytes, BenchError> {
        let result = CommandResult::new(self.udid.clone(), None, CommandStatus::Idle);
        Ok(Bytes::from(result.to_plist_xml()?))
    }

    fn query_responses(&self) -> QueryResponses {
        QueryResponses {
            udid: Some(self.udid.clone()),
            os_version: Some(RUNNING_VERSION.into()),
            build_version: Some(RUNNING_BUILD.into()),
            product_name: Some(MODEL.into()),
            model_name: Some("iPhone".into()),
            serial_number: Some(self.serial()),
            device_name: Some(format!("iPhone {}", self.udid)),
            is_supervised: Some(true),
            software_update_device_id: Some(MODEL.into()),
            time_zone: Some(TIME_ZONE.into()),
            ..Default::default()
        }
    }

    /// Acknowledges a command, with inventory for DeviceInformation.
    fn acknowledge(&self, command: &[u8]) -> Result<Bytes, BenchError> {
        let envelope = parse_command(command)?;
        let mut result = CommandResult::new(
            self.udid.clone(),
            Some(envelope.command_uuid.clone()),
            CommandStatus::Acknowledged,
        );
        if envelope.command.request_type() == "DeviceInformation" {
            result = result.with_response(&DeviceInformationResponse {
                query_responses: self.query_responses(),
            })?;
        }
        Ok(Bytes::from(result.to_plist_xml()?))
    }

    fn declarative(&self, endpoint: &str, data: Option<&Value>) -> Result<Bytes, BenchError> {
        let mut dict = plist::Dictionary::new();
        dict.insert("MessageType".into(), "DeclarativeManagement".into());
        dict.insert("UDID".into(), self.udid.clone().into());
        dict.insert("Endpoint".into(), endpoint.into());
        if let Some(data) = data {
            let bytes = serde_json::to_vec(data).map_err(|source| BenchError::Json {
                context: "a status report",
                source,
            })?;
            dict.insert("Data".into(), plist::Value::Data(bytes));
        }
        plist_xml(dict)
    }

    fn status_report(&self, items: &Value) -> Result<Bytes, BenchError> {
        let report = json!({ "StatusItems": items, "Errors": [], "FullReport": false });
        self.declarative("status", Some(&report))
    }
}

/// Sends one device message and returns the reply body, or an error for any
/// status but 200.
async fn device_put(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    context: &str,
) -> Result<Bytes, BenchError> {
    let (status, reply) = send_put(client, url, body)
        .await
        .map_err(|source| BenchError::Http {
            context: context.to_string(),
            source,
        })?;
    if status != 200 {
        return Err(BenchError::Status {
            context: context.to_string(),
            status,
            body: String::from_utf8_lossy(&reply).into_owned(),
        });
    }
    Ok(reply)
}

/// Sends Authenticate, TokenUpdate, then Idle, and acknowledges each queued command.
/// Returns the number of requests sent.
async fn enroll(client: &reqwest::Client, base: &str, phone: &Phone) -> Result<usize, BenchError> {
    let checkin = format!("{base}/mdm/checkin");
    let connect = format!("{base}/mdm/connect");
    let context = format!("enrolling {}", phone.udid);
    device_put(client, &checkin, phone.authenticate()?, &context).await?;
    device_put(client, &checkin, phone.token_update()?, &context).await?;
    let mut reply = device_put(client, &connect, phone.idle()?, &context).await?;
    for answered in 0..=MAX_ENROLL_COMMANDS {
        if reply.is_empty() {
            return Ok(3 + answered);
        }
        if answered == MAX_ENROLL_COMMANDS {
            break;
        }
        reply = device_put(client, &connect, phone.acknowledge(&reply)?, &context).await?;
    }
    Err(BenchError::Unexpected(format!(
        "{} still had commands queued after acknowledging {MAX_ENROLL_COMMANDS} of them",
        phone.udid
    )))
}

// ---------------------------------------------------------------------------
// Servers

/// An axum server whose only handler reads the body and returns an empty 200:
/// the HTTP floor under the real server.
struct BareServer {
    url: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn empty_ok(body: Body) -> StatusCode {
    match axum::body::to_bytes(body, MAX_DEVICE_BODY_BYTES).await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn start_bare(runtime: &tokio::runtime::Handle) -> Result<BareServer, BenchError> {
    let listener = runtime
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .await
        .map_err(BenchError::ServerTask)?
        .map_err(BenchError::BareListen)?;
    let addr = listener.local_addr().map_err(BenchError::BareListen)?;
    let app = axum::Router::new()
        .route("/mdm/connect", axum::routing::put(empty_ok))
        .route("/mdm/checkin", axum::routing::put(empty_ok));
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = runtime.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "bare HTTP server stopped with an error");
        }
    });
    Ok(BareServer {
        url: format!("http://{addr}"),
        shutdown,
        task,
    })
}

async fn start_osdeploy(
    runtime: &tokio::runtime::Handle,
    database: PathBuf,
) -> Result<ServerHandle, BenchError> {
    let start: Timestamp = CLOCK_START
        .parse()
        .map_err(|e| BenchError::Unexpected(format!("invalid clock start {CLOCK_START}: {e}")))?;
    let config = ServeConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        database,
        catalog_file: None,
        // Real-time clock from a fixed instant, so the bundled catalog's
        // updates are current whatever the date of the run.
        clock: ClockMode::Accelerated { start, speed: 1.0 },
        admin_token: Some(ADMIN_TOKEN.to_string()),
        service: ServiceConfig::default(),
        id_seed: Some(7),
        // As `osdeploy serve` runs: the loop flushes last-seen times every 100 ms.
        run_scheduler: true,
    };
    runtime
        .spawn(server::start(config))
        .await
        .map_err(BenchError::ServerTask)?
        .map_err(BenchError::Serve)
}

async fn admin_json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), BenchError> {
    let mut request = client.request(method, url).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(body);
    }
    let context = format!("admin request {url}");
    let response = request.send().await.map_err(|source| BenchError::Http {
        context: context.clone(),
        source,
    })?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|source| BenchError::Http { context, source })?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

// ---------------------------------------------------------------------------
// Phases

/// Everything measured against the two servers.
struct Measured {
    enrollment: Enrollment,
    checkins: Vec<(usize, Run, Run)>,
    creation: Creation,
    reports: Vec<ReportLevel>,
    database_bytes: u64,
    /// The database directory and the file system it is on.
    database_location: String,
}

struct Enrollment {
    requested: usize,
    enrolled: usize,
    requests: usize,
    failed: usize,
    first_error: Option<String>,
    elapsed: Duration,
    stopped_by: Stop,
}

struct Creation {
    targets_requested: usize,
    request_bytes: usize,
    elapsed: Duration,
    status: u16,
    total_devices: Option<i64>,
    operation_id: String,
}

struct Pass {
    name: &'static str,
    expected_status: &'static str,
    run: Run,
    /// Targets of the whole operation in `expected_status` before and after the pass.
    in_status_before: i64,
    in_status_after: i64,
    /// Rows added to the events table during the pass.
    events_added: i64,
}

/// The status-report passes at one concurrency level, on its own devices.
struct ReportLevel {
    concurrency: usize,
    devices: usize,
    changing: Vec<Pass>,
    unchanged: Pass,
    floor: Run,
}

async fn measure_servers(
    args: &Args,
    runtime: tokio::runtime::Handle,
) -> Result<Measured, BenchError> {
    let dir = tempfile::tempdir().map_err(BenchError::TempDir)?;
    let database = dir.path().join("osdeploy-bench.db");
    let server = start_osdeploy(&runtime, database.clone()).await?;
    let bare = start_bare(&runtime).await?;
    // NOTE: no_proxy keeps every request on 127.0.0.1 even when the
    // environment names an HTTP proxy.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()
        .map_err(BenchError::Client)?;
    let base = server.url();
    let max_time = Duration::from_secs_f64(args.max_seconds);

    eprintln!("enrolling {} devices", args.devices);
    let (enrollment, enrolled) = enroll_fleet(args, &client, &base).await;
    if enrolled.is_empty() {
        return Err(BenchError::Unexpected(format!(
            "no device enrolled: {}",
            enrollment
                .first_error
                .as_deref()
                .unwrap_or("no error recorded")
        )));
    }

    let active: Vec<&Phone> = enrolled.iter().take(args.active_devices).collect();
    let idle_bodies = Arc::new(
        active
            .iter()
            .map(|p| p.idle())
            .collect::<Result<Vec<_>, _>>()?,
    );
    let mut checkins = Vec::new();
    for &concurrency in &args.concurrency {
        eprintln!("check-ins with {concurrency} clients");
        let load = Load {
            client: client.clone(),
            url: format!("{base}/mdm/connect"),
            bodies: idle_bodies.clone(),
            concurrency,
            max_requests: args.max_requests,
            max_time,
            expect_empty: true,
        };
        let real = drive(load.clone()).await;
        let floor = drive(Load {
            url: format!("{}/mdm/connect", bare.url),
            ..load
        })
        .await;
        checkins.push((concurrency, real, floor));
    }

    eprintln!("creating an operation of {} targets", enrolled.len());
    let creation = create_operation(&client, &base, &enrolled).await?;

    eprintln!("status reports from {} targets", active.len());
    let reports = measure_reports(
        args,
        &client,
        &server,
        &bare,
        &creation.operation_id,
        &active,
    )
    .await?;

    server.stop().await;
    let _ = bare.shutdown.send(());
    let _ = bare.task.await;
    let database_bytes = [database.clone(), with_suffix(&database, "-wal")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    Ok(Measured {
        enrollment,
        checkins,
        creation,
        reports,
        database_bytes,
        database_location: describe_location(dir.path()),
    })
}

/// Names `dir` with the type and source of the file system it is on, from
/// the longest matching mount point in `/proc/mounts`. Commits wait for the
/// file system when SQLite syncs, so the type matters to the numbers.
fn describe_location(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mount = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [source, point, kind, ..] if dir.starts_with(point) => {
                    Some((point.len(), *source, *kind))
                }
                _ => None,
            }
        })
        .max_by_key(|(length, _, _)| *length);
    match mount {
        Some((_, source, kind)) => format!("{} ({kind} on {source})", dir.display()),
        None => dir.display().to_string(),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Enrolls devices with bounded concurrency and time. Returns the summary
/// and the devices that enrolled, in index order.
async fn enroll_fleet(
    args: &Args,
    client: &reqwest::Client,
    base: &str,
) -> (Enrollment, Vec<Phone>) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let max_time = Duration::from_secs_f64(args.enroll_seconds);
    let mut workers = Vec::new();
    for _ in 0..args.enroll_concurrency.max(1) {
        let next = next.clone();
        let client = client.clone();
        let base = base.to_string();
        let total = args.devices;
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut requests = 0;
            let mut failed = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || start.elapsed() >= max_time {
                    break;
                }
                let phone = Phone::new(i);
                match enroll(&client, &base, &phone).await {
                    Ok(sent) => {
                        requests += sent;
                        done.push(i);
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
            (done, requests, failed, first_error)
        }));
    }
    let mut indexes = Vec::new();
    let mut summary = Enrollment {
        requested: args.devices,
        enrolled: 0,
        requests: 0,
        failed: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        stopped_by: Stop::Count,
    };
    for worker in workers {
        match worker.await {
            Ok((done, requests, failed, first_error)) => {
                indexes.extend(done);
                summary.requests += requests;
                summary.failed += failed;
                if summary.first_error.is_none() {
                    summary.first_error = first_error;
                }
            }
            Err(e) => {
                summary.failed += 1;
                summary
                    .first_error
                    .get_or_insert_with(|| format!("enrollment task failed: {e}"));
            }
        }
    }
    summary.elapsed = start.elapsed();
    indexes.sort_unstable();
    summary.enrolled = indexes.len();
    if indexes.len() + summary.failed < args.devices {
        summary.stopped_by = Stop::Time;
    }
    (summary, indexes.into_iter().map(Phone::new).collect())
}

/// Times one `POST /api/v1/operations` naming every enrolled device, then
/// reads the operation back to check its target count.
async fn create_operation(
    client: &reqwest::Client,
    base: &str,
    devices: &[Phone],
) -> Result<Creation, BenchError> {
    let ids: Vec<&str> = devices.iter().map(|p| p.udid.as_str()).collect();
    let request = json!({
        "update": { "product_version": TARGET_VERSION },
        "protocol": "ddm",
        "targets": { "device_ids": ids },
        "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-25T22:00:00", "time_zone": "device_local" },
    });
    let request_bytes = serde_json::to_vec(&request)
        .map_err(|source| BenchError::Json {
            context: "the create-operation request",
            source,
        })?
        .len();

    let url = format!("{base}/api/v1/operations");
    let started = Instant::now();
    let (status, created) = admin_json(client, reqwest::Method::POST, &url, Some(&request)).await?;
    let elapsed = started.elapsed();
    if status != 201 {
        return Err(BenchError::Status {
            context: "creating the operation".into(),
            status,
            body: created.to_string(),
        });
    }

    let operation_id = created["id"]
        .as_str()
        .ok_or_else(|| BenchError::Unexpected(format!("created operation has no id: {created}")))?
        .to_string();
    let (_, view) = admin_json(
        client,
        reqwest::Method::GET,
        &format!("{url}/{operation_id}"),
        None,
    )
    .await?;
    Ok(Creation {
        targets_requested: devices.len(),
        request_bytes,
        elapsed,
        status,
        total_devices: view["total_devices"].as_i64(),
        operation_id,
    })
}

/// The report that moves a target one status forward, per pass, and the
/// status the target should be in afterwards.
fn report_steps(
    identifier: &str,
    server_token: &str,
    build: &str,
) -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "declaration valid and active, install-state none",
            "approved",
            json!({
                "management": { "declarations": {
                    "activations": [], "assets": [], "management": [],
                    "configurations": [{ "identifier": identifier, "server-token": server_token, "active": true, "valid": "valid" }],
                }},
                "softwareupdate": { "install-state": "none" },
            }),
        ),
        (
            "install-state downloading with pending-version",
            "downloading",
            json!({ "softwareupdate": { "install-state": "downloading", "pending-version": { "os-version": TARGET_VERSION, "build-version": build } } }),
        ),
        (
            "install-state prepared",
            "downloaded",
            json!({ "softwareupdate": { "install-state": "prepared" } }),
        ),
        (
            "install-state installing",
            "installing",
            json!({ "softwareupdate": { "install-state": "installing" } }),
        ),
        (
            "operating-system version is the target",
            "installed",
            json!({
                "softwareupdate": { "install-state": "none" },
                "device": { "operating-system": { "version": TARGET_VERSION, "build-version": build } },
            }),
        ),
    ]
}

/// Fetches the enforcement declaration the server lists for `phone` and
/// returns its identifier, ServerToken and target build.
async fn enforcement_of(
    client: &reqwest::Client,
    base: &str,
    phone: &Phone,
) -> Result<(String, String, String), BenchError> {
    let url = format!("{base}/mdm/checkin");

    let context = format!("declaration-items for {}", phone.udid);
    let reply = device_put(
        client,
        &url,
        phone.declarative("declaration-items", None)?,
        &context,
    )
    .await?;
    let items: Value = serde_json::from_slice(&reply).map_err(|source| BenchError::Json {
        context: "declaration-items",
        source,
    })?;
    let enforcement = items["Declarations"]["Configurations"]
        .as_array()
        .and_then(|list| {
            list.iter().find(|d| {
                d["Identifier"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("osdeploy.enforcement."))
            })
        })
        .ok_or_else(|| {
            BenchError::Unexpected(format!(
                "no enforcement declaration for {}: {items}",
                phone.udid
            ))
        })?;
    let identifier = enforcement["Identifier"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let token = enforcement["ServerToken"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let endpoint = format!("declaration/configuration/{identifier}");
    let context = format!("enforcement declaration for {}", phone.udid);
    let reply = device_put(client, &url, phone.declarative(&endpoint, None)?, &context).await?;
    let declaration: Value = serde_json::from_slice(&reply).map_err(|source| BenchError::Json {
        context: "the enforcement declaration",
        source,
    })?;
    let build = declaration["Payload"]["TargetBuildVersion"]
        .as_str()
        .ok_or_else(|| {
            BenchError::Unexpected(format!(
                "declaration has no TargetBuildVersion: {declaration}"
            ))
        })?
        .to_string();
    Ok((identifier, token, build))
}

async fn status_count(
    client: &reqwest::Client,
    base: &str,
    operation_id: &str,
    status: &str,
) -> Result<i64, BenchError> {
    let url = format!("{base}/api/v1/operations/{operation_id}");
    let (code, view) = admin_json(client, reqwest::Method::GET, &url, None).await?;
    if code != 200 {
        return Err(BenchError::Status {
            context: format!("reading operation {operation_id}"),
            status: code,
            body: view.to_string(),
        });
    }
    Ok(view["counts"][status].as_i64().unwrap_or(0))
}

fn event_rows(server: &ServerHandle) -> Result<i64, BenchError> {
    Ok(server
        .store
        .table_counts()?
        .get("events")
        .copied()
        .unwrap_or(0))
}

async fn measure_reports(
    args: &Args,
    client: &reqwest::Client,
    server: &ServerHandle,
    bare: &BareServer,
    operation_id: &str,
    active: &[&Phone],
) -> Result<Vec<ReportLevel>, BenchError> {
    let base = server.url();
    let Some(first) = active.first() else {
        return Err(BenchError::Unexpected("no active devices".into()));
    };
    let (identifier, token, build) = enforcement_of(client, &base, first).await?;

    // Untimed: every reporting device fetches its declarations once, as a
    // device does before it reports, which also records it as DDM-active.
    let items = Arc::new(
        active
            .iter()
            .map(|p| p.declarative("declaration-items", None))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let fetched = drive(Load {
        client: client.clone(),
        url: format!("{base}/mdm/checkin"),
        bodies: items.clone(),
        concurrency: 8,
        max_requests: items.len(),
        max_time: Duration::from_secs_f64(args.max_seconds * 4.0),
        expect_empty: false,
    })
    .await;
    if fetched.errors > 0 || fetched.requests < items.len() {
        return Err(BenchError::Unexpected(format!(
            "declaration-items reached {} of {} devices with {} errors: {}",
            fetched.requests,
            items.len(),
            fetched.errors,
            fetched.first_error.unwrap_or_default()
        )));
    }

    let steps = report_steps(&identifier, &token, &build);
    let share = (active.len() / args.report_concurrency.len().max(1)).max(1);
    let mut levels = Vec::new();
    for (&concurrency, devices) in args.report_concurrency.iter().zip(active.chunks(share)) {
        levels.push(
            measure_report_level(
                server,
                client,
                bare,
                operation_id,
                devices,
                concurrency,
                &steps,
                args,
            )
            .await?,
        );
    }
    Ok(levels)
}

/// Sends each step's report once from every device, pass by pass, then
/// the same status-report bodies to the bare handler.
#[allow(clippy::too_many_arguments)]
async fn measure_report_level(
    server: &ServerHandle,
    client: &reqwest::Client,
    bare: &BareServer,
    operation_id: &str,
    devices: &[&Phone],
    concurrency: usize,
    steps: &[(&'static str, &'static str, Value)],
    args: &Args,
) -> Result<ReportLevel, BenchError> {
    let base = server.url();
    let checkin = format!("{base}/mdm/checkin");
    let mut all_bodies = Vec::new();
    let mut changing = Vec::new();
    let mut unchanged = None;
    for (index, (name, expected_status, items)) in steps.iter().enumerate() {
        let bodies = devices
            .iter()
            .map(|p| p.status_report(items))
            .collect::<Result<Vec<_>, _>>()?;
        all_bodies.extend(bodies.iter().cloned());
        let bodies = Arc::new(bodies);
        let load = Load {
            client: client.clone(),
            url: checkin.clone(),
            bodies: bodies.clone(),
            concurrency,
            max_requests: bodies.len(),
            max_time: Duration::from_secs_f64(args.max_seconds),
            expect_empty: true,
        };
        eprintln!("status reports with {concurrency} clients: {name}");
        changing.push(
            measure_pass(
                server,
                client,
                operation_id,
                name,
                expected_status,
                load.clone(),
            )
            .await?,
        );
        // After the installing pass, send the same report again: the
        // targets are already installing, so nothing changes.
        if index == 3 {
            eprintln!("status reports with {concurrency} clients: repeated, changes nothing");
            let name = "install-state installing, repeated";
            unchanged = Some(
                measure_pass(server, client, operation_id, name, expected_status, load).await?,
            );
        }
    }
    let Some(unchanged) = unchanged else {
        return Err(BenchError::Unexpected(
            "the unchanged pass did not run".into(),
        ));
    };

    eprintln!("status reports with {concurrency} clients against the bare handler");
    let floor = drive(Load {
        client: client.clone(),
        url: format!("{}/mdm/checkin", bare.url),
        max_requests: all_bodies.len(),
        bodies: Arc::new(all_bodies),
        concurrency,
        max_time: Duration::from_secs_f64(args.max_seconds),
        expect_empty: true,
    })
    .await;
    Ok(ReportLevel {
        concurrency,
        devices: devices.len(),
        changing,
        unchanged,
        floor,
    })
}

async fn measure_pass(
    server: &ServerHandle,
    client: &reqwest::Client,
    operation_id: &str,
    name: &'static str,
    expected_status: &'static str,
    load: Load,
) -> Result<Pass, BenchError> {
    let base = server.url();
    let in_status_before = status_count(client, &base, operation_id, expected_status).await?;
    let events_before = event_rows(server)?;
    let run = drive(load).await;
    Ok(Pass {
        name,
        expected_status,
        run,
        in_status_before,
        in_status_after: status_count(client, &base, operation_id, expected_status).await?,
        events_added: event_rows(server)? - events_before,
    })
}

// ---------------------------------------------------------------------------
// Peak memory of `osdeploy demo`

enum DemoOutcome {
    Skipped,
    NotBuilt(PathBuf),
    SpawnFailed(String),
    Failed {
        code: Option<i32>,
        message: String,
    },
    TimedOut {
        seconds: f64,
        peak_kib: Option<u64>,
    },
    Measured {
        /// The demo's own VmHWM as it printed it.
        printed_kib: Option<u64>,
        /// The highest of `samples` reads of `/proc/<pid>/status` VmHWM.
        polled_kib: Option<u64>,
        samples: usize,
        seconds: f64,
    },
}

/// Reads a `VmHWM` value (peak resident set) in KiB from text such as a
/// `/proc/<pid>/status` file. Values in any unit but `kB` are ignored.
fn vm_hwm_kib(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let after = &line[line.find("VmHWM")? + "VmHWM".len()..];
        let mut words = after
            .trim_start_matches([':', ' ', '\t', '='])
            .split_whitespace();
        let value = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(value)
    })
}

/// Reads the peak resident set the demo printed, in KiB: a `VmHWM ... kB`
/// line, or its summary `peak memory 37.3 MiB` (0.1 MiB resolution).
fn printed_peak_kib(text: &str) -> Option<u64> {
    vm_hwm_kib(text).or_else(|| {
        text.lines().find_map(|line| {
            let after = &line[line.find("peak memory")? + "peak memory".len()..];
            let mut words = after.split_whitespace();
            let value: f64 = words.next()?.parse().ok()?;
            let unit = words.next()?.trim_end_matches([',', '.', ';', ')']);
            (unit == "MiB" && value.is_finite() && value >= 0.0)
                .then(|| (value * 1024.0).round() as u64)
        })
    })
}

/// The highest VmHWM seen while a child ran, and how it ended.
struct Watched {
    /// `None` when the child outran the timeout and was killed.
    exit: Option<std::io::Result<std::process::ExitStatus>>,
    peak_kib: Option<u64>,
    samples: usize,
    seconds: f64,
}

/// Reads the child's VmHWM every [`MEMORY_POLL`] until it exits, killing it
/// after `timeout`.
fn watch_peak(child: &mut std::process::Child, timeout: Duration) -> Watched {
    let started = Instant::now();
    let status_file = format!("/proc/{}/status", child.id());
    let mut watched = Watched {
        exit: None,
        peak_kib: None,
        samples: 0,
        seconds: 0.0,
    };
    loop {
        if let Some(kib) = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| vm_hwm_kib(&s))
        {
            watched.samples += 1;
            watched.peak_kib = Some(watched.peak_kib.map_or(kib, |p| p.max(kib)));
        }

        match child.try_wait() {
            Ok(Some(status)) => {
                watched.exit = Some(Ok(status));
                break;
            }
            Ok(None) => {}
            Err(e) => {
                watched.exit = Some(Err(e));
                break;
            }
        }

        if started.elapsed() >= timeout {
            // Stops only the child this bench started, by its pid.
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(MEMORY_POLL);
    }
    watched.seconds = started.elapsed().as_secs_f64();
    watched
}

/// Returns the path of the `osdeploy` binary in the same directory as this one.
fn demo_executable() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("osdeploy"))
}

/// When the demo binary was last built: `make bench` rebuilds only the
/// bench, so an old `osdeploy` binary would measure an old demo.
fn demo_built_at() -> Option<String> {
    let modified = std::fs::metadata(demo_executable()?)
        .ok()?
        .modified()
        .ok()?;
    let at = Timestamp::try_from(modified).ok()?;
    Some(at.strftime("%Y-%m-%d %H:%M UTC").to_string())
}

/// Runs the release `osdeploy demo` that sits next to this binary, in a
/// temporary directory, and records its peak resident set.
///
/// NOTE: only the demo's own process is measured. Processes it starts, if
/// any, are not added in.
fn measure_demo(timeout: Duration) -> DemoOutcome {
    let Some(exe) = demo_executable().filter(|p| p.is_file()) else {
        return DemoOutcome::NotBuilt(PathBuf::from("target/release/osdeploy"));
    };

    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => return DemoOutcome::SpawnFailed(format!("temporary directory: {e}")),
    };
    let out_path = dir.path().join("demo.out");
    let err_path = dir.path().join("demo.err");
    let (stdout, stderr) = match (
        std::fs::File::create(&out_path),
        std::fs::File::create(&err_path),
    ) {
        (Ok(out), Ok(err)) => (out, err),
        (Err(e), _) | (_, Err(e)) => {
            return DemoOutcome::SpawnFailed(format!("demo output file: {e}"));
        }
    };
    let mut child = match std::process::Command::new(&exe)
        .arg("demo")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return DemoOutcome::SpawnFailed(format!("{}: {e}", exe.display())),
    };

    let watched = watch_peak(&mut child, timeout);
    let status = match watched.exit {
        None => {
            return DemoOutcome::TimedOut {
                seconds: watched.seconds,
                peak_kib: watched.peak_kib,
            };
        }
        Some(Err(e)) => return DemoOutcome::SpawnFailed(format!("waiting for the demo: {e}")),
        Some(Ok(status)) => status,
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let errors = std::fs::read_to_string(&err_path).unwrap_or_default();
    if !status.success() {
        let last_line = |text: &str| {
            text.lines()
                .rfind(|l| !l.trim().is_empty())
                .map(str::to_string)
        };
        let message = last_line(&errors)
            .or_else(|| last_line(&output))
            .unwrap_or_else(|| "no output".into());
        return DemoOutcome::Failed {
            code: status.code(),
            message,
        };
    }

    let printed_kib = printed_peak_kib(&output).or_else(|| printed_peak_kib(&errors));
    if printed_kib.is_none() && watched.peak_kib.is_none() {
        return DemoOutcome::Failed {
            code: status.code(),
            message: "exited before its memory could be read, and printed no peak".into(),
        };
    }
    DemoOutcome::Measured {
        printed_kib,
        polled_kib: watched.peak_kib,
        samples: watched.samples,
        seconds: watched.seconds,
    }
}

// ---------------------------------------------------------------------------
// Report

struct Machine {
    cpu: String,
    cores: usize,
    memory: String,
    kernel: String,
    /// `/proc/loadavg` (1, 5 and 15 minutes) before the first phase. Other
    /// processes on the same cores change every measured number.
    load: String,
    date: String,
    commit: String,
    rustc: String,
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse::<f64>().ok())
            })
            .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let commit = match command_output("git", &["rev-parse", "--short", "HEAD"]) {
            Some(commit) => {
                let dirty = command_output("git", &["status", "--porcelain"])
                    .is_some_and(|s| !s.is_empty());
                if dirty {
                    format!("{commit} (with uncommitted changes)")
                } else {
                    commit
                }
            }
            None => "unknown".into(),
        };
        let load = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpu,
            cores,
            memory,
            kernel,
            load,
            date: Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
            commit,
            rustc: command_output("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn row(out: &mut String, measurement: &str, clients: usize, run: &Run) {
    let _ = writeln!(
        out,
        "| {measurement} | {clients} | {} | {} | {:.2} | {:.0} | {} | {} | {} | {} |",
        run.requests,
        run.stopped_by(),
        run.elapsed.as_secs_f64(),
        run.rate(),
        ms(run.percentile(0.50)),
        ms(run.percentile(0.99)),
        ms(run.max()),
        run.errors,
    );
}

fn render(args: &Args, machine: &Machine, measured: &Measured, demo: &DemoOutcome) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## osdeploy benchmark\n");
    render_machine(&mut out, args, machine);
    render_latencies(&mut out, measured);
    render_passes(&mut out, &measured.reports);
    render_other(&mut out, args, measured, demo);
    render_budget(&mut out, measured);
    out
}

fn render_machine(out: &mut String, args: &Args, machine: &Machine) {
    let _ = writeln!(out, "| Machine | |\n|---|---|");
    let _ = writeln!(out, "| CPU | {} |", machine.cpu);
    let _ = writeln!(out, "| Cores available | {} |", machine.cores);
    let _ = writeln!(out, "| Memory | {} |", machine.memory);
    let _ = writeln!(out, "| Kernel | {} |", machine.kernel);
    let _ = writeln!(
        out,
        "| Load average at start (1, 5, 15 min) | {} |",
        machine.load
    );
    let _ = writeln!(out, "| Date | {} |", machine.date);
    let _ = writeln!(out, "| Commit | {} |", machine.commit);
    let _ = writeln!(out, "| Compiler | {} |", machine.rustc);
    let _ = writeln!(
        out,
        "| Limits | a check-in run stops after {} requests, a status-report pass after one report per device, or either after {} s, whichever comes first |\n",
        args.max_requests, args.max_seconds
    );
}

fn merged_changing(level: &ReportLevel) -> Run {
    let runs: Vec<Run> = level.changing.iter().map(|p| p.run.clone()).collect();
    Run::merge(&runs)
}

fn render_latencies(out: &mut String, measured: &Measured) {
    let _ = writeln!(
        out,
        "| Measurement | Clients | Requests | Stopped by | Seconds | Requests/s | p50 ms | p99 ms | max ms | Errors |"
    );
    let _ = writeln!(out, "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for (clients, real, floor) in &measured.checkins {
        row(out, "MDM check-in, Idle, nothing queued", *clients, real);
        row(out, "bare handler, same Idle bodies", *clients, floor);
    }
    for level in &measured.reports {
        row(
            out,
            "DDM status report that moves its target (5 passes)",
            level.concurrency,
            &merged_changing(level),
        );
        row(
            out,
            "DDM status report that changes nothing",
            level.concurrency,
            &level.unchanged.run,
        );
        row(
            out,
            "bare handler, same status-report bodies",
            level.concurrency,
            &level.floor,
        );
    }
    let errors: Vec<&str> = measured
        .checkins
        .iter()
        .flat_map(|(_, real, floor)| [real, floor])
        .chain(measured.reports.iter().flat_map(|l| {
            l.changing
                .iter()
                .map(|p| &p.run)
                .chain([&l.unchanged.run, &l.floor])
        }))
        .filter_map(|r| r.first_error.as_deref())
        .collect();
    if let Some(first) = errors.first() {
        let _ = writeln!(out, "\nFirst error: {first}");
    }
}

fn render_passes(out: &mut String, levels: &[ReportLevel]) {
    let _ = writeln!(
        out,
        "\n| Status-report pass | Clients | Devices | Requests | Requests/s | p99 ms | Targets moved into status | Event rows added |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|---:|");
    for level in levels {
        let ordered = level
            .changing
            .iter()
            .take(4)
            .chain(std::iter::once(&level.unchanged))
            .chain(level.changing.iter().skip(4));
        for pass in ordered {
            let moved = pass.in_status_after - pass.in_status_before;
            let outcome = if std::ptr::eq(pass, &level.unchanged) {
                format!(
                    "{moved} (all {} targets stay {})",
                    pass.in_status_after, pass.expected_status
                )
            } else {
                format!("{moved} {}", pass.expected_status)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {} | {outcome} | {} |",
                pass.name,
                level.concurrency,
                level.devices,
                pass.run.requests,
                pass.run.rate(),
                ms(pass.run.percentile(0.99)),
                pass.events_added,
            );
        }
    }
}

fn render_other(out: &mut String, args: &Args, measured: &Measured, demo: &DemoOutcome) {
    let enrollment = &measured.enrollment;
    let creation = &measured.creation;
    let _ = writeln!(out, "\n| Other measurement | Result |\n|---|---|");
    let _ = writeln!(
        out,
        "| Enrollment ({} clients; Authenticate, TokenUpdate, Idle, acknowledge DeviceInformation) | {} of {} devices in {:.1} s ({:.0} devices/s, {} requests, {} failed{}, stopped by {}) |",
        args.enroll_concurrency,
        enrollment.enrolled,
        enrollment.requested,
        enrollment.elapsed.as_secs_f64(),
        enrollment.enrolled as f64 / enrollment.elapsed.as_secs_f64().max(f64::EPSILON),
        enrollment.requests,
        enrollment.failed,
        enrollment
            .first_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
        match enrollment.stopped_by {
            Stop::Count => "count",
            Stop::Time => "time",
        },
    );

    let verified = match creation.total_devices {
        Some(n) if n == creation.targets_requested as i64 => {
            format!("total_devices {n}, as requested")
        }
        Some(n) => format!(
            "total_devices {n}, NOT the {} requested",
            creation.targets_requested
        ),
        None => "total_devices missing from GET".into(),
    };
    let _ = writeln!(
        out,
        "| Create one DDM operation of {} targets (request {} KiB) | HTTP {} in {:.2} s, {:.0} targets/s; {verified} |",
        creation.targets_requested,
        creation.request_bytes / 1024,
        creation.status,
        creation.elapsed.as_secs_f64(),
        creation.targets_requested as f64 / creation.elapsed.as_secs_f64().max(f64::EPSILON),
    );

    let changing_requests: usize = measured
        .reports
        .iter()
        .flat_map(|l| l.changing.iter().map(|p| p.run.requests))
        .sum();
    let changing_events: i64 = measured
        .reports
        .iter()
        .flat_map(|l| l.changing.iter().map(|p| p.events_added))
        .sum();
    if changing_requests > 0 {
        let _ = writeln!(
            out,
            "| Event rows written per status report that moves its target | {:.3} ({changing_events} rows for {changing_requests} reports) |",
            changing_events as f64 / changing_requests as f64
        );
    }

    let _ = writeln!(
        out,
        "| Database size after the run (file and WAL) | {:.1} MiB in {} |",
        measured.database_bytes as f64 / 1024.0 / 1024.0,
        measured.database_location
    );
    let _ = writeln!(
        out,
        "| Peak memory of `osdeploy demo` | {} |",
        demo_text(demo)
    );
    if let Some(built) = demo_built_at() {
        let _ = writeln!(
            out,
            "| `osdeploy` binary used for the demo | built {built} |"
        );
    }
}

/// States whether every check-in and status-report run on the real server
/// kept its p99 under [`BUDGET_P99`], naming the runs that did not.
fn render_budget(out: &mut String, measured: &Measured) {
    let mut runs: Vec<(String, Run)> = measured
        .checkins
        .iter()
        .map(|(clients, real, _)| (format!("check-ins at concurrency {clients}"), real.clone()))
        .collect();
    for level in &measured.reports {
        runs.push((
            format!(
                "status reports that move a target at concurrency {}",
                level.concurrency
            ),
            merged_changing(level),
        ));
        runs.push((
            format!(
                "status reports that change nothing at concurrency {}",
                level.concurrency
            ),
            level.unchanged.run.clone(),
        ));
    }
    let over: Vec<String> = runs
        .iter()
        .filter(|(_, run)| run.percentile(0.99) >= BUDGET_P99)
        .map(|(label, run)| format!("{label} (p99 {} ms)", ms(run.percentile(0.99))))
        .collect();
    let _ = writeln!(out);
    if over.is_empty() {
        let _ = writeln!(
            out,
            "Budget (p99 under {} ms per check-in or status report): met by every run above.",
            BUDGET_P99.as_millis()
        );
    } else {
        let _ = writeln!(
            out,
            "Budget (p99 under {} ms per check-in or status report): NOT met by {}.",
            BUDGET_P99.as_millis(),
            over.join("; ")
        );
    }
}

fn demo_text(demo: &DemoOutcome) -> String {
    match demo {
        DemoOutcome::Skipped => "skipped (--skip-demo)".into(),
        DemoOutcome::NotBuilt(path) => format!(
            "not measured: {} is not built (run `cargo build --release -p osdeploy-cli`)",
            path.display()
        ),
        DemoOutcome::SpawnFailed(message) => format!("not measured: could not run it: {message}"),
        DemoOutcome::Failed { code, message } => format!(
            "not measured: the demo exited with {}: {message}",
            code.map_or("a signal".to_string(), |c| format!("status {c}"))
        ),
        DemoOutcome::TimedOut { seconds, peak_kib } => format!(
            "not measured: stopped after {seconds:.0} s without finishing{}",
            peak_kib
                .map(|k| format!(" (VmHWM had reached {:.1} MiB)", k as f64 / 1024.0))
                .unwrap_or_default()
        ),
        DemoOutcome::Measured {
            printed_kib,
            polled_kib,
            samples,
            seconds,
        } => {
            let mib = |kib: u64| kib as f64 / 1024.0;
            let polled = polled_kib.map(|kib| {
                format!(
                    "{:.1} MiB as the highest of {samples} reads of /proc/<pid>/status VmHWM, one every {} ms",
                    mib(kib),
                    MEMORY_POLL.as_millis()
                )
            });
            match (printed_kib, polled) {
                (Some(kib), Some(polled)) => format!(
                    "{:.1} MiB, the demo's own VmHWM as it printed it ({polled}; the demo ran {seconds:.1} s)",
                    mib(*kib)
                ),
                (Some(kib), None) => format!(
                    "{:.1} MiB, the demo's own VmHWM as it printed it (the demo ran {seconds:.1} s)",
                    mib(*kib)
                ),
                (None, Some(polled)) => format!("{polled} (the demo ran {seconds:.1} s)"),
                (None, None) => "not measured: no VmHWM read".into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_parses_kib_only() {
        let cases = [
            (
                "Name:\tosdeploy\nVmHWM:\t   51234 kB\nVmRSS:\t 1 kB\n",
                Some(51_234),
            ),
            ("peak memory VmHWM=2048 kB", Some(2_048)),
            ("VmHWM: 12 MB", None),
            ("VmRSS:\t 10 kB", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(vm_hwm_kib(text), expected, "{text:?}");
        }
    }

    #[test]
    fn printed_peak_reads_demo_summary() {
        let cases = [
            (
                "wall time 58.9 s, server clock now 2026-08-23T04:38:01Z, peak memory 37.3 MiB",
                Some(38_195),
            ),
            ("VmHWM:\t 4096 kB", Some(4_096)),
            ("peak memory unknown", None),
            ("peak memory 37.3 GB", None),
        ];
        for (text, expected) in cases {
            assert_eq!(printed_peak_kib(text), expected, "{text:?}");
        }
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let run = Run {
            requests: 100,
            errors: 0,
            first_error: None,
            elapsed: Duration::from_secs(1),
            latencies: (1..=100).map(Duration::from_millis).collect(),
            stopped_by: vec![Stop::Count],
        };
        assert_eq!(run.percentile(0.50), Duration::from_millis(50));
        assert_eq!(run.percentile(0.99), Duration::from_millis(99));
        assert_eq!(run.max(), Duration::from_millis(100));
    }

    #[test]
    fn watch_peak_samples_a_running_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.4")
            .spawn()
            .expect("sleep starts");
        let watched = watch_peak(&mut child, Duration::from_secs(10));
        assert!(
            matches!(watched.exit, Some(Ok(status)) if status.success()),
            "sleep exits by itself"
        );
        assert!(watched.samples >= 2, "samples: {}", watched.samples);
        assert!(watched.peak_kib.is_some_and(|kib| kib > 0));
    }

    #[test]
    fn watch_peak_kills_after_timeout() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts");
        let watched = watch_peak(&mut child, Duration::from_millis(200));
        assert!(watched.exit.is_none(), "timed out");
        assert!(watched.seconds < 5.0, "seconds: {}", watched.seconds);
        assert!(
            child.try_wait().is_ok_and(|s| s.is_some()),
            "child was reaped"
        );
    }
}
