//! Apple platforms and OS versions as the catalog and the devices report them.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The operating system family a device runs.
///
/// iPadOS is separate from iOS because administrators filter on it, but both
/// speak the same protocols and share the catalog's `iOS` bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    #[serde(rename = "macos")]
    MacOs,
    #[serde(rename = "ios")]
    Ios,
    #[serde(rename = "ipados")]
    IpadOs,
}

impl Platform {
    /// Marketing name used in update names, such as "macOS 26.6.1".
    pub fn marketing_name(self) -> &'static str {
        match self {
            Platform::MacOs => "macOS",
            Platform::Ios => "iOS",
            Platform::IpadOs => "iPadOS",
        }
    }

    /// Lower-case name used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::MacOs => "macos",
            Platform::Ios => "ios",
            Platform::IpadOs => "ipados",
        }
    }

    /// Derives the platform from a model identifier such as `Mac14,7`,
    /// `MacBookPro18,3`, `iPhone15,2` or `iPad13,1`.
    pub fn from_model_identifier(model: &str) -> Option<Platform> {
        if model.starts_with("iPhone") || model.starts_with("iPod") {
            Some(Platform::Ios)
        } else if model.starts_with("iPad") {
            Some(Platform::IpadOs)
        } else if model.starts_with("Mac")
            || model.starts_with("iMac")
            || model.starts_with("VirtualMac")
        {
            Some(Platform::MacOs)
        } else {
            None
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "macos" => Ok(Platform::MacOs),
            "ios" => Ok(Platform::Ios),
            "ipados" => Ok(Platform::IpadOs),
            other => Err(format!(
                "unknown platform {other:?}: expected macos, ios or ipados"
            )),
        }
    }
}

/// A dotted OS version such as `26.6.1`, compared numerically component by
/// component, with missing components read as zero (`15.7` == `15.7.0`).
#[derive(Debug, Clone, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OsVersion {
    parts: [u32; 3],
    text: String,
}

impl OsVersion {
    pub fn major(&self) -> u32 {
        self.parts[0]
    }

    pub fn minor(&self) -> u32 {
        self.parts[1]
    }

    pub fn patch(&self) -> u32 {
        self.parts[2]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Error for a version string that is not one to three dot-separated numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid OS version {0:?}: expected one to three dot-separated numbers such as 26.6.1")]
pub struct InvalidOsVersion(pub String);

impl FromStr for OsVersion {
    type Err = InvalidOsVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidOsVersion(s.to_string());
        let mut parts = [0u32; 3];
        for (index, piece) in s.split('.').enumerate() {
            if index == 3 || piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            parts[index] = piece.parse().map_err(|_| invalid())?;
        }
        Ok(OsVersion {
            parts,
            text: s.to_string(),
        })
    }
}

impl TryFrom<String> for OsVersion {
    type Error = InvalidOsVersion;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<OsVersion> for String {
    fn from(value: OsVersion) -> Self {
        value.text
    }
}

impl PartialEq for OsVersion {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

impl std::hash::Hash for OsVersion {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
    }
}

impl PartialOrd for OsVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OsVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts.cmp(&other.parts)
    }
}

impl fmt::Display for OsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> OsVersion {
        s.parse().unwrap()
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(v("26.10") > v("26.9.9"));
        assert!(v("15.7.9") > v("15.7.8"));
        assert_eq!(v("15.7"), v("15.7.0"));
        assert!(v("26") > v("15.7.9"));
    }

    #[test]
    fn version_keeps_its_text() {
        assert_eq!(v("15.7").to_string(), "15.7");
        assert_eq!(v("26.6.1").major(), 26);
    }

    #[test]
    fn invalid_versions_are_rejected() {
        for bad in ["", "26.", ".1", "26.a", "1.2.3.4", "26 .1", "-1"] {
            assert!(
                bad.parse::<OsVersion>().is_err(),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn platform_from_model_identifier() {
        assert_eq!(
            Platform::from_model_identifier("Mac14,7"),
            Some(Platform::MacOs)
        );
        assert_eq!(
            Platform::from_model_identifier("MacBookPro18,3"),
            Some(Platform::MacOs)
        );
        assert_eq!(
            Platform::from_model_identifier("iPhone15,2"),
            Some(Platform::Ios)
        );
        assert_eq!(
            Platform::from_model_identifier("iPad13,1"),
            Some(Platform::IpadOs)
        );
        assert_eq!(Platform::from_model_identifier("Watch6,1"), None);
    }
}
