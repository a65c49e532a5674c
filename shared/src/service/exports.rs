//! Export jobs: accept a request, run it in the background, and hand out a
//! download URL when the file is ready. The file format and layout are in
//! [`crate::export`].
//!
//! The record of each export is a small JSON blob, so neither store needs
//! a table for it. `create_export` writes the record `queued` and
//! schedules [`Job::Export`] due now; the local scheduler loop or
//! EventBridge Scheduler runs it through [`Services::run_job`]. A failed
//! run is recorded as `failed` with its error and not retried: the client
//! sees the error and can request a new export.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::jobs::JobReport;
use super::{FieldError, ServiceError, ServiceResult, Services};
use crate::export::columns::{device_row, event_row, header, operation_row};
use crate::export::csv::CsvWriter;
use crate::export::{
    CSV_CONTENT_TYPE, ExportKind, ExportQuery, ExportRecord, ExportState, file_key, record_key,
};
use crate::ports::{Job, PageRequest, Schedule, StoreError};
use crate::service::views::{OperationView, TargetView};

/// Download URL lifetime when none is configured.
pub const DEFAULT_LINK_EXPIRY: SignedDuration = SignedDuration::from_hours(1);

/// Rows read from the store per call while writing a file, so memory
/// contains at most one page of rows at a time.
pub const EXPORT_PAGE_SIZE: usize = 500;

/// An export as `POST /exports` and `GET /exports/{id}` return it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportView {
    pub id: String,
    pub kind: ExportKind,
    pub state: ExportState,
    pub operation_id: Option<String>,
    pub filters: BTreeMap<String, String>,
    /// Data rows in the file, the header not counted; set when done.
    pub rows: Option<u64>,
    /// A download URL minted for this response; set when done.
    pub url: Option<String>,
    /// When `url` stops working.
    pub expires_at: Option<Timestamp>,
    /// The error that stopped the export; set when failed.
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

impl ExportView {
    fn new(record: ExportRecord, link: Option<(String, Timestamp)>) -> Self {
        let (url, expires_at) = link.unzip();
        ExportView {
            kind: record.query.kind(),
            operation_id: record.query.operation_id().map(str::to_string),
            id: record.id,
            state: record.state,
            filters: record.filters,
            rows: record.rows,
            url,
            expires_at,
            error: record.error,
            created_at: record.created_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
        }
    }
}

/// Errors that stop an export run; the record's `error` stores their text.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("reading the rows failed")]
    Read(#[source] StoreError),
    #[error("writing the temporary file {path} failed")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("uploading the file failed")]
    Upload(#[source] StoreError),
}

/// Joins an error and its sources into one line, for the record's `error`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A CSV file being written in the temporary folder, removed when dropped.
struct ExportFile {
    path: PathBuf,
    writer: CsvWriter<BufWriter<File>>,
}

impl ExportFile {
    fn create(export_id: &str, kind: ExportKind) -> Result<Self, ExportError> {
        // The sequence keeps two runs in one process apart even when they
        // share an export id (two services with seeded id generators).
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "osdeploy-export-{export_id}-{}-{}.csv",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let write_error = |source| ExportError::Write {
            path: path.clone(),
            source,
        };
        let file = File::create(&path).map_err(write_error)?;
        let mut export = ExportFile {
            writer: CsvWriter::new(BufWriter::with_capacity(64 * 1024, file)),
            path: path.clone(),
        };
        let names = header(kind);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        export.writer.write_header(&names).map_err(write_error)?;
        Ok(export)
    }

    /// Writes one data row. The file is written with blocking calls on the
    /// async worker, in 64 KiB chunks through the buffered writer.
    fn write(&mut self, cells: &[crate::export::csv::Cell<'_>]) -> Result<(), ExportError> {
        self.writer
            .write_record(cells)
            .map_err(|source| ExportError::Write {
                path: self.path.clone(),
                source,
            })
    }

    /// Flushes the buffer; returns the data rows written.
    fn finish(&mut self) -> Result<u64, ExportError> {
        self.writer.flush().map_err(|source| ExportError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(self.writer.records().saturating_sub(1))
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ExportFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a temporary export file");
        }
    }
}

impl Services {
    /// Accepts an export request: checks that its operation exists, stores
    /// the record `queued` and schedules the job due now.
    pub async fn create_export(
        &self,
        query: ExportQuery,
        filters: BTreeMap<String, String>,
    ) -> ServiceResult<ExportView> {
        if let Some(operation_id) = query.operation_id()
            && self
                .ports
                .operations
                .get_operation(operation_id)
                .await?
                .is_none()
        {
            return Err(ServiceError::invalid(vec![
                FieldError::new(
                    "operation_id",
                    "unknown_operation",
                    format!(
                        "operation {operation_id:?} not found; pass the id of an existing operation"
                    ),
                )
                .with_value(operation_id),
            ]));
        }
        let now = self.now();
        let id = self.ids.ulid(now);
        let mut record = ExportRecord {
            id: id.clone(),
            query,
            filters,
            state: ExportState::Queued,
            rows: None,
            file_key: None,
            error: None,
            created_at: now,
            started_at: None,
            finished_at: None,
        };
        self.save_export(&record).await?;
        // NOTE: EventBridge Scheduler gets an at() expression rounded up to
        // the next second, and that second may have passed when the call
        // arrives. How AWS treats a time just past is not checked here,
        // because moto accepts any time.
        let schedule = Schedule {
            id: format!("export-{id}"),
            due_at: now,
            job: Job::Export {
                export_id: id.clone(),
            },
        };
        if let Err(e) = self.ports.scheduler.schedule(&schedule).await {
            tracing::error!(export_id = %id, error = %e, "could not schedule an export job");
            record.state = ExportState::Failed;
            record.error = Some(format!(
                "scheduling the export job failed: {}",
                error_chain(&e)
            ));
            record.finished_at = Some(now);
            self.save_export(&record).await?;
            return Err(e.into());
        }
        tracing::info!(export_id = %id, kind = record.query.kind().as_str(), "export queued");
        Ok(ExportView::new(record, None))
    }

    /// Returns an export's state, with a freshly signed download URL when
    /// the file is ready.
    pub async fn get_export(&self, export_id: &str) -> ServiceResult<ExportView> {
        let record = self
            .load_export(export_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("export", export_id))?;
        let link = match (&record.state, &record.file_key) {
            (ExportState::Done, Some(key)) => {
                let expiry = self.config.export_link_expiry;
                let url = self.ports.blobs.download_url(key, expiry).await?;
                Some((url, self.now() + expiry))
            }
            _ => None,
        };
        Ok(ExportView::new(record, link))
    }

    /// Runs [`Job::Export`]: writes the CSV and records the outcome. A run
    /// for an export that is already done or failed does nothing, so a
    /// repeated delivery of the job is harmless.
    pub(super) async fn run_export(&self, export_id: &str) -> ServiceResult<JobReport> {
        let Some(mut record) = self.load_export(export_id).await? else {
            tracing::warn!(export_id = %export_id, "export job for an unknown export; nothing to do");
            return Ok(JobReport::default());
        };
        if matches!(record.state, ExportState::Done | ExportState::Failed) {
            return Ok(JobReport::default());
        }
        let started = self.now();
        record.state = ExportState::Running;
        record.started_at = Some(started);
        self.save_export(&record).await?;

        let key = file_key(export_id, record.query.kind());
        let outcome = self.write_export(&record, &key, started).await;
        record.finished_at = Some(self.now());
        match outcome {
            Ok(rows) => {
                record.state = ExportState::Done;
                record.rows = Some(rows);
                record.file_key = Some(key);
                tracing::info!(export_id = %export_id, rows, "export done");
            }
            Err(e) => {
                let message = error_chain(&e);
                tracing::error!(export_id = %export_id, error = %message, "export failed");
                record.state = ExportState::Failed;
                record.error = Some(message);
            }
        }
        self.save_export(&record).await?;
        Ok(JobReport::default())
    }

    /// Writes every row of the export to a temporary file and uploads it to
    /// `key`. Returns the data rows written.
    async fn write_export(
        &self,
        record: &ExportRecord,
        key: &str,
        now: Timestamp,
    ) -> Result<u64, ExportError> {
        let mut file = ExportFile::create(&record.id, record.query.kind())?;
        let mut cursor = None;
        loop {
            let page = PageRequest {
                limit: EXPORT_PAGE_SIZE,
                cursor: cursor.take(),
            };
            let next = match &record.query {
                ExportQuery::Operations { filter } => {
                    let page = self.ports.operations.list_operations(filter, &page).await;
                    let page = page.map_err(ExportError::Read)?;
                    for operation in &page.items {
                        file.write(&operation_row(&OperationView::new(operation, now)))?;
                    }
                    page.next_cursor
                }
                ExportQuery::Devices {
                    operation_id,
                    filter,
                } => {
                    let page = self
                        .ports
                        .operations
                        .list_targets(operation_id, filter, &page);
                    let page = page.await.map_err(ExportError::Read)?;
                    for target in &page.items {
                        file.write(&device_row(&TargetView::from(target)))?;
                    }
                    page.next_cursor
                }
                ExportQuery::Events {
                    operation_id,
                    filter,
                } => {
                    // The same read as GET /operations/{id}/events, so events
                    // past their retention are left out here too.
                    let page = self
                        .ports
                        .events
                        .list_events(operation_id, filter, now, &page);
                    let page = page.await.map_err(ExportError::Read)?;
                    for event in &page.items {
                        file.write(&event_row(event))?;
                    }
                    page.next_cursor
                }
            };
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let rows = file.finish()?;
        self.ports
            .blobs
            .put_file(key, CSV_CONTENT_TYPE, file.path())
            .await
            .map_err(ExportError::Upload)?;
        Ok(rows)
    }

    async fn load_export(&self, export_id: &str) -> ServiceResult<Option<ExportRecord>> {
        // Ids are ULIDs; anything else names no export and must not reach
        // the blob store as part of a key.
        if export_id.is_empty()
            || export_id.len() > 64
            || !export_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Ok(None);
        }
        let Some(bytes) = self.ports.blobs.get(&record_key(export_id)).await? else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::backend("decode export record", e))?;
        Ok(Some(record))
    }

    async fn save_export(&self, record: &ExportRecord) -> ServiceResult<()> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| StoreError::backend("encode export record", e))?;
        self.ports
            .blobs
            .put(&record_key(&record.id), "application/json", bytes)
            .await?;
        Ok(())
    }
}
