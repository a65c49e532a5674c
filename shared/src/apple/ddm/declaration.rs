//! Declarations, their typed payloads, and the `ServerToken` and
//! `DeclarationsToken` computations.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::status::status_items;
use crate::apple::WireError;

/// Maximum size of an `Identifier` or `ServerToken`, in octets (bytes of
/// UTF-8), per Apple's declaration base schema.
pub const MAX_TOKEN_OCTETS: usize = 64;

/// Declaration category, from the `Type` prefix. It selects the manifest
/// list a declaration belongs in and the endpoint path that fetches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeclarationKind {
    Activation,
    Configuration,
    Asset,
    Management,
}

impl DeclarationKind {
    /// Every kind, in manifest order.
    pub const ALL: [DeclarationKind; 4] = [
        DeclarationKind::Activation,
        DeclarationKind::Configuration,
        DeclarationKind::Asset,
        DeclarationKind::Management,
    ];

    /// Derives the kind from a declaration type such as
    /// `com.apple.configuration.softwareupdate.settings`.
    pub fn from_declaration_type(declaration_type: &str) -> Option<Self> {
        let rest = declaration_type.strip_prefix("com.apple.")?;
        DeclarationKind::ALL
            .into_iter()
            .find(|kind| rest.starts_with(&format!("{}.", kind.as_endpoint_segment())))
    }

    /// Returns the path segment in `declaration/<segment>/<identifier>`,
    /// which is also the type-prefix word.
    pub fn as_endpoint_segment(self) -> &'static str {
        match self {
            DeclarationKind::Activation => "activation",
            DeclarationKind::Configuration => "configuration",
            DeclarationKind::Asset => "asset",
            DeclarationKind::Management => "management",
        }
    }

    /// Maps an endpoint path segment back to its kind.
    pub fn from_endpoint_segment(segment: &str) -> Option<Self> {
        DeclarationKind::ALL
            .into_iter()
            .find(|kind| kind.as_endpoint_segment() == segment)
    }
}

/// A declaration as served on `declaration/<kind>/<identifier>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Declaration {
    #[serde(rename = "Type")]
    pub declaration_type: String,
    #[serde(rename = "Identifier")]
    pub identifier: String,
    /// Revision token, from [`server_token`].
    #[serde(rename = "ServerToken")]
    pub server_token: String,
    #[serde(rename = "Payload")]
    pub payload: Map<String, Value>,
}

/// A typed declaration payload.
pub trait DeclarationPayload: Serialize + DeserializeOwned {
    /// The declaration `Type`.
    const DECLARATION_TYPE: &'static str;

    /// Checks rules the schema states in prose or as ranges, and returns
    /// what is wrong.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Declaration {
    /// Builds a declaration from a typed payload and computes its
    /// `ServerToken`.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::InvalidDeclaration`] for an empty identifier, one
    /// over [`MAX_TOKEN_OCTETS`], or a payload that fails its
    /// [`DeclarationPayload::validate`], and [`WireError::SerializeJson`] if
    /// the payload does not serialize to a JSON object.
    pub fn new<P: DeclarationPayload>(
        identifier: impl Into<String>,
        payload: &P,
    ) -> Result<Self, WireError> {
        let identifier = identifier.into();
        payload
            .validate()
            .map_err(|detail| WireError::InvalidDeclaration {
                identifier: identifier.clone(),
                detail,
            })?;
        let payload = serde_json::to_value(payload).map_err(|source| WireError::SerializeJson {
            context: P::DECLARATION_TYPE,
            source,
        })?;
        let Value::Object(payload) = payload else {
            return Err(WireError::InvalidDeclaration {
                identifier,
                detail: format!(
                    "{} payload did not serialize to a JSON object",
                    P::DECLARATION_TYPE
                ),
            });
        };
        Declaration::from_parts(P::DECLARATION_TYPE, identifier, payload)
    }

    /// Builds a declaration of any type from a raw payload and computes its
    /// `ServerToken`.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::InvalidDeclaration`] for an empty identifier, one
    /// over [`MAX_TOKEN_OCTETS`], or a type outside the four
    /// `com.apple.<kind>.` families.
    pub fn from_parts(
        declaration_type: impl Into<String>,
        identifier: impl Into<String>,
        payload: Map<String, Value>,
    ) -> Result<Self, WireError> {
        let declaration_type = declaration_type.into();
        let identifier = identifier.into();
        let invalid = |detail: String| WireError::InvalidDeclaration {
            identifier: identifier.clone(),
            detail,
        };
        if identifier.is_empty() {
            return Err(invalid(
                "Identifier is empty; use a UUID or reverse-DNS name".to_owned(),
            ));
        }
        if identifier.len() > MAX_TOKEN_OCTETS {
            return Err(invalid(format!(
                "Identifier is {} octets; shorten it to at most {MAX_TOKEN_OCTETS}",
                identifier.len()
            )));
        }
        if DeclarationKind::from_declaration_type(&declaration_type).is_none() {
            return Err(invalid(format!(
                "Type {declaration_type:?} is not an activation, configuration, asset or management type"
            )));
        }
        let server_token = server_token(&declaration_type, &identifier, &payload);
        Ok(Declaration {
            declaration_type,
            identifier,
            server_token,
            payload,
        })
    }

    /// Returns the kind derived from `Type`, or `None` for a type outside
    /// the four `com.apple.<kind>.` families.
    pub fn kind(&self) -> Option<DeclarationKind> {
        DeclarationKind::from_declaration_type(&self.declaration_type)
    }

    /// Decodes the payload as `P`.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::InvalidDeclaration`] when `Type` differs from
    /// `P`'s type, and [`WireError::MalformedJson`] when the payload does
    /// not match `P`.
    pub fn payload_as<P: DeclarationPayload>(&self) -> Result<P, WireError> {
        if self.declaration_type != P::DECLARATION_TYPE {
            return Err(WireError::InvalidDeclaration {
                identifier: self.identifier.clone(),
                detail: format!(
                    "Type is {:?}, expected {:?}",
                    self.declaration_type,
                    P::DECLARATION_TYPE
                ),
            });
        }
        serde_json::from_value(Value::Object(self.payload.clone())).map_err(|source| {
            WireError::MalformedJson {
                context: P::DECLARATION_TYPE,
                source,
            }
        })
    }

    /// Serializes the declaration as JSON.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::SerializeJson`] if serialization fails.
    pub fn to_json(&self) -> Result<Vec<u8>, WireError> {
        serde_json::to_vec(self).map_err(|source| WireError::SerializeJson {
            context: "declaration",
            source,
        })
    }
}

/// Computes a `ServerToken`: the lowercase hex SHA-256 of the canonical JSON
/// of `{"Identifier", "Payload", "Type"}`.
///
/// The canonical form sorts object keys at every level and has no
/// whitespace, so equal content always gives the same token and any change
/// to type, identifier or payload gives a new one. The token is 64 hex
/// characters, which meets the 64-octet limit.
pub fn server_token(
    declaration_type: &str,
    identifier: &str,
    payload: &Map<String, Value>,
) -> String {
    let mut content = Map::new();
    content.insert(
        "Identifier".to_owned(),
        Value::String(identifier.to_owned()),
    );
    content.insert("Payload".to_owned(), Value::Object(payload.clone()));
    content.insert(
        "Type".to_owned(),
        Value::String(declaration_type.to_owned()),
    );
    sha256_hex(&canonical_json(&Value::Object(content)))
}

/// Computes a `DeclarationsToken` over the set of `(Identifier,
/// ServerToken)` pairs: the lowercase hex SHA-256 of the canonical JSON of
/// the sorted, deduplicated pairs. Input order does not matter.
pub fn declarations_token<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = items.into_iter().collect();
    pairs.sort_unstable();
    pairs.dedup();
    let list = pairs
        .into_iter()
        .map(|(identifier, token)| {
            Value::Array(vec![
                Value::String(identifier.to_owned()),
                Value::String(token.to_owned()),
            ])
        })
        .collect();
    sha256_hex(&canonical_json(&Value::Array(list)))
}

fn sha256_hex(text: &str) -> String {
    let mut token = hex::encode(Sha256::digest(text.as_bytes()));
    token.truncate(MAX_TOKEN_OCTETS);
    token
}

/// Writes `value` as JSON with object keys sorted and no whitespace.
///
/// Sorting is done here rather than relying on `serde_json::Map` order,
/// which becomes insertion order if any crate in the build turns on
/// serde_json's `preserve_order` feature.
fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                // Display of a JSON string value writes it quoted and escaped.
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// `com.apple.activation.simple`: installs a set of configurations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationSimple {
    /// Identifiers of the configurations to install.
    #[serde(rename = "StandardConfigurations")]
    pub standard_configurations: Vec<String>,
    /// Predicate format string. The activation installs only when it
    /// evaluates to true.
    #[serde(rename = "Predicate", default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
}

impl DeclarationPayload for ActivationSimple {
    const DECLARATION_TYPE: &'static str = "com.apple.activation.simple";

    fn validate(&self) -> Result<(), String> {
        if self.standard_configurations.iter().any(String::is_empty) {
            return Err("StandardConfigurations contains an empty identifier".to_owned());
        }
        Ok(())
    }
}

/// `com.apple.configuration.softwareupdate.enforcement.specific` (iOS 17,
/// macOS 14 and later): install a given OS version by a local deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftwareUpdateEnforcementSpecific {
    /// OS version such as `26.0.1`.
    #[serde(rename = "TargetOSVersion")]
    pub target_os_version: String,
    /// Build such as `20A242`, optionally with a supplemental letter. The
    /// device prefers `TargetOSVersion` if the two disagree.
    #[serde(
        rename = "TargetBuildVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub target_build_version: Option<String>,
    /// Deadline in the device's local time, sent as `yyyy-mm-ddThh:mm:ss`
    /// with no offset. Sub-second digits are dropped when sent.
    #[serde(rename = "TargetLocalDateTime", with = "local_date_time")]
    pub target_local_date_time: jiff::civil::DateTime,
    #[serde(
        rename = "DetailsURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub details_url: Option<String>,
}

impl DeclarationPayload for SoftwareUpdateEnforcementSpecific {
    const DECLARATION_TYPE: &'static str =
        "com.apple.configuration.softwareupdate.enforcement.specific";

    fn validate(&self) -> Result<(), String> {
        let version = &self.target_os_version;
        let well_formed = !version.is_empty()
            && version
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
        if !well_formed {
            return Err(format!(
                "TargetOSVersion {version:?} is not a dotted version such as 26.0.1"
            ));
        }
        if let Some(build) = &self.target_build_version
            && (build.is_empty() || !build.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(format!(
                "TargetBuildVersion {build:?} is not a build such as 20A242 or 20A242a"
            ));
        }
        Ok(())
    }
}

/// Serde for `TargetLocalDateTime`: `yyyy-mm-ddThh:mm:ss`, no offset.
mod local_date_time {
    use serde::{Deserialize, Deserializer, Serializer};

    const FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

    pub(super) fn serialize<S: Serializer>(
        value: &jiff::civil::DateTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&value.strftime(FORMAT))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<jiff::civil::DateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        jiff::civil::DateTime::strptime(FORMAT, &text).map_err(|err| {
            serde::de::Error::custom(format!(
                "TargetLocalDateTime {text:?} is not yyyy-mm-ddThh:mm:ss: {err}"
            ))
        })
    }
}

/// One entry of a status subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSubscriptionItem {
    /// Status item name such as `softwareupdate.install-state`.
    #[serde(rename = "Name")]
    pub name: String,
}

/// `com.apple.configuration.management.status-subscriptions`: the status
/// items the device reports when they change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSubscriptions {
    #[serde(rename = "StatusItems")]
    pub status_items: Vec<StatusSubscriptionItem>,
}

impl StatusSubscriptions {
    /// Creates a subscription to the named status items.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        StatusSubscriptions {
            status_items: names
                .into_iter()
                .map(|name| StatusSubscriptionItem {
                    name: name.to_owned(),
                })
                .collect(),
        }
    }

    /// Creates a subscription to [`ROLLOUT_STATUS_ITEMS`].
    pub fn rollout() -> Self {
        StatusSubscriptions::new(ROLLOUT_STATUS_ITEMS.iter().copied())
    }
}

impl DeclarationPayload for StatusSubscriptions {
    const DECLARATION_TYPE: &'static str =
        "com.apple.configuration.management.status-subscriptions";

    fn validate(&self) -> Result<(), String> {
        if self.status_items.iter().any(|item| item.name.is_empty()) {
            return Err("StatusItems contains an empty Name".to_owned());
        }
        Ok(())
    }
}

/// Status items a rollout subscribes to.
pub const ROLLOUT_STATUS_ITEMS: &[&str] = &[
    status_items::OS_VERSION,
    status_items::BUILD_VERSION,
    status_items::SUPPLEMENTAL_BUILD_VERSION,
    status_items::SUPPLEMENTAL_EXTRA_VERSION,
    status_items::INSTALL_STATE,
    status_items::PENDING_VERSION,
    status_items::FAILURE_REASON,
    status_items::INSTALL_REASON,
    status_items::DEVICE_ID,
];

/// Whether the user may control a software-update feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UserControl {
    /// The user chooses. The device's default.
    Allowed,
    AlwaysOn,
    AlwaysOff,
}

/// Update visibility when more than one update is available (iOS only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecommendedCadence {
    All,
    Oldest,
    Newest,
}

/// Deferral periods in days, each from 1 to 90.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferrals {
    /// Major and minor updates together, iOS only.
    #[serde(
        rename = "CombinedPeriodInDays",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub combined_period_in_days: Option<u32>,
    /// macOS only.
    #[serde(
        rename = "MajorPeriodInDays",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub major_period_in_days: Option<u32>,
    /// macOS only.
    #[serde(
        rename = "MinorPeriodInDays",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub minor_period_in_days: Option<u32>,
    /// Non-OS system updates, macOS only.
    #[serde(
        rename = "SystemPeriodInDays",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub system_period_in_days: Option<u32>,
}

/// Automatic download and install settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutomaticActions {
    #[serde(rename = "Download", default, skip_serializing_if = "Option::is_none")]
    pub download: Option<UserControl>,
    #[serde(
        rename = "InstallOSUpdates",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub install_os_updates: Option<UserControl>,
    /// macOS only.
    #[serde(
        rename = "InstallSecurityUpdate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub install_security_update: Option<UserControl>,
}

/// Rapid Security Response settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RapidSecurityResponse {
    /// If false, users are not offered RSRs, but enforcement can still
    /// install them.
    #[serde(rename = "Enable", default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    #[serde(
        rename = "EnableRollback",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_rollback: Option<bool>,
}

/// A beta program, identified by the organization's seeding service token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BetaProgram {
    #[serde(rename = "Description")]
    pub description: String,
    #[serde(rename = "Token")]
    pub token: String,
}

/// Beta program settings (iOS only in this schema version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beta {
    #[serde(
        rename = "ProgramEnrollment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub program_enrollment: Option<UserControl>,
    /// Allowed only with `ProgramEnrollment` `Allowed` or `AlwaysOn`, and
    /// never together with `RequireProgram`.
    #[serde(
        rename = "OfferPrograms",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub offer_programs: Option<Vec<BetaProgram>>,
    /// Allowed only with `ProgramEnrollment` `AlwaysOn`.
    #[serde(
        rename = "RequireProgram",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub require_program: Option<BetaProgram>,
}

/// `com.apple.configuration.softwareupdate.settings` (iOS 18, macOS 15 and
/// later). Every key is optional, and an absent key leaves the device
/// default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftwareUpdateSettings {
    /// If false, the device shows only the notifications from one hour
    /// before the deadline and the restart countdown.
    #[serde(
        rename = "Notifications",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub notifications: Option<bool>,
    #[serde(rename = "Deferrals", default, skip_serializing_if = "Option::is_none")]
    pub deferrals: Option<Deferrals>,
    #[serde(
        rename = "RecommendedCadence",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub recommended_cadence: Option<RecommendedCadence>,
    #[serde(
        rename = "AutomaticActions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub automatic_actions: Option<AutomaticActions>,
    #[serde(
        rename = "RapidSecurityResponse",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rapid_security_response: Option<RapidSecurityResponse>,
    /// If false, only administrators may run major and minor updates (macOS
    /// only).
    #[serde(
        rename = "AllowStandardUserOSUpdates",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_standard_user_os_updates: Option<bool>,
    #[serde(rename = "Beta", default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<Beta>,
}

/// Allowed range of each deferral period, in days.
pub const DEFERRAL_DAYS: std::ops::RangeInclusive<u32> = 1..=90;

impl DeclarationPayload for SoftwareUpdateSettings {
    const DECLARATION_TYPE: &'static str = "com.apple.configuration.softwareupdate.settings";

    fn validate(&self) -> Result<(), String> {
        if let Some(deferrals) = &self.deferrals {
            let periods = [
                ("CombinedPeriodInDays", deferrals.combined_period_in_days),
                ("MajorPeriodInDays", deferrals.major_period_in_days),
                ("MinorPeriodInDays", deferrals.minor_period_in_days),
                ("SystemPeriodInDays", deferrals.system_period_in_days),
            ];
            for (key, days) in periods {
                match days {
                    Some(days) if !DEFERRAL_DAYS.contains(&days) => {
                        return Err(format!("Deferrals.{key} is {days}; use 1 to 90 days"));
                    }
                    _ => {}
                }
            }
        }
        if let Some(beta) = &self.beta {
            validate_beta(beta)?;
        }
        Ok(())
    }
}

fn validate_beta(beta: &Beta) -> Result<(), String> {
    if beta.offer_programs.is_some() && beta.require_program.is_some() {
        return Err("Beta sets both OfferPrograms and RequireProgram; keep one".to_owned());
    }
    if beta.require_program.is_some() && beta.program_enrollment != Some(UserControl::AlwaysOn) {
        return Err("Beta.RequireProgram needs ProgramEnrollment AlwaysOn".to_owned());
    }
    if beta.offer_programs.is_some() && beta.program_enrollment == Some(UserControl::AlwaysOff) {
        return Err("Beta.OfferPrograms needs ProgramEnrollment Allowed or AlwaysOn".to_owned());
    }
    Ok(())
}
