//! Operations, targets, devices, statuses, events and time rules. No I/O.

pub mod clock;
pub mod deadline;
pub mod device;
pub mod event;
pub mod operation;
pub mod platform;
pub mod reminders;
pub mod status;
pub mod target;

pub use clock::{AcceleratedClock, Clock, IdGenerator, ManualClock, SystemClock, UlidGenerator};
pub use deadline::{ZoneDeadline, ZoneSource};
pub use device::{Device, EnrollmentState, Group, Incompatibility};
pub use event::{Actor, EVENT_RETENTION, Event, EventType};
pub use operation::{
    InstallSettings, Operation, OperationState, OperationType, OperationUpdate, Protocol, Reminder,
    StatusCounts, TimeZoneRule,
};
pub use platform::{InvalidOsVersion, OsVersion, Platform};
pub use status::{
    Move, Outcome, Progress, REASON_STALLED, REASON_UPDATE_VANISHED, RetryPolicies, RetryPolicy,
    RetryPolicyError, Signal, TargetStatus, TransitionError,
};
pub use target::Target;
