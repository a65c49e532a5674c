//! Export downloads for `osdeploy serve`: `GET /downloads/<key>?expires=
//! <unix seconds>&signature=<hex>`, the URLs [`LocalBlobStore`] signs.
//!
//! The route takes no bearer token, because the signature is the
//! credential: it binds the key and the expiry to the server's secret. A
//! missing or wrong signature gets 403, an expired URL 410 Gone, and a
//! valid URL for a key with no file 404. The body is streamed from the
//! file, so a large export is never held in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::io::ReaderStream;

use super::ApiError;
use crate::adapters::local_blobs::{LocalBlobStore, SignatureError};
use crate::domain::Clock;

/// Path prefix of download URLs on the local server.
pub const DOWNLOAD_PATH: &str = "/downloads";

#[derive(Clone)]
struct DownloadState {
    blobs: Arc<LocalBlobStore>,
    clock: Arc<dyn Clock>,
}

/// Builds the download route over `blobs`, checking expiry against `clock`.
pub fn router(blobs: Arc<LocalBlobStore>, clock: Arc<dyn Clock>) -> Router {
    Router::new()
        .route(&format!("{DOWNLOAD_PATH}/{{*key}}"), get(download))
        .with_state(DownloadState { blobs, clock })
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

async fn download(
    State(state): State<DownloadState>,
    Path(key): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let expires = query.get("expires").and_then(|e| e.parse::<i64>().ok());
    let (Some(expires), Some(signature)) = (expires, query.get("signature")) else {
        return Err(forbidden(format!(
            "download of {key:?} needs the expires and signature parameters of a download URL; \
             request one with GET /api/v1/exports/{{id}}"
        )));
    };
    match state
        .blobs
        .verify(&key, expires, signature, state.clock.now())
    {
        Ok(()) => {}
        Err(error @ SignatureError::Expired { .. }) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "expired",
                error.to_string(),
            ));
        }
        Err(error) => {
            tracing::info!(key = %key, error = %error, "download rejected");
            return Err(forbidden(error.to_string()));
        }
    }
    let path = state
        .blobs
        .object_path(&key)
        .map_err(|e| forbidden(e.to_string()))?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("export file {key:?} not found; it may have been deleted"),
            ));
        }
        Err(e) => {
            tracing::error!(key = %key, error = %e, "could not open an export file");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; the server log has the detail",
            ));
        }
    };
    let content_type = state
        .blobs
        .content_type(&key)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| "application/octet-stream".to_string());
    let file_name = key.rsplit('/').next().unwrap_or("export");
    let mut response = Body::from_stream(ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    // Keys contain only ASCII letters, digits, '.', '_', '-' and '/', so
    // the file name needs no escaping inside the quotes.
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(response)
}
