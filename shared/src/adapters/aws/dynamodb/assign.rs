//! `OperationStore::assign`: putting devices into an operation.
//!
//! Each assignment is a set of conditional writes that must apply together.
//! They are the device's pointer (conditioned on its current operation), the
//! replaced target's delete (conditioned on its revision) with that
//! operation's queued commands, the new target, events, commands and the
//! counter shards of both operations.
//!
//! Several assignments share one `TransactWriteItems` while they fit in its
//! 100 items, with the updates of one counter shard merged into one write.
//! When DynamoDB cancels a transaction, the cancellation reasons name the
//! writes whose condition failed. Their assignments are reported as
//! conflicts, and the rest is sent again.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use super::DynamoError;
use super::DynamoStore;
use super::codec::{
    COMMAND_PREFIX, CURRENT_OPERATION, Item, META, OPERATION_ID, PK, REVISION, SK, device_pk,
    event_item, get_s, key, n, require_s, require_u64, s, target_item, target_sk, target_status,
};
use super::counts::ShardDelta;
use super::devices::unique_events;
use super::read::{QuerySpec, query_many};
use super::schema::EXPIRY_SHARDS;
use super::write::{
    CONDITION_FAILED, TRANSACTION_CONFLICT, UpdateExpr, WriteFailure, WriteOp, write_all,
};
use crate::domain::StatusCounts;
use crate::ports::{
    AssignOutcome, Assignment, CommitOutcome, MAX_TRANSACTION_ITEMS, StoreError, StoreResult,
};

/// Attempts at a transaction that met other transactions in flight before
/// its assignments are reported as conflicts (the caller re-plans those).
const BUSY_ATTEMPTS: u32 = 4;

/// One assignment's writes, without its counter updates, which are merged
/// per transaction.
#[derive(Debug, Clone)]
struct Planned {
    /// Position in the caller's list.
    position: usize,
    udid: String,
    writes: Vec<WriteOp>,
    counters: Vec<ShardDelta>,
}

/// The result of sending one batch.
enum BatchResult {
    Done,
    /// The cancellation gave no reasons per write: send each assignment on
    /// its own to find the conflicting ones.
    Split(Vec<Planned>),
}

/// Counts the distinct counter items that several plans update.
fn distinct_counters<'a>(plans: impl Iterator<Item = &'a Planned>) -> usize {
    let mut merged: Vec<&ShardDelta> = Vec::new();
    for delta in plans.flat_map(|p| p.counters.iter()) {
        if !merged.iter().any(|m| m.same_item(delta)) {
            merged.push(delta);
        }
    }
    merged.len()
}

/// Lists the writes of a batch and, for each write, the batch index of the
/// assignment that owns it (`None` for the merged counter updates).
fn batch_writes(table: &str, batch: &[Planned]) -> (Vec<WriteOp>, Vec<Option<usize>>) {
    let mut writes = Vec::new();
    let mut owners = Vec::new();
    let mut merged: Vec<ShardDelta> = Vec::new();
    for (index, plan) in batch.iter().enumerate() {
        for write in &plan.writes {
            writes.push(write.clone());
            owners.push(Some(index));
        }
        for delta in &plan.counters {
            match merged.iter_mut().find(|m| m.same_item(delta)) {
                Some(existing) => existing.merge(delta),
                None => merged.push(delta.clone()),
            }
        }
    }
    for delta in merged {
        if let Some(write) = delta.write(table) {
            writes.push(write);
            owners.push(None);
        }
    }
    (writes, owners)
}

/// Takes the next assignments that fit in one transaction, each device at
/// most once. Takes at least one even if it alone does not fit, which
/// `assign_all` has ruled out before sending anything.
fn next_batch(queue: &mut VecDeque<Planned>) -> Vec<Planned> {
    let mut batch: Vec<Planned> = Vec::new();
    let mut devices = HashSet::new();
    while let Some(next) = queue.front() {
        let own: usize = batch.iter().map(|p| p.writes.len()).sum::<usize>() + next.writes.len();
        let counters = distinct_counters(batch.iter().chain(std::iter::once(next)));
        let fits = own + counters <= MAX_TRANSACTION_ITEMS && !devices.contains(&next.udid);
        if !fits && !batch.is_empty() {
            break;
        }
        let Some(next) = queue.pop_front() else { break };
        devices.insert(next.udid.clone());
        batch.push(next);
    }
    batch
}

/// Adds `delta` to the operation's total in `applied`, keeping first-touch order.
fn record_delta(applied: &mut Vec<(String, StatusCounts)>, delta: &ShardDelta) {
    let counts = delta.as_counts();
    match applied.iter_mut().find(|(id, _)| *id == delta.operation_id) {
        Some((_, total)) => {
            for status in crate::domain::TargetStatus::ALL {
                total.add(status, counts.get(status));
            }
        }
        None => applied.push((delta.operation_id.clone(), counts)),
    }
}

impl DynamoStore {
    pub(super) async fn assign_all(
        &self,
        assignments: Vec<Assignment>,
    ) -> StoreResult<(Vec<AssignOutcome>, CommitOutcome)> {
        if assignments.len() > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::backend(
                "assign targets",
                DynamoError::TooManyAssignments {
                    count: assignments.len(),
                    limit: MAX_TRANSACTION_ITEMS,
                },
            ));
        }
        let mut outcomes: Vec<Option<AssignOutcome>> = vec![None; assignments.len()];
        let replaced = self.read_replaced(&assignments).await?;

        let mut queue = VecDeque::new();
        for (position, (assignment, partition)) in assignments.iter().zip(replaced).enumerate() {
            match self.plan(position, assignment, partition.as_deref())? {
                Some(plan) => {
                    let items = plan.writes.len() + distinct_counters(std::iter::once(&plan));
                    if items > MAX_TRANSACTION_ITEMS {
                        return Err(StoreError::backend(
                            "assign targets",
                            DynamoError::TooManyItems {
                                what: format!("the assignment of device {}", plan.udid),
                                items,
                                limit: MAX_TRANSACTION_ITEMS,
                            },
                        ));
                    }
                    queue.push_back(plan);
                }
                None => outcomes[position] = Some(AssignOutcome::Conflict),
            }
        }

        let mut applied: Vec<(String, StatusCounts)> = Vec::new();
        // Assignments of a batch whose cancellation gave no reasons, each
        // sent alone; a batch of one never splits.
        let mut singles: VecDeque<Planned> = VecDeque::new();
        loop {
            let batch = match singles.pop_front() {
                Some(plan) => vec![plan],
                None if !queue.is_empty() => next_batch(&mut queue),
                None => break,
            };
            if let BatchResult::Split(plans) =
                self.apply_batch(batch, &mut outcomes, &mut applied).await?
            {
                singles.extend(plans);
            }
        }

        let mut commit = CommitOutcome::default();
        for (operation_id, _) in &applied {
            commit
                .state_changes
                .extend(self.state_change(operation_id).await?);
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.unwrap_or(AssignOutcome::Conflict))
            .collect();
        Ok((outcomes, commit))
    }

    /// Reads the partition of each device whose assignment replaces a
    /// target, concurrently: the old target's status (for the counts) and
    /// the old operation's queued commands are not in the assignment.
    async fn read_replaced(
        &self,
        assignments: &[Assignment],
    ) -> StoreResult<Vec<Option<Vec<Item>>>> {
        let positions: Vec<usize> = assignments
            .iter()
            .enumerate()
            .filter(|(_, a)| a.replaces.is_some())
            .map(|(position, _)| position)
            .collect();
        let specs = positions
            .iter()
            .map(|&position| {
                let udid = &assignments[position].target.device_id;
                QuerySpec::partition(&self.tables.state, PK, &device_pk(udid))
            })
            .collect();
        let results = query_many(&self.client, specs, "read replaced targets").await?;
        let mut partitions = vec![None; assignments.len()];
        for (position, items) in positions.into_iter().zip(results) {
            partitions[position] = Some(items);
        }
        Ok(partitions)
    }

    /// Plans the writes of one assignment. Returns `None` when the target it
    /// replaces has changed already (a conflict, found without writing).
    fn plan(
        &self,
        position: usize,
        assignment: &Assignment,
        partition: Option<&[Item]>,
    ) -> StoreResult<Option<Planned>> {
        let state = &self.tables.state;
        let target = &assignment.target;
        let udid = &target.device_id;
        let now = target.created_at;
        let mut writes = Vec::new();
        let mut counters = Vec::new();

        let mut pointer = UpdateExpr::default();
        let next_current = (!target.status.is_final()).then(|| s(target.operation_id.clone()));
        pointer.set_or_remove(CURRENT_OPERATION, next_current);
        pointer.increment(REVISION, 1);
        writes.push(
            WriteOp::update(state, key(device_pk(udid), META), pointer).when(|e| {
                let exists = format!("attribute_exists({})", e.name(PK));
                let current = e.name(CURRENT_OPERATION);
                match &assignment.expected_current {
                    Some(operation_id) => {
                        format!(
                            "{exists} AND {current} = {}",
                            e.value(s(operation_id.clone()))
                        )
                    }
                    None => format!("{exists} AND attribute_not_exists({current})"),
                }
            }),
        );

        let mut replaced_revision = None;
        if let Some((old_operation, revision)) = &assignment.replaces {
            let items = partition.unwrap_or_default();
            let old_sort_key = target_sk(old_operation);
            let old = items.iter().find(|item| {
                get_s(item, "target", SK).ok().flatten() == Some(old_sort_key.as_str())
            });
            let Some(old) = old else {
                return Ok(None);
            };
            if require_u64(old, "target", REVISION)? != *revision {
                return Ok(None);
            }
            let old_status = target_status(old)?;
            counters.push(ShardDelta::new(old_operation, udid).removed(old_status, now));
            if *old_operation == target.operation_id {
                // The new target replaces the old item in place, so it is
                // one conditional put instead of a delete and a put.
                replaced_revision = Some(*revision);
            } else {
                let expected = *revision;
                writes.push(
                    WriteOp::delete(state, key(device_pk(udid), old_sort_key))
                        .when(|e| format!("{} = {}", e.name(REVISION), e.value(n(expected)))),
                );
            }
            let new_commands: HashSet<&str> = assignment
                .commands
                .iter()
                .map(|c| c.uuid.as_str())
                .collect();
            for item in items {
                let sort_key = require_s(item, "device partition", SK)?;
                let Some(uuid) = sort_key.strip_prefix(COMMAND_PREFIX) else {
                    continue;
                };
                let of_old = get_s(item, "command", OPERATION_ID)? == Some(old_operation.as_str());
                if of_old && !new_commands.contains(uuid) {
                    writes.push(WriteOp::delete(state, key(device_pk(udid), sort_key)));
                }
            }
        }

        // A replaced target in the same operation keeps counting revisions,
        // so a reader of the old item cannot overwrite the new one.
        let revision = replaced_revision.map_or(0, |r| r + 1);
        let put = WriteOp::put(state, target_item(target, revision)?);
        writes.push(match replaced_revision {
            Some(expected) => {
                put.when(|e| format!("{} = {}", e.name(REVISION), e.value(n(expected))))
            }
            None => put.when(|e| format!("attribute_not_exists({})", e.name(PK))),
        });
        counters.push(ShardDelta::new(&target.operation_id, udid).added(target.status, now));

        for event in unique_events(&assignment.events) {
            writes.push(WriteOp::put(
                &self.tables.events,
                event_item(event, EXPIRY_SHARDS)?,
            ));
        }
        for command in &assignment.commands {
            writes.push(WriteOp::put(state, super::codec::command_item(command)));
        }
        Ok(Some(Planned {
            position,
            udid: udid.clone(),
            writes,
            counters,
        }))
    }

    /// Sends one batch, dropping assignments whose conditions failed and
    /// sending the rest again until they apply.
    async fn apply_batch(
        &self,
        mut batch: Vec<Planned>,
        outcomes: &mut [Option<AssignOutcome>],
        applied: &mut Vec<(String, StatusCounts)>,
    ) -> StoreResult<BatchResult> {
        let mut busy_attempts = 0;
        loop {
            if batch.is_empty() {
                return Ok(BatchResult::Done);
            }
            let (writes, owners) = batch_writes(&self.tables.state, &batch);
            let failure = match write_all(&self.client, writes, "assign targets").await {
                Ok(()) => {
                    for plan in &batch {
                        outcomes[plan.position] = Some(AssignOutcome::Assigned);
                        for delta in &plan.counters {
                            record_delta(applied, delta);
                        }
                    }
                    return Ok(BatchResult::Done);
                }
                Err(WriteFailure::Store(error)) => return Err(error),
                Err(failure) => failure,
            };
            let reasons = failure.reasons().filter(|r| r.len() == owners.len());
            let Some(reasons) = reasons else {
                if batch.len() > 1 {
                    return Ok(BatchResult::Split(batch));
                }
                for plan in &batch {
                    outcomes[plan.position] = Some(AssignOutcome::Conflict);
                }
                return Ok(BatchResult::Done);
            };

            let conflicted: HashSet<usize> = reasons
                .iter()
                .zip(&owners)
                .filter(|(reason, _)| **reason == Some(CONDITION_FAILED))
                .filter_map(|(_, owner)| *owner)
                .collect();
            if !conflicted.is_empty() {
                let mut kept = Vec::with_capacity(batch.len());
                for (index, plan) in batch.into_iter().enumerate() {
                    if conflicted.contains(&index) {
                        outcomes[plan.position] = Some(AssignOutcome::Conflict);
                    } else {
                        kept.push(plan);
                    }
                }
                batch = kept;
                continue;
            }

            let busy = reasons.iter().any(|reason| {
                matches!(
                    reason,
                    Some(
                        TRANSACTION_CONFLICT | "ThrottlingError" | "ProvisionedThroughputExceeded"
                    )
                )
            });
            if !busy {
                let codes: Vec<&str> = reasons.iter().map(|r| r.unwrap_or("None")).collect();
                return Err(StoreError::backend(
                    "assign targets",
                    DynamoError::Cancelled {
                        codes: codes.join(", "),
                    },
                ));
            }
            busy_attempts += 1;
            if busy_attempts == BUSY_ATTEMPTS {
                for plan in &batch {
                    outcomes[plan.position] = Some(AssignOutcome::Conflict);
                }
                return Ok(BatchResult::Done);
            }
            tokio::time::sleep(Duration::from_millis(20u64 << busy_attempts)).await;
        }
    }
}
