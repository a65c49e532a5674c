//! Bad input on the device endpoints: each request gets a 4xx with a JSON
//! error, the server keeps serving requests, and nothing is stored.

mod support;

use osdeploy_shared::apple::MAX_DEVICE_BODY_BYTES;
use osdeploy_shared::apple::mdm::{
    CommandResult, CommandStatus, ScheduleOsUpdateResponse, UpdateResult, UpdateResultAction,
    UpdateResultStatus,
};
use osdeploy_shared::domain::{Device, Target};
use osdeploy_shared::ports::{CommandState, DeviceStore};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestDevice, TestServer, create, plist_xml};

/// Everything a rejected request must leave as it was.
struct Snapshot {
    /// `GET /devices`, every page.
    inventory: Vec<Value>,
    /// Each known device as stored, with its active target.
    stored: Vec<(Device, Option<Target>)>,
    /// Queued commands per device: CommandUUID, RequestType and state.
    commands: Vec<Vec<(String, String, CommandState)>>,
    statuses: Vec<std::collections::BTreeMap<String, String>>,
    events: Vec<usize>,
}

impl Snapshot {
    /// Asserts each part separately, so a failure shows only what changed.
    fn assert_same(&self, before: &Snapshot, case: &str) {
        assert_eq!(
            self.inventory, before.inventory,
            "{case}: GET /devices changed"
        );
        for (after, before) in self.stored.iter().zip(&before.stored) {
            assert_eq!(after.0, before.0, "{case}: stored device changed");
            assert_eq!(after.1, before.1, "{case}: stored target changed");
        }
        assert_eq!(
            self.stored.len(),
            before.stored.len(),
            "{case}: a stored device appeared or vanished"
        );
        assert_eq!(
            self.commands, before.commands,
            "{case}: queued commands changed"
        );
        assert_eq!(
            self.statuses, before.statuses,
            "{case}: target statuses changed"
        );
        assert_eq!(self.events, before.events, "{case}: events were added");
    }
}

struct Scene {
    server: TestServer,
    mac: TestDevice,
    phone: TestDevice,
    /// Authenticated, never sent TokenUpdate.
    half: TestDevice,
    /// Never contacted the server.
    ghost: TestDevice,
    operations: Vec<String>,
}

impl Scene {
    /// Starts a server with a Mac in an MDM operation and an iPhone in a DDM
    /// operation, neither of which has sent a result yet, plus a half-enrolled Mac.
    async fn start() -> Scene {
        let server = TestServer::start().await;
        let mac = TestDevice::mac("MAC-INPUT", "15.7.7", "24G720");
        let phone = TestDevice::iphone("PHONE-INPUT", "18.7", "22H20");
        let half = TestDevice::mac("MAC-HALF", "15.7.7", "24G720");
        let ghost = TestDevice::mac("MAC-GHOST", "15.7.7", "24G720");
        mac.enroll(&server).await;
        phone.enroll(&server).await;
        half.authenticate(&server).await;

        let mdm = create(
            &server,
            json!({
                "update": { "product_version": "15.7.9" },
                "protocol": "mdm",
                "targets": { "device_ids": [mac.udid] },
                "install": { "method": "install_immediately" },
            }),
        )
        .await;

        let ddm = create(
            &server,
            json!({
                "update": { "product_version": "26.6.1" },
                "protocol": "ddm",
                "targets": { "device_ids": [phone.udid] },
                "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-29T22:00:00", "time_zone": "device_local" },
            }),
        )
        .await;
        Scene {
            server,
            mac,
            phone,
            half,
            ghost,
            operations: vec![mdm, ddm],
        }
    }

    async fn snapshot(&self) -> Snapshot {
        let store = &self.server.handle().store;
        let mut stored = Vec::new();
        let mut commands = Vec::new();
        for device in [&self.mac, &self.phone, &self.half, &self.ghost] {
            if let Some(context) = store.load_context(&device.udid).await.expect("read device") {
                stored.push((context.device, context.target));
                commands.push(
                    context
                        .commands
                        .into_iter()
                        .map(|c| (c.uuid, c.request_type, c.state))
                        .collect(),
                );
            }
        }
        let mut statuses = Vec::new();
        let mut events = Vec::new();
        for operation in &self.operations {
            statuses.push(self.server.statuses(operation).await);
            events.push(self.server.events(operation).await.len());
        }
        Snapshot {
            inventory: self.server.all("/devices").await,
            stored,
            commands,
            statuses,
            events,
        }
    }
}

fn checkin(udid: &str, message_type: &str, extra: &[(&str, plist::Value)]) -> Vec<u8> {
    let mut dict = plist::Dictionary::new();
    dict.insert("MessageType".into(), message_type.into());
    dict.insert("UDID".into(), udid.into());
    for (key, value) in extra {
        dict.insert((*key).into(), value.clone());
    }
    plist_xml(dict)
}

fn declarative(udid: &str, endpoint: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut extra = vec![("Endpoint", plist::Value::from(endpoint))];
    if let Some(data) = data {
        extra.push(("Data", plist::Value::Data(data.to_vec())));
    }
    checkin(udid, "DeclarativeManagement", &extra)
}

fn token_update(device: &TestDevice) -> Vec<u8> {
    device.token_update_body()
}

fn result(udid: &str, uuid: Option<&str>, status: CommandStatus) -> Vec<u8> {
    CommandResult::new(udid.to_string(), uuid.map(str::to_string), status)
        .to_plist_xml()
        .expect("result plist")
}

fn array_plist() -> Vec<u8> {
    let mut out = Vec::new();
    plist::Value::Array(vec!["MessageType".into(), "Authenticate".into()])
        .to_writer_xml(&mut out)
        .expect("plist encodes");
    out
}

/// One bad device request and the response it must get.
struct Case {
    name: &'static str,
    path: &'static str,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
    /// Text the error message must contain.
    mentions: &'static str,
}

#[tokio::test]
async fn bad_device_input_stores_nothing() {
    let scene = Scene::start().await;
    let mac = &scene.mac.udid;
    let phone = &scene.phone.udid;
    let too_large = vec![b'x'; MAX_DEVICE_BODY_BYTES + 1];

    let cases = [
        Case {
            name: "malformed plist",
            path: "/mdm/checkin",
            body: b"<?xml version=\"1.0\"?><plist><dict><key>MessageType</key>".to_vec(),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "property list",
        },
        // The plist parser reads plain text as an OpenStep string, so this
        // fails as a root that is not a dictionary.
        Case {
            name: "plain text body",
            path: "/mdm/checkin",
            body: b"MessageType=Authenticate".to_vec(),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "expected a dictionary",
        },
        Case {
            name: "plist root is an array",
            path: "/mdm/checkin",
            body: array_plist(),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "expected a dictionary",
        },
        Case {
            name: "unknown MessageType",
            path: "/mdm/checkin",
            body: checkin(mac, "FutureMessage", &[]),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "FutureMessage",
        },
        Case {
            name: "TokenUpdate without its keys",
            path: "/mdm/checkin",
            body: checkin(mac, "TokenUpdate", &[]),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "TokenUpdate",
        },
        Case {
            name: "unknown DDM endpoint",
            path: "/mdm/checkin",
            body: declarative(phone, "future/endpoint", None),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "future/endpoint",
        },
        Case {
            name: "status report not JSON",
            path: "/mdm/checkin",
            body: declarative(phone, "status", Some(b"install-state=downloading")),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "status report",
        },
        Case {
            name: "status report root is an array",
            path: "/mdm/checkin",
            body: declarative(phone, "status", Some(b"[]")),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "status report",
        },
        Case {
            name: "status report without Data",
            path: "/mdm/checkin",
            body: declarative(phone, "status", None),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "Data",
        },
        Case {
            name: "check-in over the size limit",
            path: "/mdm/checkin",
            body: too_large.clone(),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            mentions: "limit",
        },
        Case {
            name: "result over the size limit",
            path: "/mdm/connect",
            body: too_large,
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            mentions: "limit",
        },
        Case {
            name: "empty check-in",
            path: "/mdm/checkin",
            body: Vec::new(),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "empty",
        },
        Case {
            name: "empty result",
            path: "/mdm/connect",
            body: Vec::new(),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "empty",
        },
        Case {
            name: "malformed result plist",
            path: "/mdm/connect",
            body: b"<plist><dict><key>Status</key><string>Idle".to_vec(),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "property list",
        },
        Case {
            name: "result root is an array",
            path: "/mdm/connect",
            body: array_plist(),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "expected a dictionary",
        },
        Case {
            name: "result without Status",
            path: "/mdm/connect",
            body: checkin(mac, "Ignored", &[("CommandUUID", "ABC".into())]),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_message",
            mentions: "Status",
        },
        Case {
            name: "TokenUpdate before Authenticate",
            path: "/mdm/checkin",
            body: token_update(&scene.ghost),
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            mentions: "MAC-GHOST",
        },
        Case {
            name: "DeclarativeManagement before Authenticate",
            path: "/mdm/checkin",
            body: declarative(&scene.ghost.udid, "tokens", None),
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            mentions: "MAC-GHOST",
        },
        Case {
            name: "Idle before Authenticate",
            path: "/mdm/connect",
            body: result(&scene.ghost.udid, None, CommandStatus::Idle),
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            mentions: "MAC-GHOST",
        },
        Case {
            name: "result before Authenticate",
            path: "/mdm/connect",
            body: result(
                &scene.ghost.udid,
                Some("01K0000000000000000000000"),
                CommandStatus::Acknowledged,
            ),
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            mentions: "MAC-GHOST",
        },
        Case {
            name: "result before TokenUpdate",
            path: "/mdm/connect",
            body: result(
                &scene.half.udid,
                Some("01K0000000000000000000000"),
                CommandStatus::Acknowledged,
            ),
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            mentions: "MAC-HALF",
        },
        Case {
            name: "Idle before TokenUpdate",
            path: "/mdm/connect",
            body: result(&scene.half.udid, None, CommandStatus::Idle),
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            mentions: "MAC-HALF",
        },
        Case {
            name: "DeclarativeManagement before TokenUpdate",
            path: "/mdm/checkin",
            body: declarative(&scene.half.udid, "tokens", None),
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            mentions: "MAC-HALF",
        },
    ];

    let before = scene.snapshot().await;
    assert!(
        before
            .stored
            .iter()
            .any(|(device, ..)| device.udid == *phone && !device.ddm_active),
        "the iPhone has not used declarative management yet, so a write of ddm_active would show"
    );
    for case in &cases {
        let (status, body) = scene.server.put_device(case.path, case.body.clone()).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, case.status, "{}: {text}", case.name);
        let error: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{}: the body is not JSON ({e}): {text}", case.name));
        assert_eq!(error["error"]["code"], case.code, "{}: {error}", case.name);
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{}: an error message: {error}",
            case.name
        );
        assert!(
            message.contains(case.mentions),
            "{}: the message {message:?} mentions {:?}",
            case.name,
            case.mentions
        );
        scene.snapshot().await.assert_same(&before, case.name);
    }

    let (status, _) = scene
        .server
        .get(&format!("/devices/{}", scene.ghost.udid))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a device that never authenticated is not in the inventory"
    );
    // The server still serves well-formed requests.
    let (status, tokens) = scene.phone.ddm(&scene.server, "tokens", None).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    scene.server.stop().await;
}

#[tokio::test]
async fn body_at_the_limit_is_read() {
    let server = TestServer::start().await;
    // Exactly the limit is read and then rejected as a malformed plist,
    // not as too large.
    let body = vec![b'x'; MAX_DEVICE_BODY_BYTES];
    for path in ["/mdm/checkin", "/mdm/connect"] {
        let (status, response) = server.put_device(path, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            String::from_utf8_lossy(&response)
        );
    }
    server.stop().await;
}

fn schedule_result(
    device: &TestDevice,
    uuid: &str,
    envelope: CommandStatus,
    update: Option<UpdateResultStatus>,
) -> CommandResult {
    let result = CommandResult::new(device.udid.clone(), Some(uuid.to_string()), envelope);
    match update {
        None => result,
        Some(status) => result
            .with_response(&ScheduleOsUpdateResponse {
                update_results: vec![UpdateResult {
                    product_key: "MSU_UPDATE_24G830_patch_15.7.9".into(),
                    install_action: UpdateResultAction::DownloadOnly,
                    status,
                    error_chain: None,
                }],
            })
            .expect("schedule result"),
    }
}

#[tokio::test]
async fn unknown_result_status_is_recorded() {
    // (name, envelope Status, UpdateResults[0].Status, event key)
    let cases = [
        (
            "result Status",
            CommandStatus::from_wire("SomethingNew"),
            None,
            "Status",
        ),
        (
            "update Status",
            CommandStatus::Acknowledged,
            Some(UpdateResultStatus::from_wire("SomethingNew")),
            "UpdateResults[0].Status",
        ),
    ];
    for (name, envelope, update, key) in cases {
        let server = TestServer::start().await;
        let mac = TestDevice::mac("MAC-UNKNOWN", "15.7.7", "24G720");
        mac.enroll(&server).await;
        let operation = create(
            &server,
            json!({
                "update": { "product_version": "15.7.9" },
                "protocol": "mdm",
                "targets": { "device_ids": [mac.udid] },
                "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-29T22:00:00", "time_zone": "device_local" },
            }),
        )
        .await;
        let command = mac.idle(&server).await.expect("ScheduleOSUpdate");
        assert_eq!(command.command.request_type(), "ScheduleOSUpdate");
        mac.send_result(
            &server,
            schedule_result(&mac, &command.command_uuid, envelope, update),
        )
        .await;

        let statuses = server.statuses(&operation).await;
        assert_eq!(
            statuses.get(&mac.udid).map(String::as_str),
            Some("pending"),
            "{name}: an unknown value leaves the status unchanged"
        );
        let events = server.events(&operation).await;
        let unknown = events
            .iter()
            .find(|e| e["type"] == "unknown_value")
            .unwrap_or_else(|| {
                panic!(
                    "{name}: no unknown_value event in {:?}",
                    events.iter().map(|e| &e["type"]).collect::<Vec<_>>()
                )
            });
        assert_eq!(
            unknown["details"]["value"], "SomethingNew",
            "{name}: {unknown}"
        );
        assert_eq!(unknown["details"]["key"], key, "{name}: {unknown}");
        assert_eq!(unknown["device_id"], mac.udid.as_str(), "{name}: {unknown}");
        server.stop().await;
    }
}
