//! Injected clocks and id generators, so tests and demos can fix or
//! accelerate time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};

/// A source of the current instant.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A wall clock that starts at `start` and runs `speed` times faster than real time.
#[derive(Debug)]
pub struct AcceleratedClock {
    start: Timestamp,
    speed: f64,
    origin: Instant,
}

impl AcceleratedClock {
    pub fn new(start: Timestamp, speed: f64) -> Self {
        AcceleratedClock {
            start,
            speed,
            origin: Instant::now(),
        }
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }
}

impl Clock for AcceleratedClock {
    fn now(&self) -> Timestamp {
        let real = self.origin.elapsed().as_secs_f64();
        let nanos = (real * self.speed * 1e9) as i64;
        self.start + SignedDuration::from_nanos(nanos)
    }
}

/// A clock that only moves when a test steps it.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Mutex::new(start))
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    pub fn set(&self, to: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A source of ULIDs for operations, events and commands.
pub trait IdGenerator: Send + Sync {
    /// A new ULID whose time part is `now`, strictly greater than any
    /// earlier one from this generator.
    fn ulid(&self, now: Timestamp) -> String;
}

/// ULIDs from a SplitMix64 stream: seeded from the system for production,
/// fixed in tests so runs repeat.
#[derive(Debug)]
pub struct UlidGenerator {
    state: AtomicU64,
    last: Mutex<u128>,
}

impl UlidGenerator {
    pub fn seeded(seed: u64) -> Self {
        UlidGenerator {
            state: AtomicU64::new(seed),
            last: Mutex::new(0),
        }
    }

    /// Seeded from the system clock and the process id.
    pub fn from_entropy() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self::seeded(nanos ^ (u64::from(std::process::id()) << 32))
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl IdGenerator for UlidGenerator {
    fn ulid(&self, now: Timestamp) -> String {
        let millis = now.as_millisecond().max(0) as u128 & ((1 << 48) - 1);
        let random =
            ((u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())) & ((1 << 80) - 1);
        let mut value = (millis << 80) | random;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if value <= *last {
            // Same millisecond (or a clock that went back): keep order by
            // incrementing the previous value, as the ULID spec suggests.
            value = *last + 1;
        }
        *last = value;
        ulid::Ulid(value).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_are_monotonic_within_a_millisecond() {
        let ids = UlidGenerator::seeded(7);
        let now: Timestamp = "2026-08-22T09:00:00Z".parse().unwrap();
        let a = ids.ulid(now);
        let b = ids.ulid(now);
        let c = ids.ulid(now - SignedDuration::from_secs(5));
        assert!(a < b, "{a} < {b}");
        assert!(b < c, "{b} < {c}");
        assert_eq!(a.len(), 26);
    }

    #[test]
    fn seeded_generators_repeat() {
        let now: Timestamp = "2026-08-22T09:00:00Z".parse().unwrap();
        assert_eq!(
            UlidGenerator::seeded(1).ulid(now),
            UlidGenerator::seeded(1).ulid(now)
        );
    }

    #[test]
    fn manual_clock_steps() {
        let start: Timestamp = "2026-08-22T09:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        clock.advance(SignedDuration::from_mins(90));
        assert_eq!(clock.now(), start + SignedDuration::from_mins(90));
    }
}
