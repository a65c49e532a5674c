//! Errors of the catalog layer: reading Apple's catalog and resolving a
//! requested version for one device.

use jiff::civil::Date;

use super::update::update_name;
use crate::domain::{InvalidOsVersion, OsVersion, Platform};

/// Failure to read a catalog or a model list. Each variant names the JSON path
/// and the offending value, so an operator can find it in the file.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "invalid catalog JSON ({source}): expected Apple's gdmf.apple.com/v2/pmv reply or a saved copy of it"
    )]
    InvalidJson {
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid catalog: {path} is a JSON {found}, expected a JSON {expected}")]
    UnexpectedType {
        path: String,
        expected: &'static str,
        found: &'static str,
    },

    #[error(
        "invalid catalog: the set {set} is missing: check that the file is a complete gdmf.apple.com/v2/pmv reply"
    )]
    MissingSet { set: &'static str },

    #[error(
        "invalid catalog: the bucket {set}.{bucket} is missing: check that the file is a complete gdmf.apple.com/v2/pmv reply"
    )]
    MissingBucket {
        set: &'static str,
        bucket: &'static str,
    },

    #[error("invalid catalog entry {path}: {source}")]
    InvalidEntry {
        path: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid catalog entry {path}: {field} is missing or empty")]
    MissingField { path: String, field: &'static str },

    #[error("invalid catalog entry {path}: ProductVersion {value:?} is not a dotted version")]
    InvalidVersion {
        path: String,
        value: String,
        #[source]
        source: InvalidOsVersion,
    },

    #[error("invalid catalog entry {path}: {field} {value:?} is not a date in the form YYYY-MM-DD")]
    InvalidDate {
        path: String,
        field: &'static str,
        value: String,
        #[source]
        source: Option<jiff::Error>,
    },

    #[error(
        "inconsistent catalog: build {build} at {path} is {found}, but an earlier entry lists it as {expected}: fetch the catalog again"
    )]
    ConflictingBuild {
        build: String,
        path: String,
        expected: String,
        found: String,
    },

    #[error("invalid model list {list}: {source}")]
    InvalidModelList {
        list: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Reason a requested version cannot be installed on a device.
///
/// `NotNewer` is not a failure of the request: the device already runs the
/// requested version or a newer one, and callers record the device as obsolete
/// for the operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "{} is not in Apple's catalog: pick a version from the update list or import a newer catalog",
        update_name(*platform, version, extra.as_deref())
    )]
    NotInCatalog {
        platform: Platform,
        version: OsVersion,
        /// `ProductVersionExtra` of a requested background security improvement.
        extra: Option<String>,
    },

    #[error(
        "no build of {version} in the catalog lists model {model}: pick a version this model supports"
    )]
    NotApplicable { version: OsVersion, model: String },

    #[error(
        "{version} (build {build}) expired on {expired_on} and can no longer be installed: pick a newer version"
    )]
    Expired {
        version: OsVersion,
        build: String,
        expired_on: Date,
    },

    #[error("the device already runs {current}, which is at or above {version}")]
    NotNewer {
        version: OsVersion,
        current: OsVersion,
    },

    #[error(
        "{version} {extra} installs only on build {prerequisite_build}, but the device runs build {}: update the device to {version} build {prerequisite_build} first",
        current_build.as_deref().unwrap_or("unknown")
    )]
    PrerequisiteBuildRequired {
        version: OsVersion,
        extra: String,
        prerequisite_build: String,
        current_build: Option<String>,
    },
}
