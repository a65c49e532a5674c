//! Device model lists: Mac model identifier to board ID, board ID to model,
//! marketing names and the macOS majors each Mac supports.
//!
//! Apple's catalog lists Macs by board ID (`J314sAP`, `Mac-…`, `VMA2MACOSAP`)
//! but MDM reports a Mac's model identifier (`MacBookPro18,3`), so matching a
//! Mac against the catalog goes through this index.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::CatalogError;
use crate::domain::Platform;

const BUNDLED_MAC_MODELS: &[u8] = include_bytes!("../../data/catalog/mac_models_mapping.json");
const BUNDLED_DEVICE_LOOKUP: &[u8] = include_bytes!("../../data/catalog/device_lookup.json");

/// A device model that a fleet can contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownModel {
    /// Model identifier as MDM reports it, such as `Mac14,7` or `iPhone15,2`.
    pub model_identifier: String,
    pub platform: Platform,
    /// Board ID that Apple's catalog lists for this Mac, `None` for iPhone and iPad.
    pub board_id: Option<String>,
    pub marketing_name: String,
    /// Major OS versions the model supports, newest first. Empty when the
    /// model lists do not say (every iPhone and iPad).
    pub supported_majors: Vec<u32>,
}

/// Lookups between model identifiers, board IDs and marketing names.
#[derive(Debug, Clone, Default)]
pub struct ModelIndex {
    /// Models a fleet can contain, by model identifier.
    models: BTreeMap<String, KnownModel>,
    /// Mac model identifier to every board ID known for it, the board ID from
    /// the Mac model list first.
    board_ids: BTreeMap<String, Vec<String>>,
    board_to_model: BTreeMap<String, String>,
    /// Model identifier or board ID to marketing name.
    names: BTreeMap<String, String>,
}

/// One entry of SOFA's `mac_models_mapping.json`, keyed by model identifier.
#[derive(Deserialize)]
struct MacModelEntry {
    #[serde(rename = "MarketingName")]
    marketing_name: String,
    #[serde(rename = "OSVersions", default)]
    os_versions: Vec<u32>,
    #[serde(rename = "BoardID", default)]
    board_id: Option<String>,
}

/// One entry of SOFA's `device_lookup.json`, keyed by the identifier the
/// catalog lists (a board ID for Macs, the model identifier otherwise).
#[derive(Deserialize)]
struct DeviceLookupEntry {
    device_id: String,
    marketing_name: String,
}

impl ModelIndex {
    /// Builds the index from SOFA's `mac_models_mapping.json` and
    /// `device_lookup.json`.
    ///
    /// Listed Macs are the Mac models of the first file. Listed iPhones,
    /// iPods and iPads are the entries of the second file whose key is their
    /// own model identifier. Every entry of the second file whose key differs
    /// from its `device_id` is a board ID of that model.
    pub fn from_json(
        mac_models_mapping: &[u8],
        device_lookup: &[u8],
    ) -> Result<ModelIndex, CatalogError> {
        let mac_models: BTreeMap<String, MacModelEntry> =
            serde_json::from_slice(mac_models_mapping).map_err(|source| {
                CatalogError::InvalidModelList {
                    list: "mac_models_mapping.json",
                    source,
                }
            })?;
        let lookup: BTreeMap<String, DeviceLookupEntry> = serde_json::from_slice(device_lookup)
            .map_err(|source| CatalogError::InvalidModelList {
                list: "device_lookup.json",
                source,
            })?;

        let mut index = ModelIndex::default();
        for (model, entry) in mac_models {
            index.add_mac_model(model, entry);
        }
        for (identifier, entry) in lookup {
            index.add_lookup_entry(identifier, entry);
        }
        Ok(index)
    }

    /// Returns the index built from the model lists bundled with this crate.
    pub fn bundled() -> &'static ModelIndex {
        static BUNDLED: OnceLock<ModelIndex> = OnceLock::new();
        BUNDLED.get_or_init(|| {
            // The bundled lists are fixed at build time, and a test parses them.
            ModelIndex::from_json(BUNDLED_MAC_MODELS, BUNDLED_DEVICE_LOOKUP)
                .expect("bundled model lists are valid JSON")
        })
    }

    fn add_mac_model(&mut self, model: String, entry: MacModelEntry) {
        let mut majors = entry.os_versions;
        majors.sort_unstable_by(|a, b| b.cmp(a));
        majors.dedup();

        if let Some(board_id) = &entry.board_id {
            self.board_to_model.insert(board_id.clone(), model.clone());
            self.board_ids
                .entry(model.clone())
                .or_default()
                .insert(0, board_id.clone());
            self.names
                .entry(board_id.clone())
                .or_insert_with(|| entry.marketing_name.clone());
        }
        self.names
            .insert(model.clone(), entry.marketing_name.clone());

        // The list also keys the Intel virtual machine by its board ID
        // (`VMM-x86_64`), which is not a model identifier: keep it for the
        // lookups but do not offer it as a model.
        if Platform::from_model_identifier(&model) == Some(Platform::MacOs) {
            let known = KnownModel {
                model_identifier: model.clone(),
                platform: Platform::MacOs,
                board_id: entry.board_id,
                marketing_name: entry.marketing_name,
                supported_majors: majors,
            };
            self.models.insert(model, known);
        }
    }

    fn add_lookup_entry(&mut self, identifier: String, entry: DeviceLookupEntry) {
        // Names from the Mac model list win, because that list is the one
        // that pairs each Mac with its supported majors.
        self.names
            .entry(identifier.clone())
            .or_insert_with(|| entry.marketing_name.clone());

        if identifier != entry.device_id {
            self.board_to_model
                .entry(identifier.clone())
                .or_insert_with(|| entry.device_id.clone());
            let boards = self.board_ids.entry(entry.device_id).or_default();
            if !boards.contains(&identifier) {
                boards.push(identifier);
            }
            return;
        }

        let platform = match Platform::from_model_identifier(&identifier) {
            Some(platform @ (Platform::Ios | Platform::IpadOs)) => platform,
            _ => return,
        };
        let known = KnownModel {
            model_identifier: identifier.clone(),
            platform,
            board_id: None,
            marketing_name: entry.marketing_name,
            supported_majors: Vec::new(),
        };
        self.models.insert(identifier, known);
    }

    /// Returns the board ID that the Mac model list gives for a Mac model
    /// identifier, or the first other board ID known for it.
    pub fn board_id_for_model(&self, model: &str) -> Option<&str> {
        self.board_ids_for_model(model).first().map(String::as_str)
    }

    /// Returns every board ID known for a Mac model identifier.
    ///
    /// Intel Macs with a T2 chip appear in the catalog under more than one
    /// board ID (for example `MacBookPro16,2` as `J214KAP`, `J214AP` and
    /// `Mac-5F9802EFE386AA28`), so matching needs all of them.
    pub fn board_ids_for_model(&self, model: &str) -> &[String] {
        self.board_ids.get(model).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Returns the model identifier of a Mac board ID.
    pub fn model_for_board_id(&self, board_id: &str) -> Option<&str> {
        self.board_to_model.get(board_id).map(String::as_str)
    }

    /// Returns the marketing name of a model identifier or board ID.
    pub fn marketing_name(&self, identifier: &str) -> Option<&str> {
        self.names.get(identifier).map(String::as_str)
    }

    /// Returns the listed model with this model identifier.
    pub fn model(&self, model_identifier: &str) -> Option<&KnownModel> {
        self.models.get(model_identifier)
    }

    /// Lists the known models of one platform, ordered by model identifier.
    pub fn models(&self, platform: Platform) -> impl Iterator<Item = &KnownModel> {
        self.models
            .values()
            .filter(move |model| model.platform == platform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_board_ids_for_macs() {
        let index = ModelIndex::bundled();
        let cases = [
            ("Mac14,7", "J493AP"),
            ("MacBookPro18,3", "J314sAP"),
            ("MacBookPro18,1", "J316sAP"),
            ("Mac13,1", "J375cAP"),
            ("VirtualMac2,1", "VMA2MACOSAP"),
            ("MacBookPro16,2", "J214KAP"),
        ];
        for (model, board_id) in cases {
            assert_eq!(index.board_id_for_model(model), Some(board_id), "{model}");
            assert_eq!(
                index.model_for_board_id(board_id),
                Some(model),
                "{board_id}"
            );
        }
    }

    #[test]
    fn t2_mac_has_every_board_id() {
        let index = ModelIndex::bundled();

        let boards = index.board_ids_for_model("MacBookPro16,2");

        assert_eq!(boards, ["J214KAP", "J214AP", "Mac-5F9802EFE386AA28"]);
        assert_eq!(
            index.model_for_board_id("Mac-5F9802EFE386AA28"),
            Some("MacBookPro16,2")
        );
    }

    #[test]
    fn iphone_has_no_board_id() {
        let index = ModelIndex::bundled();

        assert_eq!(index.board_id_for_model("iPhone15,2"), None);
        assert!(index.board_ids_for_model("iPhone15,2").is_empty());
    }

    #[test]
    fn marketing_names_by_model_or_board() {
        let index = ModelIndex::bundled();
        let cases = [
            ("Mac14,7", "MacBook Pro (13-inch, M2, 2022)"),
            ("J493AP", "MacBook Pro (13-inch, M2, 2022)"),
            ("J314sAP", "MacBook Pro (14-inch, M1 Pro, 2021)"),
            ("iPhone15,2", "iPhone 14 Pro"),
            ("iPad13,1", "iPad Air (4th generation) Wi-Fi"),
        ];
        for (identifier, name) in cases {
            assert_eq!(index.marketing_name(identifier), Some(name), "{identifier}");
        }
        assert_eq!(index.marketing_name("Mac99,1"), None);
    }

    #[test]
    fn models_per_platform() {
        let index = ModelIndex::bundled();

        let macs: Vec<_> = index.models(Platform::MacOs).collect();
        let iphones: Vec<_> = index.models(Platform::Ios).collect();
        let ipads: Vec<_> = index.models(Platform::IpadOs).collect();

        // mac_models_mapping.json has 97 Macs including `VMM-x86_64`, and
        // device_lookup.json has 52 iPhones, 2 iPods and 91 iPads.
        assert_eq!(macs.len(), 96);
        assert_eq!(iphones.len(), 54);
        assert_eq!(ipads.len(), 91);
        assert!(macs.iter().all(|model| model.board_id.is_some()));
        assert!(iphones.iter().all(|model| model.board_id.is_none()));
        assert!(
            !macs
                .iter()
                .any(|model| model.model_identifier == "VMM-x86_64")
        );
    }

    #[test]
    fn mac_supported_majors_newest_first() {
        let index = ModelIndex::bundled();

        let m2 = index.model("Mac14,7").expect("Mac14,7 is listed");
        let imac_pro = index.model("iMacPro1,1").expect("iMacPro1,1 is listed");

        assert_eq!(m2.supported_majors, [26, 15, 14, 13, 12]);
        assert_eq!(imac_pro.supported_majors, [15, 14, 13, 12, 11]);
        assert_eq!(m2.board_id.as_deref(), Some("J493AP"));
        assert_eq!(m2.marketing_name, "MacBook Pro (13-inch, M2, 2022)");
    }

    #[test]
    fn iphone_majors_unknown() {
        let index = ModelIndex::bundled();

        let iphone = index.model("iPhone15,2").expect("iPhone15,2 is listed");

        assert_eq!(iphone.platform, Platform::Ios);
        assert!(iphone.supported_majors.is_empty());
    }

    #[test]
    fn malformed_model_list_names_file() {
        let error = ModelIndex::from_json(b"{\"Mac14,7\": 3}", b"{}").unwrap_err();

        assert!(matches!(
            error,
            CatalogError::InvalidModelList {
                list: "mac_models_mapping.json",
                ..
            }
        ));
    }

    #[test]
    fn model_lists_tolerate_unknown_keys() {
        let macs = br#"{"Mac14,7": {"MarketingName": "M2", "OSVersions": [15, 26], "BoardID": "J493AP", "Chip": "M2"}}"#;
        let lookup =
            br#"{"J493AP": {"device_id": "Mac14,7", "marketing_name": "M2", "source": "x"}}"#;

        let index = ModelIndex::from_json(macs, lookup).expect("unknown keys are ignored");

        assert_eq!(index.board_id_for_model("Mac14,7"), Some("J493AP"));
        assert_eq!(
            index.model("Mac14,7").map(|m| m.supported_majors.clone()),
            Some(vec![26, 15])
        );
    }
}
