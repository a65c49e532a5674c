//! The `osdeploy` command's library: the local server, the fleet simulator
//! and the demo that runs both, so that end-to-end tests can drive them.

pub mod catalog_cmd;
pub mod demo;
pub mod server;
pub mod simulate_cmd;
