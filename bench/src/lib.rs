//! Criterion suites live in `benches/`; this crate holds what they share.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// The jobs a [`JobThread`] receives, each with where to send the time it took.
pub type Jobs<J> = mpsc::Receiver<(J, mpsc::Sender<Duration>)>;

/// A glommio executor thread that owns a temp dir and runs the jobs sent to
/// it one at a time (a benchmark's WAL or Raft group lives on it between
/// criterion's samples).
pub struct JobThread<J> {
    jobs: Option<mpsc::Sender<(J, mpsc::Sender<Duration>)>>,
    handle: Option<glommio::ExecutorJoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl<J: Send + 'static> JobThread<J> {
    /// Starts the executor (`io_memory` bytes of DMA memory) with a new
    /// temp dir under `base`; `body` gets the dir and the jobs, and must
    /// answer each job until the jobs end.
    pub fn start<F, Fut>(base: &Path, io_memory: usize, body: F) -> Self
    where
        F: FnOnce(PathBuf, Jobs<J>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let dir = tempfile::tempdir_in(base).expect("temp dir");
        let path = dir.path().to_path_buf();
        let (tx, rx) = mpsc::channel();
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(io_memory)
            .spawn(move || body(path, rx))
            .expect("glommio executor");
        Self {
            jobs: Some(tx),
            handle: Some(handle),
            _dir: dir,
        }
    }

    /// Runs `job` and returns the time it took.
    pub fn run(&self, job: J) -> Duration {
        let (done, wait) = mpsc::channel();
        self.jobs
            .as_ref()
            .expect("running")
            .send((job, done))
            .expect("executor thread alive");
        wait.recv().expect("job finished")
    }
}

impl<J> Drop for JobThread<J> {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
