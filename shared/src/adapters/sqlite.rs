//! The embedded store: SQLite through rusqlite, in WAL mode.
//!
//! Records are kept as JSON in a `data` column beside the columns that lists
//! filter and sort on, which keeps the schema close to DynamoDB items. One
//! connection serves reads and writes behind a mutex; every statement is
//! short, and WAL lets another process (an `osdeploy` CLI command) read
//! while the server writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::{
    Device, Event, Group, Operation, OperationState, StatusCounts, Target, TargetStatus,
};
use crate::ports::{
    AssignOutcome, Assignment, CatalogStore, Change, CommandState, CommandWrite, CommitOutcome,
    DeviceContext, DeviceFilter, DeviceStore, EventFilter, EventStore, GroupStore, OperationFilter,
    OperationStore, Page, PageRequest, QueuedCommand, Schedule, ScheduleStore, Scheduler,
    StoreError, StoreResult, TargetFilter,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS devices (
    udid TEXT PRIMARY KEY,
    name TEXT,
    serial_number TEXT,
    platform TEXT,
    os_version TEXT,
    current_operation_id TEXT,
    last_seen_at INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    group_id TEXT NOT NULL,
    udid TEXT NOT NULL,
    PRIMARY KEY (group_id, udid)
);
CREATE INDEX IF NOT EXISTS group_members_by_device ON group_members (udid);
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    kind TEXT NOT NULL,
    protocol TEXT NOT NULL,
    product_version TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    cancelled_at INTEGER,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_by_created ON operations (created_at, id);
CREATE TABLE IF NOT EXISTS operation_groups (
    operation_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    PRIMARY KEY (group_id, operation_id)
);
CREATE TABLE IF NOT EXISTS operation_counts (
    operation_id TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (operation_id, status)
);
CREATE TABLE IF NOT EXISTS targets (
    operation_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    status TEXT NOT NULL,
    time_zone TEXT,
    search TEXT NOT NULL,
    revision INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (operation_id, device_id)
);
CREATE INDEX IF NOT EXISTS targets_by_status ON targets (operation_id, status, device_id);
CREATE TABLE IF NOT EXISTS target_groups (
    operation_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    PRIMARY KEY (operation_id, group_id, device_id)
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    operation_id TEXT NOT NULL,
    device_id TEXT,
    event_type TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_operation ON events (operation_id, id);
CREATE INDEX IF NOT EXISTS events_by_device ON events (device_id, id);
CREATE INDEX IF NOT EXISTS events_by_expiry ON events (expires_at);
CREATE TABLE IF NOT EXISTS commands (
    uuid TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    operation_id TEXT,
    request_type TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_by_device ON commands (device_id, uuid);
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    due_at INTEGER NOT NULL,
    operation_id TEXT,
    job TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_by_due ON schedules (due_at, id);
CREATE TABLE IF NOT EXISTS catalogs (
    imported_at INTEGER NOT NULL,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    operation_id TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"#;

/// A device's events after a ULID: served by `events_by_device`, which
/// `device_timeline_uses_index` checks.
const DEVICE_EVENTS_SQL: &str = "SELECT data FROM events
    WHERE device_id = ?1 AND id > ?2 AND expires_at > ?3 ORDER BY id LIMIT ?4";

/// The SQLite-backed store; implements every store port.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// A second connection to the same file for WAL checkpoints, so that
    /// their fsyncs happen outside the request path; `None` in memory.
    checkpointer: Option<Mutex<Connection>>,
}

/// WAL pages after which a commit checkpoints by itself (SQLite's default
/// is 1,000). Set high because [`SqliteStore::checkpoint`] normally runs
/// first, from a background task; this is the backstop when none runs.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 20_000;

fn backend(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::backend(operation, e)
}

fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::backend("encode record", e))
}

fn from_json<T: DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::backend("decode record", e))
}

fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

fn from_micros(us: i64) -> StoreResult<Timestamp> {
    Timestamp::from_microsecond(us).map_err(|e| StoreError::backend("decode timestamp", e))
}

fn encode_cursor(parts: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(parts.join("\u{1f}"))
}

fn decode_cursor(cursor: &str, expected_parts: usize) -> StoreResult<Vec<String>> {
    let invalid = || StoreError::InvalidCursor(cursor.to_string());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let parts: Vec<String> = text.split('\u{1f}').map(str::to_string).collect();
    if parts.len() != expected_parts {
        return Err(invalid());
    }
    Ok(parts)
}

fn like_pattern(q: &str) -> String {
    let escaped = q
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn target_search_text(target: &Target) -> String {
    format!(
        "{}\u{1f}{}",
        target.device_name.as_deref().unwrap_or("").to_lowercase(),
        target.serial_number.as_deref().unwrap_or("").to_lowercase()
    )
}

fn command_state_text(state: CommandState) -> &'static str {
    match state {
        CommandState::Queued => "queued",
        CommandState::Sent => "sent",
        CommandState::NotNow => "not_now",
    }
}

fn command_state_from(text: &str) -> StoreResult<CommandState> {
    match text {
        "queued" => Ok(CommandState::Queued),
        "sent" => Ok(CommandState::Sent),
        "not_now" => Ok(CommandState::NotNow),
        other => Err(StoreError::backend(
            "decode command",
            format!("unknown command state {other:?}"),
        )),
    }
}

/// Pages over rows fetched with `limit + 1`: the extra row only says that
/// another page exists.
fn paginate<T>(mut items: Vec<T>, limit: usize, cursor_of: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(&cursor_of)
    } else {
        None
    };
    Page { items, next_cursor }
}

fn page_limit(page: &PageRequest) -> usize {
    page.limit.clamp(1, 1000)
}

impl SqliteStore {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(backend("open database"))?;
        let mut store = Self::init(conn)?;
        // The checkpointer opens after init, so the database is already in
        // WAL mode and has its schema.
        let checkpointer = Connection::open(path).map_err(backend("open database"))?;
        checkpointer
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend("set busy timeout"))?;
        store.checkpointer = Some(Mutex::new(checkpointer));
        Ok(store)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> StoreResult<Self> {
        let conn = Connection::open_in_memory().map_err(backend("open database"))?;
        Self::init(conn)
    }

    /// Copies committed WAL pages into the database file without blocking
    /// writers (a PASSIVE checkpoint), on the store's second connection.
    /// Returns the WAL frames checkpointed; 0 for an in-memory store.
    pub fn checkpoint(&self) -> StoreResult<i64> {
        let Some(checkpointer) = &self.checkpointer else {
            return Ok(0);
        };
        let conn = checkpointer.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(2))
            .map_err(backend("checkpoint WAL"))
    }

    fn init(conn: Connection) -> StoreResult<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend("set WAL mode"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend("set synchronous mode"))?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(backend("set WAL checkpoint size"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend("enable foreign keys"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend("set busy timeout"))?;
        // SQLite's lower() folds ASCII letters only, so "école" would miss
        // "ÉCOLE". The inventory search lowercases with Rust instead, as the
        // targets' search column (lowercased before it is written) does.
        conn.create_scalar_function(
            "unicode_lower",
            1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| {
                Ok(ctx
                    .get::<Option<String>>(0)?
                    .map(|text| text.to_lowercase()))
            },
        )
        .map_err(backend("register unicode_lower"))?;
        conn.execute_batch(SCHEMA)
            .map_err(backend("create schema"))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            checkpointer: None,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-written transaction
        // behind (rusqlite rolls back on drop), so the connection is usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one immediate transaction, committing on success.
    fn write<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend(operation))?;
        let value = f(&tx)?;
        tx.commit().map_err(backend(operation))?;
        Ok(value)
    }
}

/// Decodes a device row. `touch_devices` writes only the `last_seen_at`
/// column, so the column wins when it is later than the copy in `data`.
/// Otherwise `data` keeps its sub-microsecond precision.
fn decode_device(data: &str, last_seen_at: i64) -> StoreResult<Device> {
    let mut device: Device = from_json(data)?;
    let seen = from_micros(last_seen_at)?;
    if seen > device.last_seen_at {
        device.last_seen_at = seen;
    }
    Ok(device)
}

fn read_device(conn: &Connection, udid: &str) -> StoreResult<Option<Device>> {
    let row: Option<(String, i64)> = conn
        .query_row(
            "SELECT data, last_seen_at FROM devices WHERE udid = ?1",
            [udid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(backend("read device"))?;
    row.map(|(data, last_seen_at)| decode_device(&data, last_seen_at))
        .transpose()
}

fn read_target(conn: &Connection, operation_id: &str, udid: &str) -> StoreResult<Option<Target>> {
    let data: Option<String> = conn
        .query_row(
            "SELECT data FROM targets WHERE operation_id = ?1 AND device_id = ?2",
            [operation_id, udid],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend("read target"))?;
    data.map(|d| from_json(&d)).transpose()
}

fn read_counts(conn: &Connection, operation_id: &str) -> StoreResult<StatusCounts> {
    let mut stmt = conn
        .prepare_cached("SELECT status, n FROM operation_counts WHERE operation_id = ?1")
        .map_err(backend("read counts"))?;
    let rows = stmt
        .query_map([operation_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(backend("read counts"))?;
    let mut counts = StatusCounts::default();
    for row in rows {
        let (status, n) = row.map_err(backend("read counts"))?;
        let status: TargetStatus = status
            .parse()
            .map_err(|e: String| StoreError::backend("decode counts", e))?;
        counts.add(status, n);
    }
    Ok(counts)
}

fn write_device(tx: &Connection, device: &Device, expected: Option<u64>) -> StoreResult<()> {
    let mut stored = device.clone();
    stored.revision = expected.map_or(0, |r| r + 1);
    let data = to_json(&stored)?;
    let os_version = stored.os_version.as_ref().map(|v| v.to_string());
    let platform = stored.platform.map(|p| p.as_str());
    let changed = match expected {
        None => tx
            .execute(
                "INSERT INTO devices (udid, name, serial_number, platform, os_version, current_operation_id, last_seen_at, revision, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (udid) DO NOTHING",
                params![
                    stored.udid,
                    stored.name,
                    stored.serial_number,
                    platform,
                    os_version,
                    stored.current_operation_id,
                    micros(stored.last_seen_at),
                    stored.revision as i64,
                    data
                ],
            )
            .map_err(backend("write device"))?,
        Some(revision) => tx
            .execute(
                "UPDATE devices SET name = ?2, serial_number = ?3, platform = ?4, os_version = ?5,
                 current_operation_id = ?6, last_seen_at = MAX(last_seen_at, ?7), revision = ?8, data = ?9
                 WHERE udid = ?1 AND revision = ?10",
                params![
                    stored.udid,
                    stored.name,
                    stored.serial_number,
                    platform,
                    os_version,
                    stored.current_operation_id,
                    micros(stored.last_seen_at),
                    stored.revision as i64,
                    data,
                    revision as i64
                ],
            )
            .map_err(backend("write device"))?,
    };
    if changed == 0 {
        return Err(StoreError::Conflict(match expected {
            None => format!("device {} already exists", stored.udid),
            Some(r) => format!("device {} is no longer at revision {r}", stored.udid),
        }));
    }
    Ok(())
}

fn insert_target(tx: &Connection, target: &Target) -> StoreResult<()> {
    let mut stored = target.clone();
    stored.revision = 0;
    tx.execute(
        "INSERT INTO targets (operation_id, device_id, status, time_zone, search, revision, data)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
        params![
            stored.operation_id,
            stored.device_id,
            stored.status.as_str(),
            stored.time_zone,
            target_search_text(&stored),
            to_json(&stored)?
        ],
    )
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(format!(
                "device {} is already a target of operation {}",
                stored.device_id, stored.operation_id
            ))
        }
        other => StoreError::backend("insert target", other),
    })?;
    for group_id in &stored.group_ids {
        tx.execute(
            "INSERT OR IGNORE INTO target_groups (operation_id, group_id, device_id) VALUES (?1, ?2, ?3)",
            params![stored.operation_id, group_id, stored.device_id],
        )
        .map_err(backend("insert target group"))?;
    }
    Ok(())
}

fn update_target(tx: &Connection, target: &Target, expected: u64) -> StoreResult<()> {
    let mut stored = target.clone();
    stored.revision = expected + 1;
    let changed = tx
        .execute(
            "UPDATE targets SET status = ?3, time_zone = ?4, search = ?5, revision = ?6, data = ?7
             WHERE operation_id = ?1 AND device_id = ?2 AND revision = ?8",
            params![
                stored.operation_id,
                stored.device_id,
                stored.status.as_str(),
                stored.time_zone,
                target_search_text(&stored),
                stored.revision as i64,
                to_json(&stored)?,
                expected as i64
            ],
        )
        .map_err(backend("update target"))?;
    if changed == 0 {
        return Err(StoreError::Conflict(format!(
            "target {} of operation {} is no longer at revision {expected}",
            stored.device_id, stored.operation_id
        )));
    }
    Ok(())
}

fn add_count(
    tx: &Connection,
    operation_id: &str,
    status: TargetStatus,
    delta: i64,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO operation_counts (operation_id, status, n) VALUES (?1, ?2, ?3)
         ON CONFLICT (operation_id, status) DO UPDATE SET n = n + excluded.n",
        params![operation_id, status.as_str(), delta],
    )
    .map_err(backend("update counts"))?;
    Ok(())
}

/// Re-derives an operation's lifecycle state from its counts after they
/// changed, stamping start and finish times; returns the change if any.
fn refresh_state(
    tx: &Connection,
    operation_id: &str,
    now: Timestamp,
) -> StoreResult<Option<(String, OperationState, OperationState)>> {
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM operations WHERE id = ?1",
            [operation_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend("read operation state"))?;
    let Some(state) = state else {
        return Err(StoreError::NotFound(format!("operation {operation_id}")));
    };
    let before: OperationState = state
        .parse()
        .map_err(|e: String| StoreError::backend("decode operation state", e))?;
    if before == OperationState::Cancelled {
        return Ok(None);
    }
    let after = read_counts(tx, operation_id)?.derived_state();
    if after == before {
        return Ok(None);
    }
    tx.execute(
        "UPDATE operations SET state = ?2,
            started_at = CASE WHEN ?2 != 'scheduled' THEN COALESCE(started_at, ?3) ELSE started_at END,
            finished_at = CASE WHEN ?2 = 'finished' THEN ?3 ELSE NULL END
         WHERE id = ?1",
        params![operation_id, after.as_str(), micros(now)],
    )
    .map_err(backend("update operation state"))?;
    Ok(Some((operation_id.to_string(), before, after)))
}

fn insert_events(tx: &Connection, events: &[Event]) -> StoreResult<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO events (id, operation_id, device_id, event_type, expires_at, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(backend("append events"))?;
    for event in events {
        stmt.execute(params![
            event.id,
            event.operation_id,
            event.device_id,
            event.event_type.as_str(),
            micros(event.expires_at),
            to_json(event)?
        ])
        .map_err(backend("append events"))?;
    }
    Ok(())
}

fn put_command(tx: &Connection, command: &QueuedCommand) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO commands (uuid, device_id, operation_id, request_type, state, created_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (uuid) DO UPDATE SET state = excluded.state, body = excluded.body",
        params![
            command.uuid,
            command.device_id,
            command.operation_id,
            command.request_type,
            command_state_text(command.state),
            micros(command.created_at),
            command.body
        ],
    )
    .map_err(backend("queue command"))?;
    Ok(())
}

fn apply_change(tx: &Connection, change: &Change, now: Timestamp) -> StoreResult<CommitOutcome> {
    let mut outcome = CommitOutcome::default();
    if let Some(write) = &change.device {
        write_device(tx, &write.device, write.expected_revision)?;
    }
    if let Some(write) = &change.target {
        update_target(tx, &write.target, write.expected_revision)?;
        if write.previous_status != write.target.status {
            add_count(tx, &write.target.operation_id, write.previous_status, -1)?;
            add_count(tx, &write.target.operation_id, write.target.status, 1)?;
            outcome
                .state_changes
                .extend(refresh_state(tx, &write.target.operation_id, now)?);
        }
    }
    insert_events(tx, &change.events)?;
    for command in &change.commands {
        match command {
            CommandWrite::Put(command) => put_command(tx, command)?,
            CommandWrite::Remove { device_id, uuid } => {
                tx.execute(
                    "DELETE FROM commands WHERE uuid = ?1 AND device_id = ?2",
                    params![uuid, device_id],
                )
                .map_err(backend("remove command"))?;
            }
        }
    }
    Ok(outcome)
}

fn change_time(change: &Change) -> Timestamp {
    change
        .target
        .as_ref()
        .map(|t| t.target.updated_at)
        .or_else(|| change.events.first().map(|e| e.at))
        .or_else(|| change.device.as_ref().map(|d| d.device.last_seen_at))
        .unwrap_or_else(Timestamp::now)
}

fn apply_assignment(tx: &Connection, a: &Assignment) -> StoreResult<CommitOutcome> {
    let mut outcome = CommitOutcome::default();
    let udid = &a.target.device_id;
    let current: Option<Option<String>> = tx
        .query_row(
            "SELECT current_operation_id FROM devices WHERE udid = ?1",
            [udid],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend("read device"))?;
    let Some(current) = current else {
        return Err(StoreError::NotFound(format!("device {udid}")));
    };
    if current != a.expected_current {
        return Err(StoreError::Conflict(format!(
            "device {udid} moved to operation {current:?} since it was read"
        )));
    }
    let now = a.target.created_at;
    if let Some((old_operation, revision)) = &a.replaces {
        let old: Option<(String, i64)> = tx
            .query_row(
                "SELECT status, revision FROM targets WHERE operation_id = ?1 AND device_id = ?2",
                [old_operation, udid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(backend("read target"))?;
        let Some((status, found_revision)) = old else {
            return Err(StoreError::Conflict(format!(
                "device {udid} is no longer a target of operation {old_operation}"
            )));
        };
        if found_revision as u64 != *revision {
            return Err(StoreError::Conflict(format!(
                "target {udid} of operation {old_operation} changed since it was read"
            )));
        }
        let status: TargetStatus = status
            .parse()
            .map_err(|e: String| StoreError::backend("decode target", e))?;
        tx.execute(
            "DELETE FROM targets WHERE operation_id = ?1 AND device_id = ?2",
            [old_operation, udid],
        )
        .map_err(backend("remove target"))?;
        tx.execute(
            "DELETE FROM target_groups WHERE operation_id = ?1 AND device_id = ?2",
            [old_operation, udid],
        )
        .map_err(backend("remove target"))?;
        tx.execute(
            "DELETE FROM commands WHERE operation_id = ?1 AND device_id = ?2",
            [old_operation, udid],
        )
        .map_err(backend("remove commands"))?;
        add_count(tx, old_operation, status, -1)?;
        outcome
            .state_changes
            .extend(refresh_state(tx, old_operation, now)?);
    }
    let next_current = if a.target.status.is_final() {
        None
    } else {
        Some(a.target.operation_id.clone())
    };
    let mut device: Device =
        read_device(tx, udid)?.ok_or_else(|| StoreError::NotFound(format!("device {udid}")))?;
    let revision = device.revision;
    device.current_operation_id = next_current;
    write_device(tx, &device, Some(revision))?;
    insert_target(tx, &a.target)?;
    add_count(tx, &a.target.operation_id, a.target.status, 1)?;
    outcome
        .state_changes
        .extend(refresh_state(tx, &a.target.operation_id, now)?);
    insert_events(tx, &a.events)?;
    for command in &a.commands {
        put_command(tx, command)?;
    }
    Ok(outcome)
}

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn get_device(&self, udid: &str) -> StoreResult<Option<Device>> {
        read_device(&self.conn(), udid)
    }

    async fn get_devices(&self, udids: &[String]) -> StoreResult<Vec<Device>> {
        let conn = self.conn();
        let mut found = Vec::with_capacity(udids.len());
        for udid in udids {
            if let Some(device) = read_device(&conn, udid)? {
                found.push(device);
            }
        }
        Ok(found)
    }

    async fn load_context(&self, udid: &str) -> StoreResult<Option<DeviceContext>> {
        let conn = self.conn();
        let Some(device) = read_device(&conn, udid)? else {
            return Ok(None);
        };
        let target = match &device.current_operation_id {
            Some(operation_id) => read_target(&conn, operation_id, udid)?,
            None => None,
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT uuid, operation_id, request_type, state, created_at, body
                 FROM commands WHERE device_id = ?1 ORDER BY uuid",
            )
            .map_err(backend("read commands"))?;
        let rows = stmt
            .query_map([udid], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })
            .map_err(backend("read commands"))?;
        let mut commands = Vec::new();
        for row in rows {
            let (uuid, operation_id, request_type, state, created_at, body) =
                row.map_err(backend("read commands"))?;
            commands.push(QueuedCommand {
                uuid,
                device_id: udid.to_string(),
                operation_id,
                request_type,
                body,
                state: command_state_from(&state)?,
                created_at: from_micros(created_at)?,
            });
        }
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
        let limit = page_limit(page);
        let after = match &page.cursor {
            Some(c) => decode_cursor(c, 1)?.remove(0),
            None => String::new(),
        };
        let conn = self.conn();
        let mut sql =
            String::from("SELECT d.data, d.last_seen_at FROM devices d WHERE d.udid > ?1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(after)];
        if let Some(q) = &filter.q {
            args.push(Box::new(like_pattern(q)));
            let n = args.len();
            sql.push_str(&format!(
                " AND (unicode_lower(coalesce(d.name, '')) LIKE ?{n} ESCAPE '\\' OR unicode_lower(coalesce(d.serial_number, '')) LIKE ?{n} ESCAPE '\\')"
            ));
        }
        if let Some(group_id) = &filter.group_id {
            args.push(Box::new(group_id.clone()));
            sql.push_str(&format!(
                " AND d.udid IN (SELECT udid FROM group_members WHERE group_id = ?{})",
                args.len()
            ));
        }
        if let Some(os_version) = &filter.os_version {
            args.push(Box::new(os_version.clone()));
            sql.push_str(&format!(" AND d.os_version = ?{}", args.len()));
        }
        if let Some(platform) = filter.platform {
            args.push(Box::new(platform.as_str()));
            sql.push_str(&format!(" AND d.platform = ?{}", args.len()));
        }
        args.push(Box::new((limit + 1) as i64));
        sql.push_str(&format!(" ORDER BY d.udid LIMIT ?{}", args.len()));
        let mut stmt = conn.prepare(&sql).map_err(backend("list devices"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(backend("list devices"))?;
        let mut items = Vec::new();
        for row in rows {
            let (data, last_seen_at) = row.map_err(backend("list devices"))?;
            items.push(decode_device(&data, last_seen_at)?);
        }
        Ok(paginate(items, limit, |d| encode_cursor(&[&d.udid])))
    }

    async fn touch_devices(&self, seen: &[(String, Timestamp)]) -> StoreResult<()> {
        self.write("touch devices", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE devices SET last_seen_at = MAX(last_seen_at, ?2) WHERE udid = ?1",
                )
                .map_err(backend("touch devices"))?;
            for (udid, at) in seen {
                stmt.execute(params![udid, micros(*at)])
                    .map_err(backend("touch devices"))?;
            }
            Ok(())
        })
    }

    async fn commit(&self, change: Change) -> StoreResult<CommitOutcome> {
        let now = change_time(&change);
        self.write("commit change", |tx| apply_change(tx, &change, now))
    }
}

#[async_trait]
impl GroupStore for SqliteStore {
    async fn create_group(&self, group: &Group) -> StoreResult<()> {
        let data = to_json(group)?;
        self.write("create group", |tx| {
            let changed = tx
                .execute(
                    "INSERT INTO groups (id, data) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
                    params![group.id, data],
                )
                .map_err(backend("create group"))?;
            if changed == 0 {
                return Err(StoreError::Conflict(format!(
                    "group {} already exists",
                    group.id
                )));
            }
            Ok(())
        })
    }

    async fn get_group(&self, id: &str) -> StoreResult<Option<Group>> {
        let data: Option<String> = self
            .conn()
            .query_row("SELECT data FROM groups WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(backend("read group"))?;
        data.map(|d| from_json(&d)).transpose()
    }

    async fn update_group(&self, group: &Group) -> StoreResult<()> {
        let data = to_json(group)?;
        self.write("update group", |tx| {
            let changed = tx
                .execute(
                    "UPDATE groups SET data = ?2 WHERE id = ?1",
                    params![group.id, data],
                )
                .map_err(backend("update group"))?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("group {}", group.id)));
            }
            Ok(())
        })
    }

    async fn list_groups(&self, page: &PageRequest) -> StoreResult<Page<Group>> {
        let limit = page_limit(page);
        let after = match &page.cursor {
            Some(c) => decode_cursor(c, 1)?.remove(0),
            None => String::new(),
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT data FROM groups WHERE id > ?1 ORDER BY id LIMIT ?2")
            .map_err(backend("list groups"))?;
        let rows = stmt
            .query_map(params![after, (limit + 1) as i64], |r| {
                r.get::<_, String>(0)
            })
            .map_err(backend("list groups"))?;
        let mut items = Vec::new();
        for row in rows {
            items.push(from_json::<Group>(&row.map_err(backend("list groups"))?)?);
        }
        Ok(paginate(items, limit, |g| encode_cursor(&[&g.id])))
    }

    async fn set_members(&self, group_id: &str, udids: &[String]) -> StoreResult<()> {
        self.write("set group members", |tx| {
            tx.execute("DELETE FROM group_members WHERE group_id = ?1", [group_id])
                .map_err(backend("set group members"))?;
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO group_members (group_id, udid) VALUES (?1, ?2)",
                )
                .map_err(backend("set group members"))?;
            for udid in udids {
                stmt.execute(params![group_id, udid])
                    .map_err(backend("set group members"))?;
            }
            Ok(())
        })
    }

    async fn members(&self, group_id: &str) -> StoreResult<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT udid FROM group_members WHERE group_id = ?1 ORDER BY udid")
            .map_err(backend("read group members"))?;
        let rows = stmt
            .query_map([group_id], |r| r.get::<_, String>(0))
            .map_err(backend("read group members"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(backend("read group members"))
    }

    async fn groups_of(&self, udids: &[String]) -> StoreResult<Vec<(String, Group)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT m.udid, g.data FROM group_members m JOIN groups g ON g.id = m.group_id
                 WHERE m.udid = ?1 ORDER BY g.id",
            )
            .map_err(backend("read device groups"))?;
        let mut found = Vec::new();
        for udid in udids {
            let rows = stmt
                .query_map([udid], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(backend("read device groups"))?;
            for row in rows {
                let (udid, data) = row.map_err(backend("read device groups"))?;
                found.push((udid, from_json::<Group>(&data)?));
            }
        }
        Ok(found)
    }
}

fn read_operation_row(conn: &Connection, id: &str) -> StoreResult<Option<Operation>> {
    type OperationRow = (String, String, Option<i64>, Option<i64>, Option<i64>);
    let row: Option<OperationRow> = conn
        .query_row(
            "SELECT data, state, started_at, finished_at, cancelled_at FROM operations WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .map_err(backend("read operation"))?;
    let Some((data, state, started_at, finished_at, cancelled_at)) = row else {
        return Ok(None);
    };
    let mut operation: Operation = from_json(&data)?;
    operation.state = state
        .parse()
        .map_err(|e: String| StoreError::backend("decode operation state", e))?;
    operation.started_at = started_at.map(from_micros).transpose()?;
    operation.finished_at = finished_at.map(from_micros).transpose()?;
    operation.cancelled_at = cancelled_at.map(from_micros).transpose()?;
    operation.counts = read_counts(conn, id)?;
    Ok(Some(operation))
}

#[async_trait]
impl OperationStore for SqliteStore {
    async fn insert_operation(&self, operation: &Operation) -> StoreResult<()> {
        let mut stored = operation.clone();
        stored.counts = StatusCounts::default();
        let data = to_json(&stored)?;
        self.write("insert operation", |tx| {
            let changed = tx
                .execute(
                    "INSERT INTO operations (id, state, kind, protocol, product_version, created_at, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                    params![
                        stored.id,
                        stored.state.as_str(),
                        stored.kind.as_str(),
                        stored.protocol.as_str(),
                        stored.update.product_version.to_string(),
                        micros(stored.created_at),
                        data
                    ],
                )
                .map_err(backend("insert operation"))?;
            if changed == 0 {
                return Err(StoreError::Conflict(format!("operation {} already exists", stored.id)));
            }
            for group_id in &stored.group_ids {
                tx.execute(
                    "INSERT OR IGNORE INTO operation_groups (operation_id, group_id) VALUES (?1, ?2)",
                    params![stored.id, group_id],
                )
                .map_err(backend("insert operation"))?;
            }
            Ok(())
        })
    }

    async fn get_operation(&self, id: &str) -> StoreResult<Option<Operation>> {
        read_operation_row(&self.conn(), id)
    }

    async fn list_operations(
        &self,
        filter: &OperationFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Operation>> {
        let limit = page_limit(page);
        let conn = self.conn();
        let mut sql = String::from("SELECT o.id FROM operations o WHERE 1 = 1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(cursor) = &page.cursor {
            let parts = decode_cursor(cursor, 2)?;
            let created: i64 = parts[0]
                .parse()
                .map_err(|_| StoreError::InvalidCursor(cursor.clone()))?;
            args.push(Box::new(created));
            args.push(Box::new(parts[1].clone()));
            sql.push_str(&format!(
                " AND (o.created_at < ?{a} OR (o.created_at = ?{a} AND o.id < ?{b}))",
                a = args.len() - 1,
                b = args.len()
            ));
        }
        if !filter.states.is_empty() {
            let mut marks = Vec::new();
            for state in &filter.states {
                args.push(Box::new(state.as_str()));
                marks.push(format!("?{}", args.len()));
            }
            sql.push_str(&format!(" AND o.state IN ({})", marks.join(", ")));
        }
        if let Some(version) = &filter.product_version {
            args.push(Box::new(version.clone()));
            sql.push_str(&format!(" AND o.product_version = ?{}", args.len()));
        }
        if let Some(kind) = filter.kind {
            args.push(Box::new(kind.as_str()));
            sql.push_str(&format!(" AND o.kind = ?{}", args.len()));
        }
        if let Some(protocol) = filter.protocol {
            args.push(Box::new(protocol.as_str()));
            sql.push_str(&format!(" AND o.protocol = ?{}", args.len()));
        }
        if let Some(group_id) = &filter.group_id {
            args.push(Box::new(group_id.clone()));
            sql.push_str(&format!(
                " AND o.id IN (SELECT operation_id FROM operation_groups WHERE group_id = ?{})",
                args.len()
            ));
        }
        if let Some(from) = filter.from {
            args.push(Box::new(micros(from)));
            sql.push_str(&format!(" AND o.created_at >= ?{}", args.len()));
        }
        if let Some(to) = filter.to {
            args.push(Box::new(micros(to)));
            sql.push_str(&format!(" AND o.created_at < ?{}", args.len()));
        }
        args.push(Box::new((limit + 1) as i64));
        sql.push_str(&format!(
            " ORDER BY o.created_at DESC, o.id DESC LIMIT ?{}",
            args.len()
        ));
        let ids: Vec<String> = {
            let mut stmt = conn.prepare(&sql).map_err(backend("list operations"))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    r.get::<_, String>(0)
                })
                .map_err(backend("list operations"))?;
            rows.collect::<Result<_, _>>()
                .map_err(backend("list operations"))?
        };
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(operation) = read_operation_row(&conn, &id)? {
                items.push(operation);
            }
        }
        Ok(paginate(items, limit, |o| {
            encode_cursor(&[&micros(o.created_at).to_string(), &o.id])
        }))
    }

    async fn assign(
        &self,
        assignments: Vec<Assignment>,
    ) -> StoreResult<(Vec<AssignOutcome>, CommitOutcome)> {
        if assignments.len() > crate::ports::MAX_TRANSACTION_ITEMS {
            return Err(StoreError::backend(
                "assign targets",
                format!(
                    "{} assignments in one call; the limit is {}",
                    assignments.len(),
                    crate::ports::MAX_TRANSACTION_ITEMS
                ),
            ));
        }
        let mut conn = self.conn();
        let mut outcomes = Vec::with_capacity(assignments.len());
        let mut commit = CommitOutcome::default();
        let mut tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend("assign targets"))?;
        for assignment in &assignments {
            // A savepoint per device keeps each assignment atomic on its own,
            // as a per-device DynamoDB transaction would be.
            let savepoint = tx.savepoint().map_err(backend("assign targets"))?;
            match apply_assignment(&savepoint, assignment) {
                Ok(outcome) => {
                    savepoint.commit().map_err(backend("assign targets"))?;
                    commit.state_changes.extend(outcome.state_changes);
                    outcomes.push(AssignOutcome::Assigned);
                }
                Err(StoreError::Conflict(_)) => {
                    drop(savepoint);
                    outcomes.push(AssignOutcome::Conflict);
                }
                Err(other) => return Err(other),
            }
        }
        tx.commit().map_err(backend("assign targets"))?;
        Ok((outcomes, commit))
    }

    async fn get_target(&self, operation_id: &str, udid: &str) -> StoreResult<Option<Target>> {
        read_target(&self.conn(), operation_id, udid)
    }

    async fn list_targets(
        &self,
        operation_id: &str,
        filter: &TargetFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Target>> {
        let limit = page_limit(page);
        let after = match &page.cursor {
            Some(c) => decode_cursor(c, 1)?.remove(0),
            None => String::new(),
        };
        let conn = self.conn();
        let mut sql = String::from(
            "SELECT t.data FROM targets t WHERE t.operation_id = ?1 AND t.device_id > ?2",
        );
        let mut args: Vec<Box<dyn rusqlite::ToSql>> =
            vec![Box::new(operation_id.to_string()), Box::new(after)];
        if let Some(status) = filter.status {
            args.push(Box::new(status.as_str()));
            sql.push_str(&format!(" AND t.status = ?{}", args.len()));
        }
        if filter.active_only {
            sql.push_str(" AND t.status NOT IN ('installed', 'obsolete', 'failed', 'cancelled', 'deprecated')");
        }
        if let Some(zone) = &filter.time_zone {
            args.push(Box::new(zone.clone()));
            sql.push_str(&format!(" AND t.time_zone = ?{}", args.len()));
        }
        if let Some(q) = &filter.q {
            args.push(Box::new(like_pattern(q)));
            sql.push_str(&format!(" AND t.search LIKE ?{} ESCAPE '\\'", args.len()));
        }
        if let Some(group_id) = &filter.group_id {
            args.push(Box::new(group_id.clone()));
            sql.push_str(&format!(
                " AND t.device_id IN (SELECT device_id FROM target_groups WHERE operation_id = ?1 AND group_id = ?{})",
                args.len()
            ));
        }
        args.push(Box::new((limit + 1) as i64));
        sql.push_str(&format!(" ORDER BY t.device_id LIMIT ?{}", args.len()));
        let mut stmt = conn.prepare(&sql).map_err(backend("list targets"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                r.get::<_, String>(0)
            })
            .map_err(backend("list targets"))?;
        let mut items = Vec::new();
        for row in rows {
            items.push(from_json::<Target>(&row.map_err(backend("list targets"))?)?);
        }
        Ok(paginate(items, limit, |t| encode_cursor(&[&t.device_id])))
    }

    async fn mark_cancelled(&self, operation_id: &str, at: Timestamp) -> StoreResult<()> {
        self.write("cancel operation", |tx| {
            let changed = tx
                .execute(
                    "UPDATE operations SET state = 'cancelled', cancelled_at = ?2
                     WHERE id = ?1 AND state IN ('scheduled', 'in_progress')",
                    params![operation_id, micros(at)],
                )
                .map_err(backend("cancel operation"))?;
            if changed == 0 {
                return Err(StoreError::Conflict(format!(
                    "operation {operation_id} is not scheduled or in progress"
                )));
            }
            Ok(())
        })
    }

    async fn lookup_idempotency_key(&self, key: &str) -> StoreResult<Option<String>> {
        self.conn()
            .query_row(
                "SELECT operation_id FROM idempotency_keys WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend("read idempotency key"))
    }

    async fn claim_idempotency_key(
        &self,
        key: &str,
        operation_id: &str,
        at: Timestamp,
    ) -> StoreResult<Option<String>> {
        self.write("claim idempotency key", |tx| {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT operation_id FROM idempotency_keys WHERE key = ?1",
                    [key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend("claim idempotency key"))?;
            if existing.is_some() {
                return Ok(existing);
            }
            tx.execute(
                "INSERT INTO idempotency_keys (key, operation_id, created_at) VALUES (?1, ?2, ?3)",
                params![key, operation_id, micros(at)],
            )
            .map_err(backend("claim idempotency key"))?;
            Ok(None)
        })
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, events: &[Event]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.write("append events", |tx| insert_events(tx, events))
    }

    async fn list_events(
        &self,
        operation_id: &str,
        filter: &EventFilter,
        now: Timestamp,
        page: &PageRequest,
    ) -> StoreResult<Page<Event>> {
        let limit = page_limit(page);
        let after = match &page.cursor {
            Some(c) => decode_cursor(c, 1)?.remove(0),
            None => String::new(),
        };
        let conn = self.conn();
        let mut sql = String::from(
            "SELECT data FROM events WHERE operation_id = ?1 AND id > ?2 AND expires_at > ?3",
        );
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![
            Box::new(operation_id.to_string()),
            Box::new(after),
            Box::new(micros(now)),
        ];
        if let Some(device_id) = &filter.device_id {
            args.push(Box::new(device_id.clone()));
            sql.push_str(&format!(" AND device_id = ?{}", args.len()));
        }
        if let Some(event_type) = filter.event_type {
            args.push(Box::new(event_type.as_str()));
            sql.push_str(&format!(" AND event_type = ?{}", args.len()));
        }
        args.push(Box::new((limit + 1) as i64));
        sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));
        let mut stmt = conn.prepare(&sql).map_err(backend("list events"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                r.get::<_, String>(0)
            })
            .map_err(backend("list events"))?;
        let mut items = Vec::new();
        for row in rows {
            items.push(from_json::<Event>(&row.map_err(backend("list events"))?)?);
        }
        Ok(paginate(items, limit, |e| encode_cursor(&[&e.id])))
    }

    /// Served by the `events_by_device` index on `(device_id, id)`.
    async fn list_device_events(
        &self,
        device_id: &str,
        now: Timestamp,
        page: &PageRequest,
    ) -> StoreResult<Page<Event>> {
        let limit = page_limit(page);
        let after = match &page.cursor {
            Some(c) => decode_cursor(c, 1)?.remove(0),
            None => String::new(),
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare(DEVICE_EVENTS_SQL)
            .map_err(backend("list device events"))?;
        let rows = stmt
            .query_map(
                params![device_id, after, micros(now), (limit + 1) as i64],
                |r| r.get::<_, String>(0),
            )
            .map_err(backend("list device events"))?;
        let mut items = Vec::new();
        for row in rows {
            items.push(from_json::<Event>(
                &row.map_err(backend("list device events"))?,
            )?);
        }
        Ok(paginate(items, limit, |e| encode_cursor(&[&e.id])))
    }

    async fn purge_expired(&self, now: Timestamp) -> StoreResult<u64> {
        self.write("purge events", |tx| {
            let n = tx
                .execute("DELETE FROM events WHERE expires_at <= ?1", [micros(now)])
                .map_err(backend("purge events"))?;
            Ok(n as u64)
        })
    }
}

#[async_trait]
impl Scheduler for SqliteStore {
    async fn schedule(&self, schedule: &Schedule) -> StoreResult<()> {
        let job = to_json(&schedule.job)?;
        self.write("schedule job", |tx| {
            tx.execute(
                "INSERT INTO schedules (id, due_at, operation_id, job) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET due_at = excluded.due_at, job = excluded.job",
                params![
                    schedule.id,
                    micros(schedule.due_at),
                    schedule.job.operation_id(),
                    job
                ],
            )
            .map_err(backend("schedule job"))?;
            Ok(())
        })
    }

    async fn cancel_operation_schedules(&self, operation_id: &str) -> StoreResult<()> {
        self.write("cancel schedules", |tx| {
            tx.execute(
                "DELETE FROM schedules WHERE operation_id = ?1",
                [operation_id],
            )
            .map_err(backend("cancel schedules"))?;
            Ok(())
        })
    }
}

fn read_schedules(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<Schedule>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(backend("read schedules"))?;
    let rows = stmt
        .query_map(args, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(backend("read schedules"))?;
    let mut schedules = Vec::new();
    for row in rows {
        let (id, due_at, job) = row.map_err(backend("read schedules"))?;
        schedules.push(Schedule {
            id,
            due_at: from_micros(due_at)?,
            job: from_json(&job)?,
        });
    }
    Ok(schedules)
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<Schedule>> {
        read_schedules(
            &self.conn(),
            "SELECT id, due_at, job FROM schedules WHERE due_at <= ?1 ORDER BY due_at, id LIMIT ?2",
            &[&micros(now), &(limit as i64)],
        )
    }

    async fn remove(&self, id: &str) -> StoreResult<()> {
        self.write("remove schedule", |tx| {
            tx.execute("DELETE FROM schedules WHERE id = ?1", [id])
                .map_err(backend("remove schedule"))?;
            Ok(())
        })
    }

    async fn all(&self) -> StoreResult<Vec<Schedule>> {
        read_schedules(
            &self.conn(),
            "SELECT id, due_at, job FROM schedules ORDER BY due_at, id",
            &[],
        )
    }
}

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn put_catalog(&self, raw: &[u8], imported_at: Timestamp) -> StoreResult<()> {
        self.write("store catalog", |tx| {
            tx.execute(
                "INSERT INTO catalogs (imported_at, raw) VALUES (?1, ?2)",
                params![micros(imported_at), raw],
            )
            .map_err(backend("store catalog"))?;
            Ok(())
        })
    }

    async fn latest_catalog(&self) -> StoreResult<Option<Vec<u8>>> {
        self.conn()
            .query_row(
                "SELECT raw FROM catalogs ORDER BY imported_at DESC, rowid DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend("read catalog"))
    }
}

/// Counts of rows per table, for the demo summary and tests.
impl SqliteStore {
    pub fn table_counts(&self) -> StoreResult<BTreeMap<&'static str, i64>> {
        let conn = self.conn();
        let mut counts = BTreeMap::new();
        for table in [
            "devices",
            "operations",
            "targets",
            "events",
            "commands",
            "schedules",
        ] {
            let n: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .map_err(backend("count rows"))?;
            counts.insert(table, n);
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod contract_tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tempfile::TempDir;

    use super::SqliteStore;
    use crate::domain::{EventType, Group, OperationState, TargetStatus};
    use crate::ports::contract::fixtures::{
        T0, assign_new, at_minute, command, commit, create_device, device, event, insert_operation,
        move_target, operation, read_context, read_device, read_operation, read_target, target,
    };
    use crate::ports::contract::{self, expect_ok, strings};
    use crate::ports::{
        CatalogStore, Change, CommandWrite, DeviceStore, EventFilter, EventStore, GroupStore,
        OperationStore, PageRequest, ScheduleStore, Scheduler,
    };

    fn in_memory() -> std::future::Ready<SqliteStore> {
        std::future::ready(expect_ok(
            SqliteStore::in_memory(),
            "opening an in-memory store",
        ))
    }

    /// Database files in one temporary directory, a new file for each store,
    /// so that every contract behaviour starts from an empty store.
    struct DatabaseFiles {
        dir: TempDir,
        opened: AtomicUsize,
    }

    impl DatabaseFiles {
        fn new() -> Self {
            DatabaseFiles {
                dir: tempfile::tempdir().expect("creating a temporary directory"),
                opened: AtomicUsize::new(0),
            }
        }

        fn next_path(&self) -> PathBuf {
            let n = self.opened.fetch_add(1, Ordering::Relaxed);
            self.dir.path().join(format!("store-{n}.db"))
        }

        fn open(&self) -> std::future::Ready<SqliteStore> {
            let path = self.next_path();
            std::future::ready(expect_ok(SqliteStore::open(&path), "opening a file store"))
        }
    }

    #[tokio::test]
    async fn device_contract_in_memory() {
        contract::devices::run_all(in_memory).await;
    }

    #[tokio::test]
    async fn device_contract_on_file() {
        let files = DatabaseFiles::new();
        contract::devices::run_all(|| files.open()).await;
    }

    #[tokio::test]
    async fn group_contract_in_memory() {
        contract::groups::run_all(in_memory).await;
    }

    #[tokio::test]
    async fn group_contract_on_file() {
        let files = DatabaseFiles::new();
        contract::groups::run_all(|| files.open()).await;
    }

    #[tokio::test]
    async fn operation_contract_in_memory() {
        contract::operations::run_all(in_memory).await;
    }

    #[tokio::test]
    async fn operation_contract_on_file() {
        let files = DatabaseFiles::new();
        contract::operations::run_all(|| files.open()).await;
    }

    #[tokio::test]
    async fn event_contract_in_memory() {
        contract::events::run_all(in_memory).await;
    }

    #[tokio::test]
    async fn event_contract_on_file() {
        let files = DatabaseFiles::new();
        contract::events::run_all(|| files.open()).await;
    }

    #[tokio::test]
    async fn schedule_contract_in_memory() {
        contract::schedules::run_all(in_memory).await;
    }

    #[tokio::test]
    async fn schedule_contract_on_file() {
        let files = DatabaseFiles::new();
        contract::schedules::run_all(|| files.open()).await;
    }

    #[tokio::test]
    async fn catalog_contract_in_memory() {
        contract::catalog::run_all(in_memory).await;
    }

    #[tokio::test]
    async fn catalog_contract_on_file() {
        let files = DatabaseFiles::new();
        contract::catalog::run_all(|| files.open()).await;
    }

    /// The timeline query searches the `events_by_device` index in id
    /// order instead of scanning the events table or sorting.
    #[test]
    fn device_timeline_uses_index() {
        let store = expect_ok(SqliteStore::in_memory(), "opening an in-memory store");
        let conn = store.conn();
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", super::DEVICE_EVENTS_SQL))
            .expect("EXPLAIN QUERY PLAN prepares");
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params!["dev-1", "", 0, 10], |r| {
                r.get::<_, String>(3)
            })
            .expect("EXPLAIN QUERY PLAN runs")
            .collect::<Result<_, _>>()
            .expect("plan rows");
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX events_by_device")),
            "the timeline query must use events_by_device: {plan:?}"
        );
        assert!(
            !plan
                .iter()
                .any(|step| step.starts_with("SCAN") || step.contains("TEMP B-TREE")),
            "the timeline query must neither scan nor sort: {plan:?}"
        );
    }

    /// Everything written through one connection reads back the same after
    /// the store is dropped and the file opened again.
    #[tokio::test]
    async fn file_store_survives_reopen() {
        let files = DatabaseFiles::new();
        let path = files.next_path();
        let berlin = Group {
            time_zone: Some("Europe/Berlin".to_string()),
            ..contract::fixtures::group("g-berlin")
        };
        let added = event("op-1", Some("dev-1"), EventType::DeviceAdded, T0);
        let appended = event("op-1", None, EventType::OperationStarted, at_minute(2));
        let queued = command("dev-1", at_minute(1));
        let deadline = contract::schedules::deadline("op-1", "Europe/Berlin", 60);
        let catalog = br#"{"PublicAssetSets":{}}"#.to_vec();

        let (device_written, target_written, operation_written) = {
            let store = expect_ok(SqliteStore::open(&path), "opening the file store");
            expect_ok(store.create_group(&berlin).await, "create_group");
            expect_ok(
                store
                    .set_members("g-berlin", &strings(&["dev-1", "dev-2"]))
                    .await,
                "set_members",
            );
            insert_operation(&store, operation("op-1")).await;
            create_device(&store, device("dev-1")).await;
            create_device(&store, device("dev-2")).await;
            assign_new(&store, target("op-1", "dev-1")).await;
            let change = Change {
                events: vec![added.clone()],
                commands: vec![CommandWrite::Put(queued.clone())],
                ..Change::default()
            };
            commit(&store, change, "committing an event and a command").await;
            move_target(
                &store,
                "op-1",
                "dev-1",
                TargetStatus::Downloading,
                at_minute(2),
            )
            .await;
            expect_ok(
                store.append(std::slice::from_ref(&appended)).await,
                "append",
            );
            expect_ok(
                store
                    .touch_devices(&[("dev-2".to_string(), at_minute(7))])
                    .await,
                "touch_devices",
            );
            expect_ok(store.schedule(&deadline).await, "schedule");
            expect_ok(
                store.put_catalog(&catalog, at_minute(3)).await,
                "put_catalog",
            );
            expect_ok(
                store.claim_idempotency_key("key-1", "op-1", T0).await,
                "claim_idempotency_key",
            );
            (
                read_device(&store, "dev-1").await,
                read_target(&store, "op-1", "dev-1").await,
                read_operation(&store, "op-1").await,
            )
        };

        let store = expect_ok(SqliteStore::open(&path), "reopening the file store");
        assert_eq!(
            read_device(&store, "dev-1").await,
            device_written,
            "the device must read back after a reopen"
        );
        assert_eq!(
            read_device(&store, "dev-2").await.last_seen_at,
            at_minute(7),
            "a touched last_seen_at must read back after a reopen"
        );
        assert_eq!(
            read_target(&store, "op-1", "dev-1").await,
            target_written,
            "the target must read back after a reopen"
        );
        let operation_read = read_operation(&store, "op-1").await;
        assert_eq!(
            operation_read, operation_written,
            "the operation with its counts and state must read back after a reopen"
        );
        assert_eq!(
            operation_read.state,
            OperationState::InProgress,
            "the derived state must survive a reopen"
        );
        assert_eq!(
            operation_read.counts.get(TargetStatus::Downloading),
            1,
            "the counts must survive a reopen"
        );
        let context = read_context(&store, "dev-1").await;
        assert_eq!(
            context.target,
            Some(target_written),
            "the device's current target must survive a reopen"
        );
        assert_eq!(
            context.commands,
            vec![queued],
            "queued commands must survive a reopen"
        );
        let events = expect_ok(
            store
                .list_events("op-1", &EventFilter::default(), T0, &PageRequest::first(10))
                .await,
            "list_events",
        );
        assert_eq!(
            events.items,
            vec![added, appended],
            "committed and appended events must survive a reopen"
        );
        assert_eq!(
            expect_ok(store.get_group("g-berlin").await, "get_group"),
            Some(berlin),
            "the group must survive a reopen"
        );
        assert_eq!(
            expect_ok(store.members("g-berlin").await, "members"),
            strings(&["dev-1", "dev-2"]),
            "group members must survive a reopen"
        );
        assert_eq!(
            expect_ok(store.all().await, "all"),
            vec![deadline],
            "schedules must survive a reopen"
        );
        assert_eq!(
            expect_ok(store.latest_catalog().await, "latest_catalog"),
            Some(catalog),
            "the catalog must survive a reopen"
        );
        assert_eq!(
            expect_ok(store.lookup_idempotency_key("key-1").await, "lookup").as_deref(),
            Some("op-1"),
            "idempotency keys must survive a reopen"
        );
    }
}
