//! Tests for the declarative management wire types.
//!
//! The expected key lists and value sets below are copied from Apple's
//! device-management schemas (release "Release_iOS-18-1_macOS-15-1").

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::*;
use crate::apple::WireError;

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|key| (*key).to_owned()).collect()
}

fn object_keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// Sorts unknown entries by path, so comparisons do not depend on map
/// iteration order.
fn sorted_by_path<P: Into<String>>(
    entries: impl IntoIterator<Item = (P, Value)>,
) -> Vec<(String, Value)> {
    let mut entries: Vec<(String, Value)> = entries
        .into_iter()
        .map(|(path, value)| (path.into(), value))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
}

fn deadline() -> jiff::civil::DateTime {
    jiff::civil::date(2025, 10, 15).at(18, 30, 0, 0)
}

fn enforcement() -> SoftwareUpdateEnforcementSpecific {
    SoftwareUpdateEnforcementSpecific {
        target_os_version: "26.1".to_owned(),
        target_build_version: Some("25B78".to_owned()),
        target_local_date_time: deadline(),
        details_url: Some("https://it.example.com/updates/26.1".to_owned()),
    }
}

fn full_settings() -> SoftwareUpdateSettings {
    SoftwareUpdateSettings {
        notifications: Some(false),
        deferrals: Some(Deferrals {
            combined_period_in_days: Some(14),
            major_period_in_days: Some(90),
            minor_period_in_days: Some(7),
            system_period_in_days: Some(1),
        }),
        recommended_cadence: Some(RecommendedCadence::Newest),
        automatic_actions: Some(AutomaticActions {
            download: Some(UserControl::AlwaysOn),
            install_os_updates: Some(UserControl::Allowed),
            install_security_update: Some(UserControl::AlwaysOff),
        }),
        rapid_security_response: Some(RapidSecurityResponse {
            enable: Some(true),
            enable_rollback: Some(false),
        }),
        allow_standard_user_os_updates: Some(false),
        beta: Some(Beta {
            program_enrollment: Some(UserControl::AlwaysOn),
            offer_programs: None,
            require_program: Some(BetaProgram {
                description: "iOS 26 AppleSeed".to_owned(),
                token: "seed-token".to_owned(),
            }),
        }),
    }
}

// ServerToken and DeclarationsToken.

#[test]
fn server_token_is_stable() {
    let first = Declaration::new("osdeploy.enforcement.26-1", &enforcement()).unwrap();
    let second = Declaration::new("osdeploy.enforcement.26-1", &enforcement()).unwrap();
    assert_eq!(first.server_token, second.server_token);

    // Key order in the payload map does not change the token.
    let mut forward = Map::new();
    forward.insert("A".into(), json!(1));
    forward.insert("B".into(), json!({"y": 2, "x": [1, 2]}));
    let mut backward = Map::new();
    backward.insert("B".into(), json!({"x": [1, 2], "y": 2}));
    backward.insert("A".into(), json!(1));
    let type_ = "com.apple.configuration.example";
    assert_eq!(
        server_token(type_, "id", &forward),
        server_token(type_, "id", &backward)
    );
}

#[test]
fn server_token_changes_with_content() {
    let base = Declaration::new("osdeploy.enforcement.26-1", &enforcement()).unwrap();

    let mut version = enforcement();
    version.target_os_version = "26.1.1".to_owned();
    let mut deadline_moved = enforcement();
    deadline_moved.target_local_date_time = jiff::civil::date(2025, 10, 15).at(18, 31, 0, 0);
    let mut no_url = enforcement();
    no_url.details_url = None;
    let mut no_build = enforcement();
    no_build.target_build_version = None;

    let changed = [
        (
            "TargetOSVersion",
            Declaration::new("osdeploy.enforcement.26-1", &version).unwrap(),
        ),
        (
            "TargetLocalDateTime",
            Declaration::new("osdeploy.enforcement.26-1", &deadline_moved).unwrap(),
        ),
        (
            "DetailsURL removed",
            Declaration::new("osdeploy.enforcement.26-1", &no_url).unwrap(),
        ),
        (
            "TargetBuildVersion removed",
            Declaration::new("osdeploy.enforcement.26-1", &no_build).unwrap(),
        ),
        (
            "Identifier",
            Declaration::new("osdeploy.enforcement.26-1b", &enforcement()).unwrap(),
        ),
        (
            "Type",
            Declaration::from_parts(
                "com.apple.configuration.other",
                "osdeploy.enforcement.26-1",
                base.payload.clone(),
            )
            .unwrap(),
        ),
    ];
    for (case, declaration) in changed {
        assert_ne!(declaration.server_token, base.server_token, "{case}");
    }
}

#[test]
fn server_token_fits_limit() {
    let declaration = Declaration::new("osdeploy.settings", &full_settings()).unwrap();
    assert_eq!(declaration.server_token.len(), 64);
    assert!(declaration.server_token.len() <= MAX_TOKEN_OCTETS);
    assert!(
        declaration
            .server_token
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
    );
}

#[test]
fn declarations_token_ignores_order() {
    let forward = declarations_token([("a", "1"), ("b", "2"), ("c", "3")]);
    let shuffled = declarations_token([("c", "3"), ("a", "1"), ("b", "2")]);
    let duplicated = declarations_token([("c", "3"), ("a", "1"), ("b", "2"), ("a", "1")]);
    assert_eq!(forward, shuffled);
    assert_eq!(forward, duplicated);
}

#[test]
fn declarations_token_changes_with_set() {
    let base = declarations_token([("a", "1"), ("b", "2")]);
    let cases = [
        (
            "token changed",
            declarations_token([("a", "1"), ("b", "3")]),
        ),
        (
            "item added",
            declarations_token([("a", "1"), ("b", "2"), ("c", "1")]),
        ),
        ("item removed", declarations_token([("a", "1")])),
        ("empty", declarations_token([])),
        // Boundaries between fields must not blur: ("ab", "") is not ("a", "b").
        (
            "shifted boundary",
            declarations_token([("a1", ""), ("b", "2")]),
        ),
    ];
    for (case, token) in cases {
        assert_ne!(token, base, "{case}");
    }
    assert_eq!(base.len(), 64);
}

// Declarations and payload keys.

#[test]
fn declaration_keys_match_schema() {
    let declaration = Declaration::new("osdeploy.enforcement.26-1", &enforcement()).unwrap();
    let value: Value = serde_json::from_slice(&declaration.to_json().unwrap()).unwrap();
    assert_eq!(
        object_keys(&value),
        set(&["Type", "Identifier", "ServerToken", "Payload"])
    );
    assert_eq!(
        value["Type"],
        "com.apple.configuration.softwareupdate.enforcement.specific"
    );
    let parsed: Declaration = serde_json::from_value(value).unwrap();
    assert_eq!(parsed, declaration);
}

#[test]
fn enforcement_payload_matches_schema() {
    let declaration = Declaration::new("osdeploy.enforcement.26-1", &enforcement()).unwrap();
    let payload = Value::Object(declaration.payload.clone());
    assert_eq!(
        object_keys(&payload),
        set(&[
            "TargetOSVersion",
            "TargetBuildVersion",
            "TargetLocalDateTime",
            "DetailsURL"
        ])
    );
    // yyyy-mm-ddThh:mm:ss, with no offset and no fraction.
    assert_eq!(payload["TargetLocalDateTime"], "2025-10-15T18:30:00");
    assert_eq!(
        declaration
            .payload_as::<SoftwareUpdateEnforcementSpecific>()
            .unwrap(),
        enforcement()
    );
}

#[test]
fn enforcement_deadline_drops_fraction() {
    let mut payload = enforcement();
    payload.target_local_date_time = jiff::civil::date(2025, 1, 2).at(3, 4, 5, 600_000_000);
    let declaration = Declaration::new("osdeploy.enforcement", &payload).unwrap();
    assert_eq!(
        declaration.payload["TargetLocalDateTime"],
        "2025-01-02T03:04:05"
    );
}

#[test]
fn enforcement_deadline_rejects_offset() {
    let mut payload = Value::Object(
        Declaration::new("osdeploy.enforcement", &enforcement())
            .unwrap()
            .payload,
    );
    payload["TargetLocalDateTime"] = json!("2025-10-15T18:30:00Z");
    assert!(serde_json::from_value::<SoftwareUpdateEnforcementSpecific>(payload).is_err());
}

#[test]
fn invalid_enforcement_is_rejected() {
    let cases = [
        ("empty version", "", None),
        ("letters in version", "26.x", None),
        ("trailing dot", "26.", None),
        ("build with space", "26.1", Some("25B 78")),
        ("empty build", "26.1", Some("")),
    ];
    for (case, version, build) in cases {
        let mut payload = enforcement();
        payload.target_os_version = version.to_owned();
        payload.target_build_version = build.map(str::to_owned);
        let err = Declaration::new("osdeploy.enforcement", &payload).unwrap_err();
        assert!(
            matches!(err, WireError::InvalidDeclaration { .. }),
            "{case}: {err:?}"
        );
    }
}

#[test]
fn activation_payload_matches_schema() {
    let activation = ActivationSimple {
        standard_configurations: vec!["osdeploy.enforcement.26-1".into(), "osdeploy.status".into()],
        predicate: Some("@status(device.operating-system.family) == 'macOS'".into()),
    };
    let declaration = Declaration::new("osdeploy.activation", &activation).unwrap();
    assert_eq!(declaration.declaration_type, "com.apple.activation.simple");
    assert_eq!(declaration.kind(), Some(DeclarationKind::Activation));
    assert_eq!(
        object_keys(&Value::Object(declaration.payload.clone())),
        set(&["StandardConfigurations", "Predicate"])
    );
    assert_eq!(
        declaration.payload_as::<ActivationSimple>().unwrap(),
        activation
    );

    let empty_id = ActivationSimple {
        standard_configurations: vec![String::new()],
        predicate: None,
    };
    assert!(Declaration::new("osdeploy.activation", &empty_id).is_err());
}

#[test]
fn status_subscriptions_match_schema() {
    let subscriptions = StatusSubscriptions::rollout();
    let declaration = Declaration::new("osdeploy.status", &subscriptions).unwrap();
    assert_eq!(
        declaration.declaration_type,
        "com.apple.configuration.management.status-subscriptions"
    );
    let payload = Value::Object(declaration.payload.clone());
    assert_eq!(object_keys(&payload), set(&["StatusItems"]));
    let items = payload["StatusItems"].as_array().unwrap();
    assert_eq!(items.len(), ROLLOUT_STATUS_ITEMS.len());
    for item in items {
        assert_eq!(object_keys(item), set(&["Name"]));
    }
    assert_eq!(items[0]["Name"], "device.operating-system.version");
}

#[test]
fn settings_payload_matches_schema() {
    let declaration = Declaration::new("osdeploy.settings", &full_settings()).unwrap();
    let payload = Value::Object(declaration.payload.clone());
    assert_eq!(
        object_keys(&payload),
        set(&[
            "Notifications",
            "Deferrals",
            "RecommendedCadence",
            "AutomaticActions",
            "RapidSecurityResponse",
            "AllowStandardUserOSUpdates",
            "Beta",
        ])
    );
    assert_eq!(
        object_keys(&payload["Deferrals"]),
        set(&[
            "CombinedPeriodInDays",
            "MajorPeriodInDays",
            "MinorPeriodInDays",
            "SystemPeriodInDays",
        ])
    );
    assert_eq!(
        object_keys(&payload["AutomaticActions"]),
        set(&["Download", "InstallOSUpdates", "InstallSecurityUpdate"])
    );
    assert_eq!(
        object_keys(&payload["RapidSecurityResponse"]),
        set(&["Enable", "EnableRollback"])
    );
    assert_eq!(
        object_keys(&payload["Beta"]),
        set(&["ProgramEnrollment", "RequireProgram"])
    );
    assert_eq!(
        object_keys(&payload["Beta"]["RequireProgram"]),
        set(&["Description", "Token"])
    );
    assert_eq!(
        declaration.payload_as::<SoftwareUpdateSettings>().unwrap(),
        full_settings()
    );

    let mut offer = full_settings();
    offer.beta = Some(Beta {
        program_enrollment: Some(UserControl::Allowed),
        offer_programs: Some(vec![BetaProgram {
            description: "Public beta".into(),
            token: "t".into(),
        }]),
        require_program: None,
    });
    let payload = Value::Object(
        Declaration::new("osdeploy.settings", &offer)
            .unwrap()
            .payload,
    );
    assert_eq!(
        object_keys(&payload["Beta"]),
        set(&["ProgramEnrollment", "OfferPrograms"])
    );
    assert_eq!(
        object_keys(&payload["Beta"]["OfferPrograms"][0]),
        set(&["Description", "Token"])
    );

    let empty = Declaration::new("osdeploy.settings", &SoftwareUpdateSettings::default()).unwrap();
    assert!(empty.payload.is_empty());
}

#[test]
fn settings_values_match_schema() {
    let controls: Vec<Value> = [
        UserControl::Allowed,
        UserControl::AlwaysOn,
        UserControl::AlwaysOff,
    ]
    .iter()
    .map(|control| serde_json::to_value(control).unwrap())
    .collect();
    assert_eq!(
        controls,
        [json!("Allowed"), json!("AlwaysOn"), json!("AlwaysOff")]
    );
    let cadences: Vec<Value> = [
        RecommendedCadence::All,
        RecommendedCadence::Oldest,
        RecommendedCadence::Newest,
    ]
    .iter()
    .map(|cadence| serde_json::to_value(cadence).unwrap())
    .collect();
    assert_eq!(cadences, [json!("All"), json!("Oldest"), json!("Newest")]);
}

#[test]
fn invalid_settings_are_rejected() {
    let program = BetaProgram {
        description: "d".into(),
        token: "t".into(),
    };
    let mut cases: Vec<(&str, SoftwareUpdateSettings)> = Vec::new();
    for days in [0, 91] {
        let settings = SoftwareUpdateSettings {
            deferrals: Some(Deferrals {
                minor_period_in_days: Some(days),
                ..Deferrals::default()
            }),
            ..SoftwareUpdateSettings::default()
        };
        cases.push(("deferral out of range", settings));
    }
    let both = SoftwareUpdateSettings {
        beta: Some(Beta {
            program_enrollment: Some(UserControl::AlwaysOn),
            offer_programs: Some(vec![program.clone()]),
            require_program: Some(program.clone()),
        }),
        ..SoftwareUpdateSettings::default()
    };
    cases.push(("offer and require together", both));
    let require_allowed = SoftwareUpdateSettings {
        beta: Some(Beta {
            program_enrollment: Some(UserControl::Allowed),
            offer_programs: None,
            require_program: Some(program.clone()),
        }),
        ..SoftwareUpdateSettings::default()
    };
    cases.push(("require without AlwaysOn", require_allowed));
    let offer_off = SoftwareUpdateSettings {
        beta: Some(Beta {
            program_enrollment: Some(UserControl::AlwaysOff),
            offer_programs: Some(vec![program]),
            require_program: None,
        }),
        ..SoftwareUpdateSettings::default()
    };
    cases.push(("offer with AlwaysOff", offer_off));

    for (case, settings) in cases {
        let err = Declaration::new("osdeploy.settings", &settings).unwrap_err();
        assert!(
            matches!(err, WireError::InvalidDeclaration { .. }),
            "{case}: {err:?}"
        );
    }

    let edges = SoftwareUpdateSettings {
        deferrals: Some(Deferrals {
            major_period_in_days: Some(1),
            minor_period_in_days: Some(90),
            ..Deferrals::default()
        }),
        ..SoftwareUpdateSettings::default()
    };
    assert!(Declaration::new("osdeploy.settings", &edges).is_ok());
}

#[test]
fn invalid_identifier_is_rejected() {
    let too_long = "x".repeat(MAX_TOKEN_OCTETS + 1);
    let at_limit = "x".repeat(MAX_TOKEN_OCTETS);
    assert!(Declaration::new("", &enforcement()).is_err());
    assert!(Declaration::new(too_long, &enforcement()).is_err());
    assert!(Declaration::new(at_limit, &enforcement()).is_ok());
    let err = Declaration::from_parts("org.example.thing", "id", Map::new()).unwrap_err();
    assert!(
        matches!(err, WireError::InvalidDeclaration { .. }),
        "{err:?}"
    );
}

#[test]
fn payload_as_checks_type() {
    let declaration = Declaration::new("osdeploy.status", &StatusSubscriptions::rollout()).unwrap();
    let err = declaration
        .payload_as::<SoftwareUpdateEnforcementSpecific>()
        .unwrap_err();
    assert!(
        matches!(err, WireError::InvalidDeclaration { .. }),
        "{err:?}"
    );
}

#[test]
fn declaration_kind_follows_type() {
    let cases = [
        (
            "com.apple.activation.simple",
            Some(DeclarationKind::Activation),
        ),
        (
            "com.apple.configuration.softwareupdate.settings",
            Some(DeclarationKind::Configuration),
        ),
        ("com.apple.asset.data", Some(DeclarationKind::Asset)),
        (
            "com.apple.management.organization-info",
            Some(DeclarationKind::Management),
        ),
        ("com.apple.configurationx.foo", None),
        ("com.example.configuration.foo", None),
        ("com.apple.activation", None),
    ];
    for (declaration_type, expected) in cases {
        assert_eq!(
            DeclarationKind::from_declaration_type(declaration_type),
            expected,
            "{declaration_type}"
        );
    }
}

// Protocol responses.

#[test]
fn tokens_response_matches_schema() {
    let changed_at: jiff::Timestamp = "2025-10-01T12:00:00.75Z".parse().unwrap();
    let response = TokensResponse {
        sync_tokens: SyncTokens::new("abc123", changed_at),
    };
    let value: Value = serde_json::from_slice(&response.to_json().unwrap()).unwrap();
    assert_eq!(
        value,
        json!({"SyncTokens": {"DeclarationsToken": "abc123", "Timestamp": "2025-10-01T12:00:00Z"}})
    );
    let parsed: TokensResponse = serde_json::from_value(value).unwrap();
    assert_eq!(parsed, response);
}

#[test]
fn declaration_items_group_by_kind() {
    let declarations = vec![
        Declaration::new("z.enforcement", &enforcement()).unwrap(),
        Declaration::new("a.settings", &SoftwareUpdateSettings::default()).unwrap(),
        Declaration::new(
            "osdeploy.activation",
            &ActivationSimple {
                standard_configurations: vec!["z.enforcement".into(), "a.settings".into()],
                predicate: None,
            },
        )
        .unwrap(),
    ];
    let response = DeclarationItemsResponse::from_declarations(&declarations).unwrap();
    let value: Value = serde_json::from_slice(&response.to_json().unwrap()).unwrap();
    assert_eq!(
        object_keys(&value),
        set(&["Declarations", "DeclarationsToken"])
    );
    assert_eq!(
        object_keys(&value["Declarations"]),
        set(&["Activations", "Configurations", "Assets", "Management"])
    );
    assert_eq!(
        object_keys(&value["Declarations"]["Activations"][0]),
        set(&["Identifier", "ServerToken"])
    );

    let configurations: Vec<&str> = response
        .declarations
        .configurations
        .iter()
        .map(|item| item.identifier.as_str())
        .collect();
    assert_eq!(configurations, ["a.settings", "z.enforcement"]);
    assert_eq!(response.declarations.activations.len(), 1);
    assert_eq!(
        response.declarations.activations[0].server_token,
        declarations[2].server_token
    );
    assert!(response.declarations.assets.is_empty());
    assert!(response.declarations.management.is_empty());
    assert_eq!(
        response.declarations_token,
        declarations_token_of(&declarations)
    );

    // The tokens endpoint reports the same DeclarationsToken.
    let tokens = TokensResponse::for_declarations(&declarations, jiff::Timestamp::UNIX_EPOCH);
    assert_eq!(
        tokens.sync_tokens.declarations_token,
        response.declarations_token
    );
}

// Endpoints.

#[test]
fn endpoints_parse() {
    let cases = [
        ("tokens", DdmEndpoint::Tokens),
        ("declaration-items", DdmEndpoint::DeclarationItems),
        ("status", DdmEndpoint::Status),
        (
            "declaration/activation/osdeploy.activation",
            DdmEndpoint::Declaration {
                kind: DeclarationKind::Activation,
                identifier: "osdeploy.activation".into(),
            },
        ),
        (
            "declaration/configuration/osdeploy.enforcement.26-1",
            DdmEndpoint::Declaration {
                kind: DeclarationKind::Configuration,
                identifier: "osdeploy.enforcement.26-1".into(),
            },
        ),
        (
            "declaration/asset/a/b",
            DdmEndpoint::Declaration {
                kind: DeclarationKind::Asset,
                identifier: "a/b".into(),
            },
        ),
        (
            "declaration/management/org-info",
            DdmEndpoint::Declaration {
                kind: DeclarationKind::Management,
                identifier: "org-info".into(),
            },
        ),
    ];
    for (text, expected) in cases {
        let parsed: DdmEndpoint = text.parse().unwrap();
        assert_eq!(parsed, expected, "{text}");
        assert_eq!(parsed.to_string(), text);
    }
}

#[test]
fn unknown_endpoints_are_rejected() {
    let cases = [
        "",
        "Tokens",
        "token",
        "declaration-items/",
        "declaration",
        "declaration/",
        "declaration/configuration",
        "declaration/configuration/",
        "declaration/configurations/osdeploy.x",
        "declaration/profile/osdeploy.x",
        "/tokens",
    ];
    for text in cases {
        let err = DdmEndpoint::parse(text).unwrap_err();
        assert!(
            matches!(&err, WireError::UnknownEndpoint { endpoint } if endpoint == text),
            "{text:?} gave {err:?}"
        );
    }
}

// Status reports.

#[test]
fn status_item_names_match_schema() {
    assert_eq!(
        set(status_items::KNOWN),
        set(&[
            "device.operating-system.build-version",
            "device.operating-system.family",
            "device.operating-system.marketing-name",
            "device.operating-system.supplemental.build-version",
            "device.operating-system.supplemental.extra-version",
            "device.operating-system.version",
            "management.client-capabilities",
            "management.declarations",
            "softwareupdate.beta-enrollment",
            "softwareupdate.device-id",
            "softwareupdate.failure-reason",
            "softwareupdate.install-reason",
            "softwareupdate.install-state",
            "softwareupdate.pending-version",
        ])
    );
    let subscribed = set(ROLLOUT_STATUS_ITEMS);
    assert!(subscribed.is_subset(&set(status_items::KNOWN)));
}

#[test]
fn status_values_match_schema() {
    // The schema's value list plus "waiting", which its description names.
    assert_eq!(
        InstallState::KNOWN,
        [
            "none",
            "waiting",
            "downloading",
            "prepared",
            "installing",
            "failed"
        ]
    );
    assert_eq!(
        InstallReason::KNOWN,
        [
            "system-settings",
            "install-tonight",
            "auto-update",
            "notification",
            "setup-assistant",
            "command-line",
            "mdm",
            "declaration",
        ]
    );
    assert_eq!(DeclarationValidity::KNOWN, ["unknown", "invalid", "valid"]);
    assert_eq!(
        DeclarationValidity::from_wire("unknown"),
        DeclarationValidity::Undetermined
    );
}

#[test]
fn full_status_report_parses() {
    let status = parse_status_report(include_bytes!("../testdata/status_report_mac.json")).unwrap();
    assert!(status.full_report);
    assert!(status.errors.is_empty());
    assert_eq!(status.unknown, vec![]);

    assert_eq!(status.os_version.as_deref(), Some("26.0.1"));
    assert_eq!(status.build_version.as_deref(), Some("25A362"));
    assert_eq!(status.os_family.as_deref(), Some("macOS"));
    assert_eq!(status.os_marketing_name.as_deref(), Some("macOS Tahoe"));
    assert_eq!(status.supplemental_build_version.as_deref(), Some("25A362"));
    assert_eq!(status.supplemental_extra_version.as_deref(), Some(""));
    assert_eq!(status.software_update_device_id.as_deref(), Some("J473AP"));
    assert_eq!(status.beta_enrollment.as_deref(), Some(""));
    assert_eq!(status.install_state, Some(InstallState::Downloading));
    assert_eq!(
        status.pending_version,
        Some(PendingVersion {
            os_version: "26.1".into(),
            build_version: "25B78".into(),
        })
    );
    assert_eq!(
        status.failure_reason,
        Some(FailureReason {
            count: 1,
            reason: Some("Insufficient space to download the update".into()),
            timestamp: Some("2025-10-02T08:15:30Z".into()),
        })
    );
    assert_eq!(
        status.install_reason,
        Some(InstallReasonStatus {
            reasons: vec![InstallReason::Declaration],
            declaration_id: Some("osdeploy.enforcement.26-1".into()),
        })
    );

    let declarations = status.declarations.as_ref().unwrap();
    assert_eq!(declarations.activations.as_ref().unwrap().len(), 1);
    assert_eq!(declarations.assets.as_deref(), Some(&[][..]));
    assert_eq!(declarations.management.as_deref(), Some(&[][..]));
    let configurations = declarations.configurations.as_ref().unwrap();
    assert_eq!(configurations.len(), 2);
    assert_eq!(configurations[0].identifier, "osdeploy.enforcement.26-1");
    assert!(configurations[0].active);
    assert_eq!(configurations[0].valid, DeclarationValidity::Valid);
    let invalid = &configurations[1];
    assert!(!invalid.active);
    assert_eq!(invalid.valid, DeclarationValidity::Invalid);
    let reasons = invalid.reasons.as_ref().unwrap();
    assert_eq!(reasons[0].code, "Error.ConfigurationCannotBeApplied");
    assert_eq!(
        reasons[0].details,
        Some(json!({"Error": "The operation couldn't be completed."}))
    );

    let capabilities = status.client_capabilities.as_ref().unwrap();
    assert_eq!(
        capabilities["supported-versions"],
        json!(["1.0.0", "1.1.0"])
    );
}

#[test]
fn full_report_defaults_false() {
    let status = parse_status_report(br#"{"StatusItems": {}, "Errors": []}"#).unwrap();
    assert!(!status.full_report);
    let status = parse_status_report(br#"{"StatusItems": {}}"#).unwrap();
    assert!(!status.full_report);
    assert_eq!(status, ParsedStatus::default());
}

#[test]
fn missing_items_stay_none() {
    let status = parse_status_report(
        br#"{"StatusItems": {"softwareupdate": {"install-state": "installing"}}, "Errors": []}"#,
    )
    .unwrap();
    assert_eq!(status.install_state, Some(InstallState::Installing));
    assert_eq!(status.pending_version, None);
    assert_eq!(status.os_version, None);
    assert_eq!(status.declarations, None);
    assert!(status.unknown.is_empty());
}

#[test]
fn nested_and_flat_items_parse() {
    let nested = parse_status_report(
        br#"{"StatusItems": {"device": {"operating-system": {"supplemental": {"extra-version": "(a)"}}}}}"#,
    )
    .unwrap();
    assert_eq!(nested.supplemental_extra_version.as_deref(), Some("(a)"));

    // Tolerated: an item sent under its full dotted name.
    let flat =
        parse_status_report(br#"{"StatusItems": {"softwareupdate.install-state": "prepared"}}"#)
            .unwrap();
    assert_eq!(flat.install_state, Some(InstallState::Prepared));
    assert!(flat.unknown.is_empty());
}

#[test]
fn waiting_install_state_is_known() {
    let status = parse_status_report(
        br#"{"StatusItems": {"softwareupdate": {"install-state": "waiting"}}}"#,
    )
    .unwrap();
    assert_eq!(status.install_state, Some(InstallState::Waiting));
    assert!(status.unknown.is_empty());
}

#[test]
fn unknown_status_values_are_reported() {
    let body = json!({
        "StatusItems": {
            "softwareupdate": {
                "install-state": "rebooting",
                "install-reason": {"reason": ["mdm", "siri"]},
                "pending-version": {"os-version": "26.1", "build-version": "25B78", "channel": "beta"}
            },
            "management": {
                "declarations": {
                    "configurations": [
                        {"identifier": "c", "server-token": "t", "active": true, "valid": "pending"}
                    ]
                }
            }
        }
    });
    let status = parse_status_report(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(
        status.install_state,
        Some(InstallState::Unknown("rebooting".into()))
    );
    assert_eq!(
        status.install_reason.as_ref().unwrap().reasons,
        [InstallReason::Mdm, InstallReason::Unknown("siri".into())]
    );
    assert_eq!(status.pending_version.as_ref().unwrap().os_version, "26.1");
    let configurations = status
        .declarations
        .as_ref()
        .unwrap()
        .configurations
        .as_ref()
        .unwrap();
    assert_eq!(
        configurations[0].valid,
        DeclarationValidity::Unknown("pending".into())
    );

    let expected = sorted_by_path([
        ("softwareupdate.install-state", json!("rebooting")),
        ("softwareupdate.install-reason.reason[1]", json!("siri")),
        ("softwareupdate.pending-version.channel", json!("beta")),
        (
            "management.declarations.configurations[0].valid",
            json!("pending"),
        ),
    ]);
    assert_eq!(sorted_by_path(status.unknown), expected);
}

#[test]
fn unknown_status_items_are_reported() {
    let body = json!({
        "StatusItems": {
            "passcode": {"is-compliant": true},
            "device": {"model": {"identifier": "Mac14,3"}, "operating-system": {"version": "26.0.1"}},
            "softwareupdate": {"install-state": 3, "failure-reason": {"reason": "no count"}},
            "management": {"declarations": {"profiles": []}}
        },
        "Errors": [{"StatusItem": "passcode.is-present", "Reasons": [{"Code": "Error.NotSupported"}]}, "stray"],
        "Extra": 1
    });
    let status = parse_status_report(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(status.os_version.as_deref(), Some("26.0.1"));
    assert_eq!(status.install_state, None);
    assert_eq!(status.failure_reason, None);
    assert_eq!(status.declarations, Some(DeclarationsStatus::default()));
    assert_eq!(status.errors.len(), 1);
    assert_eq!(status.errors[0].status_item, "passcode.is-present");
    assert_eq!(
        status.errors[0].reasons.as_ref().unwrap()[0].code,
        "Error.NotSupported"
    );

    let expected = sorted_by_path([
        ("passcode", json!({"is-compliant": true})),
        ("device.model", json!({"identifier": "Mac14,3"})),
        ("softwareupdate.install-state", json!(3)),
        (
            "softwareupdate.failure-reason",
            json!({"reason": "no count"}),
        ),
        ("management.declarations.profiles", json!([])),
        ("Errors[1]", json!("stray")),
        ("Extra", json!(1)),
    ]);
    assert_eq!(sorted_by_path(status.unknown), expected);
}

#[test]
fn broken_status_reports_are_rejected() {
    let cases: [(&str, &[u8]); 5] = [
        ("not JSON", b"StatusItems"),
        ("truncated", br#"{"StatusItems": {"#),
        ("root array", br#"[{"StatusItems": {}}]"#),
        ("StatusItems array", br#"{"StatusItems": [], "Errors": []}"#),
        ("StatusItems missing", br#"{"Errors": []}"#),
    ];
    for (case, body) in cases {
        let err = parse_status_report(body).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::MalformedJson { .. } | WireError::InvalidStatusReport { .. }
            ),
            "{case}: {err:?}"
        );
    }
    assert!(matches!(
        parse_status_report(b"nope"),
        Err(WireError::MalformedJson { .. })
    ));
    assert!(matches!(
        parse_status_report(br#"{"StatusItems": "x"}"#),
        Err(WireError::InvalidStatusReport { .. })
    ));
}

#[test]
fn status_builder_round_trips() {
    let status = ParsedStatus {
        full_report: false,
        errors: vec![StatusError {
            status_item: "softwareupdate.beta-enrollment".into(),
            reasons: Some(vec![ErrorReason {
                code: "Error.Unavailable".into(),
                description: Some("not available".into()),
                details: None,
            }]),
        }],
        os_version: Some("18.1".into()),
        build_version: Some("22B83".into()),
        os_family: Some("iOS".into()),
        os_marketing_name: Some("iOS".into()),
        supplemental_build_version: Some("22B83".into()),
        supplemental_extra_version: Some(String::new()),
        install_state: Some(InstallState::Prepared),
        pending_version: Some(PendingVersion {
            os_version: "18.1.1".into(),
            build_version: "22B91".into(),
        }),
        failure_reason: Some(FailureReason {
            count: 0,
            reason: None,
            timestamp: None,
        }),
        install_reason: Some(InstallReasonStatus {
            reasons: vec![InstallReason::Mdm, InstallReason::AutoUpdate],
            declaration_id: None,
        }),
        software_update_device_id: Some("iPhone15,2".into()),
        beta_enrollment: Some(String::new()),
        declarations: Some(DeclarationsStatus {
            activations: Some(vec![DeclarationStatus {
                identifier: "a".into(),
                server_token: "t".into(),
                active: true,
                valid: DeclarationValidity::Undetermined,
                reasons: Some(vec![StatusReason {
                    code: "Info.Predicate".into(),
                    description: None,
                    details: Some(json!({"Identifier": "a"})),
                }]),
            }]),
            configurations: None,
            assets: Some(vec![]),
            management: None,
        }),
        client_capabilities: Some(json!({"supported-versions": ["1.0.0"]})),
        unknown: vec![],
    };
    let report = StatusReport::from_status(&status).unwrap();
    let json: Value = serde_json::from_slice(&report.to_json().unwrap()).unwrap();

    // Items are nested one object per dot.
    assert_eq!(
        json["StatusItems"]["softwareupdate"]["install-state"],
        "prepared"
    );
    assert_eq!(
        json["StatusItems"]["device"]["operating-system"]["version"],
        "18.1"
    );
    assert_eq!(
        json["StatusItems"]["device"]["operating-system"]["supplemental"]["build-version"],
        "22B83"
    );
    assert_eq!(
        object_keys(&json["StatusItems"]["softwareupdate"]["pending-version"]),
        set(&["os-version", "build-version"])
    );
    assert_eq!(
        object_keys(&json),
        set(&["StatusItems", "Errors", "FullReport"])
    );
    assert_eq!(json["FullReport"], false);
    assert_eq!(
        object_keys(&json["Errors"][0]),
        set(&["StatusItem", "Reasons"])
    );

    let parsed = parse_status_report(&report.to_json().unwrap()).unwrap();
    assert_eq!(parsed, status);
}

#[test]
fn insert_item_nests_raw_values() {
    let mut report = StatusReport::default();
    report.insert_item("softwareupdate.install-state", json!("rebooting"));
    report.insert_item("passcode.is-compliant", json!(true));
    report.full_report = true;
    let parsed = parse_status_report(&report.to_json().unwrap()).unwrap();
    assert!(parsed.full_report);
    assert_eq!(
        parsed.install_state,
        Some(InstallState::Unknown("rebooting".into()))
    );
    assert_eq!(
        sorted_by_path(parsed.unknown),
        sorted_by_path([
            ("passcode", json!({"is-compliant": true})),
            ("softwareupdate.install-state", json!("rebooting")),
        ])
    );
}
