//! One-time schedules on Amazon EventBridge Scheduler.
//!
//! Each [`Schedule`] becomes one `at(yyyy-mm-ddThh:mm:ss)` schedule in a
//! dedicated schedule group. Its target is the enforcement Lambda function,
//! invoked with the [`Schedule`] as JSON input
//! (`{"id": ..., "due_at": ..., "job": {...}}`), so the function runs
//! `schedule.job` and the original id survives the name mapping below.
//! Schedules delete themselves after they fire (`ActionAfterCompletion:
//! DELETE`), and the flexible time window is off. EventBridge Scheduler
//! invokes targets within the minute after the set time (60-second precision).
//!
//! Schedule names allow only 1 to 64 characters of `[0-9A-Za-z._-]`, while
//! our ids look like `deadline:<operation id>:<zone>`. A name is therefore
//! `<scope>.<digest>`, where the digest is the first 24 hex digits of the
//! id's SHA-256. For a job of an operation the scope is `o-<operation id>`,
//! or `h-<SHA-256 of the operation id>` when that id is longer than 37
//! characters or has characters other than `[0-9A-Za-z_-]`. Other jobs use
//! the scope `s`. `cancel_operation_schedules` lists the group by the
//! operation's scope as a name prefix.
//!
//! moto accepts any time zone name and any expression, so this adapter
//! validates both itself before each call.

use async_trait::async_trait;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target,
};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use super::AwsSettings;
use crate::domain::deadline::{parse_local_date_time, parse_time_zone};
use crate::ports::{Job, Schedule, ScheduleStore, Scheduler, StoreError, StoreResult};

/// Maximum length of a schedule or schedule group name.
pub const MAX_NAME_LEN: usize = 64;

/// Hex digits of the id's SHA-256 in a schedule name: 96 bits, so two ids
/// collide with a probability near 2^-96 per pair.
const DIGEST_HEX_LEN: usize = 24;

/// Maximum length of an operation id kept readable in a schedule name:
/// 64 - "o-".len() - ".".len() - DIGEST_HEX_LEN.
const MAX_RAW_OPERATION_LEN: usize = MAX_NAME_LEN - 3 - DIGEST_HEX_LEN;

/// Page size for ListSchedules, the API's maximum.
const LIST_PAGE_SIZE: i32 = 100;

/// Schedule group, target and role of the schedules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// The dedicated schedule group, created by the deployment template.
    pub group_name: String,
    /// ARN of the enforcement Lambda function that runs the jobs.
    pub target_arn: String,
    /// ARN of the IAM role EventBridge Scheduler assumes to invoke the target.
    pub role_arn: String,
}

/// Errors from EventBridge Scheduler calls, kept as the `source` of
/// [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("EventBridge Scheduler {action} of schedule {name:?} in group {group:?} failed")]
    Call {
        action: &'static str,
        group: String,
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "schedule {name:?} in group {group:?} has no osdeploy schedule as its target input; \
         keep the group for osdeploy's schedules only"
    )]
    ForeignSchedule {
        group: String,
        name: String,
        #[source]
        source: Option<serde_json::Error>,
    },
}

/// [`Scheduler`] and [`ScheduleStore`] on EventBridge Scheduler.
#[derive(Debug, Clone)]
pub struct EventBridgeScheduler {
    client: Client,
    settings: SchedulerSettings,
}

impl EventBridgeScheduler {
    /// Uses `client` for the schedules described by `settings`. Rejects an
    /// invalid group name or an ARN that does not start with `arn:`.
    pub fn new(client: Client, settings: SchedulerSettings) -> StoreResult<Self> {
        validate_name("schedule group name", &settings.group_name)?;
        for (what, arn) in [
            ("target ARN", &settings.target_arn),
            ("role ARN", &settings.role_arn),
        ] {
            if !arn.starts_with("arn:") {
                return Err(StoreError::InvalidInput(format!(
                    "invalid scheduler {what} {arn:?}: expected an ARN such as \
                     \"arn:aws:lambda:us-east-1:123456789012:function:osdeploy-enforce\""
                )));
            }
        }
        Ok(EventBridgeScheduler { client, settings })
    }

    /// Builds the client from `aws`, then as [`EventBridgeScheduler::new`].
    pub async fn connect(aws: &AwsSettings, settings: SchedulerSettings) -> StoreResult<Self> {
        let client = Client::new(&aws.sdk_config().await);
        Self::new(client, settings)
    }

    pub fn settings(&self) -> &SchedulerSettings {
        &self.settings
    }

    fn call_error(
        &self,
        action: &'static str,
        name: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::backend(
            "scheduler",
            SchedulerError::Call {
                action,
                group: self.settings.group_name.clone(),
                name: name.to_string(),
                source: source.into(),
            },
        )
    }

    /// Creates the schedule `name`, or replaces it when it exists.
    async fn put_schedule(&self, name: &str, schedule: &Schedule) -> StoreResult<()> {
        let at = at_expression(schedule.due_at, expression_zone(&schedule.job))?;
        let input = serde_json::to_string(schedule)
            .map_err(|e| StoreError::backend("encode schedule input", e))?;
        let target = Target::builder()
            .arn(&self.settings.target_arn)
            .role_arn(&self.settings.role_arn)
            .input(input)
            .build()
            .map_err(|e| self.call_error("build target", name, e))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| self.call_error("build time window", name, e))?;
        // Descriptions hold up to 512 characters; the id is for people
        // reading the console, the input keeps it in full.
        let description: String = schedule.id.chars().take(512).collect();

        let created = self
            .client
            .create_schedule()
            .name(name)
            .group_name(&self.settings.group_name)
            .description(&description)
            .schedule_expression(&at.expression)
            .schedule_expression_timezone(&at.time_zone)
            .flexible_time_window(window.clone())
            .target(target.clone())
            .action_after_completion(ActionAfterCompletion::Delete)
            .state(ScheduleState::Enabled)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conflict_exception()) =>
            {
                // UpdateSchedule replaces every field, so all are sent again.
                self.client
                    .update_schedule()
                    .name(name)
                    .group_name(&self.settings.group_name)
                    .description(description)
                    .schedule_expression(at.expression)
                    .schedule_expression_timezone(at.time_zone)
                    .flexible_time_window(window)
                    .target(target)
                    .action_after_completion(ActionAfterCompletion::Delete)
                    .state(ScheduleState::Enabled)
                    .send()
                    .await
                    .map_err(|e| self.call_error("UpdateSchedule", name, e))?;
                Ok(())
            }
            Err(e) => Err(self.call_error("CreateSchedule", name, e)),
        }
    }

    /// Deletes the schedule `name`; a missing schedule is not an error.
    async fn delete_name(&self, name: &str) -> StoreResult<()> {
        let deleted = self
            .client
            .delete_schedule()
            .name(name)
            .group_name(&self.settings.group_name)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(self.call_error("DeleteSchedule", name, e)),
        }
    }

    /// Names of the group's schedules that start with `prefix`.
    async fn list_names(&self, prefix: Option<&str>) -> StoreResult<Vec<String>> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_schedules()
                .group_name(&self.settings.group_name)
                .set_name_prefix(prefix.map(str::to_string))
                .max_results(LIST_PAGE_SIZE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.call_error("ListSchedules", prefix.unwrap_or("*"), e))?;
            for summary in page.schedules() {
                let in_group = summary.group_name() == Some(self.settings.group_name.as_str());
                let Some(name) = summary.name() else { continue };
                // The prefix is checked again because it is what keeps
                // another operation's schedules out of a cancel.
                if in_group && prefix.is_none_or(|p| name.starts_with(p)) {
                    names.push(name.to_string());
                }
            }
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => return Ok(names),
            }
        }
    }

    /// Reads the schedule stored under `name`; `None` when it is gone.
    async fn read(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let output = match self
            .client
            .get_schedule()
            .name(name)
            .group_name(&self.settings.group_name)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(self.call_error("GetSchedule", name, e)),
        };
        let foreign = |source| {
            StoreError::backend(
                "scheduler",
                SchedulerError::ForeignSchedule {
                    group: self.settings.group_name.clone(),
                    name: name.to_string(),
                    source,
                },
            )
        };
        let input = output
            .target()
            .and_then(|t| t.input())
            .ok_or_else(|| foreign(None))?;
        let schedule: Schedule = serde_json::from_str(input).map_err(|e| foreign(Some(e)))?;
        Ok(Some(schedule))
    }
}

#[async_trait]
impl Scheduler for EventBridgeScheduler {
    async fn schedule(&self, schedule: &Schedule) -> StoreResult<()> {
        let name = schedule_name(&schedule.id, &schedule.job)?;
        self.put_schedule(&name, schedule).await?;
        // The same id under the other scope is the schedule this one
        // replaces, written with a job of another kind.
        for other in name_candidates(&schedule.id) {
            if other != name {
                self.delete_name(&other).await?;
            }
        }
        Ok(())
    }

    async fn cancel_operation_schedules(&self, operation_id: &str) -> StoreResult<()> {
        let prefix = operation_name_prefix(operation_id);
        for name in self.list_names(Some(&prefix)).await? {
            self.delete_name(&name).await?;
        }
        Ok(())
    }
}

/// Inspection only: EventBridge Scheduler fires the schedules itself, so no
/// loop calls `due` in production. Each read lists the group and then gets
/// every schedule, one call per schedule.
#[async_trait]
impl ScheduleStore for EventBridgeScheduler {
    async fn due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<Schedule>> {
        let mut due: Vec<Schedule> = self
            .all()
            .await?
            .into_iter()
            .filter(|s| s.due_at <= now)
            .collect();
        due.truncate(limit);
        Ok(due)
    }

    async fn remove(&self, id: &str) -> StoreResult<()> {
        for name in name_candidates(id) {
            self.delete_name(&name).await?;
        }
        Ok(())
    }

    async fn all(&self) -> StoreResult<Vec<Schedule>> {
        let mut schedules = Vec::new();
        for name in self.list_names(None).await? {
            // A schedule that fired or was deleted since the list is skipped.
            if let Some(schedule) = self.read(&name).await? {
                schedules.push(schedule);
            }
        }
        schedules.sort_by(|a, b| a.due_at.cmp(&b.due_at).then_with(|| a.id.cmp(&b.id)));
        Ok(schedules)
    }
}

/// An `at()` expression with the time zone EventBridge Scheduler reads it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtExpression {
    /// `at(yyyy-mm-ddThh:mm:ss)`, a wall-clock time in `time_zone`.
    pub expression: String,
    /// `ScheduleExpressionTimezone`: an IANA name as the bundled database
    /// spells it.
    pub time_zone: String,
}

/// Builds the one-time expression that fires at `due_at`, written as the
/// wall-clock time in `zone_name`.
///
/// The wall time comes from the instant, so it never falls in a DST gap.
/// That matters because AWS documents that EventBridge Scheduler skips a
/// cron time inside a gap, and documents no rule for `at()`. When the wall
/// time falls in a fold, it names two instants and AWS does not document
/// which one a one-time schedule takes, so the expression is written in UTC.
/// Either way it names exactly `due_at`, the instant the local scheduler
/// uses. A fraction of a second rounds up, so it never fires early.
///
/// NOTE: an instant in the past is not rejected here; the service checks
/// deadlines against its clock before it schedules them.
pub fn at_expression(due_at: Timestamp, zone_name: &str) -> StoreResult<AtExpression> {
    let zone = parse_time_zone(zone_name)
        .map_err(|e| StoreError::InvalidInput(format!("invalid schedule time zone: {e}")))?;
    let due_at = round_up_to_second(due_at).ok_or_else(|| {
        StoreError::InvalidInput(format!(
            "invalid schedule instant {due_at}: it is outside the supported range"
        ))
    })?;
    let wall = zone.to_datetime(due_at);
    let unambiguous = zone
        .to_ambiguous_timestamp(wall)
        .unambiguous()
        .is_ok_and(|instant| instant == due_at);
    let (wall, time_zone) = if unambiguous {
        let name = zone.iana_name().unwrap_or(zone_name).to_string();
        (wall, name)
    } else {
        (TimeZone::UTC.to_datetime(due_at), "UTC".to_string())
    };
    let expression = format_at(wall);
    validate_at_expression(&expression)?;
    Ok(AtExpression {
        expression,
        time_zone,
    })
}

/// Checks that `expression` is `at(yyyy-mm-ddThh:mm:ss)` with a real
/// calendar date and time, the only form this adapter writes.
pub fn validate_at_expression(expression: &str) -> StoreResult<()> {
    let invalid = |reason: String| {
        Err(StoreError::InvalidInput(format!(
            "invalid schedule expression {expression:?}: {reason}; expected \
             at(yyyy-mm-ddThh:mm:ss) such as \"at(2026-03-29T03:30:00)\""
        )))
    };
    let Some(inner) = expression
        .strip_prefix("at(")
        .and_then(|rest| rest.strip_suffix(')'))
    else {
        return invalid("it is not of the form at(...)".to_string());
    };
    match parse_local_date_time(inner) {
        Ok(_) => Ok(()),
        Err(e) => invalid(e.to_string()),
    }
}

/// Checks a schedule or group name: 1 to 64 characters of `[0-9A-Za-z._-]`.
pub fn validate_name(what: &str, name: &str) -> StoreResult<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(format!(
            "invalid {what} {name:?}: use 1 to {MAX_NAME_LEN} characters of \
             ASCII letters, digits, '.', '_' and '-'"
        )))
    }
}

/// Returns the name a schedule with this id and job is stored under. Rejects a job of an operation
/// whose id does not have the form `<kind>:<operation id>[:<more>]`,
/// because `cancel_operation_schedules` finds schedules by that part.
pub fn schedule_name(id: &str, job: &Job) -> StoreResult<String> {
    let name = match job.operation_id() {
        Some(operation_id) => {
            if id_operation(id) != Some(operation_id) {
                return Err(StoreError::InvalidInput(format!(
                    "invalid schedule id {id:?} for a job of operation {operation_id:?}: \
                     use <kind>:{operation_id}[:<more>], such as \
                     \"deadline:{operation_id}:Europe/Berlin\", so that cancelling the \
                     operation finds it"
                )));
            }
            format!("{}{}", operation_name_prefix(operation_id), id_digest(id))
        }
        None => format!("s.{}", id_digest(id)),
    };
    validate_name("schedule name", &name)?;
    Ok(name)
}

/// Name prefix of every schedule of `operation_id`, ending in `.` so that
/// `op-1` does not match `op-10`.
pub fn operation_name_prefix(operation_id: &str) -> String {
    let readable = !operation_id.is_empty()
        && operation_id.len() <= MAX_RAW_OPERATION_LEN
        && operation_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if readable {
        format!("o-{operation_id}.")
    } else {
        let digest = hex::encode(Sha256::digest(operation_id.as_bytes()));
        format!("h-{}.", &digest[..32])
    }
}

/// Lists every name a schedule with this id may be stored under: the
/// operation-scoped one when the id names an operation, and the unscoped one.
fn name_candidates(id: &str) -> Vec<String> {
    let mut names = Vec::with_capacity(2);
    if let Some(operation_id) = id_operation(id) {
        names.push(format!(
            "{}{}",
            operation_name_prefix(operation_id),
            id_digest(id)
        ));
    }
    names.push(format!("s.{}", id_digest(id)));
    names
}

/// Returns the operation part of an id `<kind>:<operation id>[:<more>]`.
fn id_operation(id: &str) -> Option<&str> {
    id.split(':').nth(1).filter(|part| !part.is_empty())
}

fn id_digest(id: &str) -> String {
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    digest[..DIGEST_HEX_LEN].to_string()
}

/// Returns the zone a job's expression is written in: an MDM deadline's or a
/// reminder's own zone, so the console shows the local time, and UTC for other jobs.
fn expression_zone(job: &Job) -> &str {
    match job {
        Job::MdmDeadline { time_zone, .. } | Job::Reminder { time_zone, .. } => time_zone,
        Job::UpdateExpiry { .. }
        | Job::PurgeEvents
        | Job::Sweep
        | Job::Export { .. }
        | Job::RefreshCatalog => "UTC",
    }
}

/// Rounds `at` up to a whole second; `None` when that leaves jiff's range.
fn round_up_to_second(at: Timestamp) -> Option<Timestamp> {
    let fraction = at.subsec_nanosecond();
    if fraction > 0 {
        at.checked_add(SignedDuration::from_nanos(i64::from(
            1_000_000_000 - fraction,
        )))
        .ok()
    } else {
        Some(at)
    }
}

fn format_at(wall: DateTime) -> String {
    format!(
        "at({:04}-{:02}-{:02}T{:02}:{:02}:{:02})",
        wall.year(),
        wall.month(),
        wall.day(),
        wall.hour(),
        wall.minute(),
        wall.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::deadline::deadline_instant;
    use jiff::civil::date;

    fn instant(text: &str) -> Timestamp {
        text.parse()
            .unwrap_or_else(|e| panic!("test instant {text:?}: {e}"))
    }

    fn at(due_at: Timestamp, zone: &str) -> AtExpression {
        at_expression(due_at, zone)
            .unwrap_or_else(|e| panic!("at_expression({due_at}, {zone}): {e}"))
    }

    /// Reads an expression back the way EventBridge Scheduler does: the
    /// wall time in its zone. Panics if the wall time is ambiguous.
    fn fires_at(expression: &AtExpression) -> Timestamp {
        let inner = expression
            .expression
            .strip_prefix("at(")
            .and_then(|rest| rest.strip_suffix(')'))
            .expect("at(...)");
        let wall = parse_local_date_time(inner).expect("wall time");
        let zone = parse_time_zone(&expression.time_zone).expect("zone");
        zone.to_ambiguous_timestamp(wall)
            .unambiguous()
            .unwrap_or_else(|e| panic!("{expression:?} must name one instant: {e}"))
    }

    #[test]
    fn expression_matches_local_scheduler_instant() {
        // (zone, local deadline, expected expression, expected zone)
        let cases = [
            // Berlin spring-forward gap: 02:30 does not exist, the deadline
            // moves to 03:30 CEST (01:30Z).
            (
                "Europe/Berlin",
                date(2026, 3, 29).at(2, 30, 0, 0),
                "at(2026-03-29T03:30:00)",
                "Europe/Berlin",
            ),
            // Berlin fall-back fold: 02:30 occurs twice, the deadline takes
            // the first (CEST, 00:30Z), written in UTC.
            (
                "Europe/Berlin",
                date(2026, 10, 25).at(2, 30, 0, 0),
                "at(2026-10-25T00:30:00)",
                "UTC",
            ),
            (
                "Europe/Berlin",
                date(2026, 7, 1).at(9, 0, 0, 0),
                "at(2026-07-01T09:00:00)",
                "Europe/Berlin",
            ),
            // New York gap and fold.
            (
                "America/New_York",
                date(2026, 3, 8).at(2, 30, 0, 0),
                "at(2026-03-08T03:30:00)",
                "America/New_York",
            ),
            (
                "America/New_York",
                date(2026, 11, 1).at(1, 30, 0, 0),
                "at(2026-11-01T05:30:00)",
                "UTC",
            ),
            // Lord Howe's 30-minute gap.
            (
                "Australia/Lord_Howe",
                date(2026, 10, 4).at(2, 15, 0, 0),
                "at(2026-10-04T02:45:00)",
                "Australia/Lord_Howe",
            ),
            (
                "UTC",
                date(2026, 12, 31).at(23, 59, 59, 0),
                "at(2026-12-31T23:59:59)",
                "UTC",
            ),
            // Case-insensitive input is sent with the database's spelling.
            (
                "asia/kolkata",
                date(2026, 5, 1).at(8, 0, 0, 0),
                "at(2026-05-01T08:00:00)",
                "Asia/Kolkata",
            ),
        ];
        for (zone_name, local, expected_expression, expected_zone) in cases {
            let zone = parse_time_zone(zone_name).expect("zone");
            let deadline = deadline_instant(local, &zone);
            let expression = at(deadline, zone_name);

            assert_eq!(
                expression.expression, expected_expression,
                "{zone_name} {local}"
            );
            assert_eq!(expression.time_zone, expected_zone, "{zone_name} {local}");
            assert_eq!(
                fires_at(&expression),
                deadline,
                "{zone_name} {local}: the expression must name the local scheduler's instant"
            );
        }
    }

    #[test]
    fn expression_zone_follows_job() {
        let deadline = Job::MdmDeadline {
            operation_id: "op-1".into(),
            time_zone: "Europe/Berlin".into(),
        };
        let expiry = Job::UpdateExpiry {
            operation_id: "op-1".into(),
        };
        assert_eq!(expression_zone(&deadline), "Europe/Berlin");
        assert_eq!(expression_zone(&expiry), "UTC");
        assert_eq!(expression_zone(&Job::PurgeEvents), "UTC");
    }

    #[test]
    fn expression_rounds_fraction_up() {
        let due_at = instant("2026-07-01T07:00:00.250Z");
        let expression = at(due_at, "Europe/Berlin");
        assert_eq!(expression.expression, "at(2026-07-01T09:00:01)");
    }

    #[test]
    fn expression_rejects_unknown_zone() {
        let due_at = instant("2026-07-01T07:00:00Z");
        for zone in [
            "Mars/Olympus_Mons",
            "PST",
            "+02:00",
            "",
            "Etc/Unknown",
            " UTC",
        ] {
            let result = at_expression(due_at, zone);
            assert!(
                matches!(result, Err(StoreError::InvalidInput(_))),
                "zone {zone:?} must be rejected, got {result:?}"
            );
        }
    }

    #[test]
    fn expression_rejects_out_of_range_instants() {
        // MAX has a fraction that cannot round up; MIN is in year -9999.
        for due_at in [Timestamp::MAX, Timestamp::MIN] {
            let result = at_expression(due_at, "UTC");
            assert!(
                matches!(result, Err(StoreError::InvalidInput(_))),
                "{due_at} must be rejected, got {result:?}"
            );
        }
    }

    #[test]
    fn validation_accepts_only_at_expressions() {
        assert!(validate_at_expression("at(2026-03-29T03:30:00)").is_ok());
        let invalid = [
            "at(2026-03-29 03:30:00)",
            "at(2026-03-29T03:30)",
            "at(2026-02-30T03:30:00)",
            "at(2026-03-29T24:00:00)",
            "at(2026-03-29T03:30:00Z)",
            "at(2026-03-29T03:30:00.5)",
            "at(2026-03-29T03:30:00",
            "AT(2026-03-29T03:30:00)",
            "rate(5 minutes)",
            "cron(0 9 * * ? *)",
            "",
        ];
        for expression in invalid {
            let result = validate_at_expression(expression);
            assert!(
                matches!(result, Err(StoreError::InvalidInput(_))),
                "{expression:?} must be rejected, got {result:?}"
            );
        }
    }

    #[test]
    fn names_are_valid_and_unique() {
        let long_zone = "America/Argentina/ComodRivadavia";
        let ulid = "01KBZK4Q7YJ4T9V2M8P6N3R5WX";
        let long_operation = "operation-".repeat(8);
        let ids_and_jobs = [
            (
                format!("deadline:{ulid}:{long_zone}"),
                deadline_job(ulid, long_zone),
            ),
            (
                format!("deadline:{ulid}:Europe/Berlin"),
                deadline_job(ulid, "Europe/Berlin"),
            ),
            (format!("expiry:{ulid}:1767603600"), expiry_job(ulid)),
            (format!("expiry:{ulid}:1767690000"), expiry_job(ulid)),
            (
                format!("expiry:{long_operation}:1"),
                expiry_job(&long_operation),
            ),
            ("expiry:op.1:1".to_string(), expiry_job("op.1")),
            ("purge-events".to_string(), Job::PurgeEvents),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (id, job) in &ids_and_jobs {
            let name = schedule_name(id, job).expect("schedule_name");
            assert!(
                validate_name("name", &name).is_ok(),
                "{name:?} for {id:?} must be valid"
            );
            assert!(
                seen.insert(name.clone()),
                "{name:?} for {id:?} must be unique"
            );
            if let Some(operation_id) = job.operation_id() {
                assert!(
                    name.starts_with(&operation_name_prefix(operation_id)),
                    "{name:?} must start with the prefix of {operation_id:?}"
                );
            }
        }
    }

    #[test]
    fn operation_prefixes_do_not_overlap() {
        let operations = ["op-1", "op-10", "op", "op.1", "op_1", &"x".repeat(38)];
        for a in operations {
            for b in operations {
                if a != b {
                    let (pa, pb) = (operation_name_prefix(a), operation_name_prefix(b));
                    assert!(
                        !pa.starts_with(&pb),
                        "prefix {pa:?} of {a:?} must not start with prefix {pb:?} of {b:?}"
                    );
                }
            }
        }
        assert_eq!(operation_name_prefix("op-1"), "o-op-1.");
        assert!(operation_name_prefix("op.1").starts_with("h-"));
    }

    #[test]
    fn name_rejects_id_without_operation() {
        let cases = [
            ("expiry", expiry_job("op-1")),
            ("deadline:op-2:UTC", deadline_job("op-1", "UTC")),
            ("deadline::UTC", deadline_job("op-1", "UTC")),
        ];
        for (id, job) in cases {
            let result = schedule_name(id, &job);
            assert!(
                matches!(result, Err(StoreError::InvalidInput(_))),
                "id {id:?} for a job of op-1 must be rejected, got {result:?}"
            );
        }
    }

    #[test]
    fn replacement_names_cover_both_scopes() {
        let id = "deadline:op-1:Europe/Berlin";
        let scoped = schedule_name(id, &deadline_job("op-1", "Europe/Berlin")).expect("name");
        let unscoped = schedule_name(id, &Job::PurgeEvents).expect("name");
        assert_eq!(name_candidates(id), vec![scoped, unscoped]);
    }

    #[test]
    fn settings_are_validated() {
        let valid = SchedulerSettings {
            group_name: "osdeploy-schedules".into(),
            target_arn: "arn:aws:lambda:us-east-1:123456789012:function:enforce".into(),
            role_arn: "arn:aws:iam::123456789012:role/scheduler".into(),
        };
        let client = Client::from_conf(
            aws_sdk_scheduler::Config::builder()
                .behavior_version(aws_sdk_scheduler::config::BehaviorVersion::latest())
                .build(),
        );
        assert!(EventBridgeScheduler::new(client.clone(), valid.clone()).is_ok());
        let invalid = [
            SchedulerSettings {
                group_name: "osdeploy schedules".into(),
                ..valid.clone()
            },
            SchedulerSettings {
                group_name: String::new(),
                ..valid.clone()
            },
            SchedulerSettings {
                group_name: "g".repeat(65),
                ..valid.clone()
            },
            SchedulerSettings {
                target_arn: "osdeploy-enforce".into(),
                ..valid.clone()
            },
            SchedulerSettings {
                role_arn: String::new(),
                ..valid.clone()
            },
        ];
        for settings in invalid {
            let result = EventBridgeScheduler::new(client.clone(), settings.clone());
            assert!(
                matches!(result, Err(StoreError::InvalidInput(_))),
                "{settings:?} must be rejected"
            );
        }
    }

    fn deadline_job(operation_id: &str, zone: &str) -> Job {
        Job::MdmDeadline {
            operation_id: operation_id.to_string(),
            time_zone: zone.to_string(),
        }
    }

    fn expiry_job(operation_id: &str) -> Job {
        Job::UpdateExpiry {
            operation_id: operation_id.to_string(),
        }
    }
}
