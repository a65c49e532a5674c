//! Declarative device management: the declarations each device gets and
//! what its status reports mean.
//!
//! A DDM-capable device always gets a status subscription. While it is the
//! active target of a DDM operation it also gets the operation's
//! `softwareupdate.enforcement.specific` configuration, with add to catalog
//! off a `softwareupdate.settings` deferral where the device supports one
//! (see `catalog_visibility`), and one activation lists whatever
//! configurations it has. Declarations are computed from the
//! device and its target, so their ServerTokens, and the DeclarationsToken
//! over them, change exactly when their content changes.

use jiff::Timestamp;
use serde_json::json;

use super::catalog_visibility::{CatalogVisibility, deferral_settings, settings_identifier};
use super::progress::Work;
use super::user_initiated::{InstallSource, UserInstall, find_user_install};
use super::{ServiceError, ServiceResult, Services};
use crate::apple::ddm::{
    ActivationSimple, DdmEndpoint, Declaration, DeclarationItemsResponse, DeclarationValidity,
    InstallReason, InstallState, ParsedStatus, SoftwareUpdateEnforcementSpecific,
    StatusSubscriptions, TokensResponse, parse_status_report,
};
use crate::domain::{Actor, Device, EventType, OsVersion, Protocol, Signal, Target, TargetStatus};
use crate::ports::{DeviceContext, StoreError};

const ACTIVATION_ID: &str = "osdeploy.activation";
const SUBSCRIPTIONS_ID: &str = "osdeploy.status-subscriptions";

/// Identifier of an operation's enforcement declaration.
pub fn enforcement_identifier(operation_id: &str) -> String {
    format!("osdeploy.enforcement.{operation_id}")
}

/// Returns whether a target still puts its enforcement declaration on the device.
fn enforces(target: &Target) -> bool {
    target.protocol == Protocol::Ddm
        && !target.status.is_final()
        && target.target_local_date_time.is_some()
}

/// The declarations a device should hold now, and when they last changed.
/// `visibility` is the target operation's, for the settings declaration
/// that keeps the update out of view when add to catalog is off.
pub fn declarations_for(
    device: &Device,
    target: Option<&Target>,
    details_url: Option<&str>,
    visibility: Option<CatalogVisibility>,
) -> Result<(Vec<Declaration>, Timestamp), crate::apple::WireError> {
    let mut declarations = vec![Declaration::new(
        SUBSCRIPTIONS_ID,
        &StatusSubscriptions::rollout(),
    )?];
    let mut configurations = vec![SUBSCRIPTIONS_ID.to_string()];
    let mut changed_at = device.enrolled_at;
    if let Some(target) = target {
        changed_at = changed_at.max(target.created_at);
        if let (true, Some(local)) = (enforces(target), target.target_local_date_time) {
            let id = enforcement_identifier(&target.operation_id);
            declarations.push(Declaration::new(
                id.clone(),
                &SoftwareUpdateEnforcementSpecific {
                    target_os_version: target.target_version.to_string(),
                    target_build_version: Some(target.target_build.clone()),
                    target_local_date_time: local,
                    details_url: details_url.map(str::to_string),
                },
            )?);
            configurations.push(id);
            if let Some(settings) = visibility.and_then(|v| deferral_settings(device, target, v)) {
                let id = settings_identifier(&target.operation_id);
                declarations.push(Declaration::new(id.clone(), &settings)?);
                configurations.push(id);
            }
        } else if target.protocol == Protocol::Ddm {
            changed_at = changed_at.max(target.updated_at);
        }
    }
    declarations.push(Declaration::new(
        ACTIVATION_ID,
        &ActivationSimple {
            standard_configurations: configurations,
            predicate: None,
        },
    )?);
    Ok((declarations, changed_at))
}

/// Finds an install the user started outside any running operation in a
/// status report: a newer `device.operating-system.version`, or
/// `install-state` `installing` with a newer `pending-version`.
fn user_install_in_status(context: &DeviceContext, status: &ParsedStatus) -> Option<UserInstall> {
    let running = status
        .os_version
        .as_deref()
        .and_then(|v| v.parse::<OsVersion>().ok());
    let pending = status
        .pending_version
        .as_ref()
        .filter(|_| status.install_state == Some(InstallState::Installing))
        .and_then(|p| {
            p.os_version
                .parse::<OsVersion>()
                .ok()
                .map(|v| (v, p.build_version.as_str()))
        });
    find_user_install(
        context,
        running
            .as_ref()
            .map(|v| (v, status.build_version.as_deref())),
        pending.as_ref().map(|(v, b)| (v, Some(*b))),
        InstallSource::DdmStatus,
    )
}

fn wire_error(e: crate::apple::WireError) -> ServiceError {
    ServiceError::BadDeviceInput {
        message: e.to_string(),
    }
}

impl Services {
    /// Handles a DeclarativeManagement check-in and returns the JSON body.
    pub async fn handle_declarative(
        &self,
        context: DeviceContext,
        endpoint: &str,
        data: Option<&[u8]>,
    ) -> ServiceResult<Vec<u8>> {
        let endpoint = DdmEndpoint::parse(endpoint).map_err(wire_error)?;
        // A malformed status report is rejected before anything is written,
        // including the ddm_active flag below.
        let status = match endpoint {
            DdmEndpoint::Status => {
                let Some(data) = data else {
                    return Err(ServiceError::BadDeviceInput {
                        message:
                            "status check-in has no Data: send the status report as the Data key"
                                .into(),
                    });
                };
                Some(parse_status_report(data).map_err(wire_error)?)
            }
            _ => None,
        };
        if !context.device.ddm_active {
            self.mark_ddm_active(&context.device.udid).await?;
        }
        let target = context
            .target
            .as_ref()
            .filter(|t| t.protocol == Protocol::Ddm);
        let visibility = match target {
            Some(t) if enforces(t) => self.visibility_for(&t.operation_id).await?,
            _ => None,
        };
        let (declarations, changed_at) = declarations_for(&context.device, target, self.config.details_url.as_deref(), visibility).map_err(|e| {
            tracing::error!(device_id = %context.device.udid, error = %e, "could not build declarations");
            ServiceError::Store(StoreError::backend("build declarations", e))
        })?;
        match endpoint {
            DdmEndpoint::Tokens => TokensResponse::for_declarations(&declarations, changed_at)
                .to_json()
                .map_err(wire_error),
            DdmEndpoint::DeclarationItems => {
                DeclarationItemsResponse::from_declarations(&declarations)
                    .and_then(|items| items.to_json())
                    .map_err(wire_error)
            }
            DdmEndpoint::Declaration { kind, identifier } => {
                let found = declarations
                    .iter()
                    .find(|d| d.identifier == identifier && d.kind() == Some(kind));
                match found {
                    Some(declaration) => declaration.to_json().map_err(wire_error),
                    None => Err(ServiceError::not_found("declaration", identifier)),
                }
            }
            DdmEndpoint::Status => {
                if let Some(status) = status {
                    self.record_status(context, status).await?;
                }
                Ok(Vec::new())
            }
        }
    }

    async fn mark_ddm_active(&self, udid: &str) -> ServiceResult<()> {
        for _ in 0..5 {
            let Some(mut device) = self.ports.devices.get_device(udid).await? else {
                return Ok(());
            };
            if device.ddm_active {
                return Ok(());
            }
            let revision = device.revision;
            device.ddm_active = true;
            let change = crate::ports::Change {
                device: Some(crate::ports::DeviceWrite {
                    device,
                    expected_revision: Some(revision),
                }),
                ..Default::default()
            };
            match self.ports.devices.commit(change).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Applies a status report: one read (done by the caller) and one
    /// transaction when anything changed.
    async fn record_status(
        &self,
        context: DeviceContext,
        status: ParsedStatus,
    ) -> ServiceResult<()> {
        let udid = context.device.udid.clone();
        let user_install = user_install_in_status(&context, &status);
        let mut context = Some(context);
        for _ in 0..5 {
            let context = match context.take() {
                Some(context) => context,
                None => self
                    .ports
                    .devices
                    .load_context(&udid)
                    .await?
                    .ok_or_else(|| ServiceError::not_found("device", udid.clone()))?,
            };
            let mut work = Work::new(context);
            self.apply_status(&mut work, &status);
            self.note_seen(&udid);
            if !work.is_empty() {
                match self.ports.devices.commit(work.into_change()).await {
                    Ok(outcome) => self.record_state_changes(&outcome.state_changes).await?,
                    Err(StoreError::Conflict(message)) => {
                        tracing::debug!(device_id = %udid, %message, "retrying a status report after a conflicting write");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(install) = user_install {
                self.record_user_install(install).await?;
            }
            return Ok(());
        }
        Err(ServiceError::Conflict {
            code: "busy",
            message: format!(
                "device {udid} changed repeatedly while its status was recorded; send it again"
            ),
        })
    }

    fn apply_status(&self, work: &mut Work, status: &ParsedStatus) {
        let running = status
            .os_version
            .as_deref()
            .and_then(|v| v.parse::<OsVersion>().ok());
        self.record_status_inventory(work, status, running.as_ref());

        let Some(target) = work.target.clone().filter(|t| t.protocol == Protocol::Ddm) else {
            return;
        };
        for (path, value) in &status.unknown {
            work.event(
                self,
                EventType::UnknownValue,
                Actor::Device,
                json!({ "key": path, "value": value }),
            );
        }
        if target.status.is_final() {
            return;
        }
        let detail = status
            .pending_version
            .as_ref()
            .filter(|p| !p.os_version.is_empty())
            .map(|p| format!("pending {} ({})", p.os_version, p.build_version));

        // The declaration's own status: accepted, or rejected.
        let id = enforcement_identifier(&target.operation_id);
        let declaration = status
            .declarations
            .as_ref()
            .and_then(|d| d.configurations.as_ref())
            .and_then(|configurations| configurations.iter().find(|c| c.identifier == id));
        let mut accepted = target.status != TargetStatus::Pending;
        if let Some(declaration) = declaration {
            work.mark_reported();
            match &declaration.valid {
                DeclarationValidity::Valid if declaration.active => {
                    accepted = true;
                    if target.status == TargetStatus::Pending {
                        work.apply(self, Signal::Accepted, None, json!({ "declaration": id }));
                    }
                }
                DeclarationValidity::Invalid => {
                    let reasons: Vec<String> = declaration
                        .reasons
                        .iter()
                        .flatten()
                        .map(|r| {
                            format!(
                                "{}{}",
                                r.code,
                                r.description
                                    .as_deref()
                                    .map(|d| format!(": {d}"))
                                    .unwrap_or_default()
                            )
                        })
                        .collect();
                    let current = running.clone().or_else(|| work.device.os_version.clone());
                    let already_there = current
                        .as_ref()
                        .is_some_and(|v| v >= &target.target_version);
                    if already_there && let Some(version) = current {
                        work.apply(
                            self,
                            Signal::Running {
                                version,
                                build: status.build_version.clone(),
                            },
                            None,
                            json!({ "reasons": reasons }),
                        );
                    } else {
                        work.apply(
                            self,
                            Signal::AttemptFailed {
                                reason: format!("declaration rejected: {}", reasons.join("; ")),
                                retryable: false,
                            },
                            None,
                            json!({ "declaration": id }),
                        );
                    }
                    return;
                }
                DeclarationValidity::Unknown(value) => {
                    work.event(self, EventType::UnknownValue, Actor::Device, json!({ "key": "management.declarations.configurations.valid", "value": value }));
                }
                _ => {}
            }
        }

        if let Some(reason) = &status.install_reason {
            let by_user = reason.reasons.iter().any(|r| {
                matches!(
                    r,
                    InstallReason::SystemSettings
                        | InstallReason::Notification
                        | InstallReason::InstallTonight
                )
            });
            if by_user {
                work.mark_reported();
                let reasons: Vec<&str> = reason.reasons.iter().map(|r| r.as_str()).collect();
                work.apply(
                    self,
                    Signal::UserStarted,
                    detail.clone(),
                    json!({ "install_reason": reasons }),
                );
            }
        }

        if let Some(failure) = &status.failure_reason {
            let seen = u64::from(target.device_failure_count);
            if failure.count > seen {
                work.mark_reported();
                for _ in seen..failure.count {
                    let reason = failure
                        .reason
                        .clone()
                        .unwrap_or_else(|| "software update failed".to_string());
                    work.apply(
                        self,
                        Signal::AttemptFailed {
                            reason,
                            retryable: true,
                        },
                        detail.clone(),
                        json!({ "device_failure_count": failure.count }),
                    );
                }
            }
            let count = u32::try_from(failure.count).unwrap_or(u32::MAX);
            if count != target.device_failure_count
                && let Some(t) = work.target_mut()
            {
                t.device_failure_count = count;
            }
        }

        if let Some(state) = &status.install_state {
            work.mark_reported();
            match state {
                // After a failure `waiting` means the device waits to
                // retry: the target stays in Retry until it progresses.
                InstallState::None | InstallState::Waiting
                    if accepted
                        && work.target.as_ref().map(|t| t.status)
                            == Some(TargetStatus::Pending) =>
                {
                    work.apply(
                        self,
                        Signal::Accepted,
                        detail.clone(),
                        json!({ "install_state": state.as_str() }),
                    );
                }
                // DDM reports no percentage: the install state is the
                // progress the event can carry.
                InstallState::Downloading | InstallState::Prepared | InstallState::Installing => {
                    let signal = match state {
                        InstallState::Downloading => Signal::Downloading,
                        InstallState::Prepared => Signal::Downloaded,
                        _ => Signal::Installing,
                    };
                    let progress = json!({ "install_state": state.as_str() });
                    work.apply(self, signal, detail.clone(), progress)
                }
                InstallState::Unknown(value) => {
                    work.event(
                        self,
                        EventType::UnknownValue,
                        Actor::Device,
                        json!({ "key": "softwareupdate.install-state", "value": value }),
                    );
                }
                _ => {}
            }
        }

        // The version decides Installed versus Obsolete by itself, so it is
        // not marked as an earlier report.
        if let Some(version) = running {
            work.apply(
                self,
                Signal::Running {
                    version,
                    build: status.build_version.clone(),
                },
                None,
                json!({}),
            );
        }
    }

    fn record_status_inventory(
        &self,
        work: &mut Work,
        status: &ParsedStatus,
        running: Option<&OsVersion>,
    ) {
        let device = &work.device;
        let version_changed = running.is_some_and(|v| device.os_version.as_ref() != Some(v));
        let build_changed =
            status.build_version.is_some() && status.build_version != device.build_version;
        let id_changed = status.software_update_device_id.is_some()
            && status.software_update_device_id != device.software_update_device_id;
        if !(version_changed || build_changed || id_changed) {
            return;
        }
        let device = work.device_mut();
        if let Some(version) = running {
            device.os_version = Some(version.clone());
        }
        if status.build_version.is_some() {
            device.build_version = status.build_version.clone();
        }
        if status.software_update_device_id.is_some() {
            device.software_update_device_id = status.software_update_device_id.clone();
        }
    }
}
