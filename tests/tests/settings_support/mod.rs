//! Installation-settings scenarios run unchanged against any store:
//! reminders, user-initiated installs and imports, driven through
//! `Services` with a manual clock. `settings_sqlite.rs` runs them on
//! SQLite and `aws_settings.rs` on DynamoDB with EventBridge Scheduler.
#![allow(dead_code)]

use std::sync::Arc;

use jiff::Timestamp;
use osdeploy_shared::apple::mdm::{Command, InstallAction, parse_command};
use osdeploy_shared::catalog::Catalog;
use osdeploy_shared::domain::{
    Device, EnrollmentState, Event, EventType, ManualClock, OperationType, Platform, TargetStatus,
    UlidGenerator,
};
use osdeploy_shared::ports::{
    Change, DeviceWrite, EventFilter, Job, PageRequest, Schedule, ScheduleStore, TargetFilter,
};
use osdeploy_shared::service::import::ImportOperationRequest;
use osdeploy_shared::service::operations::CreateOperationRequest;
use osdeploy_shared::service::user_initiated::user_initiated_key;
use osdeploy_shared::service::{Ports, ServiceConfig, ServiceError, Services};
use serde_json::{Value, json};

/// The date of the bundled catalog snapshot, so that its updates are signed.
pub const START: &str = "2026-08-22T09:00:00Z";

pub struct Harness {
    pub services: Services,
    pub clock: Arc<ManualClock>,
    pub schedules: Arc<dyn ScheduleStore>,
}

impl Harness {
    pub fn new(ports: Ports, schedules: Arc<dyn ScheduleStore>) -> Harness {
        let clock = Arc::new(ManualClock::new(START.parse().expect("start instant")));
        let services = Services::new(
            ports,
            clock.clone(),
            Arc::new(UlidGenerator::seeded(7)),
            Arc::new(Catalog::bundled().clone()),
            ServiceConfig::default(),
        );
        Harness {
            services,
            clock,
            schedules,
        }
    }

    pub fn set_clock(&self, at: &str) {
        self.clock.set(at.parse().expect("instant"));
    }

    /// Stores an enrolled device. Macs run macOS 15.7.7 (24G720), phones
    /// iOS 18.7 (22H20); `ddm` marks declarative management as active.
    pub async fn add_device(&self, udid: &str, platform: Platform, zone: &str, ddm: bool) {
        let version = match platform {
            Platform::MacOs => "15.7.7",
            _ => "18.7",
        };
        self.add_device_on(udid, platform, zone, ddm, version).await;
    }

    /// Stores an enrolled device running `version` (builds as in [`Harness::add_device`]
    /// for the default versions, `21H16` for iOS 17.7).
    pub async fn add_device_on(
        &self,
        udid: &str,
        platform: Platform,
        zone: &str,
        ddm: bool,
        version: &str,
    ) {
        let now = self.services.now();
        let (model, build, update_id) = match (platform, version) {
            (Platform::MacOs, _) => ("Mac14,7", "24G720", "J493AP"),
            (_, "17.7") => ("iPhone15,2", "21H16", "iPhone15,2"),
            _ => ("iPhone15,2", "22H20", "iPhone15,2"),
        };
        let device = Device {
            udid: udid.to_string(),
            serial_number: Some(format!("SN{udid}")),
            name: Some(format!("Device {udid}")),
            model: Some(model.to_string()),
            model_name: None,
            platform: Some(platform),
            os_version: Some(version.parse().expect("version")),
            build_version: Some(build.to_string()),
            supervised: Some(true),
            software_update_device_id: Some(update_id.to_string()),
            time_zone: Some(zone.to_string()),
            enrollment: EnrollmentState::Enrolled,
            topic: Some("com.apple.mgmt.External.test".to_string()),
            push_token: Some("01020304".to_string()),
            push_magic: Some(format!("magic-{udid}")),
            bootstrap_token: None,
            ddm_active: ddm,
            enrolled_at: now,
            last_seen_at: now,
            inventory_requested_at: None,
            current_operation_id: None,
            revision: 0,
        };
        self.services
            .ports
            .devices
            .commit(Change {
                device: Some(DeviceWrite {
                    device,
                    expected_revision: None,
                }),
                ..Default::default()
            })
            .await
            .expect("store device");
    }

    pub async fn create(&self, request: Value) -> String {
        let request: CreateOperationRequest =
            serde_json::from_value(request).expect("create request");
        self.services
            .create_operation(&request, None, "administrator")
            .await
            .expect("create operation")
            .operation
            .id
    }

    /// Schedules of one operation, earliest first.
    pub async fn schedules_of(&self, operation_id: &str) -> Vec<Schedule> {
        self.schedules
            .all()
            .await
            .expect("read schedules")
            .into_iter()
            .filter(|s| s.job.operation_id() == Some(operation_id))
            .collect()
    }

    /// Runs the schedules due now, as the local loop or EventBridge would,
    /// and returns their ids.
    pub async fn run_due(&self) -> Vec<String> {
        let due = self
            .schedules
            .due(self.services.now(), 100)
            .await
            .expect("due schedules");
        let mut ran = Vec::new();
        for schedule in due {
            self.services
                .run_job(&schedule.job)
                .await
                .unwrap_or_else(|e| panic!("job {} failed: {e}", schedule.id));
            self.schedules
                .remove(&schedule.id)
                .await
                .expect("remove schedule");
            ran.push(schedule.id);
        }
        ran
    }

    pub async fn events(&self, operation_id: &str) -> Vec<Event> {
        self.services
            .ports
            .events
            .list_events(
                operation_id,
                &EventFilter::default(),
                self.services.now(),
                &PageRequest::first(1000),
            )
            .await
            .expect("list events")
            .items
    }

    pub async fn events_of_type(&self, operation_id: &str, event_type: EventType) -> Vec<Event> {
        self.events(operation_id)
            .await
            .into_iter()
            .filter(|e| e.event_type == event_type)
            .collect()
    }

    /// InstallAction of each ScheduleOSUpdate queued for a device.
    pub async fn install_actions(&self, udid: &str) -> Vec<InstallAction> {
        let context = self
            .services
            .ports
            .devices
            .load_context(udid)
            .await
            .expect("load device")
            .expect("device exists");
        context
            .commands
            .iter()
            .filter_map(|c| match parse_command(&c.body).ok()?.command {
                Command::ScheduleOsUpdate(payload) => {
                    payload.updates.first().map(|u| u.install_action)
                }
                _ => None,
            })
            .collect()
    }

    pub async fn command_count(&self, udid: &str) -> usize {
        self.services
            .ports
            .devices
            .load_context(udid)
            .await
            .expect("load device")
            .expect("device exists")
            .commands
            .len()
    }

    pub async fn status_of(&self, operation_id: &str, udid: &str) -> Option<TargetStatus> {
        self.services
            .ports
            .operations
            .get_target(operation_id, udid)
            .await
            .expect("read target")
            .map(|t| t.status)
    }

    /// Sends a DDM check-in to `endpoint` and returns the JSON response.
    pub async fn ddm_get(&self, udid: &str, endpoint: &str) -> Value {
        let context = self
            .services
            .ports
            .devices
            .load_context(udid)
            .await
            .expect("load device")
            .expect("device exists");
        let body = self
            .services
            .handle_declarative(context, endpoint, None)
            .await
            .unwrap_or_else(|e| panic!("{endpoint} for {udid}: {e}"));
        serde_json::from_slice(&body).expect("JSON answer")
    }

    /// Sends a DDM status report of nested items.
    pub async fn ddm_status(&self, udid: &str, items: Value) {
        let context = self
            .services
            .ports
            .devices
            .load_context(udid)
            .await
            .expect("load device")
            .expect("device exists");
        let report = json!({ "StatusItems": items, "Errors": [], "FullReport": false });
        self.services
            .handle_declarative(
                context,
                "status",
                Some(&serde_json::to_vec(&report).expect("json")),
            )
            .await
            .expect("status report");
    }
}

fn reminder_ids(ran: &[String]) -> Vec<String> {
    ran.iter()
        .filter(|id| id.starts_with("reminder:"))
        .cloned()
        .collect()
}

/// Reminders of an MDM operation in New York (crossing the end of DST on
/// 2026-11-01), Tokyo and Berlin fire at their own instants; each waiting
/// Mac gets NotifyOnly and a `reminder_sent` event.
pub async fn mdm_reminders_fire_per_zone(h: &Harness) {
    for (udid, zone) in [
        ("MAC-NY", "America/New_York"),
        ("MAC-TYO", "Asia/Tokyo"),
        ("MAC-BER", "Europe/Berlin"),
    ] {
        h.add_device(udid, Platform::MacOs, zone, false).await;
    }
    let operation = h
        .create(json!({
            "update": { "product_version": "15.7.9" },
            "protocol": "mdm",
            "targets": { "device_ids": ["MAC-NY", "MAC-TYO", "MAC-BER"] },
            "install": {
                "method": "enforce_at_schedule",
                "local_date_time": "2026-11-02T09:00:00",
                "time_zone": "device_local",
                "reminders": [{ "hours_before": 48, "repeat_every_hours": 24 }],
            },
        }))
        .await;

    let reminders: Vec<(String, Timestamp)> = h
        .schedules_of(&operation)
        .await
        .into_iter()
        .filter_map(|s| match s.job {
            Job::Reminder {
                time_zone, due_at, ..
            } => {
                assert_eq!(
                    s.due_at, due_at,
                    "schedule {} fires at its job's instant",
                    s.id
                );
                Some((time_zone, due_at))
            }
            _ => None,
        })
        .collect();
    let expected: Vec<(String, Timestamp)> = [
        // 09:00 JST is 00:00Z.
        ("Asia/Tokyo", "2026-10-31T00:00:00Z"),
        // 09:00 CET is 08:00Z (Berlin left DST on 2026-10-25).
        ("Europe/Berlin", "2026-10-31T08:00:00Z"),
        // 09:00 EDT, before New York leaves DST.
        ("America/New_York", "2026-10-31T13:00:00Z"),
        ("Asia/Tokyo", "2026-11-01T00:00:00Z"),
        ("Europe/Berlin", "2026-11-01T08:00:00Z"),
        // 09:00 EST, after: 25 hours after the first New York reminder.
        ("America/New_York", "2026-11-01T14:00:00Z"),
    ]
    .into_iter()
    .map(|(zone, at)| (zone.to_string(), at.parse().expect("instant")))
    .collect();
    let mut sorted = reminders.clone();
    sorted.sort_by_key(|a| a.1);
    assert_eq!(sorted, expected);

    assert_eq!(
        h.install_actions("MAC-NY").await,
        [InstallAction::DownloadOnly]
    );

    h.set_clock("2026-10-31T00:00:00Z");
    let ran = reminder_ids(&h.run_due().await);
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].contains("Asia/Tokyo"), "{ran:?}");
    assert_eq!(
        h.install_actions("MAC-TYO").await,
        [InstallAction::DownloadOnly, InstallAction::NotifyOnly]
    );
    assert_eq!(
        h.install_actions("MAC-NY").await,
        [InstallAction::DownloadOnly],
        "New York's reminder is not due yet"
    );

    h.set_clock("2026-10-31T12:59:59Z");
    let ran = reminder_ids(&h.run_due().await);
    assert_eq!(ran.len(), 1, "only Berlin is due before 13:00Z: {ran:?}");
    assert!(ran[0].contains("Europe/Berlin"), "{ran:?}");
    assert_eq!(
        h.install_actions("MAC-NY").await,
        [InstallAction::DownloadOnly]
    );

    h.set_clock("2026-10-31T13:00:00Z");
    let ran = reminder_ids(&h.run_due().await);
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].contains("America/New_York"), "{ran:?}");
    assert_eq!(
        h.install_actions("MAC-NY").await,
        [InstallAction::DownloadOnly, InstallAction::NotifyOnly]
    );

    h.set_clock("2026-11-01T13:59:59Z");
    let ran = reminder_ids(&h.run_due().await);
    assert_eq!(
        ran.len(),
        2,
        "Tokyo's and Berlin's second reminders: {ran:?}"
    );
    h.set_clock("2026-11-01T14:00:00Z");
    let ran = reminder_ids(&h.run_due().await);
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].contains("America/New_York"), "{ran:?}");

    let sent = h.events_of_type(&operation, EventType::ReminderSent).await;
    assert_eq!(sent.len(), 6, "one event per Mac and reminder");
    let new_york: Vec<&Event> = sent
        .iter()
        .filter(|e| e.device_id.as_deref() == Some("MAC-NY"))
        .collect();
    assert_eq!(new_york.len(), 2);
    assert_eq!(new_york[0].details["hours_before_deadline"], 48);
    assert_eq!(new_york[0].details["reminder_at"], "2026-10-31T13:00:00Z");
    assert_eq!(new_york[0].details["deadline_at"], "2026-11-02T14:00:00Z");
    assert_eq!(new_york[0].details["time_zone"], "America/New_York");
    assert_eq!(new_york[0].details["channel"], "mdm_notify_only");
    assert_eq!(new_york[1].details["hours_before_deadline"], 24);
    assert_eq!(new_york[1].details["reminder_at"], "2026-11-01T14:00:00Z");
    assert!(
        h.schedules_of(&operation)
            .await
            .iter()
            .all(|s| !matches!(s.job, Job::Reminder { .. })),
        "every reminder ran once"
    );
}

/// An MDM iPhone gets no NotifyOnly (macOS only); the reminder is recorded
/// for the operation with the count of devices left out.
pub async fn mdm_iphone_gets_no_notify_only(h: &Harness) {
    h.add_device("PHONE-MDM", Platform::Ios, "Asia/Tokyo", false)
        .await;
    let operation = h
        .create(json!({
            "update": { "product_version": "26.6.1" },
            "protocol": "mdm",
            "targets": { "device_ids": ["PHONE-MDM"] },
            "install": {
                "method": "enforce_at_schedule",
                "local_date_time": "2026-09-10T09:00:00",
                "time_zone": "device_local",
                "reminders": [{ "hours_before": 24 }],
            },
        }))
        .await;
    let commands_before = h.command_count("PHONE-MDM").await;
    h.set_clock("2026-09-09T00:00:00Z");
    assert_eq!(reminder_ids(&h.run_due().await).len(), 1);
    assert_eq!(h.command_count("PHONE-MDM").await, commands_before);
    let sent = h.events_of_type(&operation, EventType::ReminderSent).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].device_id, None);
    assert_eq!(sent[0].details["not_reminded"], 1);
    assert_eq!(sent[0].details["reminded"], 0);
}

/// A DDM operation's reminders send nothing to devices and record one
/// `os_notification` event per zone and instant; reminders already past at
/// creation are not scheduled, and cancelling removes the rest.
pub async fn ddm_reminders_are_audit_events(h: &Harness) {
    h.add_device("PHONE-NY", Platform::Ios, "America/New_York", true)
        .await;
    h.add_device("PHONE-TYO", Platform::Ios, "Asia/Tokyo", true)
        .await;
    // The clock starts at 2026-08-22T09:00Z. In Tokyo the deadline is
    // 2026-08-24T00:00Z, so its 48-hour reminder is already past; in New
    // York it is 2026-08-24T13:00Z, so all four of its reminders are ahead.
    let operation = h
        .create(json!({
            "update": { "product_version": "26.6.1" },
            "protocol": "ddm",
            "targets": { "device_ids": ["PHONE-NY", "PHONE-TYO"] },
            "install": {
                "method": "enforce_at_schedule",
                "local_date_time": "2026-08-24T09:00:00",
                "time_zone": "device_local",
                "reminders": [{ "hours_before": 48, "repeat_every_hours": 12 }],
            },
        }))
        .await;
    let instants: Vec<(String, String)> = h
        .schedules_of(&operation)
        .await
        .into_iter()
        .filter_map(|s| match s.job {
            Job::Reminder {
                time_zone, due_at, ..
            } => Some((time_zone, due_at.to_string())),
            _ => None,
        })
        .collect();
    let mut instants = instants;
    instants.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        instants,
        [
            ("Asia/Tokyo".to_string(), "2026-08-22T12:00:00Z".to_string()),
            (
                "America/New_York".to_string(),
                "2026-08-22T13:00:00Z".to_string()
            ),
            ("Asia/Tokyo".to_string(), "2026-08-23T00:00:00Z".to_string()),
            (
                "America/New_York".to_string(),
                "2026-08-23T01:00:00Z".to_string()
            ),
            ("Asia/Tokyo".to_string(), "2026-08-23T12:00:00Z".to_string()),
            (
                "America/New_York".to_string(),
                "2026-08-23T13:00:00Z".to_string()
            ),
            (
                "America/New_York".to_string(),
                "2026-08-24T01:00:00Z".to_string()
            ),
        ],
        "Tokyo's 48-hour reminder (2026-08-22T00:00Z) was past at creation and is not scheduled"
    );

    let commands_before = h.command_count("PHONE-TYO").await;
    h.set_clock("2026-08-22T12:00:00Z");
    assert_eq!(reminder_ids(&h.run_due().await).len(), 1);
    assert_eq!(h.command_count("PHONE-TYO").await, commands_before);
    let sent = h.events_of_type(&operation, EventType::ReminderSent).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].device_id, None);
    assert_eq!(sent[0].details["channel"], "os_notification");
    assert_eq!(sent[0].details["time_zone"], "Asia/Tokyo");
    assert_eq!(sent[0].details["hours_before_deadline"], 36);
    assert_eq!(sent[0].details["devices"], 1);

    h.services
        .cancel_operation(&operation)
        .await
        .expect("cancel operation");
    assert!(
        h.schedules_of(&operation).await.is_empty(),
        "cancel removes the remaining reminders"
    );
}

/// Installs started by the user outside any operation become targets of
/// one user-initiated operation per build.
pub async fn user_installs_are_recorded(h: &Harness) {
    for udid in ["PHONE-U1", "PHONE-U2", "PHONE-U3", "PHONE-BUSY"] {
        h.add_device(udid, Platform::Ios, "Europe/Berlin", true)
            .await;
    }
    let admin = h
        .create(json!({
            "update": { "product_version": "26.6.1" },
            "protocol": "ddm",
            "targets": { "device_ids": ["PHONE-BUSY"] },
            "install": { "method": "enforce_at_schedule", "local_date_time": "2026-09-10T09:00:00" },
        }))
        .await;

    h.ddm_status(
        "PHONE-U1",
        json!({ "softwareupdate": {
            "install-state": "installing",
            "pending-version": { "os-version": "26.6.1", "build-version": "23G83" },
        } }),
    )
    .await;
    let key = user_initiated_key(Platform::Ios, "23G83");
    let operation_id = h
        .services
        .ports
        .operations
        .lookup_idempotency_key(&key)
        .await
        .expect("lookup key")
        .expect("a user-initiated operation for build 23G83");
    let operation = h
        .services
        .get_operation(&operation_id)
        .await
        .expect("operation");
    assert_eq!(operation.kind, OperationType::UserInitiated);
    assert_eq!(operation.update.product_version.to_string(), "26.6.1");
    assert_eq!(operation.update.builds, ["23G83"]);
    assert_eq!(
        h.status_of(&operation_id, "PHONE-U1").await,
        Some(TargetStatus::Installing)
    );

    h.ddm_status(
        "PHONE-U1",
        json!({ "device": { "operating-system": { "version": "26.6.1", "build-version": "23G83" } } }),
    )
    .await;
    assert_eq!(
        h.status_of(&operation_id, "PHONE-U1").await,
        Some(TargetStatus::Installed)
    );

    h.ddm_status(
        "PHONE-U2",
        json!({ "device": { "operating-system": { "version": "26.6.1", "build-version": "23G83" } } }),
    )
    .await;
    assert_eq!(
        h.status_of(&operation_id, "PHONE-U2").await,
        Some(TargetStatus::Installed),
        "a second device with the same build joins the same operation"
    );

    h.ddm_status(
        "PHONE-U3",
        json!({ "device": { "operating-system": { "version": "26.6.1", "build-version": "23G6083" } } }),
    )
    .await;
    assert_eq!(
        h.status_of(&operation_id, "PHONE-U3").await,
        None,
        "another build gets its own operation"
    );
    let other = h
        .services
        .ports
        .operations
        .lookup_idempotency_key(&user_initiated_key(Platform::Ios, "23G6083"))
        .await
        .expect("lookup key");
    assert!(other.is_some_and(|id| id != operation_id));

    h.ddm_status(
        "PHONE-BUSY",
        json!({ "device": { "operating-system": { "version": "26.6.1", "build-version": "23G83" } } }),
    )
    .await;
    assert_eq!(
        h.status_of(&admin, "PHONE-BUSY").await,
        Some(TargetStatus::Obsolete),
        "the running operation covers this device; its first report already shows the target"
    );
    assert_eq!(h.status_of(&operation_id, "PHONE-BUSY").await, None);

    let operation = h
        .services
        .get_operation(&operation_id)
        .await
        .expect("operation");
    assert_eq!(operation.counts.get(TargetStatus::Installed), 2);
    assert_eq!(operation.counts.total(), 2);
    let types: Vec<EventType> = h
        .events(&operation_id)
        .await
        .into_iter()
        .filter(|e| e.device_id.as_deref() == Some("PHONE-U1"))
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            EventType::DeviceAdded,
            EventType::InstallationStarted,
            EventType::InstallationCompleted
        ]
    );
}

/// An import creates a `migrated` operation with the statuses it carries;
/// devices imported as installed get no command.
pub async fn import_creates_migrated_operation(h: &Harness) {
    for udid in ["MAC-I1", "MAC-I2"] {
        h.add_device(udid, Platform::MacOs, "Europe/Berlin", false)
            .await;
    }
    let request: ImportOperationRequest = serde_json::from_value(json!({
        "source": "jamf:policy-42",
        "protocol": "mdm",
        "update": { "product_version": "15.7.9" },
        "targets": { "device_ids": ["MAC-I1", "MAC-I2"] },
        "install": { "method": "enforce_at_schedule", "local_date_time": "2026-09-10T09:00:00" },
        "statuses": { "MAC-I1": "installed", "MAC-I2": "downloaded" },
    }))
    .expect("import request");
    let created = h
        .services
        .import_operation(&request, None, "administrator")
        .await
        .expect("import");
    let operation = created.operation;
    assert_eq!(operation.kind, OperationType::Migrated);
    assert_eq!(
        h.status_of(&operation.id, "MAC-I1").await,
        Some(TargetStatus::Installed)
    );
    assert_eq!(
        h.status_of(&operation.id, "MAC-I2").await,
        Some(TargetStatus::Downloaded)
    );
    assert_eq!(h.command_count("MAC-I1").await, 0);
    assert_eq!(
        h.install_actions("MAC-I2").await,
        [InstallAction::DownloadOnly]
    );
    let created_events = h
        .events_of_type(&operation.id, EventType::OperationCreated)
        .await;
    assert_eq!(created_events.len(), 1);
    assert_eq!(created_events[0].details["source"], "jamf:policy-42");
    assert_eq!(created_events[0].details["type"], "migrated");
    let targets = h
        .services
        .list_targets(
            &operation.id,
            &TargetFilter::default(),
            &PageRequest::first(10),
        )
        .await
        .expect("targets");
    assert_eq!(targets.items.len(), 2);

    let bad: ImportOperationRequest = serde_json::from_value(json!({
        "protocol": "mdm",
        "update": { "product_version": "15.7.9" },
        "targets": { "device_ids": ["MAC-I1"] },
        "install": { "method": "install_immediately" },
        "statuses": { "MAC-I9": "installed", "MAC-I1": "retry" },
    }))
    .expect("import request");
    let Err(ServiceError::Invalid { details, .. }) = h
        .services
        .import_operation(&bad, None, "administrator")
        .await
    else {
        panic!("an import without source and with bad statuses must be rejected");
    };
    let fields: Vec<(&str, &str)> = details.iter().map(|d| (d.field.as_str(), d.code)).collect();
    assert!(fields.contains(&("source", "missing")), "{fields:?}");
    assert!(
        fields.contains(&("statuses.MAC-I9", "unknown_device")),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("statuses.MAC-I1", "invalid")),
        "{fields:?}"
    );
}

/// A DDM user who installs from Settings before the deadline makes the
/// target User Approved; one who installs after the download finished
/// leaves the status but still gets a `user_approval` event.
pub async fn ddm_install_reason_is_user_approval(h: &Harness) {
    h.add_device("PHONE-EARLY", Platform::Ios, "Europe/Berlin", true)
        .await;
    h.add_device("PHONE-LATE", Platform::Ios, "Europe/Berlin", true)
        .await;
    let operation = h
        .create(json!({
            "update": { "product_version": "26.6.1" },
            "protocol": "ddm",
            "targets": { "device_ids": ["PHONE-EARLY", "PHONE-LATE"] },
            "install": { "method": "enforce_at_schedule", "local_date_time": "2026-09-10T09:00:00" },
        }))
        .await;

    h.ddm_status(
        "PHONE-EARLY",
        json!({ "softwareupdate": {
            "install-state": "waiting",
            "install-reason": { "reason": ["system-settings"] },
        } }),
    )
    .await;
    assert_eq!(
        h.status_of(&operation, "PHONE-EARLY").await,
        Some(TargetStatus::UserApproved)
    );

    h.ddm_status(
        "PHONE-LATE",
        json!({ "softwareupdate": { "install-state": "prepared" } }),
    )
    .await;
    assert_eq!(
        h.status_of(&operation, "PHONE-LATE").await,
        Some(TargetStatus::Downloaded)
    );
    h.ddm_status(
        "PHONE-LATE",
        json!({ "softwareupdate": {
            "install-state": "prepared",
            "install-reason": { "reason": ["notification"] },
        } }),
    )
    .await;
    assert_eq!(
        h.status_of(&operation, "PHONE-LATE").await,
        Some(TargetStatus::Downloaded),
        "User Approved ranks below Downloaded, so the status stays"
    );
    let approvals: Vec<Event> = h.events_of_type(&operation, EventType::UserApproval).await;
    let late: Vec<&Event> = approvals
        .iter()
        .filter(|e| e.device_id.as_deref() == Some("PHONE-LATE"))
        .collect();
    assert_eq!(late.len(), 1, "{approvals:?}");
    assert_eq!(late[0].details["install_reason"], json!(["notification"]));
    assert_eq!(late[0].details["status_unchanged"], true);
    assert_eq!(
        approvals
            .iter()
            .filter(|e| e.device_id.as_deref() == Some("PHONE-EARLY"))
            .count(),
        1
    );
}

/// Returns the identifiers and server tokens of the configurations a
/// device lists, by identifier prefix.
async fn configuration(h: &Harness, udid: &str, prefix: &str) -> Option<(String, String)> {
    let items = h.ddm_get(udid, "declaration-items").await;
    items["Declarations"]["Configurations"]
        .as_array()?
        .iter()
        .find(|d| {
            d["Identifier"]
                .as_str()
                .is_some_and(|id| id.starts_with(prefix))
        })
        .map(|d| {
            (
                d["Identifier"].as_str().unwrap_or_default().to_string(),
                d["ServerToken"].as_str().unwrap_or_default().to_string(),
            )
        })
}

const SETTINGS_PREFIX: &str = "osdeploy.softwareupdate-settings.";

/// With add to catalog off, supervised iOS 18 devices get a settings
/// declaration deferring updates until the day before their deadline; iOS
/// 17 devices and operations with add to catalog on get none.
pub async fn ddm_deferral_hides_update(h: &Harness) {
    h.add_device("PHONE-TYO", Platform::Ios, "Asia/Tokyo", true)
        .await;
    h.add_device("PHONE-LA", Platform::Ios, "America/Los_Angeles", true)
        .await;
    h.add_device_on("PHONE-OLD", Platform::Ios, "Asia/Tokyo", true, "17.7")
        .await;
    h.add_device("PHONE-LISTED", Platform::Ios, "Asia/Tokyo", true)
        .await;
    // 01:00 UTC on 2026-08-26 is 10:00 on the 26th in Tokyo and 18:00 on
    // the 25th in Los Angeles; 26.6.1 (23G83) was released on 2026-08-17.
    let hidden = h
        .create(json!({
            "update": { "product_version": "26.6.1" },
            "protocol": "ddm",
            "targets": { "device_ids": ["PHONE-TYO", "PHONE-LA", "PHONE-OLD"] },
            "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-26T01:00:00", "time_zone": "UTC" },
        }))
        .await;
    h.create(json!({
        "update": { "product_version": "26.6.1" },
        "protocol": "ddm",
        "targets": { "device_ids": ["PHONE-LISTED"] },
        "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-26T01:00:00", "time_zone": "UTC", "add_to_catalog": true },
    }))
    .await;

    let (tokyo_id, tokyo_token) = configuration(h, "PHONE-TYO", SETTINGS_PREFIX)
        .await
        .expect("Tokyo lists the settings declaration");
    assert_eq!(tokyo_id, format!("{SETTINGS_PREFIX}{hidden}"));
    let declaration = h
        .ddm_get(
            "PHONE-TYO",
            &format!("declaration/configuration/{tokyo_id}"),
        )
        .await;
    assert_eq!(
        declaration["Type"],
        "com.apple.configuration.softwareupdate.settings"
    );
    assert_eq!(
        declaration["Payload"],
        json!({ "Deferrals": { "CombinedPeriodInDays": 8 } })
    );

    let (la_id, la_token) = configuration(h, "PHONE-LA", SETTINGS_PREFIX)
        .await
        .expect("Los Angeles lists the settings declaration");
    let declaration = h
        .ddm_get("PHONE-LA", &format!("declaration/configuration/{la_id}"))
        .await;
    assert_eq!(
        declaration["Payload"],
        json!({ "Deferrals": { "CombinedPeriodInDays": 7 } })
    );
    assert_ne!(
        tokyo_token, la_token,
        "a different deferral has a different ServerToken"
    );

    assert!(
        configuration(h, "PHONE-OLD", "osdeploy.enforcement.")
            .await
            .is_some(),
        "iOS 17 still gets the enforcement declaration"
    );
    assert_eq!(configuration(h, "PHONE-OLD", SETTINGS_PREFIX).await, None);
    assert_eq!(
        configuration(h, "PHONE-LISTED", SETTINGS_PREFIX).await,
        None
    );

    let activation = h.ddm_get("PHONE-TYO", "declaration-items").await;
    let activation_id = activation["Declarations"]["Activations"][0]["Identifier"]
        .as_str()
        .expect("activation")
        .to_string();
    let activation = h
        .ddm_get(
            "PHONE-TYO",
            &format!("declaration/activation/{activation_id}"),
        )
        .await;
    let listed = activation["Payload"]["StandardConfigurations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(listed.contains(&json!(tokyo_id)), "{activation}");

    h.services
        .cancel_operation(&hidden)
        .await
        .expect("cancel operation");
    assert_eq!(
        configuration(h, "PHONE-TYO", SETTINGS_PREFIX).await,
        None,
        "cancelling withdraws the deferral with the enforcement"
    );
}
