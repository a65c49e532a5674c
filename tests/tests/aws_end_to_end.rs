//! The fleet simulator through the Lambda functions' handlers on the AWS
//! emulator (moto's DynamoDB and EventBridge Scheduler), compared device by
//! device with the embedded SQLite server on the same scenario, fleet seed,
//! id seed and stepped clock.
//!
//! The AWS run serves `osdeploy_shared::http::router`, the union of the
//! routers the admin-api, mdm-checkin and mdm-connect functions mount, over
//! the state `osdeploy_functions::app_state` builds. Its services are built
//! from the same ports as `osdeploy_functions::services`, with a manual clock
//! in place of the system clock.
//!
//! moto stores schedules but never fires them. At each step the test lists
//! the schedules due at the server clock, reads each one's target input (the
//! event EventBridge Scheduler sends the Lambda function), hands it to the
//! scheduled-job function's code path, and deletes the schedule as
//! `ActionAfterCompletion: DELETE` would.

mod aws_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use lambda_http::tower::ServiceExt;
use osdeploy_cli::admin_client::AdminClient;
use osdeploy_cli::server::{self, ClockMode, ServeConfig, ServerHandle};
use osdeploy_cli::simulate::{Fleet, FleetConfig, FleetMix, FleetStats, SimDevice};
use osdeploy_shared::adapters::aws::dynamodb::{DynamoStore, DynamoTables, create_tables};
use osdeploy_shared::adapters::aws::scheduler::{EventBridgeScheduler, schedule_name};
use osdeploy_shared::adapters::aws::{AwsSettings, S3BlobStore};
use osdeploy_shared::adapters::{ChannelPublisher, RecordedPush, local_scheduler};
use osdeploy_shared::catalog::Catalog;
use osdeploy_shared::domain::{ManualClock, Platform, UlidGenerator};
use osdeploy_shared::http::{AppState, admin_router, router};
use osdeploy_shared::ports::{Job, Schedule, ScheduleStore};
use osdeploy_shared::service::{Ports, Services};
use serde_json::{Value, json};

/// The date of the bundled catalog snapshot, so that its updates are signed.
const START: &str = "2026-08-22T09:00:00Z";

/// Bearer token of both runs, which the sample API Gateway event sends.
const TOKEN: &str = "example-token";

const FLEET_SEED: u64 = 11;
const ID_SEED: u64 = 7;
const DEVICES: usize = 40;

/// Server time the test moves the clock by between rounds of check-ins.
const STEP: SignedDuration = SignedDuration::from_mins(10);

/// Fleet ticks per step. The fleet learns the new server time from the
/// first replies of a step, so the second tick reaches the devices whose
/// poll fell due inside the step.
const TICKS_PER_STEP: usize = 2;

/// 72 hours of server time: the last MDM deadline (UTC-7) comes about 23
/// hours after the start, and a failing MDM target needs about 3 more hours
/// of retries.
const MAX_STEPS: usize = 432;

/// Upper bound on the simulated devices' HTTP requests per run.
const MAX_REQUESTS: u64 = 40_000;

/// Upper bound on one run's wall-clock time.
const MAX_WALL: Duration = Duration::from_secs(40 * 60);

const TARGET_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:osdeploy-scheduled-job";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/osdeploy-scheduler";

/// Sample scheduled-job events, as EventBridge Scheduler sends them.
const SCHEDULED_JOB_SAMPLES: [&str; 2] = [
    "scheduled-job-mdm-deadline.json",
    "scheduled-job-update-expiry.json",
];

const OPERATION_STARTED: &str = "operation_started";
const OPERATION_COMPLETED: &str = "operation_completed";

const DDM: &str = "ddm";
const MDM: &str = "mdm";

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

fn read_event(name: &str) -> String {
    let path = events_dir().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read sample event {}: {e}", path.display()))
}

/// Returns the emulator's endpoint, which must be on this machine because the
/// test creates tables and schedule groups there.
fn local_endpoint() -> String {
    let endpoint = aws_support::endpoint();
    let local = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|prefix| endpoint.starts_with(prefix));
    assert!(
        local,
        "{}={endpoint:?} is not a local emulator: point it at http://127.0.0.1:<port> \
         where scripts/moto.sh started moto",
        aws_support::ENDPOINT_VARIABLE
    );
    endpoint
}

/// Returns a schedule group name that no other run uses, within the limit
/// of 64 characters of `[0-9A-Za-z._-]`.
fn unique_group_name() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("osdeploy-e2e-{}-{millis}", std::process::id())
}

/// Runs the scheduled-job function's handler, whose event is the schedule as
/// JSON.
async fn scheduled_job(services: &Services, payload: Value) -> Result<Value, String> {
    osdeploy_functions::handle_job_event(services, payload).await
}

/// A schedule that ran, without the operation id, which differs per run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FiredSchedule {
    due_at: Timestamp,
    /// `mdm_deadline <zone>` or `update_expiry`.
    job: String,
    fired_at: Timestamp,
}

impl FiredSchedule {
    fn new(schedule: &Schedule, fired_at: Timestamp) -> Self {
        let job = match &schedule.job {
            Job::MdmDeadline { time_zone, .. } => format!("mdm_deadline {time_zone}"),
            Job::UpdateExpiry { .. } => "update_expiry".to_string(),
            Job::PurgeEvents => "purge_events".to_string(),
            Job::Sweep => "sweep".to_string(),
            Job::Reminder { time_zone, .. } => format!("reminder {time_zone}"),
            Job::Export { .. } => "export".to_string(),
            Job::RefreshCatalog => "refresh_catalog".to_string(),
        };
        FiredSchedule {
            due_at: schedule.due_at,
            job,
            fired_at,
        }
    }
}

/// The embedded server: `osdeploy serve` on SQLite.
struct Embedded {
    handle: ServerHandle,
    _dir: tempfile::TempDir,
}

/// The Lambda functions' handlers on DynamoDB and EventBridge Scheduler.
struct Aws {
    url: String,
    state: AppState,
    scheduler: EventBridgeScheduler,
    scheduler_client: aws_sdk_scheduler::Client,
    group: String,
    /// Events handed to the scheduled-job handler, in order.
    delivered: Vec<Value>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

enum Deployment {
    Embedded(Embedded),
    Aws(Box<Aws>),
}

impl Deployment {
    async fn embedded(clock: Arc<ManualClock>) -> Deployment {
        let dir = tempfile::tempdir().expect("temporary directory");
        let handle = server::start(ServeConfig {
            listen: "127.0.0.1:0".parse().expect("loopback address"),
            database: dir.path().join("osdeploy.db"),
            catalog_file: None,
            clock: ClockMode::Manual(clock),
            admin_token: Some(TOKEN.to_string()),
            service: osdeploy_shared::service::ServiceConfig::default(),
            id_seed: Some(ID_SEED),
            run_scheduler: false,
        })
        .await
        .expect("embedded server starts");
        Deployment::Embedded(Embedded { handle, _dir: dir })
    }

    async fn aws(clock: Arc<ManualClock>) -> Deployment {
        let endpoint = local_endpoint();
        let sdk = AwsSettings::emulator(&endpoint).sdk_config().await;

        let tables = aws_support::unique_tables("e2e");
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        if let Err(error) = create_tables(&dynamodb, &tables).await {
            panic!("creating tables {tables:?} on the emulator at {endpoint} failed: {error:?}");
        }
        let group = unique_group_name();
        let scheduler_client = aws_sdk_scheduler::Client::new(&sdk);
        if let Err(error) = scheduler_client
            .create_schedule_group()
            .name(&group)
            .send()
            .await
        {
            panic!(
                "creating schedule group {group} on the emulator at {endpoint} failed: {error:?}"
            );
        }

        let bucket = aws_support::unique_bucket(&sdk, "e2e").await;

        // The functions read their settings from these variables.
        let variables: BTreeMap<&str, String> = [
            ("OSDEPLOY_STATE_TABLE", tables.state.clone()),
            ("OSDEPLOY_EVENTS_TABLE", tables.events.clone()),
            ("OSDEPLOY_EXPORTS_BUCKET", bucket.clone()),
            ("OSDEPLOY_SCHEDULE_GROUP", group.clone()),
            ("OSDEPLOY_SCHEDULER_ROLE_ARN", ROLE_ARN.to_string()),
            ("OSDEPLOY_SCHEDULED_JOB_ARN", TARGET_ARN.to_string()),
            ("OSDEPLOY_AWS_ENDPOINT", endpoint.clone()),
            ("OSDEPLOY_ADMIN_TOKEN", TOKEN.to_string()),
        ]
        .into_iter()
        .collect();
        let config = osdeploy_functions::Config::from_lookup(|name| variables.get(name).cloned())
            .expect("function configuration");
        let settings = config
            .scheduler
            .clone()
            .expect("the configuration names a schedule group");
        let scheduler = EventBridgeScheduler::new(scheduler_client.clone(), settings)
            .expect("scheduler settings");

        // The ports of `osdeploy_functions::services`, with a manual clock.
        let store = Arc::new(DynamoStore::new(
            dynamodb,
            DynamoTables {
                state: config.state_table.clone(),
                events: config.events_table.clone(),
            },
        ));
        let ports = Ports {
            devices: store.clone(),
            groups: store.clone(),
            operations: store.clone(),
            events: store.clone(),
            scheduler: Arc::new(scheduler.clone()),
            schedules: None,
            catalogs: store,
            push: Arc::new(RecordedPush::default()),
            blobs: Arc::new(S3BlobStore::new(aws_support::s3_client(&sdk), &bucket)),
            publisher: Arc::new(ChannelPublisher::default()),
        };
        let services = Arc::new(Services::new(
            ports,
            clock,
            Arc::new(UlidGenerator::seeded(ID_SEED)),
            Arc::new(Catalog::bundled().clone()),
            config.service.clone(),
        ));
        let state = osdeploy_functions::app_state(services, &config);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen on a loopback port");
        let addr = listener.local_addr().expect("listening address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                eprintln!("the AWS run's HTTP server stopped with an error: {error}");
            }
        });

        Deployment::Aws(Box::new(Aws {
            url: format!("http://{addr}"),
            state,
            scheduler,
            scheduler_client,
            group,
            delivered: Vec::new(),
            stop: Some(stop),
            server: Some(server),
        }))
    }

    fn url(&self) -> String {
        match self {
            Deployment::Embedded(embedded) => embedded.handle.url(),
            Deployment::Aws(aws) => aws.url.clone(),
        }
    }

    fn services(&self) -> &Services {
        match self {
            Deployment::Embedded(embedded) => &embedded.handle.services,
            Deployment::Aws(aws) => &aws.state.services,
        }
    }

    /// Runs every schedule due at the server clock, as the local loop or
    /// EventBridge Scheduler would, and returns the ones that ran.
    async fn run_due_schedules(&mut self) -> Vec<FiredSchedule> {
        let now = self.services().now();
        match self {
            Deployment::Embedded(embedded) => {
                let store = embedded.handle.store.as_ref();
                let due = ScheduleStore::due(store, now, 100)
                    .await
                    .expect("read due schedules from SQLite");
                let ran = local_scheduler::tick(&embedded.handle.services, store).await;
                assert_eq!(
                    ran,
                    due.len(),
                    "embedded: every due schedule must run at {now}: {due:?}"
                );
                due.iter().map(|s| FiredSchedule::new(s, now)).collect()
            }
            Deployment::Aws(aws) => aws.deliver_due(now).await,
        }
    }

    /// Writes the buffered last-seen times, as the local loop does at each
    /// tick. The Lambda functions have no such loop, so the AWS run skips it.
    async fn end_step(&self) {
        if let Deployment::Embedded(embedded) = self {
            embedded
                .handle
                .services
                .flush_last_seen()
                .await
                .expect("write last-seen times");
        }
    }

    async fn stop(self) {
        match self {
            Deployment::Embedded(embedded) => embedded.handle.stop().await,
            Deployment::Aws(mut aws) => {
                if let Some(stop) = aws.stop.take() {
                    let _ = stop.send(());
                }
                if let Some(server) = aws.server.take() {
                    let _ = server.await;
                }
                if let Err(error) = aws
                    .scheduler_client
                    .delete_schedule_group()
                    .name(&aws.group)
                    .send()
                    .await
                {
                    eprintln!(
                        "could not delete schedule group {} on the emulator: {error:?}",
                        aws.group
                    );
                }
            }
        }
    }
}

impl Aws {
    /// Lists the group's due schedules through the adapter, then invokes the
    /// scheduled-job handler with each schedule's target input, read back
    /// from the emulator as EventBridge Scheduler would send it.
    async fn deliver_due(&mut self, now: Timestamp) -> Vec<FiredSchedule> {
        let due = ScheduleStore::due(&self.scheduler, now, 100)
            .await
            .expect("list due schedules on the emulator");
        let mut fired = Vec::new();
        for schedule in due {
            let name = schedule_name(&schedule.id, &schedule.job).expect("schedule name");
            let stored = self
                .scheduler_client
                .get_schedule()
                .group_name(&self.group)
                .name(&name)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetSchedule {name} for {}: {e:?}", schedule.id));
            let target = stored.target().expect("the schedule has a target");
            assert_eq!(target.arn(), TARGET_ARN, "target of {}", schedule.id);
            let input = target.input().expect("the target has an input");
            let event: Value = serde_json::from_str(input)
                .unwrap_or_else(|e| panic!("target input of {} is not JSON: {e}", schedule.id));

            let response = scheduled_job(&self.state.services, event.clone())
                .await
                .unwrap_or_else(|e| panic!("scheduled-job handler failed at {now}: {e}"));
            assert_eq!(
                response["schedule"], schedule.id,
                "the handler must run the schedule it was given"
            );
            ScheduleStore::remove(&self.scheduler, &schedule.id)
                .await
                .expect("delete the schedule that ran");

            self.delivered.push(event);
            fired.push(FiredSchedule::new(&schedule, now));
        }
        fired
    }

    /// Hands each sample scheduled-job event to the handler. It runs before
    /// any operation exists, so the jobs change nothing.
    async fn run_sample_events(&self) {
        for name in SCHEDULED_JOB_SAMPLES {
            let event: Value = serde_json::from_str(&read_event(name))
                .unwrap_or_else(|e| panic!("sample {name} is not JSON: {e}"));
            let response = scheduled_job(&self.state.services, event)
                .await
                .unwrap_or_else(|e| panic!("sample {name}: {e}"));
            assert_eq!(response["targets"], 0, "sample {name} changes no target");
        }
    }

    /// Sends the sample API Gateway event through the admin router as the
    /// admin-api function's lambda_http adapter would, and returns the ids
    /// of the operations it lists.
    async fn operations_through_lambda_event(&self) -> BTreeSet<String> {
        let request = lambda_http::request::from_str(&read_event("http-get-operations.json"))
            .expect("the sample is an API Gateway HTTP API event");
        let response = admin_router(self.state.clone())
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("response body");
        assert_eq!(
            status,
            200,
            "GET /api/v1/operations through lambda_http: {}",
            String::from_utf8_lossy(&bytes)
        );
        let page: Value = serde_json::from_slice(&bytes).expect("JSON page");
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|o| o["id"].as_str().map(str::to_string))
            .collect()
    }
}

/// One operation's outcome.
#[derive(Debug, Clone, Default)]
struct OperationResult {
    id: String,
    state: String,
    /// Final status per device UDID.
    statuses: BTreeMap<String, String>,
    /// The overview's `counts`.
    counts: Value,
    /// Events per type.
    events: BTreeMap<String, usize>,
    /// Each device's events as `<instant> <type> <details>`, in time order,
    /// without command UUIDs, which differ between runs.
    timelines: BTreeMap<String, Vec<String>>,
    /// The overview shows both `started_at` and `finished_at`.
    started_and_finished: bool,
}

/// One run's outcome.
#[derive(Debug)]
struct RunResult {
    label: &'static str,
    steps: usize,
    finished: bool,
    server_time: Timestamp,
    wall: Duration,
    stats: FleetStats,
    operations: BTreeMap<&'static str, OperationResult>,
    /// The simulator's expected final status per target UDID.
    expected: BTreeMap<String, Option<&'static str>>,
    fired: Vec<FiredSchedule>,
    /// Events the AWS run handed to the scheduled-job handler.
    delivered: Vec<Value>,
    /// Check-ins that failed, as text.
    errors: Vec<String>,
    devices_seen_since_enrollment: usize,
}

fn major(device: &SimDevice) -> u32 {
    device
        .os_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

fn fleet_config() -> FleetConfig {
    FleetConfig {
        devices: DEVICES,
        seed: FLEET_SEED,
        poll_interval: SignedDuration::from_mins(20),
        // Mostly Macs, so that both operations get several targets.
        mix: FleetMix {
            mac_share: 0.8,
            ..FleetMix::default()
        },
        concurrency: 4,
        max_requests: MAX_REQUESTS,
        ..FleetConfig::default()
    }
}

/// Returns the wall-clock time 16 hours past the current UTC time, on the
/// hour. Local time anywhere is at most UTC+14, so it is ahead in every zone.
fn deadline_after(now: Timestamp) -> String {
    (now + SignedDuration::from_hours(16))
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .datetime()
        .round(jiff::Unit::Hour)
        .expect("deadline rounds to the hour")
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

async fn operation_state(admin: &AdminClient, id: &str) -> String {
    let overview = admin
        .get(&format!("/operations/{id}"))
        .await
        .unwrap_or_else(|e| panic!("GET operation {id}: {e}"));
    overview["state"].as_str().unwrap_or_default().to_string()
}

/// Plays the scenario against one deployment: enroll the fleet, set the
/// Macs' time zones, create a DDM and an MDM operation with a deadline, and
/// step the clock until both finish.
async fn play(
    label: &'static str,
    mut deployment: Deployment,
    clock: Arc<ManualClock>,
) -> RunResult {
    let started = Instant::now();
    let url = deployment.url();
    let admin = AdminClient::new(&url, TOKEN);
    let mut fleet = Fleet::new(fleet_config()).expect("fleet configuration");
    if let Deployment::Aws(aws) = &deployment {
        aws.run_sample_events().await;
    }

    fleet.enroll(&url).await.expect("fleet enrolls");
    let inventory = admin.all("/devices").await.expect("list devices");
    assert_eq!(
        inventory.len(),
        DEVICES,
        "{label}: every device is enrolled"
    );
    let without_version: Vec<&Value> = inventory
        .iter()
        .filter(|d| d["os_version"].is_null())
        .collect();
    assert!(
        without_version.is_empty(),
        "{label}: devices without inventory after enrollment: {without_version:?}"
    );

    // macOS does not report its time zone over MDM, so the administrator
    // sets it in the inventory.
    let devices: Vec<SimDevice> = fleet.devices().to_vec();
    for mac in devices.iter().filter(|d| d.platform == Platform::MacOs) {
        admin
            .patch(
                &format!("/devices/{}", mac.udid),
                &json!({ "time_zone": mac.time_zone }),
            )
            .await
            .unwrap_or_else(|e| panic!("{label}: set the time zone of {}: {e}", mac.udid));
    }

    let ids = |wanted: &dyn Fn(&SimDevice) -> bool| -> Vec<String> {
        devices
            .iter()
            .filter(|d| wanted(d))
            .map(|d| d.udid.clone())
            .collect()
    };
    let ddm_macs = ids(&|d| d.platform == Platform::MacOs && d.supervised && major(d) >= 15);
    let mdm_macs = ids(&|d| d.platform == Platform::MacOs && d.supervised && major(d) < 15);
    let deadline = deadline_after(deployment.services().now());
    let target_version = fleet.config().targets.macos.version.clone();
    let plans = [
        (
            DDM,
            json!({
                "update": { "product_version": target_version },
                "protocol": "ddm",
                "targets": { "device_ids": ddm_macs },
                "install": { "method": "enforce_at_schedule", "local_date_time": deadline, "time_zone": "device_local", "add_to_catalog": true },
            }),
        ),
        (
            MDM,
            json!({
                "update": { "product_version": target_version },
                "protocol": "mdm",
                "targets": { "device_ids": mdm_macs },
                "install": { "method": "enforce_at_schedule", "local_date_time": deadline, "time_zone": "device_local" },
            }),
        ),
    ];
    let mut operation_ids: BTreeMap<&'static str, String> = BTreeMap::new();
    for (kind, body) in plans {
        let preview = admin
            .post("/operations/preview", &body)
            .await
            .unwrap_or_else(|e| panic!("{label}: preview the {kind} operation: {e}"));
        assert_eq!(
            preview["incompatible"].as_array().map(Vec::len),
            Some(0),
            "{label}: {kind} targets incompatible: {}",
            preview["incompatible"]
        );
        let created = admin
            .post("/operations", &body)
            .await
            .unwrap_or_else(|e| panic!("{label}: create the {kind} operation: {e}"));
        let id = created["id"].as_str().expect("operation id").to_string();
        assert_eq!(
            created["total_devices"].as_u64(),
            body["targets"]["device_ids"]
                .as_array()
                .map(|d| d.len() as u64),
            "{label}: every requested device is a target of the {kind} operation"
        );
        println!(
            "{label}: {kind} operation {id}: {} devices, deadline {deadline} local",
            created["total_devices"]
        );
        operation_ids.insert(kind, id);
    }

    if let Deployment::Aws(aws) = &deployment {
        let listed = aws.operations_through_lambda_event().await;
        let created: BTreeSet<String> = operation_ids.values().cloned().collect();
        assert_eq!(
            listed, created,
            "the sample API Gateway event must list the ongoing operations"
        );
    }

    let mut fired = Vec::new();
    let mut errors = Vec::new();
    let mut steps = 0;
    let mut finished = false;
    while steps < MAX_STEPS && !finished {
        assert!(
            started.elapsed() < MAX_WALL,
            "{label}: the run took longer than {MAX_WALL:?} of wall-clock time after {steps} steps"
        );
        steps += 1;
        clock.advance(STEP);
        fired.extend(deployment.run_due_schedules().await);
        for _ in 0..TICKS_PER_STEP {
            let report = fleet.tick(&url).await.expect("fleet tick");
            errors.extend(report.errors.iter().map(|e| format!("step {steps}: {e}")));
        }
        deployment.end_step().await;

        finished = true;
        for id in operation_ids.values() {
            finished &= operation_state(&admin, id).await == "finished";
        }
    }

    let mut operations = BTreeMap::new();
    let mut expected = BTreeMap::new();
    for (kind, id) in &operation_ids {
        let overview = admin
            .get(&format!("/operations/{id}"))
            .await
            .expect("operation overview");
        let targets = admin
            .all(&format!("/operations/{id}/devices"))
            .await
            .expect("operation targets");
        let events = admin
            .all(&format!("/operations/{id}/events"))
            .await
            .expect("operation events");
        let mut result = OperationResult {
            id: id.clone(),
            state: overview["state"].as_str().unwrap_or_default().to_string(),
            counts: overview["counts"].clone(),
            started_and_finished: overview["started_at"].is_string()
                && overview["finished_at"].is_string(),
            ..OperationResult::default()
        };
        for target in &targets {
            let udid = target["device_id"].as_str().unwrap_or_default().to_string();
            let status = target["status"].as_str().unwrap_or_default().to_string();
            expected.insert(udid.clone(), fleet.expected_status(&udid));
            result.statuses.insert(udid, status);
        }
        for event in &events {
            let event_type = event["type"].as_str().unwrap_or("?").to_string();
            if let Some(udid) = event["device_id"].as_str() {
                let at = event["at"].as_str().unwrap_or("?");
                let mut details = event["details"].clone();
                if let Some(map) = details.as_object_mut() {
                    map.remove("command_uuid");
                }
                result
                    .timelines
                    .entry(udid.to_string())
                    .or_default()
                    .push(format!("{at} {event_type} {details}"));
            }
            *result.events.entry(event_type).or_default() += 1;
        }
        for timeline in result.timelines.values_mut() {
            timeline.sort();
        }
        operations.insert(*kind, result);
    }

    // Devices whose last-seen time moved past enrollment, for the report:
    // only the local loop writes the times that check-ins buffer.
    let devices_seen_since_enrollment = admin
        .all("/devices")
        .await
        .expect("list devices")
        .iter()
        .filter(|d| d["last_seen_at"].as_str().is_some_and(|at| at != START))
        .count();

    let server_time = deployment.services().now();
    let delivered = match &deployment {
        Deployment::Aws(aws) => aws.delivered.clone(),
        Deployment::Embedded(_) => Vec::new(),
    };
    deployment.stop().await;
    RunResult {
        label,
        steps,
        finished,
        server_time,
        wall: started.elapsed(),
        stats: fleet.stats(),
        operations,
        expected,
        fired,
        delivered,
        errors,
        devices_seen_since_enrollment,
    }
}

fn print_run(run: &RunResult) {
    let stats = &run.stats;
    println!(
        "{}: {} steps, finished {}, server clock {}, {:.1} s wall, {} requests, {} errors, \
         {} commands answered, {} status reports, {} NotNow, {} failures injected, \
         {} user installs, {} updates installed",
        run.label,
        run.steps,
        run.finished,
        run.server_time,
        run.wall.as_secs_f64(),
        stats.requests,
        stats.errors,
        stats.commands_answered,
        stats.status_reports_sent,
        stats.not_nows,
        stats.failures_injected,
        stats.user_early_installs,
        stats.updates_installed
    );
    println!(
        "  {} of {DEVICES} devices have a last-seen time after enrollment",
        run.devices_seen_since_enrollment
    );
    for (kind, operation) in &run.operations {
        let mut per_status: BTreeMap<&str, usize> = BTreeMap::new();
        for status in operation.statuses.values() {
            *per_status.entry(status.as_str()).or_default() += 1;
        }
        println!(
            "  {kind} {} {}: {per_status:?}",
            operation.id, operation.state
        );
        println!("    events {:?}", operation.events);
    }
    for schedule in &run.fired {
        println!(
            "  ran {} due {} at {}",
            schedule.job, schedule.due_at, schedule.fired_at
        );
    }
}

/// Returns the targets whose final status differs from the simulator's.
fn mismatches(run: &RunResult) -> Vec<String> {
    let mut found = Vec::new();
    for (kind, operation) in &run.operations {
        for (udid, status) in &operation.statuses {
            let expected = run.expected.get(udid).copied().flatten();
            if expected != Some(status.as_str()) {
                found.push(format!(
                    "{kind} {udid}: simulator expects {expected:?}, server says {status}"
                ));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_run_matches_embedded_run() {
    // Fail before any work when the emulator is not configured.
    local_endpoint();

    let start: Timestamp = START.parse().expect("start instant");
    let embedded_clock = Arc::new(ManualClock::new(start));
    let embedded = play(
        "embedded",
        Deployment::embedded(embedded_clock.clone()).await,
        embedded_clock,
    )
    .await;
    print_run(&embedded);

    let aws_clock = Arc::new(ManualClock::new(start));
    let aws_deployment = Deployment::aws(aws_clock.clone()).await;
    let aws = play("aws", aws_deployment, aws_clock).await;
    print_run(&aws);

    // Devices whose events differ between the runs, for the reader of a
    // failure or of a count that differs.
    for kind in [DDM, MDM] {
        let (ours, theirs) = (&embedded.operations[kind], &aws.operations[kind]);
        for (udid, timeline) in &ours.timelines {
            let other = theirs.timelines.get(udid);
            if other != Some(timeline) {
                println!(
                    "{kind} {udid} events differ:\n  embedded {timeline:#?}\n  aws {other:#?}"
                );
            }
        }
    }

    // Both runs end.
    assert!(
        embedded.finished,
        "embedded: operations unfinished after {} steps",
        embedded.steps
    );
    assert!(
        aws.finished,
        "aws: operations unfinished after {} steps",
        aws.steps
    );
    assert!(
        embedded.errors.is_empty(),
        "embedded check-ins failed: {:#?}",
        embedded.errors
    );
    assert!(
        aws.errors.is_empty(),
        "aws check-ins failed: {:#?}",
        aws.errors
    );

    // Each run ends where the simulator drove its devices.
    assert_eq!(
        mismatches(&embedded),
        Vec::<String>::new(),
        "embedded against the simulator"
    );
    assert_eq!(
        mismatches(&aws),
        Vec::<String>::new(),
        "aws against the simulator"
    );

    // Device by device, the two stores agree.
    for kind in [DDM, MDM] {
        let (ours, theirs) = (&embedded.operations[kind], &aws.operations[kind]);
        assert!(
            !ours.statuses.is_empty(),
            "{kind}: the operation has targets"
        );
        assert_eq!(
            ours.statuses, theirs.statuses,
            "{kind}: final status per device"
        );
        assert_eq!(ours.counts, theirs.counts, "{kind}: counts per status");
        assert_eq!(ours.state, "finished", "{kind}: embedded state");
        assert_eq!(theirs.state, "finished", "{kind}: aws state");
        assert!(
            ours.started_and_finished,
            "{kind}: embedded start and finish times"
        );
        assert!(
            theirs.started_and_finished,
            "{kind}: aws start and finish times"
        );
        assert_eq!(
            device_event_types(ours),
            device_event_types(theirs),
            "{kind}: event types recorded"
        );

        assert_eq!(
            ours.events.get(OPERATION_STARTED),
            Some(&1),
            "{kind}: embedded records the start once"
        );
        assert_eq!(
            ours.events.get(OPERATION_COMPLETED),
            Some(&1),
            "{kind}: embedded records the completion once"
        );
        // The DynamoDB store claims each lifecycle change with a conditional
        // write, so concurrent check-ins report it once, as SQLite does.
        assert_eq!(
            theirs.events.get(OPERATION_STARTED),
            Some(&1),
            "{kind}: aws records the start once"
        );
        assert_eq!(
            theirs.events.get(OPERATION_COMPLETED),
            Some(&1),
            "{kind}: aws records the completion once"
        );
    }
    assert_eq!(
        embedded.expected, aws.expected,
        "the two fleets expect the same statuses"
    );

    // The MDM deadlines ran in both runs, once per time zone, at the same steps.
    let deadlines = |run: &RunResult| -> Vec<FiredSchedule> {
        run.fired
            .iter()
            .filter(|f| f.job.starts_with("mdm_deadline"))
            .cloned()
            .collect()
    };
    assert!(!deadlines(&aws).is_empty(), "aws: no MDM deadline ran");
    let zones: BTreeSet<String> = deadlines(&aws).into_iter().map(|f| f.job).collect();
    assert_eq!(
        zones.len(),
        deadlines(&aws).len(),
        "aws: each time zone's deadline runs once"
    );
    assert_eq!(
        deadlines(&embedded),
        deadlines(&aws),
        "MDM deadlines that ran"
    );

    // The deadline sample has the shape of the events the run delivered.
    let mut sample_keys = BTreeSet::new();
    let sample: Value =
        serde_json::from_str(&read_event(SCHEDULED_JOB_SAMPLES[0])).expect("deadline sample");
    key_paths(&sample, "", &mut sample_keys);
    let delivered = aws
        .delivered
        .iter()
        .find(|e| e["job"]["job"] == "mdm_deadline")
        .expect("a deadline event was delivered");
    let mut delivered_keys = BTreeSet::new();
    key_paths(delivered, "", &mut delivered_keys);
    assert_eq!(
        sample_keys, delivered_keys,
        "keys of the deadline sample and a delivered event"
    );
    println!("a delivered deadline event: {delivered}");
}

/// Returns the event types an operation recorded.
fn device_event_types(operation: &OperationResult) -> BTreeSet<&str> {
    operation.events.keys().map(String::as_str).collect()
}

/// Returns the JSON object keys at every level, as `a.b` paths.
fn key_paths(value: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
    if let Value::Object(map) = value {
        for (key, inner) in map {
            let path = format!("{prefix}{key}");
            key_paths(inner, &format!("{path}."), paths);
            paths.insert(path);
        }
    }
}

#[test]
fn scheduled_job_samples_deserialize() {
    let deadline: Schedule =
        serde_json::from_str(&read_event(SCHEDULED_JOB_SAMPLES[0])).expect("deadline sample");
    let expiry: Schedule =
        serde_json::from_str(&read_event(SCHEDULED_JOB_SAMPLES[1])).expect("expiry sample");

    assert!(
        matches!(deadline.job, Job::MdmDeadline { .. }),
        "{:?}",
        deadline.job
    );
    assert!(
        matches!(expiry.job, Job::UpdateExpiry { .. }),
        "{:?}",
        expiry.job
    );
    // The adapter names schedules after these ids, which must name the
    // job's operation.
    assert!(
        schedule_name(&deadline.id, &deadline.job).is_ok(),
        "{}",
        deadline.id
    );
    assert!(
        schedule_name(&expiry.id, &expiry.job).is_ok(),
        "{}",
        expiry.id
    );
}
