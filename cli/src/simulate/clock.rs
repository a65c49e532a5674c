//! Server time: the `Date` header of each reply, and an estimate of the
//! server clock between replies.
//!
//! The server's clock may run faster than the wall clock (a demo compresses
//! days into minutes), so devices run every timer on server time. The
//! confirmed server time is the latest `Date` header seen. Between replies
//! the fleet extrapolates it with the observed rate, only to decide which
//! devices are due to check in. Device timers advance on confirmed times
//! only.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::Timestamp;

/// Parses an HTTP-date in the IMF-fixdate form that servers send
/// (RFC 9110 section 5.6.7), such as `Sun, 06 Nov 1994 08:49:37 GMT`.
///
/// # Errors
///
/// Returns jiff's parse error for any other text.
pub fn parse_http_date(value: &str) -> Result<Timestamp, jiff::Error> {
    jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value.trim())
}

/// How far back, in wall-clock time, the rate estimate looks.
const RATE_WINDOW: Duration = Duration::from_secs(120);

/// Wall-clock span needed before the observed rate replaces the 1:1 guess.
const MIN_RATE_SPAN: Duration = Duration::from_secs(2);

/// Observed server time against local elapsed time.
///
/// Local times are offsets from a fixed local instant (the fleet's start),
/// so that tests can feed synthetic times.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerClock {
    /// `(local offset, server time)` at the first reply that showed each new
    /// server second, oldest first.
    samples: VecDeque<(Duration, Timestamp)>,
}

impl ServerClock {
    /// Records a reply's `Date` received at local offset `local`.
    ///
    /// A date that is not newer than the latest one adds nothing, because
    /// the header has one-second resolution and concurrent replies arrive
    /// out of order.
    pub(crate) fn observe(&mut self, local: Duration, server: Timestamp) {
        if let Some((_, latest)) = self.samples.back()
            && server <= *latest
        {
            return;
        }
        self.samples.push_back((local, server));
        while self.samples.len() > 2 {
            let Some((oldest_local, _)) = self.samples.front() else {
                break;
            };
            if local.saturating_sub(*oldest_local) <= RATE_WINDOW {
                break;
            }
            self.samples.pop_front();
        }
    }

    /// Returns the latest confirmed server time.
    pub(crate) fn latest(&self) -> Option<Timestamp> {
        self.samples.back().map(|(_, server)| *server)
    }

    /// Returns server seconds per local second over the recent window, 1.0
    /// until the window spans [`MIN_RATE_SPAN`].
    pub(crate) fn rate(&self) -> f64 {
        let (Some((first_local, first_server)), Some((last_local, last_server))) =
            (self.samples.front(), self.samples.back())
        else {
            return 1.0;
        };
        let local_span = last_local.saturating_sub(*first_local);
        if local_span < MIN_RATE_SPAN {
            return 1.0;
        }
        let server_span = last_server.duration_since(*first_server).as_secs_f64();
        (server_span / local_span.as_secs_f64()).max(0.0)
    }

    /// Estimates the server time at local offset `local`; `None` before the
    /// first reply.
    ///
    /// NOTE: a server clock that jumps (set forward by hand) inflates the
    /// rate until the jump leaves the two-minute window, so devices check in
    /// early for that long. Device timers are not affected.
    pub(crate) fn estimate(&self, local: Duration) -> Option<Timestamp> {
        let (last_local, last_server) = self.samples.back()?;
        let elapsed = local.saturating_sub(*last_local).as_secs_f64() * self.rate();
        let ahead = jiff::SignedDuration::from_secs_f64(elapsed.min(1.0e9));
        Some(last_server.checked_add(ahead).unwrap_or(*last_server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("valid timestamp literal")
    }

    #[test]
    fn http_date_parses_imf_fixdate() {
        let cases = [
            ("Sun, 06 Nov 1994 08:49:37 GMT", "1994-11-06T08:49:37Z"),
            ("Tue, 01 Sep 2026 00:00:00 GMT", "2026-09-01T00:00:00Z"),
            (" Sat, 31 Oct 2026 23:59:59 GMT ", "2026-10-31T23:59:59Z"),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_http_date(header).ok(), Some(ts(expected)), "{header}");
        }
    }

    #[test]
    fn http_date_rejects_other_text() {
        for header in [
            "",
            "yesterday",
            "2026-09-01T00:00:00Z",
            "Tue, 41 Sep 2026 00:00:00 GMT",
        ] {
            assert!(parse_http_date(header).is_err(), "{header:?} was accepted");
        }
    }

    #[test]
    fn clock_starts_at_one_to_one() {
        let mut clock = ServerClock::default();
        assert_eq!(clock.estimate(Duration::from_secs(5)), None);

        clock.observe(Duration::from_secs(10), ts("2026-09-01T08:00:00Z"));

        assert_eq!(clock.rate(), 1.0);
        assert_eq!(
            clock.estimate(Duration::from_secs(11)),
            Some(ts("2026-09-01T08:00:01Z"))
        );
    }

    #[test]
    fn clock_learns_accelerated_rate() {
        let mut clock = ServerClock::default();
        // The server clock runs 60 times faster: one server minute per second.
        for second in 0..10u64 {
            let server = ts("2026-09-01T08:00:00Z")
                .checked_add(jiff::SignedDuration::from_mins(second as i64))
                .expect("in range");
            clock.observe(Duration::from_secs(second), server);
        }

        assert!((clock.rate() - 60.0).abs() < 1e-9, "rate {}", clock.rate());
        assert_eq!(clock.latest(), Some(ts("2026-09-01T08:09:00Z")));
        assert_eq!(
            clock.estimate(Duration::from_millis(10_500)),
            Some(ts("2026-09-01T08:10:30Z"))
        );
    }

    #[test]
    fn clock_ignores_older_dates() {
        let mut clock = ServerClock::default();
        clock.observe(Duration::from_secs(1), ts("2026-09-01T08:00:05Z"));

        clock.observe(Duration::from_secs(2), ts("2026-09-01T08:00:04Z"));

        assert_eq!(clock.latest(), Some(ts("2026-09-01T08:00:05Z")));
    }
}
