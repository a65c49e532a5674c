//! The dashboard summary of `GET /operations/summary`: how many operations
//! were created in a period, by lifecycle state, type and protocol.
//!
//! Every figure carries the `GET /operations` query that lists exactly the
//! operations it counts, so a client can open the matching list. The counts
//! are taken by paging through that same list, so figure and list agree by
//! construction on both stores.

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::{FieldError, ServiceError, ServiceResult, Services};
use crate::domain::{OperationState, OperationType, Protocol};
use crate::ports::{OperationFilter, PageRequest};

/// Length of the period when the request gives no `from`.
pub const DEFAULT_PERIOD: SignedDuration = SignedDuration::from_hours(30 * 24);

/// Page size used to count; the store's maximum page.
const COUNT_PAGE: usize = 1000;

/// Path of the operations list that the figures' queries apply to.
pub const OPERATIONS_PATH: &str = "/api/v1/operations";

/// One count with the list query that reproduces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Figure {
    pub count: u64,
    /// Query parameters of `GET /operations`, the same as in `href`.
    pub query: BTreeMap<&'static str, String>,
    /// `GET` this (relative to the server) to list the counted operations.
    pub href: String,
}

/// The body of `GET /operations/summary`.
#[derive(Debug, Clone, Serialize)]
pub struct OperationsSummary {
    /// Start of the period, inclusive: operations created at or after it.
    pub from: Timestamp,
    /// End of the period, exclusive: operations created before it.
    pub to: Timestamp,
    pub total: Figure,
    /// Keyed by state: scheduled, in_progress, finished, cancelled.
    pub by_state: BTreeMap<&'static str, Figure>,
    /// Keyed by type: admin_initiated, user_initiated, migrated.
    pub by_type: BTreeMap<&'static str, Figure>,
    /// Keyed by protocol: ddm, mdm.
    pub by_protocol: BTreeMap<&'static str, Figure>,
}

const STATES: [OperationState; 4] = [
    OperationState::Scheduled,
    OperationState::InProgress,
    OperationState::Finished,
    OperationState::Cancelled,
];
const TYPES: [OperationType; 3] = [
    OperationType::AdminInitiated,
    OperationType::UserInitiated,
    OperationType::Migrated,
];
const PROTOCOLS: [Protocol; 2] = [Protocol::Ddm, Protocol::Mdm];

/// Percent-encodes a query value, leaving RFC 3986 unreserved characters
/// and `:` as they are.
fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn figure(
    count: u64,
    from: Timestamp,
    to: Timestamp,
    extra: Option<(&'static str, &str)>,
) -> Figure {
    let mut pairs = vec![("from", from.to_string()), ("to", to.to_string())];
    if let Some((name, value)) = extra {
        pairs.push((name, value.to_string()));
    }
    let href = format!(
        "{OPERATIONS_PATH}?{}",
        pairs
            .iter()
            .map(|(name, value)| format!("{name}={}", encode_query_value(value)))
            .collect::<Vec<_>>()
            .join("&")
    );
    Figure {
        count,
        query: pairs.into_iter().collect(),
        href,
    }
}

impl Services {
    /// Counts the operations created in `[from, to)`. `to` defaults to now
    /// and `from` to [`DEFAULT_PERIOD`] before `to`.
    pub async fn operations_summary(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> ServiceResult<OperationsSummary> {
        let to = to.unwrap_or_else(|| self.now());
        let from = from.unwrap_or(to - DEFAULT_PERIOD);
        if from >= to {
            return Err(ServiceError::invalid(vec![
                FieldError::new(
                    "from",
                    "invalid",
                    format!("from ({from}) must be before to ({to})"),
                )
                .with_value(from.to_string()),
            ]));
        }

        let filter = OperationFilter {
            from: Some(from),
            to: Some(to),
            ..OperationFilter::default()
        };
        let mut total = 0u64;
        let mut states: HashMap<OperationState, u64> = HashMap::new();
        let mut types: HashMap<OperationType, u64> = HashMap::new();
        let mut protocols: HashMap<Protocol, u64> = HashMap::new();
        let mut page = PageRequest::first(COUNT_PAGE);
        loop {
            let listed = self.list_operations(&filter, &page).await?;
            for operation in &listed.items {
                total += 1;
                *states.entry(operation.state).or_default() += 1;
                *types.entry(operation.kind).or_default() += 1;
                *protocols.entry(operation.protocol).or_default() += 1;
            }
            match listed.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }

        fn count<K: std::hash::Hash + Eq>(map: &HashMap<K, u64>, key: &K) -> u64 {
            map.get(key).copied().unwrap_or(0)
        }
        Ok(OperationsSummary {
            from,
            to,
            total: figure(total, from, to, None),
            by_state: STATES
                .iter()
                .map(|s| {
                    let extra = Some(("state", s.as_str()));
                    (s.as_str(), figure(count(&states, s), from, to, extra))
                })
                .collect(),
            by_type: TYPES
                .iter()
                .map(|t| {
                    let extra = Some(("type", t.as_str()));
                    (t.as_str(), figure(count(&types, t), from, to, extra))
                })
                .collect(),
            by_protocol: PROTOCOLS
                .iter()
                .map(|p| {
                    let extra = Some(("protocol", p.as_str()));
                    (p.as_str(), figure(count(&protocols, p), from, to, extra))
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_href_encodes_values() {
        let from: Timestamp = "2026-08-01T00:00:00Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let to: Timestamp = "2026-09-01T00:00:00.5Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let figure = figure(3, from, to, Some(("state", "in_progress")));
        assert_eq!(
            figure.href,
            "/api/v1/operations?from=2026-08-01T00:00:00Z&to=2026-09-01T00:00:00.5Z&state=in_progress"
        );
        assert_eq!(figure.query["state"], "in_progress");
        assert_eq!(figure.count, 3);
    }

    #[test]
    fn query_values_escape_reserved_characters() {
        assert_eq!(encode_query_value("a+b&c=d e/f"), "a%2Bb%26c%3Dd%20e%2Ff");
        assert_eq!(encode_query_value("10:00-z_~."), "10:00-z_~.");
    }
}
