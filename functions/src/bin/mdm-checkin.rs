//! The MDM check-in URL (PUT /mdm/checkin).

use osdeploy_functions::{Config, app_state, flush_last_seen, init_logging, services};
use osdeploy_shared::http::device_router;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_logging();
    let config = Config::from_env()?;
    let services = services(&config).await?;
    let router = device_router(app_state(services.clone(), &config));
    lambda_http::run(flush_last_seen(router, services)).await
}
