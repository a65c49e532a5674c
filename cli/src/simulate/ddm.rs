//! A simulated device's declarative management: the declarations it holds,
//! how the enforcement declaration drives its update job, and the status
//! reports it sends.

use std::collections::BTreeMap;

use osdeploy_shared::apple::WireError;
use osdeploy_shared::apple::ddm::{
    ActivationSimple, Declaration, DeclarationItemsResponse, DeclarationKind, DeclarationPayload,
    DeclarationStatus, DeclarationValidity, DeclarationsStatus, FailureReason, InstallReason,
    InstallReasonStatus, InstallState, ManifestDeclarations, ManifestItem, PendingVersion,
    SoftwareUpdateEnforcementSpecific, StatusReason, StatusReport, status_items,
};
use serde_json::Value;

use super::device::{Job, Machine, Origin, Phase, at_or_above};
use super::profile::TargetUpdate;
use super::truth::Delivery;
use super::truth::SERVER_MAX_ATTEMPTS;

/// The declarations a device holds, by identifier, with the
/// `DeclarationsToken` of the manifest they came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeclarationSet {
    pub(crate) token: Option<String>,
    declarations: BTreeMap<String, (DeclarationKind, Declaration)>,
}

fn manifest_lists(manifest: &ManifestDeclarations) -> [(DeclarationKind, &Vec<ManifestItem>); 4] {
    [
        (DeclarationKind::Activation, &manifest.activations),
        (DeclarationKind::Configuration, &manifest.configurations),
        (DeclarationKind::Asset, &manifest.assets),
        (DeclarationKind::Management, &manifest.management),
    ]
}

impl DeclarationSet {
    /// Lists the manifest entries that are new or whose `ServerToken`
    /// changed, which the device must fetch.
    pub(crate) fn to_fetch(
        &self,
        manifest: &ManifestDeclarations,
    ) -> Vec<(DeclarationKind, String)> {
        let mut fetch = Vec::new();
        for (kind, items) in manifest_lists(manifest) {
            for item in items {
                let held = self.declarations.get(&item.identifier);
                let current = held.is_some_and(|(held_kind, declaration)| {
                    *held_kind == kind && declaration.server_token == item.server_token
                });
                if !current {
                    fetch.push((kind, item.identifier.clone()));
                }
            }
        }
        fetch
    }

    /// Replaces the held set with the manifest's: keeps unchanged
    /// declarations, takes the fetched ones, and drops those the manifest no
    /// longer lists.
    pub(crate) fn apply(&mut self, manifest: &DeclarationItemsResponse, fetched: Vec<Declaration>) {
        let mut fetched: BTreeMap<String, Declaration> = fetched
            .into_iter()
            .map(|declaration| (declaration.identifier.clone(), declaration))
            .collect();
        let mut next = BTreeMap::new();
        for (kind, items) in manifest_lists(&manifest.declarations) {
            for item in items {
                let declaration = match fetched.remove(&item.identifier) {
                    Some(declaration) => Some(declaration),
                    None => self
                        .declarations
                        .remove(&item.identifier)
                        .map(|(_, declaration)| declaration),
                };
                if let Some(declaration) = declaration {
                    next.insert(item.identifier.clone(), (kind, declaration));
                }
            }
        }
        self.declarations = next;
        self.token = Some(manifest.declarations_token.clone());
    }

    /// Returns the identifiers of the configurations that some activation
    /// lists.
    fn activated(&self) -> Vec<String> {
        self.declarations
            .values()
            .filter(|(kind, _)| *kind == DeclarationKind::Activation)
            .filter_map(|(_, declaration)| declaration.payload_as::<ActivationSimple>().ok())
            .flat_map(|activation| activation.standard_configurations)
            .collect()
    }

    /// Returns the activated enforcement declaration, with its payload or
    /// the reason it is invalid.
    pub(crate) fn enforcement(
        &self,
    ) -> Option<(String, Result<SoftwareUpdateEnforcementSpecific, WireError>)> {
        let activated = self.activated();
        self.declarations
            .values()
            .filter(|(_, declaration)| {
                declaration.declaration_type == SoftwareUpdateEnforcementSpecific::DECLARATION_TYPE
                    && activated.contains(&declaration.identifier)
            })
            .map(|(_, declaration)| {
                (
                    declaration.identifier.clone(),
                    declaration.payload_as::<SoftwareUpdateEnforcementSpecific>(),
                )
            })
            .next()
    }

    /// Returns `management.declarations` for a status report.
    pub(crate) fn status(&self) -> DeclarationsStatus {
        let activated = self.activated();
        let mut lists: BTreeMap<DeclarationKind, Vec<DeclarationStatus>> = BTreeMap::new();
        for (kind, declaration) in self.declarations.values() {
            let active = *kind != DeclarationKind::Configuration
                || activated.contains(&declaration.identifier);
            let problem = match declaration.declaration_type.as_str() {
                ActivationSimple::DECLARATION_TYPE => {
                    declaration.payload_as::<ActivationSimple>().err()
                }
                SoftwareUpdateEnforcementSpecific::DECLARATION_TYPE => declaration
                    .payload_as::<SoftwareUpdateEnforcementSpecific>()
                    .err(),
                _ => None,
            };
            let (valid, reasons) = match problem {
                None => (DeclarationValidity::Valid, None),
                Some(error) => (
                    DeclarationValidity::Invalid,
                    Some(vec![StatusReason {
                        code: "Error.ConfigurationCannotBeApplied".to_owned(),
                        description: Some(error.to_string()),
                        details: None,
                    }]),
                ),
            };
            lists.entry(*kind).or_default().push(DeclarationStatus {
                identifier: declaration.identifier.clone(),
                server_token: declaration.server_token.clone(),
                active,
                valid,
                reasons,
            });
        }
        let mut take = |kind| Some(lists.remove(&kind).unwrap_or_default());
        DeclarationsStatus {
            activations: take(DeclarationKind::Activation),
            configurations: take(DeclarationKind::Configuration),
            assets: take(DeclarationKind::Asset),
            management: take(DeclarationKind::Management),
        }
    }
}

/// A status report ready to send, with the items it carries.
#[derive(Debug, Clone)]
pub(crate) struct PendingReport {
    pub(crate) body: Vec<u8>,
    items: Vec<(&'static str, Value)>,
    declarations: bool,
    full: bool,
    pub(crate) deliveries: Vec<Delivery>,
}

impl Machine {
    /// Takes a synced manifest and its fetched declarations, then starts,
    /// updates or stops the update job to match the enforcement declaration.
    pub(crate) fn apply_declarations(
        &mut self,
        manifest: &DeclarationItemsResponse,
        fetched: Vec<Declaration>,
    ) {
        self.declarations.apply(manifest, fetched);
        self.declarations_changed = true;
        match self.declarations.enforcement() {
            None => self.enforcement_removed(),
            Some((identifier, Ok(payload))) => self.enforcement_present(identifier, payload),
            Some((identifier, Err(error))) => {
                tracing::warn!(device_id = %self.device.udid, declaration = %identifier, %error, "enforcement declaration is invalid; reporting it as invalid");
            }
        }
    }

    /// Handles the removal of the enforcement declaration, which means the
    /// operation was cancelled or the server finished with this device. A DDM
    /// update that has not started installing stops.
    fn enforcement_removed(&mut self) {
        let Some(job) = &self.job else {
            return;
        };
        if !matches!(job.origin, Origin::Ddm { .. }) || job.phase.is_installing() {
            return;
        }
        self.job = None;
        // After the last failure the server marked the target failed and
        // dropped the declaration for that reason.
        if self.record.failures_reported < SERVER_MAX_ATTEMPTS {
            tracing::debug!(device_id = %self.device.udid, "enforcement declaration removed before the install; update stopped");
            self.record.cancelled = true;
        }
    }

    fn enforcement_present(
        &mut self,
        identifier: String,
        payload: SoftwareUpdateEnforcementSpecific,
    ) {
        let version = payload.target_os_version.clone();
        if at_or_above(&self.device.os_version, &version) {
            return;
        }
        let build = payload
            .target_build_version
            .clone()
            .or_else(|| self.catalog_build(&version))
            .unwrap_or_default();
        let target = TargetUpdate::new(version, build);
        let origin = Origin::Ddm {
            declaration_id: identifier,
            deadline: payload.target_local_date_time,
        };
        if !self.ensure_job(&target, origin) {
            return;
        }
        let now = self.now();
        let Some(mut job) = self.job.take() else {
            return;
        };
        if job.phase == Phase::Scheduled {
            // Devices start downloading an enforced update in the background.
            self.begin_download(&mut job, now);
        }
        self.job = Some(job);
        // The deadline may have changed or already passed.
        self.observe(now);
    }

    /// Returns the software-update and OS status items as the device would
    /// report them now.
    pub(crate) fn status_items(&self) -> Vec<(&'static str, Value)> {
        let device = &self.device;
        let (state, pending, failure, reason) = match &self.job {
            None => (
                InstallState::None,
                PendingVersion {
                    os_version: String::new(),
                    build_version: String::new(),
                },
                FailureReason {
                    count: 0,
                    reason: None,
                    timestamp: None,
                },
                InstallReasonStatus {
                    reasons: Vec::new(),
                    declaration_id: None,
                },
            ),
            Some(job) => (
                install_state(job.phase),
                PendingVersion {
                    os_version: job.target.version.clone(),
                    build_version: job.target.build.clone(),
                },
                failure_reason(job),
                install_reason(job),
            ),
        };
        vec![
            (
                status_items::OS_VERSION,
                Value::String(device.os_version.clone()),
            ),
            (
                status_items::BUILD_VERSION,
                Value::String(device.build_version.clone()),
            ),
            (
                status_items::DEVICE_ID,
                Value::String(device.software_update_device_id.clone()),
            ),
            (
                status_items::INSTALL_STATE,
                Value::String(state.as_str().to_owned()),
            ),
            (status_items::PENDING_VERSION, to_value(&pending)),
            (status_items::FAILURE_REASON, to_value(&failure)),
            (status_items::INSTALL_REASON, to_value(&reason)),
        ]
    }

    /// Builds the status report of what changed since the server last
    /// accepted one: changed items only, plus `management.declarations`
    /// after a sync that changed them. The first report is a full one.
    /// `None` when nothing changed.
    pub(crate) fn pending_report(&self) -> Result<Option<PendingReport>, WireError> {
        let full = self.reported.is_empty();
        let items: Vec<(&'static str, Value)> = self
            .status_items()
            .into_iter()
            .filter(|(name, value)| full || self.reported.get(name) != Some(value))
            .collect();
        let declarations = self.declarations_changed;
        if items.is_empty() && !declarations {
            return Ok(None);
        }
        let mut report = StatusReport {
            full_report: full,
            ..StatusReport::default()
        };
        let mut deliveries = Vec::new();
        for (name, value) in &items {
            report.insert_item(name, value.clone());
            if !self.record.ddm {
                // The server moves MDM targets on command results only.
                continue;
            }
            match (*name, value) {
                (status_items::INSTALL_STATE, Value::String(state))
                    if state == InstallState::Installing.as_str() =>
                {
                    deliveries.push(Delivery::Installing);
                }
                (status_items::OS_VERSION, Value::String(version)) => {
                    deliveries.push(Delivery::OnTarget(version.clone()));
                }
                (status_items::FAILURE_REASON, Value::Object(failure)) => {
                    let count = failure.get("count").and_then(Value::as_u64).unwrap_or(0);
                    deliveries.push(Delivery::Failures(u32::try_from(count).unwrap_or(u32::MAX)));
                }
                _ => {}
            }
        }
        if declarations {
            report.insert_item(
                status_items::DECLARATIONS,
                to_value(&self.declarations.status()),
            );
        }
        Ok(Some(PendingReport {
            body: report.to_json()?,
            items,
            declarations,
            full,
            deliveries,
        }))
    }

    /// Records that the server accepted `report`.
    pub(crate) fn report_accepted(&mut self, report: PendingReport) {
        for (name, value) in report.items {
            self.reported.insert(name, value);
        }
        if report.declarations {
            self.declarations_changed = false;
        }
        for delivery in &report.deliveries {
            self.delivered(delivery);
        }
        self.counters.status_reports_sent += 1;
        tracing::trace!(device_id = %self.device.udid, full = report.full, "status report accepted");
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    // These status types hold only strings, numbers and lists, which always
    // serialize.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn install_state(phase: Phase) -> InstallState {
    match phase {
        Phase::Scheduled | Phase::Waiting { .. } => InstallState::Waiting,
        Phase::Downloading { .. } | Phase::Preparing { .. } => InstallState::Downloading,
        Phase::Prepared => InstallState::Prepared,
        Phase::Installing { .. } | Phase::Rebooting { .. } => InstallState::Installing,
        Phase::GaveUp => InstallState::Failed,
    }
}

fn failure_reason(job: &Job) -> FailureReason {
    let (reason, timestamp) = match job.last_failure {
        Some((kind, at)) => (
            Some(kind.reason().to_owned()),
            Some(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        ),
        None => (None, None),
    };
    FailureReason {
        count: u64::from(job.failures),
        reason,
        timestamp,
    }
}

fn install_reason(job: &Job) -> InstallReasonStatus {
    match &job.origin {
        Origin::Ddm { .. } if job.user_started => InstallReasonStatus {
            reasons: vec![InstallReason::SystemSettings],
            declaration_id: None,
        },
        Origin::Ddm { declaration_id, .. } => InstallReasonStatus {
            reasons: vec![InstallReason::Declaration],
            declaration_id: Some(declaration_id.clone()),
        },
        Origin::Mdm => InstallReasonStatus {
            reasons: vec![InstallReason::Mdm],
            declaration_id: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::device::UpdatePhase;
    use crate::simulate::device::tests::{mac, ts};
    use crate::simulate::profile::Behaviour;
    use crate::simulate::truth::ExpectedStatus;
    use osdeploy_shared::apple::ddm::{StatusSubscriptions, parse_status_report};

    const ENFORCEMENT_ID: &str = "osdeploy.enforcement.op1";

    fn enforcement(deadline: &str) -> Declaration {
        let payload = SoftwareUpdateEnforcementSpecific {
            target_os_version: "26.6.2".to_owned(),
            target_build_version: Some("25G83".to_owned()),
            target_local_date_time: deadline.parse().expect("valid datetime"),
            details_url: None,
        };
        Declaration::new(ENFORCEMENT_ID, &payload).expect("valid declaration")
    }

    fn declaration_set(enforcement: Option<Declaration>) -> Vec<Declaration> {
        let subscriptions = Declaration::new(
            "osdeploy.status-subscriptions",
            &StatusSubscriptions::rollout(),
        )
        .expect("valid declaration");
        let mut configurations = vec![subscriptions.identifier.clone()];
        let mut set = vec![subscriptions];
        if let Some(enforcement) = enforcement {
            configurations.push(enforcement.identifier.clone());
            set.push(enforcement);
        }
        let activation = Declaration::new(
            "osdeploy.activation",
            &ActivationSimple {
                standard_configurations: configurations,
                predicate: None,
            },
        )
        .expect("valid declaration");
        set.push(activation);
        set
    }

    /// Syncs `machine` to `set` the way the transport does.
    fn sync(machine: &mut Machine, set: &[Declaration]) -> usize {
        let manifest = DeclarationItemsResponse::from_declarations(set).expect("valid manifest");
        let to_fetch = machine.declarations.to_fetch(&manifest.declarations);
        let fetched = set
            .iter()
            .filter(|d| to_fetch.iter().any(|(_, id)| *id == d.identifier))
            .cloned()
            .collect();
        machine.apply_declarations(&manifest, fetched);
        to_fetch.len()
    }

    fn send_report(machine: &mut Machine) -> Option<osdeploy_shared::apple::ddm::ParsedStatus> {
        let report = machine.pending_report().expect("report encodes")?;
        let parsed = parse_status_report(&report.body).expect("report parses");
        machine.report_accepted(report);
        Some(parsed)
    }

    #[test]
    fn fetch_only_new_or_changed() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        machine.observe(ts("2026-09-01T08:00:00Z"));

        let first = sync(&mut machine, &declaration_set(None));
        let unchanged = sync(&mut machine, &declaration_set(None));
        let with_enforcement = sync(
            &mut machine,
            &declaration_set(Some(enforcement("2026-09-03T09:00:00"))),
        );

        assert_eq!(first, 2);
        assert_eq!(unchanged, 0);
        // The new enforcement declaration, and the activation that now lists it.
        assert_eq!(with_enforcement, 2);
    }

    #[test]
    fn enforcement_starts_download_and_reports() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        sync(&mut machine, &declaration_set(None));
        let initial = send_report(&mut machine).expect("first report");
        assert!(initial.full_report);
        assert_eq!(initial.os_version.as_deref(), Some("15.7.7"));
        assert_eq!(initial.install_state, Some(InstallState::None));
        assert!(send_report(&mut machine).is_none(), "nothing changed");

        sync(
            &mut machine,
            &declaration_set(Some(enforcement("2026-09-03T09:00:00"))),
        );
        let report = send_report(&mut machine).expect("report after sync");

        assert!(!report.full_report);
        assert_eq!(report.install_state, Some(InstallState::Downloading));
        assert_eq!(report.os_version, None, "unchanged items are left out");
        let pending = report.pending_version.expect("pending version sent");
        assert_eq!(pending.os_version, "26.6.2");
        assert_eq!(pending.build_version, "25G83");
        let configurations = report
            .declarations
            .and_then(|d| d.configurations)
            .expect("configurations sent");
        let enforced = configurations
            .iter()
            .find(|c| c.identifier == ENFORCEMENT_ID)
            .expect("enforcement listed");
        assert!(enforced.active);
        assert_eq!(enforced.valid, DeclarationValidity::Valid);
        assert_eq!(
            machine.record.target.as_ref().map(|t| t.version.as_str()),
            Some("26.6.2")
        );
    }

    #[test]
    fn reboot_reports_new_version() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        sync(
            &mut machine,
            &declaration_set(Some(enforcement("2026-09-01T11:00:00"))),
        );
        send_report(&mut machine);

        // Berlin is UTC+2: the deadline is 09:00 UTC. Install 20 minutes,
        // reboot 5 minutes.
        machine.observe(ts("2026-09-01T09:25:00Z"));
        let report = send_report(&mut machine).expect("report after the reboot");

        assert_eq!(report.os_version.as_deref(), Some("26.6.2"));
        assert_eq!(report.build_version.as_deref(), Some("25G83"));
        assert_eq!(report.install_state, Some(InstallState::None));
        assert!(machine.record.reported_on_target);
        assert!(machine.settled());
    }

    #[test]
    fn removed_declaration_cancels_download() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        sync(
            &mut machine,
            &declaration_set(Some(enforcement("2026-09-03T09:00:00"))),
        );
        send_report(&mut machine);

        machine.observe(ts("2026-09-01T08:10:00Z"));
        sync(&mut machine, &declaration_set(None));
        let report = send_report(&mut machine).expect("report after removal");

        assert_eq!(report.install_state, Some(InstallState::None));
        let pending = report.pending_version.expect("pending version cleared");
        assert_eq!(pending.os_version, "");
        assert!(machine.job.is_none());
        assert_eq!(machine.expected(), Some(ExpectedStatus::Cancelled));
    }

    #[test]
    fn removed_declaration_keeps_install() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        sync(
            &mut machine,
            &declaration_set(Some(enforcement("2026-09-01T10:00:00"))),
        );
        // Prepared at 08:45 UTC, after the 08:00 UTC deadline, so it installs at once.
        machine.observe(ts("2026-09-01T08:50:00Z"));
        assert_eq!(
            machine.job.as_ref().map(|j| j.phase.name()),
            Some(UpdatePhase::Installing)
        );

        sync(&mut machine, &declaration_set(None));

        assert_eq!(
            machine.job.as_ref().map(|j| j.phase.name()),
            Some(UpdatePhase::Installing)
        );
        assert_eq!(machine.expected(), Some(ExpectedStatus::Installed));
    }

    #[test]
    fn failure_count_reported() {
        let behaviour = Behaviour {
            failure: crate::simulate::profile::FailurePlan::Persistent(
                crate::simulate::profile::FailureKind::DownloadInsufficientSpace,
            ),
            ..Behaviour::NORMAL
        };
        let mut machine = mac("Europe/Berlin", behaviour);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        sync(
            &mut machine,
            &declaration_set(Some(enforcement("2026-09-05T09:00:00"))),
        );
        send_report(&mut machine);

        machine.observe(ts("2026-09-01T08:30:00Z"));
        let first = send_report(&mut machine).expect("report after the first failure");
        machine.observe(ts("2026-09-02T08:00:00Z"));
        let last = send_report(&mut machine).expect("report after giving up");

        let failure = first.failure_reason.expect("failure reason sent");
        assert_eq!(failure.count, 1);
        assert_eq!(failure.reason.as_deref(), Some("DownloadInsufficientSpace"));
        assert!(failure.timestamp.is_some());
        assert_eq!(first.install_state, Some(InstallState::Waiting));
        assert_eq!(last.failure_reason.map(|f| f.count), Some(3));
        assert_eq!(last.install_state, Some(InstallState::Failed));
        assert!(machine.settled());
        assert_eq!(machine.expected(), Some(ExpectedStatus::Failed));

        // The server drops the declaration of a failed target; the truth stays failed.
        sync(&mut machine, &declaration_set(None));
        assert_eq!(machine.expected(), Some(ExpectedStatus::Failed));
    }

    #[test]
    fn mdm_target_ignores_status_reports() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        machine.ensure_job(&crate::simulate::device::tests::target(), Origin::Mdm);
        let mut job = machine.job.take().expect("job created");
        job.phase = Phase::Prepared;
        job.install_requested = true;
        machine.begin_install(&mut job, machine.now(), false);
        machine.job = Some(job);

        let report = send_report(&mut machine).expect("report sent");

        assert_eq!(report.install_state, Some(InstallState::Installing));
        assert!(
            !machine.record.reported_installing,
            "the server reads MDM targets from command results"
        );
    }

    #[test]
    fn user_install_reason_reported() {
        let behaviour = Behaviour {
            user_early_install: true,
            ..Behaviour::NORMAL
        };
        let mut machine = mac("Europe/Berlin", behaviour);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        sync(
            &mut machine,
            &declaration_set(Some(enforcement("2026-09-04T09:00:00"))),
        );
        send_report(&mut machine);
        machine.observe(ts("2026-09-01T08:45:00Z"));
        send_report(&mut machine);
        let user_at = machine.next_event_at().expect("early install planned");

        machine.observe(user_at);
        let report = send_report(&mut machine).expect("report at the early install");

        assert_eq!(report.install_state, Some(InstallState::Installing));
        let reason = report.install_reason.expect("install reason sent");
        assert_eq!(reason.reasons, vec![InstallReason::SystemSettings]);
        assert!(machine.record.reported_installing);
    }
}
