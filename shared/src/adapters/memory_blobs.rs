//! A [`BlobStore`] that keeps bodies in memory, for tests and tools that run
//! the services without serving downloads. It checks keys and expiries as
//! the port requires. Its download URLs use the `memory:` scheme, which no
//! HTTP client fetches, so nothing can depend on them by accident.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use jiff::SignedDuration;

use crate::ports::{
    BlobStore, StoreError, StoreResult, validate_blob_key, validate_download_expiry,
};

/// Bodies and content types by key.
#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    objects: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

impl MemoryBlobStore {
    pub fn new() -> Self {
        MemoryBlobStore::default()
    }

    /// Returns the content type stored with `key`, if any.
    pub fn content_type(&self, key: &str) -> Option<String> {
        self.lock()
            .get(key)
            .map(|(content_type, _)| content_type.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Vec<u8>)>> {
        // A panic while holding the lock leaves the map consistent: every
        // write is one insert or remove.
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn put(&self, key: &str, content_type: &str, body: Vec<u8>) -> StoreResult<()> {
        validate_blob_key(key)?;
        self.lock()
            .insert(key.to_string(), (content_type.to_string(), body));
        Ok(())
    }

    async fn put_file(&self, key: &str, content_type: &str, path: &Path) -> StoreResult<()> {
        validate_blob_key(key)?;
        // NOTE: reads the whole file into memory, which suits tests and small files only.
        let body = tokio::fs::read(path)
            .await
            .map_err(|e| StoreError::backend("put_file read", e))?;
        self.put(key, content_type, body).await
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        validate_blob_key(key)?;
        Ok(self.lock().get(key).map(|(_, body)| body.clone()))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        validate_blob_key(key)?;
        self.lock().remove(key);
        Ok(())
    }

    async fn download_url(&self, key: &str, expires_in: SignedDuration) -> StoreResult<String> {
        validate_blob_key(key)?;
        validate_download_expiry(expires_in)?;
        Ok(format!(
            "memory:///{key}?expires_in={}",
            expires_in.as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::contract;

    #[tokio::test]
    async fn memory_blobs_pass_the_contract() {
        contract::blobs::run_all(|| async { MemoryBlobStore::new() }).await;
    }

    #[tokio::test]
    async fn stores_content_type() {
        let store = MemoryBlobStore::new();
        let stored = store
            .put("exports/a.csv", "text/csv", b"a\r\n".to_vec())
            .await;
        assert!(stored.is_ok(), "{stored:?}");
        assert_eq!(
            store.content_type("exports/a.csv").as_deref(),
            Some("text/csv")
        );
    }
}
