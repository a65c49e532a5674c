//! `osdeploy demo`.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DemoArgs {}

pub async fn run(_args: DemoArgs) -> ExitCode {
    eprintln!("error: demo is not wired up yet");
    ExitCode::FAILURE
}
