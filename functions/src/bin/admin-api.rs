//! The admin API under /api/v1, behind API Gateway's JWT authorizer.

use osdeploy_functions::{Config, app_state, init_logging, services};
use osdeploy_shared::http::admin_router;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_logging();
    let config = Config::from_env()?;
    let services = services(&config).await?;
    lambda_http::run(admin_router(app_state(services, &config))).await
}
