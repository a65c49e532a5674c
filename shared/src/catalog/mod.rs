//! Apple's software-update catalog: which OS versions and builds Apple still
//! signs for which device, until when, and what each managed device may be
//! asked to install.
//!
//! The source is the reply of Apple's Software Lookup Service
//! (`gdmf.apple.com/v2/pmv`). A snapshot of it and SOFA's device model lists
//! are bundled (see `shared/data/catalog/SOURCE.md`).
//!
//! Rules applied to Apple's data:
//! - Facts are kept per (build, device), never per build alone, because Apple
//!   lists one build several times with different devices and expirations.
//! - A build's release date is the earliest `PostingDate` in any set, and a
//!   (build, device)'s expiration is the latest `ExpirationDate` listing it.
//! - Only macOS, iOS (iPhone, iPod) and iPadOS are kept. watchOS, tvOS,
//!   HomePod and visionOS entries are counted in the summary and dropped.
//! - An update cannot be installed after its expiration day (UTC).

mod error;
mod models;
mod pmv;
mod query;
mod summary;
mod update;

#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use jiff::Timestamp;
use jiff::civil::Date;

pub use error::{CatalogError, ResolveError};
pub use models::{KnownModel, ModelIndex};
pub use summary::CatalogSummary;
pub use update::{CatalogUpdate, Deployable, DeviceIdentity, UpgradeKind, VersionSummary};

const BUNDLED_PMV: &[u8] = include_bytes!("../../data/catalog/pmv.json");

/// The updates Apple lists for the platforms osdeploy deploys to, with the
/// model index used to match devices against them.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Sorted by platform, then version newest first, then preferred build.
    updates: Vec<CatalogUpdate>,
    models: ModelIndex,
    summary: CatalogSummary,
    latest_posting_date: Option<Date>,
}

impl Catalog {
    /// Reads a pmv reply (`gdmf.apple.com/v2/pmv` or a saved copy).
    ///
    /// Unknown top-level keys, unknown keys in entries and buckets other than
    /// `iOS` and `macOS` are tolerated. `PublicAssetSets` and `AssetSets` must
    /// exist with both the `iOS` and `macOS` buckets.
    pub fn from_pmv_json(bytes: &[u8], models: &ModelIndex) -> Result<Catalog, CatalogError> {
        let parsed = pmv::parse(bytes)?;
        Ok(Catalog {
            updates: parsed.updates,
            models: models.clone(),
            summary: parsed.summary,
            latest_posting_date: parsed.latest_posting_date,
        })
    }

    /// Returns the catalog built from the snapshot bundled with this crate
    /// (fetched 2026-08-22, with every update expiring by 2026-11-20).
    pub fn bundled() -> &'static Catalog {
        static BUNDLED: OnceLock<Catalog> = OnceLock::new();
        BUNDLED.get_or_init(|| {
            // The snapshot is fixed at build time, and a test parses it.
            Catalog::from_pmv_json(BUNDLED_PMV, ModelIndex::bundled())
                .expect("bundled pmv snapshot is a valid catalog")
        })
    }

    /// Lists every record, sorted by platform, then version newest first,
    /// then in the order builds are preferred.
    pub fn updates(&self) -> &[CatalogUpdate] {
        &self.updates
    }

    /// Returns the model index this catalog matches devices with.
    pub fn models(&self) -> &ModelIndex {
        &self.models
    }

    /// Returns the counts of what the import read, kept and skipped.
    pub fn summary(&self) -> &CatalogSummary {
        &self.summary
    }

    /// Returns the newest `PostingDate` of any kept entry, before release
    /// dates are merged. It shows how recent the catalog is.
    pub fn latest_posting_date(&self) -> Option<Date> {
        self.latest_posting_date
    }

    /// Returns whether no update can be installed any more at `now`. An empty
    /// catalog counts as expired.
    pub fn all_expired_at(&self, now: Timestamp) -> bool {
        self.updates.iter().all(|update| update.is_expired_at(now))
    }
}
