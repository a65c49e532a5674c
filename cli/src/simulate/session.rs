//! The HTTP side of a simulated device: one enrollment or one check-in
//! against the server, sent with reqwest over plain HTTP on the loopback
//! address.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use osdeploy_shared::apple::ddm::{
    DdmEndpoint, Declaration, DeclarationItemsResponse, TokensResponse,
};
use osdeploy_shared::apple::mdm::{CheckinMessage, DeclarativeManagement};
use reqwest::header::{CONTENT_TYPE, DATE};

use super::clock::{ServerClock, parse_http_date};
use super::commands::Outgoing;
use super::device::Machine;
use super::error::SimError;

/// Content type of check-in messages.
const CHECKIN_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm-checkin";
/// Content type of command results.
const RESULT_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm";

/// Maximum commands one check-in responds to. A command left over stays
/// sent on the server, which sends it again at the next Idle poll.
const MAX_COMMANDS_PER_CHECK_IN: usize = 16;

/// Maximum declarations one sync fetches. A manifest with more new ones is
/// skipped and logged.
const MAX_DECLARATION_FETCHES: usize = 32;

/// Maximum bytes of a server reply quoted in an error.
const MAX_QUOTED_BODY: usize = 300;

/// State shared by every request of a fleet.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) clock: Mutex<ServerClock>,
    /// Local instant that the clock's local offsets count from.
    pub(crate) started: Instant,
    pub(crate) requests: AtomicU64,
    pub(crate) max_requests: u64,
}

impl Shared {
    pub(crate) fn new(max_requests: u64) -> Shared {
        Shared {
            clock: Mutex::new(ServerClock::default()),
            started: Instant::now(),
            requests: AtomicU64::new(0),
            max_requests,
        }
    }

    /// Returns the estimated current server time; `None` before any reply.
    pub(crate) fn estimate(&self) -> Option<Timestamp> {
        let local = self.started.elapsed();
        self.clock.lock().ok()?.estimate(local)
    }

    /// Returns the latest confirmed server time.
    pub(crate) fn latest(&self) -> Option<Timestamp> {
        self.clock.lock().ok()?.latest()
    }

    fn observe(&self, server: Timestamp) {
        let local = self.started.elapsed();
        if let Ok(mut clock) = self.clock.lock() {
            clock.observe(local, server);
        }
    }
}

/// Checks that `server` is a plain-HTTP URL on a loopback address and
/// returns it without a trailing slash.
pub(crate) fn loopback_base(server: &str) -> Result<String, SimError> {
    let invalid = |reason: &str| SimError::InvalidServerUrl {
        url: server.to_owned(),
        reason: reason.to_owned(),
    };
    let url = reqwest::Url::parse(server).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" {
        return Err(invalid("the scheme is not http"));
    }
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    if !loopback {
        return Err(invalid("the host is not a loopback address"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("the URL has a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Sends a fleet's requests.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    client: reqwest::Client,
    base: Arc<str>,
    shared: Arc<Shared>,
}

/// A successful reply.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) date: Timestamp,
    pub(crate) body: Vec<u8>,
}

/// Settings one check-in needs.
#[derive(Debug, Clone)]
pub(crate) struct CheckInSettings {
    pub(crate) topic: String,
    pub(crate) poll_interval: SignedDuration,
}

impl Transport {
    pub(crate) fn new(client: reqwest::Client, base: String, shared: Arc<Shared>) -> Transport {
        Transport {
            client,
            base: base.into(),
            shared,
        }
    }

    /// Sends one PUT for `machine`'s device and moves the device's clock to
    /// the reply's `Date`.
    async fn put(
        &self,
        machine: &mut Machine,
        request: &str,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<Reply, SimError> {
        machine.counters.requests += 1;
        let result = self
            .send(&machine.device.udid, request, path, content_type, body)
            .await;
        match &result {
            Ok(reply) => machine.observe(reply.date),
            Err(_) => machine.counters.errors += 1,
        }
        result
    }

    async fn send(
        &self,
        udid: &str,
        request: &str,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<Reply, SimError> {
        let used = self.shared.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if used > self.shared.max_requests {
            return Err(SimError::RequestBudget {
                limit: self.shared.max_requests,
            });
        }

        let url = format!("{}{path}", self.base);
        let failed = |source| SimError::Request {
            udid: udid.to_owned(),
            request: request.to_owned(),
            url: url.clone(),
            source,
        };
        let response = self
            .client
            .put(&url)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(failed)?;

        let status = response.status();
        let date = response
            .headers()
            .get(DATE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let bytes = response.bytes().await.map_err(failed)?;

        if !status.is_success() {
            return Err(SimError::Status {
                udid: udid.to_owned(),
                request: request.to_owned(),
                status: status.as_u16(),
                body: quote(&bytes),
            });
        }
        let Some(server_time) = date
            .as_deref()
            .and_then(|value| parse_http_date(value).ok())
        else {
            return Err(SimError::DateHeader {
                udid: udid.to_owned(),
                request: request.to_owned(),
                value: date,
            });
        };

        self.shared.observe(server_time);
        Ok(Reply {
            date: server_time,
            body: bytes.to_vec(),
        })
    }

    /// Sends a check-in message.
    async fn check_in_message(
        &self,
        machine: &mut Machine,
        request: &str,
        body: Vec<u8>,
    ) -> Result<Reply, SimError> {
        self.put(machine, request, "/mdm/checkin", CHECKIN_CONTENT_TYPE, body)
            .await
    }

    /// Sends a DeclarativeManagement check-in to `endpoint`.
    async fn declarative(
        &self,
        machine: &mut Machine,
        endpoint: &DdmEndpoint,
        data: Option<Vec<u8>>,
    ) -> Result<Reply, SimError> {
        let request = format!("DDM {endpoint} check-in");
        let message = CheckinMessage::DeclarativeManagement(DeclarativeManagement {
            endpoint: endpoint.to_string(),
            data,
            udid: Some(machine.device.udid.clone()),
            ..DeclarativeManagement::default()
        });
        let body = message
            .to_plist_xml()
            .map_err(|source| wire(machine, &request, source))?;
        self.check_in_message(machine, &request, body).await
    }
}

/// Returns a reply body as text for an error, cut to [`MAX_QUOTED_BODY`]
/// bytes.
fn quote(body: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(body).trim().to_owned();
    if text.len() > MAX_QUOTED_BODY {
        let cut = (0..=MAX_QUOTED_BODY)
            .rev()
            .find(|index| text.is_char_boundary(*index))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn wire(machine: &Machine, request: &str, source: osdeploy_shared::apple::WireError) -> SimError {
    SimError::Wire {
        udid: machine.device.udid.clone(),
        request: request.to_owned(),
        source,
    }
}

fn json<T: serde::de::DeserializeOwned>(
    machine: &Machine,
    request: &str,
    body: &[u8],
) -> Result<T, SimError> {
    serde_json::from_slice(body).map_err(|source| SimError::Json {
        udid: machine.device.udid.clone(),
        request: request.to_owned(),
        source,
    })
}

/// Enrolls the device: `Authenticate`, `TokenUpdate`, then a first
/// check-in that returns the inventory the server queries (and, on DDM devices,
/// syncs declarations and sends the first status report).
pub(crate) async fn enroll(
    machine: &mut Machine,
    transport: &Transport,
    settings: &CheckInSettings,
) -> Result<(), SimError> {
    let body = machine
        .authenticate_body(&settings.topic)
        .map_err(|source| wire(machine, "Authenticate check-in", source))?;
    transport
        .check_in_message(machine, "Authenticate check-in", body)
        .await?;
    let body = machine
        .token_update_body(&settings.topic)
        .map_err(|source| wire(machine, "TokenUpdate check-in", source))?;
    transport
        .check_in_message(machine, "TokenUpdate check-in", body)
        .await?;
    machine.enrolled = true;
    exchange(machine, transport).await?;
    machine.schedule_first_poll(settings.poll_interval);
    tracing::debug!(device_id = %machine.device.udid, "simulated device enrolled");
    Ok(())
}

/// Runs one regular check-in and schedules the next one.
pub(crate) async fn check_in(
    machine: &mut Machine,
    transport: &Transport,
    settings: &CheckInSettings,
) -> Result<(), SimError> {
    exchange(machine, transport).await?;
    machine.schedule_poll(settings.poll_interval);
    Ok(())
}

/// Polls for commands and sends their results, then on DDM devices syncs the
/// declarations and sends a status report if anything changed.
async fn exchange(machine: &mut Machine, transport: &Transport) -> Result<(), SimError> {
    command_loop(machine, transport).await?;
    if machine.ddm_enabled {
        sync_declarations(machine, transport).await?;
        send_status(machine, transport).await?;
    }
    Ok(())
}

/// Sends an Idle poll, then the result of each command the server returns,
/// until the server has no command left or [`MAX_COMMANDS_PER_CHECK_IN`]
/// results are sent.
async fn command_loop(machine: &mut Machine, transport: &Transport) -> Result<(), SimError> {
    let mut outgoing: Outgoing = machine
        .idle_poll()
        .map_err(|source| wire(machine, "Idle poll", source))?;
    let mut answered = 0;
    loop {
        let reply = transport
            .put(
                machine,
                &outgoing.request,
                "/mdm/connect",
                RESULT_CONTENT_TYPE,
                std::mem::take(&mut outgoing.body),
            )
            .await?;
        for delivery in &outgoing.deliveries {
            machine.delivered(delivery);
        }
        if reply.body.is_empty() {
            return Ok(());
        }
        if answered == MAX_COMMANDS_PER_CHECK_IN {
            tracing::debug!(device_id = %machine.device.udid, "command limit of one check-in reached; the rest waits for the next poll");
            return Ok(());
        }
        let request = format!("reply to {}", outgoing.request);
        outgoing = machine
            .respond(&reply.body)
            .map_err(|source| wire(machine, &request, source))?;
        answered += 1;
    }
}

/// Checks the declarations token and, when it changed, fetches the
/// manifest and every new or changed declaration.
async fn sync_declarations(machine: &mut Machine, transport: &Transport) -> Result<(), SimError> {
    machine.counters.token_checks += 1;
    let reply = transport
        .declarative(machine, &DdmEndpoint::Tokens, None)
        .await?;
    let tokens: TokensResponse = json(machine, "DDM tokens check-in", &reply.body)?;
    machine.sync_requested = false;
    if machine.declarations.token.as_deref() == Some(tokens.sync_tokens.declarations_token.as_str())
    {
        return Ok(());
    }

    let reply = transport
        .declarative(machine, &DdmEndpoint::DeclarationItems, None)
        .await?;
    let manifest: DeclarationItemsResponse =
        json(machine, "DDM declaration-items check-in", &reply.body)?;
    let to_fetch = machine.declarations.to_fetch(&manifest.declarations);
    if to_fetch.len() > MAX_DECLARATION_FETCHES {
        tracing::warn!(device_id = %machine.device.udid, count = to_fetch.len(), "manifest lists more new declarations than one sync fetches; skipping this sync");
        return Ok(());
    }
    let mut fetched = Vec::with_capacity(to_fetch.len());
    for (kind, identifier) in to_fetch {
        let endpoint = DdmEndpoint::Declaration { kind, identifier };
        let request = format!("DDM {endpoint} check-in");
        let reply = transport.declarative(machine, &endpoint, None).await?;
        let declaration: Declaration = json(machine, &request, &reply.body)?;
        machine.counters.declarations_fetched += 1;
        fetched.push(declaration);
    }
    machine.apply_declarations(&manifest, fetched);
    Ok(())
}

/// Sends the changed status items, if any.
async fn send_status(machine: &mut Machine, transport: &Transport) -> Result<(), SimError> {
    let Some(report) = machine
        .pending_report()
        .map_err(|source| wire(machine, "DDM status check-in", source))?
    else {
        return Ok(());
    };
    transport
        .declarative(machine, &DdmEndpoint::Status, Some(report.body.clone()))
        .await?;
    machine.report_accepted(report);
    Ok(())
}

/// Server time a device waits after a failed request before it checks in
/// again.
pub(crate) const ERROR_BACKOFF: SignedDuration = SignedDuration::from_mins(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_accepted() {
        let cases = [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("http://localhost:9000/base/", "http://localhost:9000/base"),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ];
        for (url, base) in cases {
            assert_eq!(loopback_base(url).ok().as_deref(), Some(base), "{url}");
        }
    }

    #[test]
    fn other_urls_rejected() {
        for url in [
            "https://127.0.0.1:8080",
            "http://192.168.1.10:8080",
            "http://example.com",
            "http://169.254.169.254/",
            "http://127.0.0.1:8080/?x=1",
            "not a url",
        ] {
            assert!(
                matches!(loopback_base(url), Err(SimError::InvalidServerUrl { .. })),
                "{url} was accepted"
            );
        }
    }
}
