//! `etcdctl make-mirror` both ways: from a real etcd 3.4 into cairn, and
//! from cairn into etcd, under 1,000 writes (puts, overwrites, deletes) made
//! while it runs: the destination ends equal to the source. make-mirror
//! copies what is there (a Range), then follows a Watch from the revision
//! after and replays each revision's changes as a Txn on the destination.

mod common;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{DeleteRangeRequest, RangeRequest};
use common::Cairn;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WRITES: usize = 1000;
const PREFIX: &str = "m/";

/// The (key, value) pairs under [`PREFIX`].
async fn state(url: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut kv = KvClient::new(common::channel(url).await);
    let r = kv
        .range(RangeRequest {
            key: PREFIX.into(),
            range_end: b"m0".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

/// `etcdctl make-mirror` from `src` to `dst`, stopped by its PID on drop.
struct Mirror(Child);

impl Mirror {
    fn start(src: &str, dst: &str) -> Mirror {
        let child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", src, "make-mirror", "--prefix", PREFIX, dst])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("`etcdctl` not found: run tools/test.sh");
        Mirror(child)
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the child this test started and has not reaped.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn mirrors(src: &str, dst: &str) {
    let rt = common::rt();
    let mut kv = rt.block_on(async { KvClient::new(common::channel(src).await) });
    // Some keys before the mirror starts (copied by its first Range).
    rt.block_on(async {
        for i in 0..50 {
            common::put(&mut kv, format!("{PREFIX}{i:03}"), format!("before-{i}")).await;
        }
    });
    let mut mirror = Mirror::start(src, dst);
    // Give it its first Range and Watch; writes made before its watch starts
    // are in its Range or its Watch either way.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        mirror.0.try_wait().expect("wait").is_none(),
        "make-mirror exited at once"
    );
    rt.block_on(async {
        for i in 0..WRITES {
            let key = format!("{PREFIX}{:03}", i % 150);
            if i % 10 == 9 {
                kv.delete_range(DeleteRangeRequest {
                    key: key.into(),
                    ..Default::default()
                })
                .await
                .expect("delete");
            } else {
                common::put(&mut kv, key, format!("w{i}")).await;
            }
        }
    });
    let want = rt.block_on(state(src));
    assert!(want.len() > 100, "{} keys", want.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = rt.block_on(state(dst));
        if got == want {
            break;
        }
        if let Some(exit) = mirror.0.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = mirror.0.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("make-mirror exited ({exit}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "the destination did not catch up: {} of {} keys equal",
            got.iter().filter(|kv| want.contains(kv)).count(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn make_mirror_from_etcd_into_cairn() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cairn = Cairn::start(base.path(), 2);
    let etcd = common::etcd();
    mirrors(&etcd.url, &cairn.url());
}

#[test]
fn make_mirror_from_cairn_into_etcd() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cairn = Cairn::start(base.path(), 2);
    let etcd = common::etcd();
    mirrors(&cairn.url(), &etcd.url);
}
