//! Tests for the MDM wire types.
//!
//! The expected key lists and value sets below are copied from Apple's
//! device-management schemas (release "Release_iOS-18-1_macOS-15-1"), so
//! that a misspelt key fails here rather than on a device.

use std::collections::BTreeSet;

use plist::{Dictionary, Value};

use super::*;
use crate::apple::ddm::{SyncTokens, TokensResponse, parse_status_report};
use crate::apple::{UnknownValue, WireError, to_plist_xml};

const MAC_UDID: &str = "6A1E3C55-92B8-5F0D-A4C7-3E19B0D2F871";
const IPHONE_UDID: &str = "00008120-001A2B3C4D5E801E";
const TOPIC: &str = "com.apple.mgmt.External.8c1f4d2e-5b6a-4c3d-9e8f-1a2b3c4d5e6f";

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|key| (*key).to_owned()).collect()
}

/// Top-level keys of a serialized plist dictionary.
fn plist_keys(body: &[u8]) -> BTreeSet<String> {
    let value: Value = plist::from_bytes(body).unwrap();
    value.into_dictionary().unwrap().keys().cloned().collect()
}

fn dictionary(body: &[u8]) -> Dictionary {
    let value: Value = plist::from_bytes(body).unwrap();
    value.into_dictionary().unwrap()
}

fn xml_of(dict: Dictionary) -> Vec<u8> {
    to_plist_xml(&Value::Dictionary(dict)).unwrap()
}

// Check-in messages.

fn full_authenticate() -> Authenticate {
    Authenticate {
        topic: TOPIC.to_owned(),
        udid: Some(MAC_UDID.to_owned()),
        enrollment_id: Some("enrollment-1".to_owned()),
        device_name: Some("Build Mac mini 07".to_owned()),
        model: Some("Mac14,3".to_owned()),
        model_name: Some("Mac mini".to_owned()),
        product_name: Some("Mac14,3".to_owned()),
        os_version: Some("26.0.1".to_owned()),
        build_version: Some("25A362".to_owned()),
        serial_number: Some("H7WQ2LX9PF".to_owned()),
        imei: Some("35 391811 072215 4".to_owned()),
        meid: Some("35391811072215".to_owned()),
    }
}

fn full_token_update() -> TokenUpdate {
    TokenUpdate {
        topic: TOPIC.to_owned(),
        udid: Some(MAC_UDID.to_owned()),
        enrollment_id: Some("enrollment-1".to_owned()),
        enrollment_user_id: Some("enrollment-user-1".to_owned()),
        user_short_name: Some("ada".to_owned()),
        user_id: Some("501".to_owned()),
        user_long_name: Some("Ada Lovelace".to_owned()),
        not_on_console: Some(false),
        token: vec![0xde, 0xad, 0xbe, 0xef],
        push_magic: "7C2B94E1-0F3A-4D58-B6E7-2A9C1D3F5E80".to_owned(),
        unlock_token: Some(b"unlock".to_vec()),
        awaiting_configuration: Some(true),
    }
}

fn full_check_out() -> CheckOut {
    CheckOut {
        topic: TOPIC.to_owned(),
        udid: Some(MAC_UDID.to_owned()),
        enrollment_id: Some("enrollment-1".to_owned()),
    }
}

fn full_declarative_management() -> DeclarativeManagement {
    DeclarativeManagement {
        endpoint: "status".to_owned(),
        data: Some(br#"{"StatusItems":{},"Errors":[]}"#.to_vec()),
        udid: Some(MAC_UDID.to_owned()),
        enrollment_id: Some("enrollment-1".to_owned()),
        enrollment_user_id: Some("enrollment-user-1".to_owned()),
        user_short_name: Some("ada".to_owned()),
        user_id: Some("501".to_owned()),
        user_long_name: Some("Ada Lovelace".to_owned()),
    }
}

fn full_set_bootstrap_token() -> SetBootstrapToken {
    SetBootstrapToken {
        udid: Some(MAC_UDID.to_owned()),
        enrollment_id: None,
        bootstrap_token: Some(b"bootstrap".to_vec()),
        awaiting_configuration: Some(false),
    }
}

fn full_get_bootstrap_token() -> GetBootstrapToken {
    GetBootstrapToken {
        udid: Some(MAC_UDID.to_owned()),
        enrollment_id: None,
        awaiting_configuration: Some(true),
    }
}

fn all_checkin_messages() -> Vec<CheckinMessage> {
    vec![
        CheckinMessage::Authenticate(full_authenticate()),
        CheckinMessage::TokenUpdate(full_token_update()),
        CheckinMessage::CheckOut(full_check_out()),
        CheckinMessage::DeclarativeManagement(full_declarative_management()),
        CheckinMessage::SetBootstrapToken(full_set_bootstrap_token()),
        CheckinMessage::GetBootstrapToken(full_get_bootstrap_token()),
    ]
}

#[test]
fn checkin_messages_round_trip() {
    for message in all_checkin_messages() {
        let body = message.to_plist_xml().unwrap();
        let parsed = parse_checkin(&body).unwrap();
        assert_eq!(parsed, message, "round trip of {}", message.message_type());
    }
}

#[test]
fn checkin_binary_plist_parses() {
    let message = CheckinMessage::TokenUpdate(full_token_update());
    let mut body = Vec::new();
    plist::to_writer_binary(&mut body, &message).unwrap();
    assert_eq!(parse_checkin(&body).unwrap(), message);
}

#[test]
fn checkin_keys_match_schema() {
    // Payload keys per message, from Apple's check-in schemas. The
    // bootstrap-token messages add UDID, which the schema omits (see the
    // NOTE on SetBootstrapToken).
    let cases: [(CheckinMessage, &[&str]); 6] = [
        (
            CheckinMessage::Authenticate(full_authenticate()),
            &[
                "DeviceName",
                "ModelName",
                "Model",
                "MessageType",
                "Topic",
                "UDID",
                "EnrollmentID",
                "OSVersion",
                "BuildVersion",
                "ProductName",
                "SerialNumber",
                "IMEI",
                "MEID",
            ],
        ),
        (
            CheckinMessage::TokenUpdate(full_token_update()),
            &[
                "NotOnConsole",
                "MessageType",
                "Topic",
                "UDID",
                "EnrollmentID",
                "EnrollmentUserID",
                "UserShortName",
                "UserID",
                "UserLongName",
                "Token",
                "PushMagic",
                "UnlockToken",
                "AwaitingConfiguration",
            ],
        ),
        (
            CheckinMessage::CheckOut(full_check_out()),
            &["MessageType", "Topic", "UDID", "EnrollmentID"],
        ),
        (
            CheckinMessage::DeclarativeManagement(full_declarative_management()),
            &[
                "MessageType",
                "Endpoint",
                "Data",
                "UDID",
                "EnrollmentID",
                "EnrollmentUserID",
                "UserShortName",
                "UserID",
                "UserLongName",
            ],
        ),
        (
            CheckinMessage::SetBootstrapToken(full_set_bootstrap_token()),
            &[
                "MessageType",
                "BootstrapToken",
                "AwaitingConfiguration",
                "UDID",
            ],
        ),
        (
            CheckinMessage::GetBootstrapToken(full_get_bootstrap_token()),
            &["MessageType", "AwaitingConfiguration", "UDID"],
        ),
    ];
    for (message, expected) in cases {
        let keys = plist_keys(&message.to_plist_xml().unwrap());
        assert_eq!(keys, set(expected), "keys of {}", message.message_type());
    }
}

#[test]
fn checkin_message_type_values_match_schema() {
    let expected = [
        "Authenticate",
        "TokenUpdate",
        "CheckOut",
        "DeclarativeManagement",
        "SetBootstrapToken",
        "GetBootstrapToken",
    ];
    for (message, expected) in all_checkin_messages().iter().zip(expected) {
        assert_eq!(message.message_type(), expected);
        let dict = dictionary(&message.to_plist_xml().unwrap());
        assert_eq!(
            dict.get("MessageType").and_then(Value::as_string),
            Some(expected)
        );
    }
}

#[test]
fn checkin_data_fields_are_plist_data() {
    let body = CheckinMessage::TokenUpdate(full_token_update())
        .to_plist_xml()
        .unwrap();
    let dict = dictionary(&body);
    assert!(
        matches!(dict.get("Token"), Some(Value::Data(bytes)) if bytes == &[0xde, 0xad, 0xbe, 0xef])
    );
    assert!(matches!(dict.get("UnlockToken"), Some(Value::Data(bytes)) if bytes == b"unlock"));
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("<data>"),
        "Token should be written as <data>: {text}"
    );
}

#[test]
fn authenticate_from_mac_parses() {
    let message = parse_checkin(include_bytes!("../testdata/authenticate_mac.plist")).unwrap();
    let CheckinMessage::Authenticate(auth) = message else {
        panic!("expected Authenticate, got {message:?}");
    };
    assert_eq!(auth.topic, TOPIC);
    assert_eq!(auth.udid.as_deref(), Some(MAC_UDID));
    assert_eq!(auth.device_name.as_deref(), Some("Build Mac mini 07"));
    assert_eq!(auth.model.as_deref(), Some("Mac14,3"));
    assert_eq!(auth.model_name.as_deref(), Some("Mac mini"));
    assert_eq!(auth.serial_number.as_deref(), Some("H7WQ2LX9PF"));
    assert_eq!(auth.os_version.as_deref(), Some("26.0.1"));
    assert_eq!(auth.enrollment_id, None);
    assert_eq!(auth.imei, None);
}

#[test]
fn authenticate_from_iphone_parses() {
    let message = parse_checkin(include_bytes!("../testdata/authenticate_iphone.plist")).unwrap();
    assert_eq!(message.udid(), Some(IPHONE_UDID));
    let CheckinMessage::Authenticate(auth) = message else {
        panic!("expected Authenticate, got {message:?}");
    };
    assert_eq!(auth.product_name.as_deref(), Some("iPhone15,2"));
    assert_eq!(auth.os_version.as_deref(), Some("26.0.1"));
    assert_eq!(auth.build_version.as_deref(), Some("23A355"));
    assert_eq!(auth.imei.as_deref(), Some("35 391811 072215 4"));
    assert_eq!(auth.device_name, None);
    assert_eq!(auth.model, None);
}

#[test]
fn token_update_decodes_data() {
    let message = parse_checkin(include_bytes!("../testdata/tokenupdate_iphone.plist")).unwrap();
    let CheckinMessage::TokenUpdate(update) = message else {
        panic!("expected TokenUpdate, got {message:?}");
    };
    let expected_token: Vec<u8> = (0u8..32).collect();
    assert_eq!(update.token, expected_token);
    assert_eq!(
        update.unlock_token.as_deref(),
        Some(&b"UNLOCK-TOKEN-BLOB"[..])
    );
    assert_eq!(update.push_magic, "7C2B94E1-0F3A-4D58-B6E7-2A9C1D3F5E80");
    assert_eq!(update.awaiting_configuration, Some(false));
    assert_eq!(update.udid.as_deref(), Some(IPHONE_UDID));
}

#[test]
fn declarative_management_decodes_base64_data() {
    let body = include_bytes!("../testdata/declarativemanagement_status.plist");
    let message = parse_checkin(body).unwrap();
    let CheckinMessage::DeclarativeManagement(request) = message else {
        panic!("expected DeclarativeManagement, got {message:?}");
    };
    assert_eq!(
        request.endpoint().unwrap(),
        crate::apple::ddm::DdmEndpoint::Status
    );
    let data = request.data.unwrap();
    assert_eq!(data, include_bytes!("../testdata/status_report_mac.json"));
    let status = parse_status_report(&data).unwrap();
    assert_eq!(status.os_version.as_deref(), Some("26.0.1"));
}

#[test]
fn unknown_message_type_is_rejected() {
    for message_type in ["UserAuthenticate", "GetToken", "authenticate", ""] {
        let mut dict = Dictionary::new();
        dict.insert("MessageType".into(), Value::String(message_type.into()));
        dict.insert("Topic".into(), Value::String(TOPIC.into()));
        dict.insert("UDID".into(), Value::String(MAC_UDID.into()));
        let err = parse_checkin(&xml_of(dict)).unwrap_err();
        assert!(
            matches!(&err, WireError::UnknownMessageType { message_type: found } if found == message_type),
            "{message_type:?} gave {err:?}"
        );
    }
}

#[test]
fn missing_message_type_is_named() {
    let mut dict = Dictionary::new();
    dict.insert("Topic".into(), Value::String(TOPIC.into()));
    let err = parse_checkin(&xml_of(dict)).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::MissingKey {
                key: "MessageType",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn missing_required_key_is_named() {
    let cases: [(CheckinMessage, &str); 5] = [
        (CheckinMessage::Authenticate(full_authenticate()), "Topic"),
        (CheckinMessage::TokenUpdate(full_token_update()), "Topic"),
        (CheckinMessage::TokenUpdate(full_token_update()), "Token"),
        (
            CheckinMessage::TokenUpdate(full_token_update()),
            "PushMagic",
        ),
        (
            CheckinMessage::DeclarativeManagement(full_declarative_management()),
            "Endpoint",
        ),
    ];
    for (message, key) in cases {
        let mut dict = dictionary(&message.to_plist_xml().unwrap());
        dict.remove(key);
        let err = parse_checkin(&xml_of(dict)).unwrap_err();
        match err {
            WireError::MissingKey {
                key: found,
                message_type,
            } => {
                assert_eq!(found, key);
                assert_eq!(message_type, message.message_type());
            }
            other => panic!(
                "removing {key} from {} gave {other:?}",
                message.message_type()
            ),
        }
    }
}

#[test]
fn missing_udid_and_enrollment_id_is_named() {
    for message in all_checkin_messages().into_iter().take(4) {
        let mut dict = dictionary(&message.to_plist_xml().unwrap());
        dict.remove("UDID");
        dict.remove("EnrollmentID");
        let err = parse_checkin(&xml_of(dict)).unwrap_err();
        assert!(
            matches!(&err, WireError::MissingKey { key: "UDID", message_type } if message_type == message.message_type()),
            "{} gave {err:?}",
            message.message_type()
        );
    }
}

#[test]
fn enrollment_id_replaces_udid() {
    let mut auth = full_authenticate();
    auth.udid = None;
    let message = CheckinMessage::Authenticate(auth);
    let parsed = parse_checkin(&message.to_plist_xml().unwrap()).unwrap();
    assert_eq!(parsed.udid(), None);
    assert_eq!(parsed.enrollment_id(), Some("enrollment-1"));
}

#[test]
fn minimal_checkin_messages_parse() {
    // Only MessageType plus the keys parse_checkin requires.
    let cases: [(&str, &[(&str, Value)]); 6] = [
        (
            "Authenticate",
            &[
                ("Topic", Value::String(TOPIC.into())),
                ("UDID", Value::String(MAC_UDID.into())),
            ],
        ),
        (
            "TokenUpdate",
            &[
                ("Topic", Value::String(TOPIC.into())),
                ("UDID", Value::String(MAC_UDID.into())),
                ("Token", Value::Data(vec![1, 2, 3])),
                ("PushMagic", Value::String("magic".into())),
            ],
        ),
        (
            "CheckOut",
            &[
                ("Topic", Value::String(TOPIC.into())),
                ("UDID", Value::String(MAC_UDID.into())),
            ],
        ),
        (
            "DeclarativeManagement",
            &[
                ("Endpoint", Value::String("tokens".into())),
                ("UDID", Value::String(MAC_UDID.into())),
            ],
        ),
        ("SetBootstrapToken", &[]),
        ("GetBootstrapToken", &[]),
    ];
    for (message_type, entries) in cases {
        let mut dict = Dictionary::new();
        dict.insert("MessageType".into(), Value::String(message_type.into()));
        for (key, value) in entries {
            dict.insert((*key).to_owned(), value.clone());
        }
        let parsed = parse_checkin(&xml_of(dict));
        assert!(parsed.is_ok(), "{message_type}: {parsed:?}");
        assert_eq!(parsed.unwrap().message_type(), message_type);
    }
}

#[test]
fn malformed_plist_is_rejected() {
    let cases: [&[u8]; 4] = [
        b"",
        b"not a plist at all",
        b"<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>MessageType</key>",
        b"<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>A</key></dict></plist>",
    ];
    for body in cases {
        let err = parse_checkin(body).unwrap_err();
        assert!(
            matches!(err, WireError::MalformedPlist { .. }),
            "{:?} gave {err:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn non_dictionary_root_is_rejected() {
    let body = to_plist_xml(&Value::Array(vec![Value::String("Authenticate".into())])).unwrap();
    let err = parse_checkin(&body).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::RootNotDictionary {
                found: "an array",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_value_type_is_rejected() {
    let mut dict = dictionary(
        &CheckinMessage::TokenUpdate(full_token_update())
            .to_plist_xml()
            .unwrap(),
    );
    dict.insert("Token".into(), Value::String("AAEC".into()));
    let err = parse_checkin(&xml_of(dict)).unwrap_err();
    assert!(
        matches!(&err, WireError::InvalidMessage { message_type, .. } if message_type == "TokenUpdate"),
        "{err:?}"
    );

    let mut dict = Dictionary::new();
    dict.insert("MessageType".into(), Value::Integer(1.into()));
    let err = parse_checkin(&xml_of(dict)).unwrap_err();
    assert!(
        matches!(&err, WireError::InvalidValue { key, .. } if key == "MessageType"),
        "{err:?}"
    );
}

#[test]
fn unknown_checkin_keys_are_ignored() {
    let mut dict = dictionary(
        &CheckinMessage::CheckOut(full_check_out())
            .to_plist_xml()
            .unwrap(),
    );
    dict.insert("FutureKey".into(), Value::Boolean(true));
    let parsed = parse_checkin(&xml_of(dict)).unwrap();
    assert_eq!(parsed, CheckinMessage::CheckOut(full_check_out()));
}

#[test]
fn bootstrap_token_response_writes_data() {
    let response = GetBootstrapTokenResponse {
        bootstrap_token: Some(b"escrowed".to_vec()),
    };
    let body = to_plist_xml(&response).unwrap();
    let dict = dictionary(&body);
    assert_eq!(plist_keys(&body), set(&["BootstrapToken"]));
    assert!(matches!(dict.get("BootstrapToken"), Some(Value::Data(bytes)) if bytes == b"escrowed"));
    let parsed: GetBootstrapTokenResponse = plist::from_bytes(&body).unwrap();
    assert_eq!(parsed, response);

    let empty = to_plist_xml(&GetBootstrapTokenResponse::default()).unwrap();
    assert!(plist_keys(&empty).is_empty());
}

// Commands.

fn tokens() -> TokensResponse {
    TokensResponse {
        sync_tokens: SyncTokens {
            declarations_token: "abc123".to_owned(),
            timestamp: "2025-10-01T12:00:00Z".to_owned(),
        },
    }
}

fn full_schedule() -> ScheduleOsUpdate {
    ScheduleOsUpdate {
        updates: vec![
            OsUpdateItem {
                product_key: Some("MSU_UPDATE_25B78_patch_26.1_minor".to_owned()),
                product_version: Some("26.1".to_owned()),
                install_action: InstallAction::InstallLater,
                max_user_deferrals: Some(3),
                priority: Some(Priority::High),
            },
            OsUpdateItem::for_version("26.1", InstallAction::DownloadOnly),
        ],
    }
}

fn all_commands() -> Vec<Command> {
    vec![
        Command::ScheduleOsUpdate(full_schedule()),
        Command::OsUpdateStatus,
        Command::AvailableOsUpdates,
        Command::ScheduleOsUpdateScan(ScheduleOsUpdateScan { force: Some(true) }),
        Command::DeviceInformation(DeviceInformation::rollout_queries()),
        Command::DeclarativeManagement(
            DeclarativeManagementCommand::with_tokens(&tokens()).unwrap(),
        ),
    ]
}

#[test]
fn commands_round_trip() {
    for command in all_commands() {
        let envelope = CommandEnvelope::new("01K6ZP9Q3D7E8F9G0H1J2K3M4N", command);
        let body = envelope.to_plist_xml().unwrap();
        assert_eq!(parse_command(&body).unwrap(), envelope);
    }
}

#[test]
fn command_keys_match_schema() {
    let cases: [(Command, &str, &[&str]); 6] = [
        (
            Command::ScheduleOsUpdate(full_schedule()),
            "ScheduleOSUpdate",
            &["RequestType", "Updates"],
        ),
        (Command::OsUpdateStatus, "OSUpdateStatus", &["RequestType"]),
        (
            Command::AvailableOsUpdates,
            "AvailableOSUpdates",
            &["RequestType"],
        ),
        (
            Command::ScheduleOsUpdateScan(ScheduleOsUpdateScan { force: Some(false) }),
            "ScheduleOSUpdateScan",
            &["RequestType", "Force"],
        ),
        (
            Command::DeviceInformation(DeviceInformation::rollout_queries()),
            "DeviceInformation",
            &["RequestType", "Queries"],
        ),
        (
            Command::DeclarativeManagement(
                DeclarativeManagementCommand::with_tokens(&tokens()).unwrap(),
            ),
            "DeclarativeManagement",
            &["RequestType", "Data"],
        ),
    ];
    for (command, request_type, expected) in cases {
        assert_eq!(command.request_type(), request_type);
        let body = CommandEnvelope::new("uuid-1", command)
            .to_plist_xml()
            .unwrap();
        let envelope = dictionary(&body);
        let keys: BTreeSet<String> = envelope.keys().cloned().collect();
        assert_eq!(keys, set(&["CommandUUID", "Command"]));
        let inner = envelope
            .get("Command")
            .and_then(Value::as_dictionary)
            .unwrap();
        let keys: BTreeSet<String> = inner.keys().cloned().collect();
        assert_eq!(keys, set(expected), "keys of {request_type}");
        assert_eq!(
            inner.get("RequestType").and_then(Value::as_string),
            Some(request_type)
        );
    }
}

#[test]
fn schedule_update_item_keys_match_schema() {
    let body = CommandEnvelope::new("uuid-1", Command::ScheduleOsUpdate(full_schedule()))
        .to_plist_xml()
        .unwrap();
    let envelope = dictionary(&body);
    let updates = envelope
        .get("Command")
        .and_then(Value::as_dictionary)
        .and_then(|command| command.get("Updates"))
        .and_then(Value::as_array)
        .unwrap();
    let first: BTreeSet<String> = updates[0]
        .as_dictionary()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        first,
        set(&[
            "ProductKey",
            "ProductVersion",
            "InstallAction",
            "MaxUserDeferrals",
            "Priority"
        ])
    );
    let second: BTreeSet<String> = updates[1]
        .as_dictionary()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(second, set(&["ProductVersion", "InstallAction"]));
}

#[test]
fn install_action_values_match_schema() {
    // Exhaustive on purpose: a new variant must be added here as well.
    fn wire(action: InstallAction) -> &'static str {
        match action {
            InstallAction::Default => "Default",
            InstallAction::DownloadOnly => "DownloadOnly",
            InstallAction::InstallAsap => "InstallASAP",
            InstallAction::NotifyOnly => "NotifyOnly",
            InstallAction::InstallLater => "InstallLater",
            InstallAction::InstallForceRestart => "InstallForceRestart",
        }
    }
    let schema = [
        "Default",
        "DownloadOnly",
        "InstallASAP",
        "NotifyOnly",
        "InstallLater",
        "InstallForceRestart",
    ];
    let sent: Vec<String> = InstallAction::ALL
        .iter()
        .map(|action| {
            serde_json::to_value(action)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(sent, schema);
    for action in InstallAction::ALL {
        assert_eq!(serde_json::to_value(action).unwrap(), wire(action));
        assert_eq!(action.as_str(), wire(action));
    }
}

#[test]
fn priority_values_match_schema() {
    assert_eq!(serde_json::to_value(Priority::Low).unwrap(), "Low");
    assert_eq!(serde_json::to_value(Priority::High).unwrap(), "High");
}

#[test]
fn query_names_match_schema() {
    // QueryResponses keys from the DeviceInformation schema that we use.
    let schema = set(&[
        "UDID",
        "OSVersion",
        "BuildVersion",
        "SupplementalBuildVersion",
        "SupplementalOSVersionExtra",
        "ProductName",
        "Model",
        "ModelName",
        "SerialNumber",
        "DeviceName",
        "IsSupervised",
        "SoftwareUpdateDeviceID",
        "TimeZone",
    ]);
    assert_eq!(set(queries::ROLLOUT), schema);
    let named = [
        queries::UDID,
        queries::OS_VERSION,
        queries::BUILD_VERSION,
        queries::SUPPLEMENTAL_BUILD_VERSION,
        queries::SUPPLEMENTAL_OS_VERSION_EXTRA,
        queries::PRODUCT_NAME,
        queries::MODEL,
        queries::MODEL_NAME,
        queries::SERIAL_NUMBER,
        queries::DEVICE_NAME,
        queries::IS_SUPERVISED,
        queries::SOFTWARE_UPDATE_DEVICE_ID,
        queries::TIME_ZONE,
    ];
    assert_eq!(set(&named), schema);

    // Every query we send has a QueryResponses field with the same key.
    let responses = QueryResponses {
        udid: Some(String::new()),
        os_version: Some(String::new()),
        build_version: Some(String::new()),
        supplemental_build_version: Some(String::new()),
        supplemental_os_version_extra: Some(String::new()),
        product_name: Some(String::new()),
        model: Some(String::new()),
        model_name: Some(String::new()),
        serial_number: Some(String::new()),
        device_name: Some(String::new()),
        is_supervised: Some(true),
        software_update_device_id: Some(String::new()),
        time_zone: Some(String::new()),
    };
    assert_eq!(plist_keys(&to_plist_xml(&responses).unwrap()), schema);
}

#[test]
fn declarative_management_command_sends_data() {
    let command = DeclarativeManagementCommand::with_tokens(&tokens()).unwrap();
    let body = CommandEnvelope::new("uuid-1", Command::DeclarativeManagement(command.clone()))
        .to_plist_xml()
        .unwrap();
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(text.contains("<data>"), "Data should be plist data: {text}");

    let parsed = parse_command(&body).unwrap();
    let Command::DeclarativeManagement(parsed) = parsed.command else {
        panic!("expected DeclarativeManagement");
    };
    let json: serde_json::Value = serde_json::from_slice(parsed.data.as_deref().unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "SyncTokens": {"DeclarationsToken": "abc123", "Timestamp": "2025-10-01T12:00:00Z"}
        })
    );
    assert_eq!(parsed.tokens().unwrap(), Some(tokens()));
}

#[test]
fn invalid_schedule_is_rejected() {
    let no_selector = OsUpdateItem {
        product_key: None,
        product_version: None,
        install_action: InstallAction::Default,
        max_user_deferrals: None,
        priority: None,
    };
    let mut deferrals_without_install_later =
        OsUpdateItem::for_version("26.1", InstallAction::InstallAsap);
    deferrals_without_install_later.max_user_deferrals = Some(2);
    let cases = [
        ("empty Updates", vec![]),
        ("no ProductKey or ProductVersion", vec![no_selector]),
        (
            "MaxUserDeferrals without InstallLater",
            vec![deferrals_without_install_later],
        ),
    ];
    for (case, updates) in cases {
        let envelope = CommandEnvelope::new(
            "uuid-1",
            Command::ScheduleOsUpdate(ScheduleOsUpdate { updates }),
        );
        let err = envelope.to_plist_xml().unwrap_err();
        assert!(
            matches!(
                err,
                WireError::InvalidCommand {
                    request_type: "ScheduleOSUpdate",
                    ..
                }
            ),
            "{case}: {err:?}"
        );
    }
}

#[test]
fn empty_queries_and_uuid_are_rejected() {
    let empty_queries = CommandEnvelope::new(
        "uuid-1",
        Command::DeviceInformation(DeviceInformation { queries: vec![] }),
    );
    assert!(matches!(
        empty_queries.to_plist_xml(),
        Err(WireError::InvalidCommand {
            request_type: "DeviceInformation",
            ..
        })
    ));
    let empty_uuid = CommandEnvelope::new("", Command::OsUpdateStatus);
    assert!(matches!(
        empty_uuid.to_plist_xml(),
        Err(WireError::InvalidCommand {
            request_type: "OSUpdateStatus",
            ..
        })
    ));
}

#[test]
fn unknown_request_type_is_rejected() {
    let mut command = Dictionary::new();
    command.insert("RequestType".into(), Value::String("EraseDevice".into()));
    let mut envelope = Dictionary::new();
    envelope.insert("CommandUUID".into(), Value::String("uuid-1".into()));
    envelope.insert("Command".into(), Value::Dictionary(command));
    let err = parse_command(&xml_of(envelope)).unwrap_err();
    assert!(
        matches!(&err, WireError::UnknownRequestType { request_type } if request_type == "EraseDevice"),
        "{err:?}"
    );
}

#[test]
fn command_missing_keys_are_named() {
    let body = CommandEnvelope::new("uuid-1", Command::OsUpdateStatus)
        .to_plist_xml()
        .unwrap();
    for key in ["CommandUUID", "Command"] {
        let mut dict = dictionary(&body);
        dict.remove(key);
        let err = parse_command(&xml_of(dict)).unwrap_err();
        assert!(
            matches!(&err, WireError::MissingKey { key: found, .. } if *found == key),
            "removing {key} gave {err:?}"
        );
    }
    let mut dict = dictionary(&body);
    if let Some(Value::Dictionary(command)) = dict.get_mut("Command") {
        command.remove("RequestType");
    }
    let err = parse_command(&xml_of(dict)).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::MissingKey {
                key: "RequestType",
                ..
            }
        ),
        "{err:?}"
    );
}

// Command results.

#[test]
fn result_status_values_match_schema() {
    assert_eq!(
        CommandStatus::KNOWN,
        [
            "Idle",
            "Acknowledged",
            "Error",
            "CommandFormatError",
            "NotNow"
        ]
    );
    assert_eq!(
        UpdateResultAction::KNOWN,
        [
            "Error",
            "DownloadOnly",
            "InstallASAP",
            "NotifyOnly",
            "InstallLater",
            "InstallForceRestart"
        ]
    );
    assert_eq!(
        UpdateResultStatus::KNOWN,
        [
            "Idle",
            "Downloading",
            "DownloadFailed",
            "DownloadRequiresComputer",
            "DownloadInsufficientSpace",
            "DownloadInsufficientPower",
            "DownloadInsufficientNetwork",
            "Installing",
            "InstallInsufficientSpace",
            "InstallInsufficientPower",
            "InstallPhoneCallInProgress",
            "InstallFailed",
        ]
    );
    assert_eq!(OsUpdateState::KNOWN, ["Idle", "Downloading", "Installing"]);
}

#[test]
fn tolerant_enum_round_trips_known_values() {
    for wire in UpdateResultStatus::KNOWN {
        let value = UpdateResultStatus::from_wire(wire);
        assert!(!value.is_unknown(), "{wire}");
        assert_eq!(value.as_str(), *wire);
    }
    let unknown = UpdateResultStatus::from_wire("DownloadDeferred");
    assert_eq!(
        unknown,
        UpdateResultStatus::Unknown("DownloadDeferred".to_owned())
    );
    assert_eq!(unknown.as_str(), "DownloadDeferred");
}

#[test]
fn schedule_result_parses() {
    let result = parse_result(include_bytes!(
        "../testdata/result_schedule_os_update_mac.plist"
    ))
    .unwrap();
    assert_eq!(result.status, CommandStatus::Acknowledged);
    assert_eq!(result.udid.as_deref(), Some(MAC_UDID));
    assert_eq!(
        result.command_uuid.as_deref(),
        Some("01K6ZP9Q3D7E8F9G0H1J2K3M4N")
    );
    assert!(result.unknown_values().is_empty());

    let response = result.schedule_os_update().unwrap().unwrap();
    assert_eq!(response.update_results.len(), 2);
    let first = &response.update_results[0];
    assert_eq!(first.product_key, "MSU_UPDATE_25B78_patch_26.1_minor");
    assert_eq!(first.install_action, UpdateResultAction::InstallAsap);
    assert_eq!(first.status, UpdateResultStatus::Downloading);
    assert_eq!(first.error_chain, None);

    let second = &response.update_results[1];
    assert_eq!(second.install_action, UpdateResultAction::Error);
    let chain = second.error_chain.as_ref().unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].error_code, Some(12));
    assert_eq!(chain[0].error_domain.as_deref(), Some("MCMDMErrorDomain"));
    assert_eq!(
        chain[0].us_english_description.as_deref(),
        Some("The update is not available for this device.")
    );
    assert!(response.unknown_values().is_empty());

    // The other typed accessors find nothing in this body.
    assert_eq!(result.os_update_status().unwrap(), None);
    assert_eq!(result.device_information().unwrap(), None);
}

#[test]
fn os_update_status_result_parses() {
    let result = parse_result(include_bytes!(
        "../testdata/result_os_update_status_mac.plist"
    ))
    .unwrap();
    let response = result.os_update_status().unwrap().unwrap();
    assert_eq!(response.os_update_status.len(), 1);
    let item = &response.os_update_status[0];
    assert_eq!(item.product_key, "MSU_UPDATE_25B78_patch_26.1_minor");
    assert!(!item.is_downloaded);
    assert_eq!(item.download_percent_complete, 0.42);
    assert_eq!(item.status, OsUpdateState::Downloading);
    assert_eq!(item.max_deferrals, Some(3));
    assert_eq!(item.deferrals_remaining, Some(2));
    let next: jiff::Timestamp = "2025-10-03T22:00:00Z".parse().unwrap();
    assert_eq!(item.next_scheduled_install, Some(next));
    let past: Vec<jiff::Timestamp> = ["2025-10-01T09:00:00Z", "2025-10-02T09:00:00Z"]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
    assert_eq!(item.past_notifications.as_ref(), Some(&past));
    assert!(response.unknown_values().is_empty());
}

#[test]
fn device_information_result_parses() {
    let result = parse_result(include_bytes!(
        "../testdata/result_device_information_iphone.plist"
    ))
    .unwrap();
    let responses = result
        .device_information()
        .unwrap()
        .unwrap()
        .query_responses;
    assert_eq!(responses.udid.as_deref(), Some(IPHONE_UDID));
    assert_eq!(responses.os_version.as_deref(), Some("26.0.1"));
    assert_eq!(responses.build_version.as_deref(), Some("23A355"));
    assert_eq!(responses.product_name.as_deref(), Some("iPhone15,2"));
    assert_eq!(responses.model.as_deref(), Some("MQ9X3LL/A"));
    assert_eq!(responses.model_name.as_deref(), Some("iPhone"));
    assert_eq!(responses.serial_number.as_deref(), Some("F2LXK8QHPN"));
    assert_eq!(responses.device_name.as_deref(), Some("Field iPhone 114"));
    assert_eq!(responses.is_supervised, Some(true));
    assert_eq!(
        responses.software_update_device_id.as_deref(),
        Some("iPhone15,2")
    );
    assert_eq!(responses.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(responses.supplemental_build_version, None);
}

#[test]
fn available_updates_result_parses() {
    let result = parse_result(include_bytes!(
        "../testdata/result_available_os_updates_mac.plist"
    ))
    .unwrap();
    let updates = result
        .available_os_updates()
        .unwrap()
        .unwrap()
        .available_os_updates;
    assert_eq!(updates.len(), 2);
    let os = &updates[0];
    assert_eq!(os.product_key, "MSU_UPDATE_25B78_patch_26.1_minor");
    assert_eq!(os.version.as_deref(), Some("26.1"));
    assert_eq!(os.build.as_deref(), Some("25B78"));
    assert_eq!(os.download_size, Some(3_221_225_472));
    assert_eq!(os.requires_bootstrap_token, Some(true));
    assert_eq!(os.app_identifiers_to_close.as_deref(), Some(&[][..]));
    assert_eq!(os.is_security_response, Some(false));
    // A size sent as <real> is accepted and truncated to whole bytes.
    let config = &updates[1];
    assert_eq!(config.download_size, Some(104_857_600));
    assert_eq!(config.is_config_data_update, Some(true));
}

#[test]
fn idle_result_needs_no_command_uuid() {
    let result = CommandResult::new(MAC_UDID, None, CommandStatus::Idle);
    let parsed = parse_result(&result.to_plist_xml().unwrap()).unwrap();
    assert_eq!(parsed, result);
    assert_eq!(
        plist_keys(&result.to_plist_xml().unwrap()),
        set(&["UDID", "Status"])
    );

    let not_idle = CommandResult::new(MAC_UDID, None, CommandStatus::Acknowledged);
    let err = parse_result(&not_idle.to_plist_xml().unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::MissingKey {
                key: "CommandUUID",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn result_missing_status_or_udid_is_named() {
    let mut dict = Dictionary::new();
    dict.insert("UDID".into(), Value::String(MAC_UDID.into()));
    let err = parse_result(&xml_of(dict)).unwrap_err();
    assert!(
        matches!(err, WireError::MissingKey { key: "Status", .. }),
        "{err:?}"
    );

    let mut dict = Dictionary::new();
    dict.insert("Status".into(), Value::String("Idle".into()));
    let err = parse_result(&xml_of(dict)).unwrap_err();
    assert!(
        matches!(err, WireError::MissingKey { key: "UDID", .. }),
        "{err:?}"
    );
}

#[test]
fn unknown_result_status_is_reported() {
    let result = CommandResult::new(
        MAC_UDID,
        Some("uuid-1".into()),
        CommandStatus::Unknown("Deferred".into()),
    );
    let parsed = parse_result(&result.to_plist_xml().unwrap()).unwrap();
    assert_eq!(parsed.status, CommandStatus::Unknown("Deferred".to_owned()));
    assert_eq!(
        parsed.unknown_values(),
        vec![UnknownValue::new("Status", "Deferred")]
    );
}

#[test]
fn unknown_update_values_are_reported() {
    let response = ScheduleOsUpdateResponse {
        update_results: vec![
            UpdateResult {
                product_key: "a".into(),
                install_action: UpdateResultAction::DownloadOnly,
                status: UpdateResultStatus::Idle,
                error_chain: None,
            },
            UpdateResult {
                product_key: "b".into(),
                install_action: UpdateResultAction::Unknown("Default".into()),
                status: UpdateResultStatus::Unknown("DownloadPaused".into()),
                error_chain: None,
            },
        ],
    };
    let result = CommandResult::new(MAC_UDID, Some("uuid-1".into()), CommandStatus::Acknowledged)
        .with_response(&response)
        .unwrap();
    let parsed = parse_result(&result.to_plist_xml().unwrap()).unwrap();
    let typed = parsed.schedule_os_update().unwrap().unwrap();
    assert_eq!(typed, response);
    assert_eq!(
        typed.unknown_values(),
        vec![
            UnknownValue::new("UpdateResults[1].InstallAction", "Default"),
            UnknownValue::new("UpdateResults[1].Status", "DownloadPaused"),
        ]
    );

    let status = OsUpdateStatusResponse {
        os_update_status: vec![OsUpdateStatusItem {
            product_key: "a".into(),
            is_downloaded: true,
            download_percent_complete: 1.0,
            status: OsUpdateState::Unknown("Preparing".into()),
            max_deferrals: None,
            deferrals_remaining: None,
            next_scheduled_install: None,
            past_notifications: None,
        }],
    };
    let body = CommandResult::new(MAC_UDID, Some("uuid-2".into()), CommandStatus::Acknowledged)
        .with_response(&status)
        .unwrap()
        .to_plist_xml()
        .unwrap();
    let typed = OsUpdateStatusResponse::from_result_body(&body).unwrap();
    assert_eq!(
        typed.unknown_values(),
        vec![UnknownValue::new("OSUpdateStatus[0].Status", "Preparing")]
    );
}

#[test]
fn error_chain_is_parsed_leniently() {
    let mut odd = Dictionary::new();
    odd.insert("ErrorCode".into(), Value::String("4".into()));
    odd.insert("ErrorDomain".into(), Value::Integer(7.into()));
    odd.insert(
        "LocalizedDescription".into(),
        Value::String("Not now".into()),
    );
    let mut dict = Dictionary::new();
    dict.insert("UDID".into(), Value::String(MAC_UDID.into()));
    dict.insert("CommandUUID".into(), Value::String("uuid-1".into()));
    dict.insert("Status".into(), Value::String("Error".into()));
    dict.insert(
        "ErrorChain".into(),
        Value::Array(vec![Value::Dictionary(odd), Value::String("stray".into())]),
    );
    let result = parse_result(&xml_of(dict)).unwrap();
    assert_eq!(result.status, CommandStatus::Error);
    let chain = result.error_chain();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].error_code, Some(4));
    assert_eq!(chain[0].error_domain, None);
    assert_eq!(chain[0].localized_description.as_deref(), Some("Not now"));
    assert_eq!(
        result.unknown_values(),
        vec![UnknownValue::new("ErrorChain[1]", "stray")]
    );
}

#[test]
fn error_result_round_trips() {
    let chain = vec![ErrorChainItem {
        error_code: Some(12021),
        error_domain: Some("MCMDMErrorDomain".into()),
        localized_description: Some("Update failed".into()),
        us_english_description: Some("Update failed".into()),
    }];
    let result = CommandResult::new(MAC_UDID, Some("uuid-1".into()), CommandStatus::Error)
        .with_error_chain(&chain)
        .unwrap();
    let body = result.to_plist_xml().unwrap();
    assert_eq!(
        plist_keys(&body),
        set(&["UDID", "CommandUUID", "Status", "ErrorChain"])
    );
    let parsed = parse_result(&body).unwrap();
    assert_eq!(parsed.error_chain(), chain);
    assert_eq!(parsed.schedule_os_update().unwrap(), None);
    let item_keys: BTreeSet<String> = parsed.body["ErrorChain"].as_array().unwrap()[0]
        .as_dictionary()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        item_keys,
        set(&[
            "ErrorCode",
            "ErrorDomain",
            "LocalizedDescription",
            "USEnglishDescription"
        ])
    );
}

#[test]
fn responses_round_trip_through_results() {
    let scan = ScheduleOsUpdateScanResponse {
        scan_initiated: true,
    };
    let info = DeviceInformationResponse {
        query_responses: QueryResponses {
            os_version: Some("26.0.1".into()),
            is_supervised: Some(true),
            ..QueryResponses::default()
        },
    };
    let available = AvailableOsUpdatesResponse {
        available_os_updates: vec![AvailableOsUpdate {
            product_key: "iOSUpdate23B85".into(),
            human_readable_name: Some("iOS 26.1".into()),
            product_name: Some("iOS".into()),
            version: Some("26.1".into()),
            build: Some("23B85".into()),
            install_size: Some(7_000_000_000),
            deferred_until: Some("2025-11-01T00:00:00Z".parse().unwrap()),
            ..AvailableOsUpdate::default()
        }],
    };
    let base = CommandResult::new(
        IPHONE_UDID,
        Some("uuid-1".into()),
        CommandStatus::Acknowledged,
    );

    let body = base
        .clone()
        .with_response(&scan)
        .unwrap()
        .to_plist_xml()
        .unwrap();
    assert_eq!(
        parse_result(&body)
            .unwrap()
            .schedule_os_update_scan()
            .unwrap(),
        Some(scan)
    );
    assert!(plist_keys(&body).contains("ScanInitiated"));

    let body = base
        .clone()
        .with_response(&info)
        .unwrap()
        .to_plist_xml()
        .unwrap();
    assert_eq!(
        parse_result(&body).unwrap().device_information().unwrap(),
        Some(info)
    );

    let body = base
        .with_response(&available)
        .unwrap()
        .to_plist_xml()
        .unwrap();
    assert_eq!(
        parse_result(&body).unwrap().available_os_updates().unwrap(),
        Some(available)
    );
}

#[test]
fn response_with_wrong_type_is_rejected() {
    let mut dict = Dictionary::new();
    dict.insert("UDID".into(), Value::String(MAC_UDID.into()));
    dict.insert("CommandUUID".into(), Value::String("uuid-1".into()));
    dict.insert("Status".into(), Value::String("Acknowledged".into()));
    dict.insert("UpdateResults".into(), Value::String("none".into()));
    let result = parse_result(&xml_of(dict)).unwrap();
    let err = result.schedule_os_update().unwrap_err();
    assert!(
        matches!(&err, WireError::InvalidMessage { message_type, .. } if message_type == "ScheduleOSUpdate result"),
        "{err:?}"
    );
}

#[test]
fn from_result_body_names_missing_key() {
    let body = CommandResult::new(MAC_UDID, Some("uuid-1".into()), CommandStatus::NotNow)
        .to_plist_xml()
        .unwrap();
    let err = OsUpdateStatusResponse::from_result_body(&body).unwrap_err();
    assert!(
        matches!(&err, WireError::MissingKey { key: "OSUpdateStatus", message_type } if message_type == "OSUpdateStatus result"),
        "{err:?}"
    );
}

#[test]
fn result_keys_match_schema() {
    let response = ScheduleOsUpdateResponse {
        update_results: vec![UpdateResult {
            product_key: "a".into(),
            install_action: UpdateResultAction::InstallLater,
            status: UpdateResultStatus::Downloading,
            error_chain: Some(vec![]),
        }],
    };
    let body = to_plist_xml(&response).unwrap();
    assert_eq!(plist_keys(&body), set(&["UpdateResults"]));
    let dict = dictionary(&body);
    let item: BTreeSet<String> = dict["UpdateResults"].as_array().unwrap()[0]
        .as_dictionary()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        item,
        set(&["ProductKey", "InstallAction", "Status", "ErrorChain"])
    );

    let status = OsUpdateStatusItem {
        product_key: "a".into(),
        is_downloaded: false,
        download_percent_complete: 0.5,
        status: OsUpdateState::Idle,
        max_deferrals: Some(1),
        deferrals_remaining: Some(1),
        next_scheduled_install: Some(jiff::Timestamp::UNIX_EPOCH),
        past_notifications: Some(vec![jiff::Timestamp::UNIX_EPOCH]),
    };
    let keys = plist_keys(&to_plist_xml(&status).unwrap());
    assert_eq!(
        keys,
        set(&[
            "ProductKey",
            "IsDownloaded",
            "DownloadPercentComplete",
            "Status",
            "MaxDeferrals",
            "DeferralsRemaining",
            "NextScheduledInstall",
            "PastNotifications",
        ])
    );
}

#[test]
fn available_update_keys_match_schema() {
    let update = AvailableOsUpdate {
        product_key: "k".into(),
        human_readable_name: Some("n".into()),
        human_readable_name_locale: Some("en".into()),
        metadata_url: Some("u".into()),
        product_name: Some("iOS".into()),
        version: Some("26.1".into()),
        build: Some("23B85".into()),
        download_size: Some(1),
        install_size: Some(2),
        app_identifiers_to_close: Some(vec!["com.example.app".into()]),
        is_critical: Some(false),
        is_config_data_update: Some(false),
        is_firmware_update: Some(false),
        is_major_os_update: Some(false),
        restart_required: Some(true),
        allows_install_later: Some(true),
        deferred_until: Some(jiff::Timestamp::UNIX_EPOCH),
        requires_bootstrap_token: Some(false),
        is_security_response: Some(false),
        supplemental_build_version: Some("23B85a".into()),
        supplemental_os_version_extra: Some("(a)".into()),
    };
    let body = to_plist_xml(&update).unwrap();
    assert_eq!(
        plist_keys(&body),
        set(&[
            "ProductKey",
            "HumanReadableName",
            "HumanReadableNameLocale",
            "MetadataURL",
            "ProductName",
            "Version",
            "Build",
            "DownloadSize",
            "InstallSize",
            "AppIdentifiersToClose",
            "IsCritical",
            "IsConfigDataUpdate",
            "IsFirmwareUpdate",
            "IsMajorOSUpdate",
            "RestartRequired",
            "AllowsInstallLater",
            "DeferredUntil",
            "RequiresBootstrapToken",
            "IsSecurityResponse",
            "SupplementalBuildVersion",
            "SupplementalOSVersionExtra",
        ])
    );
    let parsed: AvailableOsUpdate = plist::from_bytes(&body).unwrap();
    assert_eq!(parsed, update);
}
