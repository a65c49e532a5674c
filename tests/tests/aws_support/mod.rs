//! A DynamoDB client for the local emulator and stores on fresh tables.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use osdeploy_shared::adapters::aws::AwsSettings;
use osdeploy_shared::adapters::aws::dynamodb::{DynamoStore, DynamoTables, create_tables};

/// Where `make test` (through `scripts/moto.sh start`) says the emulator listens.
pub const ENDPOINT_VARIABLE: &str = "OSDEPLOY_TEST_AWS_ENDPOINT";

/// The emulator's endpoint. Fails, never skips, when it is not set: a
/// skipped adapter test would pass without checking anything.
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

/// A client of the emulator with the test credentials of `AwsSettings::emulator`.
pub async fn client() -> Client {
    let config = AwsSettings::emulator(&endpoint()).sdk_config().await;
    Client::new(&config)
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

/// A store on newly created tables.
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
