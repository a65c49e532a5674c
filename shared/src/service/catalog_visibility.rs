//! "Add to catalog" off on DDM: a deferral that keeps the update out of view.
//!
//! With add to catalog off, a DDM device that supports
//! `com.apple.configuration.softwareupdate.settings` also gets a settings
//! declaration whose `Deferrals` hide updates until the day before the
//! deadline. Support means supervised macOS 15 or iOS and iPadOS 18 and
//! later, because Apple lists `Deferrals` for supervised iOS devices only. Deferral periods count
//! days after the update's release, so the period is the days from the
//! release date to the device's deadline date, minus one, at most 90 (the
//! schema's maximum) and at least 1; a deadline less than two days after the
//! release gets no deferral. macOS takes `MajorPeriodInDays` or
//! `MinorPeriodInDays` by the kind of update, iOS and iPadOS
//! `CombinedPeriodInDays` (the only period Apple lists for them).
//!
//! A deferral applies to every update of its kind on the device, not only
//! to the operation's, for as long as the declaration is installed: it is
//! removed with the enforcement declaration when the target reaches a final
//! status or the operation is cancelled.
//!
//! NOTE: Apple's schema does not say whether a deferral delays an update
//! that an enforcement declaration requires; the enforcement deadline is
//! after the deferral ends, so the two should not meet.

use jiff::civil::Date;

use super::{ServiceResult, Services};
use crate::apple::ddm::{DEFERRAL_DAYS, Deferrals, SoftwareUpdateSettings};
use crate::domain::{Device, InstallSettings, Operation, Platform, Target};

/// The operation fields the settings declaration depends on. Install
/// settings never change after creation, so this can be cached for the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogVisibility {
    /// Enforce at a schedule with add to catalog off.
    pub hide_before_deadline: bool,
    /// The earliest release date of the builds the operation uses.
    pub release_date: Option<Date>,
}

impl CatalogVisibility {
    pub fn of(operation: &Operation) -> CatalogVisibility {
        let hide_before_deadline = matches!(
            operation.install,
            InstallSettings::EnforceAtSchedule {
                add_to_catalog: false,
                ..
            }
        );
        CatalogVisibility {
            hide_before_deadline,
            release_date: operation.update.release_date,
        }
    }
}

/// Identifier of an operation's software-update settings declaration.
pub fn settings_identifier(operation_id: &str) -> String {
    format!("osdeploy.softwareupdate-settings.{operation_id}")
}

/// Returns whether a device applies `Deferrals` from a
/// `softwareupdate.settings` declaration: supervised macOS 15 or later, or
/// supervised iOS or iPadOS 18 or later.
pub fn supports_deferrals(device: &Device) -> bool {
    let Some(version) = &device.os_version else {
        return false;
    };
    let minimum = match device.platform {
        Some(Platform::MacOs) => 15,
        Some(Platform::Ios | Platform::IpadOs) => 18,
        None => return false,
    };
    device.supervised == Some(true) && version.major() >= minimum
}

/// Builds the settings payload that hides the update until the day before
/// the target's deadline, or `None` when the device gets no deferral.
pub fn deferral_settings(
    device: &Device,
    target: &Target,
    visibility: CatalogVisibility,
) -> Option<SoftwareUpdateSettings> {
    if !visibility.hide_before_deadline || !supports_deferrals(device) {
        return None;
    }
    let release = visibility.release_date?;
    let deadline = target.target_local_date_time?.date();
    let days_to_deadline = deadline.since(release).ok()?.get_days();
    let days = u32::try_from(days_to_deadline - 1)
        .ok()?
        .min(*DEFERRAL_DAYS.end());
    if !DEFERRAL_DAYS.contains(&days) {
        return None;
    }
    let deferrals = match target.platform {
        Platform::MacOs if target.major_upgrade => Deferrals {
            major_period_in_days: Some(days),
            ..Default::default()
        },
        Platform::MacOs => Deferrals {
            minor_period_in_days: Some(days),
            ..Default::default()
        },
        Platform::Ios | Platform::IpadOs => Deferrals {
            combined_period_in_days: Some(days),
            ..Default::default()
        },
    };
    Some(SoftwareUpdateSettings {
        deferrals: Some(deferrals),
        ..Default::default()
    })
}

impl Services {
    /// Caches an operation's catalog visibility, so the DDM endpoints can
    /// build declarations without reading the operation.
    pub(super) fn remember_visibility(&self, operation: &Operation) {
        self.catalog_visibility
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(operation.id.clone(), CatalogVisibility::of(operation));
    }

    /// Returns an operation's catalog visibility, reading the operation once
    /// per process when it was created elsewhere. `None` for an unknown operation.
    pub(super) async fn visibility_for(
        &self,
        operation_id: &str,
    ) -> ServiceResult<Option<CatalogVisibility>> {
        let cached = self
            .catalog_visibility
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(operation_id)
            .copied();
        if cached.is_some() {
            return Ok(cached);
        }
        let Some(operation) = self.ports.operations.get_operation(operation_id).await? else {
            return Ok(None);
        };
        self.remember_visibility(&operation);
        Ok(Some(CatalogVisibility::of(&operation)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EnrollmentState, Protocol, TargetStatus};

    fn device(platform: Platform, version: &str, supervised: bool) -> Device {
        Device {
            udid: "D1".into(),
            serial_number: None,
            name: None,
            model: None,
            model_name: None,
            platform: Some(platform),
            os_version: Some(version.parse().expect("version")),
            build_version: None,
            supervised: Some(supervised),
            software_update_device_id: None,
            time_zone: None,
            enrollment: EnrollmentState::Enrolled,
            topic: None,
            push_token: None,
            push_magic: None,
            bootstrap_token: None,
            ddm_active: true,
            enrolled_at: jiff::Timestamp::UNIX_EPOCH,
            last_seen_at: jiff::Timestamp::UNIX_EPOCH,
            inventory_requested_at: None,
            current_operation_id: None,
            revision: 0,
        }
    }

    fn target(platform: Platform, major_upgrade: bool, deadline: &str) -> Target {
        Target {
            operation_id: "op-1".into(),
            device_id: "D1".into(),
            protocol: Protocol::Ddm,
            platform,
            status: TargetStatus::Pending,
            detail: None,
            failures: 0,
            last_error: None,
            next_attempt_at: None,
            reported: false,
            target_version: "26.6.1".parse().expect("version"),
            target_build: "23G83".into(),
            major_upgrade,
            time_zone: None,
            zone_source: None,
            deadline_at: None,
            target_local_date_time: Some(deadline.parse().expect("local date-time")),
            product_key: None,
            install_requested: false,
            last_command_uuid: None,
            device_failure_count: 0,
            expires_at: None,
            device_name: None,
            serial_number: None,
            group_ids: Vec::new(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
            updated_at: jiff::Timestamp::UNIX_EPOCH,
            revision: 0,
        }
    }

    fn hidden(release: &str) -> CatalogVisibility {
        CatalogVisibility {
            hide_before_deadline: true,
            release_date: Some(release.parse().expect("date")),
        }
    }

    fn payload_json(settings: &SoftwareUpdateSettings) -> serde_json::Value {
        serde_json::to_value(settings).expect("settings serialize")
    }

    #[test]
    fn iphone_gets_combined_period() {
        let settings = deferral_settings(
            &device(Platform::Ios, "18.7", true),
            &target(Platform::Ios, false, "2026-08-25T22:00:00"),
            hidden("2026-08-17"),
        )
        .expect("a deferral");
        assert_eq!(
            payload_json(&settings),
            serde_json::json!({ "Deferrals": { "CombinedPeriodInDays": 7 } })
        );
    }

    #[test]
    fn mac_period_follows_update_kind() {
        let mac = device(Platform::MacOs, "15.7.7", true);
        let minor = deferral_settings(
            &mac,
            &target(Platform::MacOs, false, "2026-08-25T22:00:00"),
            hidden("2026-08-17"),
        )
        .expect("a deferral");
        assert_eq!(
            payload_json(&minor),
            serde_json::json!({ "Deferrals": { "MinorPeriodInDays": 7 } })
        );
        let major = deferral_settings(
            &mac,
            &target(Platform::MacOs, true, "2026-08-25T22:00:00"),
            hidden("2026-08-17"),
        )
        .expect("a deferral");
        assert_eq!(
            payload_json(&major),
            serde_json::json!({ "Deferrals": { "MajorPeriodInDays": 7 } })
        );
    }

    #[test]
    fn period_capped_at_ninety_days() {
        let settings = deferral_settings(
            &device(Platform::Ios, "18.7", true),
            &target(Platform::Ios, false, "2027-03-01T09:00:00"),
            hidden("2026-08-17"),
        )
        .expect("a deferral");
        assert_eq!(
            payload_json(&settings)["Deferrals"]["CombinedPeriodInDays"],
            90
        );
    }

    #[test]
    fn no_deferral_cases() {
        let release = "2026-08-17";
        let cases = [
            (
                "add to catalog on",
                device(Platform::Ios, "18.7", true),
                target(Platform::Ios, false, "2026-08-25T22:00:00"),
                CatalogVisibility {
                    hide_before_deadline: false,
                    release_date: Some(release.parse().expect("date")),
                },
            ),
            (
                "iOS 17 has no softwareupdate.settings",
                device(Platform::Ios, "17.7", true),
                target(Platform::Ios, false, "2026-08-25T22:00:00"),
                hidden(release),
            ),
            (
                "macOS 14 has no softwareupdate.settings",
                device(Platform::MacOs, "14.7", true),
                target(Platform::MacOs, false, "2026-08-25T22:00:00"),
                hidden(release),
            ),
            (
                "unsupervised iPhone",
                device(Platform::Ios, "18.7", false),
                target(Platform::Ios, false, "2026-08-25T22:00:00"),
                hidden(release),
            ),
            (
                "deadline the day after the release",
                device(Platform::Ios, "18.7", true),
                target(Platform::Ios, false, "2026-08-18T22:00:00"),
                hidden(release),
            ),
            (
                "no release date",
                device(Platform::Ios, "18.7", true),
                target(Platform::Ios, false, "2026-08-25T22:00:00"),
                CatalogVisibility {
                    hide_before_deadline: true,
                    release_date: None,
                },
            ),
        ];
        for (name, device, target, visibility) in cases {
            assert_eq!(
                deferral_settings(&device, &target, visibility),
                None,
                "{name}"
            );
        }
    }
}
