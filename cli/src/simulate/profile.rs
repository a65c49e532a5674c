//! Public descriptions of a simulated fleet: scenario targets, the mix of
//! devices and behaviours, timings, and each generated device.

use jiff::SignedDuration;
use osdeploy_shared::apple::mdm::UpdateResultStatus;
use osdeploy_shared::domain::{OsVersion, Platform};

use super::error::SimError;

/// An OS update by version and build, such as macOS 26.6.2 (25G83).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUpdate {
    pub version: String,
    pub build: String,
}

impl TargetUpdate {
    pub fn new(version: impl Into<String>, build: impl Into<String>) -> Self {
        TargetUpdate {
            version: version.into(),
            build: build.into(),
        }
    }
}

/// The update a scenario rolls out per platform. Devices are generated so
/// that every model lists it, and the "already on target" share runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioTargets {
    pub macos: TargetUpdate,
    pub ios: TargetUpdate,
}

impl Default for ScenarioTargets {
    /// macOS 26.6.2 (25G83) and iOS 26.6.1 (23G83), the newest public
    /// releases in the catalog snapshot bundled with osdeploy-shared.
    fn default() -> Self {
        ScenarioTargets {
            macos: TargetUpdate::new("26.6.2", "25G83"),
            ios: TargetUpdate::new("26.6.1", "23G83"),
        }
    }
}

impl ScenarioTargets {
    /// Returns the target of a platform; iPadOS shares the iOS target.
    pub fn for_platform(&self, platform: Platform) -> &TargetUpdate {
        match platform {
            Platform::MacOs => &self.macos,
            Platform::Ios | Platform::IpadOs => &self.ios,
        }
    }
}

/// Shares and choices that shape a generated fleet. Shares are fractions
/// from 0 to 1, and each is rounded to a whole device count.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetMix {
    /// Share of Macs; the rest are iPhones.
    pub mac_share: f64,
    /// Relative weights of the macOS majors the Macs start on.
    pub macos_majors: Vec<(u32, f64)>,
    /// Relative weights of the iOS majors the iPhones start on.
    pub ios_majors: Vec<(u32, f64)>,
    /// Share of Macs that are not supervised. The server rejects them as
    /// targets, so they get no behaviour and no expected status.
    pub unsupervised_mac_share: f64,
    /// Share of the supervised Macs and iPhones that already run the
    /// scenario target (the server marks them obsolete).
    pub on_target_share: f64,
    /// Share of the updatable devices whose first attempt fails with a
    /// cause that clears (space or power).
    pub transient_failure_share: f64,
    /// Share of the updatable devices that fail every attempt.
    pub persistent_failure_share: f64,
    /// Share of the updatable devices that return NotNow for their first
    /// ScheduleOSUpdate.
    pub not_now_share: f64,
    /// Share of the updatable DDM devices without persistent failures whose
    /// user installs from Settings before the deadline.
    pub user_early_install_share: f64,
    /// IANA time zones the devices are spread over, uniformly.
    pub time_zones: Vec<String>,
}

impl Default for FleetMix {
    fn default() -> Self {
        FleetMix {
            mac_share: 0.55,
            macos_majors: vec![(13, 0.10), (14, 0.20), (15, 0.30), (26, 0.40)],
            ios_majors: vec![(17, 0.15), (18, 0.35), (26, 0.50)],
            unsupervised_mac_share: 0.05,
            on_target_share: 0.03,
            transient_failure_share: 0.08,
            persistent_failure_share: 0.03,
            not_now_share: 0.05,
            user_early_install_share: 0.10,
            time_zones: [
                "America/Los_Angeles",
                "America/New_York",
                "Europe/London",
                "Europe/Berlin",
                "Asia/Tokyo",
                "Australia/Sydney",
                "Asia/Kolkata",
            ]
            .iter()
            .map(|zone| (*zone).to_owned())
            .collect(),
        }
    }
}

impl FleetMix {
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        let shares = [
            ("mac_share", self.mac_share),
            ("unsupervised_mac_share", self.unsupervised_mac_share),
            ("on_target_share", self.on_target_share),
            ("transient_failure_share", self.transient_failure_share),
            ("persistent_failure_share", self.persistent_failure_share),
            ("not_now_share", self.not_now_share),
            ("user_early_install_share", self.user_early_install_share),
        ];
        for (name, share) in shares {
            if !(0.0..=1.0).contains(&share) {
                return Err(invalid(format!(
                    "mix.{name} is {share}; use a fraction from 0 to 1"
                )));
            }
        }
        if self.transient_failure_share + self.persistent_failure_share > 1.0 {
            return Err(invalid(format!(
                "mix.transient_failure_share ({}) plus mix.persistent_failure_share ({}) exceed 1",
                self.transient_failure_share, self.persistent_failure_share
            )));
        }
        for (name, majors) in [
            ("macos_majors", &self.macos_majors),
            ("ios_majors", &self.ios_majors),
        ] {
            if !majors.iter().any(|(_, weight)| *weight > 0.0) {
                return Err(invalid(format!(
                    "mix.{name} has no positive weight; give at least one major a weight above 0"
                )));
            }
        }
        if self.time_zones.is_empty() {
            return Err(invalid(
                "mix.time_zones is empty; list at least one IANA time zone".to_owned(),
            ));
        }
        for zone in &self.time_zones {
            jiff::tz::TimeZone::get(zone).map_err(|source| SimError::InvalidTimeZone {
                zone: zone.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Device timings, in server time. Ranges are inclusive and drawn per
/// update job.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub download: (SignedDuration, SignedDuration),
    pub prepare: (SignedDuration, SignedDuration),
    pub install: (SignedDuration, SignedDuration),
    pub reboot: SignedDuration,
    /// Wait before a DDM device retries a failed download or install by
    /// itself.
    pub ddm_retry_delay: SignedDuration,
    /// Poll intervals vary by up to this fraction either way, so that
    /// devices do not check in together.
    pub poll_jitter: f64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            download: (SignedDuration::from_mins(20), SignedDuration::from_mins(60)),
            prepare: (SignedDuration::from_mins(10), SignedDuration::from_mins(20)),
            install: (SignedDuration::from_mins(15), SignedDuration::from_mins(30)),
            reboot: SignedDuration::from_mins(5),
            ddm_retry_delay: SignedDuration::from_hours(1),
            poll_jitter: 0.2,
        }
    }
}

impl Timing {
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        for (name, (low, high)) in [
            ("download", self.download),
            ("prepare", self.prepare),
            ("install", self.install),
        ] {
            if low.is_negative() || high < low {
                return Err(invalid(format!(
                    "timing.{name} is {low}..{high}; use a non-negative range with the lower bound first"
                )));
            }
        }
        if self.reboot.is_negative() || self.ddm_retry_delay.is_negative() {
            return Err(invalid(
                "timing.reboot and timing.ddm_retry_delay must not be negative".to_owned(),
            ));
        }
        if !(0.0..1.0).contains(&self.poll_jitter) {
            return Err(invalid(format!(
                "timing.poll_jitter is {}; use a fraction from 0 up to, not including, 1",
                self.poll_jitter
            )));
        }
        Ok(())
    }
}

/// Cause of an injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    DownloadInsufficientSpace,
    DownloadInsufficientPower,
    InstallInsufficientPower,
}

impl FailureKind {
    /// Returns the `ScheduleOSUpdate` result status that an MDM device reports.
    pub fn update_status(self) -> UpdateResultStatus {
        match self {
            FailureKind::DownloadInsufficientSpace => UpdateResultStatus::DownloadInsufficientSpace,
            FailureKind::DownloadInsufficientPower => UpdateResultStatus::DownloadInsufficientPower,
            FailureKind::InstallInsufficientPower => UpdateResultStatus::InstallInsufficientPower,
        }
    }

    /// Returns the text a DDM device puts in `softwareupdate.failure-reason.reason`.
    pub fn reason(self) -> &'static str {
        match self {
            FailureKind::DownloadInsufficientSpace => "DownloadInsufficientSpace",
            FailureKind::DownloadInsufficientPower => "DownloadInsufficientPower",
            FailureKind::InstallInsufficientPower => "InstallInsufficientPower",
        }
    }

    /// Returns whether the failure hits the install rather than the download.
    pub fn is_install(self) -> bool {
        self == FailureKind::InstallInsufficientPower
    }
}

/// Failure plan of a device: which of its attempts fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailurePlan {
    None,
    /// The first attempt of that phase fails, the retry succeeds.
    Transient(FailureKind),
    /// Every attempt of that phase fails, so the server gives up after its
    /// attempt limit (3 by default) and a DDM device stops after 3 failures.
    Persistent(FailureKind),
}

/// Behaviour of a device besides updating normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Behaviour {
    pub failure: FailurePlan,
    /// Return NotNow for the first ScheduleOSUpdate.
    pub not_now_first: bool,
    /// DDM only: the user installs from Settings after the update is
    /// prepared and before the deadline.
    pub user_early_install: bool,
}

impl Behaviour {
    pub const NORMAL: Behaviour = Behaviour {
        failure: FailurePlan::None,
        not_now_first: false,
        user_early_install: false,
    };
}

/// A device's place in the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceRole {
    /// Runs an older OS than the scenario target and can be targeted.
    Updatable,
    /// Already runs the scenario target; as a target it becomes obsolete.
    AlreadyOnTarget,
    /// An unsupervised Mac, which the server rejects as a target.
    Unsupervised,
}

/// One simulated device as the fleet generated it. `os_version` and
/// `build_version` follow the device through its updates.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDevice {
    /// Uppercase UUID.
    pub udid: String,
    pub serial_number: String,
    pub name: String,
    pub platform: Platform,
    /// Model identifier, such as `Mac14,7` or `iPhone15,2`.
    pub model: String,
    /// Product family, such as `MacBook Pro` or `iPhone`.
    pub model_name: String,
    /// Marketing name, such as `MacBook Pro (13-inch, M2, 2022)`.
    pub marketing_name: String,
    /// `SoftwareUpdateDeviceID`: the board ID on a Mac, the model
    /// identifier on an iPhone.
    pub software_update_device_id: String,
    pub os_version: String,
    pub build_version: String,
    /// IANA time zone of the device's wall clock.
    pub time_zone: String,
    pub supervised: bool,
    /// Whether the server can enforce updates through DDM: supervised
    /// macOS 14 or later, or iOS 17 or later.
    pub ddm_capable: bool,
    pub role: DeviceRole,
    pub behaviour: Behaviour,
}

/// Returns whether a device can take the DDM enforcement declaration, by the
/// rule the server applies.
pub(crate) fn ddm_capable(platform: Platform, os_version: &str, supervised: bool) -> bool {
    let major = os_version
        .parse::<OsVersion>()
        .map(|version| version.major())
        .unwrap_or(0);
    match platform {
        Platform::MacOs => supervised && major >= 14,
        Platform::Ios | Platform::IpadOs => major >= 17,
    }
}

fn invalid(detail: String) -> SimError {
    SimError::InvalidConfig { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddm_capability_follows_server_rule() {
        let cases = [
            (Platform::MacOs, "13.7.8", true, false),
            (Platform::MacOs, "14.8.7", true, true),
            (Platform::MacOs, "15.7.7", false, false),
            (Platform::Ios, "17.6.1", true, true),
            (Platform::Ios, "16.7.16", true, false),
        ];
        for (platform, version, supervised, expected) in cases {
            assert_eq!(
                ddm_capable(platform, version, supervised),
                expected,
                "{platform} {version} supervised {supervised}"
            );
        }
    }

    #[test]
    fn invalid_mix_rejected() {
        let bad_share = FleetMix {
            not_now_share: 1.5,
            ..FleetMix::default()
        };
        let bad_zone = FleetMix {
            time_zones: vec!["Mars/Olympus_Mons".to_owned()],
            ..FleetMix::default()
        };

        assert!(matches!(
            bad_share.validate(),
            Err(SimError::InvalidConfig { .. })
        ));
        assert!(matches!(
            bad_zone.validate(),
            Err(SimError::InvalidTimeZone { .. })
        ));
    }
}
