//! The member's alarms (kept durably in the data dir: `alarms`, one
//! `member_id alarm` line each: the id in hex, the type by name, or by
//! number for a type without one) and the space quota check (see
//! `crate::api::maintenance` for what etcd does and cairn follows).

use super::Member;
use crate::api::EtcdError;
use crate::raft::snapshot_file::write_durably;
use cairn_proto::etcdserverpb::AlarmType;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tonic::Status;

/// etcd's default `--quota-backend-bytes` (used when the flag is 0).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;
const ALARMS_FILE: &str = "alarms";

/// The member's raised alarms, kept durably in the data dir.
pub struct Alarms {
    /// The data dir, which holds the alarms file.
    dir: PathBuf,
    active: Mutex<BTreeSet<(u64, i32)>>,
    /// Whether NOSPACE is raised (read on every put).
    nospace: AtomicBool,
}

impl Alarms {
    /// Loads the alarms kept in `dir` (none if there is no file).
    pub fn open(dir: &std::path::Path) -> Result<Self, String> {
        let path = dir.join(ALARMS_FILE);
        let mut active = BTreeSet::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let mut f = line.split_whitespace();
                    let parsed = (|| {
                        let member = u64::from_str_radix(f.next()?, 16).ok()?;
                        let alarm = f.next()?;
                        let alarm = AlarmType::from_str_name(alarm)
                            .map(|t| t as i32)
                            .or_else(|| alarm.parse().ok())?;
                        Some((member, alarm))
                    })();
                    active.insert(
                        parsed.ok_or_else(|| {
                            format!("{}: cannot read line {line:?}", path.display())
                        })?,
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            nospace: AtomicBool::new(has_nospace(&active)),
            active: Mutex::new(active),
        })
    }

    pub fn nospace(&self) -> bool {
        self.nospace.load(Ordering::Relaxed)
    }

    pub fn list(&self) -> Vec<(u64, i32)> {
        self.active
            .lock()
            .expect("alarms lock")
            .iter()
            .copied()
            .collect()
    }

    /// Applies `f` to the set and keeps the result durably.
    pub fn change(&self, f: impl FnOnce(&mut BTreeSet<(u64, i32)>)) -> Result<(), Status> {
        let mut active = self.active.lock().expect("alarms lock");
        let mut next = active.clone();
        f(&mut next);
        if next == *active {
            return Ok(());
        }
        let text: String = next
            .iter()
            .map(|(m, a)| {
                // A type etcd has no name for (it accepts any) as its number.
                let name = AlarmType::try_from(*a)
                    .map_or_else(|_| a.to_string(), |t| t.as_str_name().to_string());
                format!("{m:x} {name}\n")
            })
            .collect();
        write_durably(&self.dir, ALARMS_FILE, &[text.as_bytes()])
            .map_err(|e| Status::internal(format!("keeping alarms: {e}")))?;
        self.nospace.store(has_nospace(&next), Ordering::Relaxed);
        *active = next;
        Ok(())
    }
}

fn has_nospace(alarms: &BTreeSet<(u64, i32)>) -> bool {
    alarms.iter().any(|(_, a)| *a == AlarmType::Nospace as i32)
}

impl Member {
    /// The member's store size: every shard's.
    pub fn db_size(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes()).sum()
    }

    /// The space quota check before a Put or a Txn that puts `cost` bytes,
    /// as etcd's: while NOSPACE is raised, anything that puts is refused; a
    /// request is also refused (raising NOSPACE) when the size plus its cost
    /// reaches the quota — a txn without puts too, as long as the store is
    /// that large. DeleteRange is never checked.
    pub fn check_quota(&self, cost: u64) -> Result<(), Status> {
        if cost > 0 && self.alarms.nospace() {
            return Err(EtcdError::NoSpace.status());
        }
        if self.db_size() + cost >= self.quota_bytes {
            let id = self.member_id;
            self.alarms.change(|a| {
                a.insert((id, AlarmType::Nospace as i32));
            })?;
            eprintln!(
                "cairn: NOSPACE alarm raised: {} bytes in use, quota {} (--quota-backend-bytes); \
                 compact, then `etcdctl alarm disarm`",
                self.db_size(),
                self.quota_bytes
            );
            return Err(EtcdError::NoSpace.status());
        }
        Ok(())
    }
}
