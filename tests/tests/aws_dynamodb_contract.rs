//! The storage contract suites, unchanged, against the DynamoDB store on
//! moto's server, plus what only the DynamoDB layout has: its tables,
//! cursors, counter shards, batched assignments and item size limit.

mod aws_support;

use aws_support::{client, fresh_store};
use osdeploy_shared::ports::contract;

#[tokio::test]
async fn device_contract() {
    let client = client().await;
    contract::devices::run_all(|| fresh_store(&client, "devices")).await;
}

#[tokio::test]
async fn group_contract() {
    let client = client().await;
    contract::groups::run_all(|| fresh_store(&client, "groups")).await;
}

#[tokio::test]
async fn operation_contract() {
    let client = client().await;
    contract::operations::run_all(|| fresh_store(&client, "operations")).await;
}

#[tokio::test]
async fn event_contract() {
    let client = client().await;
    contract::events::run_all(|| fresh_store(&client, "events")).await;
}

#[tokio::test]
async fn catalog_contract() {
    let client = client().await;
    contract::catalog::run_all(|| fresh_store(&client, "catalog")).await;
}
