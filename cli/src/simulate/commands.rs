//! A simulated device's MDM command results and check-in messages.

use osdeploy_shared::apple::WireError;
use osdeploy_shared::apple::mdm::{
    Authenticate, AvailableOsUpdate, AvailableOsUpdatesResponse, CheckinMessage, Command,
    CommandResult, CommandStatus, DeviceInformationResponse, InstallAction, OsUpdateItem,
    OsUpdateState, OsUpdateStatusItem, OsUpdateStatusResponse, QueryResponses, ScheduleOsUpdate,
    ScheduleOsUpdateResponse, ScheduleOsUpdateScanResponse, TokenUpdate, UpdateResult,
    UpdateResultAction, UpdateResultStatus, parse_command, queries,
};
use osdeploy_shared::catalog::{Catalog, DeviceIdentity};
use osdeploy_shared::domain::{OsVersion, Platform};

use super::device::{Machine, Origin, Phase, at_or_above, parse_product_key, same_version};
use super::profile::TargetUpdate;
use super::truth::Delivery;

/// Maximum entries in an `AvailableOSUpdates` result.
const MAX_AVAILABLE_UPDATES: usize = 3;

/// A request body ready to send, with the facts that reach the server when
/// it succeeds.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// Names the request in errors and logs, such as `ScheduleOSUpdate result`.
    pub(crate) request: String,
    pub(crate) body: Vec<u8>,
    pub(crate) deliveries: Vec<Delivery>,
}

impl Machine {
    /// Builds the `Authenticate` check-in. Macs send their model and no OS
    /// version; iPhones send `ProductName`, `OSVersion` and `BuildVersion`.
    pub(crate) fn authenticate_body(&self, topic: &str) -> Result<Vec<u8>, WireError> {
        let device = &self.device;
        let mac = device.platform == Platform::MacOs;
        let message = Authenticate {
            topic: topic.to_owned(),
            udid: Some(device.udid.clone()),
            device_name: Some(device.name.clone()),
            model: mac.then(|| device.model.clone()),
            model_name: mac.then(|| device.model_name.clone()),
            product_name: (!mac).then(|| device.model.clone()),
            os_version: (!mac).then(|| device.os_version.clone()),
            build_version: (!mac).then(|| device.build_version.clone()),
            serial_number: Some(device.serial_number.clone()),
            ..Authenticate::default()
        };
        CheckinMessage::Authenticate(message).to_plist_xml()
    }

    /// Builds the `TokenUpdate` check-in with the device's push token.
    pub(crate) fn token_update_body(&self, topic: &str) -> Result<Vec<u8>, WireError> {
        let message = TokenUpdate {
            topic: topic.to_owned(),
            udid: Some(self.device.udid.clone()),
            token: self.push_token.clone(),
            push_magic: self.push_magic.clone(),
            ..TokenUpdate::default()
        };
        CheckinMessage::TokenUpdate(message).to_plist_xml()
    }

    /// Builds the `Idle` result, which requests the server's next command.
    pub(crate) fn idle_poll(&self) -> Result<Outgoing, WireError> {
        let body =
            CommandResult::new(&self.device.udid, None, CommandStatus::Idle).to_plist_xml()?;
        Ok(Outgoing {
            request: "Idle poll".to_owned(),
            body,
            deliveries: Vec::new(),
        })
    }

    /// Builds the result of a command plist from the server.
    ///
    /// A command this simulator cannot parse gets `CommandFormatError`, as
    /// on a real device.
    ///
    /// # Errors
    ///
    /// Returns the parse error when the body does not even carry a
    /// `CommandUUID` to respond to, and a serialization error if the result
    /// cannot be written.
    pub(crate) fn respond(&mut self, body: &[u8]) -> Result<Outgoing, WireError> {
        let envelope = match parse_command(body) {
            Ok(envelope) => envelope,
            Err(error) => {
                let Some(uuid) = command_uuid_of(body) else {
                    return Err(error);
                };
                tracing::warn!(device_id = %self.device.udid, command_uuid = %uuid, %error, "unreadable command; responding with CommandFormatError");
                let result = CommandResult::new(
                    &self.device.udid,
                    Some(uuid),
                    CommandStatus::CommandFormatError,
                );
                return Ok(Outgoing {
                    request: "CommandFormatError result".to_owned(),
                    body: result.to_plist_xml()?,
                    deliveries: vec![Delivery::CommandResult { not_now: false }],
                });
            }
        };
        let uuid = Some(envelope.command_uuid.clone());
        let udid = self.device.udid.clone();
        let request = format!("{} result", envelope.command.request_type());
        let acknowledged = || CommandResult::new(&udid, uuid.clone(), CommandStatus::Acknowledged);
        let mut deliveries = vec![Delivery::CommandResult { not_now: false }];

        let result = match &envelope.command {
            Command::DeviceInformation(information) => {
                let answers = self.query_responses(&information.queries);
                if let Some(version) = &answers.os_version {
                    deliveries.push(Delivery::OnTarget(version.clone()));
                }
                acknowledged().with_response(&DeviceInformationResponse {
                    query_responses: answers,
                })?
            }
            Command::DeclarativeManagement(_) => {
                // The server sends this to turn declarative management on and
                // to ask for a sync; the sync runs after the command loop.
                self.ddm_enabled = true;
                self.sync_requested = true;
                acknowledged()
            }
            Command::ScheduleOsUpdate(payload) => {
                match self.schedule_os_update(payload, &mut deliveries) {
                    Some(response) => acknowledged().with_response(&response)?,
                    None => {
                        deliveries = vec![Delivery::CommandResult { not_now: true }];
                        CommandResult::new(&udid, uuid.clone(), CommandStatus::NotNow)
                    }
                }
            }
            Command::OsUpdateStatus => {
                let response = self.os_update_status(&mut deliveries);
                acknowledged().with_response(&response)?
            }
            Command::AvailableOsUpdates => {
                acknowledged().with_response(&self.available_updates())?
            }
            Command::ScheduleOsUpdateScan(_) => {
                acknowledged().with_response(&ScheduleOsUpdateScanResponse {
                    scan_initiated: true,
                })?
            }
        };
        Ok(Outgoing {
            request,
            body: result.to_plist_xml()?,
            deliveries,
        })
    }

    /// Fills in the queried `DeviceInformation` keys the way the device's
    /// platform does: a Mac reports `Model` and no time zone, an iPhone
    /// reports `ProductName` and `TimeZone`.
    pub(crate) fn query_responses(&self, requested: &[String]) -> QueryResponses {
        let device = &self.device;
        let wants = |name: &str| requested.iter().any(|query| query == name);
        let mac = device.platform == Platform::MacOs;
        let value = |name: &str, value: &String| wants(name).then(|| value.clone());
        QueryResponses {
            udid: value(queries::UDID, &device.udid),
            os_version: value(queries::OS_VERSION, &device.os_version),
            build_version: value(queries::BUILD_VERSION, &device.build_version),
            supplemental_build_version: None,
            supplemental_os_version_extra: None,
            product_name: if mac {
                None
            } else {
                value(queries::PRODUCT_NAME, &device.model)
            },
            model: if mac {
                value(queries::MODEL, &device.model)
            } else {
                None
            },
            model_name: value(queries::MODEL_NAME, &device.model_name),
            serial_number: value(queries::SERIAL_NUMBER, &device.serial_number),
            device_name: value(queries::DEVICE_NAME, &device.name),
            is_supervised: wants(queries::IS_SUPERVISED).then_some(device.supervised),
            software_update_device_id: value(
                queries::SOFTWARE_UPDATE_DEVICE_ID,
                &device.software_update_device_id,
            ),
            time_zone: if mac {
                None
            } else {
                value(queries::TIME_ZONE, &device.time_zone)
            },
        }
    }

    /// Works out which update a `ScheduleOSUpdate` item names: a product
    /// key this device gave, or a version resolved through the catalog.
    fn resolve_update(&self, item: &OsUpdateItem) -> Option<TargetUpdate> {
        let job_target = self.job.as_ref().map(|job| (&job.product_key, &job.target));
        if let Some(key) = &item.product_key {
            if let Some((job_key, target)) = job_target
                && job_key == key
            {
                return Some(target.clone());
            }
            return parse_product_key(key);
        }
        let version = item.product_version.as_deref()?;
        if let Some((_, target)) = job_target
            && same_version(&target.version, version)
        {
            return Some(target.clone());
        }
        let build = self.catalog_build(version)?;
        Some(TargetUpdate::new(version, build))
    }

    /// Runs a `ScheduleOSUpdate` and returns its response, or `None` when the
    /// device returns NotNow.
    fn schedule_os_update(
        &mut self,
        payload: &ScheduleOsUpdate,
        deliveries: &mut Vec<Delivery>,
    ) -> Option<ScheduleOsUpdateResponse> {
        let nothing = ScheduleOsUpdateResponse {
            update_results: Vec::new(),
        };
        let Some(item) = payload.updates.first() else {
            return Some(nothing);
        };
        let Some(target) = self.resolve_update(item) else {
            tracing::debug!(device_id = %self.device.udid, ?item, "ScheduleOSUpdate names no update this device can install");
            return Some(nothing);
        };
        if at_or_above(&self.device.os_version, &target.version) {
            return Some(nothing);
        }
        if self.device.behaviour.not_now_first && !self.not_now_sent {
            self.not_now_sent = true;
            return None;
        }
        if !self.ensure_job(&target, Origin::Mdm) {
            // Busy installing another update.
            return Some(nothing);
        }
        let Some(mut job) = self.job.take() else {
            return Some(nothing);
        };
        let now = self.now();
        let action = match item.install_action {
            InstallAction::Default if job.phase == Phase::Prepared => InstallAction::InstallAsap,
            InstallAction::Default => InstallAction::DownloadOnly,
            other => other,
        };
        let install = matches!(
            action,
            InstallAction::InstallAsap | InstallAction::InstallForceRestart
        );
        let not_downloaded = matches!(
            job.phase,
            Phase::Scheduled | Phase::Waiting { .. } | Phase::GaveUp
        );

        let failure = if not_downloaded {
            self.planned_failure(false)
        } else {
            None
        };
        let failure = match failure {
            None if install && !job.phase.is_installing() => self.planned_failure(true),
            other => other,
        };
        let status = if let Some(kind) = failure {
            self.fail_in_result(&mut job, kind);
            deliveries.push(Delivery::Failures(job.failures));
            kind.update_status()
        } else {
            if install {
                job.install_requested = true;
            }
            match job.phase {
                Phase::Scheduled | Phase::Waiting { .. } | Phase::GaveUp => {
                    self.begin_download(&mut job, now);
                    UpdateResultStatus::Downloading
                }
                Phase::Downloading { .. } | Phase::Preparing { .. } => {
                    UpdateResultStatus::Downloading
                }
                Phase::Prepared if install => {
                    self.begin_install(&mut job, now, false);
                    deliveries.push(Delivery::Installing);
                    UpdateResultStatus::Installing
                }
                Phase::Prepared => UpdateResultStatus::Idle,
                Phase::Installing { .. } | Phase::Rebooting { .. } => {
                    deliveries.push(Delivery::Installing);
                    UpdateResultStatus::Installing
                }
            }
        };
        let result = UpdateResult {
            product_key: job.product_key.clone(),
            install_action: result_action(action),
            status,
            error_chain: None,
        };
        self.job = Some(job);
        Some(ScheduleOsUpdateResponse {
            update_results: vec![result],
        })
    }

    /// Lists the update in progress for `OSUpdateStatus`. A download
    /// reports `Downloading` below 100 %, preparing reports `Downloading`
    /// with `IsDownloaded`, a prepared update reports `Idle` with
    /// `IsDownloaded`. The list is empty with no update in progress.
    pub(crate) fn os_update_status(
        &self,
        deliveries: &mut Vec<Delivery>,
    ) -> OsUpdateStatusResponse {
        let now = self.now();
        let entry = self.job.as_ref().and_then(|job| {
            let (downloaded, percent, status) = match job.phase {
                Phase::Downloading { started, ends } => {
                    let total = ends.duration_since(started).as_secs_f64();
                    let done = now.duration_since(started).as_secs_f64();
                    let percent = if total > 0.0 { done / total } else { 0.0 };
                    // 1.0 would read as "downloaded"; that is the Preparing phase.
                    (false, percent.clamp(0.0, 0.99), OsUpdateState::Downloading)
                }
                Phase::Preparing { .. } => (true, 1.0, OsUpdateState::Downloading),
                Phase::Prepared => (true, 1.0, OsUpdateState::Idle),
                Phase::Installing { .. } => (true, 1.0, OsUpdateState::Installing),
                Phase::Scheduled
                | Phase::Waiting { .. }
                | Phase::GaveUp
                | Phase::Rebooting { .. } => {
                    return None;
                }
            };
            Some(OsUpdateStatusItem {
                product_key: job.product_key.clone(),
                is_downloaded: downloaded,
                download_percent_complete: percent,
                status,
                max_deferrals: None,
                deferrals_remaining: None,
                next_scheduled_install: None,
                past_notifications: None,
            })
        });
        if entry
            .as_ref()
            .is_some_and(|item| item.status == OsUpdateState::Installing)
        {
            deliveries.push(Delivery::Installing);
        }
        OsUpdateStatusResponse {
            os_update_status: entry.into_iter().collect(),
        }
    }

    /// Lists up to [`MAX_AVAILABLE_UPDATES`] newer versions the catalog
    /// offers this device, newest first.
    fn available_updates(&self) -> AvailableOsUpdatesResponse {
        let Ok(current) = self.device.os_version.parse::<OsVersion>() else {
            return AvailableOsUpdatesResponse::default();
        };
        let identity = DeviceIdentity {
            model: &self.device.model,
            software_update_device_id: Some(&self.device.software_update_device_id),
            platform: self.device.platform,
            os_version: &current,
            build: Some(&self.device.build_version),
        };
        let mut updates: Vec<AvailableOsUpdate> = Vec::new();
        for update in Catalog::bundled().listed_updates(&identity) {
            let newer = update.product_version > current;
            let version = update.product_version.as_str();
            let seen = updates
                .iter()
                .any(|listed| listed.version.as_deref() == Some(version));
            if update.background_security_improvement || !newer || seen {
                continue;
            }
            let target = TargetUpdate::new(version, update.build.clone());
            updates.push(AvailableOsUpdate {
                product_key: super::device::product_key(&target),
                human_readable_name: Some(update.name()),
                version: Some(target.version),
                build: Some(target.build),
                is_major_os_update: Some(update.product_version.major() > current.major()),
                restart_required: Some(true),
                ..AvailableOsUpdate::default()
            });
            if updates.len() == MAX_AVAILABLE_UPDATES {
                break;
            }
        }
        AvailableOsUpdatesResponse {
            available_os_updates: updates,
        }
    }
}

/// Maps a requested `InstallAction` to the one a device echoes in its
/// `UpdateResults`.
fn result_action(action: InstallAction) -> UpdateResultAction {
    match action {
        InstallAction::Default | InstallAction::DownloadOnly => UpdateResultAction::DownloadOnly,
        InstallAction::InstallAsap => UpdateResultAction::InstallAsap,
        InstallAction::NotifyOnly => UpdateResultAction::NotifyOnly,
        InstallAction::InstallLater => UpdateResultAction::InstallLater,
        InstallAction::InstallForceRestart => UpdateResultAction::InstallForceRestart,
    }
}

/// Reads `CommandUUID` from a command plist that does not otherwise parse.
fn command_uuid_of(body: &[u8]) -> Option<String> {
    let value: plist::Value = plist::from_bytes(body).ok()?;
    value
        .as_dictionary()?
        .get("CommandUUID")?
        .as_string()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::device::UpdatePhase;
    use crate::simulate::device::tests::{mac, target, ts};
    use crate::simulate::profile::{Behaviour, FailureKind, FailurePlan};
    use jiff::SignedDuration;
    use osdeploy_shared::apple::mdm::{
        CommandEnvelope, DeviceInformation, parse_checkin, parse_result,
    };

    fn command(uuid: &str, command: Command) -> Vec<u8> {
        CommandEnvelope::new(uuid, command)
            .to_plist_xml()
            .expect("command encodes")
    }

    fn schedule(uuid: &str, action: InstallAction) -> Vec<u8> {
        let item = OsUpdateItem::for_version("26.6.2", action);
        command(
            uuid,
            Command::ScheduleOsUpdate(ScheduleOsUpdate {
                updates: vec![item],
            }),
        )
    }

    /// Builds the result for `body`, applies its deliveries, and returns it parsed.
    fn respond(machine: &mut Machine, body: &[u8]) -> CommandResult {
        let outgoing = machine.respond(body).expect("command result built");
        for delivery in &outgoing.deliveries {
            machine.delivered(delivery);
        }
        parse_result(&outgoing.body).expect("result parses")
    }

    fn update_status(machine: &mut Machine, uuid: &str) -> Vec<OsUpdateStatusItem> {
        let result = respond(machine, &command(uuid, Command::OsUpdateStatus));
        result
            .os_update_status()
            .expect("valid response")
            .expect("response present")
            .os_update_status
    }

    fn schedule_status(result: &CommandResult) -> UpdateResultStatus {
        let response = result
            .schedule_os_update()
            .expect("valid response")
            .expect("response present");
        assert_eq!(response.update_results.len(), 1);
        response.update_results[0].status.clone()
    }

    fn phase(machine: &Machine) -> Option<UpdatePhase> {
        machine.job.as_ref().map(|job| job.phase.name())
    }

    #[test]
    fn download_then_install_asap() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        machine.observe(ts("2026-09-01T08:00:00Z"));

        let result = respond(&mut machine, &schedule("A1", InstallAction::DownloadOnly));
        assert_eq!(result.status, CommandStatus::Acknowledged);
        assert_eq!(schedule_status(&result), UpdateResultStatus::Downloading);
        let response = result
            .schedule_os_update()
            .ok()
            .flatten()
            .expect("response");
        assert_eq!(
            response.update_results[0].product_key,
            "MSU_UPDATE_25G83_patch_26.6.2"
        );
        assert_eq!(
            response.update_results[0].install_action,
            UpdateResultAction::DownloadOnly
        );
        assert_eq!(phase(&machine), Some(UpdatePhase::Downloading));

        // Half-way through the 30-minute download.
        machine.observe(ts("2026-09-01T08:15:00Z"));
        let items = update_status(&mut machine, "A2");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].status, OsUpdateState::Downloading);
        assert!(!items[0].is_downloaded);
        assert!((items[0].download_percent_complete - 0.5).abs() < 1e-9);

        // Downloaded, preparing for 15 minutes.
        machine.observe(ts("2026-09-01T08:31:00Z"));
        assert_eq!(phase(&machine), Some(UpdatePhase::Preparing));
        let items = update_status(&mut machine, "A3");
        assert_eq!(items[0].status, OsUpdateState::Downloading);
        assert!(items[0].is_downloaded);
        assert_eq!(items[0].download_percent_complete, 1.0);

        // Prepared: downloaded and idle until InstallASAP.
        machine.observe(ts("2026-09-01T09:00:00Z"));
        assert_eq!(phase(&machine), Some(UpdatePhase::Prepared));
        let items = update_status(&mut machine, "A4");
        assert_eq!(items[0].status, OsUpdateState::Idle);
        assert!(items[0].is_downloaded);

        let result = respond(&mut machine, &schedule("A5", InstallAction::InstallAsap));
        assert_eq!(schedule_status(&result), UpdateResultStatus::Installing);
        assert_eq!(phase(&machine), Some(UpdatePhase::Installing));
        assert!(machine.record.reported_installing);
        let items = update_status(&mut machine, "A6");
        assert_eq!(items[0].status, OsUpdateState::Installing);

        // 20 minutes of install, 5 of reboot, then the new OS.
        machine.observe(ts("2026-09-01T09:20:00Z"));
        assert_eq!(phase(&machine), Some(UpdatePhase::Rebooting));
        machine.observe(ts("2026-09-01T09:25:00Z"));
        assert_eq!(phase(&machine), None);
        assert_eq!(machine.device.os_version, "26.6.2");
        assert_eq!(machine.device.build_version, "25G83");
        assert!(update_status(&mut machine, "A7").is_empty());

        let information = DeviceInformation::rollout_queries();
        let result = respond(
            &mut machine,
            &command("A8", Command::DeviceInformation(information)),
        );
        let answers = result
            .device_information()
            .ok()
            .flatten()
            .expect("response")
            .query_responses;
        assert_eq!(answers.os_version.as_deref(), Some("26.6.2"));
        assert_eq!(answers.build_version.as_deref(), Some("25G83"));
        assert!(machine.record.reported_on_target);
        assert!(machine.settled());
        assert_eq!(machine.counters.commands_answered, 8);
        assert_eq!(machine.counters.updates_installed, 1);
    }

    #[test]
    fn install_asap_downloads_first() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        machine.observe(ts("2026-09-01T08:00:00Z"));

        let result = respond(&mut machine, &schedule("B1", InstallAction::InstallAsap));

        assert_eq!(schedule_status(&result), UpdateResultStatus::Downloading);
        machine.observe(ts("2026-09-01T08:45:00Z"));
        assert_eq!(phase(&machine), Some(UpdatePhase::Installing));
        machine.observe(ts("2026-09-01T09:10:00Z"));
        assert_eq!(machine.device.os_version, "26.6.2");
    }

    #[test]
    fn transient_failure_recovers_on_retry() {
        let cases = [
            (
                FailureKind::DownloadInsufficientSpace,
                InstallAction::DownloadOnly,
            ),
            (
                FailureKind::DownloadInsufficientPower,
                InstallAction::InstallAsap,
            ),
            (
                FailureKind::InstallInsufficientPower,
                InstallAction::InstallAsap,
            ),
        ];
        for (kind, action) in cases {
            let behaviour = Behaviour {
                failure: FailurePlan::Transient(kind),
                ..Behaviour::NORMAL
            };
            let mut machine = mac("Europe/Berlin", behaviour);
            machine.observe(ts("2026-09-01T08:00:00Z"));

            let first = respond(&mut machine, &schedule("C1", action));
            machine.observe(ts("2026-09-01T09:00:00Z"));
            let retry = respond(&mut machine, &schedule("C2", action));

            assert_eq!(first.status, CommandStatus::Acknowledged, "{kind:?}");
            assert_eq!(schedule_status(&first), kind.update_status(), "{kind:?}");
            assert_eq!(
                schedule_status(&retry),
                UpdateResultStatus::Downloading,
                "{kind:?}"
            );
            assert_eq!(machine.counters.failures_injected, 1, "{kind:?}");
            assert_eq!(machine.record.failures_reported, 1, "{kind:?}");
            assert_eq!(
                machine.expected(),
                Some(crate::simulate::truth::ExpectedStatus::Installed)
            );
        }
    }

    #[test]
    fn persistent_failure_every_attempt() {
        let behaviour = Behaviour {
            failure: FailurePlan::Persistent(FailureKind::DownloadInsufficientSpace),
            ..Behaviour::NORMAL
        };
        let mut machine = mac("Europe/Berlin", behaviour);
        machine.observe(ts("2026-09-01T08:00:00Z"));

        for attempt in 1..=3u32 {
            let result = respond(
                &mut machine,
                &schedule(&format!("D{attempt}"), InstallAction::DownloadOnly),
            );
            assert_eq!(
                schedule_status(&result),
                UpdateResultStatus::DownloadInsufficientSpace,
                "attempt {attempt}"
            );
            machine
                .observe(ts("2026-09-01T08:00:00Z") + SignedDuration::from_hours(attempt.into()));
        }

        assert_eq!(machine.record.failures_reported, 3);
        assert!(machine.settled());
        assert_eq!(
            machine.expected(),
            Some(crate::simulate::truth::ExpectedStatus::Failed)
        );
    }

    #[test]
    fn not_now_first_schedule_only() {
        let behaviour = Behaviour {
            not_now_first: true,
            ..Behaviour::NORMAL
        };
        let mut machine = mac("Europe/Berlin", behaviour);
        machine.observe(ts("2026-09-01T08:00:00Z"));

        let first = respond(&mut machine, &schedule("E1", InstallAction::DownloadOnly));
        let second = respond(&mut machine, &schedule("E1", InstallAction::DownloadOnly));

        assert_eq!(first.status, CommandStatus::NotNow);
        assert_eq!(first.command_uuid.as_deref(), Some("E1"));
        assert_eq!(second.status, CommandStatus::Acknowledged);
        assert_eq!(schedule_status(&second), UpdateResultStatus::Downloading);
        assert_eq!(machine.counters.not_nows, 1);
        assert_eq!(machine.counters.commands_answered, 2);
    }

    #[test]
    fn schedule_on_target_schedules_nothing() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        machine.device.os_version = "26.6.2".to_owned();
        machine.observe(ts("2026-09-01T08:00:00Z"));

        let result = respond(&mut machine, &schedule("F1", InstallAction::InstallAsap));

        let response = result
            .schedule_os_update()
            .ok()
            .flatten()
            .expect("response");
        assert!(response.update_results.is_empty());
        assert!(machine.job.is_none());
    }

    #[test]
    fn product_key_selects_update() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        let item = OsUpdateItem::for_product_key(
            "MSU_UPDATE_25G83_patch_26.6.2",
            InstallAction::DownloadOnly,
        );

        let result = respond(
            &mut machine,
            &command(
                "G1",
                Command::ScheduleOsUpdate(ScheduleOsUpdate {
                    updates: vec![item],
                }),
            ),
        );

        assert_eq!(schedule_status(&result), UpdateResultStatus::Downloading);
        let job = machine.job.as_ref().expect("job created");
        assert_eq!(job.target, target());
    }

    #[test]
    fn device_information_by_platform() {
        let mut machine = mac("Asia/Tokyo", Behaviour::NORMAL);
        let all: Vec<String> = queries::ROLLOUT.iter().map(|q| (*q).to_owned()).collect();

        let mac_answers = machine.query_responses(&all);
        machine.device.platform = Platform::Ios;
        machine.device.model = "iPhone15,2".to_owned();
        let iphone_answers = machine.query_responses(&all);
        let only_version = machine.query_responses(&["OSVersion".to_owned()]);

        assert_eq!(mac_answers.model.as_deref(), Some("Mac14,7"));
        assert_eq!(mac_answers.product_name, None);
        assert_eq!(mac_answers.time_zone, None);
        assert_eq!(
            mac_answers.software_update_device_id.as_deref(),
            Some("J493AP")
        );
        assert_eq!(mac_answers.is_supervised, Some(true));
        assert_eq!(iphone_answers.product_name.as_deref(), Some("iPhone15,2"));
        assert_eq!(iphone_answers.model, None);
        assert_eq!(iphone_answers.time_zone.as_deref(), Some("Asia/Tokyo"));
        assert_eq!(only_version.os_version.as_deref(), Some("15.7.7"));
        assert_eq!(only_version.serial_number, None);
    }

    #[test]
    fn checkin_messages_parse() {
        let machine = mac("Europe/Berlin", Behaviour::NORMAL);
        let topic = "com.apple.mgmt.External.test";

        let authenticate =
            parse_checkin(&machine.authenticate_body(topic).expect("encodes")).expect("parses");
        let token_update =
            parse_checkin(&machine.token_update_body(topic).expect("encodes")).expect("parses");

        let CheckinMessage::Authenticate(authenticate) = authenticate else {
            panic!("expected Authenticate, got {authenticate:?}");
        };
        assert_eq!(
            authenticate.udid.as_deref(),
            Some(machine.device.udid.as_str())
        );
        assert_eq!(authenticate.model.as_deref(), Some("Mac14,7"));
        assert_eq!(authenticate.model_name.as_deref(), Some("MacBook Pro"));
        assert_eq!(authenticate.os_version, None);
        let CheckinMessage::TokenUpdate(token_update) = token_update else {
            panic!("expected TokenUpdate, got {token_update:?}");
        };
        assert_eq!(token_update.token.len(), 32);
        assert_eq!(token_update.topic, topic);
    }

    #[test]
    fn unreadable_command_gets_format_error() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>CommandUUID</key><string>H1</string>
<key>Command</key><dict><key>RequestType</key><string>EraseDevice</string></dict></dict></plist>"#;

        let result = respond(&mut machine, body);

        assert_eq!(result.status, CommandStatus::CommandFormatError);
        assert_eq!(result.command_uuid.as_deref(), Some("H1"));
        assert!(machine.respond(b"not a plist").is_err());
    }
}
