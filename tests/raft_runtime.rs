//! openraft-rt's runtime conformance suite on the glommio adapter, plus the
//! behaviours openraft relies on that the suite does not pin down.

use cairn::raft::runtime::JoinError;
use cairn::raft::GlommioRuntime;
use openraft_rt::testing::Suite;
use openraft_rt::AsyncRuntime;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

#[test]
fn glommio_runtime_passes_openraft_rt_suite() {
    Suite::<GlommioRuntime>::test_all();
}

#[test]
fn dropping_a_join_handle_detaches_the_task() {
    let mut rt = GlommioRuntime::new(1);
    let ran = rt.block_on(async {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        drop(GlommioRuntime::spawn(async move {
            GlommioRuntime::sleep(Duration::from_millis(5)).await;
            r.set(true);
        }));
        GlommioRuntime::sleep(Duration::from_millis(50)).await;
        ran.get()
    });
    assert!(ran, "a dropped handle must not cancel the task");
}

#[test]
fn a_panicking_task_reports_panicked() {
    let mut rt = GlommioRuntime::new(1);
    let err = rt.block_on(async {
        GlommioRuntime::spawn(async { panic!("boom") })
            .await
            .unwrap_err()
    });
    assert_eq!(err, JoinError::Panicked);
    assert!(GlommioRuntime::is_panic(&err));
}
