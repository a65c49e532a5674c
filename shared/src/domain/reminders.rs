//! Reminder instants before an enforcement deadline, per time zone.
//!
//! A reminder's `hours_before` and `repeat_every_hours` are wall-clock hours
//! in the zone the deadline is read in, so "24 hours before a 09:00 deadline"
//! is 09:00 the day before even when a DST change lies between them (the
//! elapsed time is then 23 or 25 hours). Each reminder's local time becomes an
//! instant with the same gap and fold rules as the deadline itself
//! ([`deadline_instant`]). A time in a spring-forward gap moves forward by the
//! gap's length, and a time in a fall-back fold takes its first occurrence.

use std::collections::BTreeSet;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use super::deadline::deadline_instant;
use super::operation::Reminder;

/// Maximum `hours_before` of one reminder: 90 days.
pub const MAX_HOURS_BEFORE: u32 = 90 * 24;

/// Maximum reminder instants one operation may have in one zone, so that a
/// short repeat over a long lead time cannot create thousands of schedules.
pub const MAX_REMINDERS_PER_ZONE: usize = 100;

/// One reminder instant in one zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReminderInstant {
    pub at: Timestamp,
    /// The reminder's wall-clock time in the zone, before gap handling.
    pub local: DateTime,
    /// Wall-clock hours from this reminder to the deadline.
    pub hours_before: u32,
}

/// Counts the reminder times a list of reminders names in one zone, before
/// gaps merge any of them. Used to check [`MAX_REMINDERS_PER_ZONE`].
pub fn reminder_count(reminders: &[Reminder]) -> usize {
    reminders
        .iter()
        .map(|r| match r.repeat_every_hours {
            0 => 1,
            every => r.hours_before.div_ceil(every) as usize,
        })
        .sum()
}

/// Computes the reminder instants before the deadline `local` in `zone`,
/// earliest first.
///
/// Each reminder fires at `local - hours_before`, then every
/// `repeat_every_hours` after that while it is still before `local`. Instants
/// that two reminders share are kept once (with the larger `hours_before`),
/// and an instant at or after the deadline's own instant is dropped, which
/// happens when a gap moves a reminder onto the deadline. Reminders whose
/// local time falls outside jiff's date range are dropped.
pub fn reminder_instants(
    local: DateTime,
    zone: &TimeZone,
    reminders: &[Reminder],
) -> Vec<ReminderInstant> {
    let deadline = deadline_instant(local, zone);
    let mut seen = BTreeSet::new();
    let mut instants = Vec::new();
    let mut candidates: Vec<u32> = Vec::new();
    for reminder in reminders {
        if reminder.hours_before == 0 {
            continue;
        }
        let mut hours_before = reminder.hours_before;
        loop {
            candidates.push(hours_before);
            if reminder.repeat_every_hours == 0 || hours_before <= reminder.repeat_every_hours {
                break;
            }
            hours_before -= reminder.repeat_every_hours;
        }
    }
    // Larger lead times first, so a shared instant keeps the larger one.
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    for hours_before in candidates {
        let Ok(at_local) = local.checked_sub(Span::new().hours(i64::from(hours_before))) else {
            continue;
        };
        let at = deadline_instant(at_local, zone);
        if at >= deadline || !seen.insert(at) {
            continue;
        }
        instants.push(ReminderInstant {
            at,
            local: at_local,
            hours_before,
        });
    }
    instants.sort();
    instants
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::deadline::parse_time_zone;

    fn zone(name: &str) -> TimeZone {
        parse_time_zone(name).expect("known zone")
    }

    fn local(text: &str) -> DateTime {
        text.parse().expect("local date-time")
    }

    fn reminder(hours_before: u32, repeat_every_hours: u32) -> Reminder {
        Reminder {
            hours_before,
            repeat_every_hours,
        }
    }

    fn instants(deadline: &str, zone_name: &str, reminders: &[Reminder]) -> Vec<String> {
        reminder_instants(local(deadline), &zone(zone_name), reminders)
            .into_iter()
            .map(|r| r.at.to_string())
            .collect()
    }

    #[test]
    fn new_york_day_before() {
        // 2026-11-10 is EST (UTC-5).
        assert_eq!(
            instants(
                "2026-11-10T10:00:00",
                "America/New_York",
                &[reminder(24, 0)]
            ),
            ["2026-11-09T15:00:00Z"]
        );
    }

    #[test]
    fn tokyo_repeats_until_deadline() {
        // JST is UTC+9 all year; the deadline itself (01:00Z) is not a reminder.
        assert_eq!(
            instants("2026-11-10T10:00:00", "Asia/Tokyo", &[reminder(24, 6)]),
            [
                "2026-11-09T01:00:00Z",
                "2026-11-09T07:00:00Z",
                "2026-11-09T13:00:00Z",
                "2026-11-09T19:00:00Z",
            ]
        );
    }

    #[test]
    fn same_wall_clock_across_fall_back() {
        // New York leaves DST on 2026-11-01: 48 wall-clock hours before
        // 09:00 EST on 2026-11-02 is 09:00 EDT on 2026-10-31, 49 hours earlier.
        let found = reminder_instants(
            local("2026-11-02T09:00:00"),
            &zone("America/New_York"),
            &[reminder(48, 0)],
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].at.to_string(), "2026-10-31T13:00:00Z");
        assert_eq!(found[0].hours_before, 48);
        let deadline = deadline_instant(local("2026-11-02T09:00:00"), &zone("America/New_York"));
        assert_eq!(
            (deadline - found[0].at).as_hours(),
            49,
            "the elapsed time includes the repeated hour"
        );
    }

    #[test]
    fn gap_moves_reminder_forward() {
        // 02:00 on 2026-03-08 does not exist in New York: it becomes 03:00 EDT.
        assert_eq!(
            instants(
                "2026-03-08T05:00:00",
                "America/New_York",
                &[reminder(4, 0), reminder(3, 0)],
            ),
            ["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z"]
        );
    }

    #[test]
    fn gap_onto_deadline_is_dropped() {
        // One hour before 03:00 EDT is 02:00, in the gap, which moves to 03:00:
        // the deadline itself, so no reminder is left.
        assert!(instants("2026-03-08T03:00:00", "America/New_York", &[reminder(1, 0)]).is_empty());
    }

    #[test]
    fn fold_takes_first_occurrence() {
        // 01:30 happens twice on 2026-11-01 in New York; the EDT one is first.
        assert_eq!(
            instants("2026-11-01T03:30:00", "America/New_York", &[reminder(2, 0)]),
            ["2026-11-01T05:30:00Z"]
        );
    }

    #[test]
    fn shared_instants_kept_once() {
        let found = reminder_instants(
            local("2026-11-10T10:00:00"),
            &zone("Europe/Berlin"),
            &[reminder(24, 12), reminder(12, 0)],
        );
        let hours: Vec<u32> = found.iter().map(|r| r.hours_before).collect();
        assert_eq!(hours, [24, 12]);
    }

    #[test]
    fn zero_hours_before_is_skipped() {
        assert!(instants("2026-11-10T10:00:00", "UTC", &[reminder(0, 0)]).is_empty());
    }

    #[test]
    fn count_matches_instants() {
        let cases = [
            (reminder(24, 0), 1),
            (reminder(24, 6), 4),
            (reminder(25, 6), 5),
            (reminder(6, 24), 1),
        ];
        for (reminder, expected) in cases {
            assert_eq!(
                reminder_count(std::slice::from_ref(&reminder)),
                expected,
                "{reminder:?}"
            );
            assert_eq!(
                reminder_instants(
                    local("2026-11-10T10:00:00"),
                    &zone("UTC"),
                    std::slice::from_ref(&reminder)
                )
                .len(),
                expected,
                "{reminder:?}"
            );
        }
    }
}
