//! Three real cairn processes, each in its own Linux network namespace
//! (`cairn_tools::harness::netns`: a veth link per pair, each member's peer
//! and client URLs on its namespace's home address), driven with the real
//! `etcdctl` run inside the namespaces. The write leader is isolated (the
//! veths of its links taken down): the other two elect a new leader
//! and keep taking writes; the isolated member acknowledges no write and no
//! linearizable read, though it still answers serializable reads from what
//! it has; once healed, every member has what the majority wrote and HashKV
//! is equal on all three at the same revision.
//!
//! Needs root and `ip` (iproute2): without them the test prints why and
//! passes, unless `CAIRN_NETNS_TESTS=1` (`tools/test.sh`), where it fails.
//! Members are stopped by PID (SIGTERM, then SIGKILL) however the test ends;
//! on a failure their log tails are printed and the directory is kept.

use cairn_tools::harness::netns::{self, Net};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

const MEMBERS: usize = 3;
/// Bound on the wait for the members to start and agree on a leader.
const START: Duration = Duration::from_secs(60);
/// Bound on each "it must happen eventually" (a new leader, a write
/// accepted, convergence after healing).
const EVENTUALLY: Duration = Duration::from_secs(30);
/// Between two attempts of a polling loop.
const POLL: Duration = Duration::from_millis(200);
/// Bound on the attempts of one polling loop (time bounds it first).
const ATTEMPTS_MAX: usize = 1000;
/// etcdctl's `--dial-timeout` and `--command-timeout`.
const ETCDCTL_TIMEOUT: &str = "3s";
/// Bound on one etcdctl process (its own timeouts end it well before).
const ETCDCTL_PROCESS: Duration = Duration::from_secs(30);
/// How long a member has to stop after SIGTERM before it is SIGKILLed.
const STOP: Duration = Duration::from_secs(15);
/// Lines of each member's log printed on a failure.
const LOG_TAIL_LINES: usize = 40;

/// Whether to run: panics if the namespaces are required but unavailable
/// (as `netns::tests` decides).
fn enabled() -> bool {
    match netns::available() {
        Ok(()) => true,
        Err(why) if std::env::var("CAIRN_NETNS_TESTS").as_deref() == Ok("1") => {
            panic!("CAIRN_NETNS_TESTS=1 but network namespaces are unavailable: {why}")
        }
        Err(why) => {
            eprintln!(
                "skipping network namespace test: {why} (CAIRN_NETNS_TESTS=1 makes this fail)"
            );
            false
        }
    }
}

/// The members, their namespaces and their directory. Dropped (the test
/// ended or panicked): members stopped by PID, on a panic their log tails
/// printed and the directory kept; then the namespaces are deleted.
struct Cluster {
    members: Vec<Option<Child>>,
    logs: Vec<PathBuf>,
    dir: Option<tempfile::TempDir>,
    // Last: dropped after the members are stopped.
    net: Net,
}

impl Cluster {
    fn start() -> Cluster {
        let net = Net::create(MEMBERS).expect("namespaces");
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let peers: Vec<String> = (0..MEMBERS)
            .map(|i| format!("http://{}:2380", net.home(i)))
            .collect();
        let initial: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}={}", peers[i])).collect();
        let path = dir.path().to_path_buf();
        let mut c = Cluster {
            members: Vec::new(),
            logs: Vec::new(),
            dir: Some(dir),
            net,
        };
        for (i, peer) in peers.iter().enumerate() {
            let log = path.join(format!("m{i}.log"));
            let out = std::fs::File::create(&log).expect("log file");
            let err = out.try_clone().expect("log file");
            let home_client = format!("http://{}:2379", c.net.home(i));
            // `ip netns exec` execs cairn: the child's PID is the member's.
            let child = c
                .net
                .exec(i, env!("CARGO_BIN_EXE_cairn"))
                .env("CAIRN_LOG", "info,openraft=error")
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(path.join(format!("m{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:2379,{home_client}"),
                    "--advertise-client-urls",
                    &home_client,
                ])
                .args(["--listen-peer-urls", peer])
                .args(["--initial-advertise-peer-urls", peer])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "cairn-netns"])
                .args(["--shards", "2", "--wal-segment-bytes", "1048576"])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("starting cairn in its namespace");
            c.members.push(Some(child));
            c.logs.push(log);
        }
        c
    }

    /// Panics if a member has exited (it must run until the test stops it).
    fn check_running(&mut self) {
        for (i, slot) in self.members.iter_mut().enumerate() {
            if let Some(status) = slot.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                // Reaped: its PID is no longer ours to signal.
                *slot = None;
                panic!("member m{i} exited: {status}");
            }
        }
    }

    /// etcdctl in namespace `i` against `endpoints`, bounded.
    fn etcdctl(&self, i: usize, endpoints: &str, args: &[&str]) -> Output {
        let mut child = self
            .net
            .exec(i, "etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoints])
            .args(["--dial-timeout", ETCDCTL_TIMEOUT])
            .args(["--command-timeout", ETCDCTL_TIMEOUT])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("`etcdctl` not found: run tools/test.sh, which installs Debian's etcd-client");
        let deadline = Instant::now() + ETCDCTL_PROCESS;
        while child.try_wait().expect("wait for etcdctl").is_none() {
            if Instant::now() > deadline {
                // Our own child, by its handle (its output is small: the
                // pipes cannot fill while it runs).
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("etcdctl output")
    }

    /// etcdctl in namespace `i` against its own member.
    fn local(&self, i: usize, args: &[&str]) -> Output {
        self.etcdctl(i, "127.0.0.1:2379", args)
    }

    /// A put through member `i`: the revision it was acknowledged at.
    fn put(&self, i: usize, key: &str, value: &str) -> Result<i64, String> {
        let out = self.local(i, &["put", key, value, "-w", "json"]);
        let json = success(&out)?;
        json["header"]["revision"]
            .as_i64()
            .ok_or_else(|| format!("no revision in {json}"))
    }

    /// A get of `key` on member `i` (linearizable unless `serializable`):
    /// its value, or None if there is no such key.
    fn get(&self, i: usize, key: &str, serializable: bool) -> Result<Option<String>, String> {
        let consistency = if serializable {
            "--consistency=s"
        } else {
            "--consistency=l"
        };
        let out = self.local(i, &["get", key, consistency, "--print-value-only"]);
        let text = success_text(&out)?;
        Ok(text.lines().next().map(str::to_string))
    }

    /// Member `i`'s (id, the leader it names) by Status; leader 0 if none.
    fn status(&self, i: usize) -> Result<(u64, u64), String> {
        let out = self.local(i, &["endpoint", "status", "-w", "json"]);
        let json = success(&out)?;
        let row = &json[0]["Status"];
        let id = row["header"]["member_id"]
            .as_u64()
            .ok_or_else(|| format!("no member_id in {json}"))?;
        Ok((id, row["leader"].as_u64().unwrap_or(0)))
    }

    /// The member (of `among`) that every member of `among` names as the
    /// write leader, asked over the home addresses from `among[0]`'s
    /// namespace; within `limit`.
    fn agreed_leader(&mut self, among: &[usize], ids: &[u64], limit: Duration) -> usize {
        let endpoints: Vec<String> = among
            .iter()
            .map(|&i| format!("{}:2379", self.net.home(i)))
            .collect();
        let endpoints = endpoints.join(",");
        let mut last = String::new();
        let deadline = Instant::now() + limit;
        for _ in 0..ATTEMPTS_MAX {
            self.check_running();
            let out = self.etcdctl(among[0], &endpoints, &["endpoint", "status", "-w", "json"]);
            match success(&out) {
                Ok(json) => {
                    let rows = json.as_array().cloned().unwrap_or_default();
                    let leaders: Vec<u64> = rows
                        .iter()
                        .map(|r| r["Status"]["leader"].as_u64().unwrap_or(0))
                        .collect();
                    if rows.len() == among.len() && leaders.iter().all(|l| *l == leaders[0]) {
                        if let Some(&i) = among.iter().find(|&&i| ids[i] == leaders[0]) {
                            return i;
                        }
                    }
                    last = json.to_string();
                }
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        panic!("members {among:?} did not agree on a leader within {limit:?}: {last}");
    }

    /// Retries `f` until it returns Ok, within `limit`.
    fn eventually<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&Cluster) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        for _ in 0..ATTEMPTS_MAX {
            self.check_running();
            match f(self) {
                Ok(v) => return v,
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        panic!("{what}: not within {limit:?}: {last}");
    }

    /// SIGTERM every member, SIGKILL those still running after STOP; the
    /// members that had to be killed.
    fn stop_all(&mut self) -> Vec<usize> {
        for m in self.members.iter().flatten() {
            // SAFETY: kill(2) on the PID of a child this test started and
            // has not reaped yet (a reaped one leaves its slot empty).
            unsafe {
                libc::kill(m.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP;
        let mut killed = Vec::new();
        for (i, slot) in self.members.iter_mut().enumerate() {
            let Some(mut child) = slot.take() else {
                continue;
            };
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    // SAFETY: as above; not reaped yet.
                    unsafe {
                        libc::kill(child.id() as i32, libc::SIGKILL);
                    }
                    let _ = child.wait();
                    killed.push(i);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        killed
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.logs[i]).unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let killed = self.stop_all();
        if std::thread::panicking() {
            for i in 0..self.logs.len() {
                let log = self.log(i);
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                eprintln!(
                    "--- m{i} (namespace {}, home {}){}: last {} lines of {}:\n{}",
                    self.net.name(i),
                    self.net.home(i),
                    if killed.contains(&i) {
                        ", SIGKILLed after SIGTERM"
                    } else {
                        ""
                    },
                    tail.len(),
                    self.logs[i].display(),
                    tail.join("\n")
                );
            }
            if let Some(dir) = self.dir.take() {
                eprintln!("the members' directory is kept: {}", dir.keep().display());
            }
        }
    }
}

/// etcdctl's stdout if it succeeded, else why not.
fn success_text(out: &Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "etcdctl {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// etcdctl's stdout parsed as JSON if it succeeded, else why not.
fn success(out: &Output) -> Result<Value, String> {
    let text = success_text(out)?;
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// etcdctl `args` through member `i`, which is isolated, must fail (exit
/// non-zero); prints how.
fn refused(c: &Cluster, i: usize, args: &[&str], what: &str) {
    let started = Instant::now();
    let out = c.local(i, args);
    assert!(
        !out.status.success(),
        "the isolated m{i} answered {what}: {}",
        said(&out)
    );
    eprintln!(
        "the isolated m{i} refused {what} after {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
}

/// What etcdctl said, for an assertion's message.
fn said(out: &Output) -> String {
    format!(
        "{}: stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_isolated_write_leader_is_replaced_and_acknowledges_nothing_until_healed() {
    if !enabled() {
        return;
    }
    let began = Instant::now();
    let mut c = Cluster::start();
    let all: Vec<usize> = (0..MEMBERS).collect();
    // Every member answers Status; their ids name the leader.
    let ids: Vec<u64> = all
        .iter()
        .map(|&i| {
            c.eventually(&format!("m{i} answers Status"), START, |c| c.status(i))
                .0
        })
        .collect();
    let leader = c.agreed_leader(&all, &ids, START);
    eprintln!("started; m{leader} leads ({:?})", began.elapsed());

    // Writes through every member, read back from every member.
    let keys: Vec<String> = (0..2 * MEMBERS).map(|k| format!("k{k}")).collect();
    for (k, key) in keys.iter().enumerate() {
        let value = format!("v{k}");
        c.eventually(
            &format!("put {key} through m{}", k % MEMBERS),
            EVENTUALLY,
            |c| c.put(k % MEMBERS, key, &value),
        );
    }
    for &i in &all {
        for (k, key) in keys.iter().enumerate() {
            let v = c.eventually(
                &format!("linearizable get {key} on m{i}"),
                EVENTUALLY,
                |c| c.get(i, key, false),
            );
            assert_eq!(v, Some(format!("v{k}")), "{key} on m{i}");
        }
    }

    eprintln!("writes read back from every member ({:?})", began.elapsed());

    // Isolate the write leader (found again: it may have moved).
    let old = c.agreed_leader(&all, &ids, EVENTUALLY);
    let majority: Vec<usize> = all.iter().copied().filter(|&i| i != old).collect();
    c.net.isolate(old).expect("isolate the leader");
    let isolated_at = Instant::now();
    eprintln!("m{old} isolated ({:?})", began.elapsed());

    // At once, while it may still think it leads: no write acknowledged.
    refused(&c, old, &["put", "isolated-1", "x"], "a put at once");

    // The majority elects another leader and takes writes, through both.
    let during = c.eventually("a put through the majority", EVENTUALLY, |c| {
        c.put(majority[0], "during", "1")
    });
    eprintln!(
        "the majority acknowledged a write {:?} after the isolation",
        isolated_at.elapsed()
    );
    c.eventually("a put through the other majority member", EVENTUALLY, |c| {
        c.put(majority[1], "during-2", "1")
    });
    let new = c.agreed_leader(&majority, &ids, EVENTUALLY);
    assert_ne!(new, old, "the majority elected a new leader");
    eprintln!("m{new} leads the majority");

    // The isolated member: no write, no linearizable read; serializable
    // reads answer from its own state, which has nothing written since.
    refused(&c, old, &["put", "isolated-2", "x"], "a put");
    refused(&c, old, &["del", "k0"], "a delete");
    for key in ["during", "k0"] {
        let args = ["get", key, "--consistency=l"];
        refused(&c, old, &args, &format!("a linearizable get of {key}"));
    }
    assert_eq!(
        c.get(old, "k0", true),
        Ok(Some("v0".to_string())),
        "a serializable get on the isolated m{old}"
    );
    assert_eq!(
        c.get(old, "during", true),
        Ok(None),
        "the isolated m{old} has a write made after it was cut off"
    );

    // Printed, not checked: etcd's isolated leader steps down (CheckQuorum)
    // and names none.
    let (_, named) = c.status(old).unwrap_or_default();
    let named = ids.iter().position(|id| *id == named);
    eprintln!("the isolated m{old} names as leader: {named:?} (by index)");

    // Healed: everything converges.
    c.net.heal_all().expect("heal");
    eprintln!("healed after {:?}", isolated_at.elapsed());
    for &i in &all {
        c.eventually(
            &format!("m{i} has the partition's writes"),
            EVENTUALLY,
            |c| match (c.get(i, "during", true)?, c.get(i, "during-2", true)?) {
                (Some(a), Some(b)) if a == "1" && b == "1" => Ok(()),
                other => Err(format!("not yet: {other:?}")),
            },
        );
    }
    eprintln!("converged ({:?})", began.elapsed());
    // A write through the formerly isolated member, then a revision every
    // member has applied: HashKV at it is the same on all three.
    let last = c.eventually(
        &format!("a put through m{old} after healing"),
        EVENTUALLY,
        |c| c.put(old, "after-heal", "1"),
    );
    assert!(last > during, "revision {last} after {during}");
    for &i in &all {
        c.eventually(&format!("m{i} applied revision {last}"), EVENTUALLY, |c| {
            c.get(i, "after-heal", true)?
                .ok_or_else(|| "not yet".to_string())
        });
    }
    let rev = last.to_string();
    let hashes: Vec<u64> = all
        .iter()
        .map(|&i| {
            c.eventually(&format!("HashKV at {rev} on m{i}"), EVENTUALLY, |c| {
                let json =
                    success(&c.local(i, &["endpoint", "hashkv", "--rev", &rev, "-w", "json"]))?;
                json[0]["HashKV"]["hash"]
                    .as_u64()
                    .ok_or_else(|| format!("no hash in {json}"))
            })
        })
        .collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at {rev} differs: {hashes:?}"
    );
    eprintln!("HashKV at {rev} on every member: {}", hashes[0]);
    for &i in &all {
        let v = c.eventually(
            &format!("linearizable get on m{i} after healing"),
            EVENTUALLY,
            |c| c.get(i, "during", false),
        );
        assert_eq!(v.as_deref(), Some("1"), "during on m{i}");
    }
    // The puts the isolated member did not acknowledge may or may not take
    // effect (as with etcd, a client's timeout does not withdraw a request).
    for key in ["isolated-1", "isolated-2"] {
        let v = c.get(old, key, false);
        eprintln!("{key} (never acknowledged) after healing: {v:?}");
    }
    let after = c.agreed_leader(&all, &ids, EVENTUALLY);
    eprintln!("m{after} leads after healing; {:?} in all", began.elapsed());

    // Every member stops on SIGTERM, and none panicked.
    let killed = c.stop_all();
    assert!(killed.is_empty(), "members {killed:?} ignored SIGTERM");
    for &i in &all {
        let log = c.log(i);
        assert!(!log.contains("panicked"), "m{i} panicked:\n{log}");
    }
}
