//! The `osdeploy` command's library: the local server, the fleet simulator
//! and the demo that runs both, so that end-to-end tests can drive them.

pub mod admin_client;
pub mod catalog_cmd;
pub mod demo;
pub mod server;
pub mod simulate;
pub mod simulate_cmd;

/// Prints an error with its causes on one line and returns a failing exit code.
pub fn report_error(error: &dyn std::error::Error) -> std::process::ExitCode {
    let mut message = format!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    eprintln!("{message}");
    std::process::ExitCode::FAILURE
}
