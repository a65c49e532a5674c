//! The `osdeploy` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use jiff::Timestamp;
use osdeploy_cli::server::{self, ClockMode, ServeConfig};
use osdeploy_shared::service::ServiceConfig;

#[derive(Parser)]
#[command(
    name = "osdeploy",
    version,
    about = "Roll Apple OS updates out to Macs, iPhones and iPads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the all-in-one local server: admin API, device endpoints and scheduler.
    Serve(ServeArgs),
    /// Play a fleet of simulated devices against a running server.
    Simulate(osdeploy_cli::simulate_cmd::SimulateArgs),
    /// Run a server and a simulated fleet through three operations, end to end.
    Demo(osdeploy_cli::demo::DemoArgs),
    /// Manage the software-update catalog.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Load an Apple software-lookup (pmv) JSON file into the database.
    Import {
        /// The pmv JSON, as served at https://gdmf.apple.com/v2/pmv.
        file: PathBuf,
        #[arg(long, env = "OSDEPLOY_DATABASE", default_value = "osdeploy.db")]
        database: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "OSDEPLOY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// SQLite database file; created when missing.
    #[arg(long, env = "OSDEPLOY_DATABASE", default_value = "osdeploy.db")]
    database: PathBuf,
    /// A pmv JSON file to use instead of the latest imported catalog.
    #[arg(long, env = "OSDEPLOY_CATALOG")]
    catalog: Option<PathBuf>,
    /// Start the service clock at this RFC 3339 instant (demos and rehearsals).
    #[arg(long)]
    clock_start: Option<Timestamp>,
    /// Run the service clock this many times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    clock_speed: f64,
    /// IANA zone for MDM Macs whose zone neither inventory nor a group gives.
    #[arg(long, env = "OSDEPLOY_DEFAULT_TIME_ZONE", default_value = "UTC")]
    default_time_zone: String,
    /// Hours without a check-in after which the preview and an operation's
    /// device list flag a device as silent.
    #[arg(
        long,
        env = "OSDEPLOY_SILENT_AFTER_HOURS",
        default_value_t = 72,
        value_parser = clap::value_parser!(i64).range(1..=8760)
    )]
    silent_after_hours: i64,
    /// Lifetime of export download URLs, in seconds (at most 604800, 7 days).
    #[arg(long, env = "OSDEPLOY_EXPORT_LINK_SECONDS", default_value_t = 3600)]
    export_link_seconds: i64,
    /// Bearer token for the admin API; generated and kept beside the database when unset.
    #[arg(long, env = "OSDEPLOY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

/// Logs to stderr; `OSDEPLOY_LOG` overrides `default_filter`.
fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OSDEPLOY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(args: ServeArgs) -> ExitCode {
    if !(args.clock_speed.is_finite() && args.clock_speed > 0.0) {
        eprintln!(
            "error: --clock-speed must be a positive number, got {}",
            args.clock_speed
        );
        return ExitCode::FAILURE;
    }
    if let Err(e) = osdeploy_shared::domain::deadline::parse_time_zone(&args.default_time_zone) {
        eprintln!("error: --default-time-zone: {e}");
        return ExitCode::FAILURE;
    }
    let export_link_expiry = jiff::SignedDuration::from_secs(args.export_link_seconds);
    if let Err(e) = osdeploy_shared::ports::validate_download_expiry(export_link_expiry) {
        eprintln!("error: --export-link-seconds: {e}");
        return ExitCode::FAILURE;
    }
    let clock = match (args.clock_start, args.clock_speed) {
        (None, 1.0) => ClockMode::System,
        (start, speed) => ClockMode::Accelerated {
            start: start.unwrap_or_else(Timestamp::now),
            speed,
        },
    };
    let mut service = ServiceConfig {
        default_time_zone: args.default_time_zone,
        silent_after: jiff::SignedDuration::from_hours(args.silent_after_hours),
        ..ServiceConfig::default()
    };
    if let Err(e) =
        osdeploy_shared::service::retry_settings::apply_retry_settings(&mut service, |name| {
            std::env::var(name).ok()
        })
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let config = ServeConfig {
        listen: args.listen,
        database: args.database,
        catalog_file: args.catalog,
        clock,
        admin_token: args.admin_token,
        service,
        id_seed: None,
        run_scheduler: true,
    };
    let handle = match server::start(config).await {
        Ok(handle) => handle,
        Err(e) => return osdeploy_cli::report_error(&e),
    };
    println!(
        "osdeploy listening on {} (admin API under /api/v1, devices on /mdm/checkin and /mdm/connect)",
        handle.url()
    );
    let shutdown = handle.shutdown_sender();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("shutting down");
            let _ = shutdown.send(true);
        }
    });
    handle.wait().await;
    ExitCode::SUCCESS
}

async fn import_catalog(file: PathBuf, database: PathBuf) -> ExitCode {
    match osdeploy_cli::catalog_cmd::import(&file, &database).await {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => osdeploy_cli::report_error(e.as_ref()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and the simulator draw progress on the terminal: only
    // warnings interleave with it unless OSDEPLOY_LOG requests more.
    let quiet = matches!(cli.command, Command::Demo(_) | Command::Simulate(_));
    init_logging(if quiet { "warn" } else { "info" });
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Simulate(args) => osdeploy_cli::simulate_cmd::run(args).await,
        Command::Demo(args) => osdeploy_cli::demo::run(args).await,
        Command::Catalog {
            command: CatalogCommand::Import { file, database },
        } => import_catalog(file, database).await,
    }
}
