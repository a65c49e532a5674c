//! Errors of the fleet simulator.

use osdeploy_shared::apple::WireError;

/// An error from setting up or driving the simulated fleet.
///
/// Request errors name the device and the request, such as
/// `Authenticate check-in` or `ScheduleOSUpdate result`.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid fleet configuration: {detail}")]
    InvalidConfig { detail: String },

    #[error(
        "invalid server URL {url:?}: {reason}; use plain HTTP on the loopback address, such as http://127.0.0.1:8080"
    )]
    InvalidServerUrl { url: String, reason: String },

    #[error("invalid time zone {zone:?}: {source}; use an IANA name such as Europe/Berlin")]
    InvalidTimeZone {
        zone: String,
        #[source]
        source: jiff::Error,
    },

    #[error("unknown device {udid}: the fleet has no device with this UDID")]
    UnknownDevice { udid: String },

    #[error("device {udid}: {request} to {url} failed: {source}; check that the server is running")]
    Request {
        udid: String,
        request: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("device {udid}: the server returned HTTP {status} to {request}: {body}")]
    Status {
        udid: String,
        request: String,
        status: u16,
        body: String,
    },

    #[error(
        "device {udid}: the reply to {request} has a missing or invalid Date header {value:?}; the simulator reads the server time from it"
    )]
    DateHeader {
        udid: String,
        request: String,
        value: Option<String>,
    },

    #[error("device {udid}: invalid message in {request}: {source}")]
    Wire {
        udid: String,
        request: String,
        #[source]
        source: WireError,
    },

    #[error("device {udid}: invalid JSON in the reply to {request}: {source}")]
    Json {
        udid: String,
        request: String,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "request budget of {limit} requests used up; raise FleetConfig::max_requests or stop the run earlier"
    )]
    RequestBudget { limit: u64 },

    #[error("{failed} of {total} devices failed to enroll; first error: {first}")]
    Enrollment {
        failed: usize,
        total: usize,
        #[source]
        first: Box<SimError>,
    },

    #[error(
        "run stopped after {waited_seconds} s of wall-clock time before the stop condition held: {settled} of {targeted} targeted devices settled"
    )]
    RunTimedOut {
        waited_seconds: u64,
        settled: usize,
        targeted: usize,
    },

    #[error(
        "every request failed in {ticks} consecutive ticks, so the run stopped; last error: {last}"
    )]
    ServerUnreachable {
        ticks: u32,
        #[source]
        last: Box<SimError>,
    },

    #[error("simulation task for device {udid} failed: {source}")]
    Task {
        udid: String,
        #[source]
        source: tokio::task::JoinError,
    },
}
