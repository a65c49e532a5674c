//! Questions asked of the catalog: what a device can install, which build a
//! requested version means for it, and the update list of the admin API.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::update::build_preference;
use super::{
    Catalog, CatalogUpdate, Deployable, DeviceIdentity, ResolveError, UpgradeKind, VersionSummary,
};
use crate::domain::{OsVersion, Platform};

impl Catalog {
    /// Lists the updates a device can install at `now`, newest first, with
    /// one build per version.
    ///
    /// An update qualifies when it is for the device's platform, lists the
    /// device, has not expired, and is newer than the device's OS version. A
    /// background security improvement qualifies instead when the device runs
    /// its `PrerequisiteBuild`. Among several builds of one version that list
    /// the device, the preferred one is chosen (see `build_preference`).
    pub fn deployable_for<'c>(
        &'c self,
        device: &DeviceIdentity<'_>,
        now: Timestamp,
    ) -> Vec<Deployable<'c>> {
        let identifiers = self.device_identifiers(device);
        let mut chosen: BTreeMap<(OsVersion, Option<String>), &'c CatalogUpdate> = BTreeMap::new();

        for update in &self.updates {
            if !lists_device(update, device.platform, &identifiers) || update.is_expired_at(now) {
                continue;
            }
            let applies = if update.background_security_improvement {
                device.build.is_some() && device.build == update.prerequisite_build.as_deref()
            } else {
                update.product_version > *device.os_version
            };
            if !applies {
                continue;
            }
            let key = (
                update.product_version.clone(),
                update.product_version_extra.clone(),
            );
            chosen
                .entry(key)
                .and_modify(|current| {
                    if build_preference(update, current).is_lt() {
                        *current = update;
                    }
                })
                .or_insert(update);
        }

        // The map is ordered oldest first, so reversing gives newest first.
        chosen
            .into_values()
            .rev()
            .map(|update| Deployable {
                update,
                upgrade: UpgradeKind::between(device.os_version, &update.product_version),
            })
            .collect()
    }

    /// Chooses the build of `product_version` that a device should install at
    /// `now`.
    ///
    /// Checks run in this order: the version exists for the device's
    /// platform, the device does not already run it or newer (`NotNewer`),
    /// some build lists the device, and a listing build has not expired.
    /// Background security improvements are not considered here (see
    /// `resolve_background_security_improvement`).
    pub fn resolve<'c>(
        &'c self,
        product_version: &OsVersion,
        device: &DeviceIdentity<'_>,
        now: Timestamp,
    ) -> Result<Deployable<'c>, ResolveError> {
        let versions: Vec<&CatalogUpdate> = self
            .updates
            .iter()
            .filter(|update| {
                !update.background_security_improvement
                    && update.platform == device.platform
                    && update.product_version == *product_version
            })
            .collect();
        if versions.is_empty() {
            return Err(ResolveError::NotInCatalog {
                platform: device.platform,
                version: product_version.clone(),
                extra: None,
            });
        }
        if device.os_version >= product_version {
            return Err(ResolveError::NotNewer {
                version: product_version.clone(),
                current: device.os_version.clone(),
            });
        }

        let update = self.pick_live_listing(&versions, product_version, device, now)?;
        Ok(Deployable {
            update,
            upgrade: UpgradeKind::between(device.os_version, &update.product_version),
        })
    }

    /// Chooses the build of a background security improvement, such as
    /// `26.3.1` with `extra` `(a)`, that a device should install at `now`.
    ///
    /// Besides the checks of `resolve`, the device must run the
    /// improvement's `PrerequisiteBuild`. A device that already runs the
    /// improvement's build or a newer version gets `NotNewer`.
    pub fn resolve_background_security_improvement<'c>(
        &'c self,
        product_version: &OsVersion,
        extra: &str,
        device: &DeviceIdentity<'_>,
        now: Timestamp,
    ) -> Result<Deployable<'c>, ResolveError> {
        let candidates: Vec<&CatalogUpdate> = self
            .updates
            .iter()
            .filter(|update| {
                update.background_security_improvement
                    && update.platform == device.platform
                    && update.product_version == *product_version
                    && update.product_version_extra.as_deref() == Some(extra)
            })
            .collect();
        if candidates.is_empty() {
            return Err(ResolveError::NotInCatalog {
                platform: device.platform,
                version: product_version.clone(),
                extra: Some(extra.to_string()),
            });
        }
        let already_installed = candidates
            .iter()
            .any(|update| device.build == Some(update.build.as_str()));
        if already_installed || device.os_version > product_version {
            return Err(ResolveError::NotNewer {
                version: product_version.clone(),
                current: device.os_version.clone(),
            });
        }

        // Checks listing and expiry first, so those errors win over a missing
        // prerequisite.
        let preferred = self.pick_live_listing(&candidates, product_version, device, now)?;
        let on_prerequisite: Vec<&CatalogUpdate> = candidates
            .iter()
            .copied()
            .filter(|update| {
                device.build.is_some() && device.build == update.prerequisite_build.as_deref()
            })
            .collect();
        let Ok(update) = self.pick_live_listing(&on_prerequisite, product_version, device, now)
        else {
            return Err(ResolveError::PrerequisiteBuildRequired {
                version: product_version.clone(),
                extra: extra.to_string(),
                prerequisite_build: preferred.prerequisite_build.clone().unwrap_or_default(),
                current_build: device.build.map(str::to_string),
            });
        };
        Ok(Deployable {
            update,
            upgrade: UpgradeKind::Minor,
        })
    }

    /// Returns the preferred unexpired record among `candidates` that lists
    /// the device.
    fn pick_live_listing<'c>(
        &self,
        candidates: &[&'c CatalogUpdate],
        product_version: &OsVersion,
        device: &DeviceIdentity<'_>,
        now: Timestamp,
    ) -> Result<&'c CatalogUpdate, ResolveError> {
        let identifiers = self.device_identifiers(device);
        let listing: Vec<&'c CatalogUpdate> = candidates
            .iter()
            .copied()
            .filter(|update| lists_device(update, device.platform, &identifiers))
            .collect();

        let live = listing
            .iter()
            .copied()
            .filter(|update| !update.is_expired_at(now));
        if let Some(update) = live.min_by(|left, right| build_preference(left, right)) {
            return Ok(update);
        }

        // Report the listing that stayed valid longest, the preferred build on a tie.
        let longest = listing.iter().max_by(|left, right| {
            left.expiration_date
                .cmp(&right.expiration_date)
                .then_with(|| build_preference(right, left))
        });
        match longest {
            Some(expired) => Err(ResolveError::Expired {
                version: product_version.clone(),
                build: expired.build.clone(),
                expired_on: expired.expiration_date,
            }),
            None => Err(ResolveError::NotApplicable {
                version: product_version.clone(),
                model: device.model.to_string(),
            }),
        }
    }

    /// Lists every record that lists the device, expired or not, in catalog
    /// order. The device's OS version and build are not consulted.
    pub fn listed_updates<'c>(&'c self, device: &DeviceIdentity<'_>) -> Vec<&'c CatalogUpdate> {
        let identifiers = self.device_identifiers(device);
        self.updates
            .iter()
            .filter(|update| lists_device(update, device.platform, &identifiers))
            .collect()
    }

    /// Lists one row per platform and version (background security
    /// improvements get their own rows), ordered by platform, then newest
    /// first. `platform` limits the rows to one platform.
    pub fn versions(&self, platform: Option<Platform>, now: Timestamp) -> Vec<VersionSummary> {
        let mut rows: Vec<VersionSummary> = Vec::new();
        let mut devices: Vec<BTreeSet<&str>> = Vec::new();

        for update in &self.updates {
            if platform.is_some_and(|wanted| wanted != update.platform) {
                continue;
            }
            // Records are sorted by platform and version, so one version's
            // records are adjacent.
            let same_row = rows.last().is_some_and(|row| {
                row.platform == update.platform
                    && row.product_version == update.product_version
                    && row.product_version_extra == update.product_version_extra
            });
            if !same_row {
                rows.push(VersionSummary {
                    platform: update.platform,
                    product_version: update.product_version.clone(),
                    product_version_extra: update.product_version_extra.clone(),
                    name: update.name(),
                    builds: Vec::new(),
                    release_date: update.release_date,
                    expiration_date: update.expiration_date,
                    expired: true,
                    background_security_improvement: update.background_security_improvement,
                    device_count: 0,
                });
                devices.push(BTreeSet::new());
            }

            let (Some(row), Some(row_devices)) = (rows.last_mut(), devices.last_mut()) else {
                continue;
            };
            if !row.builds.contains(&update.build) {
                row.builds.push(update.build.clone());
            }
            row.release_date = row.release_date.min(update.release_date);
            row.expiration_date = row.expiration_date.max(update.expiration_date);
            row.expired &= update.is_expired_at(now);
            row_devices.extend(update.supported_devices.iter().map(String::as_str));
            row.device_count = row_devices.len();
        }
        rows
    }

    /// Returns the identifiers under which the catalog may list a device: its
    /// model identifier, its software-update device ID and, for a Mac, every
    /// board ID the model index has for its model.
    fn device_identifiers<'x>(&'x self, device: &DeviceIdentity<'x>) -> Vec<&'x str> {
        let mut identifiers = vec![device.model];
        if let Some(device_id) = device.software_update_device_id {
            identifiers.push(device_id);
        }
        if device.platform == Platform::MacOs {
            let boards = self.models.board_ids_for_model(device.model);
            identifiers.extend(boards.iter().map(String::as_str));
        }
        identifiers
    }
}

fn lists_device(update: &CatalogUpdate, platform: Platform, identifiers: &[&str]) -> bool {
    update.platform == platform
        && identifiers
            .iter()
            .any(|identifier| update.lists(identifier))
}
