//! Jobs that EventBridge fires. EventBridge Scheduler fires one-time
//! schedules (MDM deadlines per time zone, reminders, update expiry, CSV
//! exports), and its event is the schedule as JSON. EventBridge rules fire
//! the periodic jobs (catalog refresh, sweep), and their event is the job
//! alone, such as `{"job":"refresh_catalog"}`.

use lambda_runtime::{LambdaEvent, service_fn};
use osdeploy_functions::{Config, handle_job_event, init_logging, services};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let config = Config::from_env()?;
    let services = services(&config).await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let services = services.clone();
        async move {
            handle_job_event(&services, event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
