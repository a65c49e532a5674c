//! The `Endpoint` of a DeclarativeManagement check-in.

use std::fmt;
use std::str::FromStr;

use super::declaration::DeclarationKind;
use crate::apple::WireError;

/// Resource that a DeclarativeManagement check-in requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DdmEndpoint {
    /// `tokens`: the synchronization tokens.
    Tokens,
    /// `declaration-items`: the manifest.
    DeclarationItems,
    /// `status`: the device sends a status report in `Data`.
    Status,
    /// `declaration/<kind>/<identifier>`: one declaration.
    Declaration {
        kind: DeclarationKind,
        identifier: String,
    },
}

impl DdmEndpoint {
    /// Parses an `Endpoint` string.
    ///
    /// The identifier is everything after the second `/`, so an identifier
    /// that itself contains `/` survives.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::UnknownEndpoint`] for any other string,
    /// including a declaration path with an unknown kind or an empty
    /// identifier.
    pub fn parse(endpoint: &str) -> Result<Self, WireError> {
        let unknown = || WireError::UnknownEndpoint {
            endpoint: endpoint.to_owned(),
        };
        match endpoint {
            "tokens" => return Ok(DdmEndpoint::Tokens),
            "declaration-items" => return Ok(DdmEndpoint::DeclarationItems),
            "status" => return Ok(DdmEndpoint::Status),
            _ => {}
        }
        let rest = endpoint.strip_prefix("declaration/").ok_or_else(unknown)?;
        let (segment, identifier) = rest.split_once('/').ok_or_else(unknown)?;
        let kind = DeclarationKind::from_endpoint_segment(segment).ok_or_else(unknown)?;
        if identifier.is_empty() {
            return Err(unknown());
        }
        Ok(DdmEndpoint::Declaration {
            kind,
            identifier: identifier.to_owned(),
        })
    }
}

impl FromStr for DdmEndpoint {
    type Err = WireError;

    fn from_str(endpoint: &str) -> Result<Self, WireError> {
        DdmEndpoint::parse(endpoint)
    }
}

/// Writes the `Endpoint` string, the inverse of [`DdmEndpoint::parse`].
impl fmt::Display for DdmEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DdmEndpoint::Tokens => f.write_str("tokens"),
            DdmEndpoint::DeclarationItems => f.write_str("declaration-items"),
            DdmEndpoint::Status => f.write_str("status"),
            DdmEndpoint::Declaration { kind, identifier } => {
                write!(f, "declaration/{}/{identifier}", kind.as_endpoint_segment())
            }
        }
    }
}
