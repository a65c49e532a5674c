//! One-time jobs that EventBridge Scheduler fires: MDM deadlines per time
//! zone, update expiry and CSV exports. The event is the schedule as JSON.

use lambda_runtime::{LambdaEvent, service_fn};
use osdeploy_functions::{Config, init_logging, services};
use osdeploy_shared::ports::Schedule;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let config = Config::from_env()?;
    let services = services(&config).await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let services = services.clone();
        async move {
            let schedule: Schedule = serde_json::from_value(event.payload)
                .map_err(|e| format!("the event is not an osdeploy schedule: {e}"))?;
            let report = services.run_job(&schedule.job).await?;
            tracing::info!(schedule = %schedule.id, count = report.targets, "scheduled job ran");
            Ok::<Value, lambda_runtime::Error>(
                json!({ "schedule": schedule.id, "targets": report.targets }),
            )
        }
    }))
    .await
}
