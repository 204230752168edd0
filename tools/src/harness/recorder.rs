//! Records a history as JSON lines (`cairn_check::history`), from many
//! client tasks at once: entries go through a bounded channel to one writer
//! thread, so a slow disk slows the clients rather than growing memory.

use cairn_check::history::Entry;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// Entries waiting for the writer at most.
const QUEUE_MAX: usize = 16384;

/// See the module docs. Shared by the workload tasks (`Arc`).
pub struct Recorder {
    tx: mpsc::SyncSender<Entry>,
    start: Instant,
    next_id: AtomicU64,
}

/// The writer thread; `finish` waits for it.
pub struct Writer(std::thread::JoinHandle<std::io::Result<u64>>);

impl Recorder {
    /// Starts writing `path` (truncated).
    pub fn create(path: &Path) -> std::io::Result<(Recorder, Writer)> {
        let file = std::fs::File::create(path)?;
        let (tx, rx) = mpsc::sync_channel::<Entry>(QUEUE_MAX);
        let thread = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                let mut n = 0;
                for entry in rx {
                    serde_json::to_writer(&mut out, &entry)?;
                    out.write_all(b"\n")?;
                    n += 1;
                }
                out.flush()?;
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                Ok(n)
            })?;
        Ok((
            Recorder {
                tx,
                start: Instant::now(),
                next_id: AtomicU64::new(1),
            },
            Writer(thread),
        ))
    }

    /// Microseconds since the run started (one monotonic clock for all).
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// A new operation id.
    pub fn op_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues an entry (waits while the queue is full).
    pub fn record(&self, entry: Entry) {
        // The writer only stops once every Recorder is dropped.
        let _ = self.tx.send(entry);
    }
}

impl Writer {
    /// Waits until every recorded entry is on disk (after the last
    /// `Recorder` was dropped); how many were written.
    pub fn finish(self) -> std::io::Result<u64> {
        self.0
            .join()
            .map_err(|_| std::io::Error::other("the history writer panicked"))?
    }
}
