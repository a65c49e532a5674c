//! Shared pieces of every Lambda function: typed configuration read once at
//! cold start, the AWS clients and services built once from it, and logging
//! set up for CloudWatch.
//!
//! Each binary in `src/bin/` only reads the configuration, builds the
//! services and hands requests to a handler from `osdeploy-shared`; no domain
//! rule lives here.

use std::sync::Arc;

use osdeploy_shared::adapters::RecordedPush;
use osdeploy_shared::adapters::apns::{ApnsError, ApnsPush, ApnsSettings};
use osdeploy_shared::adapters::aws::dynamodb::{DynamoStore, DynamoTables};
use osdeploy_shared::adapters::aws::scheduler::{EventBridgeScheduler, SchedulerSettings};
use osdeploy_shared::adapters::aws::{AwsSettings, EventBridgePublisher, S3BlobStore};
use osdeploy_shared::catalog::{Catalog, ModelIndex};
use osdeploy_shared::domain::{SystemClock, UlidGenerator};
use osdeploy_shared::http::AppState;
use osdeploy_shared::ports::{CatalogStore, EventPublisher, Job, Push, Schedule, ScheduleStore};
use osdeploy_shared::service::{Ports, ServiceConfig, Services};

/// Configuration from the environment; a missing or bad variable fails the
/// cold start and names itself. The README lists every variable.
#[derive(Debug, Clone)]
pub struct Config {
    /// `OSDEPLOY_STATE_TABLE`: devices, targets, operations, groups.
    pub state_table: String,
    /// `OSDEPLOY_EVENTS_TABLE`: the audit trail, with TTL.
    pub events_table: String,
    /// `OSDEPLOY_SCHEDULE_GROUP`, `OSDEPLOY_SCHEDULER_ROLE_ARN` and
    /// `OSDEPLOY_SCHEDULED_JOB_ARN`; only functions that create schedules
    /// need them.
    pub scheduler: Option<SchedulerSettings>,
    /// `OSDEPLOY_EVENT_BUS`: the EventBridge bus (name or ARN) that stored
    /// events are published to. When it is unset, events are only stored,
    /// and a warning is logged at cold start.
    pub event_bus: Option<String>,
    /// `OSDEPLOY_APNS_CERT` and `OSDEPLOY_APNS_KEY` (each PEM text or a
    /// path to a PEM file), `OSDEPLOY_APNS_URL` and `OSDEPLOY_APNS_TOPIC`.
    /// Without a certificate, pushes are only counted and devices are
    /// reached at their next regular check-in.
    pub apns: Option<ApnsSettings>,
    /// `OSDEPLOY_AWS_ENDPOINT`: an emulator's endpoint, for local runs and
    /// tests; unset in AWS. Static test credentials come with it.
    pub endpoint_url: Option<String>,
    /// `AWS_REGION`, set by Lambda.
    pub region: String,
    /// `OSDEPLOY_EXPORTS_BUCKET`: the S3 bucket of export files and records.
    pub exports_bucket: String,
    /// `OSDEPLOY_ADMIN_TOKEN`: optional bearer token checked behind the authorizer.
    pub admin_token: Option<String>,
    pub service: ServiceConfig,
}

/// A variable that is missing or invalid.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    lookup(name).filter(|v| !v.is_empty()).ok_or(ConfigError {
        name,
        problem: "is not set".into(),
    })
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable lookup, for tests.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut service = ServiceConfig::default();
        if let Some(zone) = lookup("OSDEPLOY_DEFAULT_TIME_ZONE").filter(|z| !z.is_empty()) {
            osdeploy_shared::domain::deadline::parse_time_zone(&zone).map_err(|e| ConfigError {
                name: "OSDEPLOY_DEFAULT_TIME_ZONE",
                problem: e.to_string(),
            })?;
            service.default_time_zone = zone;
        }
        osdeploy_shared::service::retry_settings::apply_retry_settings(&mut service, &lookup)
            .map_err(|e| ConfigError {
                name: e.variable,
                problem: e.problem,
            })?;
        let silent_after_variable = osdeploy_shared::service::readiness::SILENT_AFTER_VARIABLE;
        if let Some(hours) = lookup(silent_after_variable).filter(|h| !h.is_empty()) {
            service.silent_after = osdeploy_shared::service::readiness::parse_silent_after_hours(
                &hours,
            )
            .map_err(|problem| ConfigError {
                name: "OSDEPLOY_SILENT_AFTER_HOURS",
                problem,
            })?;
        }
        if let Some(text) = lookup("OSDEPLOY_EXPORT_LINK_SECONDS").filter(|t| !t.is_empty()) {
            let invalid = |problem: String| ConfigError {
                name: "OSDEPLOY_EXPORT_LINK_SECONDS",
                problem,
            };
            let seconds: i64 = text
                .parse()
                .map_err(|_| invalid(format!("{text:?} is not a whole number of seconds")))?;
            let expiry = jiff::SignedDuration::from_secs(seconds);
            osdeploy_shared::ports::validate_download_expiry(expiry)
                .map_err(|e| invalid(e.to_string()))?;
            service.export_link_expiry = expiry;
        }
        if let Some(url) = lookup("OSDEPLOY_CATALOG_URL").filter(|u| !u.is_empty()) {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError {
                    name: "OSDEPLOY_CATALOG_URL",
                    problem: format!(
                        "invalid URL {url:?}: give an http:// or https:// URL, such as {}",
                        osdeploy_shared::adapters::catalog_source::DEFAULT_CATALOG_URL
                    ),
                });
            }
            service.catalog_source.url = url;
        }
        service.catalog_source.ca_file = lookup("OSDEPLOY_CATALOG_CA_FILE")
            .filter(|path| !path.is_empty())
            .map(std::path::PathBuf::from);
        let scheduler = match lookup("OSDEPLOY_SCHEDULE_GROUP").filter(|g| !g.is_empty()) {
            None => None,
            Some(group_name) => Some(SchedulerSettings {
                group_name,
                role_arn: required(&lookup, "OSDEPLOY_SCHEDULER_ROLE_ARN")?,
                target_arn: required(&lookup, "OSDEPLOY_SCHEDULED_JOB_ARN")?,
            }),
        };
        let apns = apns_settings(&lookup)?;
        Ok(Config {
            apns,
            state_table: required(&lookup, "OSDEPLOY_STATE_TABLE")?,
            events_table: required(&lookup, "OSDEPLOY_EVENTS_TABLE")?,
            exports_bucket: required(&lookup, "OSDEPLOY_EXPORTS_BUCKET")?,
            scheduler,
            event_bus: lookup("OSDEPLOY_EVENT_BUS").filter(|b| !b.is_empty()),
            endpoint_url: lookup("OSDEPLOY_AWS_ENDPOINT").filter(|e| !e.is_empty()),
            region: lookup("AWS_REGION")
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "us-east-1".into()),
            admin_token: lookup("OSDEPLOY_ADMIN_TOKEN").filter(|t| !t.is_empty()),
            service,
        })
    }

    fn aws(&self) -> AwsSettings {
        match &self.endpoint_url {
            Some(endpoint) => AwsSettings::emulator(endpoint),
            None => AwsSettings {
                region: self.region.clone(),
                endpoint_url: None,
                static_credentials: None,
            },
        }
    }
}

/// Reads a PEM variable: the PEM text itself, or the path of a PEM file.
fn pem_variable(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<String>, ConfigError> {
    let Some(value) = lookup(name).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(Some(value));
    }
    std::fs::read_to_string(&value)
        .map(Some)
        .map_err(|e| ConfigError {
            name,
            problem: format!(
                "could not read the PEM file {value:?} ({e}): give PEM text or a readable file"
            ),
        })
}

/// Reads the APNs settings; `None` when no push certificate is configured.
fn apns_settings(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Option<ApnsSettings>, ConfigError> {
    let Some(certificate_pem) = pem_variable(lookup, "OSDEPLOY_APNS_CERT")? else {
        return Ok(None);
    };
    let key_pem = pem_variable(lookup, "OSDEPLOY_APNS_KEY")?.ok_or(ConfigError {
        name: "OSDEPLOY_APNS_KEY",
        problem: "is not set, but OSDEPLOY_APNS_CERT is: give the push certificate's private key"
            .into(),
    })?;
    let mut settings = ApnsSettings::new(certificate_pem, key_pem);
    if let Some(url) = lookup("OSDEPLOY_APNS_URL").filter(|u| !u.is_empty()) {
        settings.base_url = url;
    }
    settings.topic = lookup("OSDEPLOY_APNS_TOPIC").filter(|t| !t.is_empty());
    Ok(Some(settings))
}

/// Errors that stop the services from being built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not set up the scheduler")]
    Scheduler(#[source] osdeploy_shared::ports::StoreError),
    #[error("could not set up the event publisher; check OSDEPLOY_EVENT_BUS")]
    Publisher(#[source] osdeploy_shared::ports::StoreError),
    #[error(
        "could not set up APNs; check OSDEPLOY_APNS_CERT, OSDEPLOY_APNS_KEY and OSDEPLOY_APNS_URL"
    )]
    Apns(#[source] ApnsError),
}

/// The publisher of a function without an event bus: stores nothing
/// elsewhere, because the events are already in the audit trail.
struct NoPublisher;

#[async_trait::async_trait]
impl osdeploy_shared::ports::EventPublisher for NoPublisher {
    async fn publish(
        &self,
        _events: &[osdeploy_shared::domain::Event],
    ) -> osdeploy_shared::ports::StoreResult<()> {
        Ok(())
    }
}

/// A scheduler for functions that never create schedules: refuses loudly
/// instead of dropping a schedule.
struct NoScheduler;

#[async_trait::async_trait]
impl osdeploy_shared::ports::Scheduler for NoScheduler {
    async fn schedule(
        &self,
        schedule: &osdeploy_shared::ports::Schedule,
    ) -> osdeploy_shared::ports::StoreResult<()> {
        Err(osdeploy_shared::ports::StoreError::InvalidInput(format!(
            "this function has no scheduler configured and cannot create schedule {}; set OSDEPLOY_SCHEDULE_GROUP",
            schedule.id
        )))
    }

    async fn cancel_operation_schedules(
        &self,
        operation_id: &str,
    ) -> osdeploy_shared::ports::StoreResult<()> {
        Err(osdeploy_shared::ports::StoreError::InvalidInput(format!(
            "this function has no scheduler configured and cannot cancel the schedules of operation {operation_id}"
        )))
    }
}

/// Builds the AWS clients once and the services over them.
pub async fn services(config: &Config) -> Result<Arc<Services>, StartError> {
    let sdk = config.aws().sdk_config().await;
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        DynamoTables {
            state: config.state_table.clone(),
            events: config.events_table.clone(),
        },
    ));
    let scheduler: Arc<dyn osdeploy_shared::ports::Scheduler> = match &config.scheduler {
        Some(settings) => Arc::new(
            EventBridgeScheduler::new(aws_sdk_scheduler::Client::new(&sdk), settings.clone())
                .map_err(StartError::Scheduler)?,
        ),
        None => Arc::new(NoScheduler),
    };
    let publisher: Arc<dyn EventPublisher> = match &config.event_bus {
        Some(bus) => Arc::new(
            EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&sdk), bus.clone())
                .map_err(StartError::Publisher)?,
        ),
        None => {
            tracing::warn!(
                "OSDEPLOY_EVENT_BUS is not set: events are stored but not published to EventBridge"
            );
            Arc::new(NoPublisher)
        }
    };
    let push: Arc<dyn Push> = match &config.apns {
        Some(settings) => {
            let apns = ApnsPush::new(settings).map_err(StartError::Apns)?;
            tracing::info!(topic = %apns.topic(), "MDM pushes go to APNs");
            Arc::new(apns)
        }
        None => {
            tracing::warn!(
                "OSDEPLOY_APNS_CERT is not set: pushes are not sent, and devices get their commands at their next regular check-in"
            );
            Arc::new(RecordedPush::default())
        }
    };
    let catalog = load_catalog(store.as_ref()).await;
    let ports = Ports {
        devices: store.clone(),
        groups: store.clone(),
        operations: store.clone(),
        events: store.clone(),
        scheduler,
        schedules: None::<Arc<dyn ScheduleStore>>,
        catalogs: store,
        push,
        blobs: Arc::new(S3BlobStore::connect(&config.aws(), &config.exports_bucket).await),
        publisher,
    };
    Ok(Arc::new(Services::new(
        ports,
        Arc::new(SystemClock),
        Arc::new(UlidGenerator::from_entropy()),
        catalog,
        config.service.clone(),
    )))
}

/// Returns the latest catalog the refresh job stored, else the bundled
/// snapshot. A stored catalog that cannot be read is logged and skipped,
/// because devices can still be served from the bundled one.
async fn load_catalog(store: &DynamoStore) -> Arc<Catalog> {
    match store.latest_catalog().await {
        Ok(Some(bytes)) => match Catalog::from_pmv_json(&bytes, ModelIndex::bundled()) {
            Ok(catalog) => return Arc::new(catalog),
            Err(e) => {
                tracing::error!(error = %e, "the stored catalog is invalid; using the bundled snapshot")
            }
        },
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "could not read the stored catalog; using the bundled snapshot")
        }
    }
    Arc::new(Catalog::bundled().clone())
}

/// The input of the scheduled-job function: a one-time schedule from
/// EventBridge Scheduler, or a bare job from an EventBridge rule, such as
/// `{"job":"refresh_catalog"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum JobEvent {
    Schedule(Schedule),
    Job(Job),
}

impl JobEvent {
    /// Parses the event a scheduled-job invocation received.
    pub fn from_payload(payload: serde_json::Value) -> Result<JobEvent, String> {
        serde_json::from_value(payload.clone()).map_err(|_| {
            format!(
                "the event {payload} is neither an osdeploy schedule (id, due_at, job) nor a job \
                 such as {{\"job\":\"refresh_catalog\"}}"
            )
        })
    }

    /// Returns the job to run.
    pub fn job(&self) -> &Job {
        match self {
            JobEvent::Schedule(schedule) => &schedule.job,
            JobEvent::Job(job) => job,
        }
    }

    /// Returns a name for logs: the schedule id, or the job's tag.
    pub fn name(&self) -> String {
        match self {
            JobEvent::Schedule(schedule) => schedule.id.clone(),
            JobEvent::Job(job) => job_tag(job),
        }
    }
}

/// Returns the job's `job` tag, such as `refresh_catalog`.
fn job_tag(job: &Job) -> String {
    serde_json::to_value(job)
        .ok()
        .and_then(|v| v["job"].as_str().map(str::to_string))
        .unwrap_or_else(|| "job".to_string())
}

/// Runs the job of one scheduled-job invocation. Returns
/// `{"schedule": id, "targets": n}` for a schedule and
/// `{"job": tag, "targets": n}` for a bare job. A failure is logged and
/// returned with the schedule id or job tag in front.
pub async fn handle_job_event(
    services: &Services,
    payload: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let event = JobEvent::from_payload(payload)?;
    let name = event.name();
    let report = match services.run_job(event.job()).await {
        Ok(report) => report,
        Err(e) => {
            tracing::error!(job = %name, error = %e, "scheduled job failed");
            return Err(format!("job {name}: {e}"));
        }
    };
    tracing::info!(job = %name, count = report.targets, "scheduled job ran");
    Ok(match event {
        JobEvent::Schedule(schedule) => {
            serde_json::json!({ "schedule": schedule.id, "targets": report.targets })
        }
        JobEvent::Job(job) => {
            serde_json::json!({ "job": job_tag(&job), "targets": report.targets })
        }
    })
}

/// Builds the state the HTTP handlers get.
pub fn app_state(services: Arc<Services>, config: &Config) -> AppState {
    AppState {
        services,
        // API Gateway's JWT authorizer guards the admin routes; a token
        // here is a second check for deployments without one.
        admin_token: config.admin_token.as_deref().map(Arc::from),
    }
}

/// Maximum time a device function keeps last-seen times in memory.
pub const LAST_SEEN_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Wraps a device router so that the last-seen times the services buffer
/// are written in one batch at most every [`LAST_SEEN_FLUSH_EVERY`].
/// Lambda freezes an instance between requests, so there is no background
/// task to do it: the request that finds the interval passed writes the
/// batch before its response goes out.
pub fn flush_last_seen(router: axum::Router, services: Arc<Services>) -> axum::Router {
    let last_flush = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let services = services.clone();
            let last_flush = last_flush.clone();
            async move {
                let response = next.run(request).await;
                let due = {
                    let mut last = last_flush.lock().unwrap_or_else(|e| e.into_inner());
                    let due = last.elapsed() >= LAST_SEEN_FLUSH_EVERY;
                    if due {
                        *last = std::time::Instant::now();
                    }
                    due
                };
                if due && let Err(e) = services.flush_last_seen().await {
                    tracing::warn!(error = %e, "could not record last-seen times");
                }
                response
            }
        },
    ))
}

/// JSON logs without ANSI colours or timestamps (CloudWatch adds its own).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OSDEPLOY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        let pairs = pairs.to_vec();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn missing_table_names_the_variable() {
        let error = Config::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(error.name, "OSDEPLOY_STATE_TABLE");
    }

    #[test]
    fn bad_time_zone_names_the_variable() {
        let error = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_DEFAULT_TIME_ZONE", "Mars/Olympus"),
        ]))
        .unwrap_err();
        assert_eq!(error.name, "OSDEPLOY_DEFAULT_TIME_ZONE");
        assert!(error.problem.contains("Mars/Olympus"), "{}", error.problem);
    }

    #[test]
    fn bad_retry_policy_names_the_variable() {
        let error = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            (
                "OSDEPLOY_RETRY_POLICY",
                r#"{"by_reason": {"NoSpace": {"max_attempts": 2, "initial_backoff_seconds": 600}}}"#,
            ),
        ]))
        .unwrap_err();
        assert_eq!(error.name, "OSDEPLOY_RETRY_POLICY");
        assert!(error.problem.contains("NoSpace"), "{}", error.problem);
    }

    #[test]
    fn retry_policy_variable_reaches_services() {
        let config = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_EXPORTS_BUCKET", "b"),
            (
                "OSDEPLOY_RETRY_POLICY",
                r#"{"default": {"max_attempts": 4, "initial_backoff_seconds": 900}}"#,
            ),
            ("OSDEPLOY_STALL_FAIL_AFTER", "48h"),
        ]))
        .unwrap();
        assert_eq!(config.service.retry_policy.default.max_attempts, 4);
        assert_eq!(config.service.stall_fail_after.as_secs(), 48 * 3600);
    }

    #[test]
    fn silent_after_hours_from_variable() {
        let base = [
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_EXPORTS_BUCKET", "b"),
        ];
        let config = Config::from_lookup(lookup(
            &[&base[..], &[("OSDEPLOY_SILENT_AFTER_HOURS", "12")]].concat(),
        ))
        .unwrap();
        assert_eq!(config.service.silent_after.as_hours(), 12);
        let error = Config::from_lookup(lookup(
            &[&base[..], &[("OSDEPLOY_SILENT_AFTER_HOURS", "soon")]].concat(),
        ))
        .unwrap_err();
        assert_eq!(error.name, "OSDEPLOY_SILENT_AFTER_HOURS");
        assert!(error.problem.contains("soon"), "{}", error.problem);
    }

    #[test]
    fn schedule_group_needs_its_role_and_target() {
        let error = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_SCHEDULE_GROUP", "osdeploy-deadlines"),
        ]))
        .unwrap_err();
        assert_eq!(error.name, "OSDEPLOY_SCHEDULER_ROLE_ARN");
    }

    #[test]
    fn defaults_apply_when_optional_variables_are_unset() {
        let config = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_EXPORTS_BUCKET", "b"),
            ("OSDEPLOY_ADMIN_TOKEN", ""),
        ]))
        .unwrap();
        assert!(config.admin_token.is_none());
        assert!(config.scheduler.is_none());
        assert!(config.endpoint_url.is_none());
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.service.default_time_zone, "UTC");
        assert_eq!(
            config.service.export_link_expiry,
            jiff::SignedDuration::from_hours(1)
        );
    }

    #[test]
    fn missing_exports_bucket_names_the_variable() {
        let error = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
        ]))
        .unwrap_err();
        assert_eq!(error.name, "OSDEPLOY_EXPORTS_BUCKET");
    }

    #[test]
    fn export_link_seconds_are_checked() {
        let base = [
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_EXPORTS_BUCKET", "b"),
        ];
        for bad in ["0", "604801", "an hour", "-5"] {
            let mut pairs = base.to_vec();
            pairs.push(("OSDEPLOY_EXPORT_LINK_SECONDS", bad));
            let error = Config::from_lookup(lookup(&pairs)).unwrap_err();
            assert_eq!(error.name, "OSDEPLOY_EXPORT_LINK_SECONDS", "value {bad}");
        }
        let mut pairs = base.to_vec();
        pairs.push(("OSDEPLOY_EXPORT_LINK_SECONDS", "604800"));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(
            config.service.export_link_expiry,
            jiff::SignedDuration::from_hours(7 * 24)
        );
    }

    #[test]
    fn catalog_source_reads_url_and_ca_file() {
        let config = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_EXPORTS_BUCKET", "b"),
            ("OSDEPLOY_CATALOG_URL", "https://mirror.example/pmv"),
            ("OSDEPLOY_CATALOG_CA_FILE", "/opt/apple-root.pem"),
        ]))
        .unwrap();
        let source = &config.service.catalog_source;
        assert_eq!(source.url, "https://mirror.example/pmv");
        assert_eq!(
            source.ca_file.as_deref(),
            Some(std::path::Path::new("/opt/apple-root.pem"))
        );
    }

    #[test]
    fn catalog_source_defaults_to_apple() {
        let config = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_EXPORTS_BUCKET", "b"),
        ]))
        .unwrap();
        assert_eq!(
            config.service.catalog_source.url,
            "https://gdmf.apple.com/v2/pmv"
        );
        assert!(config.service.catalog_source.ca_file.is_none());
        assert!(config.event_bus.is_none());
    }

    #[test]
    fn bad_catalog_url_names_the_variable() {
        let error = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_CATALOG_URL", "gdmf.apple.com/v2/pmv"),
        ]))
        .unwrap_err();
        assert_eq!(error.name, "OSDEPLOY_CATALOG_URL");
        assert!(
            error.problem.contains("gdmf.apple.com/v2/pmv"),
            "{}",
            error.problem
        );
    }

    #[test]
    fn job_event_accepts_schedule_or_job() {
        let schedule = JobEvent::from_payload(serde_json::json!({
            "id": "expiry:op-1",
            "due_at": "2026-08-22T23:00:00Z",
            "job": { "job": "update_expiry", "operation_id": "op-1" },
        }))
        .unwrap();
        assert_eq!(schedule.name(), "expiry:op-1");
        assert_eq!(
            schedule.job(),
            &Job::UpdateExpiry {
                operation_id: "op-1".into()
            }
        );

        let bare = JobEvent::from_payload(serde_json::json!({ "job": "refresh_catalog" })).unwrap();
        assert_eq!(bare.name(), "refresh_catalog");
        assert_eq!(bare.job(), &Job::RefreshCatalog);
    }

    #[test]
    fn apns_needs_key_with_certificate() {
        let error = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            (
                "OSDEPLOY_APNS_CERT",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
        ]))
        .unwrap_err();
        assert_eq!(error.name, "OSDEPLOY_APNS_KEY");
    }

    #[test]
    fn apns_reads_pem_text_and_url() {
        let config = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_EXPORTS_BUCKET", "b"),
            (
                "OSDEPLOY_APNS_CERT",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            (
                "OSDEPLOY_APNS_KEY",
                "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n",
            ),
            ("OSDEPLOY_APNS_URL", "http://127.0.0.1:2197"),
            ("OSDEPLOY_APNS_TOPIC", "com.apple.mgmt.External.x"),
        ]))
        .unwrap();
        let apns = config.apns.expect("APNs settings");
        assert!(apns.certificate_pem.contains("AAAA"));
        assert!(apns.key_pem.contains("BBBB"));
        assert_eq!(apns.base_url, "http://127.0.0.1:2197");
        assert_eq!(apns.topic.as_deref(), Some("com.apple.mgmt.External.x"));
    }

    #[test]
    fn apns_pem_path_must_be_readable() {
        let error = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_APNS_CERT", "/nonexistent/push.pem"),
        ]))
        .unwrap_err();
        assert_eq!(error.name, "OSDEPLOY_APNS_CERT");
        assert!(
            error.problem.contains("/nonexistent/push.pem"),
            "{}",
            error.problem
        );
    }

    #[test]
    fn apns_absent_without_certificate() {
        let config = Config::from_lookup(lookup(&[
            ("OSDEPLOY_STATE_TABLE", "s"),
            ("OSDEPLOY_EVENTS_TABLE", "e"),
            ("OSDEPLOY_EXPORTS_BUCKET", "b"),
        ]))
        .unwrap();
        assert!(config.apns.is_none());
    }
}
