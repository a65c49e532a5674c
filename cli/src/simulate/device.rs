//! One simulated device's update state machine, run on server time.
//!
//! An update job moves through these phases:
//!
//! ```text
//! Scheduled → Downloading → Preparing → Prepared → Installing → Rebooting → (new OS)
//!     ↑            ↓ (DDM failure)                      ↓ (DDM failure)
//!     └──────── Waiting (retry after a delay) ←─────────┘        → GaveUp after 3
//! ```
//!
//! MDM devices report failures in the `ScheduleOSUpdate` result and wait
//! for the server to send the command again. DDM devices fail part-way
//! through, wait `Timing::ddm_retry_delay` and retry by themselves. Every
//! transition happens at the server time it was due, even when the device
//! notices it later, so a job's timeline does not depend on poll timing.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use osdeploy_shared::catalog::{Catalog, DeviceIdentity};
use osdeploy_shared::domain::OsVersion;

use super::ddm::DeclarationSet;
use super::error::SimError;
use super::profile::{FailureKind, FailurePlan, SimDevice, TargetUpdate, Timing};
use super::rng::SplitMix64;
use super::truth::{DeviceCounters, TargetRecord};

/// Failures after which a DDM device stops retrying and reports `failed`.
pub(crate) const DDM_MAX_FAILURES: u32 = 3;

/// Minimum time between an update being prepared and the deadline for a
/// user to install it early from Settings.
const MIN_EARLY_INSTALL_WINDOW: SignedDuration = SignedDuration::from_mins(10);

/// Progress of an update job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted over MDM, not started because the attempt failed.
    Scheduled,
    /// A DDM device waits to retry after a failure.
    Waiting {
        until: Timestamp,
        resume: Resume,
    },
    Downloading {
        started: Timestamp,
        ends: Timestamp,
    },
    Preparing {
        ends: Timestamp,
    },
    /// Downloaded and prepared, ready to install.
    Prepared,
    Installing {
        ends: Timestamp,
    },
    /// Offline; comes back on the new OS at `ends`.
    Rebooting {
        ends: Timestamp,
    },
    /// A DDM device failed [`DDM_MAX_FAILURES`] times and stopped.
    GaveUp,
}

/// The step a DDM device retries after waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    Download,
    /// `by_user` keeps an early install from Settings a user install.
    Install {
        by_user: bool,
    },
}

/// Phase names for progress counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UpdatePhase {
    Scheduled,
    Waiting,
    Downloading,
    Preparing,
    Prepared,
    Installing,
    Rebooting,
    GaveUp,
}

impl Phase {
    pub(crate) fn name(self) -> UpdatePhase {
        match self {
            Phase::Scheduled => UpdatePhase::Scheduled,
            Phase::Waiting { .. } => UpdatePhase::Waiting,
            Phase::Downloading { .. } => UpdatePhase::Downloading,
            Phase::Preparing { .. } => UpdatePhase::Preparing,
            Phase::Prepared => UpdatePhase::Prepared,
            Phase::Installing { .. } => UpdatePhase::Installing,
            Phase::Rebooting { .. } => UpdatePhase::Rebooting,
            Phase::GaveUp => UpdatePhase::GaveUp,
        }
    }

    /// Returns whether the install has started. From then on neither a
    /// cancellation nor a new instruction stops it.
    pub(crate) fn is_installing(self) -> bool {
        matches!(self, Phase::Installing { .. } | Phase::Rebooting { .. })
    }
}

/// Source of the update instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    Mdm,
    /// The enforcement declaration `declaration_id`, due at the device-local
    /// wall-clock time `deadline`.
    Ddm {
        declaration_id: String,
        deadline: DateTime,
    },
}

/// One update the device works on.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) target: TargetUpdate,
    pub(crate) product_key: String,
    pub(crate) origin: Origin,
    pub(crate) phase: Phase,
    /// MDM InstallASAP received: install as soon as the update is prepared.
    pub(crate) install_requested: bool,
    /// The user started the install from Settings.
    pub(crate) user_started: bool,
    /// Failures of this job.
    pub(crate) failures: u32,
    pub(crate) last_failure: Option<(FailureKind, Timestamp)>,
    download: SignedDuration,
    prepare: SignedDuration,
    install: SignedDuration,
    /// DDM: when and why the current download fails, if it does.
    download_failure: Option<(Timestamp, FailureKind)>,
    /// DDM: when the user installs early from Settings.
    user_install_at: Option<Timestamp>,
}

/// Product key a device reports for an update, such as
/// `MSU_UPDATE_25G83_patch_26.6.2`. It is a function of the update, so it
/// stays the same across a device's attempts.
pub(crate) fn product_key(target: &TargetUpdate) -> String {
    format!("MSU_UPDATE_{}_patch_{}", target.build, target.version)
}

/// Reads a product key made by [`product_key`].
pub(crate) fn parse_product_key(key: &str) -> Option<TargetUpdate> {
    let rest = key.strip_prefix("MSU_UPDATE_")?;
    let (build, version) = rest.split_once("_patch_")?;
    if build.is_empty() || version.parse::<OsVersion>().is_err() {
        return None;
    }
    Some(TargetUpdate::new(version, build))
}

/// Returns whether `left` is the same OS version as `right` (`26.6` equals
/// `26.6.0`); false when either is not a version.
pub(crate) fn same_version(left: &str, right: &str) -> bool {
    match (left.parse::<OsVersion>(), right.parse::<OsVersion>()) {
        (Ok(left), Ok(right)) => left == right,
        _ => false,
    }
}

/// Returns whether `version` is at or above `target`; false when either is
/// not a version.
pub(crate) fn at_or_above(version: &str, target: &str) -> bool {
    match (version.parse::<OsVersion>(), target.parse::<OsVersion>()) {
        (Ok(version), Ok(target)) => version >= target,
        _ => false,
    }
}

fn after(at: Timestamp, duration: SignedDuration) -> Timestamp {
    at.checked_add(duration).unwrap_or(Timestamp::MAX)
}

/// One simulated device: its identity, update job, DDM state and truth.
#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) device: SimDevice,
    zone: TimeZone,
    timing: Timing,
    /// The scenario target for this device's platform.
    pub(crate) scenario_target: TargetUpdate,
    rng: SplitMix64,
    /// Latest server time seen.
    now: Option<Timestamp>,
    pub(crate) job: Option<Job>,
    pub(crate) enrolled: bool,
    /// Declarative management was turned on by a DeclarativeManagement
    /// command.
    pub(crate) ddm_enabled: bool,
    /// The server asked for a declaration sync.
    pub(crate) sync_requested: bool,
    pub(crate) declarations: DeclarationSet,
    /// The declaration set changed since the last status report.
    pub(crate) declarations_changed: bool,
    /// Status items as last accepted by the server, by dotted name.
    pub(crate) reported: std::collections::BTreeMap<&'static str, serde_json::Value>,
    pub(crate) not_now_sent: bool,
    transient_failure_used: bool,
    pub(crate) record: TargetRecord,
    pub(crate) counters: DeviceCounters,
    pub(crate) next_poll_at: Option<Timestamp>,
    /// After a failed request, no check-in before this server time.
    pub(crate) retry_at: Option<Timestamp>,
    pub(crate) push_token: Vec<u8>,
    pub(crate) push_magic: String,
}

impl Machine {
    pub(crate) fn new(
        device: SimDevice,
        timing: Timing,
        scenario_target: TargetUpdate,
        mut rng: SplitMix64,
    ) -> Result<Machine, SimError> {
        let zone =
            TimeZone::get(&device.time_zone).map_err(|source| SimError::InvalidTimeZone {
                zone: device.time_zone.clone(),
                source,
            })?;
        let push_token = (0..4).flat_map(|_| rng.next_u64().to_be_bytes()).collect();
        let push_magic = super::mix::uuid_like(&mut rng);
        Ok(Machine {
            device,
            zone,
            timing,
            scenario_target,
            rng,
            now: None,
            job: None,
            enrolled: false,
            ddm_enabled: false,
            sync_requested: false,
            declarations: DeclarationSet::default(),
            declarations_changed: false,
            reported: Default::default(),
            not_now_sent: false,
            transient_failure_used: false,
            record: TargetRecord::default(),
            counters: DeviceCounters::default(),
            next_poll_at: None,
            retry_at: None,
            push_token,
            push_magic,
        })
    }

    /// Returns the latest server time seen, or the Unix epoch before the
    /// first reply.
    pub(crate) fn now(&self) -> Timestamp {
        self.now.unwrap_or(Timestamp::UNIX_EPOCH)
    }

    pub(crate) fn set_time_zone(&mut self, zone: &str) -> Result<(), SimError> {
        self.zone = TimeZone::get(zone).map_err(|source| SimError::InvalidTimeZone {
            zone: zone.to_owned(),
            source,
        })?;
        self.device.time_zone = zone.to_owned();
        Ok(())
    }

    /// Returns the device's wall-clock time at `at`.
    pub(crate) fn wall_clock(&self, at: Timestamp) -> DateTime {
        at.to_zoned_datetime(self.zone.clone()).datetime()
    }

    /// Returns the instant at which the device's wall clock reads `local`.
    /// In a daylight-saving gap that is the first instant after the gap.
    pub(crate) fn instant_of(&self, local: DateTime) -> Timestamp {
        local
            .to_zoned_datetime(self.zone.clone())
            .map(|zoned| zoned.timestamp())
            .unwrap_or(Timestamp::MAX)
    }

    /// Moves the device's clock to the server time `now` and runs every
    /// timer that came due. Older times are ignored.
    pub(crate) fn observe(&mut self, now: Timestamp) {
        let now = match self.now {
            Some(previous) if previous > now => previous,
            _ => now,
        };
        self.now = Some(now);
        // Each step moves the job forward once; a job has fewer phases than this.
        for _ in 0..32 {
            if !self.step(now) {
                break;
            }
        }
    }

    /// Runs the job's next due transition; false when none is due.
    fn step(&mut self, now: Timestamp) -> bool {
        let Some(mut job) = self.job.take() else {
            return false;
        };
        let moved = match job.phase {
            Phase::Waiting { until, resume } if now >= until => {
                match resume {
                    Resume::Download => self.begin_download(&mut job, until),
                    Resume::Install { by_user } => self.begin_install(&mut job, until, by_user),
                }
                true
            }
            Phase::Downloading { ends, .. } => match job.download_failure {
                Some((fail_at, kind)) if now >= fail_at => {
                    self.fail_by_itself(&mut job, kind, fail_at, Resume::Download);
                    true
                }
                _ if now >= ends => {
                    job.phase = Phase::Preparing {
                        ends: after(ends, job.prepare),
                    };
                    true
                }
                _ => false,
            },
            Phase::Preparing { ends } if now >= ends => {
                self.prepared(&mut job, ends);
                true
            }
            Phase::Prepared => match self.install_due(&job) {
                Some((at, by_user)) if now >= at => {
                    self.begin_install(&mut job, at, by_user);
                    true
                }
                _ => false,
            },
            Phase::Installing { ends } if now >= ends => {
                job.phase = Phase::Rebooting {
                    ends: after(ends, self.timing.reboot),
                };
                true
            }
            Phase::Rebooting { ends } if now >= ends => {
                self.finish(&job);
                return true;
            }
            _ => false,
        };
        self.job = Some(job);
        moved
    }

    /// Returns when a prepared DDM update installs, and whether the user
    /// starts it: the deadline, or the user's earlier install.
    fn install_due(&self, job: &Job) -> Option<(Timestamp, bool)> {
        let Origin::Ddm { deadline, .. } = &job.origin else {
            return None;
        };
        let deadline = self.instant_of(*deadline);
        match job.user_install_at {
            Some(user) if user < deadline && !job.install_requested => Some((user, true)),
            _ => Some((deadline, false)),
        }
    }

    /// Returns the server time of the job's next timer, if it has one.
    pub(crate) fn next_event_at(&self) -> Option<Timestamp> {
        let job = self.job.as_ref()?;
        match job.phase {
            Phase::Waiting { until, .. } => Some(until),
            Phase::Downloading { ends, .. } => Some(match job.download_failure {
                Some((fail_at, _)) => fail_at.min(ends),
                None => ends,
            }),
            Phase::Preparing { ends } | Phase::Installing { ends } | Phase::Rebooting { ends } => {
                Some(ends)
            }
            Phase::Prepared => self.install_due(job).map(|(at, _)| at),
            Phase::Scheduled | Phase::GaveUp => None,
        }
    }

    /// Returns whether the device should check in at the estimated server
    /// time `estimate`: its poll is due or one of its timers fired. A
    /// rebooting device is offline.
    pub(crate) fn is_due(&self, estimate: Option<Timestamp>) -> bool {
        let Some(estimate) = estimate else {
            return true;
        };
        if self.retry_at.is_some_and(|at| estimate < at) || self.is_offline(Some(estimate)) {
            return false;
        }
        let poll_due = self.next_poll_at.is_none_or(|at| estimate >= at);
        let event_due = self.next_event_at().is_some_and(|at| estimate >= at);
        poll_due || event_due
    }

    /// Returns whether the device is rebooting at `estimate`, the one time it
    /// cannot reach the server.
    pub(crate) fn is_offline(&self, estimate: Option<Timestamp>) -> bool {
        let Some(Job {
            phase: Phase::Rebooting { ends },
            ..
        }) = &self.job
        else {
            return false;
        };
        estimate.unwrap_or(self.now()) < *ends
    }

    /// Sets the next regular check-in one jittered `interval` after the
    /// current server time.
    pub(crate) fn schedule_poll(&mut self, interval: SignedDuration) {
        let jitter = self.timing.poll_jitter;
        let factor = 1.0 + jitter * (2.0 * self.rng.next_f64() - 1.0);
        self.next_poll_at = Some(after(self.now(), interval.mul_f64(factor)));
        self.retry_at = None;
    }

    /// Spreads the first regular check-ins of a freshly enrolled fleet over
    /// one `interval`.
    pub(crate) fn schedule_first_poll(&mut self, interval: SignedDuration) {
        let offset = interval.mul_f64(self.rng.next_f64());
        self.next_poll_at = Some(after(self.now(), offset));
    }

    /// Holds the device back for `delay` of server time after a failed
    /// request, from `estimate` (or the last confirmed time).
    pub(crate) fn back_off(&mut self, estimate: Option<Timestamp>, delay: SignedDuration) {
        let from = estimate.unwrap_or(self.now()).max(self.now());
        self.retry_at = Some(after(from, delay));
    }

    /// Creates a job for `target`, or keeps the current one when it is for
    /// the same version or already installing. Returns false when the
    /// current install keeps the device from taking `target`.
    pub(crate) fn ensure_job(&mut self, target: &TargetUpdate, origin: Origin) -> bool {
        if let Some(job) = &mut self.job {
            if same_version(&job.target.version, &target.version) {
                let ddm = matches!(origin, Origin::Ddm { .. });
                if ddm {
                    job.origin = origin;
                }
                if self.record.target.is_none() || self.record.cancelled {
                    // A new instruction after a cancellation is a new operation.
                    self.record.start(job.target.clone());
                }
                self.record.ddm |= ddm;
                return true;
            }
            if job.phase.is_installing() {
                return false;
            }
        }
        let ddm = matches!(origin, Origin::Ddm { .. });
        let download = self.draw(self.timing.download);
        let prepare = self.draw(self.timing.prepare);
        let install = self.draw(self.timing.install);
        self.job = Some(Job {
            target: target.clone(),
            product_key: product_key(target),
            origin,
            phase: Phase::Scheduled,
            install_requested: false,
            user_started: false,
            failures: 0,
            last_failure: None,
            download,
            prepare,
            install,
            download_failure: None,
            user_install_at: None,
        });
        self.record.start(target.clone());
        self.record.ddm = ddm;
        true
    }

    fn draw(&mut self, (low, high): (SignedDuration, SignedDuration)) -> SignedDuration {
        SignedDuration::from_secs(self.rng.between(low.as_secs(), high.as_secs()))
    }

    /// Returns the failure this attempt hits under the device's failure
    /// plan, if any. `install` selects the install phase, otherwise the
    /// download phase.
    pub(crate) fn planned_failure(&mut self, install: bool) -> Option<FailureKind> {
        match self.device.behaviour.failure {
            FailurePlan::Transient(kind)
                if kind.is_install() == install && !self.transient_failure_used =>
            {
                self.transient_failure_used = true;
                Some(kind)
            }
            FailurePlan::Persistent(kind) if kind.is_install() == install => Some(kind),
            _ => None,
        }
    }

    /// Starts (or restarts) the download at `at`. A DDM device decides here
    /// whether this download fails, and when.
    pub(crate) fn begin_download(&mut self, job: &mut Job, at: Timestamp) {
        let ends = after(at, job.download);
        job.download_failure = None;
        if matches!(job.origin, Origin::Ddm { .. })
            && let Some(kind) = self.planned_failure(false)
        {
            let fraction = 0.2 + 0.6 * self.rng.next_f64();
            job.download_failure = Some((after(at, job.download.mul_f64(fraction)), kind));
        }
        job.phase = Phase::Downloading { started: at, ends };
    }

    /// Starts the install at `at`. A DDM device may fail here by plan.
    pub(crate) fn begin_install(&mut self, job: &mut Job, at: Timestamp, by_user: bool) {
        if matches!(job.origin, Origin::Ddm { .. })
            && let Some(kind) = self.planned_failure(true)
        {
            self.fail_by_itself(job, kind, at, Resume::Install { by_user });
            return;
        }
        if by_user {
            job.user_started = true;
            self.counters.user_early_installs += 1;
        }
        job.phase = Phase::Installing {
            ends: after(at, job.install),
        };
    }

    /// Marks the update prepared at `at`. Installs it at once when that was
    /// requested or the deadline passed, and picks the user's early install
    /// time if the device has one.
    fn prepared(&mut self, job: &mut Job, at: Timestamp) {
        job.phase = Phase::Prepared;
        if job.install_requested {
            self.begin_install(job, at, false);
            return;
        }
        let Origin::Ddm { deadline, .. } = &job.origin else {
            return;
        };
        if self.wall_clock(at) >= *deadline {
            self.begin_install(job, at, false);
            return;
        }
        let window = self.instant_of(*deadline).duration_since(at);
        if self.device.behaviour.user_early_install
            && job.user_install_at.is_none()
            && window > MIN_EARLY_INSTALL_WINDOW
        {
            let fraction = 0.1 + 0.5 * self.rng.next_f64();
            job.user_install_at = Some(after(at, window.mul_f64(fraction)));
        }
    }

    /// Records a DDM attempt that failed at `at`, then waits to retry, or
    /// gives up after [`DDM_MAX_FAILURES`].
    fn fail_by_itself(&mut self, job: &mut Job, kind: FailureKind, at: Timestamp, resume: Resume) {
        job.failures += 1;
        job.last_failure = Some((kind, at));
        job.download_failure = None;
        self.counters.failures_injected += 1;
        tracing::debug!(device_id = %self.device.udid, reason = kind.reason(), failures = job.failures, "simulated update failure");
        if job.failures >= DDM_MAX_FAILURES {
            job.phase = Phase::GaveUp;
            return;
        }
        job.phase = Phase::Waiting {
            until: after(at, self.timing.ddm_retry_delay),
            resume,
        };
    }

    /// Records an MDM attempt that fails in the command result. The job
    /// stays where it was until the server retries.
    pub(crate) fn fail_in_result(&mut self, job: &mut Job, kind: FailureKind) {
        job.failures += 1;
        job.last_failure = Some((kind, self.now()));
        self.counters.failures_injected += 1;
        tracing::debug!(device_id = %self.device.udid, reason = kind.reason(), failures = job.failures, "simulated update failure");
    }

    /// Finishes the reboot: the device runs the new OS.
    fn finish(&mut self, job: &Job) {
        self.device.os_version = job.target.version.clone();
        self.device.build_version = job.target.build.clone();
        self.device.ddm_capable = super::profile::ddm_capable(
            self.device.platform,
            &self.device.os_version,
            self.device.supervised,
        );
        self.counters.updates_installed += 1;
        tracing::debug!(device_id = %self.device.udid, version = %job.target.version, build = %job.target.build, "simulated device rebooted on the new OS");
    }

    /// Looks up the build the catalog prefers for `version` on this device;
    /// `None` when the catalog does not list the version for it.
    pub(crate) fn catalog_build(&self, version: &str) -> Option<String> {
        let requested: OsVersion = version.parse().ok()?;
        let current: OsVersion = self.device.os_version.parse().ok()?;
        let identity = DeviceIdentity {
            model: &self.device.model,
            software_update_device_id: Some(&self.device.software_update_device_id),
            platform: self.device.platform,
            os_version: &current,
            build: Some(&self.device.build_version),
        };
        // Records come in preferred-build order, the order the server picks in.
        Catalog::bundled()
            .listed_updates(&identity)
            .into_iter()
            .find(|update| {
                !update.background_security_improvement && update.product_version == requested
            })
            .map(|update| update.build.clone())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::simulate::profile::{Behaviour, DeviceRole, FailurePlan};
    use crate::simulate::truth::{ExpectedStatus, SERVER_MAX_ATTEMPTS};
    use osdeploy_shared::domain::Platform;

    pub(crate) fn ts(text: &str) -> Timestamp {
        text.parse().expect("valid timestamp literal")
    }

    /// Returns a supervised MacBook Pro (13-inch, M2, 2022) on macOS 15.7.7 in `zone`.
    pub(crate) fn mac(zone: &str, behaviour: Behaviour) -> Machine {
        let device = SimDevice {
            udid: "5D2C4A18-7B3E-4F0A-9C61-2E8D0B7A4F13".to_owned(),
            serial_number: "C7QX4MDF9K".to_owned(),
            name: "Aiko's MacBook Pro".to_owned(),
            platform: Platform::MacOs,
            model: "Mac14,7".to_owned(),
            model_name: "MacBook Pro".to_owned(),
            marketing_name: "MacBook Pro (13-inch, M2, 2022)".to_owned(),
            software_update_device_id: "J493AP".to_owned(),
            os_version: "15.7.7".to_owned(),
            build_version: "24G720".to_owned(),
            time_zone: zone.to_owned(),
            supervised: true,
            ddm_capable: true,
            role: DeviceRole::Updatable,
            behaviour,
        };
        let timing = Timing {
            download: (SignedDuration::from_mins(30), SignedDuration::from_mins(30)),
            prepare: (SignedDuration::from_mins(15), SignedDuration::from_mins(15)),
            install: (SignedDuration::from_mins(20), SignedDuration::from_mins(20)),
            ..Timing::default()
        };
        let mut machine = Machine::new(
            device,
            timing,
            TargetUpdate::new("26.6.2", "25G83"),
            SplitMix64::new(1),
        )
        .expect("valid zone");
        machine.enrolled = true;
        machine
    }

    pub(crate) fn target() -> TargetUpdate {
        TargetUpdate::new("26.6.2", "25G83")
    }

    #[test]
    fn product_key_round_trips() {
        let key = product_key(&target());

        assert_eq!(key, "MSU_UPDATE_25G83_patch_26.6.2");
        assert_eq!(parse_product_key(&key), Some(target()));
        assert_eq!(parse_product_key("MSU_UPDATE_x"), None);
        assert_eq!(parse_product_key("042-12345"), None);
    }

    #[test]
    fn catalog_build_for_version() {
        let machine = mac("Europe/Berlin", Behaviour::NORMAL);

        assert_eq!(machine.catalog_build("26.6.2").as_deref(), Some("25G83"));
        assert_eq!(machine.catalog_build("99.0"), None);
    }

    #[test]
    fn ddm_deadline_in_device_zone() {
        // 09:00 on the wall clock is 00:00 UTC in Tokyo (UTC+9) and 13:00
        // UTC in New York (UTC-4 in September).
        let deadline: DateTime = "2026-09-01T09:00:00".parse().expect("valid datetime");
        let cases = [
            ("Asia/Tokyo", "2026-09-01T00:00:00Z"),
            ("America/New_York", "2026-09-01T13:00:00Z"),
            ("Asia/Kolkata", "2026-09-01T03:30:00Z"),
        ];
        for (zone, instant) in cases {
            let mut machine = mac(zone, Behaviour::NORMAL);
            machine.observe(ts("2026-08-31T12:00:00Z"));
            let origin = Origin::Ddm {
                declaration_id: "osdeploy.enforcement.op1".to_owned(),
                deadline,
            };
            assert!(machine.ensure_job(&target(), origin));
            let mut job = machine.job.take().expect("job created");
            machine.begin_download(&mut job, machine.now());
            machine.job = Some(job);

            // Downloaded and prepared after 45 minutes, then it waits.
            machine.observe(ts("2026-08-31T12:45:00Z"));
            let phase = machine.job.as_ref().map(|j| j.phase);
            assert_eq!(phase, Some(Phase::Prepared), "{zone}");
            assert_eq!(machine.next_event_at(), Some(ts(instant)), "{zone}");

            let just_before = ts(instant) - SignedDuration::from_secs(1);
            machine.observe(just_before);
            let phase = machine.job.as_ref().map(|j| j.phase.name());
            assert_eq!(
                phase,
                Some(UpdatePhase::Prepared),
                "{zone} before the deadline"
            );

            machine.observe(ts(instant));
            let phase = machine.job.as_ref().map(|j| j.phase);
            let expected_end = ts(instant) + SignedDuration::from_mins(20);
            assert_eq!(
                phase,
                Some(Phase::Installing { ends: expected_end }),
                "{zone}"
            );
            assert_eq!(machine.wall_clock(ts(instant)), deadline, "{zone}");
        }
    }

    #[test]
    fn ddm_failure_retries_after_delay() {
        let behaviour = Behaviour {
            failure: FailurePlan::Transient(FailureKind::DownloadInsufficientSpace),
            ..Behaviour::NORMAL
        };
        let mut machine = mac("Europe/London", behaviour);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        let origin = Origin::Ddm {
            declaration_id: "osdeploy.enforcement.op1".to_owned(),
            deadline: "2026-09-03T09:00:00".parse().expect("valid datetime"),
        };
        machine.ensure_job(&target(), origin);
        let mut job = machine.job.take().expect("job created");
        machine.begin_download(&mut job, machine.now());
        machine.job = Some(job);

        // The download fails part-way through its 30 minutes.
        machine.observe(ts("2026-09-01T08:30:00Z"));
        let job = machine.job.as_ref().expect("job kept");
        let Phase::Waiting { until, resume } = job.phase else {
            panic!("expected Waiting after the failure, got {:?}", job.phase);
        };
        let (kind, failed_at) = job.last_failure.expect("failure recorded");
        assert_eq!(job.failures, 1);
        assert_eq!(kind, FailureKind::DownloadInsufficientSpace);
        assert_eq!(resume, Resume::Download);
        assert_eq!(until, failed_at + SignedDuration::from_hours(1));
        assert_eq!(machine.counters.failures_injected, 1);

        // One hour later it downloads again, and this time succeeds.
        machine.observe(until);
        let phase = machine.job.as_ref().map(|j| j.phase.name());
        assert_eq!(phase, Some(UpdatePhase::Downloading));
        machine.observe(until + SignedDuration::from_mins(45));
        let phase = machine.job.as_ref().map(|j| j.phase.name());
        assert_eq!(phase, Some(UpdatePhase::Prepared));
        assert_eq!(machine.counters.failures_injected, 1);
    }

    #[test]
    fn ddm_persistent_failure_gives_up() {
        let behaviour = Behaviour {
            failure: FailurePlan::Persistent(FailureKind::DownloadInsufficientPower),
            ..Behaviour::NORMAL
        };
        let mut machine = mac("Australia/Sydney", behaviour);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        let origin = Origin::Ddm {
            declaration_id: "osdeploy.enforcement.op1".to_owned(),
            deadline: "2026-09-05T09:00:00".parse().expect("valid datetime"),
        };
        machine.ensure_job(&target(), origin);
        let mut job = machine.job.take().expect("job created");
        machine.begin_download(&mut job, machine.now());
        machine.job = Some(job);

        machine.observe(ts("2026-09-02T08:00:00Z"));

        let job = machine.job.as_ref().expect("job kept");
        assert_eq!(job.phase, Phase::GaveUp);
        assert_eq!(job.failures, DDM_MAX_FAILURES);
        assert_eq!(machine.expected(), Some(ExpectedStatus::Failed));
        assert_eq!(machine.next_event_at(), None);
    }

    #[test]
    fn user_installs_before_deadline() {
        let behaviour = Behaviour {
            user_early_install: true,
            ..Behaviour::NORMAL
        };
        let mut machine = mac("Europe/Berlin", behaviour);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        let deadline: DateTime = "2026-09-04T09:00:00".parse().expect("valid datetime");
        let origin = Origin::Ddm {
            declaration_id: "osdeploy.enforcement.op1".to_owned(),
            deadline,
        };
        machine.ensure_job(&target(), origin);
        let mut job = machine.job.take().expect("job created");
        machine.begin_download(&mut job, machine.now());
        machine.job = Some(job);
        machine.observe(ts("2026-09-01T08:45:00Z"));
        let user_at = machine.next_event_at().expect("early install planned");
        let deadline_at = machine.instant_of(deadline);
        assert!(
            user_at < deadline_at,
            "{user_at} is not before {deadline_at}"
        );

        machine.observe(user_at);

        let job = machine.job.as_ref().expect("job kept");
        assert!(job.user_started);
        assert_eq!(job.phase.name(), UpdatePhase::Installing);
        assert_eq!(machine.counters.user_early_installs, 1);
    }

    #[test]
    fn rebooting_device_is_offline() {
        let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
        machine.observe(ts("2026-09-01T08:00:00Z"));
        machine.ensure_job(&target(), Origin::Mdm);
        let mut job = machine.job.take().expect("job created");
        job.phase = Phase::Rebooting {
            ends: ts("2026-09-01T08:05:00Z"),
        };
        machine.job = Some(job);
        machine.next_poll_at = Some(ts("2026-09-01T08:01:00Z"));

        assert!(!machine.is_due(Some(ts("2026-09-01T08:02:00Z"))));
        assert!(machine.is_due(Some(ts("2026-09-01T08:05:00Z"))));

        machine.observe(ts("2026-09-01T08:05:00Z"));
        assert!(machine.job.is_none());
        assert_eq!(machine.device.os_version, "26.6.2");
        assert_eq!(machine.device.build_version, "25G83");
    }

    #[test]
    fn cancel_keeps_reported_install() {
        let cases = [
            (false, false, 0, ExpectedStatus::Cancelled),
            (true, false, 0, ExpectedStatus::Installed),
            (false, true, 0, ExpectedStatus::Installed),
            (false, false, 1, ExpectedStatus::Cancelled),
            (false, false, SERVER_MAX_ATTEMPTS, ExpectedStatus::Failed),
        ];
        for (installing, on_target, failures, expected) in cases {
            let mut machine = mac("Europe/Berlin", Behaviour::NORMAL);
            machine.ensure_job(&target(), Origin::Mdm);
            machine.record.reported_installing = installing;
            machine.record.reported_on_target = on_target;
            machine.record.failures_reported = failures;

            machine.cancel();

            assert_eq!(
                machine.expected(),
                Some(expected),
                "installing {installing}, on target {on_target}, failures {failures}"
            );
        }
    }

    #[test]
    fn expected_status_by_role() {
        let mut on_target = mac("Europe/Berlin", Behaviour::NORMAL);
        on_target.device.role = DeviceRole::AlreadyOnTarget;
        let mut unsupervised = mac("Europe/Berlin", Behaviour::NORMAL);
        unsupervised.device.role = DeviceRole::Unsupervised;
        let untouched = mac("Europe/Berlin", Behaviour::NORMAL);
        let mut persistent = mac(
            "Europe/Berlin",
            Behaviour {
                failure: FailurePlan::Persistent(FailureKind::DownloadInsufficientSpace),
                ..Behaviour::NORMAL
            },
        );
        persistent.ensure_job(&target(), Origin::Mdm);

        assert_eq!(on_target.expected(), Some(ExpectedStatus::Obsolete));
        assert!(on_target.settled());
        assert_eq!(unsupervised.expected(), None);
        assert_eq!(untouched.expected(), None);
        assert_eq!(persistent.expected(), Some(ExpectedStatus::Failed));
        assert!(!persistent.settled());
    }
}
