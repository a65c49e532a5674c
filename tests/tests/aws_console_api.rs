//! The console's read routes on the DynamoDB store (moto's server); the
//! same scenarios run on SQLite in `console_api.rs`. Each scenario gets
//! fresh tables, and none may send a Scan.

mod aws_support;
mod console_support;

use std::sync::Arc;

use aws_support::{CallLog, fresh_store, recording_client};
use console_support::Console;
use osdeploy_shared::adapters::aws::dynamodb::DynamoStore;

async fn console(label: &str) -> (Console<DynamoStore>, Arc<CallLog>) {
    let (client, log) = recording_client().await;
    let store = fresh_store(&client, label).await;
    (Console::new(Arc::new(store)), log)
}

fn assert_no_scan(log: &CallLog, scenario: &str) {
    assert_eq!(log.count("Scan"), 0, "{scenario} sent Scan requests");
}

#[tokio::test]
async fn summary_matches_list_queries() {
    let (console, log) = console("summary").await;
    console_support::summary_counts_match_list_queries(&console).await;
    assert_no_scan(&log, "the summary");
}

#[tokio::test]
async fn operation_filters_combined() {
    let (console, log) = console("filters").await;
    console_support::operation_filters_combine(&console).await;
    assert_no_scan(&log, "the operations list");
}

#[tokio::test]
async fn operation_details_fields() {
    let (console, log) = console("details").await;
    console_support::operation_details_complete(&console).await;
    assert_no_scan(&log, "the details");
}

#[tokio::test]
async fn device_list_stale_flag() {
    let (console, log) = console("stale").await;
    console_support::device_list_flags_stale_targets(&console).await;
    assert_no_scan(&log, "the device list");
}

#[tokio::test]
async fn device_timeline_across_operations() {
    let (console, log) = console("timeline").await;
    console_support::timeline_merges_operations(&console).await;
    assert_no_scan(&log, "the timeline");
}

#[tokio::test]
async fn preview_readiness_flags() {
    let (console, log) = console("readiness").await;
    console_support::preview_flags_unready_devices(&console).await;
    assert_no_scan(&log, "the preview");
}

#[tokio::test]
async fn read_routes_match_openapi() {
    let (console, log) = console("documented").await;
    console_support::read_routes_match_document(&console).await;
    assert_no_scan(&log, "the read routes");
}
