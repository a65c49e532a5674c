//! A DynamoDB client for the local emulator and stores on fresh tables.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use osdeploy_shared::adapters::aws::AwsSettings;
use osdeploy_shared::adapters::aws::dynamodb::{DynamoStore, DynamoTables, create_tables};

/// The variable in which `make test` (through `scripts/moto.sh start`) passes the emulator's address.
pub const ENDPOINT_VARIABLE: &str = "OSDEPLOY_TEST_AWS_ENDPOINT";

/// Returns the emulator's endpoint. Panics, never skips, when it is not
/// set, because a skipped adapter test would pass without checking anything.
pub fn endpoint() -> String {
    match std::env::var(ENDPOINT_VARIABLE) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "{ENDPOINT_VARIABLE} is not set, and the DynamoDB tests need the local emulator: \
             run `make test`, or run `scripts/moto.sh start` and then \
             `export {ENDPOINT_VARIABLE}=http://127.0.0.1:$(cat .moto.port) AWS_EC2_METADATA_DISABLED=true`"
        ),
    }
}

/// Builds a client of the emulator with the test credentials of `AwsSettings::emulator`.
pub async fn client() -> Client {
    let config = AwsSettings::emulator(&endpoint()).sdk_config().await;
    Client::new(&config)
}

/// The DynamoDB operations a client sent, one entry per HTTP request
/// (retries included), named by the `X-Amz-Target` header.
#[derive(Debug, Default)]
pub struct CallLog {
    calls: Mutex<Vec<String>>,
}

impl CallLog {
    /// Returns the calls since the last `take` and starts a new list.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Returns how many calls of `operation` were sent since the last `take`.
    pub fn count(&self, operation: &str) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|call| call.as_str() == operation)
            .count()
    }
}

#[derive(Debug)]
struct RecordCalls(Arc<CallLog>);

impl Intercept for RecordCalls {
    fn name(&self) -> &'static str {
        "RecordCalls"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // The header is "DynamoDB_20120810.<Operation>".
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("unknown");
        let operation = target.rsplit('.').next().unwrap_or(target).to_string();
        self.0
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(operation);
        Ok(())
    }
}

/// Builds a client of the emulator that records every call it sends.
pub async fn recording_client() -> (Client, Arc<CallLog>) {
    let config = AwsSettings::emulator(&endpoint()).sdk_config().await;
    let log = Arc::new(CallLog::default());
    let dynamodb = aws_sdk_dynamodb::config::Builder::from(&config)
        .interceptor(RecordCalls(log.clone()))
        .build();
    (Client::from_conf(dynamodb), log)
}

static TABLE_SETS: AtomicU64 = AtomicU64::new(0);

/// Table names no other test or test run uses: the process id, a counter
/// and the start time of the process's first table set.
pub fn unique_tables(label: &str) -> DynamoTables {
    let n = TABLE_SETS.fetch_add(1, Ordering::Relaxed);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    DynamoTables::with_prefix(&format!(
        "osdeploy-{label}-{}-{started}-{n}",
        std::process::id()
    ))
}

/// Creates a store on new tables.
pub async fn fresh_store(client: &Client, label: &str) -> DynamoStore {
    let tables = unique_tables(label);
    if let Err(error) = create_tables(client, &tables).await {
        panic!(
            "creating tables {tables:?} on the emulator at {} failed: {error:?}",
            endpoint()
        );
    }
    DynamoStore::new(client.clone(), tables)
}

static BUCKETS: AtomicU64 = AtomicU64::new(0);

/// Creates a new bucket on the emulator and returns its name,
/// `osdeploy-<label>-<process id>-<counter>-<milliseconds>` (bucket names
/// allow lowercase letters, digits and '-', at most 63 characters).
pub async fn unique_bucket(sdk: &aws_config::SdkConfig, label: &str) -> String {
    let n = BUCKETS.fetch_add(1, Ordering::Relaxed);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000_000)
        .unwrap_or(0);
    let bucket = format!("osdeploy-{label}-{}-{n}-{started}", std::process::id());
    if let Err(error) = s3_client(sdk).create_bucket().bucket(&bucket).send().await {
        panic!(
            "creating bucket {bucket} on the emulator at {} failed: {error:?}",
            endpoint()
        );
    }
    bucket
}

/// Builds an S3 client of the emulator with path-style addressing, because
/// bucket subdomains of 127.0.0.1 do not resolve.
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    )
}
