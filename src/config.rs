//! Flags with etcd's names, meanings and defaults; each also read from its
//! `ETCD_<NAME>` environment variable. Bad values are refused at start with a
//! message that names the flag.

use cairn_wal::storage::WalIo;
use clap::Parser;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "cairn",
    version,
    about = "etcd-v3-compatible key-value store (thread-per-core, Raft per shard)"
)]
pub struct Config {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: `<name>.cairn`).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub listen_client_urls: String,
    /// Client URLs this member advertises.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub advertise_client_urls: String,
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    pub listen_peer_urls: String,
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration (`name=peer-url,...`).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// Maximum client request size in bytes.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// Maximum number of operations per txn.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Committed entries of a shard between snapshots; the log behind a
    /// snapshot is purged and the WAL reclaims its segments.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Raise the NOSPACE alarm and refuse puts when the store would reach this
    /// size (0: 2 GiB, as etcd).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// Auto compaction retention: a duration (periodic; a bare number is
    /// hours) or a revision count (revision); "0" disables it.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Disables fsync of the WAL: acknowledged writes are lost on a power
    /// failure. Unsafe: tests and benchmarks only (says so loudly at start).
    #[arg(long, env = "ETCD_UNSAFE_NO_FSYNC")]
    pub unsafe_no_fsync: bool,
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH")]
    pub client_cert_auth: bool,
    /// How logins are proven: `simple` (random tokens every member keeps,
    /// etcd's default) or `jwt,pub-key=<file>,priv-key=<file>,sign-method=<alg>[,ttl=<duration>]`.
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// Seconds a simple token lives past its last use.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// bcrypt cost of password hashes (etcd's bounds: 4 to 31).
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,
    /// The member's certificate for `https://` peer URLs (mutual TLS).
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// The CA that peers' certificates must chain to.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Accepted for etcd's flags: with `https://` peer URLs cairn always
    /// checks peers' certificates.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH")]
    pub peer_client_cert_auth: bool,
    /// The CommonName every peer's certificate must have (https:// peer
    /// URLs); checked at both ends of each peer connection.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// How each shard's WAL writes and syncs (cairn's own): `dsync`
    /// (io_uring writes on O_DSYNC segments: one op per batch), `ring`
    /// (io_uring write, then io_uring fdatasync) or `blocking` (pwrite(2) +
    /// fdatasync(2) on the shard core, as etcd's WAL does).
    #[arg(long, env = "CAIRN_WAL_IO", default_value = "dsync")]
    pub wal_io: WalIo,
    /// Bytes of recent events kept in memory for watchers (cairn's own). A
    /// watcher further behind reads its events from the key histories.
    #[arg(long, env = "CAIRN_WATCH_LOG_BYTES", default_value_t = crate::watch::WATCH_LOG_BYTES_DEFAULT)]
    pub watch_log_bytes: usize,
    /// WAL segment size in bytes (cairn's own; a multiple of 4096, >= 64 KiB).
    #[arg(long, env = "CAIRN_WAL_SEGMENT_BYTES", default_value_t = 64 << 20)]
    pub wal_segment_bytes: u64,
    /// Shard cores (default: online CPUs). Fixed when the data dir is
    /// created; a restart with another count is refused.
    /// (Also read from `ETCD_SHARDS`, deprecated: etcd has no such flag.)
    #[arg(long, env = "CAIRN_SHARDS")]
    pub shards: Option<usize>,
}

impl Config {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name)))
    }

    /// Takes settings from deprecated environment variables that nothing
    /// newer set (`ETCD_SHARDS` → `--shards`); returns a warning for each.
    pub fn apply_deprecated_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(v) = env("ETCD_SHARDS") {
            warnings.push(
                "ETCD_SHARDS is deprecated (etcd has no --shards): use CAIRN_SHARDS".to_string(),
            );
            if self.shards.is_none() {
                match v.trim().parse() {
                    Ok(n) => self.shards = Some(n),
                    Err(_) => warnings.push(format!("ETCD_SHARDS={v:?} is not a number: ignored")),
                }
            }
        }
        warnings
    }

    pub fn shards(&self) -> usize {
        self.shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Checks the flags; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.shards() == 0 || self.shards() > 1024 {
            return Err(format!("--shards: {} is not in 1..=1024", self.shards()));
        }
        self.auto_compaction()?;
        if self.max_txn_ops == 0 {
            return Err("--max-txn-ops: must be at least 1".into());
        }
        if self.snapshot_count == 0 {
            return Err("--snapshot-count: must be at least 1".into());
        }
        if self.wal_segment_bytes < 64 * 1024 || !self.wal_segment_bytes.is_multiple_of(4096) {
            return Err(format!(
                "--wal-segment-bytes: {} is not a multiple of 4096 of at least 64 KiB",
                self.wal_segment_bytes
            ));
        }
        if self.max_request_bytes == 0 {
            return Err("--max-request-bytes: must be at least 1".into());
        }
        let https_clients = self
            .listen_client_urls
            .split(',')
            .any(|u| u.trim().starts_with("https://"));
        if https_clients && (self.cert_file.is_none() || self.key_file.is_none()) {
            return Err("https:// in --listen-client-urls needs --cert-file and --key-file".into());
        }
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(format!(
                "--bcrypt-cost {}: must be between 4 and 31",
                self.bcrypt_cost
            ));
        }
        if self.auth_token_ttl == 0 {
            return Err("--auth-token-ttl must be at least 1 (seconds)".into());
        }
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err("--client-cert-auth needs --trusted-ca-file".into());
        }
        let https = self.initial_advertise_peer_urls.starts_with("https://")
            || self.listen_peer_urls.starts_with("https://");
        if https
            && (self.peer_cert_file.is_none()
                || self.peer_key_file.is_none()
                || self.peer_trusted_ca_file.is_none())
        {
            return Err(
                "https:// peer URLs need --peer-cert-file, --peer-key-file and \
                 --peer-trusted-ca-file"
                    .into(),
            );
        }
        if 5 * self.heartbeat_interval > self.election_timeout {
            return Err(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        if self.heartbeat_interval == 0 || self.election_timeout > 50_000 {
            return Err(format!(
                "--heartbeat-interval must be positive and --election-timeout[{}ms] at most 50000ms",
                self.election_timeout
            ));
        }
        self.initial_voters()?;
        if self.initial_cluster_state != "new" && self.initial_cluster_state != "existing" {
            return Err(format!(
                "--initial-cluster-state: {:?} is not \"new\" or \"existing\"",
                self.initial_cluster_state
            ));
        }
        self.client_addrs()?;
        Ok(())
    }

    /// The members of `--initial-cluster` (id → (name, first peer URL)):
    /// this member alone without one. Each id is computed as this member's
    /// own (see [`Config::member_id`]), and this member must be among them.
    pub fn initial_voters(&self) -> Result<BTreeMap<u64, (String, String)>, String> {
        let Some(cluster) = self.initial_cluster.as_deref() else {
            let url = first_url(&self.initial_advertise_peer_urls);
            return Ok(BTreeMap::from([(
                self.member_id(),
                (self.name.clone(), url),
            )]));
        };
        // etcd's form: name=url,name=url (a name may repeat, one per URL).
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in cluster.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let (name, url) = item
                .split_once('=')
                .ok_or_else(|| format!("--initial-cluster: {item:?} is not name=peer-url"))?;
            by_name
                .entry(name.to_string())
                .or_default()
                .push(url.to_string());
        }
        let many = by_name.len() > 1;
        let mut voters = BTreeMap::new();
        for (name, urls) in by_name {
            let listed = urls.join(",");
            if name == self.name {
                // Every member computes every id from --initial-cluster, so
                // in a cluster this member's entry must be what it
                // advertises (etcd checks the same).
                if many && listed != self.initial_advertise_peer_urls {
                    return Err(format!(
                        "--initial-cluster has {name}={listed} but missing from \
                         --initial-advertise-peer-urls={}",
                        self.initial_advertise_peer_urls
                    ));
                }
                voters.insert(
                    self.member_id(),
                    (name, first_url(&self.initial_advertise_peer_urls)),
                );
                continue;
            }
            let id = stable_id(&[&name, &listed, &self.initial_cluster_token]);
            voters.insert(id, (name, urls[0].clone()));
        }
        if !voters.contains_key(&self.member_id()) {
            return Err(format!(
                "--initial-cluster: has no member named {:?} (--name must name one of its entries)",
                self.name
            ));
        }
        Ok(voters)
    }

    /// The UDP address of `--listen-peer-urls` (its first URL).
    pub fn peer_listen_addr(&self) -> Result<SocketAddr, String> {
        parse_urls("--listen-peer-urls", &self.listen_peer_urls)?
            .into_iter()
            .next()
            .ok_or_else(|| "--listen-peer-urls: no URL".to_string())
    }

    /// `--listen-client-urls`: each socket address, and whether it is TLS
    /// (`https://`).
    pub fn client_listeners(&self) -> Result<Vec<(SocketAddr, bool)>, String> {
        let mut out = Vec::new();
        for u in self
            .listen_client_urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            let tls = u.starts_with("https://");
            for addr in parse_urls("--listen-client-urls", u)? {
                out.push((addr, tls));
            }
        }
        Ok(out)
    }

    /// Socket addresses of `--listen-client-urls`.
    pub fn client_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        parse_urls("--listen-client-urls", &self.listen_client_urls)
    }

    /// The auto-compaction policy, if on.
    pub fn auto_compaction(&self) -> Result<Option<crate::compactor::Policy>, String> {
        crate::compactor::Policy::parse(&self.auto_compaction_mode, &self.auto_compaction_retention)
    }

    /// A stable member id from the name, peer URLs and cluster token.
    pub fn member_id(&self) -> u64 {
        stable_id(&[
            &self.name,
            &self.initial_advertise_peer_urls,
            &self.initial_cluster_token,
        ])
    }

    pub fn cluster_id(&self) -> u64 {
        let cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, self.initial_advertise_peer_urls));
        stable_id(&[&cluster, &self.initial_cluster_token])
    }
}

fn first_url(urls: &str) -> String {
    urls.split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub(crate) fn stable_id(parts: &[&str]) -> u64 {
    let joined = parts.join("\u{0}");
    let lo = crc32fast::hash(joined.as_bytes()) as u64;
    let hi = crc32fast::hash(format!("cairn\u{0}{joined}").as_bytes()) as u64;
    ((hi << 32) | lo).max(1)
}

fn parse_urls(flag: &str, urls: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for u in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let host_port = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"))
            .ok_or_else(|| format!("{flag}: {u:?} is not an http:// or https:// URL"))?
            .trim_end_matches('/');
        let addrs = host_port
            .to_socket_addrs()
            .map_err(|e| format!("{flag}: {u:?}: {e}"))?;
        out.extend(addrs);
    }
    if out.is_empty() {
        return Err(format!("{flag}: no URL given"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("cairn").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_match_etcd() {
        let c = parse(&[]);
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir(), PathBuf::from("default.cairn"));
        assert_eq!(
            c.client_addrs().unwrap(),
            vec!["127.0.0.1:2379".parse().unwrap()]
        );
        assert_eq!(
            (c.max_request_bytes, c.max_txn_ops, c.snapshot_count),
            (1_572_864, 128, 100_000)
        );
        assert_eq!(
            c.shards(),
            std::thread::available_parallelism().unwrap().get(),
            "one shard per online CPU"
        );
        assert_eq!(c.wal_io, WalIo::Dsync);
        assert_eq!(parse(&["--wal-io", "ring"]).wal_io, WalIo::Ring);
        assert_eq!(parse(&["--wal-io", "blocking"]).wal_io, WalIo::Blocking);
        assert_eq!(parse(&["--wal-io", "dsync"]).wal_io, WalIo::Dsync);
        assert!(Config::try_parse_from(["cairn", "--wal-io", "sometimes"]).is_err());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert!(parse(&["--shards", "0"])
            .validate()
            .unwrap_err()
            .contains("--shards"));
        let e = parse(&["--listen-client-urls", "127.0.0.1:2379"])
            .validate()
            .unwrap_err();
        assert!(e.contains("--listen-client-urls"), "{e}");
        let e = parse(&["--initial-cluster-state", "maybe"])
            .validate()
            .unwrap_err();
        assert!(e.contains("--initial-cluster-state"), "{e}");
        let e = parse(&["--listen-client-urls", "https://127.0.0.1:2379"])
            .validate()
            .unwrap_err();
        assert!(e.contains("--cert-file and --key-file"), "{e}");
        let e = parse(&["--client-cert-auth"]).validate().unwrap_err();
        assert!(e.contains("--trusted-ca-file"), "{e}");
        let e = parse(&["--initial-advertise-peer-urls", "https://127.0.0.1:2380"])
            .validate()
            .unwrap_err();
        assert!(e.contains("--peer-cert-file"), "{e}");
        // etcd's rule and message.
        let e = parse(&["--heartbeat-interval", "300"])
            .validate()
            .unwrap_err();
        assert!(
            e.contains("--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"),
            "{e}"
        );
        assert!(
            parse(&["--heartbeat-interval", "50", "--election-timeout", "250"])
                .validate()
                .is_ok()
        );
        // Several members, this one among them.
        let two = [
            "--name",
            "a",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381",
        ];
        assert!(parse(&two).validate().is_ok());
        assert_eq!(parse(&two).initial_voters().unwrap().len(), 2);
        // This member must be one of them.
        let e = parse(&["--initial-cluster", "a=http://127.0.0.1:2380"])
            .validate()
            .unwrap_err();
        assert!(e.contains("has no member named \"default\""), "{e}");
        assert!(
            parse(&["--initial-cluster", "default=http://localhost:2380"])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn etcd_shards_still_works_with_a_warning() {
        let env = |v: &'static str| move |k: &str| (k == "ETCD_SHARDS").then(|| v.to_string());
        let mut c = parse(&[]);
        let w = c.apply_deprecated_env(env("3"));
        assert_eq!(c.shards, Some(3));
        assert!(w[0].contains("CAIRN_SHARDS"), "{w:?}");
        // The flag (or CAIRN_SHARDS) wins.
        let mut c = parse(&["--shards", "2"]);
        c.apply_deprecated_env(env("3"));
        assert_eq!(c.shards, Some(2));
        let mut c = parse(&[]);
        assert!(c.apply_deprecated_env(|_| None).is_empty());
        assert_eq!(c.shards, None);
    }

    #[test]
    fn ids_are_stable_and_differ() {
        let a = parse(&["--name", "a"]);
        let b = parse(&["--name", "b"]);
        assert_eq!(a.member_id(), parse(&["--name", "a"]).member_id());
        assert_ne!(a.member_id(), b.member_id());
    }
}
