//! [`Push`] through the Apple Push Notification service (APNs), which wakes
//! an MDM-enrolled device so that it connects to the server.
//!
//! Each device gets one HTTP/2 `POST <base>/3/device/<hex token>` with the
//! body `{"mdm":"<PushMagic>"}`, the header `apns-topic` set to the topic of
//! the MDM push certificate (the UID of its subject, such as
//! `com.apple.mgmt.External.<uuid>`) and `apns-priority: 10`. The client
//! authenticates with that certificate and its private key. Requests run
//! with at most [`ApnsSettings::max_concurrent`] in flight.
//!
//! Pushing is best effort, as the [`Push`] port allows: the command waits in
//! the device's queue either way. Failures are logged per device with the
//! APNs reason, and [`ApnsPush::push`] still succeeds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::domain::Device;
use crate::ports::{Push, StoreResult};

/// APNs production endpoint.
pub const DEFAULT_APNS_URL: &str = "https://api.push.apple.com";

/// Default number of requests in flight at once. APNs accepts many
/// streams on one connection; this keeps a large wake-up from opening
/// thousands of streams at the same moment.
pub const DEFAULT_MAX_CONCURRENT: usize = 64;

/// Default time for one push request, from sending to the response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The DER encoding of the UID attribute's object identifier
/// (0.9.2342.19200300.100.1.1, RFC 4519), tag and length included. The MDM
/// push certificate's subject UID is the APNs topic.
const UID_OID_DER: &[u8] = &[
    0x06, 0x0a, 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01,
];

/// Endpoint, credentials and limits of [`ApnsPush`].
#[derive(Clone)]
pub struct ApnsSettings {
    /// `https://api.push.apple.com` in production; a local mock in tests.
    pub base_url: String,
    /// The MDM push certificate, PEM.
    pub certificate_pem: String,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
    /// `apns-topic`; `None` reads it from the certificate's subject UID.
    pub topic: Option<String>,
    pub max_concurrent: usize,
    pub timeout: Duration,
}

impl std::fmt::Debug for ApnsSettings {
    // Leaves the private key out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsSettings")
            .field("base_url", &self.base_url)
            .field("topic", &self.topic)
            .field("max_concurrent", &self.max_concurrent)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ApnsSettings {
    /// Settings for Apple's production endpoint with the default limits.
    pub fn new(certificate_pem: String, key_pem: String) -> Self {
        ApnsSettings {
            base_url: DEFAULT_APNS_URL.to_string(),
            certificate_pem,
            key_pem,
            topic: None,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Failure to set up [`ApnsPush`].
#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error(
        "invalid MDM push certificate or key: expected the certificate and its private key as PEM"
    )]
    InvalidIdentity(#[source] reqwest::Error),
    #[error(
        "the MDM push certificate has no subject UID to use as the APNs topic: set the topic explicitly (OSDEPLOY_APNS_TOPIC)"
    )]
    MissingTopic,
    #[error("invalid APNs base URL {0:?}: give an https:// URL such as {DEFAULT_APNS_URL}")]
    InvalidBaseUrl(String),
}

/// Per-device results of one [`ApnsPush::send`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Devices APNs accepted a push for.
    pub sent: Vec<String>,
    /// Devices whose token APNs reported as no longer valid (HTTP 410).
    pub unregistered: Vec<String>,
    /// Devices whose push failed otherwise, with the status (0 when no
    /// response came) and the APNs reason.
    pub failed: Vec<(String, u16, String)>,
    /// Devices left out: no push token or push magic, or a token that is not hex.
    pub skipped: Vec<String>,
}

/// Sends MDM pushes to APNs.
#[derive(Clone)]
pub struct ApnsPush {
    client: reqwest::Client,
    base_url: String,
    topic: String,
    limit: Arc<Semaphore>,
}

impl std::fmt::Debug for ApnsPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsPush")
            .field("base_url", &self.base_url)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ApnsPush {
    /// Builds the HTTP/2 client with the certificate and key. Rejects an
    /// invalid certificate or key, a certificate without a topic when none
    /// is given, and a base URL that is not http(s).
    pub fn new(settings: &ApnsSettings) -> Result<ApnsPush, ApnsError> {
        let base_url = settings.base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(ApnsError::InvalidBaseUrl(settings.base_url.clone()));
        }

        let topic = match &settings.topic {
            Some(topic) if !topic.is_empty() => topic.clone(),
            _ => {
                topic_from_certificate(&settings.certificate_pem).ok_or(ApnsError::MissingTopic)?
            }
        };

        let mut pem = settings.certificate_pem.clone();
        pem.push('\n');
        pem.push_str(&settings.key_pem);
        let identity =
            reqwest::Identity::from_pem(pem.as_bytes()).map_err(ApnsError::InvalidIdentity)?;
        // APNs speaks only HTTP/2, so no HTTP/1.1 upgrade is attempted. Over
        // TLS this offers only h2 in ALPN; over plain HTTP (a local mock)
        // it is HTTP/2 with prior knowledge. The key is parsed here, in
        // build, so its errors come from build too.
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .identity(identity)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .map_err(ApnsError::InvalidIdentity)?;
        Ok(ApnsPush {
            client,
            base_url,
            topic,
            limit: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
        })
    }

    /// Returns the `apns-topic` the pushes carry.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends one push per device and reports each device's result.
    pub async fn send(&self, devices: &[Device]) -> PushReport {
        let mut report = PushReport::default();
        let mut requests = JoinSet::new();
        for device in devices {
            let (Some(token), Some(magic)) = (&device.push_token, &device.push_magic) else {
                report.skipped.push(device.udid.clone());
                continue;
            };
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                tracing::warn!(device_id = %device.udid, "push token is not hex; push skipped");
                report.skipped.push(device.udid.clone());
                continue;
            }
            let request = self
                .client
                .post(format!("{}/3/device/{token}", self.base_url))
                .header("apns-topic", &self.topic)
                .header("apns-priority", "10")
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::json!({ "mdm": magic }).to_string());
            let limit = self.limit.clone();
            let udid = device.udid.clone();
            requests.spawn(async move {
                // Acquiring fails only on a closed semaphore, and this one
                // is never closed.
                let _permit = limit.acquire_owned().await.ok();
                (udid, send_one(request).await)
            });
        }
        while let Some(joined) = requests.join_next().await {
            let Ok((udid, outcome)) = joined else {
                tracing::error!("a push task panicked");
                continue;
            };
            match outcome {
                Outcome::Sent => report.sent.push(udid),
                Outcome::Unregistered => {
                    // NOTE: the token stays stored: the store has no write
                    // for the token alone, and the device replaces it with
                    // its next TokenUpdate.
                    tracing::warn!(device_id = %udid, "APNs reports the push token as unregistered (HTTP 410)");
                    report.unregistered.push(udid);
                }
                Outcome::Failed { status, reason } => {
                    tracing::warn!(device_id = %udid, status, reason = %reason, "APNs rejected the push");
                    report.failed.push((udid, status, reason));
                }
            }
        }
        report
    }
}

enum Outcome {
    Sent,
    Unregistered,
    Failed { status: u16, reason: String },
}

/// The JSON body of an APNs error response.
#[derive(Deserialize)]
struct ErrorBody {
    reason: String,
}

async fn send_one(request: reqwest::RequestBuilder) -> Outcome {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            let reason = if e.is_timeout() {
                "request timed out".to_string()
            } else {
                format!("request failed: {e}")
            };
            return Outcome::Failed { status: 0, reason };
        }
    };
    let status = response.status().as_u16();
    if status == 200 {
        return Outcome::Sent;
    }
    let reason = match response.bytes().await {
        Ok(body) => serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.reason)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned()),
        Err(e) => format!("could not read the error body: {e}"),
    };
    if status == 410 {
        Outcome::Unregistered
    } else {
        Outcome::Failed { status, reason }
    }
}

#[async_trait]
impl Push for ApnsPush {
    async fn push(&self, devices: &[Device]) -> StoreResult<()> {
        let report = self.send(devices).await;
        tracing::info!(
            sent = report.sent.len(),
            unregistered = report.unregistered.len(),
            failed = report.failed.len(),
            skipped = report.skipped.len(),
            "MDM pushes sent"
        );
        Ok(())
    }
}

/// Returns the subject UID of the first certificate in `pem`, which for an
/// MDM push certificate is its APNs topic. `None` when the PEM contains no
/// certificate or the certificate has no UID.
pub fn topic_from_certificate(pem: &str) -> Option<String> {
    let der = first_certificate_der(pem)?;
    // The subject follows the issuer in the certificate, so the last UID
    // is the subject's even if the issuer had one too.
    let position = der
        .windows(UID_OID_DER.len())
        .rposition(|window| window == UID_OID_DER)?;
    let value = &der[position + UID_OID_DER.len()..];
    let (&tag, rest) = value.split_first()?;
    // UTF8String, PrintableString or IA5String.
    if !matches!(tag, 0x0c | 0x13 | 0x16) {
        return None;
    }
    let (&length, rest) = rest.split_first()?;
    // Short-form length only: a topic is far below 128 bytes.
    if length >= 0x80 || rest.len() < length as usize {
        return None;
    }
    String::from_utf8(rest[..length as usize].to_vec()).ok()
}

fn first_certificate_der(pem: &str) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let end = start + pem[start..].find(END)?;
    let body: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests;
