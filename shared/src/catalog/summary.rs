//! Counts from reading a catalog, printed by `osdeploy catalog import`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Counts of the entries, builds and devices a catalog import read, kept and skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CatalogSummary {
    /// Entries in every set and bucket, including skipped buckets.
    pub entries_read: usize,
    /// Entries that list at least one Mac, iPhone, iPod or iPad.
    pub entries_kept: usize,
    /// Entries that list none of those.
    pub entries_skipped: usize,
    /// Skipped device listings (one per entry and device) by OS family:
    /// `watchOS`, `tvOS`, `HomePod`, `visionOS`, `unrecognized`, or the
    /// name of a bucket this crate does not know.
    pub skipped_devices: BTreeMap<String, usize>,
    /// Distinct builds kept.
    pub builds_kept: usize,
    /// Distinct (build, device) pairs kept.
    pub device_listings_kept: usize,
    /// Catalog records kept (see `CatalogUpdate`).
    pub updates: usize,
}

impl fmt::Display for CatalogSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read {} entries: kept {} ({} builds, {} build-device pairs, {} updates), skipped {}",
            self.entries_read,
            self.entries_kept,
            self.builds_kept,
            self.device_listings_kept,
            self.updates,
            self.entries_skipped,
        )?;
        if !self.skipped_devices.is_empty() {
            let families: Vec<String> = self
                .skipped_devices
                .iter()
                .map(|(family, count)| format!("{family} {count}"))
                .collect();
            write!(f, "; skipped device listings: {}", families.join(", "))?;
        }
        Ok(())
    }
}
