//! Errors from parsing and building Apple wire messages.

/// Error from parsing a device message or building a server message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    // The plist crate's own message is a debug dump of an I/O error, so it
    // stays in `source` for logs and out of what the device is told.
    #[error("malformed property list: the body is not a well-formed XML or binary plist")]
    MalformedPlist {
        #[source]
        source: plist::Error,
    },

    #[error("malformed JSON in {context}: {source}")]
    MalformedJson {
        context: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("failed to serialize property list: {source}")]
    SerializePlist {
        #[source]
        source: plist::Error,
    },

    #[error("failed to serialize JSON for {context}: {source}")]
    SerializeJson {
        context: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid {context}: the root is {found}, expected a dictionary")]
    RootNotDictionary {
        context: &'static str,
        found: &'static str,
    },

    #[error(
        "unknown check-in MessageType {message_type:?}; expected Authenticate, TokenUpdate, \
         CheckOut, DeclarativeManagement, SetBootstrapToken or GetBootstrapToken"
    )]
    UnknownMessageType { message_type: String },

    #[error(
        "unknown command RequestType {request_type:?}; expected ScheduleOSUpdate, \
         OSUpdateStatus, AvailableOSUpdates, ScheduleOSUpdateScan, DeviceInformation or \
         DeclarativeManagement"
    )]
    UnknownRequestType { request_type: String },

    #[error("missing required key {key} in {message_type} message")]
    MissingKey {
        key: &'static str,
        message_type: String,
    },

    #[error("invalid value for key {key} in {message_type} message: {detail}")]
    InvalidValue {
        key: String,
        message_type: String,
        detail: String,
    },

    /// A key has a value of the wrong type. `source` names the type found
    /// and the type expected.
    #[error("invalid {message_type} message: {source}")]
    InvalidMessage {
        message_type: String,
        #[source]
        source: plist::Error,
    },

    #[error(
        "unknown declarative management endpoint {endpoint:?}; expected tokens, \
         declaration-items, status or declaration/<activation|configuration|asset|management>/<identifier>"
    )]
    UnknownEndpoint { endpoint: String },

    #[error("invalid {request_type} command: {detail}")]
    InvalidCommand {
        request_type: &'static str,
        detail: String,
    },

    #[error("invalid declaration {identifier:?}: {detail}")]
    InvalidDeclaration { identifier: String, detail: String },

    #[error("invalid status report: {detail}")]
    InvalidStatusReport { detail: String },
}

/// Names the kind of a plist value for error messages.
pub(crate) fn plist_kind(value: &plist::Value) -> &'static str {
    match value {
        plist::Value::Array(_) => "an array",
        plist::Value::Dictionary(_) => "a dictionary",
        plist::Value::Boolean(_) => "a boolean",
        plist::Value::Data(_) => "data",
        plist::Value::Date(_) => "a date",
        plist::Value::Real(_) => "a real",
        plist::Value::Integer(_) => "an integer",
        plist::Value::String(_) => "a string",
        plist::Value::Uid(_) => "a UID",
        _ => "an unsupported plist value",
    }
}

/// Names the kind of a JSON value for error messages.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
