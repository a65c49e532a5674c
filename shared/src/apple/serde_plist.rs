//! Serde adapters for plist `<data>` and `<date>` values.
//!
//! Serde maps `Vec<u8>` to a sequence of integers, but plist stores bytes as
//! `<data>` (base64 in XML), so byte fields use these adapters. Dates arrive
//! as plist `<date>` values and are exposed as `jiff::Timestamp`.

use std::time::SystemTime;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("plist data")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
}

/// `#[serde(with = "data")]` for a required `Vec<u8>` sent as `<data>`.
pub(crate) mod data {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

/// `#[serde(default, skip_serializing_if = "Option::is_none", with = "option_data")]`
/// for an optional `Vec<u8>` sent as `<data>`.
pub(crate) mod option_data {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_bytes(bytes),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor).map(Some)
    }
}

fn timestamp_from_plist<E: de::Error>(date: plist::Date) -> Result<jiff::Timestamp, E> {
    jiff::Timestamp::try_from(SystemTime::from(date))
        .map_err(|err| E::custom(format!("plist date out of range: {err}")))
}

fn plist_from_timestamp<E: serde::ser::Error>(
    timestamp: jiff::Timestamp,
) -> Result<plist::Date, E> {
    SystemTime::try_from(timestamp)
        .map(plist::Date::from)
        .map_err(|err| {
            E::custom(format!(
                "timestamp {timestamp} has no plist date form: {err}"
            ))
        })
}

/// `#[serde(default, skip_serializing_if = "Option::is_none", with = "option_date")]`
/// for an optional `<date>` exposed as `jiff::Timestamp`.
pub(crate) mod option_date {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        timestamp: &Option<jiff::Timestamp>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match timestamp {
            Some(timestamp) => plist_from_timestamp(*timestamp)?.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<jiff::Timestamp>, D::Error> {
        let date = plist::Date::deserialize(deserializer)?;
        timestamp_from_plist(date).map(Some)
    }
}

/// `#[serde(default, skip_serializing_if = "Option::is_none", with = "option_date_list")]`
/// for an optional array of `<date>` values.
pub(crate) mod option_date_list {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        timestamps: &Option<Vec<jiff::Timestamp>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match timestamps {
            Some(timestamps) => {
                let dates = timestamps
                    .iter()
                    .map(|timestamp| plist_from_timestamp(*timestamp))
                    .collect::<Result<Vec<plist::Date>, S::Error>>()?;
                dates.serialize(serializer)
            }
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<jiff::Timestamp>>, D::Error> {
        let dates = Vec::<plist::Date>::deserialize(deserializer)?;
        dates
            .into_iter()
            .map(timestamp_from_plist)
            .collect::<Result<Vec<_>, D::Error>>()
            .map(Some)
    }
}
