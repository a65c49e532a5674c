//! Opaque page cursors: base64 of a query's LastEvaluatedKey.
//!
//! A cursor names the list it belongs to and carries the key attributes as
//! strings. Decoding checks the list, the exact set of key attributes and
//! the partition value, so a cursor from another list, another operation or
//! an edited one is rejected as [`StoreError::InvalidCursor`] instead of
//! reaching DynamoDB. A well-formed key that the caller made up only moves
//! the start of the page, which the caller could do with filters anyway.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::DynamoError;
use super::codec::Item;
use crate::ports::{StoreError, StoreResult};

/// The list a cursor pages through, and the shape its key must have.
#[derive(Debug, Clone)]
pub(super) struct CursorScope<'a> {
    /// Name of the list, stored in the cursor.
    pub(super) list: &'static str,
    /// Every key attribute of the queried table or index, with the table's.
    pub(super) attributes: &'static [&'static str],
    /// The partition attribute and the value this query reads.
    pub(super) partition: (&'static str, &'a str),
}

#[derive(Serialize, Deserialize)]
struct Encoded {
    #[serde(rename = "l")]
    list: String,
    #[serde(rename = "k")]
    key: BTreeMap<String, String>,
}

/// Encodes a LastEvaluatedKey of string attributes.
pub(super) fn encode(scope: &CursorScope<'_>, key: &Item) -> StoreResult<String> {
    let mut strings = BTreeMap::new();
    for (name, value) in key {
        let AttributeValue::S(text) = value else {
            return Err(StoreError::backend(
                "encode cursor",
                DynamoError::InvalidAttribute {
                    record: "page key",
                    attribute: "key",
                    reason: format!("attribute {name:?} is not a string"),
                },
            ));
        };
        strings.insert(name.clone(), text.clone());
    }
    let encoded = Encoded {
        list: scope.list.to_string(),
        key: strings,
    };
    let json = serde_json::to_vec(&encoded).map_err(|e| StoreError::backend("encode cursor", e))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// Decodes a cursor this scope issued, or fails with `InvalidCursor`.
pub(super) fn decode(scope: &CursorScope<'_>, cursor: &str) -> StoreResult<Item> {
    let invalid = || StoreError::InvalidCursor(cursor.to_string());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let encoded: Encoded = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if encoded.list != scope.list || encoded.key.len() != scope.attributes.len() {
        return Err(invalid());
    }
    if scope
        .attributes
        .iter()
        .any(|name| !encoded.key.contains_key(*name))
    {
        return Err(invalid());
    }
    let (partition_attribute, partition_value) = scope.partition;
    if encoded.key.get(partition_attribute).map(String::as_str) != Some(partition_value) {
        return Err(invalid());
    }
    Ok(encoded
        .key
        .into_iter()
        .map(|(name, value)| (name, AttributeValue::S(value)))
        .collect::<HashMap<_, _>>())
}

/// Returns the cursor of the next page, if DynamoDB stopped before the end.
pub(super) fn next(scope: &CursorScope<'_>, last: Option<Item>) -> StoreResult<Option<String>> {
    last.map(|key| encode(scope, &key)).transpose()
}

/// Returns the start key of a page request, if it has a cursor.
pub(super) fn start(scope: &CursorScope<'_>, cursor: Option<&str>) -> StoreResult<Option<Item>> {
    cursor.map(|c| decode(scope, c)).transpose()
}
