//! `osdeploy simulate`.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct SimulateArgs {}

pub async fn run(_args: SimulateArgs) -> ExitCode {
    eprintln!("error: simulate is not wired up yet");
    ExitCode::FAILURE
}
