//! `osdeploy catalog import FILE`.

use std::path::Path;

use jiff::Timestamp;
use osdeploy_shared::adapters::SqliteStore;
use osdeploy_shared::catalog::{Catalog, ModelIndex};
use osdeploy_shared::ports::CatalogStore;

/// Validates a pmv JSON file, stores it as the catalog in use and returns a
/// summary to print.
pub async fn import(file: &Path, database: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let bytes =
        std::fs::read(file).map_err(|e| format!("could not read {}: {e}", file.display()))?;
    let catalog = Catalog::from_pmv_json(&bytes, ModelIndex::bundled()).map_err(|e| {
        format!(
            "{} is not a valid Apple software-lookup (pmv) file: {e}",
            file.display()
        )
    })?;
    let store = SqliteStore::open(database)?;
    let now = Timestamp::now();
    store.put_catalog(&bytes, now).await?;
    let mut summary = format!(
        "imported {} into {}\n{}",
        file.display(),
        database.display(),
        catalog.summary()
    );
    if catalog.all_expired_at(now) {
        let latest = catalog
            .latest_posting_date()
            .map(|d| d.to_string())
            .unwrap_or_else(|| "unknown".into());
        summary.push_str(&format!(
            "\nwarning: every update in this file has expired (latest posting date {latest}); nothing in it can be deployed today"
        ));
    }
    Ok(summary)
}
