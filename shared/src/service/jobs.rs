//! Scheduled work: MDM enforcement deadlines per time zone, update expiry,
//! event purges. The local loop and the AWS scheduler both call [`Services::run_job`].

use std::sync::Arc;

use serde_json::json;

use super::mdm::{MdmInstruction, command_for_target};
use super::{ServiceResult, Services};
use crate::adapters::catalog_source::{CatalogFetchError, fetch_catalog};
use crate::catalog::{Catalog, CatalogError, ModelIndex};
use crate::domain::{Actor, EventType, Signal, Target, TargetStatus};
use crate::ports::{
    Change, CommandWrite, DeviceWrite, Job, PageRequest, StoreError, TargetFilter, TargetWrite,
};

/// Failure of [`Services::refresh_catalog`]; the catalog in use is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum CatalogRefreshError {
    #[error(transparent)]
    Fetch(#[from] CatalogFetchError),
    #[error("catalog downloaded from {url} is invalid; the current catalog stays in use: {source}")]
    Invalid {
        url: String,
        #[source]
        source: CatalogError,
    },
    #[error("could not store the downloaded catalog; the current catalog stays in use")]
    Store(#[source] StoreError),
}

/// Summary of one job run, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobReport {
    /// Targets the job changed.
    pub targets: usize,
    /// Events purged.
    pub purged: u64,
    /// Sweep: targets in Retry whose next attempt the sweep started.
    pub retried: usize,
    /// Sweep: stalled targets whose device the sweep pushed.
    pub pushed: usize,
    /// Sweep: stalled targets the sweep counted as a failed attempt.
    pub stalled: usize,
}

impl Services {
    pub async fn run_job(&self, job: &Job) -> ServiceResult<JobReport> {
        match job {
            Job::MdmDeadline {
                operation_id,
                time_zone,
            } => self.run_mdm_deadline(operation_id, time_zone).await,
            Job::UpdateExpiry { operation_id } => self.run_update_expiry(operation_id).await,
            Job::PurgeEvents => {
                let purged = self.ports.events.purge_expired(self.now()).await?;
                Ok(JobReport {
                    purged,
                    ..JobReport::default()
                })
            }
            Job::Sweep => self.run_sweep().await,
            Job::Reminder {
                operation_id,
                time_zone,
                due_at,
            } => self.run_reminder(operation_id, time_zone, *due_at).await,
            Job::Export { export_id } => self.run_export(export_id).await,
            Job::RefreshCatalog => {
                self.refresh_catalog().await?;
                Ok(JobReport::default())
            }
        }
    }

    /// Downloads the catalog from the configured source, checks that it
    /// parses, stores it and uses it from now on. On any failure the
    /// catalog in use and the stored one stay as they were.
    ///
    /// NOTE: other processes (other Lambda instances) keep the catalog they
    /// loaded at start until they restart and read the stored one.
    pub async fn refresh_catalog(&self) -> Result<Arc<Catalog>, CatalogRefreshError> {
        let source = &self.config.catalog_source;
        let body = fetch_catalog(source).await?;
        let catalog = Catalog::from_pmv_json(&body, ModelIndex::bundled()).map_err(|e| {
            CatalogRefreshError::Invalid {
                url: source.url.clone(),
                source: e,
            }
        })?;
        self.ports
            .catalogs
            .put_catalog(&body, self.now())
            .await
            .map_err(CatalogRefreshError::Store)?;
        let catalog = Arc::new(catalog);
        self.set_catalog(catalog.clone());
        tracing::info!(
            url = %source.url,
            bytes = body.len(),
            updates = catalog.updates().len(),
            "catalog refreshed"
        );
        Ok(catalog)
    }

    /// Sends `InstallASAP` to every waiting MDM target in one time zone.
    async fn run_mdm_deadline(
        &self,
        operation_id: &str,
        time_zone: &str,
    ) -> ServiceResult<JobReport> {
        let Some(operation) = self.ports.operations.get_operation(operation_id).await? else {
            return Ok(JobReport::default());
        };
        if operation.state == crate::domain::OperationState::Cancelled {
            return Ok(JobReport::default());
        }
        let filter = TargetFilter {
            time_zone: Some(time_zone.to_string()),
            active_only: true,
            ..Default::default()
        };
        let targets = self.all_targets(operation_id, &filter).await?;
        let mut changed = 0;
        let mut woken = Vec::new();
        for target in targets {
            if target.install_requested || target.status == TargetStatus::Installing {
                continue;
            }
            if let Some(device) = self.instruct_install(target).await? {
                changed += 1;
                woken.push(device);
            }
        }
        for chunk in woken.chunks(1000) {
            self.ports.push.push(chunk).await?;
        }
        tracing::info!(operation_id = %operation_id, time_zone = %time_zone, count = changed, "MDM deadline reached");
        Ok(JobReport {
            targets: changed,
            ..JobReport::default()
        })
    }

    async fn instruct_install(
        &self,
        mut target: Target,
    ) -> ServiceResult<Option<crate::domain::Device>> {
        for _ in 0..5 {
            let now = self.now();
            let Some(context) = self.ports.devices.load_context(&target.device_id).await? else {
                return Ok(None);
            };
            let device = context.device;
            if device.current_operation_id.as_deref() != Some(target.operation_id.as_str()) {
                return Ok(None);
            }
            let revision = target.revision;
            let previous_status = target.status;
            // Commands still waiting from before the deadline are replaced.
            let mut commands: Vec<CommandWrite> = context
                .commands
                .iter()
                .filter(|c| c.operation_id.as_deref() == Some(target.operation_id.as_str()))
                .map(|c| CommandWrite::Remove {
                    device_id: c.device_id.clone(),
                    uuid: c.uuid.clone(),
                })
                .collect();
            let Some(command) =
                command_for_target(self, &device, &mut target, MdmInstruction::InstallNow, now)
            else {
                return Ok(None);
            };
            target.updated_at = now;
            let events = vec![
                self.event(&target.operation_id, Some(&target.device_id), EventType::DeadlineReached, Actor::System, json!({ "time_zone": target.time_zone, "deadline_at": target.deadline_at })),
                self.event(&target.operation_id, Some(&target.device_id), EventType::CommandSent, Actor::System, json!({ "command_uuid": command.uuid, "request_type": command.request_type, "install_action": "InstallASAP" })),
            ];
            commands.push(CommandWrite::Put(command));
            let change = Change {
                device: None,
                target: Some(TargetWrite {
                    target: target.clone(),
                    expected_revision: revision,
                    previous_status,
                }),
                events,
                commands,
            };
            match self.ports.devices.commit(change).await {
                Ok(_) => return Ok(Some(device)),
                Err(StoreError::Conflict(_)) => match self
                    .ports
                    .operations
                    .get_target(&target.operation_id, &target.device_id)
                    .await?
                {
                    Some(fresh) if !fresh.status.is_final() && !fresh.install_requested => {
                        target = fresh
                    }
                    _ => return Ok(None),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Apple stopped signing the update: targets not yet installing become Deprecated.
    async fn run_update_expiry(&self, operation_id: &str) -> ServiceResult<JobReport> {
        let targets = self
            .all_targets(
                operation_id,
                &TargetFilter {
                    active_only: true,
                    ..Default::default()
                },
            )
            .await?;
        let now = self.now();
        let mut changed = 0;
        for target in targets {
            // Builds of one version can expire on different days; each
            // target waits for its own build's expiry.
            let expired = target.expires_at.is_some_and(|at| at <= now);
            if target.status == TargetStatus::Installing || !expired {
                continue;
            }
            if self.deprecate(target).await? {
                changed += 1;
            }
        }
        tracing::info!(operation_id = %operation_id, count = changed, "update expired");
        Ok(JobReport {
            targets: changed,
            ..JobReport::default()
        })
    }

    async fn deprecate(&self, mut target: Target) -> ServiceResult<bool> {
        for _ in 0..5 {
            let now = self.now();
            let outcome = crate::domain::status::apply(
                &target.progress(),
                &Signal::Expire,
                &self.config.retry_policy,
                now,
            );
            let Ok(crate::domain::Outcome::Moved(change)) = outcome else {
                return Ok(false);
            };
            let Some(mut device) = self.ports.devices.get_device(&target.device_id).await? else {
                return Ok(false);
            };
            let device_revision = device.revision;
            let previous_status = target.status;
            let revision = target.revision;
            target.status = change.to;
            target.updated_at = now;
            target.detail = Some("Apple no longer signs this update".into());
            let device_write = (device.current_operation_id.as_deref()
                == Some(target.operation_id.as_str()))
            .then(|| {
                device.current_operation_id = None;
                DeviceWrite {
                    device,
                    expected_revision: Some(device_revision),
                }
            });
            let change = Change {
                device: device_write,
                target: Some(TargetWrite {
                    target: target.clone(),
                    expected_revision: revision,
                    previous_status,
                }),
                events: vec![self.event(
                    &target.operation_id,
                    Some(&target.device_id),
                    EventType::Deprecated,
                    Actor::System,
                    json!({ "from": previous_status, "expires_at": target.expires_at }),
                )],
                commands: Vec::new(),
            };
            match self.ports.devices.commit(change).await {
                Ok(outcome) => {
                    self.record_state_changes(&outcome.state_changes).await?;
                    return Ok(true);
                }
                Err(StoreError::Conflict(_)) => match self
                    .ports
                    .operations
                    .get_target(&target.operation_id, &target.device_id)
                    .await?
                {
                    Some(fresh) => target = fresh,
                    None => return Ok(false),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    pub(super) async fn all_targets(
        &self,
        operation_id: &str,
        filter: &TargetFilter,
    ) -> ServiceResult<Vec<Target>> {
        let mut targets = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .ports
                .operations
                .list_targets(
                    operation_id,
                    filter,
                    &PageRequest {
                        limit: 1000,
                        cursor,
                    },
                )
                .await?;
            targets.extend(page.items);
            cursor = page.next_cursor;
            if cursor.is_none() {
                return Ok(targets);
            }
        }
    }
}
