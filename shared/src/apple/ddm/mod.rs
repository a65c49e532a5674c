//! Declarative device management messages, sent as JSON.
//!
//! - [`declaration`]: declarations, typed payloads, and the `ServerToken`
//!   and `DeclarationsToken` computations.
//! - [`protocol`]: the `tokens` and `declaration-items` responses.
//! - [`endpoint`]: the `Endpoint` of a DeclarativeManagement check-in.
//! - [`status`]: status reports sent to the `status` endpoint.

pub mod declaration;
pub mod endpoint;
pub mod protocol;
pub mod status;

pub use declaration::{
    ActivationSimple, AutomaticActions, Beta, BetaProgram, DEFERRAL_DAYS, Declaration,
    DeclarationKind, DeclarationPayload, Deferrals, MAX_TOKEN_OCTETS, ROLLOUT_STATUS_ITEMS,
    RapidSecurityResponse, RecommendedCadence, SoftwareUpdateEnforcementSpecific,
    SoftwareUpdateSettings, StatusSubscriptionItem, StatusSubscriptions, UserControl,
    declarations_token, server_token,
};
pub use endpoint::DdmEndpoint;
pub use protocol::{
    DeclarationItemsResponse, ManifestDeclarations, ManifestItem, SyncTokens, TokensResponse,
    declarations_token_of,
};
pub use status::{
    DeclarationStatus, DeclarationValidity, DeclarationsStatus, ErrorReason, FailureReason,
    InstallReason, InstallReasonStatus, InstallState, ParsedStatus, PendingVersion, StatusError,
    StatusReason, StatusReport, parse_status_report, status_items,
};

#[cfg(test)]
mod tests;
