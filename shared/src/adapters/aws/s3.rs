//! Export files in an S3 bucket, downloaded through presigned GET URLs.
//!
//! Every object is written with server-side encryption `AES256` (SSE-S3),
//! on top of whatever default encryption the bucket has. Download URLs are
//! SigV4 presigned GET requests, valid for at most 7 days.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use jiff::SignedDuration;

use super::AwsSettings;
use crate::ports::{
    BlobStore, StoreError, StoreResult, validate_blob_key, validate_download_expiry,
};

/// Errors from S3 calls, kept as the `source` of [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[error("S3 {action} of s3://{bucket}/{key} failed")]
pub struct S3Error {
    pub action: &'static str,
    pub bucket: String,
    pub key: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// [`BlobStore`] on one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
}

impl S3BlobStore {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        S3BlobStore {
            client,
            bucket: bucket.into(),
        }
    }

    /// Builds the client from `aws`. With an endpoint set (an emulator),
    /// requests use path-style addressing (`http://host/bucket/key`),
    /// because a bucket-name subdomain of 127.0.0.1 does not resolve.
    pub async fn connect(aws: &AwsSettings, bucket: impl Into<String>) -> Self {
        let sdk_config = aws.sdk_config().await;
        let config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(aws.endpoint_url.is_some())
            .build();
        Self::new(Client::from_conf(config), bucket)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn error(
        &self,
        action: &'static str,
        key: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::backend(
            "s3",
            S3Error {
                action,
                bucket: self.bucket.clone(),
                key: key.to_string(),
                source: source.into(),
            },
        )
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, content_type: &str, body: Vec<u8>) -> StoreResult<()> {
        validate_blob_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error("PutObject", key, e))?;
        Ok(())
    }

    async fn put_file(
        &self,
        key: &str,
        content_type: &str,
        path: &std::path::Path,
    ) -> StoreResult<()> {
        validate_blob_key(key)?;
        // ByteStream::from_path reads the file in chunks while sending, and
        // sets the Content-Length from the file's size.
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| self.error("PutObject file read", key, e))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(body)
            .send()
            .await
            .map_err(|e| self.error("PutObject", key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        validate_blob_key(key)?;
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(self.error("GetObject", key, e)),
        };
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| self.error("GetObject body read", key, e))?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        validate_blob_key(key)?;
        // DeleteObject succeeds for a missing key, so no error is mapped.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", key, e))?;
        Ok(())
    }

    async fn download_url(&self, key: &str, expires_in: SignedDuration) -> StoreResult<String> {
        validate_blob_key(key)?;
        validate_download_expiry(expires_in)?;
        let expires_in = expires_in.unsigned_abs();
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|e| self.error("presign GetObject", key, e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| self.error("presign GetObject", key, e))?;
        Ok(request.uri().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MAX_DOWNLOAD_URL_EXPIRY;

    /// Builds a store whose client never sends a request in these tests: presigning
    /// is local, and invalid input is rejected before any call. The port is
    /// the discard port, so a request sent by mistake fails at once.
    async fn offline_store() -> S3BlobStore {
        S3BlobStore::connect(
            &AwsSettings::emulator("http://127.0.0.1:9"),
            "osdeploy-exports",
        )
        .await
    }

    /// Splits the query of `url` into (name, value) pairs.
    fn query_pairs(url: &str) -> Vec<(String, String)> {
        let (_, query) = url
            .split_once('?')
            .unwrap_or_else(|| panic!("presigned URL {url:?} must have a query"));
        query
            .split('&')
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (name.to_string(), value.to_string())
            })
            .collect()
    }

    fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn presigned_url_carries_expiry_and_signature() {
        let store = offline_store().await;
        let url = store
            .download_url("exports/op-1/targets.csv", SignedDuration::from_mins(15))
            .await
            .expect("download_url");
        let pairs = query_pairs(&url);

        assert!(
            url.starts_with("http://127.0.0.1:9/osdeploy-exports/exports/op-1/targets.csv?"),
            "the URL must address the object path-style, got {url}"
        );
        assert_eq!(param(&pairs, "X-Amz-Expires"), Some("900"));
        assert_eq!(param(&pairs, "X-Amz-Algorithm"), Some("AWS4-HMAC-SHA256"));
        let signature = param(&pairs, "X-Amz-Signature").unwrap_or_default();
        assert_eq!(
            signature.len(),
            64,
            "a SigV4 signature is 64 hex digits: {url}"
        );
        assert!(signature.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(
            param(&pairs, "X-Amz-Credential").is_some_and(|c| c.starts_with("testing%2F")),
            "the credential scope must name the access key: {url}"
        );
    }

    #[tokio::test]
    async fn presigned_url_allows_seven_days() {
        let store = offline_store().await;
        let url = store
            .download_url("exports/a.csv", MAX_DOWNLOAD_URL_EXPIRY)
            .await
            .expect("download_url");
        assert_eq!(param(&query_pairs(&url), "X-Amz-Expires"), Some("604800"));
    }

    #[tokio::test]
    async fn presigned_url_rejects_over_seven_days() {
        let store = offline_store().await;
        let too_long = MAX_DOWNLOAD_URL_EXPIRY + SignedDuration::from_secs(1);
        let result = store.download_url("exports/a.csv", too_long).await;
        let Err(StoreError::InvalidInput(message)) = result else {
            panic!("an expiry over 7 days must be rejected as invalid input, got {result:?}");
        };
        assert!(
            message.contains("7 days"),
            "the message must name the limit: {message}"
        );
    }

    #[tokio::test]
    async fn invalid_key_is_rejected_before_calling() {
        let store = offline_store().await;
        let result = store.put("../a.csv", "text/csv", b"x".to_vec()).await;
        assert!(
            matches!(result, Err(StoreError::InvalidInput(_))),
            "a key with '..' must be rejected before PutObject, got {result:?}"
        );
    }
}
