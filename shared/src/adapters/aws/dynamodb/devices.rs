//! [`DeviceStore`]: the device partition and the device-side transaction.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use jiff::Timestamp;

use super::DynamoStore;
use super::codec::{
    COMMAND_PREFIX, INVENTORY_PARTITION, INVENTORY_PK, Item, MEMBER_PREFIX, META, OS_VERSION, PK,
    PLATFORM, REVISION, SEARCH, SK, TARGET_PREFIX, TOUCHED_AT, UDID, command_item, command_sk,
    decode_command, decode_device, decode_target, device_attributes, device_pk, event_item, get_s,
    group_pk, key, n, nanos, require_s, s, search_text, target_item,
};
use super::counts::{ShardDelta, may_change_state};
use super::cursor::{self, CursorScope};
use super::read::{QuerySpec, batch_get, get_item, query_all, query_page};
use super::schema::{EXPIRY_SHARDS, INVENTORY};
use super::write::{UpdateExpr, WriteFailure, WriteOp, write_all};
use crate::domain::{Device, Event};
use crate::ports::{
    Change, CommandWrite, CommitOutcome, DeviceContext, DeviceFilter, DeviceStore, Page,
    PageRequest, StoreError, StoreResult,
};

/// The largest page a list returns, as in the SQLite store.
pub(super) const MAX_PAGE: usize = 1000;

pub(super) fn page_limit(page: &PageRequest) -> usize {
    page.limit.clamp(1, MAX_PAGE)
}

/// Builds the create-or-update of a device's META item. `expected` is the revision
/// the caller read (`None` to create); the item stores it plus one. The
/// `touched_at` attribute of `touch_devices` is left alone.
pub(super) fn device_write(
    table: &str,
    device: &Device,
    expected: Option<u64>,
) -> StoreResult<WriteOp> {
    let mut update = UpdateExpr::default();
    for (attribute, value) in device_attributes(device)? {
        update.set_or_remove(attribute, value);
    }
    update.set(REVISION, n(expected.map_or(0, |r| r + 1)));
    let write = WriteOp::update(table, key(device_pk(&device.udid), META), update);
    Ok(match expected {
        None => write.when(|e| format!("attribute_not_exists({})", e.name(PK))),
        Some(revision) => {
            write.when(|e| format!("{} = {}", e.name(REVISION), e.value(n(revision))))
        }
    })
}

/// Events with duplicate ids written once (the first), because one
/// transaction cannot write an item twice.
pub(super) fn unique_events(events: &[Event]) -> Vec<&Event> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e.id.as_str()))
        .collect()
}

/// Keeps the last write per command, in first-seen order, because one
/// transaction cannot write an item twice and, applied in order, the last
/// one would win.
fn last_command_writes(writes: &[CommandWrite]) -> Vec<&CommandWrite> {
    let identity = |write: &CommandWrite| match write {
        CommandWrite::Put(command) => (command.device_id.clone(), command.uuid.clone()),
        CommandWrite::Remove { device_id, uuid } => (device_id.clone(), uuid.clone()),
    };
    let mut order: Vec<(String, String)> = Vec::new();
    let mut last: HashMap<(String, String), &CommandWrite> = HashMap::new();
    for write in writes {
        let id = identity(write);
        if !last.contains_key(&id) {
            order.push(id.clone());
        }
        last.insert(id, write);
    }
    order
        .into_iter()
        .filter_map(|id| last.remove(&id))
        .collect()
}

pub(super) fn command_write(table: &str, write: &CommandWrite) -> WriteOp {
    match write {
        CommandWrite::Put(command) => WriteOp::put(table, command_item(command)),
        CommandWrite::Remove { device_id, uuid } => {
            WriteOp::delete(table, key(device_pk(device_id), command_sk(uuid)))
        }
    }
}

/// Updates sent at once by `touch_devices`.
const TOUCHES_IN_FLIGHT: usize = 16;

/// Builds the update of a device's `touched_at`, conditioned on the device
/// existing and on `at` being later than the recorded time.
fn touch_write(table: &str, udid: &str, at: Timestamp) -> WriteOp {
    let mut update = UpdateExpr::default();
    update.set(TOUCHED_AT, nanos(at));
    WriteOp::update(table, key(device_pk(udid), META), update).when(|e| {
        let touched = e.name(TOUCHED_AT);
        format!(
            "attribute_exists({}) AND (attribute_not_exists({touched}) OR {touched} < {})",
            e.name(PK),
            e.value(nanos(at))
        )
    })
}

fn matches_filter(device: &Device, filter: &DeviceFilter) -> bool {
    if let Some(q) = filter.q.as_deref().filter(|q| !q.is_empty()) {
        let haystack = search_text(device.name.as_deref(), device.serial_number.as_deref());
        if !haystack.contains(&q.to_lowercase()) {
            return false;
        }
    }
    if let Some(version) = &filter.os_version
        && device.os_version.as_ref().map(|v| v.to_string()).as_deref() != Some(version.as_str())
    {
        return false;
    }
    if let Some(platform) = filter.platform
        && device.platform != Some(platform)
    {
        return false;
    }
    true
}

impl DynamoStore {
    /// Devices by UDID in the order given, unknown ones left out.
    async fn load_devices(&self, udids: &[String]) -> StoreResult<Vec<Device>> {
        if udids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = udids.iter().map(|u| key(device_pk(u), META)).collect();
        let items = batch_get(&self.client, &self.tables.state, keys, "read devices").await?;
        let mut by_udid = HashMap::new();
        for item in &items {
            let device = decode_device(item)?;
            by_udid.insert(device.udid.clone(), device);
        }
        Ok(udids
            .iter()
            .filter_map(|udid| by_udid.get(udid).cloned())
            .collect())
    }

    async fn list_all_devices(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Device>> {
        let scope = CursorScope {
            list: "devices",
            attributes: &[PK, SK, INVENTORY_PK, UDID],
            partition: (INVENTORY_PK, INVENTORY_PARTITION),
        };
        let mut spec = QuerySpec::index(
            &self.tables.state,
            INVENTORY,
            INVENTORY_PK,
            INVENTORY_PARTITION,
        )
        .filter(|e| {
            let mut clauses = Vec::new();
            if let Some(q) = filter.q.as_deref().filter(|q| !q.is_empty()) {
                clauses.push(format!(
                    "contains({}, {})",
                    e.name(SEARCH),
                    e.value(s(q.to_lowercase()))
                ));
            }
            if let Some(version) = &filter.os_version {
                clauses.push(format!(
                    "{} = {}",
                    e.name(OS_VERSION),
                    e.value(s(version.clone()))
                ));
            }
            if let Some(platform) = filter.platform {
                clauses.push(format!(
                    "{} = {}",
                    e.name(PLATFORM),
                    e.value(s(platform.as_str()))
                ));
            }
            clauses
        });
        spec.limit = Some(page_limit(page));
        spec.start = cursor::start(&scope, page.cursor.as_deref())?;
        let (items, last) = query_page(&self.client, &spec, "list devices").await?;
        let udids = items
            .iter()
            .map(|item| require_s(item, "device", UDID).map(str::to_string))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page {
            items: self.load_devices(&udids).await?,
            next_cursor: cursor::next(&scope, last)?,
        })
    }

    /// Lists a group's members in UDID order, read from the group's partition
    /// and filtered after the devices are read.
    async fn list_group_devices(
        &self,
        group_id: &str,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Device>> {
        let partition = group_pk(group_id);
        let scope = CursorScope {
            list: "group devices",
            attributes: &[PK, SK],
            partition: (PK, &partition),
        };
        let mut spec = QuerySpec::partition(&self.tables.state, PK, &partition)
            .and_key(|e| format!("begins_with({}, {})", e.name(SK), e.value(s(MEMBER_PREFIX))));
        spec.limit = Some(page_limit(page));
        spec.start = cursor::start(&scope, page.cursor.as_deref())?;
        let (items, last) = query_page(&self.client, &spec, "list group devices").await?;
        let udids: Vec<String> = items
            .iter()
            .filter_map(|item| {
                get_s(item, "member", SK)
                    .ok()
                    .flatten()
                    .and_then(|sk| sk.strip_prefix(MEMBER_PREFIX))
                    .map(str::to_string)
            })
            .collect();
        let devices = self.load_devices(&udids).await?;
        Ok(Page {
            items: devices
                .into_iter()
                .filter(|d| matches_filter(d, filter))
                .collect(),
            next_cursor: cursor::next(&scope, last)?,
        })
    }
}

#[async_trait]
impl DeviceStore for DynamoStore {
    async fn get_device(&self, udid: &str) -> StoreResult<Option<Device>> {
        get_item(
            &self.client,
            &self.tables.state,
            key(device_pk(udid), META),
            "read device",
        )
        .await?
        .map(|item| decode_device(&item))
        .transpose()
    }

    async fn get_devices(&self, udids: &[String]) -> StoreResult<Vec<Device>> {
        self.load_devices(udids).await
    }

    /// Reads the context with one consistent Query of the device's partition:
    /// the META item, every target the device has had, and its queued commands.
    async fn load_context(&self, udid: &str) -> StoreResult<Option<DeviceContext>> {
        let spec = QuerySpec::partition(&self.tables.state, PK, &device_pk(udid));
        let items = query_all(&self.client, spec, "load device context").await?;
        let mut meta: Option<&Item> = None;
        let mut targets: HashMap<&str, &Item> = HashMap::new();
        let mut command_items = Vec::new();
        for item in &items {
            let sort_key = require_s(item, "device partition", SK)?;
            if sort_key == META {
                meta = Some(item);
            } else if let Some(operation_id) = sort_key.strip_prefix(TARGET_PREFIX) {
                targets.insert(operation_id, item);
            } else if sort_key.starts_with(COMMAND_PREFIX) {
                command_items.push(item);
            }
        }
        let Some(meta) = meta else {
            return Ok(None);
        };
        let device = decode_device(meta)?;
        let target = device
            .current_operation_id
            .as_deref()
            .and_then(|operation_id| targets.get(operation_id))
            .map(|item| decode_target(item))
            .transpose()?;
        let commands = command_items
            .into_iter()
            .map(|item| decode_command(item, udid))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(DeviceContext {
            device,
            target,
            commands,
        }))
    }

    async fn list_devices(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Device>> {
        match &filter.group_id {
            Some(group_id) => self.list_group_devices(group_id, filter, page).await,
            None => self.list_all_devices(filter, page).await,
        }
    }

    /// Sends one conditional UpdateItem per device, 16 in flight, each of
    /// which writes only a later time and never creates an item.
    async fn touch_devices(&self, seen: &[(String, Timestamp)]) -> StoreResult<()> {
        let mut pending = seen.iter();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.len() < TOUCHES_IN_FLIGHT {
                let Some((udid, at)) = pending.next() else {
                    break;
                };
                let write = touch_write(&self.tables.state, udid, *at);
                let client = self.client.clone();
                tasks.spawn(async move { write_all(&client, vec![write], "touch devices").await });
            }
            let Some(joined) = tasks.join_next().await else {
                return Ok(());
            };
            match joined.map_err(|e| StoreError::backend("touch devices", e))? {
                Ok(()) | Err(WriteFailure::Cancelled(_)) => {}
                Err(WriteFailure::Store(error)) => return Err(error),
            }
        }
    }

    /// Applies the change in one write: a single conditional write when the
    /// change has one item, else one `TransactWriteItems`. A status change that can move the
    /// operation's derived state costs one more read of the operation's
    /// partition afterwards.
    async fn commit(&self, change: Change) -> StoreResult<CommitOutcome> {
        let state = &self.tables.state;
        let mut writes = Vec::new();
        let mut state_check = None;
        if let Some(write) = &change.device {
            writes.push(device_write(state, &write.device, write.expected_revision)?);
        }
        if let Some(write) = &change.target {
            let target = &write.target;
            let expected = write.expected_revision;
            writes.push(
                WriteOp::put(state, target_item(target, expected + 1)?)
                    .when(|e| format!("{} = {}", e.name(REVISION), e.value(n(expected)))),
            );
            if write.previous_status != target.status {
                let delta = ShardDelta::new(&target.operation_id, &target.device_id).moved(
                    write.previous_status,
                    target.status,
                    target.updated_at,
                );
                writes.extend(delta.write(state));
                if may_change_state(write.previous_status, target.status) {
                    state_check = Some((target.operation_id.clone(), delta.as_counts()));
                }
            }
        }
        for event in unique_events(&change.events) {
            writes.push(WriteOp::put(
                &self.tables.events,
                event_item(event, EXPIRY_SHARDS)?,
            ));
        }
        for command in last_command_writes(&change.commands) {
            writes.push(command_write(state, command));
        }

        write_all(&self.client, writes, "commit change")
            .await
            .map_err(|failure| {
                failure.into_store_error("commit change", || conflict_message(&change))
            })?;

        let mut outcome = CommitOutcome::default();
        if let Some((operation_id, _)) = state_check {
            outcome
                .state_changes
                .extend(self.state_change(&operation_id).await?);
        }
        Ok(outcome)
    }
}

fn conflict_message(change: &Change) -> String {
    let device = change.device.as_ref();
    if let Some(write) = device
        && write.expected_revision.is_none()
    {
        return format!("device {} already exists", write.device.udid);
    }
    let device = device.map(|w| {
        format!(
            "device {} at revision {}",
            w.device.udid,
            w.expected_revision.unwrap_or_default()
        )
    });
    let target = change.target.as_ref().map(|w| {
        format!(
            "target {} of operation {} at revision {}",
            w.target.device_id, w.target.operation_id, w.expected_revision
        )
    });
    match (device, target) {
        (Some(d), Some(t)) => format!("{d} or {t} changed since it was read"),
        (Some(d), None) => format!("{d} changed since it was read"),
        (None, Some(t)) => format!("{t} changed since it was read"),
        (None, None) => "a write met another transaction in flight; retry".to_string(),
    }
}
