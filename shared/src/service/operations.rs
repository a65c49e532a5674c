//! Creating, previewing, listing and cancelling operations.
//!
//! Creation resolves each device to its own build of the requested version,
//! its deadline time zone and its move out of an earlier operation, then
//! writes the targets in transactions of at most 100 devices. Each device's
//! move is conditional on the operation it was in when it was read, so two
//! creations racing for the same devices leave each device in exactly one
//! of them: the loser of a race re-reads the device and moves it again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;
use jiff::civil::DateTime;
use serde::{Deserialize, Serialize};

use super::mdm::{MdmInstruction, command_for_target};
use super::{FieldError, ServiceError, ServiceResult, Services};
use crate::catalog::{DeviceIdentity, ResolveError, UpgradeKind};
use crate::domain::deadline::{
    self, ZoneDeadline, ZoneSource, deadline_instant, parse_local_date_time, parse_time_zone,
    resolve_device_zone, target_local_date_time,
};
use crate::domain::reminders::{MAX_HOURS_BEFORE, MAX_REMINDERS_PER_ZONE, reminder_count};
use crate::domain::{
    Actor, Device, EventType, Group, InstallSettings, Operation, OperationState, OperationType,
    OperationUpdate, OsVersion, Protocol, Reminder, StatusCounts, Target, TargetStatus,
    TimeZoneRule,
};
use crate::ports::{
    AssignOutcome, Assignment, Change, EventFilter, Job, MAX_TRANSACTION_ITEMS, OperationFilter,
    Page, PageRequest, Schedule, StoreError, TargetFilter, TargetWrite,
};

/// Body of `POST /operations` and `POST /operations/preview`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateOperationRequest {
    pub update: Option<UpdateSelection>,
    pub protocol: Option<String>,
    pub targets: Option<TargetSelection>,
    /// Kept loose so that a missing or unknown `method` gets its own error.
    pub install: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UpdateSelection {
    pub product_version: Option<String>,
    /// Optional: when given, every device must resolve to this build.
    pub build: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TargetSelection {
    #[serde(default)]
    pub device_ids: Vec<String>,
    #[serde(default)]
    pub group_ids: Vec<String>,
}

/// A device the operation cannot take, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceIssue {
    pub device_id: String,
    pub code: &'static str,
    pub message: String,
}

/// A device that leaves an earlier operation for this one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceMove {
    pub device_id: String,
    pub from_operation_id: String,
    pub from_status: TargetStatus,
}

/// One device as the operation would take it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTarget {
    pub device_id: String,
    pub device_name: Option<String>,
    pub build: String,
    pub major_upgrade: bool,
    /// Obsolete: the device already runs the version or newer.
    pub status: TargetStatus,
    pub time_zone: Option<String>,
    pub zone_source: Option<ZoneSource>,
    pub deadline_at: Option<Timestamp>,
    pub target_local_date_time: Option<String>,
    pub moves_from: Option<String>,
    #[serde(skip)]
    device: Option<Device>,
    #[serde(skip)]
    groups: Vec<Group>,
    #[serde(skip)]
    replaces: Option<(String, u64)>,
    #[serde(skip)]
    local_date_time: Option<DateTime>,
    #[serde(skip)]
    expires_at: Option<Timestamp>,
    /// The status an import gave this device, if any.
    #[serde(skip)]
    imported_status: Option<TargetStatus>,
}

impl PlannedTarget {
    /// Returns when the update this device gets stops being signed, for the
    /// readiness check of the preview.
    pub fn update_expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }
}

/// The review of a create request: the body of `POST /operations/preview`
/// and the plan that creation carries out.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub update_name: String,
    pub product_version: String,
    pub protocol: Protocol,
    pub install: InstallSettings,
    pub targets: Vec<PlannedTarget>,
    /// Devices the operation cannot take over this protocol.
    pub incompatible: Vec<DeviceIssue>,
    /// Devices already installing in another operation: they stay there.
    pub not_moved: Vec<DeviceIssue>,
    /// Devices that would leave an earlier operation.
    pub moves: Vec<DeviceMove>,
    /// The deadline instant per time zone (enforce at a schedule only).
    pub deadlines: Vec<ZoneDeadline>,
    #[serde(skip)]
    group_ids: Vec<String>,
    #[serde(skip)]
    platforms: BTreeSet<crate::domain::Platform>,
    #[serde(skip)]
    release_date: Option<jiff::civil::Date>,
}

/// The result of `POST /operations`: the operation and the devices left out.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub operation: Operation,
    pub not_moved: Vec<DeviceIssue>,
    /// Whether the request repeated an `Idempotency-Key` already used.
    pub replayed: bool,
}

fn parse_protocol(value: &Option<String>, problems: &mut Vec<FieldError>) -> Option<Protocol> {
    match value.as_deref() {
        None => {
            problems.push(FieldError::new(
                "protocol",
                "missing",
                "protocol is required: \"ddm\" or \"mdm\"",
            ));
            None
        }
        Some(text) => match text.parse() {
            Ok(protocol) => Some(protocol),
            Err(_) => {
                problems.push(
                    FieldError::new(
                        "protocol",
                        "invalid",
                        format!("unknown protocol {text:?}: expected \"ddm\" or \"mdm\""),
                    )
                    .with_value(text),
                );
                None
            }
        },
    }
}

/// Parsed install settings, with the zone already looked up.
struct InstallPlan {
    settings: InstallSettings,
    local: Option<DateTime>,
    named_zone: Option<(String, jiff::tz::TimeZone)>,
}

fn parse_install(
    value: &Option<serde_json::Value>,
    problems: &mut Vec<FieldError>,
) -> Option<InstallPlan> {
    let Some(value) = value else {
        problems.push(FieldError::new(
            "install",
            "missing",
            "install is required: {\"method\": \"enforce_at_schedule\", ...} or {\"method\": \"install_immediately\"}",
        ));
        return None;
    };
    let Some(object) = value.as_object() else {
        problems.push(
            FieldError::new(
                "install",
                "invalid",
                "install must be an object with a \"method\"",
            )
            .with_value(value),
        );
        return None;
    };
    let method = match object.get("method") {
        None => {
            problems.push(FieldError::new(
                "install.method",
                "missing",
                "install.method is required: \"enforce_at_schedule\" or \"install_immediately\"",
            ));
            return None;
        }
        Some(serde_json::Value::String(method)) => method.as_str(),
        Some(other) => {
            problems.push(
                FieldError::new(
                    "install.method",
                    "invalid",
                    "install.method must be a string",
                )
                .with_value(other),
            );
            return None;
        }
    };
    match method {
        "install_immediately" => Some(InstallPlan {
            settings: InstallSettings::InstallImmediately,
            local: None,
            named_zone: None,
        }),
        "enforce_at_schedule" => parse_schedule(object, problems),
        other => {
            problems.push(
                FieldError::new(
                    "install.method",
                    "invalid",
                    format!("unknown install method {other:?}: expected \"enforce_at_schedule\" or \"install_immediately\""),
                )
                .with_value(other),
            );
            None
        }
    }
}

fn parse_schedule(
    object: &serde_json::Map<String, serde_json::Value>,
    problems: &mut Vec<FieldError>,
) -> Option<InstallPlan> {
    let before = problems.len();
    let local = match object.get("local_date_time").and_then(|v| v.as_str()) {
        Some(text) => match parse_local_date_time(text) {
            Ok(local) => Some(local),
            Err(e) => {
                problems.push(
                    FieldError::new("install.local_date_time", "invalid", e.to_string())
                        .with_value(text),
                );
                None
            }
        },
        None => {
            problems.push(FieldError::new(
                "install.local_date_time",
                "missing",
                "install.local_date_time is required for enforce_at_schedule, as yyyy-mm-ddThh:mm:ss",
            ));
            None
        }
    };
    let zone_text = object
        .get("time_zone")
        .and_then(|v| v.as_str())
        .unwrap_or("device_local");
    let (rule, named_zone) = if zone_text == "device_local" {
        (TimeZoneRule::DeviceLocal, None)
    } else {
        match parse_time_zone(zone_text) {
            Ok(zone) => (
                TimeZoneRule::Named(zone_text.to_string()),
                Some((zone_text.to_string(), zone)),
            ),
            Err(e) => {
                problems.push(
                    FieldError::new("install.time_zone", "unknown_time_zone", e.to_string())
                        .with_value(zone_text),
                );
                (TimeZoneRule::DeviceLocal, None)
            }
        }
    };
    let add_to_catalog = match object.get("add_to_catalog") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => {
            problems.push(
                FieldError::new(
                    "install.add_to_catalog",
                    "invalid",
                    "add_to_catalog must be true or false",
                )
                .with_value(other),
            );
            false
        }
    };
    let reminders: Vec<Reminder> = match object.get("reminders") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(value) => match serde_json::from_value::<Vec<Reminder>>(value.clone()) {
            Ok(reminders) => {
                for (i, reminder) in reminders.iter().enumerate() {
                    if reminder.hours_before == 0 {
                        problems.push(FieldError::new(
                            format!("install.reminders[{i}].hours_before"),
                            "invalid",
                            "hours_before must be at least 1",
                        ));
                    }
                    if reminder.hours_before > MAX_HOURS_BEFORE {
                        problems.push(
                            FieldError::new(
                                format!("install.reminders[{i}].hours_before"),
                                "invalid",
                                format!("hours_before {} is more than the maximum of {MAX_HOURS_BEFORE} (90 days); pick a shorter lead time", reminder.hours_before),
                            )
                            .with_value(reminder.hours_before),
                        );
                    }
                }
                if reminder_count(&reminders) > MAX_REMINDERS_PER_ZONE {
                    problems.push(FieldError::new(
                        "install.reminders",
                        "too_many_reminders",
                        format!("the reminders name {} reminder times, more than the maximum of {MAX_REMINDERS_PER_ZONE}; use a longer repeat_every_hours or a shorter hours_before", reminder_count(&reminders)),
                    ));
                }
                reminders
            }
            Err(e) => {
                problems.push(
                    FieldError::new(
                        "install.reminders",
                        "invalid",
                        format!("reminders must be a list of {{\"hours_before\": N, \"repeat_every_hours\": M}}: {e}"),
                    )
                    .with_value(value),
                );
                Vec::new()
            }
        },
    };
    if problems.len() > before {
        return None;
    }
    let local = local?;
    Some(InstallPlan {
        settings: InstallSettings::EnforceAtSchedule {
            local_date_time: local,
            time_zone: rule,
            add_to_catalog,
            reminders,
        },
        local: Some(local),
        named_zone,
    })
}

fn identity(device: &Device) -> Option<DeviceIdentity<'_>> {
    Some(DeviceIdentity {
        model: device.model.as_deref()?,
        software_update_device_id: device.software_update_device_id.as_deref(),
        platform: device.platform?,
        os_version: device.os_version.as_ref()?,
        build: device.build_version.as_deref(),
    })
}

impl Services {
    /// Resolves a create request into a plan without writing anything.
    /// Request-level problems (bad fields, unknown devices or groups, an
    /// update not in the catalog) are errors; device-level ones are listed.
    pub async fn plan_operation(&self, request: &CreateOperationRequest) -> ServiceResult<Plan> {
        let now = self.now();
        let mut problems = Vec::new();
        let protocol = parse_protocol(&request.protocol, &mut problems);
        let install = parse_install(&request.install, &mut problems);

        let version_text = request
            .update
            .as_ref()
            .and_then(|u| u.product_version.clone());
        let version: Option<OsVersion> = match &version_text {
            None => {
                problems.push(FieldError::new(
                    "update.product_version",
                    "missing",
                    "update.product_version is required, such as \"26.6.2\"",
                ));
                None
            }
            Some(text) => match text.parse() {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.push(
                        FieldError::new("update.product_version", "invalid", format!("{e}"))
                            .with_value(text),
                    );
                    None
                }
            },
        };
        let wanted_build = request.update.as_ref().and_then(|u| u.build.clone());

        let selection = request.targets.clone().unwrap_or_default();
        if selection.device_ids.is_empty() && selection.group_ids.is_empty() {
            problems.push(FieldError::new(
                "targets",
                "missing",
                "targets needs at least one device_id or group_id",
            ));
        }
        let (devices, groups_by_device, group_ids) =
            self.resolve_targets(&selection, &mut problems).await?;

        let (Some(protocol), Some(install), Some(version)) = (protocol, install, version) else {
            return Err(ServiceError::invalid(problems));
        };
        if !problems.is_empty() {
            return Err(ServiceError::invalid(problems));
        }

        let catalog = self.catalog();
        let mut plan = Plan {
            update_name: String::new(),
            product_version: version.to_string(),
            protocol,
            install: install.settings.clone(),
            targets: Vec::new(),
            incompatible: Vec::new(),
            not_moved: Vec::new(),
            moves: Vec::new(),
            deadlines: Vec::new(),
            group_ids,
            platforms: BTreeSet::new(),
            release_date: None,
        };
        let mut not_in_catalog = true;
        let mut expired: Option<(String, jiff::civil::Date)> = None;

        for device in devices {
            if let Some(issue) = device.incompatibility(protocol) {
                let (code, message) = match issue {
                    crate::domain::Incompatibility::UnsupervisedMac(m) => ("unsupervised_mac", m),
                    crate::domain::Incompatibility::DdmUnsupported(m) => {
                        ("protocol_unsupported", m)
                    }
                    crate::domain::Incompatibility::InventoryIncomplete(m) => {
                        ("inventory_incomplete", m)
                    }
                };
                plan.incompatible.push(DeviceIssue {
                    device_id: device.udid.clone(),
                    code,
                    message,
                });
                continue;
            }
            let Some(id) = identity(&device) else {
                plan.incompatible.push(DeviceIssue {
                    device_id: device.udid.clone(),
                    code: "inventory_incomplete",
                    message: format!("device {} has not reported its model yet", device.udid),
                });
                continue;
            };
            let (update, status, major) = match catalog.resolve(&version, &id, now) {
                Ok(deployable) => {
                    not_in_catalog = false;
                    let major = deployable.upgrade == UpgradeKind::Major;
                    (deployable.update.clone(), TargetStatus::Pending, major)
                }
                Err(ResolveError::NotNewer { .. }) => {
                    not_in_catalog = false;
                    let listed = catalog
                        .listed_updates(&id)
                        .into_iter()
                        .find(|u| {
                            u.product_version == version && !u.background_security_improvement
                        })
                        .cloned();
                    match listed {
                        Some(update) => (update, TargetStatus::Obsolete, false),
                        None => {
                            plan.incompatible.push(DeviceIssue {
                                device_id: device.udid.clone(),
                                code: "update_not_applicable",
                                message: format!(
                                    "{} {version} is not offered for model {} (device {})",
                                    id.platform.marketing_name(),
                                    id.model,
                                    device.udid
                                ),
                            });
                            continue;
                        }
                    }
                }
                Err(ResolveError::Expired {
                    build, expired_on, ..
                }) => {
                    not_in_catalog = false;
                    expired = Some((build, expired_on));
                    continue;
                }
                Err(ResolveError::NotInCatalog { .. }) => continue,
                Err(other) => {
                    not_in_catalog = false;
                    plan.incompatible.push(DeviceIssue {
                        device_id: device.udid.clone(),
                        code: "update_not_applicable",
                        message: format!("device {}: {other}", device.udid),
                    });
                    continue;
                }
            };
            if let Some(build) = &wanted_build
                && &update.build != build
            {
                plan.incompatible.push(DeviceIssue {
                    device_id: device.udid.clone(),
                    code: "build_mismatch",
                    message: format!(
                        "device {} gets build {} of {version}, not the requested build {build}",
                        device.udid, update.build
                    ),
                });
                continue;
            }
            plan.platforms.insert(id.platform);
            if plan.update_name.is_empty() {
                plan.update_name = format!("{} {}", id.platform.marketing_name(), version);
            }
            plan.release_date = match plan.release_date {
                Some(d) if d <= update.release_date => Some(d),
                _ => Some(update.release_date),
            };

            let groups = groups_by_device
                .get(&device.udid)
                .cloned()
                .unwrap_or_default();
            let planned = self.plan_target(
                &device,
                groups,
                &update.build,
                update.expires_at(),
                major,
                status,
                &install,
                protocol,
                now,
            )?;
            let planned = match planned {
                Ok(planned) => planned,
                Err(issue) => {
                    problems.push(issue);
                    continue;
                }
            };
            let mut planned = planned;
            match self.current_target_of(&device).await? {
                CurrentTarget::None => {}
                CurrentTarget::Installing(operation_id) => {
                    plan.not_moved.push(DeviceIssue {
                        device_id: device.udid.clone(),
                        code: "installing_elsewhere",
                        message: format!(
                            "device {} is installing in operation {operation_id} and cannot move until it finishes",
                            device.udid
                        ),
                    });
                    continue;
                }
                CurrentTarget::Movable {
                    operation_id,
                    revision,
                    status,
                } => {
                    plan.moves.push(DeviceMove {
                        device_id: device.udid.clone(),
                        from_operation_id: operation_id.clone(),
                        from_status: status,
                    });
                    planned.moves_from = Some(operation_id.clone());
                    planned.replaces = Some((operation_id, revision));
                }
            }
            plan.targets.push(planned);
        }

        if let Some((build, expired_on)) = expired
            && plan.targets.is_empty()
        {
            problems.push(
                FieldError::new(
                    "update.product_version",
                    "update_expired",
                    format!("{version} (build {build}) expired on {expired_on}: Apple no longer signs it; pick a newer update"),
                )
                .with_value(version.to_string()),
            );
        } else if not_in_catalog && plan.incompatible.is_empty() {
            problems.push(
                FieldError::new(
                    "update.product_version",
                    "update_not_in_catalog",
                    format!("version {version} is not in the update catalog for the selected devices; GET /api/v1/updates lists what can be deployed"),
                )
                .with_value(version.to_string()),
            );
        }
        if !problems.is_empty() {
            return Err(ServiceError::invalid(problems));
        }
        if plan.update_name.is_empty() {
            plan.update_name = format!("OS {version}");
        }
        plan.deadlines = deadlines_of(&plan.targets);
        Ok(plan)
    }

    async fn resolve_targets(
        &self,
        selection: &TargetSelection,
        problems: &mut Vec<FieldError>,
    ) -> ServiceResult<(Vec<Device>, HashMap<String, Vec<Group>>, Vec<String>)> {
        let mut udids: Vec<String> = Vec::new();
        let mut group_ids = Vec::new();
        for (i, group_id) in selection.group_ids.iter().enumerate() {
            match self.ports.groups.get_group(group_id).await? {
                Some(_) => {
                    group_ids.push(group_id.clone());
                    udids.extend(self.ports.groups.members(group_id).await?);
                }
                None => problems.push(
                    FieldError::new(
                        format!("targets.group_ids[{i}]"),
                        "unknown_group",
                        format!("device group {group_id:?} does not exist"),
                    )
                    .with_value(group_id),
                ),
            }
        }
        let direct = self
            .ports
            .devices
            .get_devices(&selection.device_ids)
            .await?;
        for (i, udid) in selection.device_ids.iter().enumerate() {
            if !direct.iter().any(|d| &d.udid == udid) {
                problems.push(
                    FieldError::new(
                        format!("targets.device_ids[{i}]"),
                        "unknown_device",
                        format!("device {udid:?} is not enrolled"),
                    )
                    .with_value(udid),
                );
            }
        }
        let mut seen: BTreeSet<String> = direct.iter().map(|d| d.udid.clone()).collect();
        udids.retain(|u| seen.insert(u.clone()));
        let mut devices = direct;
        devices.extend(self.ports.devices.get_devices(&udids).await?);
        devices.sort_by(|a, b| a.udid.cmp(&b.udid));
        devices.dedup_by(|a, b| a.udid == b.udid);
        let all: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
        let mut groups_by_device: HashMap<String, Vec<Group>> = HashMap::new();
        for chunk in all.chunks(500) {
            for (udid, group) in self.ports.groups.groups_of(chunk).await? {
                groups_by_device.entry(udid).or_default().push(group);
            }
        }
        Ok((devices, groups_by_device, group_ids))
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_target(
        &self,
        device: &Device,
        groups: Vec<Group>,
        build: &str,
        expires_at: Timestamp,
        major_upgrade: bool,
        status: TargetStatus,
        install: &InstallPlan,
        protocol: Protocol,
        now: Timestamp,
    ) -> ServiceResult<Result<PlannedTarget, FieldError>> {
        let mut planned = PlannedTarget {
            device_id: device.udid.clone(),
            device_name: device.name.clone(),
            build: build.to_string(),
            major_upgrade,
            status,
            time_zone: None,
            zone_source: None,
            deadline_at: None,
            target_local_date_time: None,
            moves_from: None,
            device: Some(device.clone()),
            groups,
            replaces: None,
            local_date_time: None,
            expires_at: Some(expires_at),
            imported_status: None,
        };
        match (&install.settings, install.local) {
            (InstallSettings::InstallImmediately, _) => {
                if protocol == Protocol::Ddm {
                    let local = deadline::immediate_target_local_date_time(now);
                    planned.local_date_time = Some(local);
                    planned.target_local_date_time =
                        Some(deadline::format_target_local_date_time(local));
                }
            }
            (InstallSettings::EnforceAtSchedule { .. }, Some(local)) => {
                let group_zone = planned.groups.iter().find_map(|g| g.time_zone.clone());
                let (device_zone_name, source) = resolve_device_zone(
                    device.time_zone.as_deref(),
                    group_zone.as_deref(),
                    &self.config.default_time_zone,
                );
                let device_zone = match parse_time_zone(device_zone_name) {
                    Ok(zone) => zone,
                    Err(e) => {
                        return Ok(Err(FieldError::new(
                            "targets",
                            "unknown_time_zone",
                            format!("device {}: {e}", device.udid),
                        )
                        .with_value(device_zone_name)));
                    }
                };
                let (zone_name, zone_source, instant) = match &install.named_zone {
                    Some((name, zone)) => (
                        name.clone(),
                        ZoneSource::Operation,
                        deadline_instant(local, zone),
                    ),
                    None => (
                        device_zone_name.to_string(),
                        source,
                        deadline_instant(local, &device_zone),
                    ),
                };
                if status != TargetStatus::Obsolete && instant <= now {
                    return Ok(Err(FieldError::new(
                        "install.local_date_time",
                        "deadline_in_past",
                        format!(
                            "the deadline {local} in time zone {zone_name} ({instant}) is already past for device {}; pick a later date and time",
                            device.udid
                        ),
                    )
                    .with_value(local.to_string())));
                }
                planned.time_zone = Some(zone_name);
                planned.zone_source = Some(zone_source);
                planned.deadline_at = Some(instant);
                if protocol == Protocol::Ddm {
                    let rule_zone = install.named_zone.as_ref().map(|(_, zone)| zone);
                    let target_local = target_local_date_time(local, rule_zone, &device_zone);
                    planned.local_date_time = Some(target_local);
                    planned.target_local_date_time =
                        Some(deadline::format_target_local_date_time(target_local));
                }
            }
            (InstallSettings::EnforceAtSchedule { .. }, None) => {}
        }
        Ok(Ok(planned))
    }

    async fn current_target_of(&self, device: &Device) -> ServiceResult<CurrentTarget> {
        let Some(operation_id) = &device.current_operation_id else {
            return Ok(CurrentTarget::None);
        };
        match self
            .ports
            .operations
            .get_target(operation_id, &device.udid)
            .await?
        {
            Some(target) if target.status == TargetStatus::Installing => {
                Ok(CurrentTarget::Installing(operation_id.clone()))
            }
            Some(target) if !target.status.is_final() => Ok(CurrentTarget::Movable {
                operation_id: operation_id.clone(),
                revision: target.revision,
                status: target.status,
            }),
            _ => Ok(CurrentTarget::None),
        }
    }

    /// Creates an operation from a request. With an idempotency key, a
    /// repeated request returns the operation the first one created.
    pub async fn create_operation(
        &self,
        request: &CreateOperationRequest,
        idempotency_key: Option<&str>,
        created_by: &str,
    ) -> ServiceResult<Created> {
        let origin = Origin {
            kind: OperationType::AdminInitiated,
            statuses: BTreeMap::new(),
            details: serde_json::json!({}),
        };
        self.create_operation_from(request, idempotency_key, created_by, &origin)
            .await
    }

    /// Creates an operation of `origin.kind`: the planning, checks and
    /// writes of [`Services::create_operation`], with the imported statuses
    /// applied to the planned targets.
    pub(super) async fn create_operation_from(
        &self,
        request: &CreateOperationRequest,
        idempotency_key: Option<&str>,
        created_by: &str,
        origin: &Origin,
    ) -> ServiceResult<Created> {
        let now = self.now();
        if let Some(key) = idempotency_key
            && let Some(existing) = self.replayed_operation(key).await?
        {
            return Ok(Created {
                operation: existing,
                not_moved: Vec::new(),
                replayed: true,
            });
        }
        let mut plan = self.plan_operation(request).await?;
        for target in &mut plan.targets {
            // A device already on the version stays Obsolete unless the
            // import reports that it installed the update there.
            if let Some(status) = origin.statuses.get(&target.device_id)
                && (target.status != TargetStatus::Obsolete || *status == TargetStatus::Installed)
            {
                target.status = *status;
                target.imported_status = Some(*status);
            }
        }
        if !plan.incompatible.is_empty() {
            let details = plan
                .incompatible
                .iter()
                .map(|issue| {
                    FieldError::new("targets", issue.code, issue.message.clone())
                        .with_value(&issue.device_id)
                })
                .collect();
            return Err(ServiceError::invalid(details));
        }
        if plan.targets.is_empty() {
            return Err(ServiceError::invalid_field(
                "targets",
                "no_targets",
                "no selected device can take this operation; see the preview for each device's reason",
            ));
        }

        let operation_id = self.ids.ulid(now);
        if let Some(key) = idempotency_key
            && let Some(existing) = self
                .ports
                .operations
                .claim_idempotency_key(key, &operation_id, now)
                .await?
        {
            let operation = self.operation_for_key(key, &existing).await?;
            return Ok(Created {
                operation,
                not_moved: Vec::new(),
                replayed: true,
            });
        }

        let mut builds: Vec<String> = plan.targets.iter().map(|t| t.build.clone()).collect();
        builds.sort();
        builds.dedup();
        let expires_at = plan.targets.iter().filter_map(|t| t.expires_at).min();
        let operation = Operation {
            id: operation_id.clone(),
            kind: origin.kind,
            protocol: plan.protocol,
            update: OperationUpdate {
                name: plan.update_name.clone(),
                product_version: plan.product_version.parse().map_err(
                    |e: crate::domain::InvalidOsVersion| {
                        ServiceError::invalid_field(
                            "update.product_version",
                            "invalid",
                            e.to_string(),
                        )
                    },
                )?,
                platforms: plan.platforms.iter().copied().collect(),
                builds,
                release_date: plan.release_date,
                expires_at,
            },
            install: plan.install.clone(),
            state: OperationState::Scheduled,
            counts: StatusCounts::default(),
            created_by: created_by.to_string(),
            created_at: now,
            started_at: None,
            finished_at: None,
            cancelled_at: None,
            group_ids: plan.group_ids.clone(),
        };
        self.ports.operations.insert_operation(&operation).await?;
        self.remember_visibility(&operation);
        self.ports
            .events
            .append(&[self.event(
                &operation_id,
                None,
                EventType::OperationCreated,
                Actor::Administrator,
                with_details(
                    serde_json::json!({
                        "created_by": created_by,
                        "type": operation.kind,
                        "update": operation.update.name,
                        "protocol": operation.protocol,
                        "install": operation.install,
                        "targets": plan.targets.len(),
                        "moved_from_other_operations": plan.moves.len(),
                        "not_moved": plan.not_moved.len(),
                    }),
                    &origin.details,
                ),
            )])
            .await?;

        let mut not_moved = plan.not_moved.clone();
        let mut pushed = Vec::new();
        for chunk in plan.targets.chunks(MAX_TRANSACTION_ITEMS) {
            let (skipped, devices) = self.assign_chunk(&operation, chunk.to_vec()).await?;
            not_moved.extend(skipped);
            pushed.extend(devices);
        }
        self.schedule_operation(&operation, &plan).await?;
        for chunk in pushed.chunks(1000) {
            self.ports.push.push(chunk).await?;
        }
        tracing::info!(
            operation_id = %operation_id,
            count = plan.targets.len(),
            protocol = %operation.protocol,
            "operation created"
        );
        Ok(Created {
            operation: self.get_operation(&operation_id).await?,
            not_moved,
            replayed: false,
        })
    }

    async fn replayed_operation(&self, key: &str) -> ServiceResult<Option<Operation>> {
        match self.ports.operations.lookup_idempotency_key(key).await? {
            Some(operation_id) => self.operation_for_key(key, &operation_id).await.map(Some),
            None => Ok(None),
        }
    }

    /// Returns the operation an idempotency key was claimed for. The key is
    /// claimed before the operation is written, so a concurrent repeat can
    /// find the key without the operation. That repeat gets a 409 telling
    /// the client to retry, because the first request is still in progress.
    ///
    /// NOTE: a creation that fails between the claim and the insert leaves
    /// the key pointing at no operation, and every repeat gets this 409.
    async fn operation_for_key(&self, key: &str, operation_id: &str) -> ServiceResult<Operation> {
        match self.ports.operations.get_operation(operation_id).await? {
            Some(operation) => Ok(operation),
            None => Err(ServiceError::Conflict {
                code: "idempotency_key_in_use",
                message: format!(
                    "a request with Idempotency-Key {key:?} is still creating operation {operation_id}; retry in a moment"
                ),
            }),
        }
    }

    /// Writes one chunk of targets, re-planning devices whose conditional
    /// write lost a race. Returns devices that could not move and devices to wake.
    async fn assign_chunk(
        &self,
        operation: &Operation,
        mut planned: Vec<PlannedTarget>,
    ) -> ServiceResult<(Vec<DeviceIssue>, Vec<Device>)> {
        let mut skipped = Vec::new();
        let mut woken = Vec::new();
        for attempt in 0..5 {
            let now = self.now();
            let assignments: Vec<Assignment> = planned
                .iter()
                .map(|p| self.assignment(operation, p, now))
                .collect();
            let (outcomes, commit) = self.ports.operations.assign(assignments).await?;
            self.record_state_changes(&commit.state_changes).await?;
            let mut retry = Vec::new();
            for (p, outcome) in planned.into_iter().zip(outcomes) {
                match outcome {
                    AssignOutcome::Assigned => {
                        if let Some(device) = p.device
                            && !p.status.is_final()
                        {
                            woken.push(device);
                        }
                    }
                    AssignOutcome::Conflict => retry.push(p),
                }
            }
            if retry.is_empty() {
                return Ok((skipped, woken));
            }
            tracing::debug!(operation_id = %operation.id, count = retry.len(), attempt, "re-planning devices after a conflicting write");
            planned = Vec::new();
            for mut p in retry {
                let Some(device) = self.ports.devices.get_device(&p.device_id).await? else {
                    continue;
                };
                match self.current_target_of(&device).await? {
                    CurrentTarget::None => {
                        p.replaces = None;
                        p.moves_from = None;
                    }
                    CurrentTarget::Installing(operation_id) => {
                        skipped.push(DeviceIssue {
                            device_id: device.udid.clone(),
                            code: "installing_elsewhere",
                            message: format!("device {} started installing in operation {operation_id} and stays there", device.udid),
                        });
                        continue;
                    }
                    CurrentTarget::Movable {
                        operation_id,
                        revision,
                        ..
                    } => {
                        if operation_id == operation.id {
                            continue;
                        }
                        p.moves_from = Some(operation_id.clone());
                        p.replaces = Some((operation_id, revision));
                    }
                }
                p.device = Some(device);
                planned.push(p);
            }
            if planned.is_empty() {
                return Ok((skipped, woken));
            }
        }
        Err(ServiceError::Conflict {
            code: "busy",
            message: format!(
                "{} devices kept changing while operation {} was created; create it again for them",
                planned.len(),
                operation.id
            ),
        })
    }

    fn assignment(&self, operation: &Operation, p: &PlannedTarget, now: Timestamp) -> Assignment {
        let device = p.device.as_ref();
        let target = Target {
            operation_id: operation.id.clone(),
            device_id: p.device_id.clone(),
            protocol: operation.protocol,
            platform: device
                .and_then(|d| d.platform)
                .unwrap_or(crate::domain::Platform::MacOs),
            status: p.status,
            detail: None,
            failures: 0,
            last_error: None,
            next_attempt_at: None,
            reported: false,
            target_version: operation.update.product_version.clone(),
            target_build: p.build.clone(),
            major_upgrade: p.major_upgrade,
            time_zone: p.time_zone.clone(),
            zone_source: p.zone_source,
            deadline_at: p.deadline_at,
            target_local_date_time: p.local_date_time,
            product_key: None,
            install_requested: false,
            last_command_uuid: None,
            device_failure_count: 0,
            expires_at: p.expires_at,
            device_name: p.device_name.clone(),
            serial_number: device.and_then(|d| d.serial_number.clone()),
            group_ids: p.groups.iter().map(|g| g.id.clone()).collect(),
            created_at: now,
            updated_at: now,
            revision: 0,
        };
        let mut events = Vec::new();
        if let Some((from, _)) = &p.replaces {
            let details =
                serde_json::json!({ "from_operation_id": from, "to_operation_id": operation.id });
            events.push(self.event(
                from,
                Some(&p.device_id),
                EventType::DeviceMigration,
                Actor::Administrator,
                details.clone(),
            ));
            events.push(self.event(
                &operation.id,
                Some(&p.device_id),
                EventType::DeviceMigration,
                Actor::Administrator,
                details,
            ));
        }
        let added = serde_json::json!({
            "imported_status": p.imported_status,
            "build": p.build,
            "time_zone": p.time_zone,
            "zone_source": p.zone_source,
            "deadline_at": p.deadline_at,
            "target_local_date_time": p.target_local_date_time,
        });
        events.push(self.event(
            &operation.id,
            Some(&p.device_id),
            EventType::DeviceAdded,
            Actor::Administrator,
            added,
        ));
        let mut commands = Vec::new();
        let mut target = target;
        if let Some(status) = p.imported_status {
            target.detail = Some(format!("imported as {status}"));
        }
        if p.imported_status.is_some_and(|s| s.is_final()) {
            // An imported final status needs no instruction to the device.
        } else if p.status == TargetStatus::Obsolete {
            let current = device
                .and_then(|d| d.os_version.as_ref())
                .map(|v| v.to_string());
            events.push(self.event(
                &operation.id,
                Some(&p.device_id),
                EventType::Obsolete,
                Actor::System,
                serde_json::json!({ "current_version": current, "reason": "device already runs the target version or newer" }),
            ));
        } else {
            let instruction = match (operation.protocol, &operation.install) {
                (Protocol::Ddm, _) => MdmInstruction::SyncDeclarations,
                (Protocol::Mdm, InstallSettings::InstallImmediately) => MdmInstruction::InstallNow,
                (Protocol::Mdm, InstallSettings::EnforceAtSchedule { add_to_catalog, .. }) => {
                    MdmInstruction::Download {
                        add_to_catalog: *add_to_catalog,
                    }
                }
            };
            if let Some(device) = device
                && let Some(command) =
                    command_for_target(self, device, &mut target, instruction, now)
            {
                events.push(self.event(
                    &operation.id,
                    Some(&p.device_id),
                    EventType::CommandSent,
                    Actor::System,
                    serde_json::json!({ "command_uuid": command.uuid, "request_type": command.request_type, "queued": true }),
                ));
                commands.push(command);
            }
        }
        Assignment {
            target,
            expected_current: device.and_then(|d| d.current_operation_id.clone()),
            replaces: p.replaces.clone(),
            events,
            commands,
        }
    }

    async fn schedule_operation(&self, operation: &Operation, plan: &Plan) -> ServiceResult<()> {
        if operation.protocol == Protocol::Mdm
            && matches!(operation.install, InstallSettings::EnforceAtSchedule { .. })
        {
            for deadline in &plan.deadlines {
                self.ports
                    .scheduler
                    .schedule(&Schedule {
                        id: format!("deadline:{}:{}", operation.id, deadline.zone_name),
                        due_at: deadline.instant,
                        job: Job::MdmDeadline {
                            operation_id: operation.id.clone(),
                            time_zone: deadline.zone_name.clone(),
                        },
                    })
                    .await?;
            }
        }
        self.schedule_reminders(operation, &plan.deadlines).await?;
        let expiries: BTreeSet<Timestamp> =
            plan.targets.iter().filter_map(|t| t.expires_at).collect();
        for expires_at in expiries {
            self.ports
                .scheduler
                .schedule(&Schedule {
                    id: format!("expiry:{}:{}", operation.id, expires_at.as_second()),
                    due_at: expires_at,
                    job: Job::UpdateExpiry {
                        operation_id: operation.id.clone(),
                    },
                })
                .await?;
        }
        Ok(())
    }

    pub async fn get_operation(&self, id: &str) -> ServiceResult<Operation> {
        self.ports
            .operations
            .get_operation(id)
            .await?
            .ok_or_else(|| ServiceError::not_found("operation", id))
    }

    pub async fn list_operations(
        &self,
        filter: &OperationFilter,
        page: &PageRequest,
    ) -> ServiceResult<Page<Operation>> {
        Ok(self.ports.operations.list_operations(filter, page).await?)
    }

    pub async fn list_targets(
        &self,
        operation_id: &str,
        filter: &TargetFilter,
        page: &PageRequest,
    ) -> ServiceResult<Page<Target>> {
        self.get_operation(operation_id).await?;
        Ok(self
            .ports
            .operations
            .list_targets(operation_id, filter, page)
            .await?)
    }

    pub async fn list_events(
        &self,
        operation_id: &str,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> ServiceResult<Page<crate::domain::Event>> {
        self.get_operation(operation_id).await?;
        Ok(self
            .ports
            .events
            .list_events(operation_id, filter, self.now(), page)
            .await?)
    }

    /// Cancels a scheduled or in-progress DDM operation: devices not yet
    /// installing become Cancelled and lose the declaration; installing
    /// and installed devices keep going.
    pub async fn cancel_operation(&self, operation_id: &str) -> ServiceResult<Operation> {
        let operation = self.get_operation(operation_id).await?;
        if let Some(reason) = operation.cancel_refusal() {
            return Err(ServiceError::Conflict {
                code: "cannot_cancel",
                message: format!("operation {operation_id} cannot be cancelled: {reason}"),
            });
        }
        let now = self.now();
        self.ports
            .events
            .append(&[self.event(
                operation_id,
                None,
                EventType::OperationCancellationRequested,
                Actor::Administrator,
                serde_json::json!({ "state": operation.state }),
            )])
            .await?;
        match self
            .ports
            .operations
            .mark_cancelled(operation_id, now)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(message)) => {
                return Err(ServiceError::Conflict {
                    code: "cannot_cancel",
                    message,
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.ports
            .scheduler
            .cancel_operation_schedules(operation_id)
            .await?;

        let mut cursor = None;
        let mut cancelled = 0usize;
        let mut kept = 0usize;
        let mut woken = Vec::new();
        loop {
            let page = self
                .ports
                .operations
                .list_targets(
                    operation_id,
                    &TargetFilter {
                        active_only: true,
                        ..Default::default()
                    },
                    &PageRequest {
                        limit: 500,
                        cursor: cursor.clone(),
                    },
                )
                .await?;
            for target in page.items {
                if target.status == TargetStatus::Installing {
                    kept += 1;
                    continue;
                }
                if let Some(device) = self.cancel_target(target).await? {
                    cancelled += 1;
                    woken.push(device);
                }
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        for chunk in woken.chunks(1000) {
            self.ports.push.push(chunk).await?;
        }
        self.ports
            .events
            .append(&[self.event(
                operation_id,
                None,
                EventType::OperationCancelled,
                Actor::Administrator,
                serde_json::json!({ "cancelled_devices": cancelled, "still_installing": kept }),
            )])
            .await?;
        tracing::info!(operation_id = %operation_id, count = cancelled, "operation cancelled");
        self.get_operation(operation_id).await
    }

    /// Moves one target to Cancelled and frees its device; returns the device
    /// to wake so it fetches its reduced declaration set.
    async fn cancel_target(&self, target: Target) -> ServiceResult<Option<Device>> {
        let mut target = target;
        for _ in 0..5 {
            let now = self.now();
            let outcome = crate::domain::status::apply(
                &target.progress(),
                &crate::domain::Signal::Cancel,
                &self.config.retry_policy,
                now,
            );
            let Ok(crate::domain::Outcome::Moved(change)) = outcome else {
                return Ok(None);
            };
            let Some(mut device) = self.ports.devices.get_device(&target.device_id).await? else {
                return Ok(None);
            };
            let previous_status = target.status;
            let revision = target.revision;
            let device_revision = device.revision;
            target.status = change.to;
            target.updated_at = now;
            target.detail = Some("operation cancelled".into());
            let mut events = vec![self.event(
                &target.operation_id,
                Some(&target.device_id),
                EventType::Cancelled,
                Actor::Administrator,
                serde_json::json!({ "from": previous_status }),
            )];
            if target.protocol == Protocol::Ddm {
                events.push(self.event(
                    &target.operation_id,
                    Some(&target.device_id),
                    EventType::DeclarationsWithdrawn,
                    Actor::System,
                    serde_json::json!({ "declaration": super::ddm::enforcement_identifier(&target.operation_id) }),
                ));
            }
            let mut commands = Vec::new();
            if device.current_operation_id.as_deref() == Some(target.operation_id.as_str()) {
                device.current_operation_id = None;
                if target.protocol == Protocol::Ddm
                    && let Some(command) = command_for_target(
                        self,
                        &device,
                        &mut target.clone(),
                        MdmInstruction::SyncDeclarations,
                        now,
                    )
                {
                    commands.push(crate::ports::CommandWrite::Put(command));
                }
            }
            let change = Change {
                device: Some(crate::ports::DeviceWrite {
                    device: device.clone(),
                    expected_revision: Some(device_revision),
                }),
                target: Some(TargetWrite {
                    target: target.clone(),
                    expected_revision: revision,
                    previous_status,
                }),
                events,
                commands,
            };
            match self.ports.devices.commit(change).await {
                Ok(outcome) => {
                    self.record_state_changes(&outcome.state_changes).await?;
                    return Ok(Some(device));
                }
                Err(StoreError::Conflict(_)) => {
                    match self
                        .ports
                        .operations
                        .get_target(&target.operation_id, &target.device_id)
                        .await?
                    {
                        Some(fresh) => target = fresh,
                        None => return Ok(None),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Conflict {
            code: "busy",
            message: format!(
                "device {} kept changing while it was cancelled; cancel again",
                target.device_id
            ),
        })
    }
}

enum CurrentTarget {
    None,
    Installing(String),
    Movable {
        operation_id: String,
        revision: u64,
        status: TargetStatus,
    },
}

fn deadlines_of(targets: &[PlannedTarget]) -> Vec<ZoneDeadline> {
    let mut by_zone: BTreeMap<String, Timestamp> = BTreeMap::new();
    for target in targets {
        if let (Some(zone), Some(at)) = (&target.time_zone, target.deadline_at) {
            by_zone.entry(zone.clone()).or_insert(at);
        }
    }
    let mut deadlines: Vec<ZoneDeadline> = by_zone
        .into_iter()
        .map(|(zone_name, instant)| ZoneDeadline { zone_name, instant })
        .collect();
    deadlines.sort_by(|a, b| {
        a.instant
            .cmp(&b.instant)
            .then_with(|| a.zone_name.cmp(&b.zone_name))
    });
    deadlines
}

/// The kind of operation a creation makes, and the state it carries over.
pub(super) struct Origin {
    pub kind: OperationType,
    /// Statuses the devices had in the deployment an import takes over.
    pub statuses: BTreeMap<String, TargetStatus>,
    /// Added to the `operation_created` event's details.
    pub details: serde_json::Value,
}

fn with_details(mut base: serde_json::Value, extra: &serde_json::Value) -> serde_json::Value {
    if let (Some(map), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        map.extend(extra.clone());
    }
    base
}
