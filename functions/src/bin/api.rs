//! The HTTP function: the admin API and the device endpoints behind API
//! Gateway, mounting the same router as `osdeploy serve`.
//!
//! NOTE: until the DynamoDB adapters exist this function keeps its state in
//! the embedded SQLite store at `OSDEPLOY_DATABASE` (a file on an EFS mount,
//! say), so it runs only as a single concurrent instance.

use std::sync::Arc;

use osdeploy_functions::Config;
use osdeploy_shared::adapters::{RecordedPush, SqliteStore};
use osdeploy_shared::catalog::Catalog;
use osdeploy_shared::domain::{SystemClock, UlidGenerator};
use osdeploy_shared::http::{AppState, router};
use osdeploy_shared::service::{Ports, Services};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    osdeploy_functions::init_logging();
    let config = Config::from_env()?;
    let store = Arc::new(SqliteStore::open(&config.database)?);
    let ports = Ports::from_store(store, Arc::new(RecordedPush::default()));
    let services = Services::new(
        ports,
        Arc::new(SystemClock),
        Arc::new(UlidGenerator::from_entropy()),
        Arc::new(Catalog::bundled().clone()),
        config.service.clone(),
    );
    let state = AppState {
        services: Arc::new(services),
        // API Gateway's JWT authorizer guards the admin routes; a token
        // here is a second check for deployments without one.
        admin_token: config.admin_token.as_deref().map(Arc::from),
    };
    lambda_http::run(router(state)).await
}
