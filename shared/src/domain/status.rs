//! The per-device update state machine.
//!
//! Every target (one device in one operation) moves through these statuses:
//!
//! ```text
//! Pending → Approved | User Approved → Downloading → Preparing → Downloaded → Installing → Installed
//!                      ↘ Retry (a failed attempt that can clear) ↗
//! final: Installed, Obsolete, Failed, Cancelled, Deprecated
//! ```
//!
//! Any progress step may be skipped. Both protocols translate what a device
//! reports into a [`Signal`], and [`apply`] is the only place that decides the
//! next status:
//!
//! - A signal that shows the device on the target version makes it Installed
//!   from any non-final status, or Obsolete when the device had not reported
//!   anything yet (it already ran the target when it was targeted).
//! - No signal moves a target out of a final status: the same final status
//!   again is a duplicate, anything else is [`TransitionError::FinalStatus`].
//! - A progress signal for the status the target already has is a duplicate;
//!   one that would move it backwards is stale. Both change nothing.
//! - A failed attempt moves the target to Retry with a backoff while attempts
//!   remain, and to Failed when they are used up or the failure is permanent.
//!   The failure reason picks the [`RetryPolicy`] from [`RetryPolicies`].
//! - Cancellation and deprecation leave a target that is Installing alone:
//!   [`TransitionError::NotAllowed`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::platform::OsVersion;

/// The status of one device in one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    Pending,
    Approved,
    UserApproved,
    Downloading,
    Downloaded,
    Preparing,
    Installing,
    Retry,
    Installed,
    Obsolete,
    Failed,
    Cancelled,
    Deprecated,
}

impl TargetStatus {
    /// Every status, in the order the console lists them.
    pub const ALL: [TargetStatus; 13] = [
        TargetStatus::Pending,
        TargetStatus::Approved,
        TargetStatus::UserApproved,
        TargetStatus::Downloading,
        TargetStatus::Downloaded,
        TargetStatus::Preparing,
        TargetStatus::Installing,
        TargetStatus::Retry,
        TargetStatus::Installed,
        TargetStatus::Obsolete,
        TargetStatus::Failed,
        TargetStatus::Cancelled,
        TargetStatus::Deprecated,
    ];

    /// Returns whether the status is final. A final status never changes again,
    /// and a device in one counts as completed.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TargetStatus::Installed
                | TargetStatus::Obsolete
                | TargetStatus::Failed
                | TargetStatus::Cancelled
                | TargetStatus::Deprecated
        )
    }

    /// Position along the progress path; `None` for final statuses.
    /// Retry ranks with Pending because the next attempt starts over.
    fn progress_rank(self) -> Option<u8> {
        match self {
            TargetStatus::Pending | TargetStatus::Retry => Some(0),
            TargetStatus::Approved => Some(1),
            TargetStatus::UserApproved => Some(2),
            TargetStatus::Downloading => Some(3),
            TargetStatus::Preparing => Some(4),
            TargetStatus::Downloaded => Some(5),
            TargetStatus::Installing => Some(6),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TargetStatus::Pending => "pending",
            TargetStatus::Approved => "approved",
            TargetStatus::UserApproved => "user_approved",
            TargetStatus::Downloading => "downloading",
            TargetStatus::Downloaded => "downloaded",
            TargetStatus::Preparing => "preparing",
            TargetStatus::Installing => "installing",
            TargetStatus::Retry => "retry",
            TargetStatus::Installed => "installed",
            TargetStatus::Obsolete => "obsolete",
            TargetStatus::Failed => "failed",
            TargetStatus::Cancelled => "cancelled",
            TargetStatus::Deprecated => "deprecated",
        }
    }

    /// Position in [`TargetStatus::ALL`], used to index per-status counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TargetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TargetStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// The meaning of a device report for its target, independent of the protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// The device accepted the instruction (MDM `Acknowledged`, DDM declaration active and valid).
    Accepted,
    /// The user started the install before the deadline.
    UserStarted,
    Downloading,
    /// Download done, the device is preparing the install.
    Preparing,
    /// Downloaded and prepared, ready to install.
    Downloaded,
    Installing,
    /// The device reports the OS it runs.
    Running {
        version: OsVersion,
        build: Option<String>,
    },
    /// An attempt failed; `retryable` failures can clear by themselves
    /// (space, power, network), the others cannot.
    AttemptFailed {
        reason: String,
        retryable: bool,
    },
    /// The operation was cancelled or the device left management.
    Cancel,
    /// Apple stopped signing the target update.
    Expire,
}

impl Signal {
    /// Short name for logs and events.
    pub fn name(&self) -> &'static str {
        match self {
            Signal::Accepted => "accepted",
            Signal::UserStarted => "user_started",
            Signal::Downloading => "downloading",
            Signal::Preparing => "preparing",
            Signal::Downloaded => "downloaded",
            Signal::Installing => "installing",
            Signal::Running { .. } => "running",
            Signal::AttemptFailed { .. } => "attempt_failed",
            Signal::Cancel => "cancel",
            Signal::Expire => "expire",
        }
    }
}

/// How many attempts a target gets and how long it waits between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub initial_backoff_seconds: i64,
}

impl Default for RetryPolicy {
    /// At most 3 attempts, with exponential backoff starting at one hour.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff_seconds: 3600,
        }
    }
}

impl RetryPolicy {
    /// Largest accepted `max_attempts`.
    pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
    /// Accepted range of `initial_backoff_seconds`: one minute to 7 days.
    pub const BACKOFF_SECONDS_RANGE: std::ops::RangeInclusive<i64> = 60..=7 * 24 * 3600;

    /// Wait before the attempt that follows failure number `failures` (1-based).
    pub fn backoff(&self, failures: u32) -> SignedDuration {
        let doublings = failures.saturating_sub(1).min(16);
        SignedDuration::from_secs(self.initial_backoff_seconds.saturating_mul(1 << doublings))
    }

    /// Checks the limits. The error names the policy by `key`.
    fn validate(&self, key: &str) -> Result<(), RetryPolicyError> {
        if self.max_attempts == 0 || self.max_attempts > Self::MAX_ATTEMPTS_LIMIT {
            return Err(RetryPolicyError::MaxAttempts {
                key: key.to_string(),
                value: self.max_attempts,
            });
        }
        if !Self::BACKOFF_SECONDS_RANGE.contains(&self.initial_backoff_seconds) {
            return Err(RetryPolicyError::Backoff {
                key: key.to_string(),
                value: self.initial_backoff_seconds,
            });
        }
        Ok(())
    }
}

/// Failure reason of an attempt that made no progress for too long.
pub const REASON_STALLED: &str = "stalled";

/// Failure reason of an MDM update that the device stopped listing in
/// `OSUpdateStatus` before it was downloaded or installed.
pub const REASON_UPDATE_VANISHED: &str = "update_vanished";

/// Failure reasons that [`RetryPolicies::by_reason`] accepts as keys: the
/// retryable `ScheduleOSUpdate` `UpdateResults` statuses and the reasons
/// the server assigns itself.
///
/// NOTE: DDM's `softwareupdate.failure-reason` carries free text with no
/// documented value set, so DDM failures always take the default policy.
pub const RETRYABLE_REASONS: [&str; 9] = [
    "DownloadInsufficientSpace",
    "DownloadInsufficientPower",
    "DownloadInsufficientNetwork",
    "DownloadRequiresComputer",
    "InstallInsufficientSpace",
    "InstallInsufficientPower",
    "InstallPhoneCallInProgress",
    REASON_UPDATE_VANISHED,
    REASON_STALLED,
];

/// The retry policy per failure reason, with a default for the others.
///
/// JSON form (the `OSDEPLOY_RETRY_POLICY` setting): both keys are optional,
/// and each `by_reason` entry replaces the built-in entry of that reason.
///
/// ```json
/// {"default": {"max_attempts": 3, "initial_backoff_seconds": 3600},
///  "by_reason": {"InstallPhoneCallInProgress": {"max_attempts": 5, "initial_backoff_seconds": 600}}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryPolicies {
    pub default: RetryPolicy,
    pub by_reason: BTreeMap<String, RetryPolicy>,
}

impl Default for RetryPolicies {
    /// Three attempts for every reason. The first wait follows how soon the
    /// cause usually clears: a phone call ends within minutes, a charger or
    /// a network comes back within the hour, while connecting the device to
    /// a computer needs the user. The other reasons, insufficient space
    /// among them, keep the one-hour default.
    fn default() -> Self {
        let policy = |minutes: i64| RetryPolicy {
            initial_backoff_seconds: minutes * 60,
            ..RetryPolicy::default()
        };
        let by_reason = [
            ("InstallPhoneCallInProgress", policy(15)),
            ("DownloadInsufficientPower", policy(30)),
            ("InstallInsufficientPower", policy(30)),
            ("DownloadInsufficientNetwork", policy(30)),
            ("DownloadRequiresComputer", policy(24 * 60)),
        ]
        .into_iter()
        .map(|(reason, policy)| (reason.to_string(), policy))
        .collect();
        RetryPolicies {
            default: RetryPolicy::default(),
            by_reason,
        }
    }
}

/// A retry policy setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryPolicyError {
    #[error(
        "invalid retry policy JSON ({message}): write it as {{\"default\": {{\"max_attempts\": 3, \"initial_backoff_seconds\": 3600}}, \"by_reason\": {{...}}}}"
    )]
    Json { message: String },
    #[error(
        "unknown failure reason {key:?} in the retry policy; use one of: {}",
        RETRYABLE_REASONS.join(", ")
    )]
    UnknownReason { key: String },
    #[error(
        "invalid max_attempts {value} for {key} in the retry policy: use 1 to {}",
        RetryPolicy::MAX_ATTEMPTS_LIMIT
    )]
    MaxAttempts { key: String, value: u32 },
    #[error(
        "invalid initial_backoff_seconds {value} for {key} in the retry policy: use {} to {}",
        RetryPolicy::BACKOFF_SECONDS_RANGE.start(),
        RetryPolicy::BACKOFF_SECONDS_RANGE.end()
    )]
    Backoff { key: String, value: i64 },
}

/// The JSON form of [`RetryPolicies`], before it is merged with the defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryPoliciesOverride {
    default: Option<RetryPolicy>,
    #[serde(default)]
    by_reason: BTreeMap<String, RetryPolicy>,
}

impl RetryPolicies {
    /// Returns the policy for a failure reason: the entry whose key equals
    /// the reason or is followed in it by `": "`, else the default.
    pub fn for_reason(&self, reason: &str) -> &RetryPolicy {
        let key = reason.split_once(": ").map_or(reason, |(head, _)| head);
        self.by_reason.get(key).unwrap_or(&self.default)
    }

    /// Parses the JSON form and merges it over the built-in defaults,
    /// rejecting unknown keys, unknown reasons and values out of range.
    pub fn from_json(json: &str) -> Result<RetryPolicies, RetryPolicyError> {
        let parsed: RetryPoliciesOverride =
            serde_json::from_str(json).map_err(|e| RetryPolicyError::Json {
                message: e.to_string(),
            })?;
        let mut policies = RetryPolicies::default();
        if let Some(default) = parsed.default {
            default.validate("default")?;
            policies.default = default;
        }
        for (reason, policy) in parsed.by_reason {
            if !RETRYABLE_REASONS.contains(&reason.as_str()) {
                return Err(RetryPolicyError::UnknownReason { key: reason });
            }
            policy.validate(&format!("by_reason.{reason}"))?;
            policies.by_reason.insert(reason, policy);
        }
        Ok(policies)
    }
}

/// The parts of a target the state machine reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress<'a> {
    pub status: TargetStatus,
    /// Failed attempts so far.
    pub failures: u32,
    /// Whether the device has reported anything for this target yet.
    pub reported: bool,
    pub target_version: &'a OsVersion,
    pub target_build: &'a str,
}

/// The result of applying a signal that was not rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Moved(Move),
    /// The signal repeats what the target already shows.
    Duplicate,
    /// The signal would move the target backwards without a failure.
    Stale,
    /// The signal carries nothing that changes the status (an OS version
    /// below the target, say).
    NoChange,
}

/// A status change, with what the target records alongside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub from: TargetStatus,
    pub to: TargetStatus,
    /// Failed attempts after this move.
    pub failures: u32,
    /// When the next attempt is due, for moves into Retry.
    pub next_attempt_at: Option<Timestamp>,
    /// The failure reason, for moves into Retry or Failed.
    pub error: Option<String>,
}

/// A signal that the state machine rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("target is already {status}, a final status; signal {signal} ignored")]
    FinalStatus {
        status: TargetStatus,
        signal: &'static str,
    },
    #[error("signal {signal} is not allowed while the target is {from}")]
    NotAllowed {
        from: TargetStatus,
        signal: &'static str,
    },
}

/// Decides what `signal` does to a target in `progress`.
pub fn apply(
    progress: &Progress<'_>,
    signal: &Signal,
    policies: &RetryPolicies,
    now: Timestamp,
) -> Result<Outcome, TransitionError> {
    let from = progress.status;
    let moved = |to: TargetStatus| {
        Outcome::Moved(Move {
            from,
            to,
            failures: progress.failures,
            next_attempt_at: None,
            error: None,
        })
    };

    if from.is_final() {
        return match final_status_of(progress, signal) {
            Some(status) if status == from => Ok(Outcome::Duplicate),
            _ if matches!(signal, Signal::Running { .. }) && !reaches_target(progress, signal) => {
                Ok(Outcome::NoChange)
            }
            _ => Err(TransitionError::FinalStatus {
                status: from,
                signal: signal.name(),
            }),
        };
    }

    match signal {
        Signal::Running { .. } => {
            if !reaches_target(progress, signal) {
                Ok(Outcome::NoChange)
            } else if progress.reported || from != TargetStatus::Pending {
                Ok(moved(TargetStatus::Installed))
            } else {
                Ok(moved(TargetStatus::Obsolete))
            }
        }
        Signal::Accepted
        | Signal::UserStarted
        | Signal::Downloading
        | Signal::Preparing
        | Signal::Downloaded
        | Signal::Installing => {
            let to = progress_status(signal);
            if to == from {
                return Ok(Outcome::Duplicate);
            }
            let rank_to = to.progress_rank().unwrap_or(0);
            let rank_from = from.progress_rank().unwrap_or(0);
            if rank_to > rank_from {
                Ok(moved(to))
            } else {
                Ok(Outcome::Stale)
            }
        }
        Signal::AttemptFailed { reason, retryable } => {
            let policy = policies.for_reason(reason);
            let failures = progress.failures + 1;
            if *retryable && failures < policy.max_attempts {
                Ok(Outcome::Moved(Move {
                    from,
                    to: TargetStatus::Retry,
                    failures,
                    next_attempt_at: Some(now + policy.backoff(failures)),
                    error: Some(reason.clone()),
                }))
            } else {
                Ok(Outcome::Moved(Move {
                    from,
                    to: TargetStatus::Failed,
                    failures,
                    next_attempt_at: None,
                    error: Some(reason.clone()),
                }))
            }
        }
        Signal::Cancel | Signal::Expire if from == TargetStatus::Installing => {
            Err(TransitionError::NotAllowed {
                from,
                signal: signal.name(),
            })
        }
        Signal::Cancel => Ok(moved(TargetStatus::Cancelled)),
        Signal::Expire => Ok(moved(TargetStatus::Deprecated)),
    }
}

fn progress_status(signal: &Signal) -> TargetStatus {
    match signal {
        Signal::Accepted => TargetStatus::Approved,
        Signal::UserStarted => TargetStatus::UserApproved,
        Signal::Downloading => TargetStatus::Downloading,
        Signal::Preparing => TargetStatus::Preparing,
        Signal::Downloaded => TargetStatus::Downloaded,
        _ => TargetStatus::Installing,
    }
}

/// Whether a `Running` signal shows the target version (or its build) or newer.
fn reaches_target(progress: &Progress<'_>, signal: &Signal) -> bool {
    match signal {
        Signal::Running { version, build } => {
            version >= progress.target_version || build.as_deref() == Some(progress.target_build)
        }
        _ => false,
    }
}

/// The final status a signal would lead to from a final status, to tell
/// duplicates from rejected signals.
fn final_status_of(progress: &Progress<'_>, signal: &Signal) -> Option<TargetStatus> {
    match signal {
        Signal::Running { .. } if reaches_target(progress, signal) => match progress.status {
            TargetStatus::Obsolete => Some(TargetStatus::Obsolete),
            _ => Some(TargetStatus::Installed),
        },
        Signal::Cancel => Some(TargetStatus::Cancelled),
        Signal::Expire => Some(TargetStatus::Deprecated),
        Signal::AttemptFailed { .. } if progress.status == TargetStatus::Failed => {
            Some(TargetStatus::Failed)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::TargetStatus::*;
    use super::*;

    fn now() -> Timestamp {
        "2026-08-22T09:00:00Z".parse().unwrap()
    }

    fn run(
        status: TargetStatus,
        failures: u32,
        reported: bool,
        signal: Signal,
    ) -> Result<Outcome, TransitionError> {
        let target: OsVersion = "26.6.2".parse().unwrap();
        let progress = Progress {
            status,
            failures,
            reported,
            target_version: &target,
            target_build: "25G83",
        };
        apply(&progress, &signal, &RetryPolicies::default(), now())
    }

    fn running(version: &str) -> Signal {
        Signal::Running {
            version: version.parse().unwrap(),
            build: None,
        }
    }

    /// A failure whose reason has no policy of its own, so the default applies.
    fn failed(retryable: bool) -> Signal {
        Signal::AttemptFailed {
            reason: "software update failed".into(),
            retryable,
        }
    }

    fn failed_for(reason: &str) -> Signal {
        Signal::AttemptFailed {
            reason: reason.into(),
            retryable: true,
        }
    }

    fn moved_to(outcome: Result<Outcome, TransitionError>) -> Option<TargetStatus> {
        match outcome {
            Ok(Outcome::Moved(m)) => Some(m.to),
            _ => None,
        }
    }

    #[test]
    fn progress_moves_forward() {
        let cases = [
            (Pending, Signal::Accepted, Approved),
            (Pending, Signal::UserStarted, UserApproved),
            (Approved, Signal::UserStarted, UserApproved),
            (Approved, Signal::Downloading, Downloading),
            (Pending, Signal::Downloading, Downloading),
            (Downloading, Signal::Preparing, Preparing),
            (Downloading, Signal::Downloaded, Downloaded),
            (Preparing, Signal::Downloaded, Downloaded),
            (Downloaded, Signal::Installing, Installing),
            (Approved, Signal::Installing, Installing),
            (Retry, Signal::Downloading, Downloading),
            (Retry, Signal::Accepted, Approved),
            (Installing, running("26.6.2"), Installed),
            (Downloading, running("26.7"), Installed),
            (Retry, running("26.6.2"), Installed),
            (Pending, Signal::Cancel, Cancelled),
            (Downloaded, Signal::Cancel, Cancelled),
            (Retry, Signal::Cancel, Cancelled),
            (Approved, Signal::Expire, Deprecated),
        ];
        for (from, signal, to) in cases {
            let reported = from != Pending;
            assert_eq!(
                moved_to(run(from, 0, reported, signal.clone())),
                Some(to),
                "{from} + {signal:?}"
            );
        }
    }

    #[test]
    fn repeated_progress_is_duplicate() {
        let cases = [
            (Approved, Signal::Accepted),
            (UserApproved, Signal::UserStarted),
            (Downloading, Signal::Downloading),
            (Preparing, Signal::Preparing),
            (Downloaded, Signal::Downloaded),
            (Installing, Signal::Installing),
            (Installed, running("26.6.2")),
            (Obsolete, running("26.6.2")),
            (Cancelled, Signal::Cancel),
            (Deprecated, Signal::Expire),
            (Failed, failed(false)),
        ];
        for (from, signal) in cases {
            assert_eq!(
                run(from, 0, true, signal.clone()),
                Ok(Outcome::Duplicate),
                "{from} + {signal:?}"
            );
        }
    }

    #[test]
    fn backward_progress_is_stale() {
        let cases = [
            (Downloading, Signal::Accepted),
            (Installing, Signal::Downloading),
            (Downloaded, Signal::Preparing),
            (Downloaded, Signal::Downloading),
            (UserApproved, Signal::Accepted),
            (Installing, Signal::Downloaded),
        ];
        for (from, signal) in cases {
            assert_eq!(
                run(from, 0, true, signal.clone()),
                Ok(Outcome::Stale),
                "{from} + {signal:?}"
            );
        }
    }

    #[test]
    fn final_status_rejects_other_signals() {
        let cases = [
            (Installed, Signal::Downloading),
            (Installed, Signal::Cancel),
            (Failed, Signal::Accepted),
            (Cancelled, Signal::Installing),
            (Obsolete, Signal::Expire),
            (Deprecated, failed(true)),
        ];
        for (from, signal) in cases {
            let result = run(from, 0, true, signal.clone());
            assert!(
                matches!(result, Err(TransitionError::FinalStatus { status, .. }) if status == from),
                "{from} + {signal:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn installing_cannot_be_cancelled_or_deprecated() {
        for signal in [Signal::Cancel, Signal::Expire] {
            assert!(matches!(
                run(Installing, 0, true, signal),
                Err(TransitionError::NotAllowed {
                    from: Installing,
                    ..
                })
            ));
        }
    }

    #[test]
    fn target_version_before_any_report_is_obsolete() {
        assert_eq!(
            moved_to(run(Pending, 0, false, running("26.6.2"))),
            Some(Obsolete)
        );
        assert_eq!(
            moved_to(run(Pending, 0, false, running("27.0"))),
            Some(Obsolete)
        );
        assert_eq!(
            moved_to(run(Pending, 0, true, running("26.6.2"))),
            Some(Installed)
        );
    }

    #[test]
    fn matching_build_counts_as_installed() {
        let signal = Signal::Running {
            version: "26.6.1".parse().unwrap(),
            build: Some("25G83".into()),
        };
        assert_eq!(moved_to(run(Installing, 0, true, signal)), Some(Installed));
    }

    #[test]
    fn older_version_changes_nothing() {
        assert_eq!(
            run(Installing, 0, true, running("26.5")),
            Ok(Outcome::NoChange)
        );
        assert_eq!(
            run(Installed, 0, true, running("26.5")),
            Ok(Outcome::NoChange)
        );
    }

    #[test]
    fn retryable_failure_backs_off_then_fails() {
        let first = run(Downloading, 0, true, failed(true)).unwrap();
        let Outcome::Moved(first) = first else {
            panic!("expected a move, got {first:?}")
        };
        assert_eq!(first.to, Retry);
        assert_eq!(first.failures, 1);
        assert_eq!(
            first.next_attempt_at,
            Some(now() + SignedDuration::from_hours(1))
        );

        let second = run(Downloading, 1, true, failed(true)).unwrap();
        let Outcome::Moved(second) = second else {
            panic!("expected a move, got {second:?}")
        };
        assert_eq!(second.to, Retry);
        assert_eq!(
            second.next_attempt_at,
            Some(now() + SignedDuration::from_hours(2))
        );

        let third = run(Installing, 2, true, failed(true)).unwrap();
        let Outcome::Moved(third) = third else {
            panic!("expected a move, got {third:?}")
        };
        assert_eq!(third.to, Failed);
        assert_eq!(third.failures, 3);
        assert_eq!(third.error.as_deref(), Some("software update failed"));
    }

    #[test]
    fn permanent_failure_fails_at_once() {
        assert_eq!(
            moved_to(run(Approved, 0, true, failed(false))),
            Some(Failed)
        );
    }

    #[test]
    fn statuses_round_trip_as_snake_case() {
        for status in TargetStatus::ALL {
            assert_eq!(status.as_str().parse::<TargetStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(TargetStatus::ALL.iter().filter(|s| s.is_final()).count(), 5);
    }

    #[test]
    fn status_index_matches_all_order() {
        for (i, status) in TargetStatus::ALL.iter().enumerate() {
            assert_eq!(status.index(), i);
        }
    }

    #[test]
    fn failure_reason_picks_backoff() {
        let cases = [
            ("InstallPhoneCallInProgress", 15 * 60),
            ("DownloadInsufficientPower", 30 * 60),
            ("InstallInsufficientPower", 30 * 60),
            ("DownloadInsufficientNetwork", 30 * 60),
            ("DownloadInsufficientSpace", 3600),
            ("InstallInsufficientSpace", 3600),
            ("DownloadRequiresComputer", 24 * 3600),
            ("stalled: no report for 72h", 3600),
            ("update_vanished: the update is no longer listed", 3600),
            ("The update failed to download", 3600),
        ];
        for (reason, seconds) in cases {
            let outcome = run(Downloading, 0, true, failed_for(reason));
            let Ok(Outcome::Moved(change)) = outcome else {
                panic!("{reason}: expected a move, got {outcome:?}")
            };
            assert_eq!(change.to, Retry, "{reason}");
            assert_eq!(
                change.next_attempt_at,
                Some(now() + SignedDuration::from_secs(seconds)),
                "{reason}"
            );
        }
    }

    #[test]
    fn reason_policy_sets_max_attempts() {
        let target: OsVersion = "26.6.2".parse().unwrap();
        let policies = RetryPolicies::from_json(
            r#"{"by_reason": {"InstallPhoneCallInProgress": {"max_attempts": 5, "initial_backoff_seconds": 600}}}"#,
        )
        .unwrap();
        let progress = |failures| Progress {
            status: Installing,
            failures,
            reported: true,
            target_version: &target,
            target_build: "25G83",
        };
        let call = failed_for("InstallPhoneCallInProgress");
        let space = failed_for("InstallInsufficientSpace");

        assert_eq!(
            moved_to(apply(&progress(3), &call, &policies, now())),
            Some(Retry),
            "the fourth failed call still retries under a 5-attempt policy"
        );
        assert_eq!(
            moved_to(apply(&progress(4), &call, &policies, now())),
            Some(Failed)
        );
        assert_eq!(
            moved_to(apply(&progress(2), &space, &policies, now())),
            Some(Failed),
            "other reasons keep 3 attempts"
        );
    }

    #[test]
    fn policy_json_merges_over_defaults() {
        let policies = RetryPolicies::from_json(
            r#"{"default": {"max_attempts": 4, "initial_backoff_seconds": 1800},
                "by_reason": {"stalled": {"max_attempts": 2, "initial_backoff_seconds": 7200}}}"#,
        )
        .unwrap();
        assert_eq!(policies.default.max_attempts, 4);
        assert_eq!(policies.default.initial_backoff_seconds, 1800);
        assert_eq!(policies.for_reason("stalled").max_attempts, 2);
        assert_eq!(
            policies
                .for_reason("InstallPhoneCallInProgress")
                .initial_backoff_seconds,
            15 * 60,
            "built-in entries stay unless replaced"
        );
        assert_eq!(RetryPolicies::from_json("{}"), Ok(RetryPolicies::default()));
    }

    #[test]
    fn policy_json_rejects_bad_keys() {
        let cases = [
            (
                r#"{"by_reason": {"DownloadInsufficentSpace": {"max_attempts": 3, "initial_backoff_seconds": 60}}}"#,
                "DownloadInsufficentSpace",
            ),
            (r#"{"defaults": {}}"#, "defaults"),
            (
                r#"{"default": {"max_attempts": 3, "backoff": 60}}"#,
                "backoff",
            ),
            (
                r#"{"default": {"max_attempts": 0, "initial_backoff_seconds": 60}}"#,
                "max_attempts 0 for default",
            ),
            (
                r#"{"by_reason": {"stalled": {"max_attempts": 3, "initial_backoff_seconds": 5}}}"#,
                "initial_backoff_seconds 5 for by_reason.stalled",
            ),
            ("[1, 2]", "invalid retry policy JSON"),
        ];
        for (json, named) in cases {
            let error = RetryPolicies::from_json(json).unwrap_err().to_string();
            assert!(error.contains(named), "{json}: {error}");
        }
    }
}
