//! Readiness of the devices a create request selects, for
//! `POST /operations/preview`, and the stale flag of an operation's targets.
//!
//! Both read the devices' last check-in. The preview reads the selected
//! devices in one batch. The device list of an operation reads the devices
//! of one page in one batch, not one device per row.

use std::collections::{BTreeSet, HashMap};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::operations::{CreateOperationRequest, Plan};
use super::views::TargetView;
use super::{ServiceResult, Services};
use crate::domain::{Device, Platform, Protocol, Target};
use crate::ports::{Page, PageRequest, TargetFilter};

/// Default of [`ServiceConfig::silent_after`](super::ServiceConfig::silent_after):
/// three days. A chosen default, not an Apple limit.
pub const DEFAULT_SILENT_AFTER: SignedDuration = SignedDuration::from_hours(72);

/// Environment variable that sets [`DEFAULT_SILENT_AFTER`] in whole hours.
pub const SILENT_AFTER_VARIABLE: &str = "OSDEPLOY_SILENT_AFTER_HOURS";

/// Parses the value of [`SILENT_AFTER_VARIABLE`]: a whole number of hours,
/// at least 1.
pub fn parse_silent_after_hours(text: &str) -> Result<SignedDuration, String> {
    match text.trim().parse::<i64>() {
        Ok(hours) if (1..=24 * 365).contains(&hours) => Ok(SignedDuration::from_hours(hours)),
        _ => Err(format!(
            "invalid {SILENT_AFTER_VARIABLE} {text:?}: expected a whole number of hours from 1 to 8760, such as 72"
        )),
    }
}

/// Returns whether a device last seen at `last_seen_at` has been silent for
/// longer than `silent_after` at `now`.
pub fn is_silent(last_seen_at: Timestamp, now: Timestamp, silent_after: SignedDuration) -> bool {
    now.duration_since(last_seen_at) > silent_after
}

/// Returns whether a Mac model identifier names an Apple silicon Mac, or
/// `None` when the identifier is not one this table lists.
///
/// Apple silicon models are every `MacN,M` identifier (Mac13,1 and later,
/// VirtualMac for virtual machines) and the first M1 models that kept the
/// old names: MacBookAir10, MacBookPro17 and later, iMac21 and later,
/// Macmini9 and later. Older numbers of those names, MacPro and iMacPro are
/// Intel.
/// NOTE: a model released under a new family name is `None` until it is
/// added here, so its bootstrap token is not checked.
pub fn is_apple_silicon(model: &str) -> Option<bool> {
    let (family, numbers) = model.split_at(model.find(|c: char| c.is_ascii_digit())?);
    let major: u32 = numbers.split(',').next()?.parse().ok()?;
    match family {
        "Mac" | "VirtualMac" => Some(true),
        "MacBookAir" => Some(major >= 10),
        "MacBookPro" => Some(major >= 17),
        "iMac" => Some(major >= 21),
        "Macmini" => Some(major >= 9),
        "MacPro" | "iMacPro" | "MacBook" => Some(false),
        _ => None,
    }
}

/// One problem that may stop a device from installing the update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessFlag {
    /// `unsupervised_mac`, `ddm_unsupported`, `bootstrap_token_missing`,
    /// `update_expires_before_deadline` or `silent`.
    pub code: &'static str,
    pub message: String,
}

/// The readiness of one selected device that has at least one flag.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReadiness {
    pub device_id: String,
    pub device_name: Option<String>,
    pub serial_number: Option<String>,
    pub last_seen_at: Timestamp,
    pub flags: Vec<ReadinessFlag>,
}

/// The `readiness` member of the preview.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// The silence threshold used, in hours.
    pub silent_after_hours: i64,
    /// Selected devices without any flag.
    pub ready: usize,
    /// Selected devices with at least one flag.
    pub flagged: usize,
    /// Number of flagged devices per flag code.
    pub by_flag: std::collections::BTreeMap<&'static str, usize>,
    /// Every flagged device, ordered by device id.
    pub devices: Vec<DeviceReadiness>,
}

/// Returns the flags of `device` for an operation over `protocol`.
/// `deadline` and `expires_at` are the device's planned deadline and the
/// expiry of the build it would get, when the plan has the device as a
/// target.
pub fn device_flags(
    device: &Device,
    protocol: Protocol,
    deadline: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
    silent_after: SignedDuration,
) -> Vec<ReadinessFlag> {
    let mut flags = Vec::new();
    let udid = &device.udid;
    let is_mac = device.platform == Some(Platform::MacOs);
    if is_mac && device.supervised != Some(true) {
        flags.push(ReadinessFlag {
            code: "unsupervised_mac",
            message: format!(
                "device {udid} is an unsupervised Mac: neither ScheduleOSUpdate nor the enforcement declaration works without supervision"
            ),
        });
    }
    if protocol == Protocol::Ddm && !device.supports_ddm() {
        flags.push(ReadinessFlag {
            code: "ddm_unsupported",
            message: format!(
                "device {udid} cannot take DDM enforcement, which needs a supervised Mac on macOS 14 or later, or iOS and iPadOS 17 or later; use protocol \"mdm\""
            ),
        });
    }
    let apple_silicon = device.model.as_deref().and_then(is_apple_silicon);
    if is_mac && apple_silicon == Some(true) && device.bootstrap_token.is_none() {
        flags.push(ReadinessFlag {
            code: "bootstrap_token_missing",
            message: format!(
                "device {udid} is an Apple silicon Mac without an escrowed bootstrap token: it cannot install the update without a user authorizing it; have it escrow one (SetBootstrapToken)"
            ),
        });
    }
    if let (Some(deadline), Some(expires_at)) = (deadline, expires_at)
        && expires_at < deadline
    {
        flags.push(ReadinessFlag {
            code: "update_expires_before_deadline",
            message: format!(
                "the build for device {udid} expires at {expires_at}, before its deadline {deadline}: the target becomes deprecated unless it installs earlier; pick an earlier deadline or a newer update"
            ),
        });
    }
    if is_silent(device.last_seen_at, now, silent_after) {
        flags.push(ReadinessFlag {
            code: "silent",
            message: format!(
                "device {udid} last checked in at {}, more than {} hours ago: it may not receive the update until it is back online",
                device.last_seen_at,
                silent_after.as_hours()
            ),
        });
    }
    flags
}

impl Services {
    /// Checks the readiness of every device `request` selects, for the
    /// preview of `plan`. Reads the selected devices in one batch (after
    /// one members read per group) and writes nothing.
    pub async fn readiness(
        &self,
        request: &CreateOperationRequest,
        plan: &Plan,
    ) -> ServiceResult<Readiness> {
        let now = self.now();
        let silent_after = self.config.silent_after;
        let selection = request.targets.clone().unwrap_or_default();
        let mut udids: BTreeSet<String> = selection.device_ids.iter().cloned().collect();
        for group_id in &selection.group_ids {
            udids.extend(self.ports.groups.members(group_id).await?);
        }
        let udids: Vec<String> = udids.into_iter().collect();
        let devices = self.ports.devices.get_devices(&udids).await?;

        let planned: HashMap<&str, (Option<Timestamp>, Option<Timestamp>)> = plan
            .targets
            .iter()
            .map(|t| (t.device_id.as_str(), (t.deadline_at, t.update_expires_at())))
            .collect();
        let mut readiness = Readiness {
            silent_after_hours: silent_after.as_hours(),
            ready: 0,
            flagged: 0,
            by_flag: Default::default(),
            devices: Vec::new(),
        };
        for device in &devices {
            let (deadline, expires_at) = planned
                .get(device.udid.as_str())
                .copied()
                .unwrap_or((None, None));
            let flags = device_flags(
                device,
                plan.protocol,
                deadline,
                expires_at,
                now,
                silent_after,
            );
            if flags.is_empty() {
                readiness.ready += 1;
                continue;
            }
            readiness.flagged += 1;
            for flag in &flags {
                *readiness.by_flag.entry(flag.code).or_default() += 1;
            }
            readiness.devices.push(DeviceReadiness {
                device_id: device.udid.clone(),
                device_name: device.name.clone(),
                serial_number: device.serial_number.clone(),
                last_seen_at: device.last_seen_at,
                flags,
            });
        }
        readiness
            .devices
            .sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(readiness)
    }

    /// Lists an operation's targets as rows of its device list, each with
    /// its device's last check-in and stale flag. Reads the page's devices
    /// in one batch.
    pub async fn list_target_views(
        &self,
        operation_id: &str,
        filter: &TargetFilter,
        page: &PageRequest,
    ) -> ServiceResult<Page<TargetView>> {
        let targets = self.list_targets(operation_id, filter, page).await?;
        let udids: Vec<String> = targets.items.iter().map(|t| t.device_id.clone()).collect();
        let last_seen: HashMap<String, Timestamp> = self
            .ports
            .devices
            .get_devices(&udids)
            .await?
            .into_iter()
            .map(|d| (d.udid, d.last_seen_at))
            .collect();
        let now = self.now();
        let items = targets
            .items
            .iter()
            .map(|t| self.target_view(t, last_seen.get(&t.device_id).copied(), now))
            .collect();
        Ok(Page {
            items,
            next_cursor: targets.next_cursor,
        })
    }

    /// Builds the row of one target whose device was last seen at
    /// `last_seen_at` (`None` when the device record is gone).
    pub fn target_view(
        &self,
        target: &Target,
        last_seen_at: Option<Timestamp>,
        now: Timestamp,
    ) -> TargetView {
        let stale = !target.status.is_final()
            && last_seen_at.is_some_and(|seen| is_silent(seen, now, self.config.silent_after));
        TargetView {
            last_seen_at,
            stale,
            ..TargetView::from(target)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apple_silicon_by_model() {
        let cases = [
            ("Mac14,7", Some(true)),
            ("Mac16,1", Some(true)),
            ("VirtualMac2,1", Some(true)),
            ("MacBookAir10,1", Some(true)),
            ("MacBookAir9,1", Some(false)),
            ("MacBookPro17,1", Some(true)),
            ("MacBookPro18,3", Some(true)),
            ("MacBookPro16,2", Some(false)),
            ("iMac21,1", Some(true)),
            ("iMac20,1", Some(false)),
            ("Macmini9,1", Some(true)),
            ("Macmini8,1", Some(false)),
            ("MacPro7,1", Some(false)),
            ("iMacPro1,1", Some(false)),
            ("iPhone17,1", None),
            ("", None),
            ("Mac", None),
        ];
        for (model, expected) in cases {
            assert_eq!(is_apple_silicon(model), expected, "model {model:?}");
        }
    }

    #[test]
    fn silent_after_hours_parse() {
        assert_eq!(
            parse_silent_after_hours("48"),
            Ok(SignedDuration::from_hours(48))
        );
        assert_eq!(
            parse_silent_after_hours(" 1 "),
            Ok(SignedDuration::from_hours(1))
        );
        for bad in ["0", "-5", "1.5", "", "a day", "8761"] {
            let error = parse_silent_after_hours(bad);
            assert!(error.is_err(), "{bad:?} must be rejected, got {error:?}");
        }
    }

    fn device() -> Device {
        let at: Timestamp = "2026-08-22T09:00:00Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        Device {
            udid: "mac-1".into(),
            serial_number: Some("C02X".into()),
            name: Some("Mac 1".into()),
            model: Some("Mac14,7".into()),
            model_name: None,
            platform: Some(Platform::MacOs),
            os_version: "15.7.1".parse().ok(),
            build_version: None,
            supervised: Some(true),
            software_update_device_id: None,
            time_zone: None,
            enrollment: crate::domain::EnrollmentState::Enrolled,
            topic: None,
            push_token: None,
            push_magic: None,
            bootstrap_token: Some(vec![1]),
            ddm_active: true,
            enrolled_at: at,
            last_seen_at: at,
            inventory_requested_at: None,
            current_operation_id: None,
            revision: 0,
        }
    }

    fn codes(flags: &[ReadinessFlag]) -> Vec<&'static str> {
        flags.iter().map(|f| f.code).collect()
    }

    #[test]
    fn device_flags_by_condition() {
        let base = device();
        let now = base.last_seen_at + SignedDuration::from_hours(1);
        let day = SignedDuration::from_hours(24);
        let deadline = now + SignedDuration::from_hours(48);
        // (label, device, protocol, build expiry, expected flag codes)
        type Case = (
            &'static str,
            Device,
            Protocol,
            Option<Timestamp>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            ("ready", base.clone(), Protocol::Ddm, None, vec![]),
            (
                "unsupervised",
                Device {
                    supervised: Some(false),
                    ..base.clone()
                },
                Protocol::Mdm,
                None,
                vec!["unsupervised_mac"],
            ),
            (
                "no DDM on a DDM operation",
                Device {
                    os_version: "13.6".parse().ok(),
                    ..base.clone()
                },
                Protocol::Ddm,
                None,
                vec!["ddm_unsupported"],
            ),
            (
                "no DDM on an MDM operation",
                Device {
                    os_version: "13.6".parse().ok(),
                    ..base.clone()
                },
                Protocol::Mdm,
                None,
                vec![],
            ),
            (
                "Apple silicon without bootstrap token",
                Device {
                    bootstrap_token: None,
                    ..base.clone()
                },
                Protocol::Mdm,
                None,
                vec!["bootstrap_token_missing"],
            ),
            (
                "Intel Mac without bootstrap token",
                Device {
                    bootstrap_token: None,
                    model: Some("MacBookPro16,1".into()),
                    ..base.clone()
                },
                Protocol::Mdm,
                None,
                vec![],
            ),
            (
                "expires before the deadline",
                base.clone(),
                Protocol::Ddm,
                Some(deadline - SignedDuration::from_hours(1)),
                vec!["update_expires_before_deadline"],
            ),
            (
                "expires after the deadline",
                base.clone(),
                Protocol::Ddm,
                Some(deadline + SignedDuration::from_hours(1)),
                vec![],
            ),
            (
                "silent",
                Device {
                    last_seen_at: now - day - SignedDuration::from_secs(1),
                    ..base.clone()
                },
                Protocol::Ddm,
                None,
                vec!["silent"],
            ),
            (
                "silent for exactly the threshold",
                Device {
                    last_seen_at: now - day,
                    ..base.clone()
                },
                Protocol::Ddm,
                None,
                vec![],
            ),
        ];
        for (label, device, protocol, expires_at, expected) in cases {
            let flags = device_flags(&device, protocol, Some(deadline), expires_at, now, day);
            assert_eq!(codes(&flags), expected, "{label}");
        }
    }
}
