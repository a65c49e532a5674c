//! Server responses of the declarative management protocol: the `tokens`
//! and `declaration-items` endpoints.

use serde::{Deserialize, Serialize};

use super::declaration::{Declaration, DeclarationKind, declarations_token};
use crate::apple::WireError;

/// Synchronization tokens. The device fetches the manifest again when
/// `DeclarationsToken` differs from the one it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncTokens {
    #[serde(rename = "DeclarationsToken")]
    pub declarations_token: String,
    /// RFC 3339 time of the last change to the declarations, such as
    /// `2025-09-15T10:00:00Z`.
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
}

impl SyncTokens {
    /// Creates tokens with `changed_at` written in UTC at whole-second
    /// precision.
    pub fn new(declarations_token: impl Into<String>, changed_at: jiff::Timestamp) -> Self {
        SyncTokens {
            declarations_token: declarations_token.into(),
            timestamp: changed_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }
    }
}

/// Body of the `tokens` endpoint, and the `Data` of a DeclarativeManagement
/// command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokensResponse {
    #[serde(rename = "SyncTokens")]
    pub sync_tokens: SyncTokens,
}

impl TokensResponse {
    /// Creates the response for the current set of declarations.
    pub fn for_declarations(declarations: &[Declaration], changed_at: jiff::Timestamp) -> Self {
        TokensResponse {
            sync_tokens: SyncTokens::new(declarations_token_of(declarations), changed_at),
        }
    }

    /// Serializes the response as JSON.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::SerializeJson`] if serialization fails.
    pub fn to_json(&self) -> Result<Vec<u8>, WireError> {
        serde_json::to_vec(self).map_err(|source| WireError::SerializeJson {
            context: "tokens response",
            source,
        })
    }
}

/// Computes the `DeclarationsToken` of a set of declarations with
/// [`declarations_token`].
pub fn declarations_token_of(declarations: &[Declaration]) -> String {
    declarations_token(declarations.iter().map(|declaration| {
        (
            declaration.identifier.as_str(),
            declaration.server_token.as_str(),
        )
    }))
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestItem {
    #[serde(rename = "Identifier")]
    pub identifier: String,
    #[serde(rename = "ServerToken")]
    pub server_token: String,
}

/// The manifest lists, one per declaration kind. All four are always sent,
/// empty or not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDeclarations {
    #[serde(rename = "Activations")]
    pub activations: Vec<ManifestItem>,
    #[serde(rename = "Configurations")]
    pub configurations: Vec<ManifestItem>,
    #[serde(rename = "Assets")]
    pub assets: Vec<ManifestItem>,
    #[serde(rename = "Management")]
    pub management: Vec<ManifestItem>,
}

/// Body of the `declaration-items` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclarationItemsResponse {
    #[serde(rename = "Declarations")]
    pub declarations: ManifestDeclarations,
    #[serde(rename = "DeclarationsToken")]
    pub declarations_token: String,
}

impl DeclarationItemsResponse {
    /// Builds the manifest for `declarations`, each list sorted by
    /// identifier, with the matching `DeclarationsToken`.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::InvalidDeclaration`] for a declaration whose type
    /// has no kind.
    pub fn from_declarations(declarations: &[Declaration]) -> Result<Self, WireError> {
        let mut manifest = ManifestDeclarations::default();
        for declaration in declarations {
            let Some(kind) = declaration.kind() else {
                return Err(WireError::InvalidDeclaration {
                    identifier: declaration.identifier.clone(),
                    detail: format!(
                        "Type {:?} is not an activation, configuration, asset or management type",
                        declaration.declaration_type
                    ),
                });
            };
            let list = match kind {
                DeclarationKind::Activation => &mut manifest.activations,
                DeclarationKind::Configuration => &mut manifest.configurations,
                DeclarationKind::Asset => &mut manifest.assets,
                DeclarationKind::Management => &mut manifest.management,
            };
            list.push(ManifestItem {
                identifier: declaration.identifier.clone(),
                server_token: declaration.server_token.clone(),
            });
        }
        for list in [
            &mut manifest.activations,
            &mut manifest.configurations,
            &mut manifest.assets,
            &mut manifest.management,
        ] {
            list.sort_by(|a, b| a.identifier.cmp(&b.identifier));
        }
        Ok(DeclarationItemsResponse {
            declarations: manifest,
            declarations_token: declarations_token_of(declarations),
        })
    }

    /// Serializes the response as JSON.
    ///
    /// # Errors
    ///
    /// Returns [`WireError::SerializeJson`] if serialization fails.
    pub fn to_json(&self) -> Result<Vec<u8>, WireError> {
        serde_json::to_vec(self).map_err(|source| WireError::SerializeJson {
            context: "declaration items response",
            source,
        })
    }
}
