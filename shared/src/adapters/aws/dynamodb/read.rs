//! Reads: GetItem, Query pages and batches.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{KeysAndAttributes, WriteRequest};

use super::DynamoError;
use super::codec::Item;
use super::write::Expr;
use crate::ports::{StoreError, StoreResult};

/// Keys per BatchGetItem request (DynamoDB's limit).
const BATCH_GET_KEYS: usize = 100;
/// Writes per BatchWriteItem request (DynamoDB's limit).
const BATCH_WRITE_ITEMS: usize = 25;
/// Attempts at keys or writes that DynamoDB returned unprocessed
/// (throttling); the delay doubles from 25 ms, so about 6 s in all.
const UNPROCESSED_ATTEMPTS: u32 = 8;

/// One Query request.
#[derive(Debug, Clone)]
pub(super) struct QuerySpec {
    pub(super) table: String,
    pub(super) index: Option<&'static str>,
    pub(super) key_condition: String,
    pub(super) filter: Option<String>,
    pub(super) expr: Expr,
    pub(super) forward: bool,
    pub(super) limit: Option<usize>,
    /// Strongly consistent; only allowed on the table, not on an index.
    pub(super) consistent: bool,
    pub(super) start: Option<Item>,
}

impl QuerySpec {
    /// Starts a consistent query of one partition of `table`, in sort-key order.
    pub(super) fn partition(table: &str, key_attribute: &str, value: &str) -> Self {
        let mut expr = Expr::default();
        let name = expr.name(key_attribute);
        let placeholder = expr.value(super::codec::s(value));
        QuerySpec {
            table: table.to_string(),
            index: None,
            key_condition: format!("{name} = {placeholder}"),
            filter: None,
            expr,
            forward: true,
            limit: None,
            consistent: true,
            start: None,
        }
    }

    /// Starts a query of one partition of an index (eventually consistent).
    pub(super) fn index(
        table: &str,
        index: &'static str,
        key_attribute: &str,
        value: &str,
    ) -> Self {
        QuerySpec {
            index: Some(index),
            consistent: false,
            ..QuerySpec::partition(table, key_attribute, value)
        }
    }

    /// Narrows the key condition with a sort-key clause built on the same placeholders.
    pub(super) fn and_key(mut self, clause: impl FnOnce(&mut Expr) -> String) -> Self {
        let clause = clause(&mut self.expr);
        self.key_condition = format!("{} AND {clause}", self.key_condition);
        self
    }

    /// Adds filter clauses, joined with AND; an empty list adds nothing.
    pub(super) fn filter(mut self, clauses: impl FnOnce(&mut Expr) -> Vec<String>) -> Self {
        let clauses = clauses(&mut self.expr);
        if !clauses.is_empty() {
            self.filter = Some(clauses.join(" AND "));
        }
        self
    }
}

/// Reads one page: the items and the key to continue from, if DynamoDB stopped early.
pub(super) async fn query_page(
    client: &Client,
    spec: &QuerySpec,
    operation: &'static str,
) -> StoreResult<(Vec<Item>, Option<Item>)> {
    let limit = spec
        .limit
        .map(|limit| i32::try_from(limit).unwrap_or(i32::MAX));
    let output = client
        .query()
        .table_name(&spec.table)
        .set_index_name(spec.index.map(str::to_string))
        .key_condition_expression(&spec.key_condition)
        .set_filter_expression(spec.filter.clone())
        .set_expression_attribute_names(spec.expr.names())
        .set_expression_attribute_values(spec.expr.values())
        .scan_index_forward(spec.forward)
        .set_limit(limit)
        .consistent_read(spec.consistent)
        .set_exclusive_start_key(spec.start.clone())
        .send()
        .await
        .map_err(|e| StoreError::backend(operation, e))?;
    let next = output.last_evaluated_key.filter(|key| !key.is_empty());
    Ok((output.items.unwrap_or_default(), next))
}

/// Reads every item the query matches, following pages until the end.
pub(super) async fn query_all(
    client: &Client,
    mut spec: QuerySpec,
    operation: &'static str,
) -> StoreResult<Vec<Item>> {
    let mut items = Vec::new();
    loop {
        let (page, next) = query_page(client, &spec, operation).await?;
        items.extend(page);
        match next {
            Some(key) => spec.start = Some(key),
            None => return Ok(items),
        }
    }
}

pub(super) async fn get_item(
    client: &Client,
    table: &str,
    key: Item,
    operation: &'static str,
) -> StoreResult<Option<Item>> {
    let output = client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| StoreError::backend(operation, e))?;
    Ok(output.item)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(25u64 << attempt.min(8))
}

/// Reads items by key in batches of 100, consistently. Duplicate keys are
/// read once; keys without an item are left out. The order is DynamoDB's.
pub(super) async fn batch_get(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    operation: &'static str,
) -> StoreResult<Vec<Item>> {
    let mut seen = HashSet::new();
    let unique: Vec<Item> = keys
        .into_iter()
        .filter(|key| {
            let mut parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            parts.sort();
            seen.insert(parts.join("\u{1f}"))
        })
        .collect();
    let mut found = Vec::with_capacity(unique.len());
    for chunk in unique.chunks(BATCH_GET_KEYS) {
        let mut pending = chunk.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            if attempt == UNPROCESSED_ATTEMPTS {
                return Err(StoreError::backend(
                    operation,
                    DynamoError::Unprocessed {
                        what: "keys",
                        count: pending.len(),
                        attempts: attempt,
                    },
                ));
            }
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            attempt += 1;
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::backend(operation, e))?;
            let output = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| StoreError::backend(operation, e))?;
            if let Some(mut responses) = output.responses
                && let Some(items) = responses.remove(table)
            {
                found.extend(items);
            }
            if let Some(mut unprocessed) = output.unprocessed_keys
                && let Some(left) = unprocessed.remove(table)
            {
                pending = left.keys;
            }
        }
    }
    Ok(found)
}

/// Applies puts and deletes in batches of 25. Not atomic: a failure can
/// leave earlier batches applied.
pub(super) async fn batch_write(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
    operation: &'static str,
) -> StoreResult<()> {
    for chunk in requests.chunks(BATCH_WRITE_ITEMS) {
        let mut pending = chunk.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            if attempt == UNPROCESSED_ATTEMPTS {
                return Err(StoreError::backend(
                    operation,
                    DynamoError::Unprocessed {
                        what: "writes",
                        count: pending.len(),
                        attempts: attempt,
                    },
                ));
            }
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            attempt += 1;
            let output = client
                .batch_write_item()
                .set_request_items(Some(HashMap::from([(
                    table.to_string(),
                    std::mem::take(&mut pending),
                )])))
                .send()
                .await
                .map_err(|e| StoreError::backend(operation, e))?;
            if let Some(mut unprocessed) = output.unprocessed_items
                && let Some(left) = unprocessed.remove(table)
            {
                pending = left;
            }
        }
    }
    Ok(())
}

/// Queries in flight at once in [`query_many`].
const MAX_IN_FLIGHT: usize = 16;

/// Runs several queries, at most 16 at a time, each to its end; results
/// follow the order of `specs`.
pub(super) async fn query_many(
    client: &Client,
    specs: Vec<QuerySpec>,
    operation: &'static str,
) -> StoreResult<Vec<Vec<Item>>> {
    let mut results: Vec<Vec<Item>> = vec![Vec::new(); specs.len()];
    let mut waiting = specs.into_iter().enumerate();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.len() < MAX_IN_FLIGHT {
            let Some((index, spec)) = waiting.next() else {
                break;
            };
            let client = client.clone();
            tasks.spawn(async move { (index, query_all(&client, spec, operation).await) });
        }
        let Some(joined) = tasks.join_next().await else {
            return Ok(results);
        };
        let (index, items) = joined.map_err(|e| StoreError::backend(operation, e))?;
        results[index] = items?;
    }
}
