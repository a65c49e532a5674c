//! CSV exports on the AWS adapters: DynamoDB for the rows, S3 for the
//! records and files, both on moto. The download is the S3 presigned URL
//! the export hands out, fetched without other credentials.

mod aws_support;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::SignedDuration;
use osdeploy_shared::adapters::aws::dynamodb::{DynamoStore, create_tables};
use osdeploy_shared::adapters::aws::{AwsSettings, S3BlobStore};
use osdeploy_shared::adapters::{RecordedPush, SqliteStore, local_scheduler};
use osdeploy_shared::apple::mdm::{CommandEnvelope, CommandResult, CommandStatus, parse_command};
use osdeploy_shared::catalog::Catalog;
use osdeploy_shared::domain::Protocol;
use osdeploy_shared::domain::{
    Actor, Clock, EVENT_RETENTION, Event, EventType, ManualClock, UlidGenerator,
};
use osdeploy_shared::export::{ExportQuery, ExportState};
use osdeploy_shared::ports::{EventFilter, EventStore, OperationFilter, PageRequest, TargetFilter};
use osdeploy_shared::service::exports::ExportView;
use osdeploy_shared::service::operations::CreateOperationRequest;
use osdeploy_shared::service::{Ports, ServiceConfig, Services};
use serde_json::json;
use support::TestDevice;

struct Deployment {
    services: Services,
    clock: Arc<ManualClock>,
    schedules: Arc<SqliteStore>,
    store: Arc<DynamoStore>,
    events_table: String,
    dynamodb: aws_sdk_dynamodb::Client,
}

/// Builds the services over new tables and a new bucket on moto. Schedules
/// stay in memory and are run by the local loop's `tick`, as EventBridge
/// Scheduler would fire them.
async fn deployment(label: &str) -> Deployment {
    let endpoint = aws_support::endpoint();
    let sdk = AwsSettings::emulator(&endpoint).sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let tables = aws_support::unique_tables(label);
    if let Err(error) = create_tables(&dynamodb, &tables).await {
        panic!("creating tables {tables:?} on the emulator at {endpoint} failed: {error:?}");
    }
    let events_table = tables.events.clone();
    let store = Arc::new(DynamoStore::new(dynamodb.clone(), tables));
    let bucket = aws_support::unique_bucket(&sdk, label).await;
    let schedules = Arc::new(SqliteStore::in_memory().expect("in-memory schedule store"));
    let ports = Ports {
        devices: store.clone(),
        groups: store.clone(),
        operations: store.clone(),
        events: store.clone(),
        scheduler: schedules.clone(),
        schedules: Some(schedules.clone()),
        catalogs: store.clone(),
        push: Arc::new(RecordedPush::default()),
        publisher: Arc::new(osdeploy_shared::adapters::ChannelPublisher::default()),
        blobs: Arc::new(S3BlobStore::new(aws_support::s3_client(&sdk), bucket)),
    };
    let clock = Arc::new(ManualClock::new(
        support::START.parse().expect("start instant"),
    ));
    let services = Services::new(
        ports,
        clock.clone(),
        Arc::new(UlidGenerator::seeded(11)),
        Arc::new(Catalog::bundled().clone()),
        ServiceConfig::default(),
    );
    Deployment {
        services,
        clock,
        schedules,
        store,
        events_table,
        dynamodb,
    }
}

async fn connect(services: &Services, result: CommandResult) -> Option<CommandEnvelope> {
    let body = result.to_plist_xml().expect("result plist");
    let reply = services
        .handle_connect(&body)
        .await
        .expect("command result accepted");
    reply.map(|body| parse_command(&body).expect("a valid command"))
}

/// Enrolls `device` through the use cases: check-in, then the inventory query.
async fn enroll(services: &Services, device: &TestDevice) {
    for body in [device.authenticate_body(), device.token_update_body()] {
        services
            .handle_checkin(&body)
            .await
            .expect("enrollment check-in");
    }
    let idle = CommandResult::new(device.udid.clone(), None, CommandStatus::Idle);
    let mut next = connect(services, idle).await;
    while let Some(envelope) = next {
        next = connect(services, device.acknowledge(&envelope)).await;
    }
}

async fn create_operation(services: &Services, devices: &[TestDevice]) -> String {
    let udids: Vec<&str> = devices.iter().map(|d| d.udid.as_str()).collect();
    let request: CreateOperationRequest = serde_json::from_value(json!({
        "update": { "product_version": "26.6.1" },
        "protocol": "ddm",
        "targets": { "device_ids": udids },
        "install": { "method": "enforce_at_schedule", "local_date_time": "2026-08-29T22:00:00", "time_zone": "device_local" },
    }))
    .expect("create request");
    services
        .create_operation(&request, None, "admin")
        .await
        .expect("operation created")
        .operation
        .id
}

/// Requests an export, fires its schedule and returns the finished export.
async fn run_export(deployment: &Deployment, query: ExportQuery) -> ExportView {
    let services = &deployment.services;
    let queued = services
        .create_export(query, BTreeMap::new())
        .await
        .expect("export accepted");
    assert_eq!(queued.state, ExportState::Queued);
    let ran = local_scheduler::tick(services, deployment.schedules.as_ref()).await;
    assert!(ran >= 1, "the export job must be due at once");
    let export = services.get_export(&queued.id).await.expect("export state");
    assert_eq!(
        export.state,
        ExportState::Done,
        "export failed: {:?}",
        export.error
    );
    export
}

/// Fetches the presigned URL with a plain HTTP client and parses the CSV.
async fn download_csv(url: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let response = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .expect("GET of the presigned URL");
    assert_eq!(response.status(), reqwest::StatusCode::OK, "GET {url}");
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/csv"),
        "content type {content_type}"
    );
    let body = response.bytes().await.expect("body");
    let mut reader = csv::ReaderBuilder::new().from_reader(body.as_ref());
    let header: Vec<String> = reader
        .headers()
        .expect("header row")
        .iter()
        .map(str::to_string)
        .collect();
    let records = reader
        .records()
        .map(|r| r.expect("valid CSV").iter().map(str::to_string).collect())
        .collect();
    (header, records)
}

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("column {name} missing from {header:?}"))
}

#[tokio::test]
async fn device_export_through_presigned_url() {
    let deployment = deployment("export-devices").await;
    let names = [
        ("=1+2", "'=1+2"),
        ("-cmd|' /C calc'!A0", "'-cmd|' /C calc'!A0"),
        ("Büro, \"3. Stock\"\nlinks", "Büro, \"3. Stock\"\nlinks"),
        ("مكتب دبي", "مكتب دبي"),
    ];
    let mut devices = Vec::new();
    for (index, (name, _)) in names.iter().enumerate() {
        let mut device = TestDevice::iphone(&format!("S3EXPORT-{index}"), "18.7", "22H20");
        device.name = name.to_string();
        enroll(&deployment.services, &device).await;
        devices.push(device);
    }
    let operation_id = create_operation(&deployment.services, &devices).await;

    let export = run_export(
        &deployment,
        ExportQuery::Devices {
            operation_id: operation_id.clone(),
            filter: TargetFilter::default(),
        },
    )
    .await;
    assert_eq!(export.rows, Some(devices.len() as u64));
    let url = export.url.as_deref().expect("a done export has a URL");
    assert!(
        url.contains("X-Amz-Signature="),
        "the URL is presigned: {url}"
    );
    assert_eq!(
        export.expires_at,
        Some(deployment.clock.now() + SignedDuration::from_hours(1))
    );

    let (header, records) = download_csv(url).await;
    assert_eq!(records.len(), devices.len());
    let id_column = column(&header, "device_id");
    let name_column = column(&header, "device_name");
    for (device, (_, shown)) in devices.iter().zip(names) {
        let record = records
            .iter()
            .find(|r| r[id_column] == device.udid)
            .unwrap_or_else(|| panic!("device {} missing", device.udid));
        assert_eq!(record[name_column], shown, "name of {}", device.udid);
    }

    // The operations list through its protocol index, filtered as
    // GET /operations?protocol= filters it.
    for (protocol, expected_rows) in [(Protocol::Ddm, 1), (Protocol::Mdm, 0)] {
        let export = run_export(
            &deployment,
            ExportQuery::Operations {
                filter: OperationFilter {
                    protocol: Some(protocol),
                    ..Default::default()
                },
            },
        )
        .await;
        assert_eq!(export.rows, Some(expected_rows), "{protocol:?} operations");
        let (header, records) = download_csv(export.url.as_deref().expect("url")).await;
        assert_eq!(records.len() as u64, expected_rows);
        if let Some(record) = records.first() {
            assert_eq!(record[column(&header, "id")], operation_id);
            assert_eq!(
                record[column(&header, "total_devices")],
                devices.len().to_string()
            );
        }
    }
}

#[tokio::test]
async fn expired_events_absent_on_dynamodb() {
    let deployment = deployment("export-events").await;
    let services = &deployment.services;
    let device = TestDevice::iphone("S3EVENTS-1", "18.7", "22H20");
    enroll(services, &device).await;
    let operation_id = create_operation(services, std::slice::from_ref(&device)).await;
    let first_page = PageRequest::first(1000);
    let at_creation = deployment
        .store
        .list_events(
            &operation_id,
            &EventFilter::default(),
            deployment.clock.now(),
            &first_page,
        )
        .await
        .expect("events at creation");
    assert!(
        !at_creation.items.is_empty(),
        "creating an operation records events"
    );

    deployment.clock.advance(SignedDuration::from_hours(48));
    let later = deployment.clock.now();
    let recent = Event {
        id: "01KRECENTS3EVENT00000000000".into(),
        operation_id: operation_id.clone(),
        device_id: Some(device.udid.clone()),
        event_type: EventType::InstallationFailed,
        details: json!({ "error": "InstallFailed: battery too low", "attempt": 2, "will_retry": true }),
        actor: Actor::Device,
        at: later,
        expires_at: later + EVENT_RETENTION,
    };
    deployment
        .store
        .append(std::slice::from_ref(&recent))
        .await
        .expect("append the recent event");
    deployment
        .clock
        .advance(SignedDuration::from_hours(89 * 24));

    let listed = deployment
        .store
        .list_events(
            &operation_id,
            &EventFilter::default(),
            deployment.clock.now(),
            &first_page,
        )
        .await
        .expect("events after 91 days");
    let listed_ids: Vec<&str> = listed.items.iter().map(|e| e.id.as_str()).collect();
    for old in &at_creation.items {
        assert!(
            !listed_ids.contains(&old.id.as_str()),
            "event {} is 91 days old and must not be read",
            old.id
        );
    }
    assert!(listed_ids.contains(&recent.id.as_str()));

    let export = run_export(
        &deployment,
        ExportQuery::Events {
            operation_id: operation_id.clone(),
            filter: EventFilter::default(),
        },
    )
    .await;
    let (header, records) = download_csv(export.url.as_deref().expect("url")).await;
    let id_column = column(&header, "id");
    let exported: Vec<&str> = records.iter().map(|r| r[id_column].as_str()).collect();
    for old in &at_creation.items {
        assert!(
            !exported.contains(&old.id.as_str()),
            "event {} is 91 days old and must not be exported",
            old.id
        );
    }
    let row = records
        .iter()
        .find(|r| r[id_column] == recent.id)
        .expect("the 89-day-old event is exported");
    assert_eq!(
        row[column(&header, "error")],
        "InstallFailed: battery too low"
    );
    assert_eq!(row[column(&header, "attempt")], "2");

    // DynamoDB deletes the items itself, by TTL on expires_at.
    let ttl = deployment
        .dynamodb
        .describe_time_to_live()
        .table_name(&deployment.events_table)
        .send()
        .await
        .expect("DescribeTimeToLive");
    let description = ttl.time_to_live_description().expect("TTL description");
    assert_eq!(description.attribute_name(), Some("expires_at"));
    assert_eq!(
        description.time_to_live_status().map(|s| s.as_str()),
        Some("ENABLED")
    );
}
