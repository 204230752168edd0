//! The space quota check, and raising or clearing alarms. The alarms are
//! the cluster's, as etcd's: kept by the meta group (`MetaCommand::Alarm`)
//! and mirrored in each member's [`AlarmView`]; a change runs on the write
//! leader (a follower forwards it). See `crate::api::maintenance` for what
//! etcd does and cairn follows.
//!
//! Data dirs of older cairns kept a member's alarms in a file `alarms` (one
//! `member_id alarm` line each: the id in hex, the type by name, or by
//! number for a type without one): [`adopt_alarm_file`] moves them into the
//! meta group once the member serves, then removes the file.

use super::peers::Route;
use super::Member;
use crate::api::EtcdError;
use crate::raft::alarms::{Alarm, NOSPACE};
use crate::raft::meta::{MetaCommand, MetaReply};
use cairn_proto::etcdserverpb::AlarmType;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// etcd's default `--quota-backend-bytes` (used when the flag is 0).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;
/// Where older cairns kept a member's alarms.
const ALARMS_FILE: &str = "alarms";

impl Member {
    /// The member's store size: every shard's.
    pub fn db_size(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes()).sum()
    }

    /// Raises (`raise`) or clears `alarm` for the whole cluster; whether
    /// that changed anything.
    pub async fn change_alarm(self: &Arc<Self>, alarm: Alarm, raise: bool) -> Result<bool, Status> {
        match self.write_route().await? {
            Route::Here => self.change_alarm_here(alarm, raise).await,
            Route::To(leader) => self.forward_alarm(leader, alarm, raise).await,
        }
    }

    /// [`Member::change_alarm`] on the write leader.
    pub(super) async fn change_alarm_here(
        &self,
        (member, alarm): Alarm,
        raise: bool,
    ) -> Result<bool, Status> {
        let command = MetaCommand::Alarm {
            member,
            alarm,
            raise,
        };
        match self.meta_write(command).await? {
            MetaReply::Done => Ok(true),
            MetaReply::Unchanged => Ok(false),
            other => Err(Status::internal(format!(
                "an alarm change answered {other:?}"
            ))),
        }
    }

    /// The space quota check before a Put or a Txn that puts `cost` bytes,
    /// as etcd's: while NOSPACE is raised (by any member), anything that
    /// puts is refused; a request is also refused (raising NOSPACE for
    /// this member, cluster-wide) when this member's size plus its cost
    /// reaches the quota — a txn without puts too, as long as the store is
    /// that large. DeleteRange is never checked.
    pub async fn check_quota(self: &Arc<Self>, cost: u64) -> Result<(), Status> {
        if cost > 0 && self.alarms.nospace() {
            return Err(EtcdError::NoSpace.status());
        }
        if self.db_size() + cost >= self.quota_bytes {
            let nospace = (self.member_id, NOSPACE);
            if !self.alarms.contains(nospace) {
                // Refused whether or not the alarm could be raised now
                // (the next request over the quota tries again).
                match self.change_alarm(nospace, true).await {
                    Ok(_) => eprintln!(
                        "cairn: NOSPACE alarm raised: {} bytes in use, quota {} \
                         (--quota-backend-bytes); compact, then `etcdctl alarm disarm`",
                        self.db_size(),
                        self.quota_bytes
                    ),
                    Err(e) => eprintln!("cairn: raising the NOSPACE alarm: {}", e.message()),
                }
            }
            return Err(EtcdError::NoSpace.status());
        }
        Ok(())
    }
}

/// Reads an older cairn's alarms file (none if there is none).
fn read_alarm_file(path: &Path) -> Result<BTreeSet<Alarm>, String> {
    let mut alarms = BTreeSet::new();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(alarms),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
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
        alarms.insert(
            parsed.ok_or_else(|| format!("{}: cannot read line {line:?}", path.display()))?,
        );
    }
    Ok(alarms)
}

/// Moves the alarms of an older cairn's file in `dir` into the meta group,
/// then removes the file; tried every second while no write leader
/// answers (at most `tries` times).
pub async fn adopt_alarm_file(
    member: Arc<Member>,
    dir: PathBuf,
    tries: usize,
) -> Result<(), String> {
    let path = dir.join(ALARMS_FILE);
    let alarms = read_alarm_file(&path)?;
    if alarms.is_empty() {
        return match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        };
    }
    let mut last = String::new();
    for _ in 0..tries {
        let mut all = true;
        for alarm in &alarms {
            if let Err(e) = member.change_alarm(*alarm, true).await {
                last = e.message().to_string();
                all = false;
                break;
            }
        }
        if all {
            return std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(format!("keeping the alarms of {}: {last}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_alarms_file_reads_by_name_and_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ALARMS_FILE);
        std::fs::write(&path, "a NOSPACE\n\nff 7\n").unwrap();
        let got = read_alarm_file(&path).unwrap();
        assert_eq!(got, BTreeSet::from([(0xa, NOSPACE), (0xff, 7)]));
        std::fs::write(&path, "zz NOSPACE\n").unwrap();
        assert!(read_alarm_file(&path).unwrap_err().contains("cannot read"));
        assert!(read_alarm_file(&dir.path().join("none"))
            .unwrap()
            .is_empty());
    }
}
