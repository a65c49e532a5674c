//! Export files in a local folder, for `osdeploy serve`, with download URLs
//! signed by HMAC-SHA256 that the local server checks with
//! [`LocalBlobStore::verify`] before it serves a file.
//!
//! Layout under the root folder: `objects/<key>` contains the body,
//! `content-types/<key>` its content type and `tmp/` the files being
//! written. Each file is written to `tmp/` and renamed into place, so a
//! reader never sees half a body.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use sha2::Sha256;

use crate::domain::Clock;
use crate::ports::{
    BlobStore, StoreError, StoreResult, validate_blob_key, validate_download_expiry,
};

type HmacSha256 = Hmac<Sha256>;

/// Shortest signing secret accepted, in bytes: the output size of SHA-256,
/// the key length RFC 2104 recommends as the minimum for HMAC-SHA256.
pub const MIN_SECRET_LEN: usize = 32;

/// Path prefix of download URLs when none is configured.
pub const DEFAULT_URL_PREFIX: &str = "/exports";

/// Errors from building a [`LocalBlobStore`].
#[derive(Debug, thiserror::Error)]
pub enum LocalBlobsError {
    #[error(
        "download URL secret is {length} bytes, shorter than the minimum of {MIN_SECRET_LEN}; \
         configure a random secret of at least {MIN_SECRET_LEN} bytes"
    )]
    SecretTooShort { length: usize },
    #[error("could not create the export folder {path}")]
    CreateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why [`LocalBlobStore::verify`] rejected a download URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("download URL for {key:?} expired at {expired_at}; request a new download URL")]
    Expired { key: String, expired_at: Timestamp },
    /// The key, expiry or signature was changed, or another secret signed it.
    #[error(
        "invalid signature on the download URL for {key:?}: the URL was changed or signed \
         with another secret; request a new download URL"
    )]
    InvalidSignature { key: String },
    #[error("{0}")]
    InvalidKey(String),
}

/// Blob store in a local folder.
pub struct LocalBlobStore {
    root: PathBuf,
    /// HMAC-SHA256 keyed with the secret, cloned for each signature.
    signer: HmacSha256,
    url_prefix: String,
    clock: Arc<dyn Clock>,
}

/// Counter that makes temporary file names unique within the process.
static TEMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl LocalBlobStore {
    /// Opens (and creates if needed) the store under `root`. Download URLs
    /// are `<url_prefix>/<key>?expires=<unix seconds>&signature=<hex>`,
    /// with `url_prefix` such as `/exports` or `http://127.0.0.1:8080/exports`.
    pub fn open(
        root: impl Into<PathBuf>,
        secret: impl Into<Vec<u8>>,
        url_prefix: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LocalBlobsError> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_LEN {
            return Err(LocalBlobsError::SecretTooShort {
                length: secret.len(),
            });
        }
        // HMAC takes keys of any length, so this error cannot occur.
        let signer =
            HmacSha256::new_from_slice(&secret).map_err(|_| LocalBlobsError::SecretTooShort {
                length: secret.len(),
            })?;
        let root = root.into();
        for folder in ["objects", "content-types", "tmp"] {
            let path = root.join(folder);
            std::fs::create_dir_all(&path)
                .map_err(|source| LocalBlobsError::CreateFolder { path, source })?;
        }
        let url_prefix = url_prefix.into().trim_end_matches('/').to_string();
        Ok(LocalBlobStore {
            root,
            signer,
            url_prefix,
            clock,
        })
    }

    /// Returns the content type stored with `key`, or `None` when there is none.
    pub async fn content_type(&self, key: &str) -> StoreResult<Option<String>> {
        validate_blob_key(key)?;
        let path = self.root.join("content-types").join(key);
        let bytes = blocking("read content type", move || read_optional(&path)).await?;
        Ok(bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Returns the file that contains the body of `key`, which may not exist.
    /// The local server streams downloads from it.
    pub fn object_path(&self, key: &str) -> StoreResult<PathBuf> {
        validate_blob_key(key)?;
        Ok(self.root.join("objects").join(key))
    }

    /// Checks a download URL's parts: the signature must match `key` and
    /// `expires` (unix seconds), and `now` must be before `expires`. The
    /// signature is compared in constant time.
    pub fn verify(
        &self,
        key: &str,
        expires: i64,
        signature: &str,
        now: Timestamp,
    ) -> Result<(), SignatureError> {
        validate_blob_key(key).map_err(|e| SignatureError::InvalidKey(e.to_string()))?;
        let invalid = || SignatureError::InvalidSignature {
            key: key.to_string(),
        };
        let signature = hex::decode(signature).map_err(|_| invalid())?;
        self.mac(key, expires)
            .verify_slice(&signature)
            .map_err(|_| invalid())?;
        if now.as_second() >= expires {
            return Err(SignatureError::Expired {
                key: key.to_string(),
                expired_at: Timestamp::from_second(expires).unwrap_or(Timestamp::MAX),
            });
        }
        Ok(())
    }

    /// HMAC over `key`, a newline and `expires`. Keys never contain a
    /// newline, so no two (key, expires) pairs sign the same message.
    fn mac(&self, key: &str, expires: i64) -> HmacSha256 {
        let mut mac = self.signer.clone();
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &str, content_type: &str, body: Vec<u8>) -> StoreResult<()> {
        validate_blob_key(key)?;
        let object = self.root.join("objects").join(key);
        let type_file = self.root.join("content-types").join(key);
        let tmp = self.root.join("tmp");
        let content_type = content_type.as_bytes().to_vec();
        blocking("put blob", move || {
            // The content type is written first, so a reader that gets the
            // new body also gets its content type.
            write_atomically(&tmp, &type_file, &content_type)?;
            write_atomically(&tmp, &object, &body)
        })
        .await
    }

    async fn put_file(&self, key: &str, content_type: &str, path: &Path) -> StoreResult<()> {
        validate_blob_key(key)?;
        let object = self.root.join("objects").join(key);
        let type_file = self.root.join("content-types").join(key);
        let tmp = self.root.join("tmp");
        let source = path.to_path_buf();
        let content_type = content_type.as_bytes().to_vec();
        blocking("put blob from file", move || {
            write_atomically(&tmp, &type_file, &content_type)?;
            copy_atomically(&tmp, &object, &source)
        })
        .await
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        validate_blob_key(key)?;
        let object = self.root.join("objects").join(key);
        blocking("get blob", move || read_optional(&object)).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        validate_blob_key(key)?;
        let object = self.root.join("objects").join(key);
        let type_file = self.root.join("content-types").join(key);
        blocking("delete blob", move || {
            remove_optional(&object)?;
            remove_optional(&type_file)
        })
        .await
    }

    async fn download_url(&self, key: &str, expires_in: SignedDuration) -> StoreResult<String> {
        validate_blob_key(key)?;
        validate_download_expiry(expires_in)?;
        let expires = (self.clock.now() + expires_in).as_second();
        let signature = hex::encode(self.mac(key, expires).finalize().into_bytes());
        Ok(format!(
            "{}/{key}?expires={expires}&signature={signature}",
            self.url_prefix
        ))
    }
}

/// Runs blocking file I/O off the async runtime.
async fn blocking<T, F>(operation: &'static str, work: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| StoreError::backend(operation, e)),
        Err(join) => Err(StoreError::backend(operation, join)),
    }
}

/// Reads a file; a missing file, or a folder in its place (a key that only
/// prefixes other keys), is `None`.
fn read_optional(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => Ok(None),
        Err(e) if path.is_dir() => {
            tracing::debug!(path = %path.display(), error = %e, "blob key names a folder");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn remove_optional(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == ErrorKind::NotFound || path.is_dir() => Ok(()),
        other => other,
    }
}

/// Writes `bytes` to a new file in `tmp` and renames it to `path`, which
/// replaces any earlier file in one step on the same file system.
///
/// NOTE: S3 can hold both `a` and `a/b` as keys, but a folder cannot hold a
/// file and a folder of one name, so the second of those puts fails here.
fn write_atomically(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_through_temp(tmp, path, |temp| std::fs::write(temp, bytes))
}

/// Copies the file at `source` to a new file in `tmp` and renames it to
/// `path`. The copy streams through a fixed buffer, so a large export file
/// is never held in memory. `source` may be on another file system, which
/// is why it is copied and not renamed.
fn copy_atomically(tmp: &Path, path: &Path, source: &Path) -> std::io::Result<()> {
    replace_through_temp(tmp, path, |temp| std::fs::copy(source, temp).map(drop))
}

/// Creates a temporary file in `tmp` with `fill` and renames it to `path`,
/// removing the temporary file when either step fails.
fn replace_through_temp(
    tmp: &Path,
    path: &Path,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let sequence = TEMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let temp = tmp.join(format!("{}-{sequence}", std::process::id()));
    let result = fill(&temp).and_then(|()| std::fs::rename(&temp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ManualClock;
    use crate::ports::contract;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// 2026-01-05T09:00:00Z.
    const NOW: Timestamp = Timestamp::constant(1_767_603_600, 0);

    fn open(dir: &Path, clock: Arc<ManualClock>) -> LocalBlobStore {
        match LocalBlobStore::open(dir, SECRET, "/exports", clock) {
            Ok(store) => store,
            Err(e) => panic!("open local blob store: {e}"),
        }
    }

    /// Splits `/exports/<key>?expires=<n>&signature=<hex>` into its parts.
    fn parse_url(url: &str) -> (String, i64, String) {
        let rest = url
            .strip_prefix("/exports/")
            .unwrap_or_else(|| panic!("URL {url:?} must start with /exports/"));
        let (key, query) = rest
            .split_once('?')
            .unwrap_or_else(|| panic!("URL {url:?} must have a query"));
        let mut expires = None;
        let mut signature = None;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("expires", value)) => expires = value.parse::<i64>().ok(),
                Some(("signature", value)) => signature = Some(value.to_string()),
                _ => panic!("unexpected query pair {pair:?} in {url:?}"),
            }
        }
        (
            key.to_string(),
            expires.unwrap_or_else(|| panic!("URL {url:?} lacks a numeric expires")),
            signature.unwrap_or_else(|| panic!("URL {url:?} lacks a signature")),
        )
    }

    #[tokio::test]
    async fn blob_contract_on_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sequence = AtomicU64::new(0);
        contract::blobs::run_all(|| {
            let root = dir
                .path()
                .join(sequence.fetch_add(1, Ordering::Relaxed).to_string());
            async move { open(&root, Arc::new(ManualClock::new(NOW))) }
        })
        .await;
    }

    #[test]
    fn open_rejects_short_secret() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock::new(NOW));
        let result = LocalBlobStore::open(dir.path(), &SECRET[..31], "/exports", clock);
        assert!(
            matches!(result, Err(LocalBlobsError::SecretTooShort { length: 31 })),
            "a 31-byte secret must be rejected"
        );
    }

    #[tokio::test]
    async fn download_url_has_signed_expiry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path(), Arc::new(ManualClock::new(NOW)));
        let url = store
            .download_url("exports/op-1/targets.csv", SignedDuration::from_mins(15))
            .await
            .expect("download_url");
        let (key, expires, signature) = parse_url(&url);

        assert_eq!(key, "exports/op-1/targets.csv");
        assert_eq!(expires, NOW.as_second() + 15 * 60);
        assert_eq!(
            signature.len(),
            64,
            "an HMAC-SHA256 is 32 bytes, 64 hex digits"
        );
        assert_eq!(store.verify(&key, expires, &signature, NOW), Ok(()));
    }

    #[tokio::test]
    async fn verify_rejects_tampering() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path(), Arc::new(ManualClock::new(NOW)));
        let url = store
            .download_url("exports/a.csv", SignedDuration::from_hours(1))
            .await
            .expect("download_url");
        let (key, expires, signature) = parse_url(&url);
        let mut flipped = signature.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("hex is ASCII");
        let other_secret = LocalBlobStore::open(
            dir.path().join("other"),
            b"another secret of thirty-two bytes!".to_vec(),
            "/exports",
            Arc::new(ManualClock::new(NOW)),
        )
        .expect("open");
        let (_, _, foreign) = parse_url(
            &other_secret
                .download_url("exports/a.csv", SignedDuration::from_hours(1))
                .await
                .expect("download_url"),
        );

        let cases: [(&str, &str, i64, &str); 6] = [
            ("other key", "exports/b.csv", expires, &signature),
            ("later expiry", &key, expires + 3600, &signature),
            ("one digit changed", &key, expires, &flipped),
            ("not hex", &key, expires, "zz"),
            ("empty signature", &key, expires, ""),
            ("another secret", &key, expires, &foreign),
        ];
        for (case, key, expires, signature) in cases {
            assert_eq!(
                store.verify(key, expires, signature, NOW),
                Err(SignatureError::InvalidSignature {
                    key: key.to_string()
                }),
                "{case} must be rejected as an invalid signature"
            );
        }
    }

    #[tokio::test]
    async fn verify_rejects_after_expiry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock::new(NOW));
        let store = open(dir.path(), clock.clone());
        let url = store
            .download_url("exports/a.csv", SignedDuration::from_mins(10))
            .await
            .expect("download_url");
        let (key, expires, signature) = parse_url(&url);
        let last_valid = NOW + SignedDuration::from_mins(10) - SignedDuration::from_secs(1);
        let deadline = NOW + SignedDuration::from_mins(10);

        assert_eq!(store.verify(&key, expires, &signature, last_valid), Ok(()));
        assert_eq!(
            store.verify(&key, expires, &signature, deadline),
            Err(SignatureError::Expired {
                key: key.clone(),
                expired_at: deadline
            }),
            "the URL must be expired at its expiry second"
        );
    }

    #[tokio::test]
    async fn verify_rejects_invalid_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path(), Arc::new(ManualClock::new(NOW)));
        let result = store.verify("../etc/passwd", NOW.as_second() + 60, "00", NOW);
        assert!(
            matches!(result, Err(SignatureError::InvalidKey(_))),
            "a key with '..' must be rejected before the signature check, got {result:?}"
        );
    }

    #[tokio::test]
    async fn content_type_follows_put() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path(), Arc::new(ManualClock::new(NOW)));
        store
            .put("exports/a.csv", "text/csv", b"a,b\n".to_vec())
            .await
            .expect("put");
        assert_eq!(
            store
                .content_type("exports/a.csv")
                .await
                .expect("content_type"),
            Some("text/csv".to_string())
        );
        store.delete("exports/a.csv").await.expect("delete");
        assert_eq!(
            store
                .content_type("exports/a.csv")
                .await
                .expect("content_type"),
            None,
            "delete must remove the content type too"
        );
    }

    #[tokio::test]
    async fn blobs_stay_inside_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("store");
        let store = open(&root, Arc::new(ManualClock::new(NOW)));
        store
            .put("exports/op-1/a.csv", "text/csv", b"x".to_vec())
            .await
            .expect("put");
        assert!(root.join("objects/exports/op-1/a.csv").is_file());
        let tmp_entries = std::fs::read_dir(root.join("tmp"))
            .expect("read tmp")
            .count();
        assert_eq!(tmp_entries, 0, "no temporary file may remain after a put");
    }
}
