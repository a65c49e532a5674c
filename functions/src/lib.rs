//! Shared pieces of every Lambda function: typed configuration read once at
//! cold start, the AWS clients and services built once from it, and logging
//! set up for CloudWatch.
//!
//! Each binary in `src/bin/` only reads the configuration, builds the
//! services and hands requests to a handler from `osdeploy-shared`; no domain
//! rule lives here.

use std::sync::Arc;

use osdeploy_shared::adapters::RecordedPush;
use osdeploy_shared::adapters::aws::AwsSettings;
use osdeploy_shared::adapters::aws::EventBridgePublisher;
use osdeploy_shared::adapters::aws::dynamodb::{DynamoStore, DynamoTables};
use osdeploy_shared::adapters::aws::scheduler::{EventBridgeScheduler, SchedulerSettings};
use osdeploy_shared::catalog::Catalog;
use osdeploy_shared::domain::{SystemClock, UlidGenerator};
use osdeploy_shared::http::AppState;
use osdeploy_shared::ports::{EventPublisher, ScheduleStore};
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
    /// events are published to. Unset, events are only stored, and a
    /// warning says so at cold start.
    pub event_bus: Option<String>,
    /// `OSDEPLOY_AWS_ENDPOINT`: an emulator's endpoint, for local runs and
    /// tests; unset in AWS. Static test credentials come with it.
    pub endpoint_url: Option<String>,
    /// `AWS_REGION`, set by Lambda.
    pub region: String,
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
        let scheduler = match lookup("OSDEPLOY_SCHEDULE_GROUP").filter(|g| !g.is_empty()) {
            None => None,
            Some(group_name) => Some(SchedulerSettings {
                group_name,
                role_arn: required(&lookup, "OSDEPLOY_SCHEDULER_ROLE_ARN")?,
                target_arn: required(&lookup, "OSDEPLOY_SCHEDULED_JOB_ARN")?,
            }),
        };
        Ok(Config {
            state_table: required(&lookup, "OSDEPLOY_STATE_TABLE")?,
            events_table: required(&lookup, "OSDEPLOY_EVENTS_TABLE")?,
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

/// Errors that stop the services from being built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not set up the scheduler")]
    Scheduler(#[source] osdeploy_shared::ports::StoreError),
    #[error("could not set up the event publisher; check OSDEPLOY_EVENT_BUS")]
    Publisher(#[source] osdeploy_shared::ports::StoreError),
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
    let ports = Ports {
        devices: store.clone(),
        groups: store.clone(),
        operations: store.clone(),
        events: store.clone(),
        scheduler,
        schedules: None::<Arc<dyn ScheduleStore>>,
        catalogs: store,
        // NOTE: APNs is not wired yet: pushes are counted, and devices are
        // reached at their next regular check-in.
        push: Arc::new(RecordedPush::default()),
        publisher,
    };
    Ok(Arc::new(Services::new(
        ports,
        Arc::new(SystemClock),
        Arc::new(UlidGenerator::from_entropy()),
        Arc::new(Catalog::bundled().clone()),
        config.service.clone(),
    )))
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
            ("OSDEPLOY_ADMIN_TOKEN", ""),
        ]))
        .unwrap();
        assert!(config.admin_token.is_none());
        assert!(config.scheduler.is_none());
        assert!(config.endpoint_url.is_none());
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.service.default_time_zone, "UTC");
    }
}
