//! Fleet simulator behind `osdeploy simulate` and `osdeploy demo`.
//!
//! A [`Fleet`] enrolls simulated Macs and iPhones with a running osdeploy
//! server over the real MDM and DDM protocols, then plays them through the
//! OS updates the server requests. Each device runs its timers on the
//! server's clock, which it reads from the `Date` header of every reply, so
//! an accelerated server clock speeds the whole fleet up.
//!
//! The fleet keeps a ground truth per device: the final status its target
//! should reach given what the simulator did (failures injected,
//! cancellations seen), for the demo to compare with the server.
//!
//! A run:
//!
//! ```no_run
//! # async fn run() -> Result<(), osdeploy_cli::simulate::SimError> {
//! use osdeploy_cli::simulate::{Fleet, FleetConfig};
//!
//! let server = "http://127.0.0.1:8080";
//! let mut fleet = Fleet::new(FleetConfig { devices: 100, seed: 7, ..FleetConfig::default() })?;
//! fleet.enroll(server).await?;
//! // ... create operations through the admin API for fleet.devices() ...
//! let progress = fleet
//!     .run_until(server, std::time::Duration::from_secs(600), |p| {
//!         p.targeted > 0 && p.settled == p.targeted
//!     })
//!     .await?;
//! for device in fleet.devices() {
//!     let expected = fleet.expected_status(&device.udid);
//!     // ... compare with the server's target status ...
//! }
//! # Ok(()) }
//! ```

mod clock;
mod commands;
mod ddm;
mod device;
mod error;
mod mix;
mod profile;
mod rng;
mod session;
mod truth;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use clock::parse_http_date;
pub use device::UpdatePhase;
pub use error::SimError;
pub use profile::{
    Behaviour, DeviceRole, FailureKind, FailurePlan, FleetMix, ScenarioTargets, SimDevice,
    TargetUpdate, Timing,
};
pub use rng::SplitMix64;
pub use truth::{DeviceCounters, DeviceTruth, ExpectedStatus};

use device::Machine;
use session::{CheckInSettings, Shared, Transport};

/// Request errors logged at warning level before the rest go to debug
/// level, so that a server that is down does not flood the log.
const LOGGED_ERRORS: u64 = 20;

/// Consecutive ticks in which every check-in failed before a run stops.
const FAILING_TICKS_LIMIT: u32 = 5;

/// Settings of a simulated fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Number of devices.
    pub devices: usize,
    /// Seed of every random choice: the same seed gives the same fleet.
    pub seed: u64,
    /// Server time between a device's regular check-ins, before jitter.
    pub poll_interval: SignedDuration,
    pub mix: FleetMix,
    pub timing: Timing,
    pub targets: ScenarioTargets,
    /// Devices talking to the server at once.
    pub concurrency: usize,
    /// APNs topic the devices send in their check-ins.
    pub topic: String,
    /// Maximum HTTP requests over the fleet's lifetime; requests beyond it
    /// fail with [`SimError::RequestBudget`].
    pub max_requests: u64,
    /// Wall-clock pause between ticks of [`Fleet::run_until`].
    pub tick_pause: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            devices: 50,
            seed: 1,
            poll_interval: SignedDuration::from_mins(15),
            mix: FleetMix::default(),
            timing: Timing::default(),
            targets: ScenarioTargets::default(),
            concurrency: 32,
            topic: "com.apple.mgmt.External.osdeploy-simulator".to_owned(),
            max_requests: 2_000_000,
            tick_pause: Duration::from_millis(200),
        }
    }
}

impl FleetConfig {
    fn validate(&self) -> Result<(), SimError> {
        let invalid = |detail: String| Err(SimError::InvalidConfig { detail });
        if self.devices == 0 {
            return invalid("devices is 0; simulate at least one device".to_owned());
        }
        if self.concurrency == 0 {
            return invalid("concurrency is 0; allow at least one request at a time".to_owned());
        }
        if self.poll_interval < SignedDuration::from_secs(1) {
            return invalid(format!(
                "poll_interval is {}; use at least one second",
                self.poll_interval
            ));
        }
        if self.topic.is_empty() {
            return invalid("topic is empty; set the APNs topic of the MDM profile".to_owned());
        }
        self.mix.validate()?;
        self.timing.validate()
    }
}

/// Summary of one tick.
#[derive(Debug, Default)]
pub struct TickReport {
    /// Devices that checked in.
    pub checked_in: usize,
    /// Requests sent during the tick.
    pub requests: u64,
    /// Check-ins that failed, one error each; they are also logged and
    /// counted in [`FleetStats::errors`].
    pub errors: Vec<SimError>,
    /// Latest server time seen.
    pub server_time: Option<Timestamp>,
}

/// A snapshot of the fleet, for a run's stop condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetProgress {
    pub server_time: Option<Timestamp>,
    pub devices: usize,
    pub enrolled: usize,
    /// Devices with an expected status: instructed to update, cancelled, or
    /// already on the scenario target.
    pub targeted: usize,
    /// Targeted devices whose expected status the server has every report
    /// for.
    pub settled: usize,
    /// Devices per update phase.
    pub phases: BTreeMap<UpdatePhase, usize>,
    /// Reboots onto a new OS so far.
    pub updated: usize,
    pub ticks: u64,
    pub requests: u64,
    pub errors: u64,
}

/// Totals over the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetStats {
    pub devices: usize,
    pub enrolled: usize,
    pub requests: u64,
    pub errors: u64,
    pub commands_answered: u64,
    pub status_reports_sent: u64,
    pub token_checks: u64,
    pub declarations_fetched: u64,
    pub failures_injected: u64,
    pub not_nows: u64,
    pub user_early_installs: u64,
    pub updates_installed: u64,
    /// Devices per expected final status, keyed by the status name.
    pub expected: BTreeMap<&'static str, usize>,
    pub ticks: u64,
}

/// Kind of work a task does for its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Enroll,
    CheckIn,
}

/// A simulated fleet. See the module documentation for a run.
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    /// Device records as last synced from the machines.
    devices: Vec<SimDevice>,
    /// `None` only while a task runs the device, or after its task panicked.
    machines: Vec<Option<Machine>>,
    index: HashMap<String, usize>,
    client: reqwest::Client,
    shared: Arc<Shared>,
    ticks: u64,
    errors_logged: u64,
    /// Next device to check in early; see [`Fleet::next_probe`].
    probe_cursor: usize,
}

impl Fleet {
    /// Generates the fleet. No request is sent until [`Fleet::enroll`].
    ///
    /// # Errors
    ///
    /// Returns [`SimError::InvalidConfig`] or [`SimError::InvalidTimeZone`]
    /// for a configuration that cannot produce a fleet.
    pub fn new(config: FleetConfig) -> Result<Fleet, SimError> {
        config.validate()?;
        let devices = mix::generate(config.devices, config.seed, &config.mix, &config.targets)?;
        let mut machines = Vec::with_capacity(devices.len());
        let mut index = HashMap::with_capacity(devices.len());
        for (position, device) in devices.iter().enumerate() {
            let target = config.targets.for_platform(device.platform).clone();
            let rng = SplitMix64::for_stream(config.seed, position as u64);
            index.insert(device.udid.clone(), position);
            machines.push(Some(Machine::new(
                device.clone(),
                config.timing.clone(),
                target,
                rng,
            )?));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| SimError::InvalidConfig {
                detail: format!("the HTTP client could not be built: {e}"),
            })?;
        let shared = Arc::new(Shared::new(config.max_requests));
        Ok(Fleet {
            config,
            devices,
            machines,
            index,
            client,
            shared,
            ticks: 0,
            errors_logged: 0,
            probe_cursor: 0,
        })
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Lists the devices with their current OS versions.
    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    /// Returns the device with this UDID.
    pub fn device(&self, udid: &str) -> Option<&SimDevice> {
        self.index.get(udid).and_then(|i| self.devices.get(*i))
    }

    /// Returns the latest server time seen in a `Date` header.
    pub fn server_time(&self) -> Option<Timestamp> {
        self.shared.latest()
    }

    /// Moves a device to another IANA time zone. Its DDM deadline follows the
    /// new zone's wall clock; tell the server through the admin API as well.
    ///
    /// # Errors
    ///
    /// Returns [`SimError::UnknownDevice`] or [`SimError::InvalidTimeZone`].
    pub fn set_time_zone(&mut self, udid: &str, zone: &str) -> Result<(), SimError> {
        let position = self.position(udid)?;
        let machine = self.machine_mut(position, udid)?;
        machine.set_time_zone(zone)?;
        let device = machine.device.clone();
        self.devices[position] = device;
        Ok(())
    }

    /// Records that the operation holding this device was cancelled. DDM
    /// devices notice the cancellation themselves when their enforcement
    /// declaration disappears. MDM devices get no signal, so the caller must
    /// call this for the ground truth to say `cancelled`.
    ///
    /// # Errors
    ///
    /// Returns [`SimError::UnknownDevice`].
    pub fn mark_cancelled(&mut self, udid: &str) -> Result<(), SimError> {
        let position = self.position(udid)?;
        self.machine_mut(position, udid)?.cancel();
        Ok(())
    }

    /// Returns the final status the server should give this device's target:
    /// `installed`, `failed`, `obsolete` or `cancelled`.
    ///
    /// Returns `None` for unsupervised Macs, and for a device that was never
    /// instructed to update and does not run the scenario target.
    ///
    /// A device on the scenario target reads `obsolete` whether or not the
    /// caller made it a target.
    pub fn expected_status(&self, udid: &str) -> Option<&'static str> {
        let machine = self.machines.get(*self.index.get(udid)?)?.as_ref()?;
        machine.expected().map(ExpectedStatus::as_str)
    }

    /// Returns the device's ground truth with its counters.
    pub fn ground_truth(&self, udid: &str) -> Option<DeviceTruth> {
        let machine = self.machines.get(*self.index.get(udid)?)?.as_ref()?;
        Some(machine.truth())
    }

    /// Enrolls every device not enrolled yet: `Authenticate`, `TokenUpdate`
    /// and a first check-in, with [`FleetConfig::concurrency`] devices at a
    /// time. A device whose `Authenticate` or `TokenUpdate` fails stays
    /// unenrolled, and a later call retries it. A device whose first
    /// check-in fails is enrolled and checks in again at a later tick.
    ///
    /// # Errors
    ///
    /// Returns [`SimError::InvalidServerUrl`] for a URL that is not plain
    /// HTTP on a loopback address, and [`SimError::Enrollment`] with the
    /// first error when any device failed.
    pub async fn enroll(&mut self, server: &str) -> Result<(), SimError> {
        let transport = self.transport(server)?;
        let pending: Vec<usize> = self
            .machines
            .iter()
            .enumerate()
            .filter(|(_, machine)| machine.as_ref().is_some_and(|m| !m.enrolled))
            .map(|(position, _)| position)
            .collect();
        let total = pending.len();
        let report = self.run_tasks(pending, Work::Enroll, transport).await;
        let failed = report.errors.len();
        tracing::info!(enrolled = total - failed, failed, server_time = ?report.server_time, "simulated fleet enrolled");
        match report.errors.into_iter().next() {
            None => Ok(()),
            Some(first) => Err(SimError::Enrollment {
                failed,
                total,
                first: Box::new(first),
            }),
        }
    }

    /// Runs one round: every enrolled device whose poll is due, or whose
    /// timers fired, checks in, [`FleetConfig::concurrency`] at a time.
    /// Failed check-ins are returned in the report, logged and counted, and
    /// the device tries again one server minute later.
    ///
    /// # Errors
    ///
    /// Returns [`SimError::InvalidServerUrl`] for a URL that is not plain
    /// HTTP on a loopback address.
    pub async fn tick(&mut self, server: &str) -> Result<TickReport, SimError> {
        let transport = self.transport(server)?;
        let estimate = self.shared.estimate();
        let mut due: Vec<usize> = self
            .machines
            .iter()
            .enumerate()
            .filter(|(_, machine)| {
                machine
                    .as_ref()
                    .is_some_and(|m| m.enrolled && m.is_due(estimate))
            })
            .map(|(position, _)| position)
            .collect();
        if due.is_empty()
            && let Some(probe) = self.next_probe()
        {
            due.push(probe);
        }
        self.ticks += 1;
        Ok(self.run_tasks(due, Work::CheckIn, transport).await)
    }

    /// Ticks until `stop` returns true for the fleet's progress, pausing
    /// [`FleetConfig::tick_pause`] between ticks.
    ///
    /// # Errors
    ///
    /// - [`SimError::RunTimedOut`] when `max_wall` of wall-clock time passes
    ///   first.
    /// - [`SimError::ServerUnreachable`] when every check-in failed in
    ///   [`FAILING_TICKS_LIMIT`] consecutive ticks.
    /// - [`SimError::RequestBudget`] when [`FleetConfig::max_requests`] is
    ///   used up.
    /// - [`SimError::InvalidServerUrl`] as in [`Fleet::tick`].
    pub async fn run_until<F>(
        &mut self,
        server: &str,
        max_wall: Duration,
        mut stop: F,
    ) -> Result<FleetProgress, SimError>
    where
        F: FnMut(&FleetProgress) -> bool,
    {
        let started = Instant::now();
        let mut failing_ticks = 0;
        loop {
            let progress = self.progress();
            if stop(&progress) {
                return Ok(progress);
            }
            if started.elapsed() >= max_wall {
                return Err(SimError::RunTimedOut {
                    waited_seconds: started.elapsed().as_secs(),
                    settled: progress.settled,
                    targeted: progress.targeted,
                });
            }
            let report = self.tick(server).await?;
            let all_failed = report.checked_in > 0 && report.errors.len() == report.checked_in;
            if all_failed {
                failing_ticks += 1;
            } else if report.checked_in > 0 {
                failing_ticks = 0;
            }
            let mut errors = report.errors;
            if let Some(position) = errors
                .iter()
                .position(|e| matches!(e, SimError::RequestBudget { .. }))
            {
                return Err(errors.swap_remove(position));
            }
            if failing_ticks >= FAILING_TICKS_LIMIT
                && let Some(last) = errors.pop()
            {
                return Err(SimError::ServerUnreachable {
                    ticks: failing_ticks,
                    last: Box::new(last),
                });
            }
            tokio::time::sleep(self.config.tick_pause).await;
        }
    }

    /// Returns a snapshot of the fleet.
    pub fn progress(&self) -> FleetProgress {
        let mut progress = FleetProgress {
            server_time: self.shared.latest(),
            devices: self.devices.len(),
            ticks: self.ticks,
            ..FleetProgress::default()
        };
        for machine in self.machines.iter().flatten() {
            progress.enrolled += usize::from(machine.enrolled);
            if machine.expected().is_some() {
                progress.targeted += 1;
                progress.settled += usize::from(machine.settled());
            }
            if let Some(job) = &machine.job {
                *progress.phases.entry(job.phase.name()).or_default() += 1;
            }
            progress.updated += machine.counters.updates_installed as usize;
            progress.requests += machine.counters.requests;
            progress.errors += machine.counters.errors;
        }
        progress
    }

    /// Returns totals over the fleet.
    pub fn stats(&self) -> FleetStats {
        let mut stats = FleetStats {
            devices: self.devices.len(),
            ticks: self.ticks,
            ..FleetStats::default()
        };
        for machine in self.machines.iter().flatten() {
            let counters = &machine.counters;
            stats.enrolled += usize::from(machine.enrolled);
            stats.requests += counters.requests;
            stats.errors += counters.errors;
            stats.commands_answered += counters.commands_answered;
            stats.status_reports_sent += counters.status_reports_sent;
            stats.token_checks += counters.token_checks;
            stats.declarations_fetched += counters.declarations_fetched;
            stats.failures_injected += u64::from(counters.failures_injected);
            stats.not_nows += u64::from(counters.not_nows);
            stats.user_early_installs += u64::from(counters.user_early_installs);
            stats.updates_installed += u64::from(counters.updates_installed);
            if let Some(expected) = machine.expected() {
                *stats.expected.entry(expected.as_str()).or_default() += 1;
            }
        }
        stats
    }

    /// Picks the device that checks in early when no device is due, in
    /// turn, so that every tick reads the server's clock. Without it an
    /// accelerated server clock would go unnoticed until the first poll came
    /// due on the 1:1 estimate.
    fn next_probe(&mut self) -> Option<usize> {
        let count = self.machines.len();
        for offset in 0..count {
            let position = (self.probe_cursor + offset) % count;
            let ready = self.machines[position]
                .as_ref()
                .is_some_and(|m| m.enrolled && !m.is_offline(self.shared.estimate()));
            if ready {
                self.probe_cursor = (position + 1) % count;
                return Some(position);
            }
        }
        None
    }

    fn transport(&self, server: &str) -> Result<Transport, SimError> {
        let base = session::loopback_base(server)?;
        Ok(Transport::new(
            self.client.clone(),
            base,
            self.shared.clone(),
        ))
    }

    fn position(&self, udid: &str) -> Result<usize, SimError> {
        self.index
            .get(udid)
            .copied()
            .ok_or_else(|| SimError::UnknownDevice {
                udid: udid.to_owned(),
            })
    }

    fn machine_mut(&mut self, position: usize, udid: &str) -> Result<&mut Machine, SimError> {
        self.machines
            .get_mut(position)
            .and_then(Option::as_mut)
            .ok_or_else(|| SimError::UnknownDevice {
                udid: udid.to_owned(),
            })
    }

    /// Runs `work` for the devices at `positions` on tokio tasks, at most
    /// [`FleetConfig::concurrency`] at a time, and puts each device back.
    async fn run_tasks(
        &mut self,
        positions: Vec<usize>,
        work: Work,
        transport: Transport,
    ) -> TickReport {
        let requests_before = self
            .shared
            .requests
            .load(std::sync::atomic::Ordering::Relaxed);
        let settings = Arc::new(CheckInSettings {
            topic: self.config.topic.clone(),
            poll_interval: self.config.poll_interval,
        });
        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        let mut tasks = JoinSet::new();
        let mut running = HashMap::new();
        let mut report = TickReport::default();

        for position in positions {
            let Some(mut machine) = self.machines.get_mut(position).and_then(Option::take) else {
                continue;
            };
            // The semaphore is never closed, so acquiring only waits.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                self.machines[position] = Some(machine);
                break;
            };
            let transport = transport.clone();
            let settings = settings.clone();
            let handle = tasks.spawn(async move {
                let result = match work {
                    Work::Enroll => session::enroll(&mut machine, &transport, &settings).await,
                    Work::CheckIn => session::check_in(&mut machine, &transport, &settings).await,
                };
                drop(permit);
                (position, machine, result)
            });
            running.insert(handle.id(), position);
            report.checked_in += 1;
        }

        while let Some(joined) = tasks.join_next_with_id().await {
            match joined {
                Ok((_, (position, mut machine, result))) => {
                    if let Err(error) = result {
                        machine.back_off(self.shared.estimate(), session::ERROR_BACKOFF);
                        self.log_error(&error);
                        report.errors.push(error);
                    }
                    self.devices[position] = machine.device.clone();
                    self.machines[position] = Some(machine);
                }
                Err(join_error) => {
                    let position = running.get(&join_error.id()).copied();
                    let udid = position
                        .and_then(|p| self.devices.get(p))
                        .map(|d| d.udid.clone())
                        .unwrap_or_default();
                    let error = SimError::Task {
                        udid,
                        source: join_error,
                    };
                    tracing::error!(%error, "simulated device dropped from the fleet");
                    report.errors.push(error);
                }
            }
        }
        if !report.errors.is_empty() && self.errors_logged > LOGGED_ERRORS {
            tracing::warn!(
                failed = report.errors.len(),
                checked_in = report.checked_in,
                "simulated check-ins failed this round; each error is logged at debug level"
            );
        }
        report.requests = self
            .shared
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(requests_before);
        report.server_time = self.shared.latest();
        report
    }

    /// Logs a request error: the first [`LOGGED_ERRORS`] at warning level,
    /// the rest at debug level.
    fn log_error(&mut self, error: &SimError) {
        self.errors_logged += 1;
        if self.errors_logged <= LOGGED_ERRORS {
            tracing::warn!(%error, "simulated device request failed");
        } else {
            tracing::debug!(%error, "simulated device request failed");
        }
    }
}

#[cfg(test)]
mod tests;
