//! The WAL's upkeep and configuration on a shard core.

use cairn_wal::storage::DmaStorage;
use cairn_wal::Wal;
use std::rc::Rc;
use std::time::Duration;

/// What a round of WAL upkeep found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upkeep {
    /// The next segment is ready.
    Ready,
    /// No room for the next segment: nothing was written; it is tried again.
    NoSpace(String),
    /// The WAL failed (latched); upkeep stops.
    Failed(String),
}

/// Runs the WAL's upkeep off the write path every 50 ms (reclaim segments,
/// prepare the next one), telling `report` each round's outcome, until the
/// WAL fails.
pub fn spawn_wal_upkeep(wal: Rc<Wal<DmaStorage>>, report: impl Fn(Upkeep) + 'static) {
    glommio::spawn_local(async move {
        loop {
            match wal.maintain().await {
                Ok(()) => report(Upkeep::Ready),
                Err(e @ cairn_wal::WalError::NoSpace { .. }) => {
                    report(Upkeep::NoSpace(e.to_string()))
                }
                Err(e) => {
                    report(Upkeep::Failed(e.to_string()));
                    return;
                }
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    })
    .detach();
}

/// The WAL configuration of a shard with `segment_bytes` segments.
pub fn wal_config(segment_bytes: u64) -> cairn_wal::Config {
    cairn_wal::Config {
        segment_bytes,
        batch_bytes_max: (segment_bytes as usize / 4).min(cairn_wal::DMA_BATCH_BYTES_MAX),
        ..cairn_wal::Config::default()
    }
}
