//! Contract suites for the storage and blob ports, shared by every adapter.
//!
//! Each behaviour is a public async function that drives an adapter only
//! through the port traits and panics, with a message naming the broken
//! rule, when the adapter breaks the contract in the port's documentation.
//! Every behaviour expects an empty store, because several of them list
//! everything a store holds. Each port's module has a `run_all` that takes a
//! factory and gives every behaviour a fresh store from it.
//!
//! The SQLite adapter runs these in its tests. A second adapter (DynamoDB
//! against a local emulator) can call the same `run_all` functions from its
//! own crate's tests with the `contract-tests` feature enabled.

use std::collections::BTreeSet;

use crate::ports::{Page, PageRequest, StoreError, StoreResult};

/// Upper bound on pages [`collect_pages`] follows, so that an adapter whose
/// cursor never advances fails instead of looping forever.
pub const MAX_PAGES: usize = 1000;

/// A cursor no adapter issues: `%` and spaces are outside both base64
/// alphabets, and it does not decode as JSON either.
pub const INVALID_CURSOR: &str = "%% not a cursor %%";

/// Returns the value of `result`, or panics naming `what` and the error with
/// its source chain.
pub fn expect_ok<T>(result: StoreResult<T>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what} failed: {error:?}"),
    }
}

/// Asserts that `result` is a [`StoreError::Conflict`].
pub fn assert_conflict<T: std::fmt::Debug>(result: StoreResult<T>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "{what} must fail with StoreError::Conflict, got {result:?}"
    );
}

/// Asserts that `result` is a [`StoreError::InvalidCursor`].
pub fn assert_invalid_cursor<T: std::fmt::Debug>(result: StoreResult<T>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::InvalidCursor(_))),
        "{what} with cursor {INVALID_CURSOR:?} must fail with StoreError::InvalidCursor, got {result:?}"
    );
}

/// Follows `next_cursor` from the first page to the last with pages of
/// `limit` items and returns every item in the order the pages gave them.
///
/// Pages may be empty before the last one (a DynamoDB query with a filter
/// can return an empty page with a cursor), but no page may exceed `limit`.
pub async fn collect_pages<T, F, Fut>(what: &str, limit: usize, mut fetch: F) -> Vec<T>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = StoreResult<Page<T>>>,
{
    let mut items = Vec::new();
    let mut request = PageRequest::first(limit);
    for _ in 0..MAX_PAGES {
        let page = expect_ok(fetch(request.clone()).await, what);
        assert!(
            page.items.len() <= limit,
            "{what} returned {} items for a page limit of {limit}",
            page.items.len()
        );
        items.extend(page.items);
        match page.next_cursor {
            Some(cursor) => {
                request = PageRequest {
                    limit,
                    cursor: Some(cursor),
                }
            }
            None => return items,
        }
    }
    panic!(
        "{what} still returned a next_cursor after {MAX_PAGES} pages: the cursor does not advance"
    );
}

/// Returns owned strings, for the `&[String]` arguments of the ports.
pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Returns the duplicates in `ids`, for "visited exactly once" messages.
fn duplicates(ids: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    ids.iter()
        .filter(|id| !seen.insert(id.as_str()))
        .cloned()
        .collect()
}

/// Records with sensible defaults, to change with struct update syntax
/// (`Device { name: None, ..device("dev-1") }`), and helpers that write
/// them through the ports.
pub mod fixtures {
    use std::sync::atomic::{AtomicU64, Ordering};

    use jiff::civil::DateTime;
    use jiff::{SignedDuration, Timestamp};

    use crate::domain::{
        Actor, Device, EVENT_RETENTION, EnrollmentState, Event, EventType, Group, InstallSettings,
        Operation, OperationState, OperationType, OperationUpdate, OsVersion, Platform, Protocol,
        StatusCounts, Target, TargetStatus, TimeZoneRule, ZoneSource,
    };
    use crate::ports::{
        AssignOutcome, Assignment, Change, CommandState, CommitOutcome, DeviceContext, DeviceStore,
        DeviceWrite, OperationStore, QueuedCommand, TargetWrite,
    };

    use super::expect_ok;

    /// 2026-01-05T09:00:00Z. Fixtures use whole seconds so that every
    /// adapter stores them without rounding.
    pub const T0: Timestamp = Timestamp::constant(1_767_603_600, 0);

    /// `T0` plus `minutes`.
    pub fn at_minute(minutes: i64) -> Timestamp {
        T0 + SignedDuration::from_mins(minutes)
    }

    /// Random-part counter for [`ulid_at`]: unique ids for every call in the
    /// process, increasing in call order.
    static ULID_SEQUENCE: AtomicU64 = AtomicU64::new(1);

    /// Returns a ULID whose time part is `at`, so ids sort by time. Ids made
    /// for the same millisecond sort in the order they were made.
    pub fn ulid_at(at: Timestamp) -> String {
        let millis = u64::try_from(at.as_millisecond()).unwrap_or(0);
        let sequence = ULID_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        ulid::Ulid::from_parts(millis, u128::from(sequence)).to_string()
    }

    /// Parses a fixture's version literal.
    pub fn version(text: &str) -> OsVersion {
        match text.parse() {
            Ok(version) => version,
            Err(error) => panic!("fixture version {text:?} is invalid: {error}"),
        }
    }

    /// Returns an enrolled, supervised Mac on macOS 15.7.1, last seen at `T0`.
    pub fn device(udid: &str) -> Device {
        Device {
            udid: udid.to_string(),
            serial_number: Some(format!("SN-{udid}")),
            name: Some(format!("Mac {udid}")),
            model: Some("Mac14,7".to_string()),
            model_name: Some("MacBook Pro".to_string()),
            platform: Some(Platform::MacOs),
            os_version: Some(version("15.7.1")),
            build_version: Some("24G231".to_string()),
            supervised: Some(true),
            software_update_device_id: Some("J493AP".to_string()),
            time_zone: Some("Europe/Berlin".to_string()),
            enrollment: EnrollmentState::Enrolled,
            topic: Some("com.apple.mgmt.External.contract".to_string()),
            push_token: Some("00aa11bb".to_string()),
            push_magic: Some("push-magic".to_string()),
            bootstrap_token: Some(vec![1, 2, 3]),
            ddm_active: true,
            enrolled_at: T0,
            last_seen_at: T0,
            inventory_requested_at: None,
            current_operation_id: None,
            revision: 0,
        }
    }

    /// Returns a group without a time zone, created at `T0`.
    pub fn group(id: &str) -> Group {
        Group {
            id: id.to_string(),
            name: format!("Group {id}"),
            time_zone: None,
            created_at: T0,
        }
    }

    /// Returns a scheduled, administrator-initiated DDM operation for
    /// macOS 26.2 that installs immediately, created at `T0`.
    pub fn operation(id: &str) -> Operation {
        Operation {
            id: id.to_string(),
            kind: OperationType::AdminInitiated,
            protocol: Protocol::Ddm,
            update: OperationUpdate {
                name: "macOS 26.2".to_string(),
                product_version: version("26.2"),
                platforms: vec![Platform::MacOs],
                builds: vec!["25C56".to_string()],
                release_date: None,
                expires_at: None,
            },
            install: InstallSettings::InstallImmediately,
            state: OperationState::Scheduled,
            counts: StatusCounts::default(),
            created_by: "admin".to_string(),
            created_at: T0,
            started_at: None,
            finished_at: None,
            cancelled_at: None,
            group_ids: Vec::new(),
        }
    }

    /// Returns install settings that enforce the update at a local date
    /// and time, for round trips of the richer variant.
    pub fn scheduled_install() -> InstallSettings {
        InstallSettings::EnforceAtSchedule {
            local_date_time: DateTime::constant(2026, 1, 20, 22, 0, 0, 0),
            time_zone: TimeZoneRule::DeviceLocal,
            add_to_catalog: true,
            reminders: Vec::new(),
        }
    }

    /// Returns a pending DDM target for macOS 26.2 in Europe/Berlin, named
    /// like the [`device`] fixture, created at `T0`.
    pub fn target(operation_id: &str, udid: &str) -> Target {
        Target {
            operation_id: operation_id.to_string(),
            device_id: udid.to_string(),
            protocol: Protocol::Ddm,
            platform: Platform::MacOs,
            status: TargetStatus::Pending,
            detail: None,
            failures: 0,
            last_error: None,
            next_attempt_at: None,
            reported: false,
            target_version: version("26.2"),
            target_build: "25C56".to_string(),
            major_upgrade: true,
            time_zone: Some("Europe/Berlin".to_string()),
            zone_source: Some(ZoneSource::Device),
            deadline_at: None,
            target_local_date_time: None,
            product_key: None,
            install_requested: false,
            last_command_uuid: None,
            device_failure_count: 0,
            expires_at: None,
            device_name: Some(format!("Mac {udid}")),
            serial_number: Some(format!("SN-{udid}")),
            group_ids: Vec::new(),
            created_at: T0,
            updated_at: T0,
            revision: 0,
        }
    }

    /// Returns an event at `at` with a ULID of that time, kept for [`EVENT_RETENTION`].
    pub fn event(
        operation_id: &str,
        device_id: Option<&str>,
        event_type: EventType,
        at: Timestamp,
    ) -> Event {
        Event {
            id: ulid_at(at),
            operation_id: operation_id.to_string(),
            device_id: device_id.map(str::to_string),
            event_type,
            details: serde_json::json!({ "source": "contract test" }),
            actor: Actor::System,
            at,
            expires_at: at + EVENT_RETENTION,
        }
    }

    /// Returns a queued DeviceInformation command for `udid`, created at
    /// `created_at`, with a ULID of that time as its CommandUUID.
    pub fn command(udid: &str, created_at: Timestamp) -> QueuedCommand {
        QueuedCommand {
            uuid: ulid_at(created_at),
            device_id: udid.to_string(),
            operation_id: None,
            request_type: "DeviceInformation".to_string(),
            body: b"<?xml version=\"1.0\"?><plist version=\"1.0\"><dict/></plist>".to_vec(),
            state: CommandState::Queued,
            created_at,
        }
    }

    /// Commits `change`, panicking with `what` when the store fails.
    pub async fn commit<S: DeviceStore + ?Sized>(
        store: &S,
        change: Change,
        what: &str,
    ) -> CommitOutcome {
        expect_ok(store.commit(change).await, what)
    }

    /// Creates `device` and returns it as stored.
    pub async fn create_device<S: DeviceStore + ?Sized>(store: &S, device: Device) -> Device {
        let udid = device.udid.clone();
        let change = Change {
            device: Some(DeviceWrite {
                device,
                expected_revision: None,
            }),
            ..Change::default()
        };
        commit(store, change, &format!("creating device {udid}")).await;
        read_device(store, &udid).await
    }

    /// Reads a device that must exist.
    pub async fn read_device<S: DeviceStore + ?Sized>(store: &S, udid: &str) -> Device {
        let found = expect_ok(store.get_device(udid).await, &format!("get_device({udid})"));
        match found {
            Some(device) => device,
            None => panic!("get_device({udid}) returned None for a device that was written"),
        }
    }

    /// Loads the context of a device that must exist.
    pub async fn read_context<S: DeviceStore + ?Sized>(store: &S, udid: &str) -> DeviceContext {
        let found = expect_ok(
            store.load_context(udid).await,
            &format!("load_context({udid})"),
        );
        match found {
            Some(context) => context,
            None => panic!("load_context({udid}) returned None for a device that was written"),
        }
    }

    /// Inserts `operation` and returns it as stored.
    pub async fn insert_operation<S: OperationStore + ?Sized>(
        store: &S,
        operation: Operation,
    ) -> Operation {
        let id = operation.id.clone();
        expect_ok(
            store.insert_operation(&operation).await,
            &format!("insert_operation({id})"),
        );
        read_operation(store, &id).await
    }

    /// Reads an operation that must exist.
    pub async fn read_operation<S: OperationStore + ?Sized>(store: &S, id: &str) -> Operation {
        let found = expect_ok(
            store.get_operation(id).await,
            &format!("get_operation({id})"),
        );
        match found {
            Some(operation) => operation,
            None => panic!("get_operation({id}) returned None for an operation that was inserted"),
        }
    }

    /// Reads a target that must exist.
    pub async fn read_target<S: OperationStore + ?Sized>(
        store: &S,
        operation_id: &str,
        udid: &str,
    ) -> Target {
        let found = expect_ok(
            store.get_target(operation_id, udid).await,
            &format!("get_target({operation_id}, {udid})"),
        );
        match found {
            Some(target) => target,
            None => panic!(
                "get_target({operation_id}, {udid}) returned None for a target that was assigned"
            ),
        }
    }

    /// Assigns `target` to its device, which must exist, expecting the
    /// device's current operation as stored and replacing nothing. Returns
    /// the target as stored.
    pub async fn assign_new<S: DeviceStore + OperationStore + ?Sized>(
        store: &S,
        target: Target,
    ) -> Target {
        let operation_id = target.operation_id.clone();
        let udid = target.device_id.clone();
        let current = read_device(store, &udid).await.current_operation_id;
        let assignment = Assignment {
            target,
            expected_current: current,
            replaces: None,
            events: Vec::new(),
            commands: Vec::new(),
        };
        let (outcomes, _) = expect_ok(
            store.assign(vec![assignment]).await,
            &format!("assigning {udid} to {operation_id}"),
        );
        assert_eq!(
            outcomes,
            [AssignOutcome::Assigned],
            "assigning {udid} to {operation_id} with its current operation as read must succeed"
        );
        read_target(store, &operation_id, &udid).await
    }

    /// Moves a stored target to `status` at `at` through a revision-checked
    /// commit and returns what the commit reported.
    pub async fn move_target<S: DeviceStore + OperationStore + ?Sized>(
        store: &S,
        operation_id: &str,
        udid: &str,
        status: TargetStatus,
        at: Timestamp,
    ) -> CommitOutcome {
        let before = read_target(store, operation_id, udid).await;
        let change = Change {
            target: Some(TargetWrite {
                target: Target {
                    status,
                    reported: true,
                    updated_at: at,
                    ..before.clone()
                },
                expected_revision: before.revision,
                previous_status: before.status,
            }),
            ..Change::default()
        };
        commit(
            store,
            change,
            &format!("moving target {udid} of {operation_id} to {status}"),
        )
        .await
    }
}

/// Contract of [`DeviceStore`](crate::ports::DeviceStore): reads, the
/// inventory list, last-seen times and the device-side transaction.
pub mod devices {
    use crate::domain::{
        Device, EventType, Operation, OperationState, Platform, Target, TargetStatus,
    };
    use crate::ports::{
        Change, CommandState, CommandWrite, DeviceFilter, DeviceStore, DeviceWrite, EventFilter,
        EventStore, GroupStore, OperationStore, PageRequest, QueuedCommand, TargetWrite,
    };

    use super::fixtures::{
        T0, assign_new, at_minute, command, commit, create_device, device, event, insert_operation,
        move_target, operation, read_context, read_device, read_operation, read_target, target,
        version,
    };
    use super::{
        INVALID_CURSOR, assert_conflict, assert_invalid_cursor, collect_pages, duplicates,
        expect_ok, strings,
    };

    /// Runs every device-store behaviour, each on a fresh store from `new_store`.
    pub async fn run_all<S, F, Fut>(new_store: F)
    where
        S: DeviceStore + GroupStore + OperationStore + EventStore,
        F: Fn() -> Fut,
        Fut: Future<Output = S>,
    {
        get_devices_follows_input_order(&new_store().await).await;
        load_context_reads_target_and_commands(&new_store().await).await;
        list_devices_visits_each_once(&new_store().await).await;
        list_devices_applies_filters(&new_store().await).await;
        list_devices_rejects_invalid_cursor(&new_store().await).await;
        touch_devices_never_goes_back(&new_store().await).await;
        commit_rejects_duplicate_create(&new_store().await).await;
        commit_rejects_stale_device_revision(&new_store().await).await;
        commit_rejects_stale_target_revision(&new_store().await).await;
        commit_bumps_revisions_by_one(&new_store().await).await;
        commit_moves_operation_counts(&new_store().await).await;
        commit_puts_and_removes_commands(&new_store().await).await;
        commit_appends_events(&new_store().await).await;
    }

    /// Checks that `get_device` returns the record as written, and that
    /// `get_devices` leaves out unknown UDIDs and follows the input order.
    pub async fn get_devices_follows_input_order<S: DeviceStore + ?Sized>(store: &S) {
        let written = Device {
            name: Some("Anna's MacBook".to_string()),
            ..device("dev-a")
        };
        let a = create_device(store, written.clone()).await;
        let b = create_device(store, device("dev-b")).await;
        let c = create_device(store, device("dev-c")).await;

        assert_eq!(
            a,
            Device {
                revision: a.revision,
                ..written
            },
            "get_device must return the device as written, apart from the revision the store sets"
        );
        let unknown = store.get_device("dev-unknown").await;
        assert!(
            matches!(unknown, Ok(None)),
            "get_device of an unknown UDID must return Ok(None), got {unknown:?}"
        );

        let udids = strings(&["dev-c", "dev-unknown", "dev-a", "dev-b"]);
        let found = expect_ok(store.get_devices(&udids).await, "get_devices");
        assert_eq!(
            found,
            vec![c, a, b],
            "get_devices({udids:?}) must leave out the unknown UDID and follow the input order"
        );
        let none = expect_ok(store.get_devices(&[]).await, "get_devices of no UDIDs");
        assert!(
            none.is_empty(),
            "get_devices of no UDIDs must return nothing, got {none:?}"
        );
    }

    /// Checks that `load_context` returns the device, the target of its
    /// current operation and its own pending commands, oldest first.
    pub async fn load_context_reads_target_and_commands<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        let unknown = store.load_context("dev-unknown").await;
        assert!(
            matches!(unknown, Ok(None)),
            "load_context of an unknown UDID must return Ok(None), got {unknown:?}"
        );

        insert_operation(store, operation("op-1")).await;
        create_device(store, device("dev-1")).await;
        create_device(store, device("dev-2")).await;
        let idle = read_context(store, "dev-2").await;
        assert!(
            idle.target.is_none(),
            "a device without a current operation must have no target in its context, got {:?}",
            idle.target
        );

        let assigned = assign_new(store, target("op-1", "dev-1")).await;
        let older = command("dev-1", at_minute(1));
        let newer = QueuedCommand {
            operation_id: Some("op-1".to_string()),
            request_type: "ScheduleOSUpdate".to_string(),
            state: CommandState::Sent,
            ..command("dev-1", at_minute(2))
        };
        let other_device = command("dev-2", at_minute(1));
        // Written newest first, so only the store's ordering can put them right.
        let change = Change {
            commands: vec![
                CommandWrite::Put(newer.clone()),
                CommandWrite::Put(other_device.clone()),
                CommandWrite::Put(older.clone()),
            ],
            ..Change::default()
        };
        commit(store, change, "queuing commands").await;

        let context = read_context(store, "dev-1").await;
        assert_eq!(
            context.device.udid, "dev-1",
            "load_context must return the requested device"
        );
        assert_eq!(
            context.device.current_operation_id.as_deref(),
            Some("op-1"),
            "load_context must return the device with its current operation"
        );
        assert_eq!(
            context.target.as_ref(),
            Some(&assigned),
            "load_context must return the target of the device's current operation"
        );
        assert_eq!(
            context.commands,
            vec![older, newer],
            "load_context must return only this device's pending commands, oldest first"
        );
        let other = read_context(store, "dev-2").await;
        assert_eq!(
            other.commands,
            vec![other_device],
            "load_context must not mix in other devices' commands"
        );
    }

    /// Checks that paging through the inventory visits every device exactly
    /// once, in UDID order, for several page sizes.
    pub async fn list_devices_visits_each_once<S: DeviceStore + ?Sized>(store: &S) {
        let udids = [
            "dev-5", "dev-2", "dev-7", "dev-1", "dev-4", "dev-6", "dev-3",
        ];
        for udid in udids {
            create_device(store, device(udid)).await;
        }
        let mut expected = strings(&udids);
        expected.sort();

        let filter = &DeviceFilter::default();
        for limit in [1, 2, 3, 7, 50] {
            let listed = collect_pages("list_devices", limit, |page| async move {
                store.list_devices(filter, &page).await
            })
            .await;
            let listed: Vec<String> = listed.into_iter().map(|d| d.udid).collect();
            assert_eq!(
                duplicates(&listed),
                Vec::<String>::new(),
                "list_devices with page limit {limit} returned devices more than once"
            );
            assert_eq!(
                listed, expected,
                "list_devices with page limit {limit} must visit every device exactly once, ordered by UDID"
            );
        }
    }

    /// Checks each inventory filter, alone and combined, over several pages.
    /// `q` matches a substring of the name or serial number case-insensitively
    /// (non-ASCII letters too), with `%` and `_` taken literally.
    pub async fn list_devices_applies_filters<S>(store: &S)
    where
        S: DeviceStore + GroupStore + ?Sized,
    {
        let inventory = [
            (
                "dev-1",
                Some("Anna's MacBook"),
                "C02ABC123",
                Platform::MacOs,
                "15.7.1",
            ),
            (
                "dev-2",
                Some("100% Lab iPad"),
                "DMPX0002",
                Platform::IpadOs,
                "18.6",
            ),
            (
                "dev-3",
                Some("lab_mac"),
                "FVFZ0003",
                Platform::MacOs,
                "26.1",
            ),
            (
                "dev-4",
                Some("labXmac"),
                "FVFZ0004",
                Platform::MacOs,
                "26.1",
            ),
            (
                "dev-5",
                Some("1000 Lab iPhone"),
                "F2LX0005",
                Platform::Ios,
                "18.6",
            ),
            ("dev-6", None, "SERIALONLY6", Platform::MacOs, "15.7.1"),
            (
                "dev-7",
                Some("ÉCOLE iPad"),
                "DMPX0007",
                Platform::IpadOs,
                "18.6",
            ),
        ];
        for (udid, name, serial, platform, os) in inventory {
            let record = Device {
                name: name.map(str::to_string),
                serial_number: Some(serial.to_string()),
                platform: Some(platform),
                os_version: Some(version(os)),
                ..device(udid)
            };
            create_device(store, record).await;
        }
        super::groups::create(store, "g-lab").await;
        expect_ok(
            store
                .set_members("g-lab", &strings(&["dev-2", "dev-3", "dev-5"]))
                .await,
            "set_members(g-lab)",
        );

        let q = |text: &str| DeviceFilter {
            q: Some(text.to_string()),
            ..DeviceFilter::default()
        };
        let cases: Vec<(&str, DeviceFilter, &[&str])> = vec![
            (
                "no filter",
                DeviceFilter::default(),
                &[
                    "dev-1", "dev-2", "dev-3", "dev-4", "dev-5", "dev-6", "dev-7",
                ],
            ),
            ("q on name, other case", q("anna"), &["dev-1"]),
            ("q on serial, other case", q("c02abc"), &["dev-1"]),
            (
                "q on serial of an unnamed device",
                q("serialonly"),
                &["dev-6"],
            ),
            (
                "q upper case",
                q("LAB"),
                &["dev-2", "dev-3", "dev-4", "dev-5"],
            ),
            ("q with a literal underscore", q("lab_"), &["dev-3"]),
            ("q with a literal percent", q("100%"), &["dev-2"]),
            ("q of only a percent", q("%"), &["dev-2"]),
            (
                "q with a non-ASCII letter in other case",
                q("école"),
                &["dev-7"],
            ),
            ("q matching nothing", q("no such device"), &[]),
            (
                "group_id",
                DeviceFilter {
                    group_id: Some("g-lab".to_string()),
                    ..DeviceFilter::default()
                },
                &["dev-2", "dev-3", "dev-5"],
            ),
            (
                "unknown group_id",
                DeviceFilter {
                    group_id: Some("g-unknown".to_string()),
                    ..DeviceFilter::default()
                },
                &[],
            ),
            (
                "os_version",
                DeviceFilter {
                    os_version: Some("18.6".to_string()),
                    ..DeviceFilter::default()
                },
                &["dev-2", "dev-5", "dev-7"],
            ),
            (
                "platform",
                DeviceFilter {
                    platform: Some(Platform::MacOs),
                    ..DeviceFilter::default()
                },
                &["dev-1", "dev-3", "dev-4", "dev-6"],
            ),
            (
                "q, group_id and platform together",
                DeviceFilter {
                    q: Some("MAC".to_string()),
                    group_id: Some("g-lab".to_string()),
                    platform: Some(Platform::MacOs),
                    ..DeviceFilter::default()
                },
                &["dev-3"],
            ),
        ];
        for (label, filter, expected) in cases {
            let filter = &filter;
            let listed = collect_pages("list_devices", 2, |page| async move {
                store.list_devices(filter, &page).await
            })
            .await;
            let listed: Vec<String> = listed.into_iter().map(|d| d.udid).collect();
            assert_eq!(
                listed,
                strings(expected),
                "list_devices filtered by {label} ({filter:?}) must return exactly the matching devices in UDID order"
            );
        }
    }

    /// Checks that a cursor the store did not issue is rejected as invalid.
    pub async fn list_devices_rejects_invalid_cursor<S: DeviceStore + ?Sized>(store: &S) {
        create_device(store, device("dev-1")).await;
        let page = PageRequest {
            limit: 10,
            cursor: Some(INVALID_CURSOR.to_string()),
        };
        assert_invalid_cursor(
            store.list_devices(&DeviceFilter::default(), &page).await,
            "list_devices",
        );
    }

    /// Checks that `touch_devices` records later times and keeps a later time
    /// when given an earlier one. It must create no device for an unknown
    /// UDID, and every read must return the recorded time.
    pub async fn touch_devices_never_goes_back<S: DeviceStore + ?Sized>(store: &S) {
        create_device(store, device("dev-1")).await;
        create_device(store, device("dev-2")).await;

        let seen = vec![
            ("dev-1".to_string(), at_minute(10)),
            ("dev-2".to_string(), at_minute(3)),
        ];
        expect_ok(store.touch_devices(&seen).await, "touch_devices");
        assert_eq!(
            read_device(store, "dev-1").await.last_seen_at,
            at_minute(10),
            "get_device must return the last_seen_at that touch_devices recorded"
        );
        assert_eq!(
            read_device(store, "dev-2").await.last_seen_at,
            at_minute(3),
            "touch_devices must record the time of every device in the batch"
        );

        let earlier = vec![("dev-1".to_string(), at_minute(5))];
        expect_ok(store.touch_devices(&earlier).await, "touch_devices");
        assert_eq!(
            read_device(store, "dev-1").await.last_seen_at,
            at_minute(10),
            "touch_devices with an earlier time must not move last_seen_at back"
        );

        let unknown = vec![("dev-unknown".to_string(), at_minute(1))];
        expect_ok(
            store.touch_devices(&unknown).await,
            "touch_devices of an unknown UDID",
        );
        let created = expect_ok(store.get_device("dev-unknown").await, "get_device");
        assert!(
            created.is_none(),
            "touch_devices must not create a device for an unknown UDID, got {created:?}"
        );

        let context = read_context(store, "dev-1").await;
        assert_eq!(
            context.device.last_seen_at,
            at_minute(10),
            "load_context must return the last_seen_at that touch_devices recorded"
        );
        let listed = expect_ok(
            store
                .list_devices(&DeviceFilter::default(), &PageRequest::first(10))
                .await,
            "list_devices",
        );
        let times: Vec<_> = listed
            .items
            .iter()
            .map(|d| (d.udid.as_str(), d.last_seen_at))
            .collect();
        assert_eq!(
            times,
            [("dev-1", at_minute(10)), ("dev-2", at_minute(3))],
            "list_devices must return the last_seen_at that touch_devices recorded"
        );
    }

    /// Checks that creating a device that exists (expected revision `None`)
    /// is a conflict and leaves the first record in place.
    pub async fn commit_rejects_duplicate_create<S: DeviceStore + ?Sized>(store: &S) {
        let first = create_device(
            store,
            Device {
                name: Some("first".to_string()),
                ..device("dev-1")
            },
        )
        .await;
        let again = Change {
            device: Some(DeviceWrite {
                device: Device {
                    name: Some("second".to_string()),
                    ..device("dev-1")
                },
                expected_revision: None,
            }),
            ..Change::default()
        };
        assert_conflict(
            store.commit(again).await,
            "creating a device that already exists",
        );
        assert_eq!(
            read_device(store, "dev-1").await,
            first,
            "a rejected create must leave the existing device unchanged"
        );
    }

    /// Records that a rejected commit must leave unchanged.
    #[derive(Debug, PartialEq)]
    struct Snapshot {
        device: Device,
        target: Target,
        operation: Operation,
        commands: Vec<QueuedCommand>,
        event_ids: Vec<String>,
    }

    async fn snapshot<S>(store: &S, operation_id: &str, udid: &str) -> Snapshot
    where
        S: DeviceStore + OperationStore + EventStore + ?Sized,
    {
        let events = expect_ok(
            store
                .list_events(
                    operation_id,
                    &EventFilter::default(),
                    T0,
                    &PageRequest::first(100),
                )
                .await,
            "list_events",
        );
        Snapshot {
            device: read_device(store, udid).await,
            target: read_target(store, operation_id, udid).await,
            operation: read_operation(store, operation_id).await,
            commands: read_context(store, udid).await.commands,
            event_ids: events.items.into_iter().map(|e| e.id).collect(),
        }
    }

    fn assert_nothing_written(before: &Snapshot, after: &Snapshot, what: &str) {
        assert_eq!(
            after.device, before.device,
            "{what}: the device must be unchanged"
        );
        assert_eq!(
            after.target, before.target,
            "{what}: the target must be unchanged"
        );
        assert_eq!(
            after.operation.counts, before.operation.counts,
            "{what}: the operation's counts must be unchanged"
        );
        assert_eq!(
            after.operation.state, before.operation.state,
            "{what}: the operation's state must be unchanged"
        );
        assert_eq!(
            after.commands, before.commands,
            "{what}: no command may be added or removed"
        );
        assert_eq!(
            after.event_ids, before.event_ids,
            "{what}: no event may be written"
        );
    }

    /// Creates device `dev-1` in operation `op-1` with a pending target and
    /// one queued command, and returns the command.
    async fn device_in_operation<S>(store: &S) -> QueuedCommand
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        insert_operation(store, operation("op-1")).await;
        create_device(store, device("dev-1")).await;
        assign_new(store, target("op-1", "dev-1")).await;
        let queued = command("dev-1", at_minute(1));
        let change = Change {
            commands: vec![CommandWrite::Put(queued.clone())],
            ..Change::default()
        };
        commit(store, change, "queuing a command").await;
        queued
    }

    /// Builds a change that writes a device, a target, an event and two
    /// command writes on top of the records the caller read.
    fn full_change(
        device: Device,
        device_revision: u64,
        target: Target,
        target_revision: u64,
        queued: &QueuedCommand,
    ) -> Change {
        let previous_status = target.status;
        Change {
            device: Some(DeviceWrite {
                device: Device {
                    name: Some("must not be written".to_string()),
                    ..device
                },
                expected_revision: Some(device_revision),
            }),
            target: Some(TargetWrite {
                target: Target {
                    status: TargetStatus::Downloading,
                    detail: Some("must not be written".to_string()),
                    updated_at: at_minute(5),
                    ..target
                },
                expected_revision: target_revision,
                previous_status,
            }),
            events: vec![event(
                "op-1",
                Some("dev-1"),
                EventType::DownloadStarted,
                at_minute(5),
            )],
            commands: vec![
                CommandWrite::Put(command("dev-1", at_minute(5))),
                CommandWrite::Remove {
                    device_id: "dev-1".to_string(),
                    uuid: queued.uuid.clone(),
                },
            ],
        }
    }

    /// Checks that a commit naming a stale device revision is a conflict and
    /// writes nothing of its change: no target, count, event or command.
    pub async fn commit_rejects_stale_device_revision<S>(store: &S)
    where
        S: DeviceStore + OperationStore + EventStore + ?Sized,
    {
        let queued = device_in_operation(store).await;
        let read = read_device(store, "dev-1").await;
        let stale = read.revision;
        let renamed = Change {
            device: Some(DeviceWrite {
                device: Device {
                    name: Some("renamed".to_string()),
                    ..read.clone()
                },
                expected_revision: Some(stale),
            }),
            ..Change::default()
        };
        commit(store, renamed, "renaming the device").await;

        let before = snapshot(store, "op-1", "dev-1").await;
        let target = before.target.clone();
        let change = full_change(read, stale, target.clone(), target.revision, &queued);
        assert_conflict(
            store.commit(change).await,
            "a commit with a stale device revision",
        );
        let after = snapshot(store, "op-1", "dev-1").await;
        assert_nothing_written(&before, &after, "a commit with a stale device revision");
    }

    /// Checks that a commit naming a stale target revision is a conflict and
    /// writes nothing of its change, not even the device write that came with it.
    pub async fn commit_rejects_stale_target_revision<S>(store: &S)
    where
        S: DeviceStore + OperationStore + EventStore + ?Sized,
    {
        let queued = device_in_operation(store).await;
        let stale = read_target(store, "op-1", "dev-1").await.revision;
        move_target(store, "op-1", "dev-1", TargetStatus::Approved, at_minute(2)).await;

        let before = snapshot(store, "op-1", "dev-1").await;
        let device = before.device.clone();
        let device_revision = device.revision;
        let change = full_change(
            device,
            device_revision,
            before.target.clone(),
            stale,
            &queued,
        );
        assert_conflict(
            store.commit(change).await,
            "a commit with a stale target revision",
        );
        let after = snapshot(store, "op-1", "dev-1").await;
        assert_nothing_written(&before, &after, "a commit with a stale target revision");
    }

    /// Checks that each write stores the revision the caller expected plus
    /// one, whatever revision the written record carries.
    pub async fn commit_bumps_revisions_by_one<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        insert_operation(store, operation("op-1")).await;
        create_device(store, device("dev-1")).await;
        assign_new(store, target("op-1", "dev-1")).await;
        let device_before = read_device(store, "dev-1").await;
        let target_before = read_target(store, "op-1", "dev-1").await;

        let change = Change {
            device: Some(DeviceWrite {
                device: Device {
                    revision: 999,
                    ..device_before.clone()
                },
                expected_revision: Some(device_before.revision),
            }),
            ..Change::default()
        };
        commit(store, change, "writing the device").await;
        let once = read_device(store, "dev-1").await;
        assert_eq!(
            once.revision,
            device_before.revision + 1,
            "a device write must store the expected revision plus one, not the revision it carries"
        );

        let change = Change {
            device: Some(DeviceWrite {
                device: once.clone(),
                expected_revision: Some(once.revision),
            }),
            target: Some(TargetWrite {
                target: Target {
                    detail: Some("checked".to_string()),
                    revision: 999,
                    ..target_before.clone()
                },
                expected_revision: target_before.revision,
                previous_status: target_before.status,
            }),
            ..Change::default()
        };
        commit(store, change, "writing device and target").await;
        assert_eq!(
            read_device(store, "dev-1").await.revision,
            device_before.revision + 2,
            "a second device write must bump the revision by one again"
        );
        let target_after = read_target(store, "op-1", "dev-1").await;
        assert_eq!(
            target_after.revision,
            target_before.revision + 1,
            "a target write must store the expected revision plus one, not the revision it carries"
        );
        assert_eq!(
            target_after.detail.as_deref(),
            Some("checked"),
            "a target write must store the new record"
        );
    }

    /// Checks that a target write moves one count from `previous_status` to
    /// the new status and reports each derived state change of the operation.
    /// The first target leaving pending moves it from scheduled to in
    /// progress, and the last target becoming final moves it to finished.
    pub async fn commit_moves_operation_counts<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        insert_operation(store, operation("op-1")).await;
        for udid in ["dev-1", "dev-2"] {
            create_device(store, device(udid)).await;
            assign_new(store, target("op-1", udid)).await;
        }
        let scheduled = read_operation(store, "op-1").await;
        assert_eq!(
            scheduled.counts.get(TargetStatus::Pending),
            2,
            "two pending targets must count as two pending"
        );
        assert_eq!(
            scheduled.state,
            OperationState::Scheduled,
            "an operation whose targets are all pending must be scheduled"
        );

        let outcome = move_target(
            store,
            "op-1",
            "dev-1",
            TargetStatus::Downloading,
            at_minute(1),
        )
        .await;
        assert_eq!(
            outcome.state_changes,
            [(
                "op-1".to_string(),
                OperationState::Scheduled,
                OperationState::InProgress
            )],
            "the first target leaving pending must report scheduled -> in_progress"
        );
        let started = read_operation(store, "op-1").await;
        assert_eq!(
            started.counts.get(TargetStatus::Pending),
            1,
            "the moved target must leave the pending count"
        );
        assert_eq!(
            started.counts.get(TargetStatus::Downloading),
            1,
            "the moved target must join the downloading count"
        );
        assert_eq!(
            started.state,
            OperationState::InProgress,
            "get_operation must return the derived in_progress state"
        );
        assert!(
            started.started_at.is_some(),
            "an operation that went in progress must have started_at"
        );

        let outcome = move_target(
            store,
            "op-1",
            "dev-1",
            TargetStatus::Downloading,
            at_minute(2),
        )
        .await;
        assert!(
            outcome.state_changes.is_empty(),
            "a target write that keeps its status must report no state change, got {:?}",
            outcome.state_changes
        );
        assert_eq!(
            read_operation(store, "op-1").await.counts,
            started.counts,
            "a target write that keeps its status must leave the counts as they were"
        );

        let outcome = move_target(
            store,
            "op-1",
            "dev-1",
            TargetStatus::Installed,
            at_minute(3),
        )
        .await;
        assert!(
            outcome.state_changes.is_empty(),
            "one final target of two must not finish the operation, got {:?}",
            outcome.state_changes
        );

        let outcome =
            move_target(store, "op-1", "dev-2", TargetStatus::Obsolete, at_minute(4)).await;
        assert_eq!(
            outcome.state_changes,
            [(
                "op-1".to_string(),
                OperationState::InProgress,
                OperationState::Finished
            )],
            "the last target reaching a final status must report in_progress -> finished"
        );
        let finished = read_operation(store, "op-1").await;
        for (status, expected) in [
            (TargetStatus::Pending, 0),
            (TargetStatus::Downloading, 0),
            (TargetStatus::Installed, 1),
            (TargetStatus::Obsolete, 1),
        ] {
            assert_eq!(
                finished.counts.get(status),
                expected,
                "after the last move the {status} count must be {expected}"
            );
        }
        assert_eq!(
            finished.state,
            OperationState::Finished,
            "get_operation must return the derived finished state"
        );
        assert!(
            finished.finished_at.is_some(),
            "a finished operation must have finished_at"
        );
    }

    /// Checks that `CommandWrite::Put` adds or replaces a command by
    /// CommandUUID, and that `CommandWrite::Remove` removes it only for the
    /// device it names. Removing an absent command must succeed.
    pub async fn commit_puts_and_removes_commands<S: DeviceStore + ?Sized>(store: &S) {
        create_device(store, device("dev-1")).await;
        create_device(store, device("dev-2")).await;
        let first = command("dev-1", at_minute(1));
        let second = command("dev-1", at_minute(2));
        let change = Change {
            commands: vec![
                CommandWrite::Put(first.clone()),
                CommandWrite::Put(second.clone()),
            ],
            ..Change::default()
        };
        commit(store, change, "putting two commands").await;
        assert_eq!(
            read_context(store, "dev-1").await.commands,
            vec![first.clone(), second.clone()],
            "Put must add each command"
        );

        let resent = QueuedCommand {
            state: CommandState::NotNow,
            body: b"<plist version=\"1.0\"><dict><key>resent</key><true/></dict></plist>".to_vec(),
            ..first.clone()
        };
        let change = Change {
            commands: vec![CommandWrite::Put(resent.clone())],
            ..Change::default()
        };
        commit(store, change, "replacing a command").await;
        assert_eq!(
            read_context(store, "dev-1").await.commands,
            vec![resent.clone(), second.clone()],
            "Put of an existing CommandUUID must replace that command"
        );

        let wrong_device = Change {
            commands: vec![CommandWrite::Remove {
                device_id: "dev-2".to_string(),
                uuid: second.uuid.clone(),
            }],
            ..Change::default()
        };
        commit(store, wrong_device, "removing under another device").await;
        assert_eq!(
            read_context(store, "dev-1").await.commands,
            vec![resent.clone(), second.clone()],
            "Remove naming another device must not remove this device's command"
        );

        let remove = Change {
            commands: vec![CommandWrite::Remove {
                device_id: "dev-1".to_string(),
                uuid: resent.uuid.clone(),
            }],
            ..Change::default()
        };
        commit(store, remove.clone(), "removing a command").await;
        assert_eq!(
            read_context(store, "dev-1").await.commands,
            vec![second.clone()],
            "Remove must take the command off the queue"
        );
        commit(store, remove, "removing a command again").await;
        assert_eq!(
            read_context(store, "dev-1").await.commands,
            vec![second],
            "removing an absent command must succeed and change nothing"
        );
    }

    /// Checks that the events in a change are written with it.
    pub async fn commit_appends_events<S>(store: &S)
    where
        S: DeviceStore + EventStore + ?Sized,
    {
        let written = vec![
            event("op-1", Some("dev-1"), EventType::CommandSent, at_minute(1)),
            event(
                "op-1",
                Some("dev-1"),
                EventType::CommandAcknowledged,
                at_minute(2),
            ),
        ];
        let change = Change {
            events: written.clone(),
            ..Change::default()
        };
        commit(store, change, "committing events").await;
        let listed = expect_ok(
            store
                .list_events("op-1", &EventFilter::default(), T0, &PageRequest::first(10))
                .await,
            "list_events",
        );
        assert_eq!(
            listed.items, written,
            "the events of a committed change must be stored as written"
        );
    }
}

/// Contract of [`GroupStore`](crate::ports::GroupStore).
pub mod groups {
    use crate::domain::Group;
    use crate::ports::{GroupStore, PageRequest};

    use super::fixtures::{T0, at_minute, group};
    use super::{
        INVALID_CURSOR, assert_conflict, assert_invalid_cursor, collect_pages, duplicates,
        expect_ok, strings,
    };

    /// Runs every group-store behaviour, each on a fresh store from `new_store`.
    pub async fn run_all<S, F, Fut>(new_store: F)
    where
        S: GroupStore,
        F: Fn() -> Fut,
        Fut: Future<Output = S>,
    {
        create_group_rejects_duplicate_id(&new_store().await).await;
        get_group_returns_stored_group(&new_store().await).await;
        update_group_replaces_name_and_zone(&new_store().await).await;
        list_groups_visits_each_once(&new_store().await).await;
        list_groups_rejects_invalid_cursor(&new_store().await).await;
        set_members_replaces_list(&new_store().await).await;
        groups_of_pairs_devices_and_groups(&new_store().await).await;
    }

    /// Creates the [`group`] fixture `id`.
    pub async fn create<S: GroupStore + ?Sized>(store: &S, id: &str) -> Group {
        let record = group(id);
        expect_ok(
            store.create_group(&record).await,
            &format!("create_group({id})"),
        );
        record
    }

    /// Checks that creating a group whose id exists is a conflict and keeps the first.
    pub async fn create_group_rejects_duplicate_id<S: GroupStore + ?Sized>(store: &S) {
        let first = create(store, "g-1").await;
        let again = Group {
            name: "second".to_string(),
            ..group("g-1")
        };
        assert_conflict(
            store.create_group(&again).await,
            "creating a group that exists",
        );
        let stored = expect_ok(store.get_group("g-1").await, "get_group(g-1)");
        assert_eq!(
            stored,
            Some(first),
            "a rejected create must leave the existing group unchanged"
        );
    }

    /// Checks that `get_group` returns the group as created, and `None` for an unknown id.
    pub async fn get_group_returns_stored_group<S: GroupStore + ?Sized>(store: &S) {
        let written = Group {
            time_zone: Some("America/New_York".to_string()),
            ..group("g-1")
        };
        expect_ok(store.create_group(&written).await, "create_group(g-1)");
        let stored = expect_ok(store.get_group("g-1").await, "get_group(g-1)");
        assert_eq!(
            stored,
            Some(written),
            "get_group must return the group as created"
        );
        let unknown = expect_ok(store.get_group("g-unknown").await, "get_group(g-unknown)");
        assert!(
            unknown.is_none(),
            "get_group of an unknown id must return None, got {unknown:?}"
        );
    }

    /// Checks that `update_group` replaces name and time zone, and that an
    /// unknown id is not found.
    pub async fn update_group_replaces_name_and_zone<S: GroupStore + ?Sized>(store: &S) {
        create(store, "g-1").await;
        let renamed = Group {
            name: "Berlin office".to_string(),
            time_zone: Some("Europe/Berlin".to_string()),
            ..group("g-1")
        };
        expect_ok(store.update_group(&renamed).await, "update_group(g-1)");
        let stored = expect_ok(store.get_group("g-1").await, "get_group(g-1)");
        assert_eq!(
            stored,
            Some(renamed),
            "get_group must return the updated name and time zone"
        );

        let unknown = store.update_group(&group("g-unknown")).await;
        assert!(
            matches!(unknown, Err(crate::ports::StoreError::NotFound(_))),
            "update_group of an unknown id must fail with StoreError::NotFound, got {unknown:?}"
        );
        let created = expect_ok(store.get_group("g-unknown").await, "get_group(g-unknown)");
        assert!(
            created.is_none(),
            "update_group of an unknown id must not create it, got {created:?}"
        );
    }

    /// Checks that paging through the groups visits every group exactly once,
    /// for several page sizes.
    pub async fn list_groups_visits_each_once<S: GroupStore + ?Sized>(store: &S) {
        let ids = ["g-3", "g-1", "g-5", "g-2", "g-4"];
        for (index, id) in ids.iter().enumerate() {
            let record = Group {
                created_at: at_minute(index as i64),
                ..group(id)
            };
            expect_ok(store.create_group(&record).await, "create_group");
        }
        let mut expected = strings(&ids);
        expected.sort();
        for limit in [1, 2, 5, 50] {
            let listed = collect_pages("list_groups", limit, |page| async move {
                store.list_groups(&page).await
            })
            .await;
            let mut listed: Vec<String> = listed.into_iter().map(|g| g.id).collect();
            assert_eq!(
                duplicates(&listed),
                Vec::<String>::new(),
                "list_groups with page limit {limit} returned groups more than once"
            );
            listed.sort();
            assert_eq!(
                listed, expected,
                "list_groups with page limit {limit} must visit every group"
            );
        }
    }

    /// Checks that a cursor the store did not issue is rejected as invalid.
    pub async fn list_groups_rejects_invalid_cursor<S: GroupStore + ?Sized>(store: &S) {
        create(store, "g-1").await;
        let page = PageRequest {
            limit: 10,
            cursor: Some(INVALID_CURSOR.to_string()),
        };
        assert_invalid_cursor(store.list_groups(&page).await, "list_groups");
    }

    async fn sorted_members<S: GroupStore + ?Sized>(store: &S, group_id: &str) -> Vec<String> {
        let mut members = expect_ok(
            store.members(group_id).await,
            &format!("members({group_id})"),
        );
        members.sort();
        members
    }

    /// Checks that `set_members` replaces the whole list, and that setting
    /// the same list again changes nothing.
    pub async fn set_members_replaces_list<S: GroupStore + ?Sized>(store: &S) {
        create(store, "g-1").await;
        create(store, "g-2").await;
        let initial = strings(&["dev-3", "dev-1", "dev-2"]);
        expect_ok(store.set_members("g-1", &initial).await, "set_members");
        expect_ok(
            store.set_members("g-2", &strings(&["dev-1"])).await,
            "set_members",
        );
        assert_eq!(
            sorted_members(store, "g-1").await,
            strings(&["dev-1", "dev-2", "dev-3"]),
            "members must return every member that was set"
        );

        let replaced = strings(&["dev-3", "dev-4"]);
        for attempt in ["first", "repeated"] {
            expect_ok(store.set_members("g-1", &replaced).await, "set_members");
            assert_eq!(
                sorted_members(store, "g-1").await,
                replaced,
                "after the {attempt} set_members the list must be exactly the new members"
            );
        }
        assert_eq!(
            sorted_members(store, "g-2").await,
            strings(&["dev-1"]),
            "set_members of one group must leave other groups' members alone"
        );

        expect_ok(store.set_members("g-1", &[]).await, "set_members");
        assert_eq!(
            sorted_members(store, "g-1").await,
            Vec::<String>::new(),
            "set_members with no UDIDs must empty the group"
        );
        assert_eq!(
            sorted_members(store, "g-unknown").await,
            Vec::<String>::new(),
            "members of an unknown group must be empty"
        );
    }

    /// Checks that `groups_of` returns one `(udid, group)` pair per membership
    /// of the given devices and nothing for devices in no group.
    pub async fn groups_of_pairs_devices_and_groups<S: GroupStore + ?Sized>(store: &S) {
        let berlin = Group {
            time_zone: Some("Europe/Berlin".to_string()),
            created_at: T0,
            ..group("g-berlin")
        };
        expect_ok(store.create_group(&berlin).await, "create_group");
        let lab = create(store, "g-lab").await;
        expect_ok(
            store
                .set_members("g-berlin", &strings(&["dev-1", "dev-2"]))
                .await,
            "set_members",
        );
        expect_ok(
            store
                .set_members("g-lab", &strings(&["dev-2", "dev-9"]))
                .await,
            "set_members",
        );

        let mut found = expect_ok(
            store
                .groups_of(&strings(&["dev-1", "dev-2", "dev-none"]))
                .await,
            "groups_of",
        );
        found.sort_by(|a, b| (&a.0, &a.1.id).cmp(&(&b.0, &b.1.id)));
        assert_eq!(
            found,
            vec![
                ("dev-1".to_string(), berlin.clone()),
                ("dev-2".to_string(), berlin),
                ("dev-2".to_string(), lab),
            ],
            "groups_of must pair each given device with each of its groups, and leave out devices in no group and devices not asked for"
        );
        let none = expect_ok(store.groups_of(&[]).await, "groups_of of no UDIDs");
        assert!(
            none.is_empty(),
            "groups_of of no UDIDs must return nothing, got {none:?}"
        );
    }
}

/// Contract of [`OperationStore`](crate::ports::OperationStore): operations,
/// assignments, targets, cancellation and idempotency keys.
pub mod operations {
    use jiff::Timestamp;

    use crate::domain::{
        Device, EventType, Operation, OperationState, OperationType, Protocol, StatusCounts,
        Target, TargetStatus,
    };
    use crate::ports::{
        AssignOutcome, Assignment, DeviceStore, EventFilter, EventStore, MAX_TRANSACTION_ITEMS,
        OperationFilter, OperationStore, PageRequest, TargetFilter,
    };

    use super::fixtures::{
        T0, assign_new, at_minute, command, create_device, device, event, insert_operation,
        move_target, operation, read_context, read_device, read_operation, read_target,
        scheduled_install, target, version,
    };
    use super::{
        INVALID_CURSOR, assert_conflict, assert_invalid_cursor, collect_pages, duplicates,
        expect_ok, strings,
    };

    /// Runs every operation-store behaviour, each on a fresh store from `new_store`.
    pub async fn run_all<S, F, Fut>(new_store: F)
    where
        S: DeviceStore + OperationStore + EventStore,
        F: Fn() -> Fut,
        Fut: Future<Output = S>,
    {
        insert_operation_rejects_duplicate_id(&new_store().await).await;
        get_operation_starts_with_zero_counts(&new_store().await).await;
        list_operations_newest_first(&new_store().await).await;
        list_operations_applies_filters(&new_store().await).await;
        list_operations_stable_under_writes(&new_store().await).await;
        list_operations_rejects_invalid_cursor(&new_store().await).await;
        assign_sets_current_operation(&new_store().await).await;
        assign_conflict_leaves_nothing_behind(&new_store().await).await;
        assign_stale_replaced_target_conflicts(&new_store().await).await;
        assign_moves_device_between_operations(&new_store().await).await;
        assign_rejects_too_many_assignments(&new_store().await).await;
        list_targets_applies_filters(&new_store().await).await;
        list_targets_stable_under_status_changes(&new_store().await).await;
        list_targets_rejects_invalid_cursor(&new_store().await).await;
        mark_cancelled_rejects_ended_operations(&new_store().await).await;
        cancelled_operation_ignores_target_moves(&new_store().await).await;
        idempotency_key_claims_once(&new_store().await).await;
    }

    /// Checks that inserting an operation whose id exists is a conflict and
    /// keeps the first.
    pub async fn insert_operation_rejects_duplicate_id<S: OperationStore + ?Sized>(store: &S) {
        let first = insert_operation(store, operation("op-1")).await;
        let again = Operation {
            created_by: "someone else".to_string(),
            ..operation("op-1")
        };
        assert_conflict(
            store.insert_operation(&again).await,
            "inserting an operation that exists",
        );
        assert_eq!(
            read_operation(store, "op-1").await,
            first,
            "a rejected insert must leave the existing operation unchanged"
        );
    }

    /// Checks that a new operation reads back as written, with zero counts
    /// whatever counts it carried, and that an unknown id reads as `None`.
    pub async fn get_operation_starts_with_zero_counts<S: OperationStore + ?Sized>(store: &S) {
        let mut counts = StatusCounts::default();
        counts.add(TargetStatus::Pending, 5);
        let written = Operation {
            protocol: Protocol::Mdm,
            install: scheduled_install(),
            counts,
            group_ids: strings(&["g-1", "g-2"]),
            ..operation("op-1")
        };
        let stored = insert_operation(store, written.clone()).await;
        assert_eq!(
            stored.counts,
            StatusCounts::default(),
            "a new operation must start with zero counts"
        );
        assert_eq!(
            stored,
            Operation {
                counts: StatusCounts::default(),
                ..written
            },
            "get_operation must return the operation as inserted"
        );
        let unknown = expect_ok(store.get_operation("op-unknown").await, "get_operation");
        assert!(
            unknown.is_none(),
            "get_operation of an unknown id must return None, got {unknown:?}"
        );
    }

    /// Checks that paging through the operations while another writer
    /// creates operations and moves targets (which changes derived states)
    /// visits every operation that existed before the first page exactly
    /// once, newest first.
    pub async fn list_operations_stable_under_writes<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        let existing: Vec<String> = (0..15).map(|n| format!("op-{n:02}")).collect();
        for (n, id) in existing.iter().enumerate() {
            let record = Operation {
                created_at: at_minute(n as i64),
                ..operation(id)
            };
            insert_operation(store, record).await;
            let udid = format!("dev-{n:02}");
            create_device(store, device(&udid)).await;
            assign_new(store, target(id, &udid)).await;
        }

        let pager = async {
            let mut seen: Vec<Operation> = Vec::new();
            let mut request = PageRequest::first(2);
            for _ in 0..super::MAX_PAGES {
                let page = expect_ok(
                    store
                        .list_operations(&OperationFilter::default(), &request)
                        .await,
                    "list_operations while writing",
                );
                seen.extend(page.items);
                tokio::task::yield_now().await;
                match page.next_cursor {
                    Some(cursor) => request.cursor = Some(cursor),
                    None => return seen,
                }
            }
            panic!("list_operations while writing did not reach the last page");
        };
        let writer = async {
            for n in 0..15usize {
                let udid = format!("dev-{:02}", 14 - n);
                let id = format!("op-{:02}", 14 - n);
                move_target(store, &id, &udid, TargetStatus::Installed, at_minute(100)).await;
                let newer = Operation {
                    created_at: at_minute(200 + n as i64),
                    ..operation(&format!("op-new-{n:02}"))
                };
                insert_operation(store, newer).await;
                tokio::task::yield_now().await;
            }
        };
        let (seen, ()) = tokio::join!(pager, writer);

        let ids: Vec<String> = seen.iter().map(|o| o.id.clone()).collect();
        assert!(
            duplicates(&ids).is_empty(),
            "list_operations while writing returned operations twice: {:?}",
            duplicates(&ids)
        );
        for id in &existing {
            assert!(
                ids.contains(id),
                "list_operations while writing skipped {id}, which existed before paging began: {ids:?}"
            );
        }
        let times: Vec<Timestamp> = seen.iter().map(|o| o.created_at).collect();
        assert!(
            times.windows(2).all(|pair| pair[0] >= pair[1]),
            "list_operations while writing must stay newest first, got {ids:?}"
        );
    }

    /// Checks that paging through the operations visits each once, newest
    /// first, also when two were created at the same instant.
    pub async fn list_operations_newest_first<S: OperationStore + ?Sized>(store: &S) {
        let created = [
            ("op-c", at_minute(3)),
            ("op-a", at_minute(1)),
            ("op-e", at_minute(4)),
            ("op-b", at_minute(2)),
            ("op-d", at_minute(3)),
            ("op-f", at_minute(5)),
        ];
        for (id, at) in created {
            let record = Operation {
                created_at: at,
                ..operation(id)
            };
            insert_operation(store, record).await;
        }
        let filter = &OperationFilter::default();
        for limit in [1, 2, 4, 50] {
            let listed = collect_pages("list_operations", limit, |page| async move {
                store.list_operations(filter, &page).await
            })
            .await;
            let ids: Vec<String> = listed.iter().map(|o| o.id.clone()).collect();
            assert_eq!(
                duplicates(&ids),
                Vec::<String>::new(),
                "list_operations with page limit {limit} returned operations more than once"
            );
            let mut sorted_ids = ids.clone();
            sorted_ids.sort();
            assert_eq!(
                sorted_ids,
                strings(&["op-a", "op-b", "op-c", "op-d", "op-e", "op-f"]),
                "list_operations with page limit {limit} must visit every operation"
            );
            let times: Vec<Timestamp> = listed.iter().map(|o| o.created_at).collect();
            assert!(
                times.windows(2).all(|pair| pair[0] >= pair[1]),
                "list_operations with page limit {limit} must list newest first, got {ids:?}"
            );
        }
    }

    /// Checks each operations filter, alone and combined, over several pages.
    /// `from` is inclusive and `to` exclusive.
    pub async fn list_operations_applies_filters<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        let records = [
            (
                "op-a",
                Protocol::Ddm,
                OperationType::AdminInitiated,
                "26.2",
                &["g-1"][..],
                1,
            ),
            (
                "op-b",
                Protocol::Mdm,
                OperationType::AdminInitiated,
                "15.7.2",
                &["g-2"][..],
                2,
            ),
            (
                "op-c",
                Protocol::Ddm,
                OperationType::UserInitiated,
                "26.2",
                &[][..],
                3,
            ),
            (
                "op-d",
                Protocol::Mdm,
                OperationType::Migrated,
                "26.2",
                &["g-1"][..],
                4,
            ),
            (
                "op-e",
                Protocol::Ddm,
                OperationType::AdminInitiated,
                "26.2",
                &[][..],
                5,
            ),
        ];
        for (id, protocol, kind, product_version, groups, minute) in records {
            let mut record = operation(id);
            record.protocol = protocol;
            record.kind = kind;
            record.update.product_version = version(product_version);
            record.group_ids = strings(groups);
            record.created_at = at_minute(minute);
            insert_operation(store, record).await;
        }
        expect_ok(
            store.mark_cancelled("op-d", at_minute(10)).await,
            "mark_cancelled(op-d)",
        );
        create_device(store, device("dev-1")).await;
        assign_new(store, target("op-e", "dev-1")).await;
        move_target(
            store,
            "op-e",
            "dev-1",
            TargetStatus::Downloading,
            at_minute(11),
        )
        .await;

        let states = |states: &[OperationState]| OperationFilter {
            states: states.to_vec(),
            ..OperationFilter::default()
        };
        let cases: Vec<(&str, OperationFilter, &[&str])> = vec![
            (
                "no filter",
                OperationFilter::default(),
                &["op-e", "op-d", "op-c", "op-b", "op-a"],
            ),
            (
                "state scheduled",
                states(&[OperationState::Scheduled]),
                &["op-c", "op-b", "op-a"],
            ),
            (
                "state in_progress",
                states(&[OperationState::InProgress]),
                &["op-e"],
            ),
            (
                "state cancelled",
                states(&[OperationState::Cancelled]),
                &["op-d"],
            ),
            (
                "two states",
                states(&[OperationState::Cancelled, OperationState::InProgress]),
                &["op-e", "op-d"],
            ),
            ("state finished", states(&[OperationState::Finished]), &[]),
            (
                "product_version",
                OperationFilter {
                    product_version: Some("26.2".to_string()),
                    ..OperationFilter::default()
                },
                &["op-e", "op-d", "op-c", "op-a"],
            ),
            (
                "group_id",
                OperationFilter {
                    group_id: Some("g-1".to_string()),
                    ..OperationFilter::default()
                },
                &["op-d", "op-a"],
            ),
            (
                "kind",
                OperationFilter {
                    kind: Some(OperationType::UserInitiated),
                    ..OperationFilter::default()
                },
                &["op-c"],
            ),
            (
                "protocol",
                OperationFilter {
                    protocol: Some(Protocol::Mdm),
                    ..OperationFilter::default()
                },
                &["op-d", "op-b"],
            ),
            (
                "from, inclusive",
                OperationFilter {
                    from: Some(at_minute(2)),
                    ..OperationFilter::default()
                },
                &["op-e", "op-d", "op-c", "op-b"],
            ),
            (
                "to, exclusive",
                OperationFilter {
                    to: Some(at_minute(3)),
                    ..OperationFilter::default()
                },
                &["op-b", "op-a"],
            ),
            (
                "from and to",
                OperationFilter {
                    from: Some(at_minute(2)),
                    to: Some(at_minute(4)),
                    ..OperationFilter::default()
                },
                &["op-c", "op-b"],
            ),
            (
                "protocol, product_version and state together",
                OperationFilter {
                    states: vec![OperationState::Scheduled],
                    product_version: Some("26.2".to_string()),
                    protocol: Some(Protocol::Ddm),
                    ..OperationFilter::default()
                },
                &["op-c", "op-a"],
            ),
        ];
        for (label, filter, expected) in cases {
            let filter = &filter;
            let listed = collect_pages("list_operations", 2, |page| async move {
                store.list_operations(filter, &page).await
            })
            .await;
            let ids: Vec<String> = listed.into_iter().map(|o| o.id).collect();
            assert_eq!(
                ids,
                strings(expected),
                "list_operations filtered by {label} ({filter:?}) must return exactly the matching operations, newest first"
            );
        }
    }

    /// Checks that a cursor the store did not issue is rejected as invalid.
    pub async fn list_operations_rejects_invalid_cursor<S: OperationStore + ?Sized>(store: &S) {
        insert_operation(store, operation("op-1")).await;
        let page = PageRequest {
            limit: 10,
            cursor: Some(INVALID_CURSOR.to_string()),
        };
        assert_invalid_cursor(
            store
                .list_operations(&OperationFilter::default(), &page)
                .await,
            "list_operations",
        );
    }

    /// Returns the ids of the events of `operation_id`, as listed at `T0`.
    async fn event_ids<S: EventStore + ?Sized>(store: &S, operation_id: &str) -> Vec<String> {
        let page = expect_ok(
            store
                .list_events(
                    operation_id,
                    &EventFilter::default(),
                    T0,
                    &PageRequest::first(100),
                )
                .await,
            "list_events",
        );
        page.items.into_iter().map(|e| e.id).collect()
    }

    /// Checks that an assignment stores the target with its events and
    /// commands, points the device at the operation and counts the target.
    pub async fn assign_sets_current_operation<S>(store: &S)
    where
        S: DeviceStore + OperationStore + EventStore + ?Sized,
    {
        insert_operation(store, operation("op-1")).await;
        create_device(store, device("dev-1")).await;
        let written = target("op-1", "dev-1");
        let added = event("op-1", Some("dev-1"), EventType::DeviceAdded, T0);
        let queued = command("dev-1", T0);
        let assignment = Assignment {
            target: written.clone(),
            expected_current: None,
            replaces: None,
            events: vec![added.clone()],
            commands: vec![queued.clone()],
        };
        let (outcomes, commit) = expect_ok(store.assign(vec![assignment]).await, "assign");
        assert_eq!(
            outcomes,
            [AssignOutcome::Assigned],
            "assigning a device in no operation, expecting none, must succeed"
        );
        assert!(
            commit.state_changes.is_empty(),
            "a pending target must leave a new operation scheduled, got {:?}",
            commit.state_changes
        );

        let stored = read_target(store, "op-1", "dev-1").await;
        assert_eq!(
            stored,
            Target {
                revision: stored.revision,
                ..written
            },
            "get_target must return the target as assigned"
        );
        assert_eq!(
            read_device(store, "dev-1")
                .await
                .current_operation_id
                .as_deref(),
            Some("op-1"),
            "an assignment must set the device's current operation"
        );
        let counted = read_operation(store, "op-1").await;
        assert_eq!(
            counted.counts.get(TargetStatus::Pending),
            1,
            "an assignment must count the new target under its status"
        );
        assert_eq!(
            counted.counts.total(),
            1,
            "an assignment must count the new target once"
        );
        assert_eq!(
            event_ids(store, "op-1").await,
            vec![added.id],
            "an assignment must write its events"
        );
        assert_eq!(
            read_context(store, "dev-1").await.commands,
            vec![queued],
            "an assignment must queue its commands"
        );
    }

    /// Checks that, in one call, an assignment whose expected current
    /// operation is out of date is reported as a conflict and writes nothing,
    /// while the others still apply.
    pub async fn assign_conflict_leaves_nothing_behind<S>(store: &S)
    where
        S: DeviceStore + OperationStore + EventStore + ?Sized,
    {
        insert_operation(store, operation("op-old")).await;
        insert_operation(store, operation("op-new")).await;
        for udid in ["dev-1", "dev-2", "dev-3"] {
            create_device(store, device(udid)).await;
        }
        let old_target = assign_new(store, target("op-old", "dev-2")).await;
        let dev2_before = read_device(store, "dev-2").await;

        let fresh = |udid: &str| Assignment {
            target: target("op-new", udid),
            expected_current: None,
            replaces: None,
            events: vec![event("op-new", Some(udid), EventType::DeviceAdded, T0)],
            commands: vec![command(udid, T0)],
        };
        // dev-2 is in op-old, but this caller read it as being in no operation.
        let stale = fresh("dev-2");
        let stale_event = stale.events[0].id.clone();
        let (outcomes, _) = expect_ok(
            store
                .assign(vec![fresh("dev-1"), stale, fresh("dev-3")])
                .await,
            "assign",
        );
        assert_eq!(
            outcomes,
            [
                AssignOutcome::Assigned,
                AssignOutcome::Conflict,
                AssignOutcome::Assigned
            ],
            "only the assignment with an out-of-date expected_current may conflict, and outcomes must follow the input order"
        );

        let missing = expect_ok(store.get_target("op-new", "dev-2").await, "get_target");
        assert!(
            missing.is_none(),
            "a conflicting assignment must not write its target, got {missing:?}"
        );
        assert_eq!(
            read_device(store, "dev-2").await,
            dev2_before,
            "a conflicting assignment must leave the device unchanged"
        );
        assert_eq!(
            read_target(store, "op-old", "dev-2").await,
            old_target,
            "a conflicting assignment must leave the device's old target unchanged"
        );
        assert!(
            read_context(store, "dev-2").await.commands.is_empty(),
            "a conflicting assignment must not queue its commands"
        );
        let events = event_ids(store, "op-new").await;
        assert!(
            !events.contains(&stale_event),
            "a conflicting assignment must not write its events"
        );
        assert_eq!(
            events.len(),
            2,
            "the two applied assignments must write their events, got {events:?}"
        );
        let counted = read_operation(store, "op-new").await;
        assert_eq!(
            counted.counts.get(TargetStatus::Pending),
            2,
            "only the applied assignments may be counted"
        );
        for udid in ["dev-1", "dev-3"] {
            assert_eq!(
                read_device(store, udid)
                    .await
                    .current_operation_id
                    .as_deref(),
                Some("op-new"),
                "the assignment of {udid} must apply despite another one conflicting"
            );
            assert_eq!(
                read_context(store, udid).await.commands.len(),
                1,
                "the assignment of {udid} must queue its command"
            );
        }
    }

    /// Checks that an assignment replacing a target at a revision other than
    /// the stored one is a conflict and leaves the old target counted in place.
    pub async fn assign_stale_replaced_target_conflicts<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        insert_operation(store, operation("op-old")).await;
        insert_operation(store, operation("op-new")).await;
        create_device(store, device("dev-1")).await;
        let read = assign_new(store, target("op-old", "dev-1")).await;
        move_target(
            store,
            "op-old",
            "dev-1",
            TargetStatus::Downloading,
            at_minute(1),
        )
        .await;
        let old_before = read_target(store, "op-old", "dev-1").await;
        let device_before = read_device(store, "dev-1").await;

        let assignment = Assignment {
            target: target("op-new", "dev-1"),
            expected_current: Some("op-old".to_string()),
            replaces: Some(("op-old".to_string(), read.revision)),
            events: Vec::new(),
            commands: Vec::new(),
        };
        let (outcomes, _) = expect_ok(store.assign(vec![assignment]).await, "assign");
        assert_eq!(
            outcomes,
            [AssignOutcome::Conflict],
            "replacing a target at a stale revision must conflict"
        );
        assert_eq!(
            read_target(store, "op-old", "dev-1").await,
            old_before,
            "a conflicting move must leave the old target in place"
        );
        assert_eq!(
            read_device(store, "dev-1").await,
            device_before,
            "a conflicting move must leave the device unchanged"
        );
        assert_eq!(
            read_operation(store, "op-old")
                .await
                .counts
                .get(TargetStatus::Downloading),
            1,
            "a conflicting move must leave the old operation's counts unchanged"
        );
        assert_eq!(
            read_operation(store, "op-new").await.counts.total(),
            0,
            "a conflicting move must not count a target in the new operation"
        );
    }

    /// Checks that moving a device removes its old target from the old
    /// operation's list and counts, reports the old operation's derived state
    /// change, and points the device at the new operation.
    pub async fn assign_moves_device_between_operations<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        insert_operation(store, operation("op-old")).await;
        insert_operation(store, operation("op-new")).await;
        for udid in ["dev-1", "dev-2"] {
            create_device(store, device(udid)).await;
            assign_new(store, target("op-old", udid)).await;
        }
        move_target(
            store,
            "op-old",
            "dev-2",
            TargetStatus::Installed,
            at_minute(1),
        )
        .await;
        move_target(
            store,
            "op-old",
            "dev-1",
            TargetStatus::Downloading,
            at_minute(2),
        )
        .await;
        let read = read_target(store, "op-old", "dev-1").await;

        let assignment = Assignment {
            target: Target {
                created_at: at_minute(3),
                updated_at: at_minute(3),
                ..target("op-new", "dev-1")
            },
            expected_current: Some("op-old".to_string()),
            replaces: Some(("op-old".to_string(), read.revision)),
            events: Vec::new(),
            commands: Vec::new(),
        };
        let (outcomes, commit) = expect_ok(store.assign(vec![assignment]).await, "assign");
        assert_eq!(
            outcomes,
            [AssignOutcome::Assigned],
            "moving a device with its current operation and target revision as read must succeed"
        );
        assert_eq!(
            commit.state_changes,
            [(
                "op-old".to_string(),
                OperationState::InProgress,
                OperationState::Finished
            )],
            "removing the last unfinished target must report the old operation in_progress -> finished"
        );

        let gone = expect_ok(store.get_target("op-old", "dev-1").await, "get_target");
        assert!(
            gone.is_none(),
            "a moved device's old target must be removed, got {gone:?}"
        );
        let listed = expect_ok(
            store
                .list_targets("op-old", &TargetFilter::default(), &PageRequest::first(10))
                .await,
            "list_targets",
        );
        let listed: Vec<String> = listed.items.into_iter().map(|t| t.device_id).collect();
        assert_eq!(
            listed,
            strings(&["dev-2"]),
            "a moved device must leave the old operation's target list"
        );
        let old = read_operation(store, "op-old").await;
        assert_eq!(
            old.counts.get(TargetStatus::Downloading),
            0,
            "a moved device must leave the old operation's counts"
        );
        assert_eq!(
            old.counts.total(),
            1,
            "the old operation must count only the target that stayed"
        );
        assert_eq!(
            old.state,
            OperationState::Finished,
            "the old operation's state must be derived from what stayed"
        );
        assert_eq!(
            read_operation(store, "op-new")
                .await
                .counts
                .get(TargetStatus::Pending),
            1,
            "the new operation must count the moved device"
        );
        assert_eq!(
            read_device(store, "dev-1")
                .await
                .current_operation_id
                .as_deref(),
            Some("op-new"),
            "a moved device must point at the new operation"
        );
    }

    /// Checks that more than [`MAX_TRANSACTION_ITEMS`] assignments in one call
    /// is an error that writes none of them, and that exactly that many succeed.
    pub async fn assign_rejects_too_many_assignments<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        insert_operation(store, operation("op-1")).await;
        let udids: Vec<String> = (0..=MAX_TRANSACTION_ITEMS)
            .map(|n| format!("dev-{n:03}"))
            .collect();
        for udid in &udids {
            create_device(store, device(udid)).await;
        }
        let assignments = |udids: &[String]| -> Vec<Assignment> {
            udids
                .iter()
                .map(|udid| Assignment {
                    target: target("op-1", udid),
                    expected_current: None,
                    replaces: None,
                    events: Vec::new(),
                    commands: Vec::new(),
                })
                .collect()
        };

        let too_many = store.assign(assignments(&udids)).await;
        assert!(
            too_many.is_err(),
            "assign of {} assignments must fail, the limit being {MAX_TRANSACTION_ITEMS}; got {too_many:?}",
            udids.len()
        );
        assert_eq!(
            read_operation(store, "op-1").await.counts.total(),
            0,
            "a rejected oversized assign must count no target"
        );
        let first: Device = read_device(store, &udids[0]).await;
        assert!(
            first.current_operation_id.is_none(),
            "a rejected oversized assign must leave every device out of the operation"
        );

        let (outcomes, _) = expect_ok(
            store
                .assign(assignments(&udids[..MAX_TRANSACTION_ITEMS]))
                .await,
            "assign of exactly MAX_TRANSACTION_ITEMS assignments",
        );
        assert_eq!(
            outcomes,
            vec![AssignOutcome::Assigned; MAX_TRANSACTION_ITEMS],
            "assign of exactly {MAX_TRANSACTION_ITEMS} assignments must apply them all"
        );
        assert_eq!(
            read_operation(store, "op-1").await.counts.total(),
            MAX_TRANSACTION_ITEMS as i64,
            "every applied assignment must be counted"
        );
    }

    /// Checks each target filter, alone and combined, over several pages, in
    /// device order, and that `get_target` of an unknown pair is `None`.
    /// `q` matches the device name or serial number like the inventory's `q`.
    pub async fn list_targets_applies_filters<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        insert_operation(store, operation("op-1")).await;
        insert_operation(store, operation("op-other")).await;
        let berlin = Some("Europe/Berlin");
        let new_york = Some("America/New_York");
        let rows = [
            (
                "dev-1",
                TargetStatus::Pending,
                berlin,
                Some("Anna's MacBook"),
                "C02ABC123",
                &["g-1"][..],
            ),
            (
                "dev-2",
                TargetStatus::Downloading,
                new_york,
                Some("100% Lab iPad"),
                "DMPX0002",
                &["g-2"][..],
            ),
            (
                "dev-3",
                TargetStatus::Installed,
                berlin,
                Some("lab_mac"),
                "FVFZ0003",
                &["g-1", "g-2"][..],
            ),
            (
                "dev-4",
                TargetStatus::Failed,
                None,
                Some("labXmac"),
                "SERIAL4",
                &[][..],
            ),
            (
                "dev-5",
                TargetStatus::Pending,
                new_york,
                Some("1000 Lab iPhone"),
                "F2LX0005",
                &["g-1"][..],
            ),
            (
                "dev-6",
                TargetStatus::Pending,
                berlin,
                Some("ÉCOLE iPad"),
                "DMPX0006",
                &[][..],
            ),
        ];
        for (udid, status, zone, name, serial, groups) in rows {
            create_device(store, device(udid)).await;
            let record = Target {
                status,
                time_zone: zone.map(str::to_string),
                device_name: name.map(str::to_string),
                serial_number: Some(serial.to_string()),
                group_ids: strings(groups),
                ..target("op-1", udid)
            };
            let assignment = Assignment {
                target: record,
                expected_current: None,
                replaces: None,
                events: Vec::new(),
                commands: Vec::new(),
            };
            let (outcomes, _) = expect_ok(store.assign(vec![assignment]).await, "assign");
            assert_eq!(
                outcomes,
                [AssignOutcome::Assigned],
                "assigning {udid} must succeed"
            );
        }
        create_device(store, device("dev-0")).await;
        assign_new(store, target("op-other", "dev-0")).await;

        let unknown = expect_ok(store.get_target("op-1", "dev-0").await, "get_target");
        assert!(
            unknown.is_none(),
            "get_target of a device that is not a target of the operation must return None, got {unknown:?}"
        );

        let q = |text: &str| TargetFilter {
            q: Some(text.to_string()),
            ..TargetFilter::default()
        };
        let cases: Vec<(&str, TargetFilter, &[&str])> = vec![
            (
                "no filter",
                TargetFilter::default(),
                &["dev-1", "dev-2", "dev-3", "dev-4", "dev-5", "dev-6"],
            ),
            (
                "status",
                TargetFilter {
                    status: Some(TargetStatus::Pending),
                    ..TargetFilter::default()
                },
                &["dev-1", "dev-5", "dev-6"],
            ),
            ("q on name, other case", q("anna"), &["dev-1"]),
            ("q on serial, other case", q("c02abc"), &["dev-1"]),
            (
                "q upper case",
                q("LAB"),
                &["dev-2", "dev-3", "dev-4", "dev-5"],
            ),
            ("q with a literal underscore", q("lab_"), &["dev-3"]),
            ("q with a literal percent", q("100%"), &["dev-2"]),
            (
                "q with a non-ASCII letter in other case",
                q("école"),
                &["dev-6"],
            ),
            (
                "group_id",
                TargetFilter {
                    group_id: Some("g-1".to_string()),
                    ..TargetFilter::default()
                },
                &["dev-1", "dev-3", "dev-5"],
            ),
            (
                "time_zone",
                TargetFilter {
                    time_zone: Some("America/New_York".to_string()),
                    ..TargetFilter::default()
                },
                &["dev-2", "dev-5"],
            ),
            (
                "active_only",
                TargetFilter {
                    active_only: true,
                    ..TargetFilter::default()
                },
                &["dev-1", "dev-2", "dev-5", "dev-6"],
            ),
            (
                "active_only, group_id and time_zone together",
                TargetFilter {
                    active_only: true,
                    group_id: Some("g-1".to_string()),
                    time_zone: Some("Europe/Berlin".to_string()),
                    ..TargetFilter::default()
                },
                &["dev-1"],
            ),
            (
                "status and group_id together",
                TargetFilter {
                    status: Some(TargetStatus::Pending),
                    group_id: Some("g-1".to_string()),
                    ..TargetFilter::default()
                },
                &["dev-1", "dev-5"],
            ),
            (
                "status, group_id and q together",
                TargetFilter {
                    status: Some(TargetStatus::Pending),
                    group_id: Some("g-1".to_string()),
                    q: Some("lab".to_string()),
                    ..TargetFilter::default()
                },
                &["dev-5"],
            ),
            (
                "status and q matching nothing together",
                TargetFilter {
                    status: Some(TargetStatus::Installed),
                    q: Some("anna".to_string()),
                    ..TargetFilter::default()
                },
                &[],
            ),
        ];
        for (label, filter, expected) in cases {
            let filter = &filter;
            let listed = collect_pages("list_targets", 2, |page| async move {
                store.list_targets("op-1", filter, &page).await
            })
            .await;
            let listed: Vec<String> = listed.into_iter().map(|t| t.device_id).collect();
            assert_eq!(
                listed,
                strings(expected),
                "list_targets filtered by {label} ({filter:?}) must return exactly the matching targets of the operation, in device order"
            );
        }
    }

    /// Checks that paging through an operation's targets while another
    /// writer moves their statuses visits every target exactly once, in
    /// device order.
    pub async fn list_targets_stable_under_status_changes<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        insert_operation(store, operation("op-1")).await;
        let udids: Vec<String> = (0..24).map(|n| format!("dev-{n:02}")).collect();
        for udid in &udids {
            create_device(store, device(udid)).await;
            assign_new(store, target("op-1", udid)).await;
        }

        let pager = async {
            let mut seen: Vec<String> = Vec::new();
            let mut request = PageRequest::first(5);
            for _ in 0..super::MAX_PAGES {
                let page = expect_ok(
                    store
                        .list_targets("op-1", &TargetFilter::default(), &request)
                        .await,
                    "list_targets while statuses change",
                );
                seen.extend(page.items.into_iter().map(|t| t.device_id));
                tokio::task::yield_now().await;
                match page.next_cursor {
                    Some(cursor) => request.cursor = Some(cursor),
                    None => return seen,
                }
            }
            panic!("list_targets while statuses change did not reach the last page");
        };
        let writer = async {
            // From the last device backwards, so that moves land both ahead
            // of the pager and behind it.
            for (n, udid) in udids.iter().rev().enumerate() {
                let status = if n % 2 == 0 {
                    TargetStatus::Downloading
                } else {
                    TargetStatus::Installed
                };
                move_target(store, "op-1", udid, status, at_minute(n as i64 + 1)).await;
                tokio::task::yield_now().await;
            }
        };
        let (seen, ()) = tokio::join!(pager, writer);

        assert!(
            duplicates(&seen).is_empty(),
            "list_targets while statuses change returned targets twice: {:?}",
            duplicates(&seen)
        );
        assert_eq!(
            seen, udids,
            "list_targets while statuses change must visit every target once, in device order"
        );
    }

    /// Checks that a cursor the store did not issue is rejected as invalid.
    pub async fn list_targets_rejects_invalid_cursor<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        insert_operation(store, operation("op-1")).await;
        create_device(store, device("dev-1")).await;
        assign_new(store, target("op-1", "dev-1")).await;
        let page = PageRequest {
            limit: 10,
            cursor: Some(INVALID_CURSOR.to_string()),
        };
        assert_invalid_cursor(
            store
                .list_targets("op-1", &TargetFilter::default(), &page)
                .await,
            "list_targets",
        );
    }

    /// Checks that `mark_cancelled` cancels a scheduled operation at the given
    /// instant, and that cancelling it again, or a finished one, is a conflict.
    pub async fn mark_cancelled_rejects_ended_operations<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        insert_operation(store, operation("op-1")).await;
        expect_ok(
            store.mark_cancelled("op-1", at_minute(5)).await,
            "mark_cancelled(op-1)",
        );
        let cancelled = read_operation(store, "op-1").await;
        assert_eq!(
            cancelled.state,
            OperationState::Cancelled,
            "mark_cancelled must set the cancelled state"
        );
        assert_eq!(
            cancelled.cancelled_at,
            Some(at_minute(5)),
            "mark_cancelled must record the instant it was given"
        );
        assert_conflict(
            store.mark_cancelled("op-1", at_minute(6)).await,
            "cancelling a cancelled operation",
        );
        assert_eq!(
            read_operation(store, "op-1").await.cancelled_at,
            Some(at_minute(5)),
            "a rejected cancel must keep the first cancelled_at"
        );

        insert_operation(store, operation("op-done")).await;
        create_device(store, device("dev-1")).await;
        assign_new(store, target("op-done", "dev-1")).await;
        move_target(
            store,
            "op-done",
            "dev-1",
            TargetStatus::Installed,
            at_minute(1),
        )
        .await;
        assert_conflict(
            store.mark_cancelled("op-done", at_minute(6)).await,
            "cancelling a finished operation",
        );
        let finished = read_operation(store, "op-done").await;
        assert_eq!(
            finished.state,
            OperationState::Finished,
            "a rejected cancel must leave a finished operation finished"
        );
        assert!(
            finished.cancelled_at.is_none(),
            "a rejected cancel must not set cancelled_at"
        );
    }

    /// Checks that targets of a cancelled operation still move the counts,
    /// but the operation stays cancelled and no state change is reported.
    pub async fn cancelled_operation_ignores_target_moves<S>(store: &S)
    where
        S: DeviceStore + OperationStore + ?Sized,
    {
        insert_operation(store, operation("op-1")).await;
        create_device(store, device("dev-1")).await;
        assign_new(store, target("op-1", "dev-1")).await;
        expect_ok(
            store.mark_cancelled("op-1", at_minute(1)).await,
            "mark_cancelled(op-1)",
        );
        let outcome = move_target(
            store,
            "op-1",
            "dev-1",
            TargetStatus::Cancelled,
            at_minute(2),
        )
        .await;
        assert!(
            outcome.state_changes.is_empty(),
            "a target move in a cancelled operation must report no state change, got {:?}",
            outcome.state_changes
        );
        let operation = read_operation(store, "op-1").await;
        assert_eq!(
            operation.state,
            OperationState::Cancelled,
            "a cancelled operation must stay cancelled when its targets become final"
        );
        assert_eq!(
            operation.counts.get(TargetStatus::Cancelled),
            1,
            "target moves in a cancelled operation must still move the counts"
        );
        assert_eq!(
            operation.counts.get(TargetStatus::Pending),
            0,
            "the moved target must leave the pending count"
        );
    }

    /// Checks that the first claim of a key records its operation, that later
    /// claims return that operation instead, and that keys are independent.
    pub async fn idempotency_key_claims_once<S: OperationStore + ?Sized>(store: &S) {
        let looked_up = expect_ok(store.lookup_idempotency_key("key-1").await, "lookup");
        assert!(
            looked_up.is_none(),
            "an unclaimed key must look up as None, got {looked_up:?}"
        );
        let first = expect_ok(
            store.claim_idempotency_key("key-1", "op-1", T0).await,
            "claim_idempotency_key",
        );
        assert!(
            first.is_none(),
            "the first claim of a key must return None, got {first:?}"
        );
        let second = expect_ok(
            store
                .claim_idempotency_key("key-1", "op-2", at_minute(1))
                .await,
            "claim_idempotency_key",
        );
        assert_eq!(
            second.as_deref(),
            Some("op-1"),
            "a second claim of a key must return the operation of the first"
        );
        assert_eq!(
            expect_ok(store.lookup_idempotency_key("key-1").await, "lookup").as_deref(),
            Some("op-1"),
            "a claimed key must keep the operation of its first claim"
        );
        let other = expect_ok(
            store
                .claim_idempotency_key("key-2", "op-2", at_minute(2))
                .await,
            "claim_idempotency_key",
        );
        assert!(
            other.is_none(),
            "a claim of another key must not see the first key's operation, got {other:?}"
        );
        assert_eq!(
            expect_ok(store.lookup_idempotency_key("key-2").await, "lookup").as_deref(),
            Some("op-2"),
            "each key must record its own operation"
        );
    }
}

/// Contract of [`EventStore`](crate::ports::EventStore).
pub mod events {
    use jiff::Timestamp;

    use crate::domain::{Event, EventType};
    use crate::ports::{EventFilter, EventStore, PageRequest};

    use super::fixtures::{T0, at_minute, event};
    use super::{INVALID_CURSOR, assert_invalid_cursor, collect_pages, expect_ok};

    /// Runs every event-store behaviour, each on a fresh store from `new_store`.
    pub async fn run_all<S, F, Fut>(new_store: F)
    where
        S: EventStore,
        F: Fn() -> Fut,
        Fut: Future<Output = S>,
    {
        append_is_idempotent_by_id(&new_store().await).await;
        list_events_in_time_order(&new_store().await).await;
        list_events_applies_filters(&new_store().await).await;
        list_events_hides_expired(&new_store().await).await;
        list_events_rejects_invalid_cursor(&new_store().await).await;
        purge_expired_deletes_and_counts(&new_store().await).await;
        list_device_events_across_operations(&new_store().await).await;
        list_device_events_hides_expired(&new_store().await).await;
        list_device_events_rejects_invalid_cursor(&new_store().await).await;
        list_events_stable_under_appends(&new_store().await).await;
    }

    async fn device_timeline<S: EventStore + ?Sized>(
        store: &S,
        device_id: &str,
        now: Timestamp,
        limit: usize,
    ) -> Vec<Event> {
        collect_pages("list_device_events", limit, |page| async move {
            store.list_device_events(device_id, now, &page).await
        })
        .await
    }

    async fn list_all<S: EventStore + ?Sized>(
        store: &S,
        operation_id: &str,
        filter: &EventFilter,
        now: Timestamp,
        limit: usize,
    ) -> Vec<Event> {
        collect_pages("list_events", limit, |page| async move {
            store.list_events(operation_id, filter, now, &page).await
        })
        .await
    }

    /// Checks that appending an event whose id is stored already adds no
    /// second copy.
    pub async fn append_is_idempotent_by_id<S: EventStore + ?Sized>(store: &S) {
        let first = event("op-1", Some("dev-1"), EventType::DeviceAdded, at_minute(1));
        let second = event("op-1", Some("dev-1"), EventType::CommandSent, at_minute(2));
        expect_ok(
            store.append(&[first.clone(), second.clone()]).await,
            "append",
        );
        expect_ok(
            store.append(std::slice::from_ref(&first)).await,
            "append again",
        );
        expect_ok(
            store.append(&[second.clone(), first.clone()]).await,
            "append again",
        );
        expect_ok(store.append(&[]).await, "append of no events");
        let listed = list_all(store, "op-1", &EventFilter::default(), T0, 10).await;
        assert_eq!(
            listed,
            vec![first, second],
            "appending the same events again must not duplicate them"
        );
    }

    /// Checks that an operation's events come back in time (ULID) order, each
    /// once, whatever order they were appended in, for several page sizes.
    pub async fn list_events_in_time_order<S: EventStore + ?Sized>(store: &S) {
        let written: Vec<Event> = (0..7)
            .map(|n| event("op-1", Some("dev-1"), EventType::CommandSent, at_minute(n)))
            .collect();
        let shuffled = [4, 0, 6, 2, 5, 1, 3];
        for index in shuffled {
            expect_ok(store.append(&[written[index].clone()]).await, "append");
        }
        let other = event(
            "op-other",
            Some("dev-1"),
            EventType::CommandSent,
            at_minute(3),
        );
        expect_ok(store.append(&[other]).await, "append");

        for limit in [1, 2, 3, 7, 50] {
            let listed = list_all(store, "op-1", &EventFilter::default(), T0, limit).await;
            assert_eq!(
                listed, written,
                "list_events with page limit {limit} must return the operation's events once each, in time order"
            );
        }
    }

    /// Checks the device and type filters, alone and together, over several pages.
    pub async fn list_events_applies_filters<S: EventStore + ?Sized>(store: &S) {
        let rows = [
            (Some("dev-1"), EventType::DeviceAdded, 1),
            (Some("dev-2"), EventType::DeviceAdded, 2),
            (Some("dev-1"), EventType::CommandSent, 3),
            (None, EventType::OperationStarted, 4),
            (Some("dev-2"), EventType::CommandSent, 5),
            (Some("dev-1"), EventType::CommandSent, 6),
        ];
        let written: Vec<Event> = rows
            .iter()
            .map(|(device, kind, minute)| event("op-1", *device, *kind, at_minute(*minute)))
            .collect();
        expect_ok(store.append(&written).await, "append");
        let pick = |indexes: &[usize]| -> Vec<Event> {
            indexes.iter().map(|i| written[*i].clone()).collect()
        };

        let cases = [
            (
                "device_id",
                EventFilter {
                    device_id: Some("dev-1".to_string()),
                    event_type: None,
                },
                pick(&[0, 2, 5]),
            ),
            (
                "event_type",
                EventFilter {
                    device_id: None,
                    event_type: Some(EventType::CommandSent),
                },
                pick(&[2, 4, 5]),
            ),
            (
                "device_id and event_type together",
                EventFilter {
                    device_id: Some("dev-2".to_string()),
                    event_type: Some(EventType::CommandSent),
                },
                pick(&[4]),
            ),
            (
                "event_type matching nothing",
                EventFilter {
                    device_id: None,
                    event_type: Some(EventType::Failed),
                },
                Vec::new(),
            ),
        ];
        for (label, filter, expected) in cases {
            let listed = list_all(store, "op-1", &filter, T0, 2).await;
            assert_eq!(
                listed, expected,
                "list_events filtered by {label} must return exactly the matching events in time order"
            );
        }
    }

    /// Checks that events whose `expires_at` is at or before `now` are left
    /// out even though nothing purged them.
    pub async fn list_events_hides_expired<S: EventStore + ?Sized>(store: &S) {
        let expiring = |minute: i64| Event {
            expires_at: at_minute(minute),
            ..event("op-1", Some("dev-1"), EventType::CommandSent, T0)
        };
        let written = vec![expiring(10), expiring(20), expiring(30)];
        expect_ok(store.append(&written).await, "append");

        let cases = [
            ("before any expiry", at_minute(5), written.clone()),
            ("at an expiry", at_minute(20), vec![written[2].clone()]),
            ("after every expiry", at_minute(30), Vec::new()),
        ];
        for (label, now, expected) in cases {
            let listed = list_all(store, "op-1", &EventFilter::default(), now, 10).await;
            assert_eq!(
                listed, expected,
                "list_events {label} must leave out events whose expires_at <= now"
            );
        }
    }

    /// Checks that a cursor the store did not issue is rejected as invalid.
    pub async fn list_events_rejects_invalid_cursor<S: EventStore + ?Sized>(store: &S) {
        let written = event("op-1", None, EventType::OperationCreated, T0);
        expect_ok(store.append(&[written]).await, "append");
        let page = PageRequest {
            limit: 10,
            cursor: Some(INVALID_CURSOR.to_string()),
        };
        assert_invalid_cursor(
            store
                .list_events("op-1", &EventFilter::default(), T0, &page)
                .await,
            "list_events",
        );
    }

    /// Checks that `purge_expired` deletes exactly the events with
    /// `expires_at <= now`, across operations, and returns how many it deleted.
    pub async fn purge_expired_deletes_and_counts<S: EventStore + ?Sized>(store: &S) {
        let expiring = |operation_id: &str, minute: i64| Event {
            expires_at: at_minute(minute),
            ..event(operation_id, None, EventType::OperationCreated, T0)
        };
        let kept = expiring("op-1", 30);
        let written = vec![
            expiring("op-1", 10),
            expiring("op-2", 15),
            expiring("op-1", 20),
            kept.clone(),
        ];
        expect_ok(store.append(&written).await, "append");

        let purged = expect_ok(store.purge_expired(at_minute(20)).await, "purge_expired");
        assert_eq!(
            purged, 3,
            "purge_expired must delete and count every event with expires_at <= now"
        );
        let remaining = list_all(store, "op-1", &EventFilter::default(), T0, 10).await;
        assert_eq!(
            remaining,
            vec![kept],
            "purged events must be gone even for a read at an earlier now"
        );
        let other = list_all(store, "op-2", &EventFilter::default(), T0, 10).await;
        assert!(
            other.is_empty(),
            "purge_expired must purge every operation's events, got {other:?}"
        );
        let again = expect_ok(store.purge_expired(at_minute(20)).await, "purge_expired");
        assert_eq!(
            again, 0,
            "a second purge at the same now must delete nothing"
        );
    }

    /// Checks that a device's events from every operation come back in
    /// time order, each once, without other devices' events or events
    /// that name no device, for several page sizes.
    pub async fn list_device_events_across_operations<S: EventStore + ?Sized>(store: &S) {
        let rows = [
            ("op-1", Some("dev-1"), EventType::DeviceAdded, 1),
            ("op-1", Some("dev-2"), EventType::DeviceAdded, 2),
            ("op-1", None, EventType::OperationStarted, 3),
            ("op-2", Some("dev-1"), EventType::DeviceMigration, 4),
            ("op-1", Some("dev-1"), EventType::CommandSent, 5),
            ("op-2", Some("dev-1"), EventType::DeclarationsSynced, 6),
            ("op-3", Some("dev-3"), EventType::CommandSent, 7),
            ("op-2", Some("dev-1"), EventType::InstallationCompleted, 8),
        ];
        let written: Vec<Event> = rows
            .iter()
            .map(|(operation, device, kind, minute)| {
                event(operation, *device, *kind, at_minute(*minute))
            })
            .collect();
        // Appended out of order, so that the order read is the store's.
        let mut shuffled = written.clone();
        shuffled.reverse();
        expect_ok(store.append(&shuffled).await, "append");
        let expected: Vec<Event> = [0, 3, 4, 5, 7]
            .iter()
            .map(|i| written[*i].clone())
            .collect();

        for limit in [1, 2, 3, 50] {
            let listed = device_timeline(store, "dev-1", T0, limit).await;
            assert_eq!(
                listed, expected,
                "list_device_events with page limit {limit} must return the device's events of every operation once each, in time order"
            );
        }
        let unknown = device_timeline(store, "dev-unknown", T0, 10).await;
        assert!(
            unknown.is_empty(),
            "list_device_events of a device without events must be empty, got {unknown:?}"
        );
    }

    /// Checks that the timeline leaves out events whose `expires_at` is at
    /// or before `now` although nothing purged them.
    pub async fn list_device_events_hides_expired<S: EventStore + ?Sized>(store: &S) {
        let expiring = |operation_id: &str, minute: i64| Event {
            expires_at: at_minute(minute),
            ..event(operation_id, Some("dev-1"), EventType::CommandSent, T0)
        };
        let written = vec![
            expiring("op-1", 10),
            expiring("op-2", 20),
            expiring("op-1", 30),
        ];
        expect_ok(store.append(&written).await, "append");

        let cases = [
            ("before any expiry", at_minute(5), written.clone()),
            ("at an expiry", at_minute(20), vec![written[2].clone()]),
            ("after every expiry", at_minute(30), Vec::new()),
        ];
        for (label, now, expected) in cases {
            let listed = device_timeline(store, "dev-1", now, 1).await;
            assert_eq!(
                listed, expected,
                "list_device_events {label} must leave out events whose expires_at <= now"
            );
        }
    }

    /// Checks that a cursor the store did not issue is rejected as invalid.
    pub async fn list_device_events_rejects_invalid_cursor<S: EventStore + ?Sized>(store: &S) {
        let written = vec![
            event("op-1", Some("dev-1"), EventType::DeviceAdded, at_minute(1)),
            event("op-1", Some("dev-1"), EventType::CommandSent, at_minute(2)),
        ];
        expect_ok(store.append(&written).await, "append");
        let page = PageRequest {
            limit: 10,
            cursor: Some(INVALID_CURSOR.to_string()),
        };
        assert_invalid_cursor(
            store.list_device_events("dev-1", T0, &page).await,
            "list_device_events",
        );
    }

    /// Checks that paging through an operation's events while another
    /// writer appends to it visits every event written before the first
    /// page exactly once, in time order, and no appended event twice.
    pub async fn list_events_stable_under_appends<S: EventStore + ?Sized>(store: &S) {
        let before: Vec<Event> = (0..30)
            .map(|n| {
                let device = format!("dev-{}", n % 4);
                event("op-1", Some(&device), EventType::CommandSent, at_minute(n))
            })
            .collect();
        expect_ok(store.append(&before).await, "append");

        let pager = async {
            let mut seen: Vec<Event> = Vec::new();
            let mut request = PageRequest::first(4);
            for _ in 0..super::MAX_PAGES {
                let page = expect_ok(
                    store
                        .list_events("op-1", &EventFilter::default(), T0, &request)
                        .await,
                    "list_events while appending",
                );
                seen.extend(page.items);
                tokio::task::yield_now().await;
                match page.next_cursor {
                    Some(cursor) => request.cursor = Some(cursor),
                    None => return seen,
                }
            }
            panic!("list_events while appending did not reach the last page");
        };
        let writer = async {
            for n in 0..20 {
                let device = format!("dev-{}", n % 4);
                let appended = event(
                    "op-1",
                    Some(&device),
                    EventType::DeclarationsSynced,
                    at_minute(100 + n),
                );
                expect_ok(store.append(&[appended]).await, "append while paging");
                tokio::task::yield_now().await;
            }
        };
        let (seen, ()) = tokio::join!(pager, writer);

        let ids: Vec<String> = seen.iter().map(|e| e.id.clone()).collect();
        assert!(
            super::duplicates(&ids).is_empty(),
            "list_events while appending returned events twice: {:?}",
            super::duplicates(&ids)
        );
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(
            ids, sorted,
            "list_events while appending must stay in time order"
        );
        for written in &before {
            assert!(
                ids.contains(&written.id),
                "list_events while appending skipped event {} written before paging began",
                written.id
            );
        }
    }
}

/// Contract of [`Scheduler`](crate::ports::Scheduler) and
/// [`ScheduleStore`](crate::ports::ScheduleStore).
pub mod schedules {
    use crate::ports::{Job, Schedule, ScheduleStore, Scheduler};

    use super::fixtures::at_minute;
    use super::{expect_ok, strings};

    /// Runs every scheduler behaviour, each on a fresh store from `new_store`.
    pub async fn run_all<S, F, Fut>(new_store: F)
    where
        S: Scheduler + ScheduleStore,
        F: Fn() -> Fut,
        Fut: Future<Output = S>,
    {
        schedule_replaces_by_id(&new_store().await).await;
        due_returns_earliest_first(&new_store().await).await;
        remove_is_idempotent(&new_store().await).await;
        cancel_removes_only_that_operation(&new_store().await).await;
    }

    /// Returns a deadline schedule for `operation_id` in `zone`, due at `minute`.
    pub fn deadline(operation_id: &str, zone: &str, minute: i64) -> Schedule {
        Schedule {
            id: format!("deadline:{operation_id}:{zone}"),
            due_at: at_minute(minute),
            job: Job::MdmDeadline {
                operation_id: operation_id.to_string(),
                time_zone: zone.to_string(),
            },
        }
    }

    /// Returns an expiry schedule for `operation_id`, due at `minute`.
    pub fn expiry(operation_id: &str, minute: i64) -> Schedule {
        Schedule {
            id: format!("expiry:{operation_id}"),
            due_at: at_minute(minute),
            job: Job::UpdateExpiry {
                operation_id: operation_id.to_string(),
            },
        }
    }

    async fn all_sorted<S: ScheduleStore + ?Sized>(store: &S) -> Vec<Schedule> {
        let mut all = expect_ok(store.all().await, "all");
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    async fn put<S: Scheduler + ?Sized>(store: &S, schedule: &Schedule) {
        expect_ok(
            store.schedule(schedule).await,
            &format!("schedule({})", schedule.id),
        );
    }

    /// Checks that scheduling an id again replaces its due time and job.
    pub async fn schedule_replaces_by_id<S>(store: &S)
    where
        S: Scheduler + ScheduleStore + ?Sized,
    {
        let first = deadline("op-1", "Europe/Berlin", 30);
        let other = expiry("op-1", 60);
        put(store, &first).await;
        put(store, &other).await;
        let replacement = Schedule {
            due_at: at_minute(10),
            job: Job::PurgeEvents,
            ..first.clone()
        };
        put(store, &replacement).await;
        assert_eq!(
            all_sorted(store).await,
            vec![replacement, other],
            "scheduling an existing id must replace that schedule and keep the others"
        );
    }

    /// Checks that `due` returns the schedules due at `now` (inclusive),
    /// earliest first, at most `limit` of them.
    pub async fn due_returns_earliest_first<S>(store: &S)
    where
        S: Scheduler + ScheduleStore + ?Sized,
    {
        let written = [
            deadline("op-1", "Europe/Berlin", 30),
            deadline("op-1", "America/New_York", 10),
            expiry("op-2", 20),
            expiry("op-3", 40),
        ];
        for schedule in &written {
            put(store, schedule).await;
        }
        let ids = |schedules: Vec<Schedule>| -> Vec<String> {
            schedules.into_iter().map(|s| s.id).collect()
        };

        let due = expect_ok(store.due(at_minute(30), 10).await, "due");
        let first = due.first().cloned();
        assert_eq!(
            ids(due),
            strings(&[
                "deadline:op-1:America/New_York",
                "expiry:op-2",
                "deadline:op-1:Europe/Berlin"
            ]),
            "due must return every schedule due at or before now, earliest first"
        );
        assert_eq!(
            first.as_ref(),
            Some(&written[1]),
            "due must return schedules as written"
        );
        let limited = expect_ok(store.due(at_minute(30), 2).await, "due");
        assert_eq!(
            ids(limited),
            strings(&["deadline:op-1:America/New_York", "expiry:op-2"]),
            "due must return at most limit schedules, the earliest ones"
        );
        let none = expect_ok(store.due(at_minute(5), 10).await, "due");
        assert!(
            none.is_empty(),
            "due before the earliest schedule must return nothing, got {none:?}"
        );
    }

    /// Checks that `remove` deletes a schedule, and that removing it again or
    /// removing an unknown id succeeds.
    pub async fn remove_is_idempotent<S>(store: &S)
    where
        S: Scheduler + ScheduleStore + ?Sized,
    {
        let gone = expiry("op-1", 10);
        let kept = expiry("op-2", 20);
        put(store, &gone).await;
        put(store, &kept).await;
        expect_ok(store.remove(&gone.id).await, "remove");
        assert_eq!(
            all_sorted(store).await,
            vec![kept.clone()],
            "remove must delete exactly the named schedule"
        );
        expect_ok(store.remove(&gone.id).await, "remove of a removed schedule");
        expect_ok(
            store.remove("never-scheduled").await,
            "remove of an unknown id",
        );
        assert_eq!(
            all_sorted(store).await,
            vec![kept],
            "removing absent schedules must change nothing"
        );
    }

    /// Checks that `cancel_operation_schedules` removes every schedule of that
    /// operation and no other.
    pub async fn cancel_removes_only_that_operation<S>(store: &S)
    where
        S: Scheduler + ScheduleStore + ?Sized,
    {
        let purge = Schedule {
            id: "purge-events".to_string(),
            due_at: at_minute(5),
            job: Job::PurgeEvents,
        };
        let written = [
            deadline("op-1", "Europe/Berlin", 10),
            deadline("op-1", "America/New_York", 20),
            expiry("op-1", 30),
            expiry("op-2", 40),
            purge.clone(),
        ];
        for schedule in &written {
            put(store, schedule).await;
        }
        expect_ok(
            store.cancel_operation_schedules("op-1").await,
            "cancel_operation_schedules",
        );
        assert_eq!(
            all_sorted(store).await,
            vec![expiry("op-2", 40), purge],
            "cancel_operation_schedules must remove every schedule of the operation and keep the rest"
        );
        expect_ok(
            store.cancel_operation_schedules("op-unknown").await,
            "cancel_operation_schedules of an operation without schedules",
        );
    }
}

/// Contract of [`BlobStore`](crate::ports::BlobStore).
pub mod blobs {
    use jiff::SignedDuration;

    use crate::ports::{BlobStore, MAX_DOWNLOAD_URL_EXPIRY, StoreError, StoreResult};

    use super::expect_ok;

    /// Runs every blob-store behaviour, each on a fresh store from `new_store`.
    pub async fn run_all<S, F, Fut>(new_store: F)
    where
        S: BlobStore,
        F: Fn() -> Fut,
        Fut: Future<Output = S>,
    {
        get_returns_stored_body(&new_store().await).await;
        put_replaces_body(&new_store().await).await;
        delete_is_idempotent(&new_store().await).await;
        keys_sharing_prefix_stay_apart(&new_store().await).await;
        invalid_keys_are_rejected(&new_store().await).await;
        download_url_checks_expiry(&new_store().await).await;
        put_file_stores_file_contents(&new_store().await).await;
    }

    /// Keys that break the rules of [`crate::ports::validate_blob_key`],
    /// each with the rule it breaks.
    pub fn invalid_keys() -> Vec<(&'static str, String)> {
        vec![
            ("empty", String::new()),
            ("leading slash", "/exports/a.csv".to_string()),
            ("trailing slash", "exports/".to_string()),
            ("empty segment", "exports//a.csv".to_string()),
            ("parent segment", "exports/../secrets".to_string()),
            ("current segment", "exports/./a.csv".to_string()),
            ("space", "exports/a b.csv".to_string()),
            ("newline", "exports/a\nb.csv".to_string()),
            ("backslash", "exports\\a.csv".to_string()),
            ("non-ASCII", "exports/bericht-\u{e4}.csv".to_string()),
            ("query character", "exports/a.csv?x=1".to_string()),
            ("1025 bytes", "a".repeat(1025)),
        ]
    }

    fn assert_invalid_input<T: std::fmt::Debug>(result: StoreResult<T>, what: &str) {
        assert!(
            matches!(result, Err(StoreError::InvalidInput(_))),
            "{what} must fail with StoreError::InvalidInput, got {result:?}"
        );
    }

    async fn get<S: BlobStore + ?Sized>(store: &S, key: &str) -> Option<Vec<u8>> {
        expect_ok(store.get(key).await, &format!("get({key})"))
    }

    async fn put<S: BlobStore + ?Sized>(store: &S, key: &str, body: &[u8]) {
        expect_ok(
            store.put(key, "text/csv", body.to_vec()).await,
            &format!("put({key})"),
        );
    }

    /// Checks that `get` returns `None` for a missing key and the exact
    /// bytes for stored ones, including an empty body and every byte value.
    pub async fn get_returns_stored_body<S: BlobStore + ?Sized>(store: &S) {
        assert_eq!(
            get(store, "exports/missing.csv").await,
            None,
            "get of a key never put must return None"
        );
        let csv = b"udid,status\nA1,installed\n".to_vec();
        let binary: Vec<u8> = (0..=255).collect();
        put(store, "exports/op-1/targets.csv", &csv).await;
        put(store, "exports/op-1/raw.bin", &binary).await;
        put(store, "exports/op-1/empty.csv", b"").await;

        assert_eq!(get(store, "exports/op-1/targets.csv").await, Some(csv));
        assert_eq!(
            get(store, "exports/op-1/raw.bin").await,
            Some(binary),
            "get must return every byte value unchanged"
        );
        assert_eq!(
            get(store, "exports/op-1/empty.csv").await,
            Some(Vec::new()),
            "an empty body is stored, not missing"
        );
    }

    /// Checks that a second put under a key replaces the body.
    pub async fn put_replaces_body<S: BlobStore + ?Sized>(store: &S) {
        put(store, "exports/a.csv", b"first, longer body").await;
        put(store, "exports/a.csv", b"second").await;
        assert_eq!(
            get(store, "exports/a.csv").await,
            Some(b"second".to_vec()),
            "put must replace the whole body, leaving nothing of the first"
        );
    }

    /// Checks that `delete` removes one key, and that deleting it again or
    /// deleting a key never put succeeds.
    pub async fn delete_is_idempotent<S: BlobStore + ?Sized>(store: &S) {
        put(store, "exports/gone.csv", b"x").await;
        put(store, "exports/kept.csv", b"y").await;
        expect_ok(store.delete("exports/gone.csv").await, "delete");

        assert_eq!(
            get(store, "exports/gone.csv").await,
            None,
            "delete must remove the body"
        );
        assert_eq!(
            get(store, "exports/kept.csv").await,
            Some(b"y".to_vec()),
            "delete must keep other keys"
        );
        expect_ok(
            store.delete("exports/gone.csv").await,
            "delete of a deleted key",
        );
        expect_ok(
            store.delete("exports/never-put.csv").await,
            "delete of a key never put",
        );
    }

    /// Checks that keys where one is a prefix of another hold separate bodies.
    pub async fn keys_sharing_prefix_stay_apart<S: BlobStore + ?Sized>(store: &S) {
        let keys = [
            "exports/op-1/a.csv",
            "exports/op-1/a.csv.bak",
            "exports/op-10/a.csv",
            "exports/op-1/a-csv",
        ];
        for key in keys {
            put(store, key, key.as_bytes()).await;
        }
        for key in keys {
            assert_eq!(
                get(store, key).await,
                Some(key.as_bytes().to_vec()),
                "key {key} must keep its own body"
            );
        }
    }

    /// Checks that every method rejects keys that break the key rules.
    pub async fn invalid_keys_are_rejected<S: BlobStore + ?Sized>(store: &S) {
        for (rule, key) in invalid_keys() {
            assert_invalid_input(
                store.put(&key, "text/csv", b"x".to_vec()).await,
                &format!("put with a key with {rule} ({key:?})"),
            );
            assert_invalid_input(
                store.get(&key).await,
                &format!("get with a key with {rule} ({key:?})"),
            );
            assert_invalid_input(
                store.delete(&key).await,
                &format!("delete with a key with {rule} ({key:?})"),
            );
            assert_invalid_input(
                store.download_url(&key, SignedDuration::from_mins(5)).await,
                &format!("download_url with a key with {rule} ({key:?})"),
            );
        }
    }

    /// Checks that `put_file` stores a file's exact bytes, replaces an earlier
    /// body, leaves the file in place and rejects invalid keys and a missing
    /// file. The file is 3 MiB so that it spans many read chunks.
    pub async fn put_file_stores_file_contents<S: BlobStore + ?Sized>(store: &S) {
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "osdeploy-contract-put-file-{}-{sequence}.csv",
            std::process::id()
        ));
        let contents: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        expect_ok(
            std::fs::write(&path, &contents).map_err(|e| StoreError::backend("write", e)),
            "write the source file",
        );
        let key = "exports/op-1/large.csv";
        put(store, key, b"an earlier body").await;

        expect_ok(
            store.put_file(key, "text/csv", &path).await,
            "put_file of a 3 MiB file",
        );
        let stored = get(store, key).await;
        assert_eq!(
            stored.as_ref().map(Vec::len),
            Some(contents.len()),
            "put_file must store every byte of the file"
        );
        assert!(
            stored == Some(contents.clone()),
            "put_file must store the file's bytes unchanged"
        );
        assert!(
            path.is_file(),
            "put_file must leave the source file in place"
        );
        assert_invalid_input(
            store.put_file("exports/../a.csv", "text/csv", &path).await,
            "put_file with a key with a parent segment",
        );
        let _ = std::fs::remove_file(&path);
        let missing = store
            .put_file("exports/missing.csv", "text/csv", &path)
            .await;
        assert!(
            missing.is_err(),
            "put_file of a missing file must fail, got {missing:?}"
        );
        assert_eq!(
            get(store, "exports/missing.csv").await,
            None,
            "a failed put_file must store nothing"
        );
    }

    /// Checks that `download_url` accepts expiries from one second to
    /// [`MAX_DOWNLOAD_URL_EXPIRY`] and names the key in the URL, and that it
    /// rejects zero, negative and longer expiries.
    pub async fn download_url_checks_expiry<S: BlobStore + ?Sized>(store: &S) {
        let key = "exports/op-1/targets.csv";
        put(store, key, b"x").await;
        for expires_in in [SignedDuration::from_secs(1), MAX_DOWNLOAD_URL_EXPIRY] {
            let url = expect_ok(
                store.download_url(key, expires_in).await,
                &format!("download_url for {expires_in:#}"),
            );
            assert!(
                url.contains(key),
                "the download URL {url:?} must name the key {key}"
            );
        }
        let too_long = MAX_DOWNLOAD_URL_EXPIRY + SignedDuration::from_secs(1);
        for (case, expires_in) in [
            ("zero", SignedDuration::ZERO),
            ("negative", SignedDuration::from_secs(-60)),
            ("7 days and 1 second", too_long),
        ] {
            assert_invalid_input(
                store.download_url(key, expires_in).await,
                &format!("download_url with a {case} expiry"),
            );
        }
    }
}

/// Contract of [`CatalogStore`](crate::ports::CatalogStore).
pub mod catalog {
    use crate::ports::CatalogStore;

    use super::expect_ok;
    use super::fixtures::at_minute;

    /// Runs every catalog-store behaviour, each on a fresh store from `new_store`.
    pub async fn run_all<S, F, Fut>(new_store: F)
    where
        S: CatalogStore,
        F: Fn() -> Fut,
        Fut: Future<Output = S>,
    {
        latest_catalog_returns_last_put(&new_store().await).await;
    }

    /// Checks that an empty store has no catalog, and that after puts the
    /// latest is the last one put.
    pub async fn latest_catalog_returns_last_put<S: CatalogStore + ?Sized>(store: &S) {
        let none = expect_ok(store.latest_catalog().await, "latest_catalog");
        assert!(
            none.is_none(),
            "an empty store must have no catalog, got {none:?}"
        );
        let first = br#"{"PublicAssetSets":{"macOS":[]}}"#.to_vec();
        let second = br#"{"PublicAssetSets":{"macOS":[{"ProductVersion":"26.2"}]}}"#.to_vec();
        expect_ok(store.put_catalog(&first, at_minute(1)).await, "put_catalog");
        assert_eq!(
            expect_ok(store.latest_catalog().await, "latest_catalog"),
            Some(first),
            "latest_catalog must return the catalog that was put"
        );
        expect_ok(
            store.put_catalog(&second, at_minute(2)).await,
            "put_catalog",
        );
        assert_eq!(
            expect_ok(store.latest_catalog().await, "latest_catalog"),
            Some(second),
            "latest_catalog must return the last catalog put"
        );
    }
}
