//! Parser for Apple's Software Lookup Service reply (`gdmf.apple.com/v2/pmv`).
//!
//! The reply has sets (`PublicAssetSets`, `AssetSets`,
//! `PublicBackgroundSecurityImprovements`), each with buckets per OS family
//! (`iOS`, `macOS`, `visionOS`) of entries with `ProductVersion`, `Build`,
//! `PostingDate`, `ExpirationDate` and `SupportedDevices`. Entries of the
//! background security improvements set also have `ProductVersionExtra` and
//! `PrerequisiteBuild`.

use std::collections::{BTreeMap, BTreeSet};

use jiff::civil::Date;
use serde::Deserialize;
use serde_json::Value;

use super::CatalogError;
use super::summary::CatalogSummary;
use super::update::CatalogUpdate;
use crate::domain::{OsVersion, Platform};

/// The sets this parser reads. Other top-level keys are ignored.
const SETS: [SetSpec; 3] = [
    SetSpec {
        key: "PublicAssetSets",
        public: true,
        background_security_improvement: false,
        required: true,
    },
    SetSpec {
        key: "AssetSets",
        public: false,
        background_security_improvement: false,
        required: true,
    },
    SetSpec {
        // Apple added this set in 2026, so older snapshots lack it.
        key: "PublicBackgroundSecurityImprovements",
        public: true,
        background_security_improvement: true,
        required: false,
    },
];

/// Buckets that hold the platforms osdeploy deploys to. `PublicAssetSets` and
/// `AssetSets` must have both.
const IOS_BUCKET: &str = "iOS";
const MACOS_BUCKET: &str = "macOS";

struct SetSpec {
    key: &'static str,
    public: bool,
    background_security_improvement: bool,
    required: bool,
}

/// The updates and counts read from one reply.
pub(crate) struct ParsedCatalog {
    pub updates: Vec<CatalogUpdate>,
    pub summary: CatalogSummary,
    pub latest_posting_date: Option<Date>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEntry {
    product_version: String,
    build: String,
    posting_date: String,
    expiration_date: String,
    supported_devices: Vec<String>,
    #[serde(default)]
    product_version_extra: Option<String>,
    #[serde(default)]
    prerequisite_build: Option<String>,
}

/// Facts that hold for a build on every device and in every set.
struct BuildFacts {
    version: OsVersion,
    extra: Option<String>,
    prerequisite_build: Option<String>,
    background_security_improvement: bool,
    release_date: Date,
}

/// Facts of one (build, device) pair, merged over every entry that lists it.
struct Listing {
    platform: Platform,
    expiration_date: Date,
    public: bool,
}

#[derive(Default)]
struct Merger {
    builds: BTreeMap<String, BuildFacts>,
    listings: BTreeMap<(String, String), Listing>,
    summary: CatalogSummary,
    latest_posting_date: Option<Date>,
}

/// Parses a pmv reply into one record per build, platform, expiration date
/// and public flag.
pub(crate) fn parse(bytes: &[u8]) -> Result<ParsedCatalog, CatalogError> {
    let root: Value =
        serde_json::from_slice(bytes).map_err(|source| CatalogError::InvalidJson { source })?;
    let root = as_object(&root, "the top level")?;

    let mut merger = Merger::default();
    for spec in &SETS {
        let Some(set) = root.get(spec.key) else {
            if spec.required {
                return Err(CatalogError::MissingSet { set: spec.key });
            }
            continue;
        };
        let buckets = as_object(set, spec.key)?;
        if spec.required {
            for bucket in [IOS_BUCKET, MACOS_BUCKET] {
                if !buckets.contains_key(bucket) {
                    return Err(CatalogError::MissingBucket {
                        set: spec.key,
                        bucket,
                    });
                }
            }
        }
        for (bucket, entries) in buckets {
            merger.read_bucket(spec, bucket, entries)?;
        }
    }
    Ok(merger.finish())
}

impl Merger {
    fn read_bucket(
        &mut self,
        spec: &SetSpec,
        bucket: &str,
        entries: &Value,
    ) -> Result<(), CatalogError> {
        let path = format!("{}.{bucket}", spec.key);
        let entries = as_array(entries, &path)?;
        let known_bucket = bucket == IOS_BUCKET || bucket == MACOS_BUCKET;

        for (position, entry) in entries.iter().enumerate() {
            self.summary.entries_read += 1;
            if !known_bucket {
                // visionOS and buckets Apple may add later: count what they
                // list without requiring a shape.
                let listed = entry
                    .get("SupportedDevices")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                self.skip_entry(bucket, listed);
                continue;
            }
            let entry_path = format!("{path}[{position}]");
            self.read_entry(spec, bucket, entry, &entry_path)?;
        }
        Ok(())
    }

    fn skip_entry(&mut self, family: &str, listed: usize) {
        self.summary.entries_skipped += 1;
        self.count_skipped_devices(family, listed);
    }

    fn count_skipped_devices(&mut self, family: &str, count: usize) {
        *self
            .summary
            .skipped_devices
            .entry(family.to_string())
            .or_default() += count;
    }

    fn read_entry(
        &mut self,
        spec: &SetSpec,
        bucket: &str,
        entry: &Value,
        path: &str,
    ) -> Result<(), CatalogError> {
        let raw = RawEntry::deserialize(entry).map_err(|source| CatalogError::InvalidEntry {
            path: path.to_string(),
            source,
        })?;

        let mut deployable_devices = Vec::new();
        for device in &raw.supported_devices {
            match device_platform(bucket, device) {
                Ok(platform) => deployable_devices.push((device.as_str(), platform)),
                Err(family) => self.count_skipped_devices(family, 1),
            }
        }
        if deployable_devices.is_empty() {
            self.summary.entries_skipped += 1;
            return Ok(());
        }
        self.summary.entries_kept += 1;

        let posting_date = parse_date(&raw.posting_date, "PostingDate", path)?;
        let expiration_date = parse_date(&raw.expiration_date, "ExpirationDate", path)?;
        let facts = build_facts(spec, &raw, posting_date, path)?;
        self.merge_build(&raw.build, facts, path)?;
        self.latest_posting_date = self.latest_posting_date.max(Some(posting_date));

        for (device, platform) in deployable_devices {
            let key = (raw.build.clone(), device.to_string());
            let listing = self.listings.entry(key).or_insert(Listing {
                platform,
                expiration_date,
                public: spec.public,
            });
            // The same (build, device) can appear in several sets with
            // different expirations. The latest one is kept, reading any
            // entry that still lists the pair as Apple still offering it.
            listing.expiration_date = listing.expiration_date.max(expiration_date);
            listing.public |= spec.public;
        }
        Ok(())
    }

    fn merge_build(
        &mut self,
        build: &str,
        facts: BuildFacts,
        path: &str,
    ) -> Result<(), CatalogError> {
        let Some(known) = self.builds.get_mut(build) else {
            self.builds.insert(build.to_string(), facts);
            return Ok(());
        };
        let same = known.version == facts.version
            && known.version.as_str() == facts.version.as_str()
            && known.extra == facts.extra
            && known.prerequisite_build == facts.prerequisite_build
            && known.background_security_improvement == facts.background_security_improvement;
        if !same {
            return Err(CatalogError::ConflictingBuild {
                build: build.to_string(),
                path: path.to_string(),
                expected: describe_build(known),
                found: describe_build(&facts),
            });
        }
        known.release_date = known.release_date.min(facts.release_date);
        Ok(())
    }

    fn finish(mut self) -> ParsedCatalog {
        type GroupKey = (String, Platform, Date, bool);
        let mut groups: BTreeMap<GroupKey, Vec<String>> = BTreeMap::new();
        for ((build, device), listing) in &self.listings {
            let key = (
                build.clone(),
                listing.platform,
                listing.expiration_date,
                listing.public,
            );
            groups.entry(key).or_default().push(device.clone());
        }

        let mut updates = Vec::with_capacity(groups.len());
        for ((build, platform, expiration_date, public), supported_devices) in groups {
            // Every listing's build was merged into `builds` before it was added.
            let Some(facts) = self.builds.get(&build) else {
                continue;
            };
            updates.push(CatalogUpdate {
                platform,
                product_version: facts.version.clone(),
                build,
                release_date: facts.release_date,
                expiration_date,
                supported_devices,
                background_security_improvement: facts.background_security_improvement,
                product_version_extra: facts.extra.clone(),
                prerequisite_build: facts.prerequisite_build.clone(),
                public,
            });
        }
        updates.sort_by(|left, right| {
            left.platform
                .cmp(&right.platform)
                .then_with(|| right.product_version.cmp(&left.product_version))
                .then_with(|| right.product_version_extra.cmp(&left.product_version_extra))
                .then_with(|| super::update::build_preference(left, right))
                .then_with(|| right.expiration_date.cmp(&left.expiration_date))
        });

        let builds: BTreeSet<&str> = updates.iter().map(|update| update.build.as_str()).collect();
        self.summary.builds_kept = builds.len();
        self.summary.device_listings_kept = self.listings.len();
        self.summary.updates = updates.len();
        ParsedCatalog {
            updates,
            summary: self.summary,
            latest_posting_date: self.latest_posting_date,
        }
    }
}

/// Returns the platform of a listed device, or the OS family label under
/// which the summary counts a skipped one.
fn device_platform(bucket: &str, device: &str) -> Result<Platform, &'static str> {
    if bucket == MACOS_BUCKET {
        // The macOS bucket lists only Macs, by board ID.
        return if device.is_empty() {
            Err("unrecognized")
        } else {
            Ok(Platform::MacOs)
        };
    }
    match Platform::from_model_identifier(device) {
        Some(platform @ (Platform::Ios | Platform::IpadOs)) => Ok(platform),
        _ if device.starts_with("Watch") => Err("watchOS"),
        _ if device.starts_with("AppleTV") => Err("tvOS"),
        _ if device.starts_with("AudioAccessory") => Err("HomePod"),
        _ => Err("unrecognized"),
    }
}

fn build_facts(
    spec: &SetSpec,
    raw: &RawEntry,
    posting_date: Date,
    path: &str,
) -> Result<BuildFacts, CatalogError> {
    if raw.build.is_empty() {
        return Err(CatalogError::MissingField {
            path: path.to_string(),
            field: "Build",
        });
    }
    let version: OsVersion =
        raw.product_version
            .parse()
            .map_err(|source| CatalogError::InvalidVersion {
                path: path.to_string(),
                value: raw.product_version.clone(),
                source,
            })?;

    let (extra, prerequisite_build) = if spec.background_security_improvement {
        let extra = required_text(
            raw.product_version_extra.as_deref(),
            "ProductVersionExtra",
            path,
        )?;
        let prerequisite =
            required_text(raw.prerequisite_build.as_deref(), "PrerequisiteBuild", path)?;
        (Some(extra), Some(prerequisite))
    } else {
        (None, None)
    };

    Ok(BuildFacts {
        version,
        extra,
        prerequisite_build,
        background_security_improvement: spec.background_security_improvement,
        release_date: posting_date,
    })
}

fn required_text(
    value: Option<&str>,
    field: &'static str,
    path: &str,
) -> Result<String, CatalogError> {
    match value {
        Some(text) if !text.is_empty() => Ok(text.to_string()),
        _ => Err(CatalogError::MissingField {
            path: path.to_string(),
            field,
        }),
    }
}

/// Parses a `YYYY-MM-DD` date, rejecting any other layout.
fn parse_date(value: &str, field: &'static str, path: &str) -> Result<Date, CatalogError> {
    let invalid = |source| CatalogError::InvalidDate {
        path: path.to_string(),
        field,
        value: value.to_string(),
        source,
    };
    let bytes = value.as_bytes();
    let layout_ok = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !layout_ok {
        return Err(invalid(None));
    }
    Date::strptime("%Y-%m-%d", value).map_err(|error| invalid(Some(error)))
}

fn describe_build(facts: &BuildFacts) -> String {
    let mut text = match &facts.extra {
        Some(extra) => format!("version {} {extra}", facts.version),
        None => format!("version {}", facts.version),
    };
    if let Some(prerequisite) = &facts.prerequisite_build {
        text.push_str(&format!(" requiring build {prerequisite}"));
    }
    if facts.background_security_improvement {
        text.push_str(" (background security improvement)");
    }
    text
}

fn as_object<'v>(
    value: &'v Value,
    path: &str,
) -> Result<&'v serde_json::Map<String, Value>, CatalogError> {
    value
        .as_object()
        .ok_or_else(|| CatalogError::UnexpectedType {
            path: path.to_string(),
            expected: "object",
            found: json_type(value),
        })
}

fn as_array<'v>(value: &'v Value, path: &str) -> Result<&'v Vec<Value>, CatalogError> {
    value
        .as_array()
        .ok_or_else(|| CatalogError::UnexpectedType {
            path: path.to_string(),
            expected: "array",
            found: json_type(value),
        })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
