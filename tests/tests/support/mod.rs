//! A real `osdeploy serve` on 127.0.0.1 with a manual clock, an admin
//! client, and scriptable devices that speak the MDM and DDM protocols.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use osdeploy_cli::server::{self, ClockMode, ServeConfig, ServerHandle};
use osdeploy_shared::adapters::local_scheduler;
use osdeploy_shared::apple::mdm::{
    CommandEnvelope, CommandResult, CommandStatus, DeviceInformationResponse, QueryResponses,
    parse_command,
};
use osdeploy_shared::domain::{Device, ManualClock};
use osdeploy_shared::ports::{DeviceStore, Schedule, ScheduleStore};
use osdeploy_shared::service::ServiceConfig;
use reqwest::StatusCode;
use serde_json::Value;

pub const TOKEN: &str = "test-admin-token";
pub const START: &str = "2026-08-22T09:00:00Z";

pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub database: PathBuf,
    /// Seed of this process's id generator. A restart takes the next one,
    /// because the same seed at the same clock reading would repeat ids
    /// already stored (a real process seeds from entropy).
    id_seed: u64,
    _dir: Arc<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("temporary directory"));
        let database = dir.path().join("osdeploy.db");
        let clock = Arc::new(ManualClock::new(START.parse().expect("start instant")));
        Self::start_with(dir, database, clock, 7).await
    }

    async fn start_with(
        dir: Arc<tempfile::TempDir>,
        database: PathBuf,
        clock: Arc<ManualClock>,
        id_seed: u64,
    ) -> TestServer {
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().expect("loopback address"),
            database: database.clone(),
            catalog_file: None,
            clock: ClockMode::Manual(clock.clone()),
            admin_token: Some(TOKEN.to_string()),
            service: ServiceConfig::default(),
            id_seed: Some(id_seed),
            run_scheduler: false,
        };
        let handle = server::start(config).await.expect("server starts");
        TestServer {
            handle: Some(handle),
            clock,
            client: reqwest::Client::new(),
            database,
            id_seed,
            _dir: dir,
        }
    }

    /// Stops the server and starts a new one on the same database and clock.
    pub async fn restart(mut self) -> TestServer {
        if let Some(handle) = self.handle.take() {
            handle.stop().await;
        }
        Self::start_with(
            self._dir.clone(),
            self.database.clone(),
            self.clock.clone(),
            self.id_seed + 1,
        )
        .await
    }

    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop().await;
        }
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("server running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle().url())
    }

    pub fn now(&self) -> Timestamp {
        use osdeploy_shared::domain::Clock;
        self.clock.now()
    }

    pub fn advance(&self, by: SignedDuration) {
        self.clock.advance(by);
    }

    /// Runs the schedules due at the current clock, as the loop would.
    pub async fn run_due_schedules(&self) -> usize {
        let handle = self.handle();
        local_scheduler::tick(&handle.services, handle.store.as_ref()).await
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.url(&format!("/api/v1{path}")))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        send_json(request).await
    }

    /// POST with extra headers, such as `Idempotency-Key`.
    pub async fn post_with_headers(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(self.url(&format!("/api/v1{path}")))
            .bearer_auth(TOKEN)
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send_json(request).await
    }

    /// Sends an admin request with a raw body and an optional `Authorization`
    /// header value, for malformed bodies and bad credentials.
    pub async fn admin_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.url(&format!("/api/v1{path}")));
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        send_json(request).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.admin(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.admin(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.admin(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.admin(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn put_device(&self, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let response = self
            .client
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .expect("device request");
        let status = response.status();
        (
            status,
            response.bytes().await.expect("device response").to_vec(),
        )
    }

    /// All pages of a list endpoint.
    pub async fn all(&self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let separator = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{separator}limit=200&cursor={c}"),
                None => format!("{path}{separator}limit=200"),
            };
            let (status, page) = self.get(&url).await;
            assert_eq!(status, StatusCode::OK, "GET {url}: {page}");
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return items,
            }
        }
    }

    /// Status of each device in an operation, keyed by device id.
    pub async fn statuses(&self, operation_id: &str) -> std::collections::BTreeMap<String, String> {
        self.all(&format!("/operations/{operation_id}/devices"))
            .await
            .into_iter()
            .map(|t| {
                (
                    t["device_id"].as_str().unwrap_or_default().to_string(),
                    t["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    pub async fn events(&self, operation_id: &str) -> Vec<Value> {
        self.all(&format!("/operations/{operation_id}/events"))
            .await
    }

    /// Returns the event types of an operation, in the order its event list has them.
    pub async fn event_types(&self, operation_id: &str) -> Vec<String> {
        self.events(operation_id)
            .await
            .iter()
            .filter_map(|e| e["type"].as_str().map(str::to_string))
            .collect()
    }

    /// Returns the stored schedules (deadlines, expiry) of one operation.
    pub async fn schedules_of(&self, operation_id: &str) -> Vec<Schedule> {
        self.handle()
            .store
            .all()
            .await
            .expect("read schedules")
            .into_iter()
            .filter(|s| s.job.operation_id() == Some(operation_id))
            .collect()
    }

    /// Returns the device record as stored, with fields the API does not
    /// show (revision, whether declarative management is active).
    pub async fn stored_device(&self, udid: &str) -> Option<Device> {
        self.handle()
            .store
            .get_device(udid)
            .await
            .expect("read device")
    }
}

async fn send_json(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("admin request");
    let status = response.status();
    let text = response.text().await.expect("admin response body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// A device whose every exchange the test scripts.
#[derive(Debug, Clone)]
pub struct TestDevice {
    pub udid: String,
    /// Model identifier, such as `Mac14,7` or `iPhone15,2`.
    pub model: String,
    pub os_version: String,
    pub build: String,
    pub supervised: bool,
    pub name: String,
    pub serial: String,
    pub time_zone: Option<String>,
}

impl TestDevice {
    pub fn mac(udid: &str, os_version: &str, build: &str) -> TestDevice {
        TestDevice {
            udid: udid.into(),
            model: "Mac14,7".into(),
            os_version: os_version.into(),
            build: build.into(),
            supervised: true,
            name: format!("Mac {udid}"),
            serial: format!("C02{udid}"),
            time_zone: None,
        }
    }

    pub fn iphone(udid: &str, os_version: &str, build: &str) -> TestDevice {
        TestDevice {
            udid: udid.into(),
            model: "iPhone15,2".into(),
            os_version: os_version.into(),
            build: build.into(),
            supervised: true,
            name: format!("iPhone {udid}"),
            serial: format!("F2L{udid}"),
            time_zone: Some("Europe/Berlin".into()),
        }
    }

    fn is_mac(&self) -> bool {
        self.model.starts_with("Mac")
    }

    pub fn authenticate_body(&self) -> Vec<u8> {
        let mut dict = plist::Dictionary::new();
        dict.insert("MessageType".into(), "Authenticate".into());
        dict.insert("Topic".into(), "com.apple.mgmt.External.test".into());
        dict.insert("UDID".into(), self.udid.clone().into());
        dict.insert("SerialNumber".into(), self.serial.clone().into());
        if self.is_mac() {
            dict.insert("DeviceName".into(), self.name.clone().into());
            dict.insert("Model".into(), self.model.clone().into());
            dict.insert("ModelName".into(), "MacBook Pro".into());
        } else {
            dict.insert("ProductName".into(), self.model.clone().into());
            dict.insert("OSVersion".into(), self.os_version.clone().into());
            dict.insert("BuildVersion".into(), self.build.clone().into());
        }
        plist_xml(dict)
    }

    pub fn token_update_body(&self) -> Vec<u8> {
        let mut dict = plist::Dictionary::new();
        dict.insert("MessageType".into(), "TokenUpdate".into());
        dict.insert("Topic".into(), "com.apple.mgmt.External.test".into());
        dict.insert("UDID".into(), self.udid.clone().into());
        dict.insert("Token".into(), plist::Value::Data(vec![1, 2, 3, 4]));
        dict.insert("PushMagic".into(), format!("magic-{}", self.udid).into());
        plist_xml(dict)
    }

    /// Authenticate, TokenUpdate, then answer the inventory query (and
    /// acknowledge the DeclarativeManagement command a DDM device gets).
    pub async fn enroll(&self, server: &TestServer) {
        let (status, _) = server
            .put_device("/mdm/checkin", self.authenticate_body())
            .await;
        assert_eq!(status, StatusCode::OK, "Authenticate for {}", self.udid);
        let (status, _) = server
            .put_device("/mdm/checkin", self.token_update_body())
            .await;
        assert_eq!(status, StatusCode::OK, "TokenUpdate for {}", self.udid);
        let mut command = self.idle(server).await;
        while let Some(envelope) = command {
            command = self
                .answer(server, &envelope, self.acknowledge(&envelope))
                .await;
        }
    }

    /// Sends only Authenticate: the device is known but not yet enrolled.
    pub async fn authenticate(&self, server: &TestServer) {
        let (status, _) = server
            .put_device("/mdm/checkin", self.authenticate_body())
            .await;
        assert_eq!(status, StatusCode::OK, "Authenticate for {}", self.udid);
    }

    /// Sets the device's time zone through the admin API, as macOS does not
    /// report one over MDM.
    pub async fn set_time_zone(&self, server: &TestServer, zone: &str) {
        let (status, body) = server
            .patch(
                &format!("/devices/{}", self.udid),
                &serde_json::json!({ "time_zone": zone }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "set {} to {zone}: {body}",
            self.udid
        );
    }

    /// Sends an Idle result; returns the command the server sent back.
    pub async fn idle(&self, server: &TestServer) -> Option<CommandEnvelope> {
        let result = CommandResult::new(self.udid.clone(), None, CommandStatus::Idle);
        self.send_result(server, result).await
    }

    pub async fn send_result(
        &self,
        server: &TestServer,
        result: CommandResult,
    ) -> Option<CommandEnvelope> {
        let (status, body) = server
            .put_device("/mdm/connect", result.to_plist_xml().expect("result plist"))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "connect for {}: {}",
            self.udid,
            String::from_utf8_lossy(&body)
        );
        if body.is_empty() {
            None
        } else {
            Some(parse_command(&body).expect("server sends a valid command"))
        }
    }

    /// Answers a command with `result` and returns the next command.
    pub async fn answer(
        &self,
        server: &TestServer,
        _command: &CommandEnvelope,
        result: CommandResult,
    ) -> Option<CommandEnvelope> {
        self.send_result(server, result).await
    }

    /// The plain acknowledgement of a command, with inventory for DeviceInformation.
    pub fn acknowledge(&self, envelope: &CommandEnvelope) -> CommandResult {
        let result = CommandResult::new(
            self.udid.clone(),
            Some(envelope.command_uuid.clone()),
            CommandStatus::Acknowledged,
        );
        match envelope.command.request_type() {
            "DeviceInformation" => result
                .with_response(&DeviceInformationResponse {
                    query_responses: self.query_responses(),
                })
                .expect("device information response"),
            _ => result,
        }
    }

    pub fn query_responses(&self) -> QueryResponses {
        QueryResponses {
            udid: Some(self.udid.clone()),
            os_version: Some(self.os_version.clone()),
            build_version: Some(self.build.clone()),
            product_name: (!self.is_mac()).then(|| self.model.clone()),
            model: self.is_mac().then(|| self.model.clone()),
            model_name: Some(
                if self.is_mac() {
                    "MacBook Pro"
                } else {
                    "iPhone"
                }
                .to_string(),
            ),
            serial_number: Some(self.serial.clone()),
            device_name: Some(self.name.clone()),
            is_supervised: Some(self.supervised),
            software_update_device_id: Some(if self.is_mac() {
                "J493AP".to_string()
            } else {
                self.model.clone()
            }),
            time_zone: if self.is_mac() {
                None
            } else {
                self.time_zone.clone()
            },
            ..Default::default()
        }
    }

    /// A DeclarativeManagement check-in; returns the status and the JSON body.
    pub async fn ddm(
        &self,
        server: &TestServer,
        endpoint: &str,
        data: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let mut dict = plist::Dictionary::new();
        dict.insert("MessageType".into(), "DeclarativeManagement".into());
        dict.insert("UDID".into(), self.udid.clone().into());
        dict.insert("Endpoint".into(), endpoint.into());
        if let Some(data) = data {
            dict.insert("Data".into(), plist::Value::Data(data));
        }
        let (status, body) = server.put_device("/mdm/checkin", plist_xml(dict)).await;
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or(Value::String(String::from_utf8_lossy(&body).into()))
        };
        (status, value)
    }

    /// Sends a status report built from nested JSON items.
    pub async fn status(&self, server: &TestServer, items: Value) -> StatusCode {
        let report = serde_json::json!({ "StatusItems": items, "Errors": [], "FullReport": false });
        self.ddm(
            server,
            "status",
            Some(serde_json::to_vec(&report).expect("status json")),
        )
        .await
        .0
    }
}

/// Creates an operation and returns its id, asserting 201.
pub async fn create(server: &TestServer, body: Value) -> String {
    let (status, created) = server.post("/operations", &body).await;
    assert_eq!(status, StatusCode::CREATED, "create operation: {created}");
    created["id"].as_str().expect("operation id").to_string()
}

pub fn hours(n: i64) -> SignedDuration {
    SignedDuration::from_hours(n)
}

pub fn minutes(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

pub fn plist_xml(dict: plist::Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    plist::Value::Dictionary(dict)
        .to_writer_xml(&mut out)
        .expect("plist encodes");
    out
}
