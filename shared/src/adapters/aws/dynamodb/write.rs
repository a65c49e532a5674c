//! Conditional writes and `TransactWriteItems`.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};

use super::DynamoError;
use super::codec::Item;
use crate::ports::{MAX_TRANSACTION_ITEMS, StoreError, StoreResult};

/// Placeholders for attribute names and values of one request's expressions.
/// Every name is used as `#name` (the adapter's names are plain identifiers,
/// and several are DynamoDB reserved words such as `data` and `status`).
#[derive(Debug, Clone, Default)]
pub(super) struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// Returns the placeholder of an attribute name.
    pub(super) fn name(&mut self, attribute: &str) -> String {
        let placeholder = format!("#{attribute}");
        self.names
            .insert(placeholder.clone(), attribute.to_string());
        placeholder
    }

    /// Returns a new placeholder bound to `value`.
    pub(super) fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    /// Names for a request, `None` when empty: DynamoDB rejects empty maps.
    pub(super) fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    pub(super) fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// The clauses of an update expression.
#[derive(Debug, Default)]
pub(super) struct UpdateExpr {
    pub(super) expr: Expr,
    set: Vec<String>,
    remove: Vec<String>,
    add: Vec<String>,
}

impl UpdateExpr {
    pub(super) fn set(&mut self, attribute: &str, value: AttributeValue) {
        let name = self.expr.name(attribute);
        let value = self.expr.value(value);
        self.set.push(format!("{name} = {value}"));
    }

    /// Sets the attribute, or removes it when `value` is `None`.
    pub(super) fn set_or_remove(&mut self, attribute: &str, value: Option<AttributeValue>) {
        match value {
            Some(value) => self.set(attribute, value),
            None => {
                let name = self.expr.name(attribute);
                self.remove.push(name);
            }
        }
    }

    /// Sets the attribute only if the item does not have it yet.
    pub(super) fn set_if_absent(&mut self, attribute: &str, value: AttributeValue) {
        let name = self.expr.name(attribute);
        let value = self.expr.value(value);
        self.set
            .push(format!("{name} = if_not_exists({name}, {value})"));
    }

    /// Adds `by` to a number attribute, creating it at zero if absent.
    pub(super) fn add(&mut self, attribute: &str, by: i64) {
        let name = self.expr.name(attribute);
        let value = self.expr.value(AttributeValue::N(by.to_string()));
        self.add.push(format!("{name} {value}"));
    }

    /// Increments an attribute that must exist.
    pub(super) fn increment(&mut self, attribute: &str, by: u64) {
        let name = self.expr.name(attribute);
        let value = self.expr.value(AttributeValue::N(by.to_string()));
        self.set.push(format!("{name} = {name} + {value}"));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty() && self.add.is_empty()
    }

    pub(super) fn expression(&self) -> String {
        let mut clauses = Vec::new();
        if !self.set.is_empty() {
            clauses.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.remove.is_empty() {
            clauses.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        if !self.add.is_empty() {
            clauses.push(format!("ADD {}", self.add.join(", ")));
        }
        clauses.join(" ")
    }
}

#[derive(Debug, Clone)]
enum WriteKind {
    Put { item: Item },
    Update { key: Item, update: String },
    Delete { key: Item },
}

/// One write of a transaction (or a single conditional write on its own).
#[derive(Debug, Clone)]
pub(super) struct WriteOp {
    table: String,
    kind: WriteKind,
    condition: Option<String>,
    expr: Expr,
}

impl WriteOp {
    pub(super) fn put(table: &str, item: Item) -> Self {
        WriteOp {
            table: table.to_string(),
            kind: WriteKind::Put { item },
            condition: None,
            expr: Expr::default(),
        }
    }

    pub(super) fn delete(table: &str, key: Item) -> Self {
        WriteOp {
            table: table.to_string(),
            kind: WriteKind::Delete { key },
            condition: None,
            expr: Expr::default(),
        }
    }

    pub(super) fn update(table: &str, key: Item, update: UpdateExpr) -> Self {
        let expression = update.expression();
        WriteOp {
            table: table.to_string(),
            kind: WriteKind::Update {
                key,
                update: expression,
            },
            condition: None,
            expr: update.expr,
        }
    }

    /// Adds a condition built with the write's own placeholders.
    pub(super) fn when(mut self, condition: impl FnOnce(&mut Expr) -> String) -> Self {
        self.condition = Some(condition(&mut self.expr));
        self
    }

    fn into_transact_item(self) -> StoreResult<TransactWriteItem> {
        let build_error = |e| StoreError::backend("build transaction", e);
        let names = self.expr.names();
        let values = self.expr.values();
        let item = match self.kind {
            WriteKind::Put { item } => TransactWriteItem::builder().put(
                Put::builder()
                    .table_name(self.table)
                    .set_item(Some(item))
                    .set_condition_expression(self.condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(build_error)?,
            ),
            WriteKind::Update { key, update } => TransactWriteItem::builder().update(
                Update::builder()
                    .table_name(self.table)
                    .set_key(Some(key))
                    .update_expression(update)
                    .set_condition_expression(self.condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(build_error)?,
            ),
            WriteKind::Delete { key } => TransactWriteItem::builder().delete(
                Delete::builder()
                    .table_name(self.table)
                    .set_key(Some(key))
                    .set_condition_expression(self.condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(build_error)?,
            ),
        };
        Ok(item.build())
    }

    /// Sends the write as a single PutItem, UpdateItem or DeleteItem.
    async fn send_single(
        self,
        client: &Client,
        operation: &'static str,
    ) -> Result<(), WriteFailure> {
        let names = self.expr.names();
        let values = self.expr.values();
        match self.kind {
            WriteKind::Put { item } => client
                .put_item()
                .table_name(self.table)
                .set_item(Some(item))
                .set_condition_expression(self.condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(e, operation)),
            WriteKind::Update { key, update } => client
                .update_item()
                .table_name(self.table)
                .set_key(Some(key))
                .update_expression(update)
                .set_condition_expression(self.condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(e, operation)),
            WriteKind::Delete { key } => client
                .delete_item()
                .table_name(self.table)
                .set_key(Some(key))
                .set_condition_expression(self.condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(e, operation)),
        }
    }
}

/// Sorts a single write's error into a cancellation (a failed condition, or
/// an item locked by a transaction in flight) or a backend failure.
fn classify<E>(error: SdkError<E, HttpResponse>, operation: &'static str) -> WriteFailure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error.code() {
        Some("ConditionalCheckFailedException") => {
            WriteFailure::Cancelled(Some(vec![CONDITION_FAILED.to_string()]))
        }
        Some("TransactionConflictException") => {
            WriteFailure::Cancelled(Some(vec![TRANSACTION_CONFLICT.to_string()]))
        }
        _ => WriteFailure::Store(StoreError::backend(operation, error)),
    }
}

/// Cancellation reason code of a failed condition.
pub(super) const CONDITION_FAILED: &str = "ConditionalCheckFailed";
/// Cancellation reason code of a write that met another transaction in flight.
pub(super) const TRANSACTION_CONFLICT: &str = "TransactionConflict";
/// Code DynamoDB reports for the writes of a cancelled transaction that did
/// not cause the cancellation.
const NO_REASON: &str = "None";

/// The reason a write did not apply.
#[derive(Debug)]
pub(super) enum WriteFailure {
    /// DynamoDB cancelled it. The codes follow the order of the writes
    /// (`None` when the response carried no reasons); writes that did not
    /// cause the cancellation have no code.
    Cancelled(Option<Vec<String>>),
    Store(StoreError),
}

impl WriteFailure {
    /// Returns the codes of the writes that caused the cancellation, by position.
    pub(super) fn reasons(&self) -> Option<Vec<Option<&str>>> {
        match self {
            WriteFailure::Cancelled(Some(codes)) => Some(
                codes
                    .iter()
                    .map(|code| (code != NO_REASON).then_some(code.as_str()))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Maps a cancelled write to the port's errors. A failed condition, or a
    /// write that met another transaction, is a [`StoreError::Conflict`].
    /// Other reasons are backend failures.
    pub(super) fn into_store_error(
        self,
        operation: &'static str,
        conflict: impl FnOnce() -> String,
    ) -> StoreError {
        match self {
            WriteFailure::Store(error) => error,
            WriteFailure::Cancelled(None) => StoreError::Conflict(conflict()),
            WriteFailure::Cancelled(Some(codes)) => {
                let retryable = codes
                    .iter()
                    .any(|code| code == CONDITION_FAILED || code == TRANSACTION_CONFLICT);
                if retryable {
                    StoreError::Conflict(conflict())
                } else {
                    StoreError::backend(
                        operation,
                        DynamoError::Cancelled {
                            codes: codes.join(", "),
                        },
                    )
                }
            }
        }
    }
}

/// Applies `writes` atomically: a single conditional write when there is one,
/// else one `TransactWriteItems` call. An empty list writes nothing.
pub(super) async fn write_all(
    client: &Client,
    writes: Vec<WriteOp>,
    operation: &'static str,
) -> Result<(), WriteFailure> {
    match writes.len() {
        0 => Ok(()),
        1 => {
            let mut writes = writes;
            match writes.pop() {
                Some(write) => write.send_single(client, operation).await,
                None => Ok(()),
            }
        }
        count if count > MAX_TRANSACTION_ITEMS => Err(WriteFailure::Store(StoreError::backend(
            operation,
            DynamoError::TooManyItems {
                what: operation.to_string(),
                items: count,
                limit: MAX_TRANSACTION_ITEMS,
            },
        ))),
        _ => transact(client, writes, operation).await,
    }
}

async fn transact(
    client: &Client,
    writes: Vec<WriteOp>,
    operation: &'static str,
) -> Result<(), WriteFailure> {
    let items = writes
        .into_iter()
        .map(WriteOp::into_transact_item)
        .collect::<StoreResult<Vec<_>>>()
        .map_err(WriteFailure::Store)?;
    let result = client
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                let codes: Vec<String> = cancelled
                    .cancellation_reasons()
                    .iter()
                    .map(|reason| reason.code().unwrap_or(NO_REASON).to_string())
                    .collect();
                Err(WriteFailure::Cancelled(
                    (!codes.is_empty()).then_some(codes),
                ))
            }
            Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
                Err(WriteFailure::Cancelled(Some(vec![
                    TRANSACTION_CONFLICT.to_string(),
                ])))
            }
            _ => Err(WriteFailure::Store(StoreError::backend(operation, e))),
        },
    }
}
