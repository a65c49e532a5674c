//! User-initiated operations: installs that no running operation asked for.
//!
//! A device in no running operation may report that it now runs a newer OS
//! version (DDM `device.operating-system.version` and `build-version`, or an
//! MDM DeviceInformation result), or that it is installing one (DDM
//! `softwareupdate.install-state` `installing` with a `pending-version`).
//! That install is recorded as a target of an operation of type
//! `user_initiated`, in Installed or Installing, with its events.
//!
//! Grouping: one user-initiated operation per platform and build, found
//! through the idempotency key `user-initiated:<platform>:<build>` (the
//! version is used when the device sent no build). Every device that
//! installs that build on its own joins the same operation, so the list of
//! operations shows one row per build users installed, not one per device.
//! The operation's protocol is that of the first device recorded; each
//! target carries its own device's protocol.
//!
//! A device recorded as Installing becomes the operation's active target, so
//! its next version report moves it to Installed through the usual path,
//! and a new operation cannot move it while it installs.
//!
//! Over MDM the server asks an idle device in no operation for
//! DeviceInformation once a day (`ServiceConfig::inventory_refresh_every`),
//! so an MDM device's own install is recorded within about a day. NOTE: iOS
//! also sends its version in Authenticate, which updates the inventory
//! before any query, so an iOS device that enrolls again after updating
//! itself is not recorded.
//!
//! NOTE: an install of a version other than the target of a device's
//! running operation is not recorded here, because a device has one
//! current operation and recording it would take the device out of the
//! running one.

use serde_json::json;

use super::{ServiceResult, Services};
use crate::domain::{
    Actor, Device, EventType, InstallSettings, Operation, OperationState, OperationType,
    OperationUpdate, OsVersion, Platform, Protocol, StatusCounts, Target, TargetStatus,
};
use crate::ports::{AssignOutcome, Assignment, DeviceContext, StoreError};

/// The report that showed the install, named in the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallSource {
    DdmStatus,
    MdmDeviceInformation,
}

impl InstallSource {
    fn as_str(self) -> &'static str {
        match self {
            InstallSource::DdmStatus => "ddm_status",
            InstallSource::MdmDeviceInformation => "mdm_device_information",
        }
    }
}

/// An install that a device reported outside any running operation.
#[derive(Debug, Clone, PartialEq)]
pub struct UserInstall {
    pub device: Device,
    pub version: OsVersion,
    pub build: Option<String>,
    /// Installed or Installing.
    pub status: TargetStatus,
    pub from_version: Option<OsVersion>,
    pub source: InstallSource,
}

/// Returns the idempotency key of the user-initiated operation for a build.
pub fn user_initiated_key(platform: Platform, build_or_version: &str) -> String {
    format!(
        "user-initiated:{}:{build_or_version}",
        platform_key(platform)
    )
}

fn platform_key(platform: Platform) -> &'static str {
    match platform {
        Platform::MacOs => "macos",
        Platform::Ios => "ios",
        Platform::IpadOs => "ipados",
    }
}

/// Finds a user install in a report, from the device and target as read
/// before the report was applied. `running` is the version and build the
/// report gives, `installing` the pending version of an install under way.
///
/// An install counts only when the device is in no running operation, and
/// a running version counts only when it is newer than the stored one: the
/// first version a device reports is inventory, not an install.
pub fn find_user_install(
    before: &DeviceContext,
    running: Option<(&OsVersion, Option<&str>)>,
    installing: Option<(&OsVersion, Option<&str>)>,
    source: InstallSource,
) -> Option<UserInstall> {
    if before.target.as_ref().is_some_and(|t| !t.status.is_final()) {
        return None;
    }
    let device = &before.device;
    device.platform?;
    let stored = device.os_version.as_ref()?;
    let (version, build, status) = match (running, installing) {
        (Some((version, build)), _) if version > stored => {
            (version, build, TargetStatus::Installed)
        }
        (_, Some((version, build))) if version > stored => {
            (version, build, TargetStatus::Installing)
        }
        _ => return None,
    };
    Some(UserInstall {
        device: device.clone(),
        version: version.clone(),
        build: build.filter(|b| !b.is_empty()).map(str::to_string),
        status,
        from_version: Some(stored.clone()),
        source,
    })
}

impl Services {
    /// Records a user install in the user-initiated operation of its build,
    /// creating the operation on first use. Returns the operation id, or
    /// `None` when the device changed operation meanwhile or the operation
    /// is still being created by a concurrent report (both logged).
    pub async fn record_user_install(&self, install: UserInstall) -> ServiceResult<Option<String>> {
        let Some(platform) = install.device.platform else {
            return Ok(None);
        };
        let build_or_version = install
            .build
            .clone()
            .unwrap_or_else(|| install.version.to_string());
        let key = user_initiated_key(platform, &build_or_version);

        let Some(operation) = self
            .user_initiated_operation(&key, &install, platform, &build_or_version)
            .await?
        else {
            return Ok(None);
        };
        let udid = install.device.udid.clone();
        if let Some(existing) = self
            .ports
            .operations
            .get_target(&operation.id, &udid)
            .await?
        {
            // Already recorded; an Installing target reaches Installed
            // through the usual report path because it is the device's
            // current target.
            tracing::debug!(operation_id = %operation.id, device_id = %udid, status = %existing.status, "user install already recorded");
            return Ok(Some(operation.id));
        }

        let assignment = self.user_install_assignment(&operation, &install, &build_or_version);
        let (outcomes, commit) = self.ports.operations.assign(vec![assignment]).await?;
        self.record_state_changes(&commit.state_changes).await?;
        if outcomes.first() != Some(&AssignOutcome::Assigned) {
            tracing::info!(operation_id = %operation.id, device_id = %udid, "user install not recorded: the device changed operation meanwhile");
            return Ok(None);
        }
        tracing::info!(operation_id = %operation.id, device_id = %udid, version = %install.version, status = %install.status, "user-initiated install recorded");
        Ok(Some(operation.id))
    }

    async fn user_initiated_operation(
        &self,
        key: &str,
        install: &UserInstall,
        platform: Platform,
        build_or_version: &str,
    ) -> ServiceResult<Option<Operation>> {
        let now = self.now();
        let operation_id = match self.ports.operations.lookup_idempotency_key(key).await? {
            Some(id) => id,
            None => {
                let id = self.ids.ulid(now);
                match self
                    .ports
                    .operations
                    .claim_idempotency_key(key, &id, now)
                    .await?
                {
                    Some(existing) => existing,
                    None => {
                        let operation = Operation {
                            id: id.clone(),
                            kind: OperationType::UserInitiated,
                            protocol: device_protocol(&install.device),
                            update: OperationUpdate {
                                name: format!("{} {}", platform.marketing_name(), install.version),
                                product_version: install.version.clone(),
                                platforms: vec![platform],
                                builds: install.build.iter().cloned().collect(),
                                release_date: None,
                                expires_at: None,
                            },
                            install: InstallSettings::InstallImmediately,
                            state: OperationState::Scheduled,
                            counts: StatusCounts::default(),
                            created_by: "system".into(),
                            created_at: now,
                            started_at: None,
                            finished_at: None,
                            cancelled_at: None,
                            group_ids: Vec::new(),
                        };
                        match self.ports.operations.insert_operation(&operation).await {
                            Ok(()) | Err(StoreError::Conflict(_)) => {}
                            Err(e) => return Err(e.into()),
                        }
                        self.ports
                            .events
                            .append(&[self.event(
                                &id,
                                None,
                                EventType::OperationCreated,
                                Actor::System,
                                json!({
                                    "created_by": "system",
                                    "reason": "a device installed a version that no running operation gives it",
                                    "build": build_or_version,
                                    "idempotency_key": key,
                                }),
                            )])
                            .await?;
                        id
                    }
                }
            }
        };
        match self.ports.operations.get_operation(&operation_id).await? {
            Some(operation) => Ok(Some(operation)),
            None => {
                // NOTE: the key is claimed before the operation is written,
                // so a concurrent report can see the key alone. This report
                // is then not recorded; the device's next report is.
                tracing::info!(operation_id = %operation_id, key, "user-initiated operation still being created; install not recorded");
                Ok(None)
            }
        }
    }

    fn user_install_assignment(
        &self,
        operation: &Operation,
        install: &UserInstall,
        build_or_version: &str,
    ) -> Assignment {
        let now = self.now();
        let device = &install.device;
        let target = Target {
            operation_id: operation.id.clone(),
            device_id: device.udid.clone(),
            protocol: device_protocol(device),
            platform: device.platform.unwrap_or(Platform::MacOs),
            status: install.status,
            detail: Some(match install.status {
                TargetStatus::Installing => "installing, started by the user".to_string(),
                _ => "installed by the user".to_string(),
            }),
            failures: 0,
            last_error: None,
            next_attempt_at: None,
            reported: true,
            target_version: install.version.clone(),
            target_build: build_or_version.to_string(),
            major_upgrade: install
                .from_version
                .as_ref()
                .is_some_and(|from| from.major() < install.version.major()),
            time_zone: None,
            zone_source: None,
            deadline_at: None,
            target_local_date_time: None,
            product_key: None,
            install_requested: false,
            last_command_uuid: None,
            device_failure_count: 0,
            expires_at: None,
            device_name: device.name.clone(),
            serial_number: device.serial_number.clone(),
            group_ids: Vec::new(),
            created_at: now,
            updated_at: now,
            revision: 0,
        };
        let details = json!({
            "from_version": install.from_version.as_ref().map(|v| v.to_string()),
            "to_version": install.version.to_string(),
            "build": install.build,
            "source": install.source.as_str(),
            "started_by": "user",
        });
        let progress = match install.status {
            TargetStatus::Installing => EventType::InstallationStarted,
            _ => EventType::InstallationCompleted,
        };
        let events = vec![
            self.event(
                &operation.id,
                Some(&device.udid),
                EventType::DeviceAdded,
                Actor::System,
                details.clone(),
            ),
            self.event(
                &operation.id,
                Some(&device.udid),
                progress,
                Actor::Device,
                details,
            ),
        ];
        Assignment {
            target,
            expected_current: device.current_operation_id.clone(),
            replaces: None,
            events,
            commands: Vec::new(),
        }
    }
}

fn device_protocol(device: &Device) -> Protocol {
    if device.ddm_active {
        Protocol::Ddm
    } else {
        Protocol::Mdm
    }
}
