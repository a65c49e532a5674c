//! The MDM server URL (PUT /mdm/connect).

use osdeploy_functions::{Config, app_state, init_logging, services};
use osdeploy_shared::http::device_router;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_logging();
    let config = Config::from_env()?;
    let services = services(&config).await?;
    lambda_http::run(device_router(app_state(services, &config))).await
}
