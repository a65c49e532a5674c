//! Tests against the bundled snapshot (fetched 2026-08-22) with fixed clocks,
//! and against small hand-written catalogs for cases the snapshot lacks.
//!
//! Expected values were worked out from `shared/data/catalog/pmv.json`
//! independently of this code.

use jiff::Timestamp;
use jiff::civil::date;
use serde_json::{Value, json};

use super::*;
use crate::domain::{OsVersion, Platform};

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn v(text: &str) -> OsVersion {
    text.parse().unwrap()
}

fn device<'a>(
    model: &'a str,
    platform: Platform,
    os_version: &'a OsVersion,
    build: Option<&'a str>,
) -> DeviceIdentity<'a> {
    DeviceIdentity {
        model,
        software_update_device_id: None,
        platform,
        os_version,
        build,
    }
}

/// (name, build, upgrade kind) of each deployable, in order.
fn rows(deployables: &[Deployable<'_>]) -> Vec<(String, String, UpgradeKind)> {
    deployables
        .iter()
        .map(|d| (d.update.name(), d.update.build.clone(), d.upgrade))
        .collect()
}

fn row(name: &str, build: &str, upgrade: UpgradeKind) -> (String, String, UpgradeKind) {
    (name.to_string(), build.to_string(), upgrade)
}

/// Finds the one record of `build` that lists `identifier`.
fn record<'c>(catalog: &'c Catalog, build: &str, identifier: &str) -> &'c CatalogUpdate {
    let mut found = catalog
        .updates()
        .iter()
        .filter(|update| update.build == build && update.lists(identifier));
    let first = found
        .next()
        .unwrap_or_else(|| panic!("no record of {build} lists {identifier}"));
    assert!(
        found.next().is_none(),
        "several records of {build} list {identifier}"
    );
    first
}

fn entry(version: &str, build: &str, posting: &str, expiration: &str, devices: &[&str]) -> Value {
    json!({
        "ProductVersion": version,
        "Build": build,
        "PostingDate": posting,
        "ExpirationDate": expiration,
        "SupportedDevices": devices,
    })
}

/// Builds a pmv reply with the given iOS entries and empty macOS buckets.
fn pmv(public_ios: Vec<Value>, asset_ios: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "PublicAssetSets": {"iOS": public_ios, "macOS": []},
        "AssetSets": {"iOS": asset_ios, "macOS": []},
    }))
    .unwrap()
}

fn parse(bytes: &[u8]) -> Result<Catalog, CatalogError> {
    Catalog::from_pmv_json(bytes, ModelIndex::bundled())
}

// Snapshot contents

#[test]
fn bundled_snapshot_counts() {
    let summary = Catalog::bundled().summary();

    assert_eq!(summary.entries_read, 107);
    assert_eq!(summary.entries_kept, 65);
    assert_eq!(summary.entries_skipped, 42);
    assert_eq!(summary.builds_kept, 42);
    assert_eq!(summary.device_listings_kept, 2152);
    assert_eq!(summary.updates, 67);
    assert_eq!(summary.updates, Catalog::bundled().updates().len());
}

#[test]
fn bundled_snapshot_skipped_families() {
    let skipped = &Catalog::bundled().summary().skipped_devices;

    assert_eq!(skipped.get("watchOS"), Some(&614));
    assert_eq!(skipped.get("tvOS"), Some(&24));
    assert_eq!(skipped.get("HomePod"), Some(&18));
    assert_eq!(skipped.get("visionOS"), Some(&16));
    assert_eq!(skipped.len(), 4);
}

#[test]
fn bundled_snapshot_latest_posting_date() {
    assert_eq!(
        Catalog::bundled().latest_posting_date(),
        Some(date(2026, 8, 17))
    );
}

#[test]
fn summary_display_lists_counts() {
    let text = Catalog::bundled().summary().to_string();

    assert!(
        text.starts_with("read 107 entries: kept 65 (42 builds"),
        "{text}"
    );
    assert!(text.contains("watchOS 614"), "{text}");
}

#[test]
fn release_date_is_earliest_posting() {
    let catalog = Catalog::bundled();
    // (build, listed device, earliest PostingDate). PublicAssetSets re-stamps
    // 24G830 and 23J631 on 2026-08-17 and 22H352 on 2026-08-06.
    let cases = [
        ("24G830", "J493AP", date(2026, 8, 6)),
        ("23J631", "J152FAP", date(2026, 8, 6)),
        ("22H352", "iPhone15,2", date(2026, 4, 22)),
        ("22H352", "iPad13,1", date(2026, 4, 22)),
        ("23G83", "iPhone15,2", date(2026, 8, 17)),
    ];
    for (build, identifier, release) in cases {
        assert_eq!(
            record(catalog, build, identifier).release_date,
            release,
            "{build}"
        );
    }
}

#[test]
fn expiration_kept_per_build_and_device() {
    let catalog = Catalog::bundled();
    // 23F77 (iOS 26.5) is listed twice in AssetSets: for iPhone18,x until
    // 2026-08-30 and for the other iPhones and iPads until 2026-09-27. 23F84
    // (26.5.2) has 73 devices until 2026-11-04 and 22 until 2026-10-25.
    let cases = [
        ("23F77", "iPhone18,1", date(2026, 8, 30)),
        ("23F77", "iPhone18,5", date(2026, 8, 30)),
        ("23F77", "iPhone17,1", date(2026, 9, 27)),
        ("23F77", "iPad13,1", date(2026, 9, 27)),
        ("23F84", "iPhone15,2", date(2026, 11, 4)),
        ("23F84", "iPhone18,1", date(2026, 10, 25)),
    ];
    for (build, identifier, expiration) in cases {
        assert_eq!(
            record(catalog, build, identifier).expiration_date,
            expiration,
            "{build} for {identifier}"
        );
    }
}

#[test]
fn expiration_latest_across_sets() {
    // The snapshot never lists one (build, device) with two expirations, so
    // this catalog does: the later date wins, and the public flag sticks.
    let bytes = pmv(
        vec![entry(
            "26.1",
            "23B10",
            "2026-10-08",
            "2026-12-01",
            &["iPhone17,1"],
        )],
        vec![entry(
            "26.1",
            "23B10",
            "2026-10-01",
            "2026-11-15",
            &["iPhone17,1", "iPhone18,1"],
        )],
    );
    let catalog = parse(&bytes).unwrap();

    let both_sets = record(&catalog, "23B10", "iPhone17,1");
    let assets_only = record(&catalog, "23B10", "iPhone18,1");

    assert_eq!(both_sets.expiration_date, date(2026, 12, 1));
    assert!(both_sets.public);
    assert_eq!(assets_only.expiration_date, date(2026, 11, 15));
    assert!(!assets_only.public);
    assert_eq!(both_sets.release_date, date(2026, 10, 1));
    assert_eq!(assets_only.release_date, date(2026, 10, 1));
}

#[test]
fn ios_bucket_split_by_platform() {
    let catalog = Catalog::bundled();

    let iphone = record(catalog, "23G83", "iPhone15,2");
    let ipad = record(catalog, "23G83", "iPad13,1");

    assert_eq!(iphone.platform, Platform::Ios);
    assert_eq!(ipad.platform, Platform::IpadOs);
    assert_eq!(iphone.name(), "iOS 26.6.1");
    assert_eq!(ipad.name(), "iPadOS 26.6.1");
    assert!(!iphone.lists("iPad13,1"));
    assert_eq!(record(catalog, "25G83", "J493AP").name(), "macOS 26.6.2");
}

#[test]
fn public_flag_per_set() {
    let catalog = Catalog::bundled();

    assert!(record(catalog, "23G83", "iPhone15,2").public);
    assert!(!record(catalog, "23G71", "iPhone15,2").public);
    assert!(record(catalog, "25D771280a", "J493AP").public);
}

// Devices and board IDs

#[test]
fn mac_matched_through_board_id() {
    let catalog = Catalog::bundled();
    let current = v("15.7.7");
    let now = at("2026-08-22T09:00:00Z");
    // (model identifier, software-update device ID)
    let cases = [
        ("Mac14,7", None),
        ("Mac99,1", Some("J493AP")),
        ("MacBookPro18,3", None),
        ("MacBookPro16,2", None),
        ("VirtualMac2,1", None),
    ];
    for (model, device_id) in cases {
        let identity = DeviceIdentity {
            software_update_device_id: device_id,
            ..device(model, Platform::MacOs, &current, None)
        };

        let resolved = catalog.resolve(&v("26.6.2"), &identity, now);

        assert_eq!(
            resolved.map(|d| d.update.build.as_str()),
            Ok("25G83"),
            "{model}"
        );
    }
}

#[test]
fn unknown_mac_model_not_applicable() {
    let catalog = Catalog::bundled();
    let current = v("15.7.7");
    let identity = device("Mac99,1", Platform::MacOs, &current, None);

    let resolved = catalog.resolve(&v("26.6.2"), &identity, at("2026-08-22T09:00:00Z"));

    assert_eq!(
        resolved,
        Err(ResolveError::NotApplicable {
            version: v("26.6.2"),
            model: "Mac99,1".into()
        })
    );
}

#[test]
fn iphone_matched_by_device_id() {
    let catalog = Catalog::bundled();
    let current = v("18.7");
    let identity = DeviceIdentity {
        software_update_device_id: Some("iPhone15,2"),
        ..device("iPhone", Platform::Ios, &current, None)
    };

    let resolved = catalog.resolve(&v("26.6.1"), &identity, at("2026-08-22T09:00:00Z"));

    assert_eq!(resolved.map(|d| d.update.build.as_str()), Ok("23G83"));
}

#[test]
fn listed_updates_ignore_version() {
    let catalog = Catalog::bundled();
    let current = v("1.0");
    let identity = device("Mac14,7", Platform::MacOs, &current, None);

    let listed = catalog.listed_updates(&identity);

    // Every macOS record for J493AP. 26.3.2 (a) lists only J700AP, and
    // macOS 11.7.11 does not list this model.
    let builds: Vec<&str> = listed.iter().map(|u| u.build.as_str()).collect();
    assert_eq!(
        builds,
        [
            "25G83",
            "25G76",
            "25G72",
            "25F84",
            "25F80",
            "25F71",
            "25D771280a",
            "24G830",
            "24G824",
            "24G720",
            "23J631",
            "23J620",
            "23J520",
            "22H730",
            "21H1320",
        ]
    );
}

// Deployable updates

#[test]
fn iphone_on_18_deployable() {
    let catalog = Catalog::bundled();
    let current = v("18.7");
    let identity = device("iPhone15,2", Platform::Ios, &current, Some("22H20"));

    let deployable = catalog.deployable_for(&identity, at("2026-08-22T09:00:00Z"));

    // 18.7.9 and 18.7.10 list only older models; 26.5.1 only iPhone18,x.
    assert_eq!(
        rows(&deployable),
        [
            row("iOS 26.6.1", "23G83", UpgradeKind::Major),
            row("iOS 26.6", "23G71", UpgradeKind::Major),
            row("iOS 26.5.2", "23F84", UpgradeKind::Major),
            row("iOS 26.5", "23F77", UpgradeKind::Major),
            row("iOS 18.7.8", "22H352", UpgradeKind::Minor),
        ]
    );
}

#[test]
fn mac_on_15_deployable() {
    let catalog = Catalog::bundled();
    let current = v("15.7.7");
    let identity = device("Mac14,7", Platform::MacOs, &current, Some("24G720"));

    let deployable = catalog.deployable_for(&identity, at("2026-08-22T09:00:00Z"));

    assert_eq!(
        rows(&deployable),
        [
            row("macOS 26.6.2", "25G83", UpgradeKind::Major),
            row("macOS 26.6.1", "25G76", UpgradeKind::Major),
            row("macOS 26.6", "25G72", UpgradeKind::Major),
            row("macOS 26.5.2", "25F84", UpgradeKind::Major),
            row("macOS 26.5.1", "25F80", UpgradeKind::Major),
            row("macOS 26.5", "25F71", UpgradeKind::Major),
            row("macOS 15.7.9", "24G830", UpgradeKind::Minor),
            row("macOS 15.7.8", "24G824", UpgradeKind::Minor),
        ]
    );
}

#[test]
fn ipad_gets_ipados_names() {
    let catalog = Catalog::bundled();
    let current = v("18.7.8");
    let identity = device("iPad13,1", Platform::IpadOs, &current, None);

    let deployable = catalog.deployable_for(&identity, at("2026-08-22T09:00:00Z"));

    assert_eq!(
        rows(&deployable),
        [
            row("iPadOS 26.6.1", "23G83", UpgradeKind::Major),
            row("iPadOS 26.6", "23G71", UpgradeKind::Major),
            row("iPadOS 26.5.2", "23F84", UpgradeKind::Major),
            row("iPadOS 26.5", "23F77", UpgradeKind::Major),
        ]
    );
}

#[test]
fn platform_mismatch_offers_nothing() {
    let catalog = Catalog::bundled();
    let current = v("18.7");
    // An iPad model reported with the iOS platform matches no record.
    let identity = device("iPad13,1", Platform::Ios, &current, None);

    assert!(
        catalog
            .deployable_for(&identity, at("2026-08-22T09:00:00Z"))
            .is_empty()
    );
}

#[test]
fn expiry_per_device_at_boundary() {
    let catalog = Catalog::bundled();
    let current = v("26.4");
    let iphone_17_pro = device("iPhone18,1", Platform::Ios, &current, None);
    let iphone_16_pro = device("iPhone17,1", Platform::Ios, &current, None);
    let has_26_5 = |identity: &DeviceIdentity<'_>, now: &str| {
        catalog
            .deployable_for(identity, at(now))
            .iter()
            .any(|d| d.update.product_version == v("26.5"))
    };

    // 26.5 expires for iPhone18,x on 2026-08-30 and for iPhone17,1 on 2026-09-27.
    assert!(has_26_5(&iphone_17_pro, "2026-08-30T23:59:59Z"));
    assert!(!has_26_5(&iphone_17_pro, "2026-08-31T00:00:00Z"));
    assert!(has_26_5(&iphone_16_pro, "2026-08-31T00:00:00Z"));
    assert!(!has_26_5(&iphone_16_pro, "2026-09-28T00:00:00Z"));
}

#[test]
fn nothing_deployable_after_snapshot_expires() {
    let catalog = Catalog::bundled();
    let mac_version = v("15.7.7");
    let phone_version = v("18.7");
    let pad_version = v("18.7.8");
    let devices = [
        device("Mac14,7", Platform::MacOs, &mac_version, None),
        device("iPhone15,2", Platform::Ios, &phone_version, None),
        device("iPad13,1", Platform::IpadOs, &pad_version, None),
    ];
    let last_second = at("2026-11-20T23:59:59Z");
    let after = at("2026-11-21T00:00:00Z");

    for identity in &devices {
        assert!(
            !catalog.deployable_for(identity, last_second).is_empty(),
            "{}",
            identity.model
        );
        assert!(
            catalog.deployable_for(identity, after).is_empty(),
            "{}",
            identity.model
        );
    }
    assert_eq!(
        rows(&catalog.deployable_for(&devices[0], last_second)),
        [
            row("macOS 26.6.2", "25G83", UpgradeKind::Major),
            row("macOS 15.7.9", "24G830", UpgradeKind::Minor),
        ]
    );
    assert!(!catalog.all_expired_at(last_second));
    assert!(catalog.all_expired_at(after));
}

// Several builds of one version

#[test]
fn same_devices_prefer_lower_build() {
    let catalog = Catalog::bundled();
    let current = v("18.7");
    let now = at("2026-08-22T09:00:00Z");
    // 23G83 and 23G6083 (26.6.1) both list every iPhone and iPad in
    // PublicAssetSets and AssetSets; 23F84 and 23F6084 (26.5.2) only in AssetSets.
    let cases = [
        ("iPhone15,2", Platform::Ios, "26.6.1", "23G83"),
        ("iPad13,1", Platform::IpadOs, "26.6.1", "23G83"),
        ("iPhone15,2", Platform::Ios, "26.5.2", "23F84"),
        ("iPhone15,2", Platform::Ios, "18.7.8", "22H352"),
    ];
    for (model, platform, version, build) in cases {
        let identity = device(model, platform, &current, None);

        let resolved = catalog.resolve(&v(version), &identity, now);

        assert_eq!(
            resolved.map(|d| d.update.build.as_str()),
            Ok(build),
            "{model} {version}"
        );
    }
}

#[test]
fn builds_resolved_per_device() {
    // One version shipping as a separate build for the newest phones.
    let bytes = pmv(
        vec![
            entry(
                "26.0",
                "23A341",
                "2026-09-15",
                "2026-12-01",
                &["iPhone17,1", "iPad13,1"],
            ),
            entry(
                "26.0",
                "23A345",
                "2026-09-15",
                "2026-12-01",
                &["iPhone18,1"],
            ),
        ],
        vec![],
    );
    let catalog = parse(&bytes).unwrap();
    let current = v("18.7");
    let now = at("2026-09-20T00:00:00Z");
    let cases = [
        ("iPhone17,1", Platform::Ios, "23A341", "iOS 26.0"),
        ("iPad13,1", Platform::IpadOs, "23A341", "iPadOS 26.0"),
        ("iPhone18,1", Platform::Ios, "23A345", "iOS 26.0"),
    ];
    for (model, platform, build, name) in cases {
        let identity = device(model, platform, &current, None);

        let resolved = catalog.resolve(&v("26.0"), &identity, now).unwrap();
        let offered = catalog.deployable_for(&identity, now);

        assert_eq!(resolved.update.build, build, "{model}");
        assert_eq!(resolved.update.name(), name, "{model}");
        assert_eq!(resolved.upgrade, UpgradeKind::Major, "{model}");
        assert_eq!(
            rows(&offered),
            [row(name, build, UpgradeKind::Major)],
            "{model}"
        );
    }
}

#[test]
fn public_entry_preferred_over_lower_build() {
    let bytes = pmv(
        vec![entry(
            "26.1",
            "23B6010",
            "2026-10-01",
            "2026-12-01",
            &["iPhone17,1"],
        )],
        vec![
            entry("26.1", "23B10", "2026-10-01", "2026-12-01", &["iPhone17,1"]),
            entry(
                "26.1",
                "23B6010",
                "2026-10-01",
                "2026-12-01",
                &["iPhone17,1"],
            ),
        ],
    );
    let catalog = parse(&bytes).unwrap();
    let current = v("26.0");
    let identity = device("iPhone17,1", Platform::Ios, &current, None);
    let now = at("2026-10-02T00:00:00Z");

    let resolved = catalog.resolve(&v("26.1"), &identity, now).unwrap();
    let offered = catalog.deployable_for(&identity, now);

    assert_eq!(resolved.update.build, "23B6010");
    assert!(resolved.update.public);
    assert_eq!(
        rows(&offered),
        [row("iOS 26.1", "23B6010", UpgradeKind::Minor)]
    );
}

#[test]
fn unexpired_build_preferred_over_expired() {
    let bytes = pmv(
        vec![],
        vec![
            entry("26.1", "23B10", "2026-10-01", "2026-10-10", &["iPhone17,1"]),
            entry(
                "26.1",
                "23B6010",
                "2026-10-01",
                "2026-12-01",
                &["iPhone17,1"],
            ),
        ],
    );
    let catalog = parse(&bytes).unwrap();
    let current = v("26.0");
    let identity = device("iPhone17,1", Platform::Ios, &current, None);

    let before = catalog
        .resolve(&v("26.1"), &identity, at("2026-10-05T00:00:00Z"))
        .unwrap();
    let after = catalog
        .resolve(&v("26.1"), &identity, at("2026-10-11T00:00:00Z"))
        .unwrap();

    assert_eq!(before.update.build, "23B10");
    assert_eq!(after.update.build, "23B6010");
}

// Resolve outcomes

#[test]
fn resolve_upgrade_kind_per_device() {
    let catalog = Catalog::bundled();
    let now = at("2026-08-22T09:00:00Z");
    let sequoia = v("15.7.7");
    let tahoe = v("26.5");
    let cases = [
        (&sequoia, "26.6.2", "25G83", UpgradeKind::Major),
        (&sequoia, "15.7.9", "24G830", UpgradeKind::Minor),
        (&tahoe, "26.6.2", "25G83", UpgradeKind::Minor),
    ];
    for (current, target, build, upgrade) in cases {
        let identity = device("Mac14,7", Platform::MacOs, current, None);

        let resolved = catalog.resolve(&v(target), &identity, now).unwrap();

        assert_eq!(resolved.update.build, build, "{current} to {target}");
        assert_eq!(resolved.upgrade, upgrade, "{current} to {target}");
    }
}

#[test]
fn resolve_errors_by_case() {
    let catalog = Catalog::bundled();
    let now = at("2026-08-22T09:00:00Z");
    let on_18 = v("18.7");
    let on_26_6_1 = v("26.6.1");
    let on_26_4 = v("26.4");
    let on_15 = v("15.7.7");
    let iphone = device("iPhone15,2", Platform::Ios, &on_18, None);
    let current_iphone = device("iPhone15,2", Platform::Ios, &on_26_6_1, None);
    let newest_iphone = device("iPhone18,1", Platform::Ios, &on_26_4, None);
    let mac = device("Mac14,7", Platform::MacOs, &on_15, None);

    assert_eq!(
        catalog.resolve(&v("99.0"), &iphone, now),
        Err(ResolveError::NotInCatalog {
            platform: Platform::Ios,
            version: v("99.0"),
            extra: None
        })
    );
    // 18.7.8 exists for iOS but not for macOS.
    assert_eq!(
        catalog.resolve(&v("18.7.8"), &mac, now),
        Err(ResolveError::NotInCatalog {
            platform: Platform::MacOs,
            version: v("18.7.8"),
            extra: None
        })
    );
    // 26.5.1 lists only iPhone18,x.
    assert_eq!(
        catalog.resolve(&v("26.5.1"), &iphone, now),
        Err(ResolveError::NotApplicable {
            version: v("26.5.1"),
            model: "iPhone15,2".into()
        })
    );
    assert_eq!(
        catalog.resolve(&v("26.6"), &current_iphone, now),
        Err(ResolveError::NotNewer {
            version: v("26.6"),
            current: v("26.6.1")
        })
    );
    assert_eq!(
        catalog.resolve(&v("26.6.1"), &current_iphone, now),
        Err(ResolveError::NotNewer {
            version: v("26.6.1"),
            current: v("26.6.1")
        })
    );
    assert_eq!(
        catalog.resolve(&v("26.5"), &newest_iphone, at("2026-09-01T00:00:00Z")),
        Err(ResolveError::Expired {
            version: v("26.5"),
            build: "23F77".into(),
            expired_on: date(2026, 8, 30)
        })
    );
}

#[test]
fn resolve_error_messages_name_values() {
    let not_in_catalog = ResolveError::NotInCatalog {
        platform: Platform::MacOs,
        version: v("26.3.1"),
        extra: Some("(b)".into()),
    };
    let expired = ResolveError::Expired {
        version: v("26.5"),
        build: "23F77".into(),
        expired_on: date(2026, 8, 30),
    };

    assert!(
        not_in_catalog
            .to_string()
            .starts_with("macOS 26.3.1 (b) is not in")
    );
    assert!(expired.to_string().contains("23F77"));
    assert!(expired.to_string().contains("2026-08-30"));
}

// Background security improvements

#[test]
fn bsi_needs_prerequisite_build() {
    let catalog = Catalog::bundled();
    let now = at("2026-08-22T09:00:00Z");
    let current = v("26.3.1");
    // (model, platform, device build, offered improvement)
    let cases = [
        (
            "Mac14,7",
            Platform::MacOs,
            Some("25D2128"),
            Some("macOS 26.3.1 (a)"),
        ),
        ("Mac14,7", Platform::MacOs, Some("25D2100"), None),
        ("Mac14,7", Platform::MacOs, None, None),
        (
            "iPhone15,2",
            Platform::Ios,
            Some("23D8133"),
            Some("iOS 26.3.1 (a)"),
        ),
        (
            "iPad13,1",
            Platform::IpadOs,
            Some("23D8133"),
            Some("iPadOS 26.3.1 (a)"),
        ),
        ("iPhone15,2", Platform::Ios, Some("23D8100"), None),
    ];
    for (model, platform, build, offered) in cases {
        let identity = device(model, platform, &current, build);

        let improvements: Vec<String> = catalog
            .deployable_for(&identity, now)
            .iter()
            .filter(|d| d.update.background_security_improvement)
            .map(|d| d.update.name())
            .collect();

        assert_eq!(
            improvements,
            offered.into_iter().collect::<Vec<_>>(),
            "{model} on {build:?}"
        );
    }
}

#[test]
fn bsi_only_for_listed_macs() {
    let catalog = Catalog::bundled();
    let current = v("26.3.2");
    // 26.3.2 (a) lists only J700AP (Mac17,5).
    let listed = device("Mac17,5", Platform::MacOs, &current, Some("25D2140"));
    let unlisted = device("MacBookPro18,3", Platform::MacOs, &current, Some("25D2140"));
    let now = at("2026-08-22T09:00:00Z");
    let is_bsi = |d: &Deployable<'_>| d.update.background_security_improvement;

    assert!(catalog.deployable_for(&listed, now).iter().any(is_bsi));
    assert!(!catalog.deployable_for(&unlisted, now).iter().any(is_bsi));
}

#[test]
fn resolve_bsi_outcomes() {
    let catalog = Catalog::bundled();
    let now = at("2026-08-22T09:00:00Z");
    let on_26_3_1 = v("26.3.1");
    let on_26_6 = v("26.6");
    let ready = device("Mac14,7", Platform::MacOs, &on_26_3_1, Some("25D2128"));
    let other_build = device("Mac14,7", Platform::MacOs, &on_26_3_1, Some("25D2100"));
    let installed = device("Mac14,7", Platform::MacOs, &on_26_3_1, Some("25D771280a"));
    let newer = device("Mac14,7", Platform::MacOs, &on_26_6, Some("25G72"));

    let resolved = catalog
        .resolve_background_security_improvement(&on_26_3_1, "(a)", &ready, now)
        .unwrap();
    assert_eq!(resolved.update.build, "25D771280a");
    assert_eq!(resolved.update.name(), "macOS 26.3.1 (a)");
    assert_eq!(resolved.upgrade, UpgradeKind::Minor);

    assert_eq!(
        catalog.resolve_background_security_improvement(&on_26_3_1, "(a)", &other_build, now),
        Err(ResolveError::PrerequisiteBuildRequired {
            version: v("26.3.1"),
            extra: "(a)".into(),
            prerequisite_build: "25D2128".into(),
            current_build: Some("25D2100".into())
        })
    );
    for identity in [&installed, &newer] {
        let result =
            catalog.resolve_background_security_improvement(&on_26_3_1, "(a)", identity, now);
        assert!(
            matches!(result, Err(ResolveError::NotNewer { .. })),
            "{result:?}"
        );
    }
    assert_eq!(
        catalog.resolve_background_security_improvement(&on_26_3_1, "(b)", &ready, now),
        Err(ResolveError::NotInCatalog {
            platform: Platform::MacOs,
            version: v("26.3.1"),
            extra: Some("(b)".into())
        })
    );
}

#[test]
fn bsi_build_chosen_by_prerequisite() {
    let mut document: Value = serde_json::from_slice(&pmv(vec![], vec![])).unwrap();
    let improvement = |build: &str, prerequisite: &str| {
        json!({
            "ProductVersion": "26.3.1",
            "ProductVersionExtra": "(a)",
            "Build": build,
            "PrerequisiteBuild": prerequisite,
            "PostingDate": "2026-03-17",
            "ExpirationDate": "2026-11-20",
            "SupportedDevices": ["J493AP"],
        })
    };
    document["PublicBackgroundSecurityImprovements"] = json!({
        "macOS": [improvement("25D771280a", "25D2128"), improvement("25D771290a", "25D2129")],
    });
    let catalog = parse(&serde_json::to_vec(&document).unwrap()).unwrap();
    let current = v("26.3.1");
    let now = at("2026-08-22T09:00:00Z");
    let cases = [("25D2128", "25D771280a"), ("25D2129", "25D771290a")];

    for (device_build, improvement_build) in cases {
        let identity = device("Mac14,7", Platform::MacOs, &current, Some(device_build));

        let resolved =
            catalog.resolve_background_security_improvement(&current, "(a)", &identity, now);
        let offered = catalog.deployable_for(&identity, now);

        assert_eq!(
            resolved.map(|d| d.update.build.as_str()),
            Ok(improvement_build),
            "{device_build}"
        );
        assert_eq!(
            rows(&offered),
            [row(
                "macOS 26.3.1 (a)",
                improvement_build,
                UpgradeKind::Minor
            )],
            "{device_build}"
        );
    }
}

#[test]
fn plain_resolve_skips_bsi() {
    let catalog = Catalog::bundled();
    let current = v("26.3");
    let identity = device("Mac14,7", Platform::MacOs, &current, None);

    // Only the background security improvement has version 26.3.1.
    let resolved = catalog.resolve(&v("26.3.1"), &identity, at("2026-08-22T09:00:00Z"));

    assert!(
        matches!(resolved, Err(ResolveError::NotInCatalog { .. })),
        "{resolved:?}"
    );
}

// Update list

#[test]
fn versions_rows_per_platform() {
    let catalog = Catalog::bundled();
    let now = at("2026-08-22T09:00:00Z");

    assert_eq!(catalog.versions(None, now).len(), 41);
    assert_eq!(catalog.versions(Some(Platform::MacOs), now).len(), 17);
    assert_eq!(catalog.versions(Some(Platform::Ios), now).len(), 12);
    assert_eq!(catalog.versions(Some(Platform::IpadOs), now).len(), 12);
}

#[test]
fn versions_row_merges_builds() {
    let catalog = Catalog::bundled();
    let rows = catalog.versions(Some(Platform::Ios), at("2026-08-22T09:00:00Z"));

    let newest = &rows[0];
    assert_eq!(newest.name, "iOS 26.6.1");
    assert_eq!(newest.builds, ["23G83", "23G6083"]);
    assert_eq!(newest.release_date, date(2026, 8, 17));
    assert_eq!(newest.expiration_date, date(2026, 11, 20));
    assert_eq!(newest.device_count, 31);
    assert!(!newest.expired);
    assert!(!newest.background_security_improvement);

    let ios_26_5 = rows.iter().find(|row| row.name == "iOS 26.5").unwrap();
    assert_eq!(ios_26_5.builds, ["23F77", "23F6077"]);
    assert_eq!(ios_26_5.expiration_date, date(2026, 9, 27));
    assert_eq!(ios_26_5.release_date, date(2026, 5, 18));
}

#[test]
fn versions_expired_flag() {
    let catalog = Catalog::bundled();
    let rows = catalog.versions(Some(Platform::MacOs), at("2026-09-28T00:00:00Z"));
    let expired = |name: &str| {
        rows.iter()
            .find(|row| row.name == name)
            .map(|row| row.expired)
    };

    assert_eq!(expired("macOS 26.5"), Some(true));
    assert_eq!(expired("macOS 26.5.1"), Some(true));
    assert_eq!(expired("macOS 26.5.2"), Some(false));
    assert_eq!(expired("macOS 26.3.1 (a)"), Some(false));
}

#[test]
fn versions_bsi_rows() {
    let catalog = Catalog::bundled();
    let rows = catalog.versions(Some(Platform::MacOs), at("2026-08-22T09:00:00Z"));

    let improvements: Vec<(&str, usize)> = rows
        .iter()
        .filter(|row| row.background_security_improvement)
        .map(|row| (row.name.as_str(), row.device_count))
        .collect();

    assert_eq!(
        improvements,
        [("macOS 26.3.2 (a)", 1), ("macOS 26.3.1 (a)", 62)]
    );
}

// Malformed and unusual input

#[test]
fn not_json_rejected() {
    let error = parse(b"<html>").unwrap_err();

    assert!(matches!(error, CatalogError::InvalidJson { .. }), "{error}");
    assert!(std::error::Error::source(&error).is_some());
}

#[test]
fn wrong_shapes_rejected() {
    let cases: [(Value, &str); 3] = [
        (json!([]), "the top level"),
        (
            json!({"PublicAssetSets": [], "AssetSets": {}}),
            "PublicAssetSets",
        ),
        (
            json!({"PublicAssetSets": {"iOS": {}, "macOS": []}, "AssetSets": {"iOS": [], "macOS": []}}),
            "PublicAssetSets.iOS",
        ),
    ];
    for (document, expected_path) in cases {
        let error = parse(&serde_json::to_vec(&document).unwrap()).unwrap_err();

        match error {
            CatalogError::UnexpectedType { path, .. } => assert_eq!(path, expected_path),
            other => panic!("expected UnexpectedType at {expected_path}, got {other}"),
        }
    }
}

#[test]
fn missing_set_rejected() {
    let document = json!({"PublicAssetSets": {"iOS": [], "macOS": []}});

    let error = parse(&serde_json::to_vec(&document).unwrap()).unwrap_err();

    assert!(
        matches!(error, CatalogError::MissingSet { set: "AssetSets" }),
        "{error}"
    );
}

#[test]
fn missing_bucket_rejected() {
    let document = json!({
        "PublicAssetSets": {"iOS": []},
        "AssetSets": {"iOS": [], "macOS": []},
    });

    let error = parse(&serde_json::to_vec(&document).unwrap()).unwrap_err();

    assert!(
        matches!(
            error,
            CatalogError::MissingBucket {
                set: "PublicAssetSets",
                bucket: "macOS"
            }
        ),
        "{error}"
    );
}

#[test]
fn entry_without_build_names_path() {
    let mut broken = entry(
        "26.6.1",
        "23G83",
        "2026-08-17",
        "2026-11-20",
        &["iPhone15,2"],
    );
    broken.as_object_mut().unwrap().remove("Build");

    let error = parse(&pmv(vec![], vec![broken])).unwrap_err();

    match &error {
        CatalogError::InvalidEntry { path, source } => {
            assert_eq!(path, "AssetSets.iOS[0]");
            assert!(source.to_string().contains("Build"), "{source}");
        }
        other => panic!("expected InvalidEntry, got {other}"),
    }
    assert!(error.to_string().contains("AssetSets.iOS[0]"));
}

#[test]
fn bad_version_names_value() {
    let error = parse(&pmv(
        vec![entry(
            "26.x",
            "23G83",
            "2026-08-17",
            "2026-11-20",
            &["iPhone15,2"],
        )],
        vec![],
    ))
    .unwrap_err();

    match &error {
        CatalogError::InvalidVersion { path, value, .. } => {
            assert_eq!(path, "PublicAssetSets.iOS[0]");
            assert_eq!(value, "26.x");
        }
        other => panic!("expected InvalidVersion, got {other}"),
    }
    assert!(error.to_string().contains("\"26.x\""));
}

#[test]
fn bad_dates_name_field_and_value() {
    // (PostingDate, ExpirationDate, field at fault, whether jiff gave the cause)
    let cases = [
        ("2026/08/17", "2026-11-20", "PostingDate", false),
        (
            "2026-08-17",
            "2026-11-20T00:00:00Z",
            "ExpirationDate",
            false,
        ),
        ("2026-08-17", "2026-02-30", "ExpirationDate", true),
        ("", "2026-11-20", "PostingDate", false),
    ];
    for (posting, expiration, bad_field, has_cause) in cases {
        let bytes = pmv(
            vec![entry(
                "26.6.1",
                "23G83",
                posting,
                expiration,
                &["iPhone15,2"],
            )],
            vec![],
        );

        let error = parse(&bytes).unwrap_err();

        match error {
            CatalogError::InvalidDate {
                field,
                value,
                source,
                ..
            } => {
                assert_eq!(field, bad_field, "{posting} {expiration}");
                let expected_value = if bad_field == "PostingDate" {
                    posting
                } else {
                    expiration
                };
                assert_eq!(value, expected_value);
                assert_eq!(source.is_some(), has_cause, "{value}");
            }
            other => panic!("expected InvalidDate for {posting} {expiration}, got {other}"),
        }
    }
}

#[test]
fn bsi_without_prerequisite_rejected() {
    let mut document: Value = serde_json::from_slice(&pmv(vec![], vec![])).unwrap();
    document["PublicBackgroundSecurityImprovements"] = json!({
        "macOS": [{
            "ProductVersion": "26.3.1",
            "ProductVersionExtra": "(a)",
            "Build": "25D771280a",
            "PostingDate": "2026-03-17",
            "ExpirationDate": "2026-11-20",
            "SupportedDevices": ["J493AP"],
        }],
    });

    let error = parse(&serde_json::to_vec(&document).unwrap()).unwrap_err();

    assert!(
        matches!(
            &error,
            CatalogError::MissingField {
                field: "PrerequisiteBuild",
                path
            } if path == "PublicBackgroundSecurityImprovements.macOS[0]"
        ),
        "{error}"
    );
}

#[test]
fn conflicting_build_rejected() {
    let bytes = pmv(
        vec![entry(
            "26.6.1",
            "23G83",
            "2026-08-17",
            "2026-11-20",
            &["iPhone15,2"],
        )],
        vec![entry(
            "26.6",
            "23G83",
            "2026-08-17",
            "2026-11-20",
            &["iPhone15,2"],
        )],
    );

    let error = parse(&bytes).unwrap_err();

    match error {
        CatalogError::ConflictingBuild { build, path, .. } => {
            assert_eq!(build, "23G83");
            assert_eq!(path, "AssetSets.iOS[0]");
        }
        other => panic!("expected ConflictingBuild, got {other}"),
    }
}

#[test]
fn unknown_keys_and_buckets_tolerated() {
    let document = json!({
        "PublicAssetSets": {
            "iOS": [{
                "ProductVersion": "26.6.1",
                "Build": "23G83",
                "PostingDate": "2026-08-17",
                "ExpirationDate": "2026-11-20",
                "SupportedDevices": ["iPhone15,2", "Watch7,5", "Toaster1,1"],
                "Channel": "release",
            }],
            "macOS": [],
            "fooOS": [{"SupportedDevices": ["Foo1,1", "Foo2,1"], "Anything": 1}, "not an object"],
        },
        "AssetSets": {"iOS": [], "macOS": [], "visionOS": []},
        "Signature": "ignored",
    });

    let catalog = parse(&serde_json::to_vec(&document).unwrap()).unwrap();
    let summary = catalog.summary();

    assert_eq!(summary.entries_read, 3);
    assert_eq!(summary.entries_kept, 1);
    assert_eq!(summary.entries_skipped, 2);
    assert_eq!(summary.skipped_devices.get("fooOS"), Some(&2));
    assert_eq!(summary.skipped_devices.get("watchOS"), Some(&1));
    assert_eq!(summary.skipped_devices.get("unrecognized"), Some(&1));
    assert_eq!(catalog.updates().len(), 1);
    assert_eq!(catalog.updates()[0].supported_devices, ["iPhone15,2"]);
}

#[test]
fn skipped_entries_not_validated() {
    // A watchOS entry with a version this crate cannot parse is counted, not fatal.
    let bytes = pmv(
        vec![entry(
            "26.0 beta",
            "23R1",
            "someday",
            "2026-11-20",
            &["Watch7,5"],
        )],
        vec![],
    );

    let catalog = parse(&bytes).unwrap();

    assert!(catalog.updates().is_empty());
    assert_eq!(catalog.summary().entries_skipped, 1);
    assert_eq!(catalog.latest_posting_date(), None);
    assert!(catalog.all_expired_at(at("2026-01-01T00:00:00Z")));
}
