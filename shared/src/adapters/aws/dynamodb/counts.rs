//! Sharded operation counters and the lifecycle state derived from them.
//!
//! An operation's partition contains its META item and up to
//! [`COUNTER_SHARDS`] counter items (`COUNTS#00` ...). A target's counts
//! live in the shard its UDID hashes to, and a status change is one ADD on
//! that shard: -1 on the old status, +1 on the new one. No single item takes
//! every status change of a 100,000-device operation.
//!
//! Start and finish times are kept per shard as well, so that no write has
//! to touch one shared item:
//! - `started_at` is set once (`if_not_exists`) when a target of the shard
//!   first leaves Pending or is added in another status. The operation's
//!   `started_at` is the earliest over the shards, left out when it is after
//!   a cancellation (an operation cancelled while scheduled never started).
//! - `settled_at` is set whenever a target of the shard reaches a final
//!   status or an active target leaves the operation. A finished operation's
//!   `finished_at` is the latest over the shards, which is the instant its
//!   last active target settled.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::DynamoStore;
use super::codec::{
    self, CANCELLED_AT, COUNTS_PREFIX, DATA, Item, META, PK, SETTLED_AT, SK, STARTED_AT, from_json,
    get_i128, get_s, get_time, key, nanos, operation_pk, stable_hash,
};
use super::read::{QuerySpec, query_all};
use super::schema::COUNTER_SHARDS;
use super::write::{UpdateExpr, WriteOp};
use crate::domain::{Operation, OperationState, StatusCounts, TargetStatus};

/// META attribute: the lifecycle state last reported in a `CommitOutcome`.
const REPORTED_STATE: &str = "reported_state";
use crate::ports::StoreResult;

/// Returns the counter shard of a device, stable across processes.
pub(super) fn shard_of(udid: &str) -> u64 {
    stable_hash(udid) % COUNTER_SHARDS
}

/// Tells whether a target moving from `from` to `to` can change its operation's
/// derived state: the state depends only on the total, the Pending count and
/// the count of final statuses, so only moves across those lines matter.
pub(super) fn may_change_state(from: TargetStatus, to: TargetStatus) -> bool {
    (from == TargetStatus::Pending) != (to == TargetStatus::Pending)
        || from.is_final() != to.is_final()
}

/// Changes to one counter shard, merged over the targets of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ShardDelta {
    pub(super) operation_id: String,
    pub(super) shard: u64,
    pub(super) counts: BTreeMap<TargetStatus, i64>,
    pub(super) started_at: Option<Timestamp>,
    pub(super) settled_at: Option<Timestamp>,
}

impl ShardDelta {
    pub(super) fn new(operation_id: &str, udid: &str) -> Self {
        ShardDelta {
            operation_id: operation_id.to_string(),
            shard: shard_of(udid),
            counts: BTreeMap::new(),
            started_at: None,
            settled_at: None,
        }
    }

    /// Counts a target of this shard entering the operation in `status` at `at`.
    pub(super) fn added(mut self, status: TargetStatus, at: Timestamp) -> Self {
        *self.counts.entry(status).or_default() += 1;
        if status != TargetStatus::Pending {
            self.started_at = Some(at);
        }
        if status.is_final() {
            self.settled_at = Some(at);
        }
        self
    }

    /// Counts a target of this shard leaving the operation from `status` at `at`.
    pub(super) fn removed(mut self, status: TargetStatus, at: Timestamp) -> Self {
        *self.counts.entry(status).or_default() -= 1;
        if !status.is_final() {
            self.settled_at = Some(at);
        }
        self
    }

    /// Counts a target of this shard moving from `from` to `to` at `at`.
    pub(super) fn moved(mut self, from: TargetStatus, to: TargetStatus, at: Timestamp) -> Self {
        *self.counts.entry(from).or_default() -= 1;
        *self.counts.entry(to).or_default() += 1;
        if from == TargetStatus::Pending && to != TargetStatus::Pending {
            self.started_at = Some(at);
        }
        if !from.is_final() && to.is_final() {
            self.settled_at = Some(at);
        }
        self
    }

    /// Tells whether `other` updates the same counter item.
    pub(super) fn same_item(&self, other: &ShardDelta) -> bool {
        self.operation_id == other.operation_id && self.shard == other.shard
    }

    /// Folds `other` (the same item) into this delta: counts add up, the
    /// start time is the earliest and the settle time the latest.
    pub(super) fn merge(&mut self, other: &ShardDelta) {
        for (status, delta) in &other.counts {
            *self.counts.entry(*status).or_default() += delta;
        }
        self.started_at = match (self.started_at, other.started_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.settled_at = match (self.settled_at, other.settled_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Returns the count changes as a [`StatusCounts`] of deltas.
    pub(super) fn as_counts(&self) -> StatusCounts {
        let mut counts = StatusCounts::default();
        for (status, delta) in &self.counts {
            counts.add(*status, *delta);
        }
        counts
    }

    /// Builds the shard update, or `None` when the delta changes nothing.
    pub(super) fn write(&self, table: &str) -> Option<WriteOp> {
        let mut update = UpdateExpr::default();
        for (status, delta) in &self.counts {
            if *delta != 0 {
                update.add(status.as_str(), *delta);
            }
        }
        if let Some(at) = self.started_at {
            update.set_if_absent(STARTED_AT, nanos(at));
        }
        if let Some(at) = self.settled_at {
            update.set(SETTLED_AT, nanos(at));
        }
        if update.is_empty() {
            return None;
        }
        let key = key(
            operation_pk(&self.operation_id),
            codec::counts_sk(self.shard),
        );
        Some(WriteOp::update(table, key, update))
    }
}

/// An operation's partition as read: the stored record and the sums of its
/// counter shards.
#[derive(Debug, Clone)]
pub(super) struct OperationPartition {
    pub(super) meta: Item,
    pub(super) counts: StatusCounts,
    pub(super) started_at: Option<Timestamp>,
    pub(super) settled_at: Option<Timestamp>,
    pub(super) cancelled_at: Option<Timestamp>,
}

impl OperationPartition {
    /// Folds the items of one operation's partition; `None` without META.
    pub(super) fn from_items(items: Vec<Item>) -> StoreResult<Option<Self>> {
        let mut meta = None;
        let mut counts = StatusCounts::default();
        let mut started_at: Option<Timestamp> = None;
        let mut settled_at: Option<Timestamp> = None;
        for item in items {
            let sort_key = get_s(&item, "operation", SK)?.unwrap_or_default();
            if sort_key == META {
                meta = Some(item);
                continue;
            }
            if !sort_key.starts_with(COUNTS_PREFIX) {
                continue;
            }
            for status in TargetStatus::ALL {
                if let Some(n) = get_i128(&item, "counter shard", status.as_str())? {
                    counts.add(status, i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            if let Some(at) = get_time(&item, "counter shard", STARTED_AT)? {
                started_at = Some(started_at.map_or(at, |s| s.min(at)));
            }
            if let Some(at) = get_time(&item, "counter shard", SETTLED_AT)? {
                settled_at = Some(settled_at.map_or(at, |s| s.max(at)));
            }
        }
        let Some(meta) = meta else {
            return Ok(None);
        };
        let cancelled_at = get_time(&meta, "operation", CANCELLED_AT)?;
        Ok(Some(OperationPartition {
            meta,
            counts,
            started_at,
            settled_at,
            cancelled_at,
        }))
    }

    /// Returns the lifecycle state: cancelled when marked so, else derived from the counts.
    pub(super) fn state(&self) -> OperationState {
        state_of(self.cancelled_at.is_some(), &self.counts)
    }

    /// Decodes the operation as the port returns it.
    pub(super) fn into_operation(self) -> StoreResult<Operation> {
        let data = codec::require_s(&self.meta, "operation", DATA)?;
        let mut operation: Operation = from_json(data)?;
        operation.state = self.state();
        operation.counts = self.counts;
        operation.cancelled_at = self.cancelled_at;
        operation.started_at = match (self.started_at, self.cancelled_at) {
            (Some(started), Some(cancelled)) if started > cancelled => None,
            (started, _) => started,
        };
        operation.finished_at = if operation.state == OperationState::Finished {
            self.settled_at
        } else {
            None
        };
        Ok(operation)
    }
}

fn state_of(cancelled: bool, counts: &StatusCounts) -> OperationState {
    if cancelled {
        OperationState::Cancelled
    } else {
        counts.derived_state()
    }
}

impl DynamoStore {
    /// Reads an operation's partition (META and counter shards) in one
    /// consistent Query.
    pub(super) async fn read_operation_partition(
        &self,
        operation_id: &str,
    ) -> StoreResult<Option<OperationPartition>> {
        let spec = QuerySpec::partition(&self.tables.state, PK, &operation_pk(operation_id));
        let items = query_all(&self.client, spec, "read operation").await?;
        OperationPartition::from_items(items)
    }

    /// Reports the state change that `delta`, already committed, made to an
    /// operation, at most once per change across concurrent writers.
    ///
    /// The state derived from the counts read after the commit is compared
    /// with the last state reported, kept in the operation's META item as
    /// `reported_state`. A writer that sees a new state claims it with a
    /// conditional update from the old one, and only the writer whose
    /// update succeeds reports the change, so two devices leaving Pending
    /// at the same moment yield one `operation_started`, not zero or two.
    /// Costs the partition read, plus one conditional write on a change.
    pub(super) async fn state_change(
        &self,
        operation_id: &str,
    ) -> StoreResult<Option<(String, OperationState, OperationState)>> {
        let Some(partition) = self.read_operation_partition(operation_id).await? else {
            return Ok(None);
        };
        let after = partition.state();
        let reported = get_s(&partition.meta, "operation", REPORTED_STATE)?
            .and_then(|text| text.parse::<OperationState>().ok())
            .unwrap_or(OperationState::Scheduled);
        if after == reported || after == OperationState::Cancelled {
            return Ok(None);
        }
        let condition = if reported == OperationState::Scheduled {
            "attribute_not_exists(#reported) OR #reported = :before"
        } else {
            "#reported = :before"
        };
        let claim = self
            .client
            .update_item()
            .table_name(&self.tables.state)
            .set_key(Some(key(operation_pk(operation_id), META)))
            .update_expression("SET #reported = :after")
            .condition_expression(condition)
            .expression_attribute_names("#reported", REPORTED_STATE)
            .expression_attribute_values(":before", codec::s(reported.as_str()))
            .expression_attribute_values(":after", codec::s(after.as_str()))
            .send()
            .await;
        match claim {
            Ok(_) => Ok(Some((operation_id.to_string(), reported, after))),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(error) => Err(crate::ports::StoreError::backend(
                "record operation state",
                error,
            )),
        }
    }
}
