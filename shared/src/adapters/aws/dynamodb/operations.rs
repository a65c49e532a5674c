//! [`OperationStore`]: operations, targets, cancellation and idempotency keys.
//! Assignments are in the `assign` module.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use jiff::Timestamp;

use super::DynamoStore;
use super::codec::{
    CANCELLED_AT, CREATED_AT, CREATED_KEY, DATA, GROUP_IDS, IDEMPOTENT_OPERATION, Item, KIND, META,
    OPERATION_LIST, OPERATION_LIST_PARTITION, OPERATION_PREFIX, PK, PRODUCT_VERSION, PROTOCOL,
    SEARCH, SK, STATUS, TARGET_OP, TARGET_OP_STATUS, TARGET_UDID, TIME_ZONE, created_key,
    decode_target, device_pk, get_s, idempotency_pk, key, nanos, operation_pk,
    operation_status_key, require_s, s, sortable_time, string_list, target_sk, to_json,
};
use super::counts::OperationPartition;
use super::cursor::{self, CursorScope};
use super::devices::page_limit;
use super::read::{QuerySpec, get_item, query_many, query_page};
use super::schema::{OPERATIONS_BY_CREATED, TARGETS_BY_OPERATION, TARGETS_BY_STATUS};
use super::write::{UpdateExpr, WriteFailure, WriteOp, write_all};
use crate::domain::{Operation, OperationState, StatusCounts, Target, TargetStatus};
use crate::ports::{
    AssignOutcome, Assignment, CommitOutcome, OperationFilter, OperationStore, Page, PageRequest,
    StoreError, StoreResult, TargetFilter,
};

fn operation_item(operation: &Operation) -> StoreResult<Item> {
    let mut stored = operation.clone();
    stored.counts = StatusCounts::default();
    let mut item = key(operation_pk(&stored.id), META);
    item.insert(DATA.into(), s(to_json(&stored)?));
    item.insert(OPERATION_LIST.into(), s(OPERATION_LIST_PARTITION));
    item.insert(
        CREATED_KEY.into(),
        s(created_key(stored.created_at, &stored.id)),
    );
    item.insert(KIND.into(), s(stored.kind.as_str()));
    item.insert(PROTOCOL.into(), s(stored.protocol.as_str()));
    item.insert(
        PRODUCT_VERSION.into(),
        s(stored.update.product_version.to_string()),
    );
    item.insert(GROUP_IDS.into(), string_list(&stored.group_ids));
    Ok(item)
}

/// Checks that a cursor's creation key lies inside the requested time range,
/// so that a cursor of another range is rejected instead of sent to DynamoDB.
fn in_range(start: &Item, from: Option<Timestamp>, to: Option<Timestamp>) -> bool {
    let Some(AttributeValue::S(created)) = start.get(CREATED_KEY) else {
        return false;
    };
    from.is_none_or(|from| created.as_str() >= sortable_time(from).as_str())
        && to.is_none_or(|to| created.as_str() < sortable_time(to).as_str())
}

impl DynamoStore {
    /// Reads the partitions of several operations concurrently, in order.
    async fn read_partitions(
        &self,
        ids: &[String],
    ) -> StoreResult<Vec<Option<OperationPartition>>> {
        let specs = ids
            .iter()
            .map(|id| QuerySpec::partition(&self.tables.state, PK, &operation_pk(id)))
            .collect();
        query_many(&self.client, specs, "read operations")
            .await?
            .into_iter()
            .map(OperationPartition::from_items)
            .collect()
    }
}

#[async_trait]
impl OperationStore for DynamoStore {
    async fn insert_operation(&self, operation: &Operation) -> StoreResult<()> {
        let write = WriteOp::put(&self.tables.state, operation_item(operation)?)
            .when(|e| format!("attribute_not_exists({})", e.name(PK)));
        write_all(&self.client, vec![write], "insert operation")
            .await
            .map_err(|failure| {
                failure.into_store_error("insert operation", || {
                    format!("operation {} already exists", operation.id)
                })
            })
    }

    /// Reads the operation with one consistent Query of its partition: META
    /// and the counter shards, summed.
    async fn get_operation(&self, id: &str) -> StoreResult<Option<Operation>> {
        self.read_operation_partition(id)
            .await?
            .map(OperationPartition::into_operation)
            .transpose()
    }

    /// Queries `operations_by_created`, newest first, with the time range
    /// as the sort-key condition and the other filters as a FilterExpression,
    /// then one Query per listed operation (run concurrently) for its counts.
    /// The state filter applies after the counts are read, so a page can
    /// hold fewer than `limit` operations and still have a next page.
    async fn list_operations(
        &self,
        filter: &OperationFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Operation>> {
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && from >= to
        {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        let scope = CursorScope {
            list: "operations",
            attributes: &[PK, SK, OPERATION_LIST, CREATED_KEY],
            partition: (OPERATION_LIST, OPERATION_LIST_PARTITION),
        };
        let mut spec = QuerySpec::index(
            &self.tables.state,
            OPERATIONS_BY_CREATED,
            OPERATION_LIST,
            OPERATION_LIST_PARTITION,
        );
        spec = match (filter.from, filter.to) {
            (Some(from), Some(to)) => spec.and_key(|e| {
                format!(
                    "{} BETWEEN {} AND {}",
                    e.name(CREATED_KEY),
                    e.value(s(sortable_time(from))),
                    e.value(s(sortable_time(to)))
                )
            }),
            (Some(from), None) => spec.and_key(|e| {
                format!(
                    "{} >= {}",
                    e.name(CREATED_KEY),
                    e.value(s(sortable_time(from)))
                )
            }),
            (None, Some(to)) => spec.and_key(|e| {
                format!(
                    "{} < {}",
                    e.name(CREATED_KEY),
                    e.value(s(sortable_time(to)))
                )
            }),
            (None, None) => spec,
        };
        spec = spec.filter(|e| {
            let mut clauses = Vec::new();
            if let Some(version) = &filter.product_version {
                clauses.push(format!(
                    "{} = {}",
                    e.name(PRODUCT_VERSION),
                    e.value(s(version.clone()))
                ));
            }
            if let Some(kind) = filter.kind {
                clauses.push(format!("{} = {}", e.name(KIND), e.value(s(kind.as_str()))));
            }
            if let Some(protocol) = filter.protocol {
                clauses.push(format!(
                    "{} = {}",
                    e.name(PROTOCOL),
                    e.value(s(protocol.as_str()))
                ));
            }
            if let Some(group_id) = &filter.group_id {
                clauses.push(format!(
                    "contains({}, {})",
                    e.name(GROUP_IDS),
                    e.value(s(group_id.clone()))
                ));
            }
            // Cancellation is stored, so it can narrow the query; the other
            // states are derived from the counts after the read.
            let wants_cancelled = filter.states.contains(&OperationState::Cancelled);
            if !filter.states.is_empty() && !wants_cancelled {
                clauses.push(format!("attribute_not_exists({})", e.name(CANCELLED_AT)));
            } else if wants_cancelled && filter.states.len() == 1 {
                clauses.push(format!("attribute_exists({})", e.name(CANCELLED_AT)));
            }
            clauses
        });
        spec.forward = false;
        spec.limit = Some(page_limit(page));
        spec.start = cursor::start(&scope, page.cursor.as_deref())?;
        if let (Some(start), Some(cursor)) = (&spec.start, &page.cursor)
            && !in_range(start, filter.from, filter.to)
        {
            return Err(StoreError::InvalidCursor(cursor.clone()));
        }

        let (items, last) = query_page(&self.client, &spec, "list operations").await?;
        let ids = items
            .iter()
            .map(|item| {
                get_s(item, "operation", PK)?
                    .and_then(|pk| pk.strip_prefix(OPERATION_PREFIX))
                    .map(str::to_string)
                    .ok_or_else(|| {
                        StoreError::backend(
                            "list operations",
                            super::DynamoError::MissingAttribute {
                                record: "operation",
                                attribute: PK,
                            },
                        )
                    })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let mut operations = Vec::with_capacity(ids.len());
        for partition in self.read_partitions(&ids).await?.into_iter().flatten() {
            let operation = partition.into_operation()?;
            if filter.states.is_empty() || filter.states.contains(&operation.state) {
                operations.push(operation);
            }
        }
        Ok(Page {
            items: operations,
            next_cursor: cursor::next(&scope, last)?,
        })
    }

    async fn assign(
        &self,
        assignments: Vec<Assignment>,
    ) -> StoreResult<(Vec<AssignOutcome>, CommitOutcome)> {
        self.assign_all(assignments).await
    }

    async fn get_target(&self, operation_id: &str, udid: &str) -> StoreResult<Option<Target>> {
        get_item(
            &self.client,
            &self.tables.state,
            key(device_pk(udid), target_sk(operation_id)),
            "read target",
        )
        .await?
        .map(|item| decode_target(&item))
        .transpose()
    }

    /// Queries `targets_by_status` when filtering by status, else
    /// `targets_by_operation`, in UDID order. The other filters are a
    /// FilterExpression.
    async fn list_targets(
        &self,
        operation_id: &str,
        filter: &TargetFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Target>> {
        let by_status = filter
            .status
            .map(|status| operation_status_key(operation_id, status));
        let (list, index, partition_attribute, partition): (_, _, &'static str, &str) =
            match &by_status {
                Some(key) => (
                    "targets by status",
                    TARGETS_BY_STATUS,
                    TARGET_OP_STATUS,
                    key,
                ),
                None => ("targets", TARGETS_BY_OPERATION, TARGET_OP, operation_id),
            };
        let attributes: &'static [&'static str] = if by_status.is_some() {
            &[PK, SK, TARGET_OP_STATUS, TARGET_UDID]
        } else {
            &[PK, SK, TARGET_OP, TARGET_UDID]
        };
        let scope = CursorScope {
            list,
            attributes,
            partition: (partition_attribute, partition),
        };
        let mut spec = QuerySpec::index(&self.tables.state, index, partition_attribute, partition)
            .filter(|e| {
                let mut clauses = Vec::new();
                if filter.active_only {
                    let finals: Vec<String> = TargetStatus::ALL
                        .into_iter()
                        .filter(|status| status.is_final())
                        .map(|status| e.value(s(status.as_str())))
                        .collect();
                    clauses.push(format!(
                        "NOT ({} IN ({}))",
                        e.name(STATUS),
                        finals.join(", ")
                    ));
                }
                if let Some(zone) = &filter.time_zone {
                    clauses.push(format!(
                        "{} = {}",
                        e.name(TIME_ZONE),
                        e.value(s(zone.clone()))
                    ));
                }
                if let Some(q) = filter.q.as_deref().filter(|q| !q.is_empty()) {
                    clauses.push(format!(
                        "contains({}, {})",
                        e.name(SEARCH),
                        e.value(s(q.to_lowercase()))
                    ));
                }
                if let Some(group_id) = &filter.group_id {
                    clauses.push(format!(
                        "contains({}, {})",
                        e.name(GROUP_IDS),
                        e.value(s(group_id.clone()))
                    ));
                }
                clauses
            });
        spec.limit = Some(page_limit(page));
        spec.start = cursor::start(&scope, page.cursor.as_deref())?;
        let (items, last) = query_page(&self.client, &spec, "list targets").await?;
        let mut targets = Vec::with_capacity(items.len());
        for item in &items {
            let target = decode_target(item)?;
            if target.operation_id == operation_id {
                targets.push(target);
            }
        }
        Ok(Page {
            items: targets,
            next_cursor: cursor::next(&scope, last)?,
        })
    }

    /// Reads the partition to refuse a finished operation (its state is
    /// derived from the counts), then sets `cancelled_at` on META under the
    /// condition that it is not set yet.
    ///
    /// NOTE: an operation whose last target finishes between the read and
    /// the write is cancelled although it finished. The SQLite store checks
    /// both in one transaction.
    async fn mark_cancelled(&self, operation_id: &str, at: Timestamp) -> StoreResult<()> {
        let Some(partition) = self.read_operation_partition(operation_id).await? else {
            return Err(StoreError::NotFound(format!("operation {operation_id}")));
        };
        match partition.state() {
            OperationState::Cancelled => {
                return Err(StoreError::Conflict(format!(
                    "operation {operation_id} is already cancelled"
                )));
            }
            OperationState::Finished => {
                return Err(StoreError::Conflict(format!(
                    "operation {operation_id} has finished"
                )));
            }
            OperationState::Scheduled | OperationState::InProgress => {}
        }
        let mut update = UpdateExpr::default();
        update.set(CANCELLED_AT, nanos(at));
        let write = WriteOp::update(
            &self.tables.state,
            key(operation_pk(operation_id), META),
            update,
        )
        .when(|e| {
            format!(
                "attribute_exists({}) AND attribute_not_exists({})",
                e.name(PK),
                e.name(CANCELLED_AT)
            )
        });
        write_all(&self.client, vec![write], "cancel operation")
            .await
            .map_err(|failure| {
                failure.into_store_error("cancel operation", || {
                    format!("operation {operation_id} is not scheduled or in progress")
                })
            })
    }

    async fn lookup_idempotency_key(&self, key_text: &str) -> StoreResult<Option<String>> {
        let item = get_item(
            &self.client,
            &self.tables.state,
            key(idempotency_pk(key_text), META),
            "read idempotency key",
        )
        .await?;
        item.map(|item| {
            require_s(&item, "idempotency key", IDEMPOTENT_OPERATION).map(str::to_string)
        })
        .transpose()
    }

    /// A conditional PutItem; when the key exists, one read returns the
    /// operation recorded for it.
    async fn claim_idempotency_key(
        &self,
        key_text: &str,
        operation_id: &str,
        at: Timestamp,
    ) -> StoreResult<Option<String>> {
        let mut item = key(idempotency_pk(key_text), META);
        item.insert(IDEMPOTENT_OPERATION.into(), s(operation_id));
        item.insert(CREATED_AT.into(), nanos(at));
        let write = WriteOp::put(&self.tables.state, item)
            .when(|e| format!("attribute_not_exists({})", e.name(PK)));
        match write_all(&self.client, vec![write], "claim idempotency key").await {
            Ok(()) => Ok(None),
            Err(WriteFailure::Store(error)) => Err(error),
            Err(WriteFailure::Cancelled(_)) => match self.lookup_idempotency_key(key_text).await? {
                Some(existing) => Ok(Some(existing)),
                None => Err(StoreError::Conflict(format!(
                    "idempotency key {key_text:?} is being claimed by another request; retry"
                ))),
            },
        }
    }
}
