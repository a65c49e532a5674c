//! Downloads Apple's software catalog (the `gdmf.apple.com/v2/pmv` reply)
//! for the catalog refresh job.
//!
//! gdmf.apple.com presents a certificate that chains to an Apple root which
//! public trust stores (such as Mozilla's, which most Linux CA bundles copy)
//! do not contain. A refresh from Apple therefore needs that root in a PEM
//! file given as [`CatalogSource::ca_file`]. Its certificates are added to
//! the system's roots, so a mirror with a public certificate still works.

use std::path::PathBuf;
use std::time::Duration;

/// Apple's Software Lookup Service.
pub const DEFAULT_CATALOG_URL: &str = "https://gdmf.apple.com/v2/pmv";

/// Maximum size of a catalog body. The bundled snapshot of Apple's reply is
/// 0.1 MiB, so 16 MiB leaves room for growth and still stops a runaway
/// response.
pub const DEFAULT_MAX_CATALOG_BYTES: usize = 16 * 1024 * 1024;

/// Maximum time for the whole request, from connecting to the last byte.
/// Well below the scheduled-job function's 300 s timeout.
pub const DEFAULT_CATALOG_TIMEOUT: Duration = Duration::from_secs(30);

/// Source URL, extra trusted roots and limits of the catalog refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSource {
    pub url: String,
    /// PEM file of extra trusted root certificates, such as Apple's root
    /// for gdmf.apple.com.
    pub ca_file: Option<PathBuf>,
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl Default for CatalogSource {
    fn default() -> Self {
        CatalogSource {
            url: DEFAULT_CATALOG_URL.to_string(),
            ca_file: None,
            max_bytes: DEFAULT_MAX_CATALOG_BYTES,
            timeout: DEFAULT_CATALOG_TIMEOUT,
        }
    }
}

/// Failure to download a catalog. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum CatalogFetchError {
    #[error(
        "could not read the CA bundle {path}: set OSDEPLOY_CATALOG_CA_FILE to a readable PEM file"
    )]
    CaFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "invalid CA bundle {path}: expected one or more PEM certificates (-----BEGIN CERTIFICATE-----)"
    )]
    CaFileInvalid {
        path: PathBuf,
        #[source]
        source: Option<reqwest::Error>,
    },
    #[error("could not build the HTTPS client for the catalog")]
    Client(#[source] reqwest::Error),
    #[error(
        "catalog request to {url} timed out after {timeout:?}: check the network or raise the timeout"
    )]
    TimedOut { url: String, timeout: Duration },
    #[error(
        "catalog request to {url} failed: check the URL, the network and OSDEPLOY_CATALOG_CA_FILE"
    )]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("catalog server {url} returned HTTP {status}")]
    Status { url: String, status: u16 },
    #[error(
        "catalog from {url} is larger than the maximum of {max_bytes} bytes: check that the URL serves the pmv reply"
    )]
    TooLarge { url: String, max_bytes: usize },
}

/// Downloads the catalog body from `source.url`, within its size and time limits.
pub async fn fetch_catalog(source: &CatalogSource) -> Result<Vec<u8>, CatalogFetchError> {
    let client = build_client(source)?;
    let url = source.url.clone();
    let request_error = |error: reqwest::Error| {
        if error.is_timeout() {
            CatalogFetchError::TimedOut {
                url: url.clone(),
                timeout: source.timeout,
            }
        } else {
            CatalogFetchError::Request {
                url: url.clone(),
                source: error,
            }
        }
    };

    let mut response = client
        .get(&source.url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(request_error)?;
    if !response.status().is_success() {
        return Err(CatalogFetchError::Status {
            url: source.url.clone(),
            status: response.status().as_u16(),
        });
    }
    let too_large = || CatalogFetchError::TooLarge {
        url: source.url.clone(),
        max_bytes: source.max_bytes,
    };
    let declared = response.content_length().unwrap_or(0);
    if declared > source.max_bytes as u64 {
        return Err(too_large());
    }

    // Read chunk by chunk, because a missing or false Content-Length must
    // not let the body grow past the limit.
    let mut body = Vec::with_capacity(declared as usize);
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if body.len() + chunk.len() > source.max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Builds a client with the request timeout and the extra roots of `ca_file`.
fn build_client(source: &CatalogSource) -> Result<reqwest::Client, CatalogFetchError> {
    let mut builder = reqwest::Client::builder()
        .timeout(source.timeout)
        .connect_timeout(source.timeout)
        .user_agent(concat!("osdeploy/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &source.ca_file {
        let pem = std::fs::read(path).map_err(|source| CatalogFetchError::CaFileUnreadable {
            path: path.clone(),
            source,
        })?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
            CatalogFetchError::CaFileInvalid {
                path: path.clone(),
                source: Some(source),
            }
        })?;
        if roots.is_empty() {
            return Err(CatalogFetchError::CaFileInvalid {
                path: path.clone(),
                source: None,
            });
        }
        builder = builder.tls_certs_merge(roots);
    }
    builder.build().map_err(CatalogFetchError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_names_the_path() {
        let source = CatalogSource {
            ca_file: Some(PathBuf::from("/nonexistent/apple-root.pem")),
            ..CatalogSource::default()
        };
        let error = build_client(&source).expect_err("a missing CA file is rejected");
        assert!(
            matches!(error, CatalogFetchError::CaFileUnreadable { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("/nonexistent/apple-root.pem"),
            "{error}"
        );
    }

    #[test]
    fn ca_file_without_certificates_is_invalid() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").expect("write file");
        let source = CatalogSource {
            ca_file: Some(path.clone()),
            ..CatalogSource::default()
        };
        let error = build_client(&source).expect_err("a file without certificates is rejected");
        assert!(
            matches!(error, CatalogFetchError::CaFileInvalid { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("empty.pem"), "{error}");
    }

    #[test]
    fn default_source_is_apple() {
        let source = CatalogSource::default();
        assert_eq!(source.url, "https://gdmf.apple.com/v2/pmv");
        assert_eq!(source.ca_file, None);
        assert_eq!(source.max_bytes, DEFAULT_MAX_CATALOG_BYTES);
        assert_eq!(source.timeout, DEFAULT_CATALOG_TIMEOUT);
    }
}
