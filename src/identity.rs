//! A member's identity, kept in its data dir (`cairn.meta`): written at its
//! first start from the flags, then read back at every start, as etcd keeps
//! its member and cluster ids in its WAL. A restarted member needs no flag
//! changed (and flags that would name another cluster are not taken): its
//! id, its cluster's id, its shard count and the first membership of its
//! Raft groups are the recorded ones.
//!
//! Format (text, one `key=value` a line): `format=2`, `shards=N`,
//! `member=ID`, `cluster=ID` (hex), `token=TOKEN`, `joined=existing` for a
//! member added to an existing cluster, then `voter=ID NAME PEER-URL` for
//! each member of the first membership. Format 1 (`shards=` alone, written by
//! single-member cairn before clusters) is read as a lone member with the
//! flags' ids, and rewritten as format 2.

use crate::config::Config;
use std::collections::BTreeMap;
use std::path::Path;

const FILE: &str = "cairn.meta";

/// See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub shards: usize,
    pub member_id: u64,
    /// 0 until a member that joined an existing cluster has learned it.
    pub cluster_id: u64,
    /// `--initial-cluster-token`: members of other tokens are refused.
    pub token: String,
    /// The first membership: member id → (name, peer URL). A member that
    /// joined an existing cluster (`--initial-cluster-state existing`) lists
    /// itself alone: it learns the membership from the cluster.
    pub voters: BTreeMap<u64, (String, String)>,
    /// It joined an existing cluster (it was added by MemberAdd).
    pub joined: bool,
}

impl Identity {
    /// From the flags, for a first start.
    fn from_flags(cfg: &Config) -> Result<Self, String> {
        if cfg.initial_cluster_state == "existing" {
            let urls: Vec<String> = cfg
                .initial_advertise_peer_urls
                .split(',')
                .map(|u| u.trim().to_string())
                .collect();
            let id = crate::member::membership::added_member_id(&urls, &cfg.initial_cluster_token);
            return Ok(Identity {
                shards: cfg.shards(),
                member_id: id,
                cluster_id: 0,
                token: cfg.initial_cluster_token.clone(),
                voters: BTreeMap::from([(id, (cfg.name.clone(), urls[0].clone()))]),
                joined: true,
            });
        }
        Ok(Identity {
            shards: cfg.shards(),
            member_id: cfg.member_id(),
            cluster_id: cfg.cluster_id(),
            token: cfg.initial_cluster_token.clone(),
            voters: cfg.initial_voters()?,
            joined: false,
        })
    }

    /// A member of a cluster (several members, or one that joined one).
    pub fn clustered(&self) -> bool {
        self.voters.len() > 1 || self.joined
    }

    /// Writes this identity in `dir` (a member that joined, once it
    /// learned its cluster's id).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        write(dir, self)
    }

    fn encode(&self) -> String {
        let mut s = format!(
            "format=2\nshards={}\nmember={:x}\ncluster={:x}\ntoken={}\n",
            self.shards, self.member_id, self.cluster_id, self.token
        );
        if self.joined {
            s.push_str("joined=existing\n");
        }
        for (id, (name, url)) in &self.voters {
            s.push_str(&format!("voter={id:x} {name} {url}\n"));
        }
        s
    }

    fn decode(text: &str, cfg: &Config) -> Result<Self, String> {
        let mut shards = None;
        let (mut member, mut cluster) = (None, None);
        let mut token = cfg.initial_cluster_token.clone();
        let mut joined = false;
        let mut voters = BTreeMap::new();
        let hex = |v: &str| u64::from_str_radix(v.trim(), 16).map_err(|e| format!("{v:?}: {e}"));
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "shards" => {
                    shards = Some(value.trim().parse().map_err(|e| format!("shards: {e}"))?)
                }
                "member" => member = Some(hex(value)?),
                "cluster" => cluster = Some(hex(value)?),
                "token" => token = value.to_string(),
                "joined" => joined = value.trim() == "existing",
                "voter" => {
                    let mut parts = value.splitn(3, ' ');
                    let (Some(id), Some(name), Some(url)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(format!("voter: {value:?} is not 'id name url'"));
                    };
                    voters.insert(hex(id)?, (name.to_string(), url.to_string()));
                }
                _ => {}
            }
        }
        let shards = shards.ok_or("no shards= line")?;
        match (member, cluster) {
            (Some(member_id), Some(cluster_id)) if voters.contains_key(&member_id) => {
                Ok(Identity {
                    shards,
                    member_id,
                    cluster_id,
                    token,
                    voters,
                    joined,
                })
            }
            (None, None) if voters.is_empty() => {
                // Format 1: a lone member, named by its flags.
                let me = cfg.member_id();
                let url = cfg
                    .initial_advertise_peer_urls
                    .split(',')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                Ok(Identity {
                    shards,
                    member_id: me,
                    cluster_id: cfg.cluster_id(),
                    token,
                    voters: BTreeMap::from([(me, (cfg.name.clone(), url))]),
                    joined: false,
                })
            }
            _ => Err("member=, cluster= and this member's voter= lines must all be there".into()),
        }
    }

    /// The identity recorded in `dir` (checked against what the flags ask
    /// that cannot change), or the flags' written there durably on a first
    /// start.
    pub fn load_or_create(dir: &Path, cfg: &Config) -> Result<Self, String> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let id =
                    Self::decode(&text, cfg).map_err(|e| format!("{}: {e}", path.display()))?;
                if let Some(asked) = cfg.shards {
                    if asked != id.shards {
                        return Err(format!(
                            "--shards: the data dir {} was created with {} shards, not {asked}",
                            dir.display(),
                            id.shards
                        ));
                    }
                }
                if id.member_id != cfg.member_id() && id.voters.len() > 1 {
                    eprintln!(
                        "cairn: the data dir {} belongs to member {:x} of cluster {:x}; \
                         --name, --initial-advertise-peer-urls and --initial-cluster* are \
                         taken from it, not from the flags",
                        dir.display(),
                        id.member_id,
                        id.cluster_id
                    );
                }
                if !text.starts_with("format=2") {
                    write(dir, &id)?;
                }
                Ok(id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Self::from_flags(cfg)?;
                write(dir, &id)?;
                Ok(id)
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// Writes `id` as `dir/cairn.meta` durably (temp file, fsync, rename, fsync
/// of the directory).
fn write(dir: &Path, id: &Identity) -> Result<(), String> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::write(&tmp, id.encode()).map_err(|e| err(&tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cfg(args: &[&str]) -> Config {
        let mut all = vec!["cairn"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("flags")
    }

    #[test]
    fn a_restarted_member_keeps_its_identity_whatever_the_flags_say() {
        let dir = tempfile::tempdir().unwrap();
        let first = cfg(&[
            "--name",
            "a",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381,c=http://127.0.0.1:2382",
            "--shards",
            "2",
        ]);
        let id = Identity::load_or_create(dir.path(), &first).unwrap();
        assert_eq!(id.voters.len(), 3);
        assert_eq!(id.member_id, first.member_id());
        // Restarted with other flags: the recorded identity stands.
        let later = cfg(&["--name", "zz", "--initial-cluster-token", "other"]);
        assert_eq!(Identity::load_or_create(dir.path(), &later).unwrap(), id);
        let e = Identity::load_or_create(dir.path(), &cfg(&["--shards", "4"])).unwrap_err();
        assert!(e.contains("created with 2 shards, not 4"), "{e}");
    }

    #[test]
    fn a_format_1_data_dir_is_a_lone_member_and_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "format=1\nshards=3\n").unwrap();
        let flags = cfg(&[]);
        let id = Identity::load_or_create(dir.path(), &flags).unwrap();
        assert_eq!(id.shards, 3);
        assert_eq!(id.member_id, flags.member_id());
        assert_eq!(id.voters.len(), 1);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.starts_with("format=2"), "{text}");
        assert_eq!(Identity::load_or_create(dir.path(), &flags).unwrap(), id);
    }
}
