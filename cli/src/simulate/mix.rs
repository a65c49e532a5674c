//! The fleet's make-up: which devices exist, what they run, and how each one
//! misbehaves, all drawn from one seed.

use std::collections::BTreeSet;

use osdeploy_shared::catalog::{Catalog, DeviceIdentity, KnownModel, ModelIndex};
use osdeploy_shared::domain::{OsVersion, Platform};

use super::error::SimError;
use super::profile::{
    Behaviour, DeviceRole, FailureKind, FailurePlan, FleetMix, ScenarioTargets, SimDevice,
    TargetUpdate, ddm_capable,
};
use super::rng::SplitMix64;
/// iOS 17 releases for iPhones that now run iOS 26, which the bundled
/// catalog no longer lists. Apple's build for iOS 17.6.1 is 21G93.
const IOS_17_RELEASES: &[(&str, &str)] = &[("17.6.1", "21G93")];

const FIRST_NAMES: &[&str] = &[
    "Aiko", "Amara", "Ana", "Anika", "Ben", "Carlos", "Chen", "Chloe", "Daniel", "Elif", "Emma",
    "Fatima", "Felix", "Grace", "Hannah", "Hiro", "Ingrid", "Isabel", "Jamal", "Jonas", "Kai",
    "Kwame", "Lars", "Laura", "Leila", "Liam", "Lucas", "Mateo", "Maya", "Mei", "Mohammed",
    "Nadia", "Noah", "Nora", "Olivia", "Omar", "Priya", "Rafael", "Ravi", "Rohan", "Sara", "Sofia",
    "Sven", "Tariq", "Thomas", "Wei", "Yuki", "Zoe",
];

/// Characters of generated serial numbers: digits and consonants, as in
/// the 10-character randomized serial numbers Apple has used since 2021.
const SERIAL_CHARS: &[u8] = b"0123456789CDFGHJKLMNPQRTVWXY";

/// A model with the OS versions a device of it can start on.
struct ModelChoice {
    model: &'static KnownModel,
    /// `(version, build)` pairs below the target, preferred build per version.
    starts: Vec<(String, String)>,
}

/// Generates the devices of a fleet.
pub(crate) fn generate(
    count: usize,
    seed: u64,
    mix: &FleetMix,
    targets: &ScenarioTargets,
) -> Result<Vec<SimDevice>, SimError> {
    mix.validate()?;
    let mac_pools = pools(Platform::MacOs, &targets.macos, &mix.macos_majors)?;
    let ios_pools = pools(Platform::Ios, &targets.ios, &mix.ios_majors)?;
    let mut rng = SplitMix64::new(seed);
    let mut serials = BTreeSet::new();
    let mut udids = BTreeSet::new();

    let mut devices = Vec::with_capacity(count);
    for _ in 0..count {
        let platform = if rng.chance(mix.mac_share) {
            Platform::MacOs
        } else {
            Platform::Ios
        };
        let pools = match platform {
            Platform::MacOs => &mac_pools,
            _ => &ios_pools,
        };
        let weights: Vec<f64> = pools.iter().map(|(_, weight, _)| *weight).collect();
        let Some((_, _, choices)) = rng.pick_weighted(&weights).and_then(|i| pools.get(i)) else {
            return Err(invalid(format!(
                "no {} model in the bundled catalog fits the configured majors",
                platform.marketing_name()
            )));
        };
        let (Some(choice), Some(zone)) = (rng.pick(choices), rng.pick(&mix.time_zones)) else {
            return Err(invalid(
                "a model pool or the time-zone list is empty".to_owned(),
            ));
        };
        let Some((version, build)) = rng.pick(&choice.starts).cloned() else {
            return Err(invalid(format!(
                "model {} has no start version",
                choice.model.model_identifier
            )));
        };
        devices.push(new_device(
            &mut rng,
            &mut serials,
            &mut udids,
            choice.model,
            version,
            build,
            zone,
        ));
    }

    assign_roles(&mut rng, &mut devices, mix, targets);
    Ok(devices)
}

fn new_device(
    rng: &mut SplitMix64,
    serials: &mut BTreeSet<String>,
    udids: &mut BTreeSet<String>,
    model: &KnownModel,
    os_version: String,
    build_version: String,
    time_zone: &str,
) -> SimDevice {
    let family = model_family(model);
    let first_name = rng.pick(FIRST_NAMES).copied().unwrap_or("Alex");
    let serial_number = unique(serials, || serial_number(rng));
    let udid = unique(udids, || uuid_like(rng));
    let software_update_device_id = model
        .board_id
        .clone()
        .unwrap_or_else(|| model.model_identifier.clone());
    SimDevice {
        udid,
        serial_number,
        name: format!("{first_name}'s {family}"),
        platform: model.platform,
        model: model.model_identifier.clone(),
        model_name: family,
        marketing_name: model.marketing_name.clone(),
        software_update_device_id,
        ddm_capable: ddm_capable(model.platform, &os_version, true),
        os_version,
        build_version,
        time_zone: time_zone.to_owned(),
        supervised: true,
        role: DeviceRole::Updatable,
        behaviour: Behaviour::NORMAL,
    }
}

/// Picks the unsupervised Macs, the devices already on target, and the
/// behaviours of the updatable devices. Each share is rounded to a device
/// count and the devices are chosen by shuffling, so the counts are exact.
fn assign_roles(
    rng: &mut SplitMix64,
    devices: &mut [SimDevice],
    mix: &FleetMix,
    targets: &ScenarioTargets,
) {
    let macs = indices(devices, |d| d.platform == Platform::MacOs);
    for index in choose(rng, &macs, mix.unsupervised_mac_share) {
        let device = &mut devices[index];
        device.supervised = false;
        device.ddm_capable = false;
        device.role = DeviceRole::Unsupervised;
    }

    let eligible = indices(devices, |d| d.role == DeviceRole::Updatable);
    for index in choose(rng, &eligible, mix.on_target_share) {
        let device = &mut devices[index];
        let target = targets.for_platform(device.platform);
        device.os_version = target.version.clone();
        device.build_version = target.build.clone();
        device.ddm_capable = ddm_capable(device.platform, &device.os_version, true);
        device.role = DeviceRole::AlreadyOnTarget;
    }

    let updatable = indices(devices, |d| d.role == DeviceRole::Updatable);
    let persistent = choose(rng, &updatable, mix.persistent_failure_share);
    let rest: Vec<usize> = updatable
        .iter()
        .copied()
        .filter(|index| !persistent.contains(index))
        .collect();
    let transient_count = share_count(mix.transient_failure_share, updatable.len()).min(rest.len());
    let transient = choose_count(rng, &rest, transient_count);
    for index in persistent {
        let kind = if rng.chance(0.5) {
            FailureKind::DownloadInsufficientSpace
        } else {
            FailureKind::DownloadInsufficientPower
        };
        devices[index].behaviour.failure = FailurePlan::Persistent(kind);
    }
    const ALL_KINDS: [FailureKind; 3] = [
        FailureKind::DownloadInsufficientSpace,
        FailureKind::DownloadInsufficientPower,
        FailureKind::InstallInsufficientPower,
    ];
    for index in transient {
        let kind = rng
            .pick(&ALL_KINDS)
            .copied()
            .unwrap_or(FailureKind::DownloadInsufficientSpace);
        devices[index].behaviour.failure = FailurePlan::Transient(kind);
    }

    for index in choose(rng, &updatable, mix.not_now_share) {
        devices[index].behaviour.not_now_first = true;
    }

    let ddm_updatable = indices(devices, |d| {
        d.role == DeviceRole::Updatable && d.ddm_capable
    });
    let early_candidates: Vec<usize> = ddm_updatable
        .iter()
        .copied()
        .filter(|index| {
            !matches!(
                devices[*index].behaviour.failure,
                FailurePlan::Persistent(_)
            )
        })
        .collect();
    let early_count =
        share_count(mix.user_early_install_share, ddm_updatable.len()).min(early_candidates.len());
    for index in choose_count(rng, &early_candidates, early_count) {
        devices[index].behaviour.user_early_install = true;
    }
}

fn indices(devices: &[SimDevice], keep: impl Fn(&SimDevice) -> bool) -> Vec<usize> {
    devices
        .iter()
        .enumerate()
        .filter(|(_, device)| keep(device))
        .map(|(index, _)| index)
        .collect()
}

/// Rounds `share` of `total` to a count.
pub(crate) fn share_count(share: f64, total: usize) -> usize {
    ((share * total as f64).round() as usize).min(total)
}

fn choose(rng: &mut SplitMix64, candidates: &[usize], share: f64) -> Vec<usize> {
    choose_count(rng, candidates, share_count(share, candidates.len()))
}

fn choose_count(rng: &mut SplitMix64, candidates: &[usize], count: usize) -> Vec<usize> {
    let mut chosen = candidates.to_vec();
    rng.shuffle(&mut chosen);
    chosen.truncate(count);
    chosen.sort_unstable();
    chosen
}

type Pool = (u32, f64, Vec<ModelChoice>);

/// Builds, per configured major, the models that list `target` and can
/// start on that major.
fn pools(
    platform: Platform,
    target: &TargetUpdate,
    majors: &[(u32, f64)],
) -> Result<Vec<Pool>, SimError> {
    let target_version: OsVersion = target.version.parse().map_err(|e| {
        invalid(format!(
            "the {} target version is invalid: {e}",
            platform.marketing_name()
        ))
    })?;
    let mut pools = Vec::new();
    for &(major, weight) in majors {
        let choices: Vec<ModelChoice> = ModelIndex::bundled()
            .models(platform)
            .filter_map(|model| model_choice(model, major, target, &target_version))
            .collect();
        if weight > 0.0 && choices.is_empty() {
            return Err(invalid(format!(
                "no {} model in the bundled catalog lists {} ({}) and can start on major {major}; change the target or the majors",
                platform.marketing_name(),
                target.version,
                target.build
            )));
        }
        pools.push((major, weight, choices));
    }
    Ok(pools)
}

fn model_choice(
    model: &'static KnownModel,
    major: u32,
    target: &TargetUpdate,
    target_version: &OsVersion,
) -> Option<ModelChoice> {
    match model.platform {
        Platform::MacOs => {
            if !model.supported_majors.contains(&major) {
                return None;
            }
        }
        Platform::Ios => {
            if first_iphone_major(&model.model_identifier)? > major {
                return None;
            }
        }
        Platform::IpadOs => return None,
    }
    let software_update_device_id = model
        .board_id
        .as_deref()
        .unwrap_or(model.model_identifier.as_str());
    let identity = DeviceIdentity {
        model: &model.model_identifier,
        software_update_device_id: Some(software_update_device_id),
        platform: model.platform,
        os_version: target_version,
        build: None,
    };
    let listed = Catalog::bundled().listed_updates(&identity);
    let lists_target = listed.iter().any(|update| {
        update.product_version.as_str() == target.version && update.build == target.build
    });
    if !lists_target {
        return None;
    }

    let mut starts: Vec<(String, String)> = Vec::new();
    for update in listed {
        let older = update.product_version < *target_version;
        let version = update.product_version.as_str();
        if update.background_security_improvement
            || update.product_version.major() != major
            || !older
            || starts.iter().any(|(seen, _)| seen == version)
        {
            continue;
        }
        // Records come in preferred-build order, so the first build of a
        // version is the one the device runs.
        starts.push((version.to_owned(), update.build.clone()));
    }
    if starts.is_empty() && model.platform == Platform::Ios && major == 17 {
        starts = IOS_17_RELEASES
            .iter()
            .map(|(version, build)| ((*version).to_owned(), (*build).to_owned()))
            .collect();
    }
    if starts.is_empty() {
        return None;
    }
    Some(ModelChoice { model, starts })
}

/// Returns the iOS major an iPhone shipped with. Through the iPhone 16
/// family (`iPhone17,x`) that is the identifier's first number plus one;
/// the iPhone 17 family (`iPhone18,x`) shipped with iOS 26. iPods return
/// `None`.
pub(crate) fn first_iphone_major(model_identifier: &str) -> Option<u32> {
    let rest = model_identifier.strip_prefix("iPhone")?;
    let generation: u32 = rest.split(',').next()?.parse().ok()?;
    Some(if generation <= 17 { generation + 1 } else { 26 })
}

/// Returns the product family of a model, the marketing name before its
/// parenthesised details: `MacBook Pro (13-inch, M2, 2022)` gives
/// `MacBook Pro`. iPhones give `iPhone`.
fn model_family(model: &KnownModel) -> String {
    if model.platform != Platform::MacOs {
        return "iPhone".to_owned();
    }
    let name = model.marketing_name.as_str();
    let family = name.split(" (").next().unwrap_or(name).trim();
    if family.is_empty() {
        "Mac".to_owned()
    } else {
        family.to_owned()
    }
}

fn unique(seen: &mut BTreeSet<String>, mut make: impl FnMut() -> String) -> String {
    loop {
        let value = make();
        if seen.insert(value.clone()) {
            return value;
        }
    }
}

fn serial_number(rng: &mut SplitMix64) -> String {
    (0..10)
        .map(|_| {
            let index = rng.below(SERIAL_CHARS.len() as u64) as usize;
            char::from(SERIAL_CHARS[index])
        })
        .collect()
}

/// Returns an uppercase random (version 4) UUID.
pub(crate) fn uuid_like(rng: &mut SplitMix64) -> String {
    let high = (rng.next_u64() & !0xF000) | 0x4000;
    let low = (rng.next_u64() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
        high >> 32,
        (high >> 16) & 0xFFFF,
        high & 0xFFFF,
        low >> 48,
        low & 0xFFFF_FFFF_FFFF
    )
}

fn invalid(detail: String) -> SimError {
    SimError::InvalidConfig { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(count: usize, seed: u64) -> Vec<SimDevice> {
        generate(
            count,
            seed,
            &FleetMix::default(),
            &ScenarioTargets::default(),
        )
        .expect("default mix generates")
    }

    fn count(devices: &[SimDevice], keep: impl Fn(&SimDevice) -> bool) -> usize {
        devices.iter().filter(|device| keep(device)).count()
    }

    #[test]
    fn same_seed_same_fleet() {
        let first = fleet(200, 17);
        let again = fleet(200, 17);
        let other = fleet(200, 18);

        assert_eq!(first, again);
        assert_ne!(first, other);
    }

    #[test]
    fn mix_shares_for_seed() {
        let mix = FleetMix::default();
        let devices = fleet(1000, 2026);

        let macs = count(&devices, |d| d.platform == Platform::MacOs);
        let unsupervised = count(&devices, |d| d.role == DeviceRole::Unsupervised);
        let eligible = devices.len() - unsupervised;
        let on_target = count(&devices, |d| d.role == DeviceRole::AlreadyOnTarget);
        let updatable = count(&devices, |d| d.role == DeviceRole::Updatable);
        let ddm_updatable = count(&devices, |d| {
            d.role == DeviceRole::Updatable && d.ddm_capable
        });
        let persistent = count(&devices, |d| {
            matches!(d.behaviour.failure, FailurePlan::Persistent(_))
        });
        let transient = count(&devices, |d| {
            matches!(d.behaviour.failure, FailurePlan::Transient(_))
        });
        let not_now = count(&devices, |d| d.behaviour.not_now_first);
        let early = count(&devices, |d| d.behaviour.user_early_install);

        // Platform and major shares are drawn per device, so allow sampling error.
        assert!((500..600).contains(&macs), "{macs} Macs of 1000");
        assert_eq!(unsupervised, share_count(mix.unsupervised_mac_share, macs));
        assert_eq!(on_target, share_count(mix.on_target_share, eligible));
        assert_eq!(updatable, eligible - on_target);
        assert_eq!(
            persistent,
            share_count(mix.persistent_failure_share, updatable)
        );
        assert_eq!(
            transient,
            share_count(mix.transient_failure_share, updatable)
        );
        assert_eq!(not_now, share_count(mix.not_now_share, updatable));
        assert_eq!(
            early,
            share_count(mix.user_early_install_share, ddm_updatable)
        );
    }

    #[test]
    fn behaviours_only_on_updatable_devices() {
        let devices = fleet(1000, 5);

        for device in &devices {
            if device.role != DeviceRole::Updatable {
                assert_eq!(device.behaviour, Behaviour::NORMAL, "{}", device.udid);
            }
            if device.behaviour.user_early_install {
                assert!(
                    device.ddm_capable,
                    "{} installs early without DDM",
                    device.udid
                );
                assert!(
                    !matches!(device.behaviour.failure, FailurePlan::Persistent(_)),
                    "{} both fails for good and installs early",
                    device.udid
                );
            }
            if let FailurePlan::Persistent(kind) = device.behaviour.failure {
                assert!(
                    !kind.is_install(),
                    "{} fails for good at install",
                    device.udid
                );
            }
        }
    }

    #[test]
    fn majors_and_zones_all_present() {
        let mix = FleetMix::default();
        let devices = fleet(1000, 9);

        for (major, _) in &mix.macos_majors {
            let present = devices.iter().any(|d| {
                d.platform == Platform::MacOs
                    && d.role == DeviceRole::Updatable
                    && d.os_version.starts_with(&format!("{major}."))
            });
            assert!(present, "no Mac starts on macOS {major}");
        }
        for (major, _) in &mix.ios_majors {
            let present = devices.iter().any(|d| {
                d.platform == Platform::Ios
                    && d.role == DeviceRole::Updatable
                    && d.os_version.starts_with(&format!("{major}."))
            });
            assert!(present, "no iPhone starts on iOS {major}");
        }
        for zone in &mix.time_zones {
            assert!(
                devices.iter().any(|d| &d.time_zone == zone),
                "no device in {zone}"
            );
        }
    }

    #[test]
    fn models_list_the_targets() {
        let targets = ScenarioTargets::default();
        let devices = fleet(300, 21);

        for device in &devices {
            let version: OsVersion = device.os_version.parse().expect("valid version");
            let identity = DeviceIdentity {
                model: &device.model,
                software_update_device_id: Some(&device.software_update_device_id),
                platform: device.platform,
                os_version: &version,
                build: Some(&device.build_version),
            };
            let target = targets.for_platform(device.platform);
            let listed = Catalog::bundled()
                .listed_updates(&identity)
                .iter()
                .any(|u| u.product_version.as_str() == target.version && u.build == target.build);
            assert!(
                listed,
                "{} ({}) is not listed for {target:?}",
                device.udid, device.model
            );
            if device.role == DeviceRole::Updatable {
                let target_version: OsVersion = target.version.parse().expect("valid target");
                assert!(
                    version < target_version,
                    "{} starts on {version}",
                    device.udid
                );
            }
        }
    }

    #[test]
    fn identifiers_unique_and_well_formed() {
        let devices = fleet(500, 33);
        let udids: BTreeSet<&str> = devices.iter().map(|d| d.udid.as_str()).collect();
        let serials: BTreeSet<&str> = devices.iter().map(|d| d.serial_number.as_str()).collect();

        assert_eq!(udids.len(), devices.len());
        assert_eq!(serials.len(), devices.len());
        for device in &devices {
            let groups: Vec<usize> = device.udid.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{}", device.udid);
            assert!(
                device
                    .udid
                    .chars()
                    .all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase()),
                "{}",
                device.udid
            );
            assert_eq!(device.serial_number.len(), 10, "{}", device.serial_number);
            assert!(device.name.contains("'s "), "{}", device.name);
        }
    }

    #[test]
    fn iphone_first_major_by_identifier() {
        let cases = [
            ("iPhone12,8", Some(13)),
            ("iPhone15,2", Some(16)),
            ("iPhone17,5", Some(18)),
            ("iPhone18,1", Some(26)),
            ("iPod9,1", None),
        ];
        for (model, expected) in cases {
            assert_eq!(first_iphone_major(model), expected, "{model}");
        }
    }
}
