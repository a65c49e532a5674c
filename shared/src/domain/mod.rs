//! Operations, targets, devices, statuses, events and time rules. No I/O.

pub mod deadline;
pub mod platform;

pub use platform::{InvalidOsVersion, OsVersion, Platform};
