//! The console's read routes on the embedded SQLite store; the same
//! scenarios run on DynamoDB in `aws_console_api.rs`.

mod console_support;

use std::sync::Arc;

use console_support::Console;
use osdeploy_shared::adapters::SqliteStore;

fn console() -> Console<SqliteStore> {
    Console::new(Arc::new(SqliteStore::in_memory().expect("in-memory store")))
}

#[tokio::test]
async fn summary_matches_list_queries() {
    console_support::summary_counts_match_list_queries(&console()).await;
}

#[tokio::test]
async fn operation_filters_combined() {
    console_support::operation_filters_combine(&console()).await;
}

#[tokio::test]
async fn operation_details_fields() {
    console_support::operation_details_complete(&console()).await;
}

#[tokio::test]
async fn device_list_stale_flag() {
    console_support::device_list_flags_stale_targets(&console()).await;
}

#[tokio::test]
async fn device_timeline_across_operations() {
    console_support::timeline_merges_operations(&console()).await;
}

#[tokio::test]
async fn preview_readiness_flags() {
    console_support::preview_flags_unready_devices(&console()).await;
}

#[tokio::test]
async fn read_routes_match_openapi() {
    console_support::read_routes_match_document(&console()).await;
}
