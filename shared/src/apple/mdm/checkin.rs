//! Check-in messages: the plist bodies that devices send with
//! `PUT` to the check-in URL.
//!
//! Each message is a dictionary whose `MessageType` key selects its shape.
//! [`parse_checkin`] reads `MessageType` first, checks the keys that
//! message requires, and then decodes the typed struct. The structs carry no
//! `MessageType` field: [`CheckinMessage`] adds it when serialized, so send
//! a struct wrapped in its [`CheckinMessage`] variant.

use plist::Dictionary;
use serde::{Deserialize, Serialize};

use super::{decode_dictionary, parse_dictionary, required_string};
use crate::apple::WireError;
use crate::apple::ddm::DdmEndpoint;
use crate::apple::serde_plist::{data, option_data};

/// Keys that identify the enrollment. A device enrollment sends `UDID`, a
/// user enrollment sends `EnrollmentID` instead.
const UDID: &str = "UDID";
const ENROLLMENT_ID: &str = "EnrollmentID";

/// First message of an enrollment (`MessageType` `Authenticate`).
///
/// `DeviceName`, `Model` and `ModelName` are required on macOS only (the
/// schema marks them unavailable on iOS), so they are optional here. iOS
/// sends `ProductName`, `OSVersion` and `BuildVersion` instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authenticate {
    #[serde(rename = "Topic")]
    pub topic: String,
    #[serde(rename = "UDID", default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(
        rename = "EnrollmentID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enrollment_id: Option<String>,
    #[serde(
        rename = "DeviceName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_name: Option<String>,
    #[serde(rename = "Model", default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(rename = "ModelName", default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(
        rename = "ProductName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub product_name: Option<String>,
    #[serde(rename = "OSVersion", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(
        rename = "BuildVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub build_version: Option<String>,
    #[serde(
        rename = "SerialNumber",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub serial_number: Option<String>,
    #[serde(rename = "IMEI", default, skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    #[serde(rename = "MEID", default, skip_serializing_if = "Option::is_none")]
    pub meid: Option<String>,
}

/// Push token registration (`MessageType` `TokenUpdate`), sent after
/// enrollment and whenever the push token changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUpdate {
    #[serde(rename = "Topic")]
    pub topic: String,
    #[serde(rename = "UDID", default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(
        rename = "EnrollmentID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enrollment_id: Option<String>,
    #[serde(
        rename = "EnrollmentUserID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enrollment_user_id: Option<String>,
    #[serde(
        rename = "UserShortName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_short_name: Option<String>,
    #[serde(rename = "UserID", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(
        rename = "UserLongName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_long_name: Option<String>,
    /// macOS user channel only.
    #[serde(
        rename = "NotOnConsole",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub not_on_console: Option<bool>,
    /// APNs device token.
    #[serde(rename = "Token", with = "data")]
    pub token: Vec<u8>,
    /// Value the server must put in the `mdm` field of each push.
    #[serde(rename = "PushMagic")]
    pub push_magic: String,
    #[serde(
        rename = "UnlockToken",
        default,
        skip_serializing_if = "Option::is_none",
        with = "option_data"
    )]
    pub unlock_token: Option<Vec<u8>>,
    #[serde(
        rename = "AwaitingConfiguration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub awaiting_configuration: Option<bool>,
}

/// Unenrollment notice (`MessageType` `CheckOut`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOut {
    #[serde(rename = "Topic")]
    pub topic: String,
    #[serde(rename = "UDID", default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(
        rename = "EnrollmentID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enrollment_id: Option<String>,
}

/// Declarative management request (`MessageType`
/// `DeclarativeManagement`): the device fetches tokens, the manifest or a
/// declaration, or sends a status report, as `Endpoint` selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclarativeManagement {
    /// Raw endpoint string, parsed by [`DeclarativeManagement::endpoint`].
    #[serde(rename = "Endpoint")]
    pub endpoint: String,
    /// JSON request body, such as a status report for the `status`
    /// endpoint. Plist stores it as `<data>`, which XML renders as base64.
    #[serde(
        rename = "Data",
        default,
        skip_serializing_if = "Option::is_none",
        with = "option_data"
    )]
    pub data: Option<Vec<u8>>,
    #[serde(rename = "UDID", default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(
        rename = "EnrollmentID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enrollment_id: Option<String>,
    #[serde(
        rename = "EnrollmentUserID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enrollment_user_id: Option<String>,
    #[serde(
        rename = "UserShortName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_short_name: Option<String>,
    #[serde(rename = "UserID", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(
        rename = "UserLongName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_long_name: Option<String>,
}

impl DeclarativeManagement {
    /// Parses the `Endpoint` string.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::UnknownEndpoint`] for an endpoint outside the
    /// protocol's set.
    pub fn endpoint(&self) -> Result<DdmEndpoint, WireError> {
        self.endpoint.parse()
    }
}

/// Bootstrap token escrow (`MessageType` `SetBootstrapToken`), macOS only.
///
/// An absent or empty `BootstrapToken` means the server must delete the
/// stored token.
///
/// NOTE: Apple's schema for this message and for [`GetBootstrapToken`] lists
/// no `UDID` or `EnrollmentID`. Other MDM servers read those keys here as in
/// every check-in, so they are optional fields, not required by
/// [`parse_checkin`], and the simulator may send them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetBootstrapToken {
    #[serde(rename = "UDID", default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(
        rename = "EnrollmentID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enrollment_id: Option<String>,
    #[serde(
        rename = "BootstrapToken",
        default,
        skip_serializing_if = "Option::is_none",
        with = "option_data"
    )]
    pub bootstrap_token: Option<Vec<u8>>,
    #[serde(
        rename = "AwaitingConfiguration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub awaiting_configuration: Option<bool>,
}

/// Bootstrap token retrieval (`MessageType` `GetBootstrapToken`), macOS
/// only. The server replies with [`GetBootstrapTokenResponse`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetBootstrapToken {
    #[serde(rename = "UDID", default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(
        rename = "EnrollmentID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enrollment_id: Option<String>,
    #[serde(
        rename = "AwaitingConfiguration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub awaiting_configuration: Option<bool>,
}

/// Server response body to [`GetBootstrapToken`]. An absent token means the
/// server stores no token for the device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetBootstrapTokenResponse {
    #[serde(
        rename = "BootstrapToken",
        default,
        skip_serializing_if = "Option::is_none",
        with = "option_data"
    )]
    pub bootstrap_token: Option<Vec<u8>>,
}

/// A parsed check-in message. Serializing it writes the struct's keys plus
/// `MessageType`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "MessageType")]
pub enum CheckinMessage {
    Authenticate(Authenticate),
    TokenUpdate(TokenUpdate),
    CheckOut(CheckOut),
    DeclarativeManagement(DeclarativeManagement),
    SetBootstrapToken(SetBootstrapToken),
    GetBootstrapToken(GetBootstrapToken),
}

impl CheckinMessage {
    /// Returns the `MessageType` value.
    pub fn message_type(&self) -> &'static str {
        match self {
            CheckinMessage::Authenticate(_) => "Authenticate",
            CheckinMessage::TokenUpdate(_) => "TokenUpdate",
            CheckinMessage::CheckOut(_) => "CheckOut",
            CheckinMessage::DeclarativeManagement(_) => "DeclarativeManagement",
            CheckinMessage::SetBootstrapToken(_) => "SetBootstrapToken",
            CheckinMessage::GetBootstrapToken(_) => "GetBootstrapToken",
        }
    }

    /// Returns the device's `UDID`, absent for user enrollments.
    pub fn udid(&self) -> Option<&str> {
        match self {
            CheckinMessage::Authenticate(m) => m.udid.as_deref(),
            CheckinMessage::TokenUpdate(m) => m.udid.as_deref(),
            CheckinMessage::CheckOut(m) => m.udid.as_deref(),
            CheckinMessage::DeclarativeManagement(m) => m.udid.as_deref(),
            CheckinMessage::SetBootstrapToken(m) => m.udid.as_deref(),
            CheckinMessage::GetBootstrapToken(m) => m.udid.as_deref(),
        }
    }

    /// Returns the `EnrollmentID` that user enrollments send in place of
    /// `UDID`.
    pub fn enrollment_id(&self) -> Option<&str> {
        match self {
            CheckinMessage::Authenticate(m) => m.enrollment_id.as_deref(),
            CheckinMessage::TokenUpdate(m) => m.enrollment_id.as_deref(),
            CheckinMessage::CheckOut(m) => m.enrollment_id.as_deref(),
            CheckinMessage::DeclarativeManagement(m) => m.enrollment_id.as_deref(),
            CheckinMessage::SetBootstrapToken(m) => m.enrollment_id.as_deref(),
            CheckinMessage::GetBootstrapToken(m) => m.enrollment_id.as_deref(),
        }
    }

    /// Serializes the message, with its `MessageType`, as an XML plist.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::SerializePlist`] if the plist writer fails.
    pub fn to_plist_xml(&self) -> Result<Vec<u8>, WireError> {
        crate::apple::to_plist_xml(self)
    }
}

/// Required-key rule that [`parse_checkin`] applies to one message type.
struct CheckinRule {
    message_type: &'static str,
    /// Keys that must be present.
    required_keys: &'static [&'static str],
    /// Whether `UDID` or `EnrollmentID` must be present.
    requires_enrollment_id: bool,
}

/// Required keys per message type. The schema marks more keys required
/// than listed here, but those are required on one platform or enrollment
/// type only (such as `DeviceName` on macOS), so we accept their absence.
const CHECKIN_RULES: &[CheckinRule] = &[
    CheckinRule {
        message_type: "Authenticate",
        required_keys: &["Topic"],
        requires_enrollment_id: true,
    },
    CheckinRule {
        message_type: "TokenUpdate",
        required_keys: &["Topic", "Token", "PushMagic"],
        requires_enrollment_id: true,
    },
    CheckinRule {
        message_type: "CheckOut",
        required_keys: &["Topic"],
        requires_enrollment_id: true,
    },
    CheckinRule {
        message_type: "DeclarativeManagement",
        required_keys: &["Endpoint"],
        requires_enrollment_id: true,
    },
    CheckinRule {
        message_type: "SetBootstrapToken",
        required_keys: &[],
        requires_enrollment_id: false,
    },
    CheckinRule {
        message_type: "GetBootstrapToken",
        required_keys: &[],
        requires_enrollment_id: false,
    },
];

/// Parses the plist body of a check-in request.
///
/// Unknown keys are ignored.
///
/// # Errors
///
/// - [`WireError::MalformedPlist`] when `body` is not a plist, and
///   [`WireError::RootNotDictionary`] when its root is not a dictionary.
/// - [`WireError::MissingKey`] when `MessageType` or a key the message
///   requires is absent. A missing enrollment identifier is reported as
///   `UDID`, though `EnrollmentID` satisfies it as well.
/// - [`WireError::UnknownMessageType`] for a `MessageType` outside the six
///   this server handles (including `UserAuthenticate` and `GetToken`).
/// - [`WireError::InvalidValue`] or [`WireError::InvalidMessage`] when a key
///   has a value of the wrong type.
pub fn parse_checkin(body: &[u8]) -> Result<CheckinMessage, WireError> {
    let dict = parse_dictionary(body, "check-in message")?;
    let message_type = required_string(&dict, "MessageType", "check-in")?;
    let Some(rule) = CHECKIN_RULES
        .iter()
        .find(|rule| rule.message_type == message_type)
    else {
        return Err(WireError::UnknownMessageType {
            message_type: message_type.to_owned(),
        });
    };

    check_required_keys(&dict, rule)?;

    let message_type = rule.message_type;
    let message = match message_type {
        "Authenticate" => CheckinMessage::Authenticate(decode_dictionary(dict, message_type)?),
        "TokenUpdate" => CheckinMessage::TokenUpdate(decode_dictionary(dict, message_type)?),
        "CheckOut" => CheckinMessage::CheckOut(decode_dictionary(dict, message_type)?),
        "DeclarativeManagement" => {
            CheckinMessage::DeclarativeManagement(decode_dictionary(dict, message_type)?)
        }
        "SetBootstrapToken" => {
            CheckinMessage::SetBootstrapToken(decode_dictionary(dict, message_type)?)
        }
        "GetBootstrapToken" => {
            CheckinMessage::GetBootstrapToken(decode_dictionary(dict, message_type)?)
        }
        other => {
            // CHECKIN_RULES and this match list the same six names, so this
            // arm means the two lists drifted apart.
            return Err(WireError::UnknownMessageType {
                message_type: other.to_owned(),
            });
        }
    };
    Ok(message)
}

fn check_required_keys(dict: &Dictionary, rule: &CheckinRule) -> Result<(), WireError> {
    if let Some(key) = rule
        .required_keys
        .iter()
        .find(|key| !dict.contains_key(key))
    {
        return Err(WireError::MissingKey {
            key,
            message_type: rule.message_type.to_owned(),
        });
    }
    if rule.requires_enrollment_id && !dict.contains_key(UDID) && !dict.contains_key(ENROLLMENT_ID)
    {
        return Err(WireError::MissingKey {
            key: UDID,
            message_type: rule.message_type.to_owned(),
        });
    }
    Ok(())
}
