//! Retry, stall, expiry and obsolescence scenarios that run unchanged on
//! SQLite (`retries.rs`) and on DynamoDB with EventBridge Scheduler on moto
//! (`aws_retries.rs`). Each drives the services directly with MDM and DDM
//! messages and a stepped manual clock.
#![allow(dead_code)]

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use osdeploy_shared::adapters::{RecordedPush, SqliteStore};
use osdeploy_shared::apple::mdm::{
    Command, CommandEnvelope, CommandResult, CommandStatus, DeviceInformationResponse,
    InstallAction, OsUpdateState, OsUpdateStatusItem, OsUpdateStatusResponse,
    ScheduleOsUpdateResponse, UpdateResult, UpdateResultAction, UpdateResultStatus, parse_command,
};
use osdeploy_shared::catalog::Catalog;
use osdeploy_shared::domain::{
    Actor, Event, ManualClock, OperationState, Target, TargetStatus, UlidGenerator,
};
use osdeploy_shared::ports::Job;
use osdeploy_shared::ports::{EventFilter, PageRequest, ScheduleStore};
use osdeploy_shared::service::checkin::CheckinReply;
use osdeploy_shared::service::jobs::JobReport;
use osdeploy_shared::service::{Ports, ServiceConfig, Services};
use serde_json::{Value, json};

use crate::support::TestDevice;

/// The bundled catalog's date, so that its updates are signed.
pub const START: &str = "2026-08-22T09:00:00Z";

/// The ProductKey simulated Macs give the 15.7.9 update.
const KEY_15_7_9: &str = "MSU_UPDATE_24G830_patch_15.7.9";

/// Services on one store, with the clock, the push counter and the
/// schedules the test fires by hand.
pub struct Harness {
    pub services: Arc<Services>,
    pub clock: Arc<ManualClock>,
    pub push: Arc<RecordedPush>,
    pub schedules: Arc<dyn ScheduleStore>,
}

pub fn start_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(START.parse().expect("start instant")))
}

pub fn services(ports: Ports, clock: Arc<ManualClock>, config: ServiceConfig) -> Arc<Services> {
    Arc::new(Services::new(
        ports,
        clock,
        Arc::new(UlidGenerator::seeded(7)),
        Arc::new(Catalog::bundled().clone()),
        config,
    ))
}

impl Harness {
    /// Services on an in-memory SQLite store, which also keeps the schedules.
    pub fn sqlite(config: ServiceConfig) -> Harness {
        let store = Arc::new(SqliteStore::in_memory().expect("in-memory SQLite store"));
        let push = Arc::new(RecordedPush::default());
        let clock = start_clock();
        let ports = Ports::from_store(
            store.clone(),
            push.clone(),
            Arc::new(osdeploy_shared::adapters::MemoryBlobStore::new()),
            Arc::new(osdeploy_shared::adapters::ChannelPublisher::default()),
        );
        Harness {
            services: services(ports, clock.clone(), config),
            clock,
            push,
            schedules: store,
        }
    }

    pub fn now(&self) -> Timestamp {
        use osdeploy_shared::domain::Clock;
        self.clock.now()
    }

    pub fn advance(&self, by: SignedDuration) {
        self.clock.advance(by);
    }

    pub fn set(&self, at: &str) {
        self.clock.set(at.parse().expect("instant"));
    }

    /// Runs the schedules due now, as the local loop or EventBridge
    /// Scheduler would, removing each after it ran. Returns how many ran.
    pub async fn run_due_schedules(&self) -> usize {
        let due = self
            .schedules
            .due(self.now(), 100)
            .await
            .expect("read due schedules");
        for schedule in &due {
            self.services
                .run_job(&schedule.job)
                .await
                .unwrap_or_else(|e| panic!("schedule {} failed: {e}", schedule.id));
            self.schedules
                .remove(&schedule.id)
                .await
                .expect("remove a schedule that ran");
        }
        due.len()
    }

    /// Runs one sweep from its JSON form, as the AWS rule sends it.
    pub async fn sweep(&self) -> JobReport {
        let job: Job = serde_json::from_value(json!({ "job": "sweep" })).expect("sweep job JSON");
        self.services.run_job(&job).await.expect("sweep runs")
    }

    pub async fn create(&self, body: Value) -> String {
        let request = serde_json::from_value(body).expect("create request");
        let created = self
            .services
            .create_operation(&request, None, "admin")
            .await
            .expect("operation created");
        created.operation.id
    }

    pub async fn target(&self, operation_id: &str, udid: &str) -> Target {
        self.services
            .ports
            .operations
            .get_target(operation_id, udid)
            .await
            .expect("read target")
            .unwrap_or_else(|| panic!("no target for {udid} in {operation_id}"))
    }

    pub async fn state(&self, operation_id: &str) -> OperationState {
        self.services
            .get_operation(operation_id)
            .await
            .expect("read operation")
            .state
    }

    pub async fn events(&self, operation_id: &str) -> Vec<Event> {
        let mut events = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .services
                .list_events(
                    operation_id,
                    &EventFilter::default(),
                    &PageRequest { limit: 200, cursor },
                )
                .await
                .expect("list events");
            events.extend(page.items);
            cursor = page.next_cursor;
            if cursor.is_none() {
                return events;
            }
        }
    }

    /// Returns the request types of the commands waiting for a device, oldest first.
    pub async fn queued(&self, udid: &str) -> Vec<String> {
        self.services
            .ports
            .devices
            .load_context(udid)
            .await
            .expect("load device")
            .expect("device exists")
            .commands
            .into_iter()
            .map(|c| c.request_type)
            .collect()
    }

    async fn checkin(&self, body: Vec<u8>) -> CheckinReply {
        self.services
            .handle_checkin(&body)
            .await
            .expect("check-in accepted")
    }

    /// Sends a command result; returns the command the server sent back.
    pub async fn send(&self, result: CommandResult) -> Option<CommandEnvelope> {
        let body = result.to_plist_xml().expect("result plist");
        self.services
            .handle_connect(&body)
            .await
            .expect("connect accepted")
            .map(|reply| parse_command(&reply).expect("server sends a valid command"))
    }

    pub async fn idle(&self, device: &TestDevice) -> Option<CommandEnvelope> {
        self.send(CommandResult::new(
            device.udid.clone(),
            None,
            CommandStatus::Idle,
        ))
        .await
    }

    /// Authenticate, TokenUpdate, then acknowledge every command sent.
    pub async fn enroll(&self, device: &TestDevice) {
        self.checkin(device.authenticate_body()).await;
        self.checkin(device.token_update_body()).await;
        let mut command = self.idle(device).await;
        while let Some(envelope) = command {
            command = self.send(device.acknowledge(&envelope)).await;
        }
    }

    /// Sends a DDM status report built from nested JSON items.
    pub async fn status_report(&self, device: &TestDevice, items: Value) {
        let report = json!({ "StatusItems": items, "Errors": [], "FullReport": false });
        let mut dict = plist::Dictionary::new();
        dict.insert("MessageType".into(), "DeclarativeManagement".into());
        dict.insert("UDID".into(), device.udid.clone().into());
        dict.insert("Endpoint".into(), "status".into());
        dict.insert(
            "Data".into(),
            plist::Value::Data(serde_json::to_vec(&report).expect("status JSON")),
        );
        self.checkin(crate::support::plist_xml(dict)).await;
    }
}

fn schedule_result(
    device: &TestDevice,
    envelope: &CommandEnvelope,
    key: &str,
    status: UpdateResultStatus,
) -> CommandResult {
    CommandResult::new(
        device.udid.clone(),
        Some(envelope.command_uuid.clone()),
        CommandStatus::Acknowledged,
    )
    .with_response(&ScheduleOsUpdateResponse {
        update_results: vec![UpdateResult {
            product_key: key.into(),
            install_action: UpdateResultAction::InstallAsap,
            status,
            error_chain: None,
        }],
    })
    .expect("schedule result")
}

fn status_result(device: &TestDevice, envelope: &CommandEnvelope, percent: f64) -> CommandResult {
    CommandResult::new(
        device.udid.clone(),
        Some(envelope.command_uuid.clone()),
        CommandStatus::Acknowledged,
    )
    .with_response(&OsUpdateStatusResponse {
        os_update_status: vec![OsUpdateStatusItem {
            product_key: KEY_15_7_9.into(),
            is_downloaded: false,
            download_percent_complete: percent,
            status: OsUpdateState::Downloading,
            max_deferrals: None,
            deferrals_remaining: None,
            next_scheduled_install: None,
            past_notifications: None,
        }],
    })
    .expect("status result")
}

fn version_result(
    device: &TestDevice,
    envelope: &CommandEnvelope,
    version: &str,
    build: &str,
) -> CommandResult {
    let mut answers = device.query_responses();
    answers.os_version = Some(version.into());
    answers.build_version = Some(build.into());
    CommandResult::new(
        device.udid.clone(),
        Some(envelope.command_uuid.clone()),
        CommandStatus::Acknowledged,
    )
    .with_response(&DeviceInformationResponse {
        query_responses: answers,
    })
    .expect("device information result")
}

fn install_action(envelope: &CommandEnvelope) -> Option<InstallAction> {
    match &envelope.command {
        Command::ScheduleOsUpdate(payload) => payload.updates.first().map(|u| u.install_action),
        _ => None,
    }
}

/// Finds the `nth` event that recorded a move of one device into `to`.
fn move_event<'a>(events: &'a [Event], udid: &str, to: &str, nth: usize) -> &'a Event {
    events
        .iter()
        .filter(|e| e.device_id.as_deref() == Some(udid) && e.details["to"] == to)
        .nth(nth)
        .unwrap_or_else(|| panic!("move {nth} of {udid} into {to} in {events:#?}"))
}

fn retry_events<'a>(events: &'a [Event], udid: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| {
            e.device_id.as_deref() == Some(udid)
                && e.event_type.as_str() == "retry"
                && e.actor == Actor::System
        })
        .collect()
}

fn minutes(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

fn hours(n: i64) -> SignedDuration {
    SignedDuration::from_hours(n)
}

/// MDM: a phone call fails the install three times. The sweep starts
/// each retry when its backoff (15 minutes, then 30) ends, queues the
/// `ScheduleOSUpdate` once and pushes the device. The third failure is final.
pub async fn mdm_retries_until_failed(h: &Harness) {
    let mac = TestDevice::mac("MAC-CALL", "15.7.7", "24G720");
    h.enroll(&mac).await;
    let operation = h
        .create(json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": [mac.udid] },
            "install": { "method": "install_immediately" },
        }))
        .await;

    let command = h.idle(&mac).await.expect("ScheduleOSUpdate");
    assert_eq!(install_action(&command), Some(InstallAction::InstallAsap));
    let failed_at = h.now();
    h.send(schedule_result(
        &mac,
        &command,
        KEY_15_7_9,
        UpdateResultStatus::InstallPhoneCallInProgress,
    ))
    .await;
    let target = h.target(&operation, &mac.udid).await;
    assert_eq!(target.status, TargetStatus::Retry);
    assert_eq!(target.failures, 1);
    assert_eq!(
        target.next_attempt_at,
        Some(failed_at + minutes(15)),
        "a phone call backs off 15 minutes"
    );
    let events = h.events(&operation).await;
    let failure = move_event(&events, &mac.udid, "retry", 0);
    assert_eq!(failure.details["reason"], "InstallPhoneCallInProgress");
    assert_eq!(failure.details["attempt"], 1);
    assert_eq!(failure.details["max_attempts"], 3);
    assert_eq!(
        failure.details["next_attempt_at"],
        json!(failed_at + minutes(15))
    );

    // Before the backoff ends the sweep leaves the target alone.
    h.advance(minutes(10));
    let pushes = h.push.sent();
    let early = h.sweep().await;
    assert_eq!(early.retried, 0);
    assert_eq!(h.push.sent(), pushes);
    assert!(h.queued(&mac.udid).await.is_empty());

    h.advance(minutes(6));
    let report = h.sweep().await;
    assert_eq!(report.retried, 1);
    assert_eq!(report.targets, 1);
    assert_eq!(h.push.sent(), pushes + 1, "the device is pushed");
    assert_eq!(h.queued(&mac.udid).await, vec!["ScheduleOSUpdate"]);
    let target = h.target(&operation, &mac.udid).await;
    assert_eq!(target.status, TargetStatus::Retry);
    assert_eq!(target.next_attempt_at, None, "the attempt is under way");
    let events = h.events(&operation).await;
    let retries = retry_events(&events, &mac.udid);
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].details["attempt"], 2);
    assert_eq!(retries[0].details["max_attempts"], 3);
    assert_eq!(retries[0].details["reason"], "InstallPhoneCallInProgress");

    // A second sweep queues nothing more.
    let again = h.sweep().await;
    assert_eq!(again.retried, 0);
    assert_eq!(h.queued(&mac.udid).await, vec!["ScheduleOSUpdate"]);

    let retry = h.idle(&mac).await.expect("retried ScheduleOSUpdate");
    assert_eq!(install_action(&retry), Some(InstallAction::InstallAsap));
    let failed_at = h.now();
    h.send(schedule_result(
        &mac,
        &retry,
        KEY_15_7_9,
        UpdateResultStatus::InstallPhoneCallInProgress,
    ))
    .await;
    let target = h.target(&operation, &mac.udid).await;
    assert_eq!(target.failures, 2);
    assert_eq!(
        target.next_attempt_at,
        Some(failed_at + minutes(30)),
        "the backoff doubles"
    );

    // This time the device checks in first and fetches the retry itself.
    // The sweep then only marks the attempt under way: no second command
    // and no second retry event.
    h.advance(minutes(31));
    let last = h.idle(&mac).await.expect("third ScheduleOSUpdate");
    assert_eq!(h.sweep().await.retried, 1);
    assert_eq!(h.queued(&mac.udid).await, vec!["ScheduleOSUpdate"]);
    assert_eq!(h.target(&operation, &mac.udid).await.next_attempt_at, None);
    let events = h.events(&operation).await;
    let third_attempt = retry_events(&events, &mac.udid)
        .into_iter()
        .filter(|e| e.details["attempt"] == 3)
        .count();
    assert_eq!(third_attempt, 1, "one retry event for the third attempt");
    h.send(schedule_result(
        &mac,
        &last,
        KEY_15_7_9,
        UpdateResultStatus::InstallPhoneCallInProgress,
    ))
    .await;
    let target = h.target(&operation, &mac.udid).await;
    assert_eq!(target.status, TargetStatus::Failed);
    assert_eq!(target.failures, 3);
    assert_eq!(
        target.last_error.as_deref(),
        Some("InstallPhoneCallInProgress")
    );
    let events = h.events(&operation).await;
    let failed = move_event(&events, &mac.udid, "failed", 0);
    assert_eq!(failed.details["attempt"], 3);
    assert_eq!(failed.details["max_attempts"], 3);
    assert_eq!(failed.details["will_retry"], false);
    assert_eq!(h.state(&operation).await, OperationState::Finished);
    assert_eq!(
        h.sweep().await,
        JobReport::default(),
        "nothing left to sweep"
    );
}

/// Puts one MDM Mac into Retry after a phone call interrupted its install,
/// and returns the operation id and the device.
pub async fn mac_in_retry(h: &Harness) -> (String, TestDevice) {
    let mac = TestDevice::mac("MAC-LOOP", "15.7.7", "24G720");
    h.enroll(&mac).await;
    let operation = h
        .create(json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": [mac.udid] },
            "install": { "method": "install_immediately" },
        }))
        .await;
    let command = h.idle(&mac).await.expect("ScheduleOSUpdate");
    h.send(schedule_result(
        &mac,
        &command,
        KEY_15_7_9,
        UpdateResultStatus::InstallPhoneCallInProgress,
    ))
    .await;
    assert_eq!(
        h.target(&operation, &mac.udid).await.status,
        TargetStatus::Retry
    );
    (operation, mac)
}

/// DDM: a failure the device reports puts the target in Retry. When the
/// backoff ends the sweep queues a `DeclarativeManagement` command and
/// pushes, because the declaration itself does not change.
pub async fn ddm_retry_syncs_device(h: &Harness) {
    let phone = TestDevice::iphone("PHONE-RETRY", "18.7", "22H20");
    h.enroll(&phone).await;
    let operation = h
        .create(json!({
            "update": { "product_version": "26.6.1" },
            "protocol": "ddm",
            "targets": { "device_ids": [phone.udid] },
            "install": { "method": "install_immediately" },
        }))
        .await;
    let sync = h.idle(&phone).await.expect("DeclarativeManagement");
    h.send(phone.acknowledge(&sync)).await;
    h.status_report(
        &phone,
        json!({ "softwareupdate": { "install-state": "downloading" } }),
    )
    .await;
    let failed_at = h.now();
    h.status_report(
        &phone,
        json!({ "softwareupdate": { "failure-reason": { "count": 1, "reason": "The update could not be downloaded" }, "install-state": "waiting" } }),
    )
    .await;
    let target = h.target(&operation, &phone.udid).await;
    assert_eq!(target.status, TargetStatus::Retry);
    assert_eq!(target.next_attempt_at, Some(failed_at + hours(1)));

    h.advance(minutes(59));
    assert_eq!(h.sweep().await.retried, 0);
    assert!(h.queued(&phone.udid).await.is_empty());

    h.advance(minutes(2));
    let pushes = h.push.sent();
    let report = h.sweep().await;
    assert_eq!(report.retried, 1);
    assert_eq!(h.push.sent(), pushes + 1);
    assert_eq!(h.queued(&phone.udid).await, vec!["DeclarativeManagement"]);
    let events = h.events(&operation).await;
    let retries = retry_events(&events, &phone.udid);
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].details["protocol"], "ddm");
    assert_eq!(retries[0].details["attempt"], 2);

    let command = h.idle(&phone).await.expect("the queued command");
    assert_eq!(command.command.request_type(), "DeclarativeManagement");
    h.send(phone.acknowledge(&command)).await;
    h.status_report(
        &phone,
        json!({ "softwareupdate": { "install-state": "downloading" } }),
    )
    .await;
    assert_eq!(
        h.target(&operation, &phone.udid).await.status,
        TargetStatus::Downloading
    );
}

/// Checks that a download that stops reporting is pushed after the push
/// period and counted as a failed `stalled` attempt after the fail period,
/// while a target waiting for a later deadline is not stalled.
pub async fn stalled_targets_pushed_then_failed(h: &Harness) {
    let stuck = TestDevice::mac("MAC-STUCK", "15.7.7", "24G720");
    let patient = TestDevice::mac("MAC-PATIENT", "15.7.7", "24G720");
    h.enroll(&stuck).await;
    h.enroll(&patient).await;
    let stuck_operation = h
        .create(json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": [stuck.udid] },
            "install": { "method": "install_immediately" },
        }))
        .await;
    // Deadline 10 days out: an accepted download waits quietly until then.
    let patient_operation = h
        .create(json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": [patient.udid] },
            "install": { "method": "enforce_at_schedule", "local_date_time": "2026-09-01T10:00:00", "time_zone": "UTC" },
        }))
        .await;

    let command = h.idle(&stuck).await.expect("ScheduleOSUpdate");
    h.send(schedule_result(
        &stuck,
        &command,
        KEY_15_7_9,
        UpdateResultStatus::Idle,
    ))
    .await;
    let query = h.idle(&stuck).await.expect("OSUpdateStatus");
    assert_eq!(query.command.request_type(), "OSUpdateStatus");
    h.send(status_result(&stuck, &query, 0.3)).await;
    assert_eq!(
        h.target(&stuck_operation, &stuck.udid).await.status,
        TargetStatus::Downloading
    );
    let command = h.idle(&patient).await.expect("ScheduleOSUpdate");
    assert_eq!(install_action(&command), Some(InstallAction::DownloadOnly));
    h.send(schedule_result(
        &patient,
        &command,
        KEY_15_7_9,
        UpdateResultStatus::Idle,
    ))
    .await;
    assert_eq!(
        h.target(&patient_operation, &patient.udid).await.status,
        TargetStatus::Approved
    );

    h.advance(hours(5));
    let quiet = h.sweep().await;
    assert_eq!(quiet.pushed, 0, "5 hours is within the push period");

    h.advance(hours(2));
    let pushes = h.push.sent();
    let report = h.sweep().await;
    assert_eq!(report.pushed, 1, "only the stuck download is pushed");
    assert_eq!(report.stalled, 0);
    assert_eq!(h.push.sent(), pushes + 1);
    assert_eq!(
        h.target(&stuck_operation, &stuck.udid).await.status,
        TargetStatus::Downloading
    );

    h.advance(hours(66));
    let report = h.sweep().await;
    assert_eq!(report.stalled, 1, "73 hours without a report");
    let target = h.target(&stuck_operation, &stuck.udid).await;
    assert_eq!(target.status, TargetStatus::Retry);
    assert_eq!(target.failures, 1);
    assert!(
        target
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("stalled")),
        "{:?}",
        target.last_error
    );
    let events = h.events(&stuck_operation).await;
    let failure = move_event(&events, &stuck.udid, "retry", 0);
    assert_eq!(failure.actor, Actor::System);
    assert_eq!(failure.details["stalled_status"], "downloading");
    assert_eq!(
        h.target(&patient_operation, &patient.udid).await.status,
        TargetStatus::Approved,
        "waiting for a deadline 10 days out is not a stall"
    );

    // The stalled attempt retries like any other once its backoff ends.
    h.advance(hours(1));
    assert_eq!(h.sweep().await.retried, 1);
    assert_eq!(h.queued(&stuck.udid).await, vec!["ScheduleOSUpdate"]);
}

/// Apple stops signing 15.7.8 on 2026-11-05: waiting targets become
/// Deprecated, an installing one finishes, and an operation whose targets
/// all became Deprecated finishes.
pub async fn expiry_deprecates_waiting_targets(h: &Harness) {
    let waiting = TestDevice::mac("MAC-WAITING", "15.7.7", "24G720");
    let installing = TestDevice::mac("MAC-INSTALLING", "15.7.7", "24G720");
    let alone = TestDevice::mac("MAC-ALONE", "15.7.7", "24G720");
    for device in [&waiting, &installing, &alone] {
        h.enroll(device).await;
    }
    let install = json!({ "method": "enforce_at_schedule", "local_date_time": "2026-11-10T10:00:00", "time_zone": "UTC" });
    let mixed = h
        .create(json!({
            "update": { "product_version": "15.7.8" },
            "protocol": "mdm",
            "targets": { "device_ids": [waiting.udid, installing.udid] },
            "install": install,
        }))
        .await;
    let lone = h
        .create(json!({
            "update": { "product_version": "15.7.8" },
            "protocol": "mdm",
            "targets": { "device_ids": [alone.udid] },
            "install": install,
        }))
        .await;

    let command = h.idle(&installing).await.expect("ScheduleOSUpdate");
    h.send(schedule_result(
        &installing,
        &command,
        "MSU_UPDATE_24G824_patch_15.7.8",
        UpdateResultStatus::Installing,
    ))
    .await;
    let command = h.idle(&alone).await.expect("ScheduleOSUpdate");
    h.send(schedule_result(
        &alone,
        &command,
        "MSU_UPDATE_24G824_patch_15.7.8",
        UpdateResultStatus::Idle,
    ))
    .await;
    assert_eq!(
        h.target(&lone, &alone.udid).await.status,
        TargetStatus::Approved
    );

    h.set("2026-11-04T23:59:59Z");
    assert_eq!(h.run_due_schedules().await, 0, "not yet expired");
    h.set("2026-11-05T00:00:00Z");
    assert_eq!(h.run_due_schedules().await, 2, "one expiry per operation");

    assert_eq!(
        h.target(&mixed, &waiting.udid).await.status,
        TargetStatus::Deprecated
    );
    assert_eq!(
        h.target(&mixed, &installing.udid).await.status,
        TargetStatus::Installing,
        "an install under way is left to finish"
    );
    assert_eq!(
        h.target(&lone, &alone.udid).await.status,
        TargetStatus::Deprecated
    );
    assert_eq!(h.state(&lone).await, OperationState::Finished);
    let completed = h
        .events(&lone)
        .await
        .into_iter()
        .filter(|e| e.event_type.as_str() == "operation_completed")
        .count();
    assert_eq!(completed, 1);
    assert_eq!(h.state(&mixed).await, OperationState::InProgress);
    let device = h
        .services
        .ports
        .devices
        .get_device(&waiting.udid)
        .await
        .expect("read device")
        .expect("device exists");
    assert_eq!(
        device.current_operation_id, None,
        "a deprecated device is free"
    );

    // The installing Mac comes back on 15.7.8 and the operation finishes.
    let query = h.idle(&installing).await.expect("DeviceInformation");
    assert_eq!(query.command.request_type(), "DeviceInformation");
    h.send(version_result(&installing, &query, "15.7.8", "24G824"))
        .await;
    assert_eq!(
        h.target(&mixed, &installing.udid).await.status,
        TargetStatus::Installed
    );
    assert_eq!(h.state(&mixed).await, OperationState::Finished);
}

/// A device at or above the target when the operation is created, or in
/// its first report, becomes Obsolete, on MDM and on DDM.
pub async fn devices_at_target_become_obsolete(h: &Harness) {
    let current = TestDevice::mac("MAC-CURRENT", "15.7.9", "24G830");
    let newer = TestDevice::mac("MAC-NEWER", "26.0", "25A354");
    let updated_meanwhile = TestDevice::mac("MAC-MEANWHILE", "15.7.7", "24G720");
    let phone = TestDevice::iphone("PHONE-MEANWHILE", "18.7", "22H20");
    for device in [&current, &newer, &updated_meanwhile, &phone] {
        h.enroll(device).await;
    }
    let mdm = h
        .create(json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": [current.udid, newer.udid, updated_meanwhile.udid] },
            "install": { "method": "install_immediately" },
        }))
        .await;
    assert_eq!(
        h.target(&mdm, &current.udid).await.status,
        TargetStatus::Obsolete,
        "already on the target at creation"
    );
    assert_eq!(
        h.target(&mdm, &newer.udid).await.status,
        TargetStatus::Obsolete,
        "above the target at creation"
    );

    // The Mac updated itself after creation: nothing to schedule, and the
    // version query shows 15.7.9 before any other report.
    let command = h.idle(&updated_meanwhile).await.expect("ScheduleOSUpdate");
    let nothing = CommandResult::new(
        updated_meanwhile.udid.clone(),
        Some(command.command_uuid.clone()),
        CommandStatus::Acknowledged,
    )
    .with_response(&ScheduleOsUpdateResponse {
        update_results: Vec::new(),
    })
    .expect("empty schedule result");
    let query = h.send(nothing).await.expect("DeviceInformation");
    assert_eq!(query.command.request_type(), "DeviceInformation");
    h.send(version_result(
        &updated_meanwhile,
        &query,
        "15.7.9",
        "24G830",
    ))
    .await;
    assert_eq!(
        h.target(&mdm, &updated_meanwhile.udid).await.status,
        TargetStatus::Obsolete,
        "at the target in its first report"
    );
    assert_eq!(h.state(&mdm).await, OperationState::Finished);

    let ddm = h
        .create(json!({
            "update": { "product_version": "26.6.1" },
            "protocol": "ddm",
            "targets": { "device_ids": [phone.udid] },
            "install": { "method": "install_immediately" },
        }))
        .await;
    h.status_report(
        &phone,
        json!({ "device": { "operating-system": { "version": "26.6.1", "build-version": "23G83" } } }),
    )
    .await;
    assert_eq!(
        h.target(&ddm, &phone.udid).await.status,
        TargetStatus::Obsolete,
        "a first DDM report on the target"
    );
    assert_eq!(h.state(&ddm).await, OperationState::Finished);
}
