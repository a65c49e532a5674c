//! The AWS adapters: DynamoDB for the stores, S3 for exports, EventBridge
//! Scheduler for one-time schedules and EventBridge for domain events.
//!
//! Clients are built once per process from [`AwsSettings`]. Tests and local
//! runs always pass an explicit endpoint and static credentials, so nothing
//! probes the instance-metadata address or reaches a real AWS endpoint.

pub mod dynamodb;
pub mod eventbridge;
pub mod s3;
pub mod scheduler;

pub use dynamodb::{DynamoStore, DynamoTables};
pub use eventbridge::EventBridgePublisher;
pub use s3::S3BlobStore;
pub use scheduler::{EventBridgeScheduler, SchedulerSettings};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// Endpoint, region and credentials of the AWS clients.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub region: String,
    /// An endpoint such as `http://127.0.0.1:5055` (a local emulator);
    /// `None` uses AWS's own endpoints.
    pub endpoint_url: Option<String>,
    /// Static credentials for an emulator; `None` uses the default chain
    /// (the Lambda execution role in production).
    pub static_credentials: Option<(String, String)>,
}

impl AwsSettings {
    /// Settings for a local emulator at `endpoint_url`, with test credentials.
    pub fn emulator(endpoint_url: &str) -> Self {
        AwsSettings {
            region: "us-east-1".to_string(),
            endpoint_url: Some(endpoint_url.to_string()),
            static_credentials: Some(("testing".to_string(), "testing".to_string())),
        }
    }

    /// Builds the shared SDK configuration once; clients are made from it.
    pub async fn sdk_config(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()));
        if let Some(endpoint) = &self.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((key, secret)) = &self.static_credentials {
            loader = loader.credentials_provider(Credentials::from_keys(key, secret, None));
        }
        loader.load().await
    }
}
