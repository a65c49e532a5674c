//! MDM commands: the plist the server returns to a device polling the
//! server URL, `{ CommandUUID, Command: { RequestType, ...payload } }`.

use serde::{Deserialize, Serialize};

use super::{decode_dictionary, parse_dictionary, required_string};
use crate::apple::WireError;
use crate::apple::ddm::TokensResponse;
use crate::apple::error::plist_kind;
use crate::apple::serde_plist::option_data;

/// Action a device takes for one update in [`ScheduleOsUpdate`].
///
/// `NotifyOnly` and `InstallLater` exist on macOS only, `InstallForceRestart`
/// on macOS 11 and later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstallAction {
    /// Download or install, depending on the update's current state.
    Default,
    DownloadOnly,
    /// iOS: install a downloaded update. macOS: download, then start the
    /// restart countdown.
    #[serde(rename = "InstallASAP")]
    InstallAsap,
    NotifyOnly,
    InstallLater,
    /// `Default`, then a forced restart if the update needs one. May lose
    /// unsaved user data.
    InstallForceRestart,
}

impl InstallAction {
    /// Every action, in schema order.
    pub const ALL: [InstallAction; 6] = [
        InstallAction::Default,
        InstallAction::DownloadOnly,
        InstallAction::InstallAsap,
        InstallAction::NotifyOnly,
        InstallAction::InstallLater,
        InstallAction::InstallForceRestart,
    ];

    /// Returns the wire value, such as `InstallASAP`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstallAction::Default => "Default",
            InstallAction::DownloadOnly => "DownloadOnly",
            InstallAction::InstallAsap => "InstallASAP",
            InstallAction::NotifyOnly => "NotifyOnly",
            InstallAction::InstallLater => "InstallLater",
            InstallAction::InstallForceRestart => "InstallForceRestart",
        }
    }
}

/// Scheduling priority for downloading and preparing a minor macOS update
/// (macOS 12.3 and later). Devices treat an absent value as `Low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Priority {
    Low,
    High,
}

/// One entry of `ScheduleOSUpdate`'s `Updates` array.
///
/// Set `ProductKey` or `ProductVersion`, because
/// [`ScheduleOsUpdate::validate`] rejects an item with neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsUpdateItem {
    #[serde(
        rename = "ProductKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub product_key: Option<String>,
    /// iOS 11.3, macOS 12 and later. Not usable for Rapid Security Responses.
    #[serde(
        rename = "ProductVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub product_version: Option<String>,
    #[serde(rename = "InstallAction")]
    pub install_action: InstallAction,
    /// macOS 12 and later, `InstallLater` and minor updates only.
    #[serde(
        rename = "MaxUserDeferrals",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_user_deferrals: Option<u32>,
    /// macOS 12.3 and later, minor updates only.
    #[serde(rename = "Priority", default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

impl OsUpdateItem {
    /// Creates an item that selects the update by OS version, such as
    /// `26.0.1`.
    pub fn for_version(product_version: impl Into<String>, install_action: InstallAction) -> Self {
        OsUpdateItem {
            product_key: None,
            product_version: Some(product_version.into()),
            install_action,
            max_user_deferrals: None,
            priority: None,
        }
    }

    /// Creates an item that selects the update by the product key from
    /// `AvailableOSUpdates`.
    pub fn for_product_key(product_key: impl Into<String>, install_action: InstallAction) -> Self {
        OsUpdateItem {
            product_key: Some(product_key.into()),
            product_version: None,
            install_action,
            max_user_deferrals: None,
            priority: None,
        }
    }
}

/// `ScheduleOSUpdate` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleOsUpdate {
    #[serde(rename = "Updates")]
    pub updates: Vec<OsUpdateItem>,
}

impl ScheduleOsUpdate {
    /// Checks the rules the schema states in prose.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::InvalidCommand`] when `Updates` is empty, when
    /// an item has neither `ProductKey` nor `ProductVersion`, or when an
    /// item sets `MaxUserDeferrals` with an action other than
    /// `InstallLater`.
    pub fn validate(&self) -> Result<(), WireError> {
        let invalid = |detail: String| WireError::InvalidCommand {
            request_type: "ScheduleOSUpdate",
            detail,
        };
        if self.updates.is_empty() {
            return Err(invalid(
                "Updates is empty; add at least one update item".to_owned(),
            ));
        }
        for (index, item) in self.updates.iter().enumerate() {
            if item.product_key.is_none() && item.product_version.is_none() {
                return Err(invalid(format!(
                    "Updates[{index}] has neither ProductKey nor ProductVersion; set one of them"
                )));
            }
            if item.max_user_deferrals.is_some()
                && item.install_action != InstallAction::InstallLater
            {
                return Err(invalid(format!(
                    "Updates[{index}] sets MaxUserDeferrals with InstallAction {}, but \
                     devices honour it only with InstallLater",
                    item.install_action.as_str()
                )));
            }
        }
        Ok(())
    }
}

/// `ScheduleOSUpdateScan` payload (macOS only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleOsUpdateScan {
    /// Start the scan now instead of at a time the system picks.
    #[serde(rename = "Force", default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// `DeviceInformation` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInformation {
    /// Query names. [`queries`] lists the ones this server uses.
    #[serde(rename = "Queries")]
    pub queries: Vec<String>,
}

impl DeviceInformation {
    /// Creates a command that requests [`queries::ROLLOUT`].
    pub fn rollout_queries() -> Self {
        DeviceInformation {
            queries: queries::ROLLOUT
                .iter()
                .map(|query| (*query).to_owned())
                .collect(),
        }
    }
}

/// `DeviceInformation` query names, spelled as in the schema's `Queries`
/// items and `QueryResponses` keys.
pub mod queries {
    pub const UDID: &str = "UDID";
    pub const OS_VERSION: &str = "OSVersion";
    pub const BUILD_VERSION: &str = "BuildVersion";
    /// Rapid Security Response build, such as `20A123a`.
    pub const SUPPLEMENTAL_BUILD_VERSION: &str = "SupplementalBuildVersion";
    /// Rapid Security Response suffix, such as `(a)`.
    pub const SUPPLEMENTAL_OS_VERSION_EXTRA: &str = "SupplementalOSVersionExtra";
    /// Model identifier on iOS, such as `iPhone15,2`.
    pub const PRODUCT_NAME: &str = "ProductName";
    pub const MODEL: &str = "Model";
    pub const MODEL_NAME: &str = "ModelName";
    pub const SERIAL_NUMBER: &str = "SerialNumber";
    pub const DEVICE_NAME: &str = "DeviceName";
    pub const IS_SUPERVISED: &str = "IsSupervised";
    /// Identifier for looking up updates at Apple's software lookup
    /// service (iOS 15, macOS 12 and later).
    pub const SOFTWARE_UPDATE_DEVICE_ID: &str = "SoftwareUpdateDeviceID";
    /// IANA time zone name (iOS and tvOS 14 and later, not macOS).
    pub const TIME_ZONE: &str = "TimeZone";

    /// The queries a rollout needs to place and target a device.
    pub const ROLLOUT: &[&str] = &[
        UDID,
        OS_VERSION,
        BUILD_VERSION,
        SUPPLEMENTAL_BUILD_VERSION,
        SUPPLEMENTAL_OS_VERSION_EXTRA,
        PRODUCT_NAME,
        MODEL,
        MODEL_NAME,
        SERIAL_NUMBER,
        DEVICE_NAME,
        IS_SUPERVISED,
        SOFTWARE_UPDATE_DEVICE_ID,
        TIME_ZONE,
    ];
}

/// `DeclarativeManagement` command payload: turns on declarative management
/// or triggers a synchronization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclarativeManagementCommand {
    /// JSON of a [`TokensResponse`]. Plist stores it as `<data>`, which XML
    /// renders as base64.
    #[serde(
        rename = "Data",
        default,
        skip_serializing_if = "Option::is_none",
        with = "option_data"
    )]
    pub data: Option<Vec<u8>>,
}

impl DeclarativeManagementCommand {
    /// Creates a command carrying `tokens` as its `Data`.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::SerializeJson`] if JSON serialization fails.
    pub fn with_tokens(tokens: &TokensResponse) -> Result<Self, WireError> {
        let data = serde_json::to_vec(tokens).map_err(|source| WireError::SerializeJson {
            context: "DeclarativeManagement command Data",
            source,
        })?;
        Ok(DeclarativeManagementCommand { data: Some(data) })
    }

    /// Parses `Data` as a [`TokensResponse`], or returns `None` when `Data` is
    /// absent.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::MalformedJson`] when `Data` is not a tokens
    /// response.
    pub fn tokens(&self) -> Result<Option<TokensResponse>, WireError> {
        let Some(data) = &self.data else {
            return Ok(None);
        };
        serde_json::from_slice(data)
            .map(Some)
            .map_err(|source| WireError::MalformedJson {
                context: "DeclarativeManagement command Data",
                source,
            })
    }
}

/// A command, serialized with its `RequestType` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "RequestType")]
pub enum Command {
    #[serde(rename = "ScheduleOSUpdate")]
    ScheduleOsUpdate(ScheduleOsUpdate),
    #[serde(rename = "OSUpdateStatus")]
    OsUpdateStatus,
    #[serde(rename = "AvailableOSUpdates")]
    AvailableOsUpdates,
    #[serde(rename = "ScheduleOSUpdateScan")]
    ScheduleOsUpdateScan(ScheduleOsUpdateScan),
    DeviceInformation(DeviceInformation),
    DeclarativeManagement(DeclarativeManagementCommand),
}

impl Command {
    /// Returns the `RequestType` value.
    pub fn request_type(&self) -> &'static str {
        match self {
            Command::ScheduleOsUpdate(_) => "ScheduleOSUpdate",
            Command::OsUpdateStatus => "OSUpdateStatus",
            Command::AvailableOsUpdates => "AvailableOSUpdates",
            Command::ScheduleOsUpdateScan(_) => "ScheduleOSUpdateScan",
            Command::DeviceInformation(_) => "DeviceInformation",
            Command::DeclarativeManagement(_) => "DeclarativeManagement",
        }
    }

    /// Checks the payload rules that serde cannot express.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::InvalidCommand`] naming the broken rule.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Command::ScheduleOsUpdate(payload) => payload.validate(),
            Command::DeviceInformation(payload) if payload.queries.is_empty() => {
                Err(WireError::InvalidCommand {
                    request_type: "DeviceInformation",
                    detail: "Queries is empty; add at least one query name".to_owned(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The command plist sent to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandEnvelope {
    /// Identifier the device echoes in its result, so the server can match
    /// results to commands.
    #[serde(rename = "CommandUUID")]
    pub command_uuid: String,
    #[serde(rename = "Command")]
    pub command: Command,
}

impl CommandEnvelope {
    pub fn new(command_uuid: impl Into<String>, command: Command) -> Self {
        CommandEnvelope {
            command_uuid: command_uuid.into(),
            command,
        }
    }

    /// Validates the command and serializes the envelope as an XML plist.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::InvalidCommand`] from [`Command::validate`], or
    /// [`WireError::SerializePlist`] if the plist writer fails.
    pub fn to_plist_xml(&self) -> Result<Vec<u8>, WireError> {
        self.command.validate()?;
        if self.command_uuid.is_empty() {
            return Err(WireError::InvalidCommand {
                request_type: self.command.request_type(),
                detail: "CommandUUID is empty; set a unique identifier".to_owned(),
            });
        }
        crate::apple::to_plist_xml(self)
    }
}

/// Parses a command plist, as the device simulator receives it.
///
/// Unknown keys are ignored.
///
/// # Errors
///
/// - [`WireError::MalformedPlist`] or [`WireError::RootNotDictionary`] for a
///   body that is not a plist dictionary.
/// - [`WireError::MissingKey`] when `CommandUUID`, `Command` or
///   `RequestType` is absent.
/// - [`WireError::UnknownRequestType`] for a command this crate does not
///   model.
/// - [`WireError::InvalidValue`] or [`WireError::InvalidMessage`] for a key
///   with a value of the wrong type.
pub fn parse_command(body: &[u8]) -> Result<CommandEnvelope, WireError> {
    let mut envelope = parse_dictionary(body, "command")?;
    let command_uuid = required_string(&envelope, "CommandUUID", "command")?.to_owned();
    let command = match envelope.remove("Command") {
        None => {
            return Err(WireError::MissingKey {
                key: "Command",
                message_type: "command".to_owned(),
            });
        }
        Some(plist::Value::Dictionary(command)) => command,
        Some(other) => {
            return Err(WireError::InvalidValue {
                key: "Command".to_owned(),
                message_type: "command".to_owned(),
                detail: format!("found {}, expected a dictionary", plist_kind(&other)),
            });
        }
    };

    let request_type = required_string(&command, "RequestType", "command")?.to_owned();
    let command = match request_type.as_str() {
        "ScheduleOSUpdate" => Command::ScheduleOsUpdate(decode_dictionary(command, &request_type)?),
        "OSUpdateStatus" => Command::OsUpdateStatus,
        "AvailableOSUpdates" => Command::AvailableOsUpdates,
        "ScheduleOSUpdateScan" => {
            Command::ScheduleOsUpdateScan(decode_dictionary(command, &request_type)?)
        }
        "DeviceInformation" => {
            Command::DeviceInformation(decode_dictionary(command, &request_type)?)
        }
        "DeclarativeManagement" => {
            Command::DeclarativeManagement(decode_dictionary(command, &request_type)?)
        }
        _ => return Err(WireError::UnknownRequestType { request_type }),
    };
    Ok(CommandEnvelope {
        command_uuid,
        command,
    })
}
