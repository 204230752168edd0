//! Members in one process over the in-memory channel transport
//! (`cairn::transport::channel`): whole cairn members (`cairn::server::start`:
//! shard cores, Raft groups, sequencer, gRPC front on their own loopback
//! ports) whose peer traffic the test controls exactly and cheaply.
//!
//! One cluster at a time per test binary: each member's shard cores lock
//! io_uring buffers (1 MiB each), and RLIMIT_MEMLOCK is 8 MiB here.

use cairn::config::Config;
use cairn::server::{start, Peering, Running};
use cairn::transport::channel::ChannelNet;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use clap::Parser;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

pub const MEMBERS: usize = 3;
/// Generous for a shared 2-core machine; every wait below is bounded by it.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Runs `f` until it answers Ok (as etcd's clients retry while leaders
/// change), within [`SETTLE`].
pub fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, tonic::Status>) -> T {
    let deadline = Instant::now() + SETTLE;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

pub struct Cluster {
    pub net: ChannelNet,
    pub cfgs: Vec<Config>,
    pub members: Vec<Option<Running>>,
    /// For the test's own clients.
    pub rt: tokio::runtime::Runtime,
    /// Flags every member gets.
    extra: Vec<String>,
    ids: Vec<u64>,
    _dir: tempfile::TempDir,
    _one: MutexGuard<'static, ()>,
}

/// Member `i`'s flags: ports (client, peer), `--initial-cluster`, its state.
fn member_config(
    dir: &std::path::Path,
    i: usize,
    ports: (u16, u16),
    initial: &str,
    state: &str,
    extra: &[String],
) -> Config {
    let data = dir.join(format!("m{i}"));
    let url = format!("http://127.0.0.1:{}", ports.0);
    let peer_url = format!("http://127.0.0.1:{}", ports.1);
    let mut args: Vec<String> = [
        "cairn",
        "--name",
        &format!("m{i}"),
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--listen-client-urls",
        &url,
        "--advertise-client-urls",
        &url,
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster",
        initial,
        "--initial-cluster-state",
        state,
        "--wal-segment-bytes",
        "1048576",
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    Config::try_parse_from(args).expect("flags")
}

impl Cluster {
    /// Starts three members with `--shards 2` and `extra` flags, on a net
    /// seeded with `seed`.
    pub fn start(seed: u64, extra: &[&str]) -> Self {
        Self::start_with(seed, 2, extra)
    }

    /// Starts three members with `shards` shards each.
    pub fn start_with(seed: u64, shards: usize, extra: &[&str]) -> Self {
        let one = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..MEMBERS)
            .map(|_| {
                (
                    cairn_tools::ports::free_port(),
                    cairn_tools::ports::free_port(),
                )
            })
            .collect();
        let initial: Vec<String> = (0..MEMBERS)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", ports[i].1))
            .collect();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.extend(["--shards".to_string(), shards.to_string()]);
        let cfgs: Vec<Config> = (0..MEMBERS)
            .map(|i| member_config(dir.path(), i, ports[i], &initial.join(","), "new", &extra))
            .collect();
        let net = ChannelNet::new(seed);
        let members: Vec<Option<Running>> = cfgs
            .iter()
            .map(|c| Some(start(c, Peering::Channel(net.clone())).expect("member starts")))
            .collect();
        let ids = members
            .iter()
            .map(|m| m.as_ref().expect("started").member.member_id)
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("client runtime");
        Cluster {
            net,
            cfgs,
            members,
            rt,
            extra,
            ids,
            _dir: dir,
            _one: one,
        }
    }

    /// Adds a member (MemberAdd through member `via`, as a learner or a
    /// voter) and starts it with `--initial-cluster-state existing`.
    pub fn add_member(&mut self, via: usize, learner: bool) -> usize {
        use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
        let i = self.cfgs.len();
        let ports = (
            cairn_tools::ports::free_port(),
            cairn_tools::ports::free_port(),
        );
        let peer_url = format!("http://127.0.0.1:{}", ports.1);
        let url = self.url(via);
        let urls = vec![peer_url.clone()];
        let deadline = Instant::now() + SETTLE;
        loop {
            let added = self.rt.block_on(async {
                let mut c = ClusterClient::connect(url.clone()).await?;
                c.member_add(pb::MemberAddRequest {
                    peer_ur_ls: urls.clone(),
                    is_learner: learner,
                })
                .await
                .map_err(|e| e.into())
                .map(|_| ())
            });
            match added {
                Ok(()) => break,
                Err::<(), Box<dyn std::error::Error>>(e) => {
                    assert!(Instant::now() < deadline, "member add: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let mut initial: Vec<String> = (0..i)
            .map(|j| format!("m{j}={}", self.cfgs[j].initial_advertise_peer_urls))
            .collect();
        initial.push(format!("m{i}={peer_url}"));
        let dir = self._dir.path().to_path_buf();
        let cfg = member_config(&dir, i, ports, &initial.join(","), "existing", &self.extra);
        let running = start(&cfg, Peering::Channel(self.net.clone())).expect("joins");
        self.ids.push(running.member.member_id);
        self.members.push(Some(running));
        self.cfgs.push(cfg);
        i
    }

    /// Member `i`'s id as the cluster knows it.
    pub fn member_id(&self, i: usize) -> u64 {
        self.ids[i]
    }

    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.cfgs[i].client_addrs().expect("addr")[0])
    }

    pub fn id(&self, i: usize) -> u64 {
        self.member_id(i)
    }

    /// The member that stamps (waits for one, among those running and
    /// not in `except`).
    pub fn leader(&self, except: &[usize]) -> usize {
        let deadline = Instant::now() + SETTLE;
        loop {
            let leaders: Vec<usize> = (0..self.members.len())
                .filter(|i| !except.contains(i))
                .filter(|i| {
                    self.members[*i]
                        .as_ref()
                        .is_some_and(|m| m.member.seq.leading())
                })
                .collect();
            if let [one] = leaders[..] {
                return one;
            }
            assert!(
                Instant::now() < deadline,
                "no single write leader within {SETTLE:?}: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self, i: usize) {
        let m = self.members[i].take().expect("running");
        m.stop(None).expect("clean stop");
    }

    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].is_none());
        self.members[i] =
            Some(start(&self.cfgs[i], Peering::Channel(self.net.clone())).expect("restarts"));
    }

    pub fn put(&self, i: usize, key: &str, value: &str) -> Result<i64, tonic::Status> {
        let url = self.url(i);
        let (key, value) = (key.as_bytes().to_vec(), value.as_bytes().to_vec());
        self.rt.block_on(async move {
            let mut kv = KvClient::connect(url)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                kv.put(pb::PutRequest {
                    key,
                    value,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("client timeout"))??;
            Ok(r.into_inner().header.expect("header").revision)
        })
    }

    /// `key`'s value on member `i` (serializable: its own state).
    pub fn get(
        &self,
        i: usize,
        key: &str,
        serializable: bool,
    ) -> Result<Option<String>, tonic::Status> {
        let url = self.url(i);
        let key = key.as_bytes().to_vec();
        self.rt.block_on(async move {
            let mut kv = KvClient::connect(url)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                kv.range(pb::RangeRequest {
                    key,
                    serializable,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("client timeout"))??;
            Ok(r.into_inner()
                .kvs
                .first()
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
        })
    }

    /// Member `i`'s HashKV at `revision`, once its C reached it.
    pub fn hash(&self, i: usize, revision: i64) -> u32 {
        let m = self.members[i].as_ref().expect("running");
        let deadline = Instant::now() + SETTLE;
        while m.member.seq.committed() < revision {
            assert!(
                Instant::now() < deadline,
                "member {i} never reached {revision}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let url = self.url(i);
        self.rt.block_on(async move {
            let mut mt = MaintenanceClient::connect(url).await.expect("connect");
            mt.hash_kv(pb::HashKvRequest { revision })
                .await
                .expect("hash")
                .into_inner()
                .hash
        })
    }

    /// Retries `put` on member `i` until it is acknowledged.
    pub fn put_until_acked(&self, i: usize, key: &str, value: &str) -> i64 {
        let deadline = Instant::now() + SETTLE;
        loop {
            match self.put(i, key, value) {
                Ok(rev) => return rev,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "put {key} never acknowledged: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// A linearizable read of `key` through member `i`, retried (as etcd's
    /// clients do) while the cluster changes leaders.
    pub fn read(&self, i: usize, key: &str) -> Option<String> {
        let deadline = Instant::now() + SETTLE;
        loop {
            match self.get(i, key, false) {
                Ok(v) => return v,
                Err(e) => {
                    assert!(Instant::now() < deadline, "read {key} never answered: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Waits until member `i` serves `key` = `value` from its own state.
    pub fn converges(&self, i: usize, key: &str, value: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Ok(Some(v)) = self.get(i, key, true) {
                if v == value {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "member {i} never showed {key}={value}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.members.iter_mut().filter_map(Option::take) {
            let _ = m.stop(None);
        }
    }
}
