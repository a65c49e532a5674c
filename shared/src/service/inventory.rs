//! Device inventory and device groups.

use serde::Deserialize;

use super::{FieldError, ServiceError, ServiceResult, Services};
use crate::domain::deadline::parse_time_zone;
use crate::domain::{Device, Group};
use crate::ports::{DeviceFilter, Page, PageRequest};

/// Body of `PATCH /devices/{udid}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    /// IANA zone, or `null` to clear it.
    #[serde(default, with = "double_option")]
    pub time_zone: Option<Option<String>>,
}

/// Body of `POST /device-groups` and `PATCH /device-groups/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    pub name: Option<String>,
    #[serde(default, with = "double_option")]
    pub time_zone: Option<Option<String>>,
}

/// Tells a missing field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

fn check_time_zone(field: &str, zone: &Option<String>) -> Result<(), FieldError> {
    match zone {
        Some(name) => parse_time_zone(name).map(|_| ()).map_err(|e| {
            FieldError::new(field, "unknown_time_zone", e.to_string()).with_value(name)
        }),
        None => Ok(()),
    }
}

impl Services {
    pub async fn list_devices(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> ServiceResult<Page<Device>> {
        Ok(self.ports.devices.list_devices(filter, page).await?)
    }

    pub async fn get_device(&self, udid: &str) -> ServiceResult<Device> {
        self.ports
            .devices
            .get_device(udid)
            .await?
            .ok_or_else(|| ServiceError::not_found("device", udid))
    }

    /// Sets inventory fields an administrator owns (the time zone, which
    /// macOS does not report over MDM).
    pub async fn patch_device(&self, udid: &str, patch: DevicePatch) -> ServiceResult<Device> {
        if let Some(zone) = &patch.time_zone {
            check_time_zone("time_zone", zone).map_err(|e| ServiceError::invalid(vec![e]))?;
        }
        for _ in 0..5 {
            let mut device = self.get_device(udid).await?;
            let revision = device.revision;
            if let Some(zone) = &patch.time_zone {
                device.time_zone = zone.clone();
            }
            let change = crate::ports::Change {
                device: Some(crate::ports::DeviceWrite {
                    device,
                    expected_revision: Some(revision),
                }),
                ..Default::default()
            };
            match self.ports.devices.commit(change).await {
                Ok(_) => return self.get_device(udid).await,
                Err(crate::ports::StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Conflict {
            code: "busy",
            message: format!("device {udid} kept changing while it was updated; try again"),
        })
    }

    pub async fn create_group(&self, input: GroupInput) -> ServiceResult<Group> {
        let mut problems = Vec::new();
        let name = input.name.unwrap_or_default();
        if name.trim().is_empty() {
            problems.push(FieldError::new(
                "name",
                "missing",
                "name is required and must not be blank",
            ));
        }
        let time_zone = input.time_zone.flatten();
        if let Err(e) = check_time_zone("time_zone", &time_zone) {
            problems.push(e);
        }
        if !problems.is_empty() {
            return Err(ServiceError::invalid(problems));
        }
        let now = self.now();
        let group = Group {
            id: self.ids.ulid(now),
            name: name.trim().to_string(),
            time_zone,
            created_at: now,
        };
        self.ports.groups.create_group(&group).await?;
        Ok(group)
    }

    pub async fn get_group(&self, id: &str) -> ServiceResult<Group> {
        self.ports
            .groups
            .get_group(id)
            .await?
            .ok_or_else(|| ServiceError::not_found("device group", id))
    }

    pub async fn update_group(&self, id: &str, input: GroupInput) -> ServiceResult<Group> {
        let mut group = self.get_group(id).await?;
        let mut problems = Vec::new();
        if let Some(name) = input.name {
            if name.trim().is_empty() {
                problems.push(FieldError::new("name", "missing", "name must not be blank"));
            }
            group.name = name.trim().to_string();
        }
        if let Some(zone) = input.time_zone {
            if let Err(e) = check_time_zone("time_zone", &zone) {
                problems.push(e);
            }
            group.time_zone = zone;
        }
        if !problems.is_empty() {
            return Err(ServiceError::invalid(problems));
        }
        self.ports.groups.update_group(&group).await?;
        Ok(group)
    }

    pub async fn list_groups(&self, page: &PageRequest) -> ServiceResult<Page<Group>> {
        Ok(self.ports.groups.list_groups(page).await?)
    }

    /// Replaces a group's members; every UDID must be a known device.
    pub async fn set_group_members(
        &self,
        id: &str,
        udids: Vec<String>,
    ) -> ServiceResult<Vec<String>> {
        self.get_group(id).await?;
        let known = self.ports.devices.get_devices(&udids).await?;
        let problems: Vec<FieldError> = udids
            .iter()
            .enumerate()
            .filter(|(_, udid)| !known.iter().any(|d| &d.udid == *udid))
            .map(|(i, udid)| {
                FieldError::new(
                    format!("device_ids[{i}]"),
                    "unknown_device",
                    format!("device {udid:?} is not enrolled"),
                )
                .with_value(udid)
            })
            .collect();
        if !problems.is_empty() {
            return Err(ServiceError::invalid(problems));
        }
        let mut members = udids;
        members.sort();
        members.dedup();
        self.ports.groups.set_members(id, &members).await?;
        Ok(members)
    }

    pub async fn group_members(&self, id: &str) -> ServiceResult<Vec<String>> {
        self.get_group(id).await?;
        Ok(self.ports.groups.members(id).await?)
    }
}
