//! Fleet runs against a small in-process MDM server on 127.0.0.1 that
//! speaks the wire protocol with fixed rules.
//!
//! The server queues DeviceInformation after the first TokenUpdate and turns
//! on declarative management for DDM-capable devices. Once the test switches
//! enforcement on, it serves one enforcement declaration to all of them. The
//! test sets its clock, which it sends in every `Date` header.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use jiff::{SignedDuration, Timestamp};
use osdeploy_shared::apple::ddm::{
    ActivationSimple, DdmEndpoint, Declaration, DeclarationItemsResponse, InstallState,
    ParsedStatus, SoftwareUpdateEnforcementSpecific, StatusSubscriptions, TokensResponse,
    parse_status_report,
};
use osdeploy_shared::apple::mdm::{
    CheckinMessage, Command, CommandEnvelope, CommandStatus, DeclarativeManagementCommand,
    DeviceInformation, QueryResponses, parse_checkin, parse_result,
};
use osdeploy_shared::domain::OsVersion;

use super::*;

const ENFORCEMENT_ID: &str = "osdeploy.enforcement.op1";

#[derive(Default)]
struct FakeState {
    now: Option<Timestamp>,
    fail_with: Option<StatusCode>,
    enforce: bool,
    next_uuid: u64,
    queues: HashMap<String, VecDeque<Vec<u8>>>,
    /// `(udid, MessageType)` of every check-in, in order.
    checkins: Vec<(String, String)>,
    /// Inventory query responses by UDID.
    inventory: HashMap<String, QueryResponses>,
    /// Status reports by UDID, in order.
    statuses: HashMap<String, Vec<ParsedStatus>>,
}

#[derive(Clone, Default)]
struct FakeServer {
    state: Arc<Mutex<FakeState>>,
}

impl FakeServer {
    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut state = self.state.lock().expect("fake server state lock");
        f(&mut state)
    }

    fn reply(&self, status: StatusCode, body: Vec<u8>) -> Response {
        let (now, fail_with) = self.with(|s| (s.now, s.fail_with));
        let now = now.unwrap_or(Timestamp::UNIX_EPOCH);
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&now)
            .expect("test clock is printable");
        let status = fail_with.unwrap_or(status);
        (status, [(header::DATE, date)], body).into_response()
    }

    fn queue(&self, udid: &str, command: Command) {
        self.with(|s| {
            s.next_uuid += 1;
            let body = CommandEnvelope::new(format!("CMD-{:04}", s.next_uuid), command)
                .to_plist_xml()
                .expect("command encodes");
            s.queues.entry(udid.to_owned()).or_default().push_back(body);
        });
    }

    fn declarations(&self) -> Vec<Declaration> {
        let enforce = self.with(|s| s.enforce);
        let subscriptions = Declaration::new(
            "osdeploy.status-subscriptions",
            &StatusSubscriptions::rollout(),
        )
        .expect("valid declaration");
        let mut configurations = vec![subscriptions.identifier.clone()];
        let mut set = vec![subscriptions];
        if enforce {
            let payload = SoftwareUpdateEnforcementSpecific {
                target_os_version: "26.6.2".to_owned(),
                target_build_version: Some("25G83".to_owned()),
                target_local_date_time: "2026-09-02T09:00:00".parse().expect("valid datetime"),
                details_url: None,
            };
            let enforcement =
                Declaration::new(ENFORCEMENT_ID, &payload).expect("valid declaration");
            configurations.push(enforcement.identifier.clone());
            set.push(enforcement);
        }
        set.push(
            Declaration::new(
                "osdeploy.activation",
                &ActivationSimple {
                    standard_configurations: configurations,
                    predicate: None,
                },
            )
            .expect("valid declaration"),
        );
        set
    }
}

/// Applies the server's DDM rule to an inventory response.
fn reports_ddm_capable(answers: &QueryResponses) -> bool {
    let major = answers
        .os_version
        .as_deref()
        .and_then(|v| v.parse::<OsVersion>().ok())
        .map(|v| v.major())
        .unwrap_or(0);
    if answers.product_name.is_some() {
        major >= 17
    } else {
        major >= 14 && answers.is_supervised == Some(true)
    }
}

async fn checkin(State(server): State<FakeServer>, body: Bytes) -> Response {
    let Ok(message) = parse_checkin(&body) else {
        return server.reply(StatusCode::BAD_REQUEST, Vec::new());
    };
    let udid = message.udid().unwrap_or_default().to_owned();
    server.with(|s| {
        s.checkins
            .push((udid.clone(), message.message_type().to_owned()))
    });
    match message {
        CheckinMessage::TokenUpdate(_) => {
            server.queue(
                &udid,
                Command::DeviceInformation(DeviceInformation::rollout_queries()),
            );
            server.reply(StatusCode::OK, Vec::new())
        }
        CheckinMessage::DeclarativeManagement(ddm) => {
            let declarations = server.declarations();
            let body = match ddm.endpoint() {
                Ok(DdmEndpoint::Tokens) => {
                    TokensResponse::for_declarations(&declarations, Timestamp::UNIX_EPOCH).to_json()
                }
                Ok(DdmEndpoint::DeclarationItems) => {
                    DeclarationItemsResponse::from_declarations(&declarations)
                        .and_then(|items| items.to_json())
                }
                Ok(DdmEndpoint::Declaration { identifier, .. }) => {
                    match declarations.iter().find(|d| d.identifier == identifier) {
                        Some(declaration) => declaration.to_json(),
                        None => return server.reply(StatusCode::NOT_FOUND, Vec::new()),
                    }
                }
                Ok(DdmEndpoint::Status) => {
                    let Some(status) = ddm
                        .data
                        .as_deref()
                        .and_then(|d| parse_status_report(d).ok())
                    else {
                        return server.reply(StatusCode::BAD_REQUEST, Vec::new());
                    };
                    server.with(|s| s.statuses.entry(udid.clone()).or_default().push(status));
                    Ok(Vec::new())
                }
                Err(_) => return server.reply(StatusCode::BAD_REQUEST, Vec::new()),
            };
            match body {
                Ok(body) => server.reply(StatusCode::OK, body),
                Err(_) => server.reply(StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
            }
        }
        _ => server.reply(StatusCode::OK, Vec::new()),
    }
}

async fn connect(State(server): State<FakeServer>, body: Bytes) -> Response {
    let Ok(result) = parse_result(&body) else {
        return server.reply(StatusCode::BAD_REQUEST, Vec::new());
    };
    let udid = result.udid.clone().unwrap_or_default();
    if result.status == CommandStatus::Acknowledged
        && let Ok(Some(information)) = result.device_information()
    {
        let answers = information.query_responses;
        let ddm = reports_ddm_capable(&answers);
        server.with(|s| s.inventory.insert(udid.clone(), answers));
        if ddm {
            server.queue(
                &udid,
                Command::DeclarativeManagement(DeclarativeManagementCommand::default()),
            );
        }
    }
    let next = server.with(|s| s.queues.get_mut(&udid).and_then(VecDeque::pop_front));
    server.reply(StatusCode::OK, next.unwrap_or_default())
}

/// Starts the fake server on 127.0.0.1 and returns its URL.
async fn start(server: &FakeServer) -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/mdm/checkin", put(checkin))
        .route("/mdm/connect", put(connect))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let address = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}"), task)
}

fn start_time() -> Timestamp {
    "2026-09-01T08:00:00Z".parse().expect("valid timestamp")
}

fn config(devices: usize, seed: u64) -> FleetConfig {
    FleetConfig {
        devices,
        seed,
        concurrency: 8,
        mix: FleetMix {
            transient_failure_share: 0.2,
            persistent_failure_share: 0.1,
            user_early_install_share: 0.25,
            not_now_share: 0.0,
            ..FleetMix::default()
        },
        ..FleetConfig::default()
    }
}

#[tokio::test]
async fn enroll_speaks_the_protocol() {
    let server = FakeServer::default();
    server.with(|s| s.now = Some(start_time()));
    let (url, task) = start(&server).await;
    let mut fleet = Fleet::new(config(12, 4)).expect("fleet generates");

    fleet.enroll(&url).await.expect("enrollment succeeds");

    let progress = fleet.progress();
    assert_eq!(progress.enrolled, 12);
    assert_eq!(fleet.server_time(), Some(start_time()));
    for device in fleet.devices() {
        let (checkins, inventory, statuses) = server.with(|s| {
            let types: Vec<String> = s
                .checkins
                .iter()
                .filter(|(udid, _)| *udid == device.udid)
                .map(|(_, kind)| kind.clone())
                .collect();
            (
                types,
                s.inventory.get(&device.udid).cloned(),
                s.statuses.get(&device.udid).cloned().unwrap_or_default(),
            )
        });
        assert_eq!(
            checkins.first().map(String::as_str),
            Some("Authenticate"),
            "{}",
            device.udid
        );
        assert_eq!(
            checkins.get(1).map(String::as_str),
            Some("TokenUpdate"),
            "{}",
            device.udid
        );
        let inventory = inventory.expect("inventory answered");
        assert_eq!(
            inventory.os_version.as_deref(),
            Some(device.os_version.as_str())
        );
        assert_eq!(
            inventory.serial_number.as_deref(),
            Some(device.serial_number.as_str())
        );
        assert_eq!(
            inventory.software_update_device_id.as_deref(),
            Some(device.software_update_device_id.as_str())
        );
        if device.ddm_capable {
            let first = statuses.first().expect("first status report sent");
            assert!(first.full_report, "{}", device.udid);
            assert_eq!(
                first.os_version.as_deref(),
                Some(device.os_version.as_str())
            );
            assert_eq!(first.install_state, Some(InstallState::None));
            assert!(first.declarations.is_some(), "{}", device.udid);
        } else {
            assert!(statuses.is_empty(), "{} is not DDM-capable", device.udid);
        }
    }
    task.abort();
}

#[tokio::test]
async fn server_error_reaches_caller() {
    let server = FakeServer::default();
    server.with(|s| {
        s.now = Some(start_time());
        s.fail_with = Some(StatusCode::INTERNAL_SERVER_ERROR);
    });
    let (url, task) = start(&server).await;
    let mut fleet = Fleet::new(config(5, 4)).expect("fleet generates");

    let error = fleet.enroll(&url).await.expect_err("enrollment fails");

    let SimError::Enrollment {
        failed,
        total,
        first,
    } = error
    else {
        panic!("expected an enrollment error, got {error}");
    };
    assert_eq!((failed, total), (5, 5));
    let SimError::Status {
        status, request, ..
    } = *first
    else {
        panic!("expected an HTTP status error, got {first}");
    };
    assert_eq!(status, 500);
    assert_eq!(request, "Authenticate check-in");
    assert_eq!(fleet.stats().errors, 5);
    assert_eq!(fleet.progress().enrolled, 0);
    task.abort();
}

#[tokio::test]
async fn non_loopback_server_rejected() {
    let mut fleet = Fleet::new(config(2, 4)).expect("fleet generates");

    let error = fleet
        .enroll("http://10.0.0.5:8080")
        .await
        .expect_err("rejected");

    assert!(
        matches!(error, SimError::InvalidServerUrl { .. }),
        "{error}"
    );
    assert_eq!(fleet.stats().requests, 0);
}

#[tokio::test]
async fn ddm_fleet_reaches_target() {
    let server = FakeServer::default();
    server.with(|s| s.now = Some(start_time()));
    let (url, task) = start(&server).await;
    let mut fleet = Fleet::new(config(24, 11)).expect("fleet generates");
    fleet.enroll(&url).await.expect("enrollment succeeds");
    server.with(|s| s.enforce = true);

    // 90 rounds, 40 server minutes apart: 60 hours, past the latest deadline
    // (09:00 on 2 September in Los Angeles is 16:00 UTC) and every retry.
    for _ in 0..90 {
        server.with(|s| s.now = s.now.map(|now| now + SignedDuration::from_mins(40)));
        let report = fleet.tick(&url).await.expect("valid server URL");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }

    let scenario: Vec<&SimDevice> = fleet
        .devices()
        .iter()
        .filter(|d| d.ddm_capable && d.role == DeviceRole::Updatable)
        .collect();
    let persistent = scenario
        .iter()
        .filter(|d| matches!(d.behaviour.failure, FailurePlan::Persistent(_)))
        .count();
    let transient = scenario
        .iter()
        .filter(|d| matches!(d.behaviour.failure, FailurePlan::Transient(_)))
        .count();
    let early = scenario
        .iter()
        .filter(|d| d.behaviour.user_early_install)
        .count();
    assert!(
        scenario.len() >= 10,
        "only {} DDM devices to update",
        scenario.len()
    );
    assert!(
        persistent >= 1 && transient >= 1 && early >= 1,
        "mix lacks a behaviour"
    );

    for device in &scenario {
        let statuses = server.with(|s| s.statuses.get(&device.udid).cloned().unwrap_or_default());
        let last_version = statuses.iter().rev().find_map(|s| s.os_version.clone());
        let last_state = statuses.iter().rev().find_map(|s| s.install_state.clone());
        let most_failures = statuses
            .iter()
            .filter_map(|s| s.failure_reason.as_ref().map(|f| f.count))
            .max()
            .unwrap_or(0);
        let truth = fleet.ground_truth(&device.udid).expect("device known");
        assert!(truth.settled, "{} not settled: {truth:?}", device.udid);
        match device.behaviour.failure {
            FailurePlan::Persistent(_) => {
                assert_eq!(fleet.expected_status(&device.udid), Some("failed"));
                assert_eq!(last_state, Some(InstallState::Failed), "{}", device.udid);
                assert_eq!(most_failures, 3, "{}", device.udid);
            }
            plan => {
                assert_eq!(fleet.expected_status(&device.udid), Some("installed"));
                assert_eq!(last_version.as_deref(), Some("26.6.2"), "{}", device.udid);
                assert_eq!(device.build_version, "25G83");
                assert_eq!(last_state, Some(InstallState::None), "{}", device.udid);
                let expected_failures = u32::from(matches!(plan, FailurePlan::Transient(_)));
                assert_eq!(
                    truth.counters.failures_injected, expected_failures,
                    "{}",
                    device.udid
                );
                assert_eq!(
                    truth.counters.user_early_installs,
                    u32::from(device.behaviour.user_early_install),
                    "{}",
                    device.udid
                );
            }
        }
    }
    let stats = fleet.stats();
    assert_eq!(stats.user_early_installs as usize, early);
    assert_eq!(stats.errors, 0);
    let progress = fleet.progress();
    assert_eq!(progress.settled, progress.targeted);
    task.abort();
}
