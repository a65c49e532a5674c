//! `osdeploy serve`: the admin API, the device endpoints and the scheduler
//! in one process over the embedded SQLite store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use osdeploy_shared::adapters::{
    ChannelPublisher, LocalBlobStore, RecordedPush, SqliteStore, local_scheduler,
};
use osdeploy_shared::catalog::{Catalog, ModelIndex};
use osdeploy_shared::domain::{AcceleratedClock, Clock, ManualClock, SystemClock, UlidGenerator};
use osdeploy_shared::http::{AppState, downloads, router};
use osdeploy_shared::ports::CatalogStore;
use osdeploy_shared::service::{Ports, ServiceConfig, Services};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The mode of the server's clock.
#[derive(Debug, Clone)]
pub enum ClockMode {
    System,
    /// Starts at an instant and runs `speed` times faster than real time.
    Accelerated {
        start: Timestamp,
        speed: f64,
    },
    /// Moves only when a test steps it.
    Manual(Arc<ManualClock>),
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub database: PathBuf,
    /// A pmv JSON file to use instead of the latest imported catalog.
    pub catalog_file: Option<PathBuf>,
    pub clock: ClockMode,
    /// `None`: read or generate the token kept beside the database.
    pub admin_token: Option<String>,
    pub service: ServiceConfig,
    /// Seed for ids; `None` seeds from the system.
    pub id_seed: Option<u64>,
    /// Run the in-process scheduler loop (tests step it themselves).
    pub run_scheduler: bool,
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("could not open the database {path}")]
    Database {
        path: PathBuf,
        #[source]
        source: osdeploy_shared::ports::StoreError,
    },
    #[error("could not read the catalog file {path}")]
    CatalogFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid catalog {origin}")]
    Catalog {
        origin: String,
        #[source]
        source: osdeploy_shared::catalog::CatalogError,
    },
    #[error("could not listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not read or write the admin token file {path}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not read or write the download secret file {path}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not create the export folder {path}")]
    ExportFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not open the export folder")]
    Exports(#[source] osdeploy_shared::adapters::local_blobs::LocalBlobsError),
    #[error("store failed while starting")]
    Store(#[from] osdeploy_shared::ports::StoreError),
}

/// A running server.
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub services: Arc<Services>,
    pub store: Arc<SqliteStore>,
    pub push: Arc<RecordedPush>,
    /// Export files, under `<database>.exports/`.
    pub blobs: Arc<LocalBlobStore>,
    /// Every stored event, for in-process subscribers.
    pub publisher: Arc<ChannelPublisher>,
    pub admin_token: String,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    scheduler: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// Returns the base URL devices and administrators use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, lets the scheduler finish its tick and waits for both.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        if let Some(scheduler) = self.scheduler {
            let _ = scheduler.await;
        }
    }

    /// Waits until the server stops (Ctrl-C handling is the caller's).
    pub async fn wait(self) {
        let _ = self.server.await;
    }

    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

fn token_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".admin-token");
    PathBuf::from(name)
}

/// Environment variable with the download-URL signing secret, at least
/// 32 bytes. Unset: a secret is generated and kept beside the database.
pub const DOWNLOAD_SECRET_ENV: &str = "OSDEPLOY_DOWNLOAD_SECRET";

fn secret_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".download-secret");
    PathBuf::from(name)
}

/// Returns the folder of export files beside the database.
pub fn exports_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".exports");
    PathBuf::from(name)
}

/// Returns the download-URL secret: [`DOWNLOAD_SECRET_ENV`] when set, else
/// the one kept beside the database, generated from the operating system's
/// random source on first start. Keeping it means download URLs stay valid
/// across restarts.
fn download_secret(database: &Path) -> Result<Vec<u8>, ServeError> {
    if let Some(secret) = std::env::var(DOWNLOAD_SECRET_ENV)
        .ok()
        .filter(|s| !s.is_empty())
    {
        return Ok(secret.into_bytes());
    }
    let path = secret_path(database);
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ServeError::SecretFile { path, source }),
    }
    let secret = random_hex(32).map_err(|source| ServeError::SecretFile {
        path: path.clone(),
        source,
    })?;
    write_private(&path, &secret).map_err(|source| ServeError::SecretFile { path, source })?;
    Ok(secret.into_bytes())
}

/// Creates `path` if missing, readable only by its owner on Unix, because
/// export files contain device names and audit events.
fn create_private_folder(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Returns `bytes` random bytes from `/dev/urandom` as hex.
fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buffer)?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the admin token kept beside the database, or generates and keeps one.
fn stored_admin_token(database: &Path, ids: &UlidGenerator) -> Result<(String, bool), ServeError> {
    let path = token_path(database);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok((token.trim().to_string(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ServeError::TokenFile { path, source }),
    }
    use osdeploy_shared::domain::IdGenerator;
    let now = Timestamp::now();
    let token = format!("osd_{}{}", ids.ulid(now), ids.ulid(now)).to_lowercase();
    write_private(&path, &token).map_err(|source| ServeError::TokenFile { path, source })?;
    Ok((token, true))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())
}

/// Loads the catalog: the given file, else the latest import, else the bundled snapshot.
async fn load_catalog(
    config: &ServeConfig,
    store: &SqliteStore,
) -> Result<(Arc<Catalog>, String), ServeError> {
    if let Some(path) = &config.catalog_file {
        let bytes = std::fs::read(path).map_err(|source| ServeError::CatalogFile {
            path: path.clone(),
            source,
        })?;
        let catalog = Catalog::from_pmv_json(&bytes, ModelIndex::bundled()).map_err(|source| {
            ServeError::Catalog {
                origin: path.display().to_string(),
                source,
            }
        })?;
        return Ok((Arc::new(catalog), path.display().to_string()));
    }
    if let Some(bytes) = store.latest_catalog().await? {
        let catalog = Catalog::from_pmv_json(&bytes, ModelIndex::bundled()).map_err(|source| {
            ServeError::Catalog {
                origin: "imported into the database".into(),
                source,
            }
        })?;
        return Ok((Arc::new(catalog), "the latest import".into()));
    }
    Ok((
        Arc::new(Catalog::bundled().clone()),
        "the bundled snapshot".into(),
    ))
}

/// Checkpoints the WAL once a second from a background task, so that
/// commits on the request path do not pay for the checkpoint's fsync.
async fn checkpoint_loop(store: Arc<SqliteStore>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.checkpoint()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; SQLite checkpoints on commit instead")
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint task failed"),
        }
    }
}

/// Opens the store, builds the services and starts listening.
pub async fn start(config: ServeConfig) -> Result<ServerHandle, ServeError> {
    let store =
        Arc::new(
            SqliteStore::open(&config.database).map_err(|source| ServeError::Database {
                path: config.database.clone(),
                source,
            })?,
        );
    let ids = match config.id_seed {
        Some(seed) => UlidGenerator::seeded(seed),
        None => UlidGenerator::from_entropy(),
    };
    let admin_token = match &config.admin_token {
        Some(token) => token.clone(),
        None => {
            let (token, generated) = stored_admin_token(&config.database, &ids)?;
            if generated {
                println!(
                    "Generated an admin token (kept in {}): {token}\nSet OSDEPLOY_ADMIN_TOKEN to choose your own.",
                    token_path(&config.database).display()
                );
            }
            token
        }
    };
    let clock: Arc<dyn Clock> = match &config.clock {
        ClockMode::System => Arc::new(SystemClock),
        ClockMode::Accelerated { start, speed } => Arc::new(AcceleratedClock::new(*start, *speed)),
        ClockMode::Manual(clock) => clock.clone(),
    };
    let (catalog, origin) = load_catalog(&config, &store).await?;
    let now = clock.now();
    if catalog.all_expired_at(now) {
        let latest = catalog
            .latest_posting_date()
            .map(|d| d.to_string())
            .unwrap_or_else(|| "unknown".into());
        tracing::warn!(
            latest_posting_date = %latest,
            "every update in the catalog ({origin}) has expired at {now}: nothing can be deployed; import a fresh one with `osdeploy catalog import FILE` (Apple serves it at https://gdmf.apple.com/v2/pmv)"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;
    // NOTE: download URLs name the address the server listens on, with an
    // unspecified address (0.0.0.0) replaced by loopback; behind a proxy
    // they need rewriting.
    let mut public_addr = addr;
    if public_addr.ip().is_unspecified() {
        public_addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let exports_folder = exports_path(&config.database);
    create_private_folder(&exports_folder).map_err(|source| ServeError::ExportFolder {
        path: exports_folder.clone(),
        source,
    })?;
    let blobs = Arc::new(
        LocalBlobStore::open(
            exports_folder,
            download_secret(&config.database)?,
            format!("http://{public_addr}{}", downloads::DOWNLOAD_PATH),
            clock.clone(),
        )
        .map_err(ServeError::Exports)?,
    );
    let push = Arc::new(RecordedPush::default());
    let publisher = Arc::new(ChannelPublisher::default());
    let ports = Ports::from_store(
        store.clone(),
        push.clone(),
        blobs.clone(),
        publisher.clone(),
    );
    let services = Arc::new(Services::new(
        ports,
        clock.clone(),
        Arc::new(ids),
        catalog,
        config.service.clone(),
    ));
    let state = AppState {
        services: services.clone(),
        admin_token: Some(Arc::from(admin_token.as_str())),
    };
    let (shutdown, mut stop) = watch::channel(false);
    let app = router(state).merge(downloads::router(blobs.clone(), clock));
    let server = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "server stopped with an error");
        }
    });
    tokio::spawn(checkpoint_loop(store.clone(), shutdown.subscribe()));
    let scheduler = config.run_scheduler.then(|| {
        let schedules: Arc<dyn osdeploy_shared::ports::ScheduleStore> = store.clone();
        tokio::spawn(local_scheduler::run(
            services.clone(),
            schedules,
            shutdown.subscribe(),
        ))
    });
    tracing::info!(%addr, database = %config.database.display(), catalog = %origin, "osdeploy serving");
    Ok(ServerHandle {
        addr,
        services,
        store,
        push,
        blobs,
        publisher,
        admin_token,
        shutdown,
        server,
        scheduler,
    })
}
