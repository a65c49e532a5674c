//! Use cases: what the admin API, the device endpoints and the scheduler
//! ask of the domain, expressed over the ports.
//!
//! Every use case reads what it needs, decides with the pure domain code,
//! and writes the result in one store call where the ports allow it. Reads
//! and decisions are repeated when a conditional write reports a conflict.

pub mod catalog_visibility;
pub mod checkin;
pub mod connect;
pub mod ddm;
pub mod errors;
pub mod exports;
pub mod import;
pub mod inventory;
pub mod jobs;
pub mod mdm;
pub mod operations;
pub mod progress;
pub mod readiness;
pub mod reminders;
pub mod retry_settings;
pub mod summary;
pub mod sweep;
pub mod timeline;
pub mod user_initiated;
pub mod views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use jiff::{SignedDuration, Timestamp};

use crate::catalog::Catalog;
use crate::domain::{Actor, Clock, EVENT_RETENTION, Event, EventType, IdGenerator, RetryPolicies};
use crate::ports::{
    BlobStore, CatalogStore, DeviceStore, EventPublisher, EventStore, GroupStore, OperationStore,
    Push, ScheduleStore, Scheduler,
};

pub use errors::{FieldError, ServiceError, ServiceResult};

/// Default of [`ServiceConfig::stall_push_after`]: 6 hours. An estimate, not
/// measured, of the time a large macOS download takes on a slow link.
pub const DEFAULT_STALL_PUSH_AFTER: SignedDuration = SignedDuration::from_hours(6);

/// Default of [`ServiceConfig::stall_fail_after`]: 3 days, so that a laptop
/// closed over a weekend is woken, not failed.
pub const DEFAULT_STALL_FAIL_AFTER: SignedDuration = SignedDuration::from_hours(72);

/// Default of [`ServiceConfig::inventory_refresh_every`]: one day, one
/// query and one write per idle device a day.
pub const DEFAULT_INVENTORY_REFRESH_EVERY: SignedDuration = SignedDuration::from_hours(24);

/// Deployment-wide settings the use cases read.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// IANA zone for MDM Macs whose zone neither inventory nor a group gives.
    pub default_time_zone: String,
    /// Attempts and backoff per failure reason.
    pub retry_policy: RetryPolicies,
    /// Time without a report after which the sweep pushes a target's device.
    pub stall_push_after: SignedDuration,
    /// Time without a report after which the sweep counts a failed attempt
    /// with reason `stalled`.
    pub stall_fail_after: SignedDuration,
    /// Page used by the enforcement declaration's DetailsURL, if any.
    pub details_url: Option<String>,
    /// How long a device may go without checking in before the preview's
    /// readiness check and the operation's device list flag it as silent.
    pub silent_after: jiff::SignedDuration,
    /// Lifetime of an export's download URL, counted from each
    /// `GET /exports/{id}`; at most [`crate::ports::MAX_DOWNLOAD_URL_EXPIRY`].
    pub export_link_expiry: jiff::SignedDuration,
    /// How often an idle MDM device in no operation is asked for its
    /// inventory, so that an update its user installed is seen.
    pub inventory_refresh_every: SignedDuration,
    /// Source of the catalog that [`crate::ports::Job::RefreshCatalog`] downloads.
    pub catalog_source: crate::adapters::catalog_source::CatalogSource,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            default_time_zone: crate::domain::deadline::DEFAULT_TIME_ZONE.to_string(),
            retry_policy: RetryPolicies::default(),
            stall_push_after: DEFAULT_STALL_PUSH_AFTER,
            stall_fail_after: DEFAULT_STALL_FAIL_AFTER,
            details_url: None,
            silent_after: readiness::DEFAULT_SILENT_AFTER,
            export_link_expiry: exports::DEFAULT_LINK_EXPIRY,
            inventory_refresh_every: DEFAULT_INVENTORY_REFRESH_EVERY,
            catalog_source: Default::default(),
        }
    }
}

/// The ports a deployment provides.
#[derive(Clone)]
pub struct Ports {
    pub devices: Arc<dyn DeviceStore>,
    pub groups: Arc<dyn GroupStore>,
    pub operations: Arc<dyn OperationStore>,
    pub events: Arc<dyn EventStore>,
    pub scheduler: Arc<dyn Scheduler>,
    /// Only the local loop reads schedules; AWS fires them itself.
    pub schedules: Option<Arc<dyn ScheduleStore>>,
    pub catalogs: Arc<dyn CatalogStore>,
    pub push: Arc<dyn Push>,
    /// Export files and their job records.
    pub blobs: Arc<dyn BlobStore>,
    /// Receives every event after it is stored, best effort: see
    /// [`crate::adapters::publishing`].
    pub publisher: Arc<dyn EventPublisher>,
}

impl Ports {
    /// Serves every store port from one adapter that implements them all.
    pub fn from_store<S>(
        store: Arc<S>,
        push: Arc<dyn Push>,
        blobs: Arc<dyn BlobStore>,
        publisher: Arc<dyn EventPublisher>,
    ) -> Ports
    where
        S: DeviceStore
            + GroupStore
            + OperationStore
            + EventStore
            + Scheduler
            + ScheduleStore
            + CatalogStore
            + 'static,
    {
        Ports {
            devices: store.clone(),
            groups: store.clone(),
            operations: store.clone(),
            events: store.clone(),
            scheduler: store.clone(),
            schedules: Some(store.clone()),
            catalogs: store,
            push,
            blobs,
            publisher,
        }
    }
}

/// The use cases with their ports, clock, ids, catalog and settings.
pub struct Services {
    pub ports: Ports,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
    pub config: ServiceConfig,
    catalog: RwLock<Arc<Catalog>>,
    /// Last-seen times not yet written, flushed in batches.
    last_seen: Mutex<HashMap<String, Timestamp>>,
    /// Catalog visibility per operation id; install settings never change.
    catalog_visibility: Mutex<HashMap<String, catalog_visibility::CatalogVisibility>>,
}

impl Services {
    /// Builds the services. The device, operation and event ports are
    /// wrapped so that every stored event is also sent to `ports.publisher`,
    /// so pass ports taken from another `Services` only if publishing twice
    /// is acceptable.
    pub fn new(
        mut ports: Ports,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        catalog: Arc<Catalog>,
        config: ServiceConfig,
    ) -> Self {
        let publishing = crate::adapters::publishing::publish_stored_events(
            ports.devices,
            ports.operations,
            ports.events,
            ports.publisher.clone(),
        );
        ports.devices = publishing.devices;
        ports.operations = publishing.operations;
        ports.events = publishing.events;
        Services {
            ports,
            clock,
            ids,
            config,
            catalog: RwLock::new(catalog),
            last_seen: Mutex::new(HashMap::new()),
            catalog_visibility: Mutex::new(HashMap::new()),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Returns the catalog in use.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the catalog in use (after an import).
    pub fn set_catalog(&self, catalog: Arc<Catalog>) {
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = catalog;
    }

    /// Creates an event stamped now, kept for the retention period.
    pub fn event(
        &self,
        operation_id: &str,
        device_id: Option<&str>,
        event_type: EventType,
        actor: Actor,
        details: serde_json::Value,
    ) -> Event {
        let at = self.now();
        Event {
            id: self.ids.ulid(at),
            operation_id: operation_id.to_string(),
            device_id: device_id.map(str::to_string),
            event_type,
            details,
            actor,
            at,
            expires_at: at + EVENT_RETENTION,
        }
    }

    /// Notes that a device was seen; written later by [`Services::flush_last_seen`].
    pub fn note_seen(&self, udid: &str) {
        let now = self.now();
        self.last_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(udid.to_string(), now);
    }

    /// Writes the buffered last-seen times in one batch.
    pub async fn flush_last_seen(&self) -> ServiceResult<usize> {
        let batch: Vec<(String, Timestamp)> = {
            let mut pending = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        self.ports.devices.touch_devices(&batch).await?;
        Ok(batch.len())
    }

    /// Records `operation_started` and `operation_completed` events for the
    /// lifecycle changes a transaction reported.
    pub async fn record_state_changes(
        &self,
        changes: &[(
            String,
            crate::domain::OperationState,
            crate::domain::OperationState,
        )],
    ) -> ServiceResult<()> {
        use crate::domain::OperationState::*;
        let mut events = Vec::new();
        for (operation_id, before, after) in changes {
            let event_type = match after {
                InProgress if *before == Scheduled => EventType::OperationStarted,
                Finished => EventType::OperationCompleted,
                _ => continue,
            };
            events.push(self.event(
                operation_id,
                None,
                event_type,
                Actor::System,
                serde_json::json!({ "from": before, "to": after }),
            ));
            tracing::info!(operation_id = %operation_id, state = %after, "operation state changed");
        }
        self.ports.events.append(&events).await?;
        Ok(())
    }
}
