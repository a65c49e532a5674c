//! Command results: the plist bodies devices send with `PUT` to the server
//! URL, both to report a command's outcome and to poll for the next command
//! (`Status` `Idle`).
//!
//! [`parse_result`] reads the envelope keys and keeps the rest of the
//! dictionary raw. The server matches a result to its command by
//! `CommandUUID`, so it requests the matching typed response with
//! [`CommandResult::response`] or one of the named accessors.

use plist::{Dictionary, Value};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::{decode_dictionary, parse_dictionary, required_string};
use crate::apple::error::plist_kind;
use crate::apple::serde_plist::{option_date, option_date_list};
use crate::apple::{UnknownValue, WireError};

const RESULT_CONTEXT: &str = "command result";

tolerant_enum! {
    /// Command result `Status`.
    pub enum CommandStatus {
        /// The device has no result to report and polls for the next command.
        Idle => "Idle",
        Acknowledged => "Acknowledged",
        /// The command failed, and `ErrorChain` describes the cause.
        Error => "Error",
        /// The device could not parse the command.
        CommandFormatError => "CommandFormatError",
        /// The device cannot run the command now and will poll again later.
        NotNow => "NotNow",
    }
}

tolerant_enum! {
    /// `InstallAction` the device scheduled, in a `ScheduleOSUpdate` result.
    pub enum UpdateResultAction {
        Error => "Error",
        DownloadOnly => "DownloadOnly",
        InstallAsap => "InstallASAP",
        NotifyOnly => "NotifyOnly",
        InstallLater => "InstallLater",
        InstallForceRestart => "InstallForceRestart",
    }
}

tolerant_enum! {
    /// Update `Status` in a `ScheduleOSUpdate` result.
    pub enum UpdateResultStatus {
        Idle => "Idle",
        Downloading => "Downloading",
        DownloadFailed => "DownloadFailed",
        /// iOS only: the device must be tethered to download.
        DownloadRequiresComputer => "DownloadRequiresComputer",
        DownloadInsufficientSpace => "DownloadInsufficientSpace",
        DownloadInsufficientPower => "DownloadInsufficientPower",
        DownloadInsufficientNetwork => "DownloadInsufficientNetwork",
        Installing => "Installing",
        InstallInsufficientSpace => "InstallInsufficientSpace",
        InstallInsufficientPower => "InstallInsufficientPower",
        InstallPhoneCallInProgress => "InstallPhoneCallInProgress",
        InstallFailed => "InstallFailed",
    }
}

tolerant_enum! {
    /// Update `Status` in an `OSUpdateStatus` result.
    pub enum OsUpdateState {
        Idle => "Idle",
        /// Downloading, then preparing.
        Downloading => "Downloading",
        Installing => "Installing",
    }
}

/// One element of an `ErrorChain` array.
///
/// Parsed leniently: each field is taken only when it has the expected
/// type (`ErrorCode` also accepts a decimal string), and other keys are
/// ignored, so odd field types in an error chain do not fail a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErrorChainItem {
    #[serde(rename = "ErrorCode", skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    #[serde(rename = "ErrorDomain", skip_serializing_if = "Option::is_none")]
    pub error_domain: Option<String>,
    #[serde(
        rename = "LocalizedDescription",
        skip_serializing_if = "Option::is_none"
    )]
    pub localized_description: Option<String>,
    #[serde(
        rename = "USEnglishDescription",
        skip_serializing_if = "Option::is_none"
    )]
    pub us_english_description: Option<String>,
}

impl ErrorChainItem {
    /// Picks the known fields out of one `ErrorChain` dictionary.
    pub fn from_dictionary(dict: &Dictionary) -> Self {
        let error_code = match dict.get("ErrorCode") {
            Some(Value::Integer(code)) => code.as_signed(),
            Some(Value::String(code)) => code.trim().parse().ok(),
            _ => None,
        };
        let string = |key: &str| dict.get(key).and_then(Value::as_string).map(str::to_owned);
        ErrorChainItem {
            error_code,
            error_domain: string("ErrorDomain"),
            localized_description: string("LocalizedDescription"),
            us_english_description: string("USEnglishDescription"),
        }
    }
}

impl<'de> Deserialize<'de> for ErrorChainItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let dict = Dictionary::deserialize(deserializer)?;
        Ok(ErrorChainItem::from_dictionary(&dict))
    }
}

/// A typed command response, decoded from the non-envelope keys of a
/// result.
pub trait CommandResponse: Serialize + DeserializeOwned {
    /// `RequestType` of the command this response belongs to.
    const REQUEST_TYPE: &'static str;
    /// Key whose presence marks this response in a result body.
    const RESPONSE_KEY: &'static str;

    /// Values outside the known sets, with their key paths.
    fn unknown_values(&self) -> Vec<UnknownValue>;

    /// Parses a whole result plist as this response, ignoring the envelope
    /// keys.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::MalformedPlist`] or
    /// [`WireError::RootNotDictionary`] for a body that is not a plist
    /// dictionary, [`WireError::MissingKey`] when [`Self::RESPONSE_KEY`] is
    /// absent, and [`WireError::InvalidMessage`] when a key has the wrong
    /// type.
    fn from_result_body(body: &[u8]) -> Result<Self, WireError> {
        let dict = parse_dictionary(body, RESULT_CONTEXT)?;
        decode_response(dict)?.ok_or_else(|| WireError::MissingKey {
            key: Self::RESPONSE_KEY,
            message_type: format!("{} result", Self::REQUEST_TYPE),
        })
    }
}

fn decode_response<T: CommandResponse>(dict: Dictionary) -> Result<Option<T>, WireError> {
    if !dict.contains_key(T::RESPONSE_KEY) {
        return Ok(None);
    }
    decode_dictionary(dict, &format!("{} result", T::REQUEST_TYPE)).map(Some)
}

/// One element of `UpdateResults` in a `ScheduleOSUpdate` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateResult {
    #[serde(rename = "ProductKey")]
    pub product_key: String,
    #[serde(rename = "InstallAction")]
    pub install_action: UpdateResultAction,
    #[serde(rename = "Status")]
    pub status: UpdateResultStatus,
    #[serde(
        rename = "ErrorChain",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_chain: Option<Vec<ErrorChainItem>>,
}

/// `ScheduleOSUpdate` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleOsUpdateResponse {
    #[serde(rename = "UpdateResults")]
    pub update_results: Vec<UpdateResult>,
}

impl CommandResponse for ScheduleOsUpdateResponse {
    const REQUEST_TYPE: &'static str = "ScheduleOSUpdate";
    const RESPONSE_KEY: &'static str = "UpdateResults";

    fn unknown_values(&self) -> Vec<UnknownValue> {
        let mut unknown = Vec::new();
        for (index, result) in self.update_results.iter().enumerate() {
            if result.install_action.is_unknown() {
                unknown.push(UnknownValue::new(
                    format!("UpdateResults[{index}].InstallAction"),
                    result.install_action.as_str(),
                ));
            }
            if result.status.is_unknown() {
                unknown.push(UnknownValue::new(
                    format!("UpdateResults[{index}].Status"),
                    result.status.as_str(),
                ));
            }
        }
        unknown
    }
}

/// One element of `OSUpdateStatus` in an `OSUpdateStatus` result.
///
/// `IsDownloaded` and `DownloadPercentComplete` default to `false` and `0.0`
/// when absent, so that one incomplete entry does not fail the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OsUpdateStatusItem {
    #[serde(rename = "ProductKey")]
    pub product_key: String,
    #[serde(rename = "IsDownloaded", default)]
    pub is_downloaded: bool,
    /// Download progress from 0.0 to 1.0.
    #[serde(rename = "DownloadPercentComplete", default)]
    pub download_percent_complete: f64,
    #[serde(rename = "Status")]
    pub status: OsUpdateState,
    /// macOS 12.3 and later.
    #[serde(
        rename = "MaxDeferrals",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_deferrals: Option<i64>,
    /// macOS 12.3 and later.
    #[serde(
        rename = "DeferralsRemaining",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub deferrals_remaining: Option<i64>,
    /// macOS 12.3 and later.
    #[serde(
        rename = "NextScheduledInstall",
        default,
        skip_serializing_if = "Option::is_none",
        with = "option_date"
    )]
    pub next_scheduled_install: Option<jiff::Timestamp>,
    /// When the OS notified the user about this update (macOS 12.3 and
    /// later).
    #[serde(
        rename = "PastNotifications",
        default,
        skip_serializing_if = "Option::is_none",
        with = "option_date_list"
    )]
    pub past_notifications: Option<Vec<jiff::Timestamp>>,
}

/// `OSUpdateStatus` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OsUpdateStatusResponse {
    #[serde(rename = "OSUpdateStatus")]
    pub os_update_status: Vec<OsUpdateStatusItem>,
}

impl CommandResponse for OsUpdateStatusResponse {
    const REQUEST_TYPE: &'static str = "OSUpdateStatus";
    const RESPONSE_KEY: &'static str = "OSUpdateStatus";

    fn unknown_values(&self) -> Vec<UnknownValue> {
        self.os_update_status
            .iter()
            .enumerate()
            .filter(|(_, item)| item.status.is_unknown())
            .map(|(index, item)| {
                UnknownValue::new(
                    format!("OSUpdateStatus[{index}].Status"),
                    item.status.as_str(),
                )
            })
            .collect()
    }
}

/// One element of `AvailableOSUpdates`.
///
/// Only `ProductKey` is required here. The schema marks more keys required,
/// but several of those exist on one platform only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailableOsUpdate {
    #[serde(rename = "ProductKey")]
    pub product_key: String,
    #[serde(
        rename = "HumanReadableName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub human_readable_name: Option<String>,
    /// macOS only.
    #[serde(
        rename = "HumanReadableNameLocale",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub human_readable_name_locale: Option<String>,
    /// macOS only.
    #[serde(
        rename = "MetadataURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_url: Option<String>,
    /// iOS and tvOS only, such as `iOS`.
    #[serde(
        rename = "ProductName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub product_name: Option<String>,
    #[serde(rename = "Version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(rename = "Build", default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Bytes.
    #[serde(
        rename = "DownloadSize",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_size"
    )]
    pub download_size: Option<u64>,
    /// Bytes, iOS and tvOS only.
    #[serde(
        rename = "InstallSize",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_size"
    )]
    pub install_size: Option<u64>,
    /// macOS only.
    #[serde(
        rename = "AppIdentifiersToClose",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub app_identifiers_to_close: Option<Vec<String>>,
    #[serde(
        rename = "IsCritical",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_critical: Option<bool>,
    #[serde(
        rename = "IsConfigDataUpdate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_config_data_update: Option<bool>,
    #[serde(
        rename = "IsFirmwareUpdate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_firmware_update: Option<bool>,
    #[serde(
        rename = "IsMajorOSUpdate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_major_os_update: Option<bool>,
    #[serde(
        rename = "RestartRequired",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub restart_required: Option<bool>,
    #[serde(
        rename = "AllowsInstallLater",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allows_install_later: Option<bool>,
    /// macOS 10.12.4 and later.
    #[serde(
        rename = "DeferredUntil",
        default,
        skip_serializing_if = "Option::is_none",
        with = "option_date"
    )]
    pub deferred_until: Option<jiff::Timestamp>,
    /// macOS 11 and later, Apple silicon.
    #[serde(
        rename = "RequiresBootstrapToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub requires_bootstrap_token: Option<bool>,
    /// True for a Rapid Security Response.
    #[serde(
        rename = "IsSecurityResponse",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_security_response: Option<bool>,
    #[serde(
        rename = "SupplementalBuildVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub supplemental_build_version: Option<String>,
    #[serde(
        rename = "SupplementalOSVersionExtra",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub supplemental_os_version_extra: Option<String>,
}

/// Accepts a byte count sent as a plist integer or real. A real is
/// truncated toward zero, and a negative value is rejected.
fn lenient_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct SizeVisitor;

    impl<'de> Visitor<'de> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a non-negative byte count")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("negative byte count {v}")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            if v.is_finite() && v >= 0.0 {
                // Truncation is intended: sizes are whole bytes.
                Ok(v as u64)
            } else {
                Err(E::custom(format!("invalid byte count {v}")))
            }
        }
    }

    deserializer.deserialize_any(SizeVisitor).map(Some)
}

/// `AvailableOSUpdates` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailableOsUpdatesResponse {
    #[serde(rename = "AvailableOSUpdates")]
    pub available_os_updates: Vec<AvailableOsUpdate>,
}

impl CommandResponse for AvailableOsUpdatesResponse {
    const REQUEST_TYPE: &'static str = "AvailableOSUpdates";
    const RESPONSE_KEY: &'static str = "AvailableOSUpdates";

    fn unknown_values(&self) -> Vec<UnknownValue> {
        Vec::new()
    }
}

/// `QueryResponses` keys for the queries in
/// [`queries`](super::command::queries). Each is present only if queried and
/// allowed. Other keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResponses {
    #[serde(rename = "UDID", default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(rename = "OSVersion", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(
        rename = "BuildVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub build_version: Option<String>,
    #[serde(
        rename = "SupplementalBuildVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub supplemental_build_version: Option<String>,
    #[serde(
        rename = "SupplementalOSVersionExtra",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub supplemental_os_version_extra: Option<String>,
    #[serde(
        rename = "ProductName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub product_name: Option<String>,
    #[serde(rename = "Model", default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(rename = "ModelName", default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(
        rename = "SerialNumber",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub serial_number: Option<String>,
    #[serde(
        rename = "DeviceName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_name: Option<String>,
    #[serde(
        rename = "IsSupervised",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_supervised: Option<bool>,
    #[serde(
        rename = "SoftwareUpdateDeviceID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub software_update_device_id: Option<String>,
    #[serde(rename = "TimeZone", default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// `DeviceInformation` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInformationResponse {
    #[serde(rename = "QueryResponses")]
    pub query_responses: QueryResponses,
}

impl CommandResponse for DeviceInformationResponse {
    const REQUEST_TYPE: &'static str = "DeviceInformation";
    const RESPONSE_KEY: &'static str = "QueryResponses";

    fn unknown_values(&self) -> Vec<UnknownValue> {
        Vec::new()
    }
}

/// `ScheduleOSUpdateScan` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleOsUpdateScanResponse {
    /// True when the scan started.
    #[serde(rename = "ScanInitiated")]
    pub scan_initiated: bool,
}

impl CommandResponse for ScheduleOsUpdateScanResponse {
    const REQUEST_TYPE: &'static str = "ScheduleOSUpdateScan";
    const RESPONSE_KEY: &'static str = "ScanInitiated";

    fn unknown_values(&self) -> Vec<UnknownValue> {
        Vec::new()
    }
}

/// Envelope keys that [`parse_result`] moves out of the body.
const UDID_KEY: &str = "UDID";
const ENROLLMENT_ID_KEY: &str = "EnrollmentID";
const COMMAND_UUID_KEY: &str = "CommandUUID";
const STATUS_KEY: &str = "Status";
const ERROR_CHAIN_KEY: &str = "ErrorChain";

/// A parsed command result.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    pub udid: Option<String>,
    /// Sent by user enrollments in place of `UDID`.
    pub enrollment_id: Option<String>,
    /// Absent only when `Status` is `Idle`.
    pub command_uuid: Option<String>,
    pub status: CommandStatus,
    /// Every other key, including `ErrorChain` and the response keys.
    pub body: Dictionary,
}

impl CommandResult {
    /// Creates a result with an empty body.
    pub fn new(
        udid: impl Into<String>,
        command_uuid: Option<String>,
        status: CommandStatus,
    ) -> Self {
        CommandResult {
            udid: Some(udid.into()),
            enrollment_id: None,
            command_uuid,
            status,
            body: Dictionary::new(),
        }
    }

    /// Merges the keys of `response` into the body.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::SerializePlist`] if `response` does not
    /// serialize to a plist dictionary.
    pub fn with_response<T: Serialize>(mut self, response: &T) -> Result<Self, WireError> {
        let value =
            plist::to_value(response).map_err(|source| WireError::SerializePlist { source })?;
        let Value::Dictionary(dict) = value else {
            return Err(WireError::RootNotDictionary {
                context: "command response",
                found: plist_kind(&value),
            });
        };
        for (key, value) in dict {
            self.body.insert(key, value);
        }
        Ok(self)
    }

    /// Sets `ErrorChain` in the body.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::SerializePlist`] if serialization fails.
    pub fn with_error_chain(mut self, chain: &[ErrorChainItem]) -> Result<Self, WireError> {
        let value =
            plist::to_value(&chain).map_err(|source| WireError::SerializePlist { source })?;
        self.body.insert(ERROR_CHAIN_KEY.to_owned(), value);
        Ok(self)
    }

    /// Returns the `ErrorChain` elements that are dictionaries, or an empty
    /// list when the key is absent.
    pub fn error_chain(&self) -> Vec<ErrorChainItem> {
        match self.body.get(ERROR_CHAIN_KEY) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_dictionary)
                .map(ErrorChainItem::from_dictionary)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Returns the envelope values outside the known sets: an unknown
    /// `Status`, and an `ErrorChain` that is not an array of dictionaries.
    /// Typed responses report their own through
    /// [`CommandResponse::unknown_values`].
    pub fn unknown_values(&self) -> Vec<UnknownValue> {
        let mut unknown = Vec::new();
        if self.status.is_unknown() {
            unknown.push(UnknownValue::new(STATUS_KEY, self.status.as_str()));
        }
        match self.body.get(ERROR_CHAIN_KEY) {
            None => {}
            Some(Value::Array(items)) => {
                for (index, item) in items.iter().enumerate() {
                    if item.as_dictionary().is_none() {
                        unknown.push(UnknownValue::new(
                            format!("{ERROR_CHAIN_KEY}[{index}]"),
                            describe_plist(item),
                        ));
                    }
                }
            }
            Some(other) => unknown.push(UnknownValue::new(ERROR_CHAIN_KEY, describe_plist(other))),
        }
        unknown
    }

    /// Decodes the body as the response `T`, or returns `None` when
    /// [`CommandResponse::RESPONSE_KEY`] is absent, as in an `Error` or
    /// `NotNow` result.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::InvalidMessage`] when a response key has the
    /// wrong type or a required key is missing.
    pub fn response<T: CommandResponse>(&self) -> Result<Option<T>, WireError> {
        decode_response(self.body.clone())
    }

    /// Decodes a `ScheduleOSUpdate` response; see [`Self::response`].
    pub fn schedule_os_update(&self) -> Result<Option<ScheduleOsUpdateResponse>, WireError> {
        self.response()
    }

    /// Decodes an `OSUpdateStatus` response; see [`Self::response`].
    pub fn os_update_status(&self) -> Result<Option<OsUpdateStatusResponse>, WireError> {
        self.response()
    }

    /// Decodes an `AvailableOSUpdates` response; see [`Self::response`].
    pub fn available_os_updates(&self) -> Result<Option<AvailableOsUpdatesResponse>, WireError> {
        self.response()
    }

    /// Decodes a `DeviceInformation` response; see [`Self::response`].
    pub fn device_information(&self) -> Result<Option<DeviceInformationResponse>, WireError> {
        self.response()
    }

    /// Decodes a `ScheduleOSUpdateScan` response; see [`Self::response`].
    pub fn schedule_os_update_scan(
        &self,
    ) -> Result<Option<ScheduleOsUpdateScanResponse>, WireError> {
        self.response()
    }

    /// Serializes the result as an XML plist, envelope keys first.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::SerializePlist`] if the plist writer fails.
    pub fn to_plist_xml(&self) -> Result<Vec<u8>, WireError> {
        let mut dict = Dictionary::new();
        if let Some(udid) = &self.udid {
            dict.insert(UDID_KEY.to_owned(), Value::String(udid.clone()));
        }
        if let Some(enrollment_id) = &self.enrollment_id {
            dict.insert(
                ENROLLMENT_ID_KEY.to_owned(),
                Value::String(enrollment_id.clone()),
            );
        }
        if let Some(command_uuid) = &self.command_uuid {
            dict.insert(
                COMMAND_UUID_KEY.to_owned(),
                Value::String(command_uuid.clone()),
            );
        }
        dict.insert(
            STATUS_KEY.to_owned(),
            Value::String(self.status.as_str().to_owned()),
        );
        for (key, value) in &self.body {
            dict.insert(key.clone(), value.clone());
        }
        crate::apple::to_plist_xml(&Value::Dictionary(dict))
    }
}

/// Renders a plist value for an [`UnknownValue`]: strings as they are,
/// anything else in debug form.
fn describe_plist(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => format!("{other:?}"),
    }
}

/// Parses the plist body of a command result.
///
/// An unknown `Status` is kept as [`CommandStatus::Unknown`] and listed by
/// [`CommandResult::unknown_values`].
///
/// # Errors
///
/// - [`WireError::MalformedPlist`] or [`WireError::RootNotDictionary`] for a
///   body that is not a plist dictionary.
/// - [`WireError::MissingKey`] when `Status` is absent, when `CommandUUID`
///   is absent and `Status` is not `Idle`, or when both `UDID` and
///   `EnrollmentID` are absent (reported as `UDID`).
/// - [`WireError::InvalidValue`] when one of those keys is not a string.
pub fn parse_result(body: &[u8]) -> Result<CommandResult, WireError> {
    let mut dict = parse_dictionary(body, RESULT_CONTEXT)?;
    let status = CommandStatus::from_wire(required_string(&dict, STATUS_KEY, RESULT_CONTEXT)?);
    let command_uuid = optional_string(&dict, COMMAND_UUID_KEY)?;
    let udid = optional_string(&dict, UDID_KEY)?;
    let enrollment_id = optional_string(&dict, ENROLLMENT_ID_KEY)?;

    if command_uuid.is_none() && status != CommandStatus::Idle {
        return Err(WireError::MissingKey {
            key: COMMAND_UUID_KEY,
            message_type: format!("{RESULT_CONTEXT} with Status {status}"),
        });
    }
    if udid.is_none() && enrollment_id.is_none() {
        return Err(WireError::MissingKey {
            key: UDID_KEY,
            message_type: RESULT_CONTEXT.to_owned(),
        });
    }

    for key in [UDID_KEY, ENROLLMENT_ID_KEY, COMMAND_UUID_KEY, STATUS_KEY] {
        dict.remove(key);
    }
    Ok(CommandResult {
        udid,
        enrollment_id,
        command_uuid,
        status,
        body: dict,
    })
}

fn optional_string(dict: &Dictionary, key: &'static str) -> Result<Option<String>, WireError> {
    if dict.contains_key(key) {
        required_string(dict, key, RESULT_CONTEXT).map(|value| Some(value.to_owned()))
    } else {
        Ok(None)
    }
}
