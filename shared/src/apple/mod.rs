//! Apple MDM (plist) and DDM (JSON) wire types.
//!
//! Key names and value sets follow Apple's device-management schemas
//! (<https://github.com/apple/device-management>, release
//! "Release_iOS-18-1_macOS-15-1"). We send exactly the schema's keys and
//! values. We accept unknown keys, ignore them, and keep unknown enum values
//! as `Unknown(String)` so that callers can record them instead of failing.
//!
//! - [`mdm`]: check-in messages, commands and command results (plist).
//! - [`ddm`]: declarations, the declarative-management protocol responses,
//!   endpoints and status reports (JSON).

// Declared first: `macro_rules!` macros are visible only to modules after them.
#[macro_use]
mod wire_enum;

pub mod ddm;
pub mod error;
pub mod mdm;

mod serde_plist;

pub use error::WireError;

/// Maximum body size, in bytes, that the HTTP layer accepts from a device
/// on the check-in and command-result endpoints.
///
/// Check-in messages are under 10 KiB (the largest field is a push or
/// bootstrap token of a few hundred bytes). The largest results we request
/// are AvailableOSUpdates and DeviceInformation, a few KiB each. A DDM status
/// report in a full "safety sync" carries every declaration's status and the
/// client capabilities, and the plist `<data>` field that wraps it grows it
/// by a third through base64. 256 KiB leaves a wide margin over those sizes
/// while bounding the memory one request can take before parsing.
///
/// NOTE: the message sizes above are estimates from the schemas, not
/// measurements from a fleet. Commands with larger results (such as
/// InstalledApplicationList or CertificateList) would need a larger limit.
pub const MAX_DEVICE_BODY_BYTES: usize = 256 * 1024;

/// Serializes `value` as an XML property list.
///
/// # Errors
///
/// Returns [`WireError::SerializePlist`] when the value has no plist form,
/// such as a map with non-string keys.
pub fn to_plist_xml<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut body = Vec::new();
    plist::to_writer_xml(&mut body, value)
        .map_err(|source| WireError::SerializePlist { source })?;
    Ok(body)
}

/// A value outside the known value set, found while parsing a device
/// message, with the key path where it sat (such as
/// `UpdateResults[0].Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// Key path from the message root, with `[i]` for array elements.
    pub path: String,
    /// The value as the device sent it.
    pub value: String,
}

impl UnknownValue {
    pub(crate) fn new(path: impl Into<String>, value: impl Into<String>) -> Self {
        UnknownValue {
            path: path.into(),
            value: value.into(),
        }
    }
}
