//! Push for local runs: simulated devices poll, so a push is only counted.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::domain::Device;
use crate::ports::{Push, StoreResult};

/// Counts pushes instead of sending them to APNs.
#[derive(Debug, Default)]
pub struct RecordedPush {
    sent: AtomicU64,
}

impl RecordedPush {
    /// Pushes requested so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Push for RecordedPush {
    async fn push(&self, devices: &[Device]) -> StoreResult<()> {
        let with_token = devices.iter().filter(|d| d.push_token.is_some()).count();
        self.sent.fetch_add(with_token as u64, Ordering::Relaxed);
        tracing::debug!(count = with_token, "push recorded");
        Ok(())
    }
}
