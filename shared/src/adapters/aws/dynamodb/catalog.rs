//! [`CatalogStore`]: the latest imported catalog, one item.

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use jiff::Timestamp;

use super::codec::{CATALOG_PK, IMPORTED_AT, LATEST, PK, RAW, SK, key, nanos, require_blob};
use super::read::get_item;
use super::write::{WriteOp, write_all};
use super::{DynamoError, DynamoStore};
use crate::ports::{CatalogStore, StoreError, StoreResult};

/// DynamoDB's item size limit, 400 KB, counting attribute names and values.
pub(super) const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Bytes of the catalog item besides the catalog: the attribute names, the
/// key values and the import time (a number of at most 38 digits, stored in
/// at most 21 bytes).
fn catalog_overhead() -> usize {
    [PK, SK, RAW, IMPORTED_AT, CATALOG_PK, LATEST]
        .iter()
        .map(|text| text.len())
        .sum::<usize>()
        + 21
}

/// Checks that a catalog of `bytes` fits in one item.
pub(super) fn check_catalog_size(bytes: usize) -> StoreResult<()> {
    let total = bytes + catalog_overhead();
    if total > MAX_ITEM_BYTES {
        return Err(StoreError::backend(
            "store catalog",
            DynamoError::ItemTooLarge {
                what: "catalog",
                bytes: total,
                limit: MAX_ITEM_BYTES,
            },
        ));
    }
    Ok(())
}

#[async_trait]
impl CatalogStore for DynamoStore {
    /// Replaces the one catalog item. Apple's pmv JSON is about 105 KB,
    /// well under the 400 KB item limit; a larger catalog is rejected
    /// before anything is written.
    async fn put_catalog(&self, raw: &[u8], imported_at: Timestamp) -> StoreResult<()> {
        check_catalog_size(raw.len())?;
        let mut item = key(CATALOG_PK.to_string(), LATEST);
        item.insert(RAW.into(), AttributeValue::B(Blob::new(raw.to_vec())));
        item.insert(IMPORTED_AT.into(), nanos(imported_at));
        write_all(
            &self.client,
            vec![WriteOp::put(&self.tables.state, item)],
            "store catalog",
        )
        .await
        .map_err(|failure| {
            failure.into_store_error("store catalog", || {
                "catalog write met another write in flight; retry".to_string()
            })
        })
    }

    async fn latest_catalog(&self) -> StoreResult<Option<Vec<u8>>> {
        get_item(
            &self.client,
            &self.tables.state,
            key(CATALOG_PK.to_string(), LATEST),
            "read catalog",
        )
        .await?
        .map(|item| require_blob(&item, "catalog", RAW).map(<[u8]>::to_vec))
        .transpose()
    }
}
