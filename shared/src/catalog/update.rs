//! Catalog records and the device-facing types built on them.

use std::cmp::Ordering;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::domain::{OsVersion, Platform};

/// One build of one OS version for a set of devices of one platform that share
/// the same expiration date.
///
/// Apple's catalog can list one build several times with different device
/// lists and expiration dates, and one build in the iOS bucket covers both
/// iPhones and iPads. The catalog therefore splits a build into one record per
/// (platform, expiration date, public flag), so that every field holds for
/// every device in `supported_devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogUpdate {
    pub platform: Platform,
    pub product_version: OsVersion,
    pub build: String,
    /// Earliest `PostingDate` seen for this build in any set. Apple re-stamps
    /// `PostingDate` when it republishes a build, so later dates are not the
    /// release.
    pub release_date: Date,
    /// Last day on which these devices can install the build, the latest
    /// `ExpirationDate` seen for each of them.
    pub expiration_date: Date,
    /// Identifiers as Apple lists them, sorted: board IDs for Macs, model
    /// identifiers for iPhones and iPads.
    pub supported_devices: Vec<String>,
    pub background_security_improvement: bool,
    /// Suffix of a background security improvement, such as `(a)`.
    pub product_version_extra: Option<String>,
    /// Build a device must run to install a background security improvement.
    pub prerequisite_build: Option<String>,
    /// Whether these devices' entries appear in `PublicAssetSets` or
    /// `PublicBackgroundSecurityImprovements`, rather than only in `AssetSets`.
    pub public: bool,
}

impl CatalogUpdate {
    /// Returns the name users see, such as "macOS 26.6.2", "iPadOS 26.6.1"
    /// or "macOS 26.3.1 (a)".
    pub fn name(&self) -> String {
        update_name(
            self.platform,
            &self.product_version,
            self.product_version_extra.as_deref(),
        )
    }

    /// Returns the first instant at which the update can no longer be
    /// installed: midnight UTC at the end of `expiration_date`.
    ///
    /// NOTE: Apple publishes `ExpirationDate` as a date without a time zone.
    /// Reading it as a UTC day is this project's choice.
    pub fn expires_at(&self) -> Timestamp {
        start_of_next_day_utc(self.expiration_date)
    }

    /// Returns whether `now` is past the end of the expiration day (UTC).
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        now >= self.expires_at()
    }

    /// Returns whether Apple lists this identifier (board ID or model
    /// identifier) for the update.
    pub fn lists(&self, identifier: &str) -> bool {
        self.supported_devices
            .iter()
            .any(|listed| listed == identifier)
    }
}

pub(crate) fn update_name(platform: Platform, version: &OsVersion, extra: Option<&str>) -> String {
    match extra {
        Some(extra) => format!("{} {version} {extra}", platform.marketing_name()),
        None => format!("{} {version}", platform.marketing_name()),
    }
}

fn start_of_next_day_utc(date: Date) -> Timestamp {
    // Only the last representable date has no next day, and nothing expires then.
    date.tomorrow()
        .and_then(|next| next.to_zoned_datetime(TimeZone::UTC))
        .map(|start| start.timestamp())
        .unwrap_or(Timestamp::MAX)
}

/// Orders two records of the same version for one device, preferred first.
///
/// NOTE: Apple does not document why one version ships as several builds for
/// the same devices (iOS 26.6.1 is both `23G83` and `23G6083` for every
/// iPhone). The catalog prefers an entry of a public set, then the build with
/// the lower number after its letter, then the lower build string, so that
/// the choice is at least deterministic.
pub(crate) fn build_preference(left: &CatalogUpdate, right: &CatalogUpdate) -> Ordering {
    right
        .public
        .cmp(&left.public)
        .then_with(|| build_number(&left.build).cmp(&build_number(&right.build)))
        .then_with(|| left.build.cmp(&right.build))
}

/// Returns the number after the train letter of a build (`6083` in
/// `23G6083`, `771280` in `25D771280a`). A build without one sorts last.
pub(crate) fn build_number(build: &str) -> u64 {
    let after_train = build.trim_start_matches(|c: char| c.is_ascii_digit());
    let after_letters = after_train.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let digits_end = after_letters
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after_letters.len());
    after_letters[..digits_end].parse().unwrap_or(u64::MAX)
}

/// A device as the catalog needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceIdentity<'a> {
    /// Model identifier as MDM reports it, such as `Mac14,7` or `iPhone15,2`.
    pub model: &'a str,
    /// The DDM status item `softwareupdate.device-id`: the board ID on a Mac,
    /// the model identifier on an iPhone or iPad.
    pub software_update_device_id: Option<&'a str>,
    pub platform: Platform,
    pub os_version: &'a OsVersion,
    pub build: Option<&'a str>,
}

/// How far an update moves a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeKind {
    /// The target's major version is greater than the device's.
    Major,
    /// Same major version, including background security improvements.
    Minor,
}

impl UpgradeKind {
    /// Classifies moving a device from `current` to `target`.
    pub fn between(current: &OsVersion, target: &OsVersion) -> UpgradeKind {
        if target.major() > current.major() {
            UpgradeKind::Major
        } else {
            UpgradeKind::Minor
        }
    }
}

/// An update that a device can install now, with the build chosen for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Deployable<'c> {
    pub update: &'c CatalogUpdate,
    pub upgrade: UpgradeKind,
}

/// One row of the admin API's update list: an OS version (or background
/// security improvement) of one platform, over all its builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionSummary {
    pub platform: Platform,
    pub product_version: OsVersion,
    pub product_version_extra: Option<String>,
    /// Name users see, such as "iOS 26.6.1".
    pub name: String,
    /// Builds of this version, in the order the catalog prefers them.
    pub builds: Vec<String>,
    /// Earliest release date of any build.
    pub release_date: Date,
    /// Latest expiration date of any build and device.
    pub expiration_date: Date,
    /// Whether every build has expired for every device.
    pub expired: bool,
    pub background_security_improvement: bool,
    /// Number of distinct device identifiers listed for any build.
    pub device_count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_number_after_train_letter() {
        let cases = [
            ("23G83", 83),
            ("23G6083", 6083),
            ("25D771280a", 771280),
            ("20G1443", 1443),
            ("", u64::MAX),
            ("23G", u64::MAX),
        ];
        for (build, number) in cases {
            assert_eq!(build_number(build), number, "{build:?}");
        }
    }

    #[test]
    fn expiry_at_end_of_utc_day() {
        let update = CatalogUpdate {
            platform: Platform::MacOs,
            product_version: "26.6.2".parse().unwrap(),
            build: "25G83".into(),
            release_date: jiff::civil::date(2026, 8, 17),
            expiration_date: jiff::civil::date(2026, 11, 20),
            supported_devices: vec!["J493AP".into()],
            background_security_improvement: false,
            product_version_extra: None,
            prerequisite_build: None,
            public: true,
        };
        let last_second: Timestamp = "2026-11-20T23:59:59Z".parse().unwrap();
        let next_day: Timestamp = "2026-11-21T00:00:00Z".parse().unwrap();

        assert_eq!(update.expires_at(), next_day);
        assert!(!update.is_expired_at(last_second));
        assert!(update.is_expired_at(next_day));
    }

    #[test]
    fn upgrade_kind_by_major() {
        let v = |text: &str| text.parse::<OsVersion>().unwrap();

        assert_eq!(
            UpgradeKind::between(&v("15.7.7"), &v("26.6.2")),
            UpgradeKind::Major
        );
        assert_eq!(
            UpgradeKind::between(&v("15.7.7"), &v("15.7.9")),
            UpgradeKind::Minor
        );
        assert_eq!(
            UpgradeKind::between(&v("26.0"), &v("26.6")),
            UpgradeKind::Minor
        );
    }
}
