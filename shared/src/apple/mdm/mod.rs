//! MDM protocol messages, sent as property lists.
//!
//! - [`checkin`]: device -> server messages on the check-in URL.
//! - [`command`]: server -> device commands, sent as the response body of a
//!   request to the server URL.
//! - [`result`]: device -> server command results on the server URL.

pub mod checkin;
pub mod command;
pub mod result;

pub use checkin::{
    Authenticate, CheckOut, CheckinMessage, DeclarativeManagement, GetBootstrapToken,
    GetBootstrapTokenResponse, SetBootstrapToken, TokenUpdate, parse_checkin,
};
pub use command::{
    Command, CommandEnvelope, DeclarativeManagementCommand, DeviceInformation, InstallAction,
    OsUpdateItem, Priority, ScheduleOsUpdate, ScheduleOsUpdateScan, parse_command, queries,
};
pub use result::{
    AvailableOsUpdate, AvailableOsUpdatesResponse, CommandResponse, CommandResult, CommandStatus,
    DeviceInformationResponse, ErrorChainItem, OsUpdateState, OsUpdateStatusItem,
    OsUpdateStatusResponse, QueryResponses, ScheduleOsUpdateResponse, ScheduleOsUpdateScanResponse,
    UpdateResult, UpdateResultAction, UpdateResultStatus, parse_result,
};

use plist::{Dictionary, Value};

use super::WireError;
use super::error::plist_kind;

/// Parses `body` as a plist whose root must be a dictionary.
pub(crate) fn parse_dictionary(
    body: &[u8],
    context: &'static str,
) -> Result<Dictionary, WireError> {
    let value: Value =
        plist::from_bytes(body).map_err(|source| WireError::MalformedPlist { source })?;
    match value {
        Value::Dictionary(dict) => Ok(dict),
        other => Err(WireError::RootNotDictionary {
            context,
            found: plist_kind(&other),
        }),
    }
}

/// Returns the string under `key`, or `MissingKey`/`InvalidValue` naming
/// the key and `message_type`.
pub(crate) fn required_string<'a>(
    dict: &'a Dictionary,
    key: &'static str,
    message_type: &str,
) -> Result<&'a str, WireError> {
    match dict.get(key) {
        None => Err(WireError::MissingKey {
            key,
            message_type: message_type.to_owned(),
        }),
        Some(Value::String(value)) => Ok(value),
        Some(other) => Err(WireError::InvalidValue {
            key: key.to_owned(),
            message_type: message_type.to_owned(),
            detail: format!("found {}, expected a string", plist_kind(other)),
        }),
    }
}

/// Deserializes a typed message from a plist dictionary.
pub(crate) fn decode_dictionary<T: serde::de::DeserializeOwned>(
    dict: Dictionary,
    message_type: &str,
) -> Result<T, WireError> {
    plist::from_value(&Value::Dictionary(dict)).map_err(|source| WireError::InvalidMessage {
        message_type: message_type.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
