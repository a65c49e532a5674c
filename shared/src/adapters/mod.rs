//! Adapters behind the ports: the embedded SQLite store, the local
//! scheduler and the recorded push.

#[cfg(feature = "aws")]
pub mod aws;
pub mod local_scheduler;
pub mod push;
pub mod sqlite;

pub use push::RecordedPush;
pub use sqlite::SqliteStore;
