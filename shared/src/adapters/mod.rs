//! Adapters behind the ports: the embedded SQLite store, the local
//! scheduler, export files in a folder, the in-process event channel and
//! the recorded push.

pub mod apns;
#[cfg(feature = "aws")]
pub mod aws;
pub mod catalog_source;
pub mod local_blobs;
pub mod local_publisher;
pub mod local_scheduler;
pub mod memory_blobs;
pub mod publishing;
pub mod push;
pub mod sqlite;

pub use local_blobs::LocalBlobStore;
pub use local_publisher::ChannelPublisher;
pub use memory_blobs::MemoryBlobStore;
pub use push::RecordedPush;
pub use sqlite::SqliteStore;
