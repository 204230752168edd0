//! Shared test helpers: a reference model of the WAL's per-group state.
#![allow(dead_code)]

use cairn_wal::storage::Storage;
use cairn_wal::{Config, Wal};
use std::collections::BTreeMap;

/// Small segments and batches so tests rotate, recycle and tear often.
pub fn small_config() -> Config {
    Config {
        segment_bytes: 32 * 1024,
        batch_bytes_max: 8 * 1024,
        spare_segments_max: 2,
    }
}

/// One group's state in the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelGroup {
    pub entries: BTreeMap<u64, Vec<u8>>,
    pub next_index: Option<u64>,
    pub purged: Option<(u64, Vec<u8>)>,
    pub meta: BTreeMap<u64, Vec<u8>>,
}

/// A logical operation, as the model applies it.
#[derive(Clone, Debug)]
pub enum Op {
    Entry {
        group: u64,
        index: u64,
        payload: Vec<u8>,
    },
    Truncate {
        group: u64,
        index: u64,
    },
    Purge {
        group: u64,
        index: u64,
        meta: Vec<u8>,
    },
    Meta {
        group: u64,
        key: u64,
        value: Vec<u8>,
    },
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub groups: BTreeMap<u64, ModelGroup>,
}

impl Model {
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Entry {
                group,
                index,
                payload,
            } => {
                let g = self.groups.entry(*group).or_default();
                g.entries.insert(*index, payload.clone());
                g.next_index = Some(index + 1);
            }
            Op::Truncate { group, index } => {
                let g = self.groups.entry(*group).or_default();
                g.entries.retain(|i, _| i < index);
                g.next_index = Some(*index);
            }
            Op::Purge { group, index, meta } => {
                let g = self.groups.entry(*group).or_default();
                g.entries.retain(|i, _| i > index);
                if g.next_index.is_none_or(|n| n <= *index) {
                    g.next_index = Some(index + 1);
                }
                g.purged = Some((*index, meta.clone()));
            }
            Op::Meta { group, key, value } => {
                self.groups
                    .entry(*group)
                    .or_default()
                    .meta
                    .insert(*key, value.clone());
            }
        }
    }

    /// The model state after the ops whose LSN is `<= lsn`.
    pub fn replay(history: &[(u64, Op)], lsn: u64) -> Model {
        let mut m = Model::default();
        for (l, op) in history {
            if *l <= lsn {
                m.apply(op);
            }
        }
        m
    }
}

/// Asserts the WAL holds exactly the model's state (reading every entry back).
pub async fn assert_matches<S: Storage>(wal: &Wal<S>, model: &Model, context: &str) {
    wal.check_invariants();
    for (gid, g) in &model.groups {
        let got: BTreeMap<u64, Vec<u8>> = wal
            .read(*gid, ..)
            .await
            .expect("read")
            .into_iter()
            .collect();
        assert_eq!(got, g.entries, "{context}: group {gid} entries");
        let range = g
            .entries
            .keys()
            .next()
            .map(|f| (*f, *g.entries.keys().last().unwrap()));
        assert_eq!(wal.entry_range(*gid), range, "{context}: group {gid} range");
        assert_eq!(wal.purged(*gid), g.purged, "{context}: group {gid} purged");
        for (k, v) in &g.meta {
            assert_eq!(
                wal.meta(*gid, *k).as_ref(),
                Some(v),
                "{context}: group {gid} meta {k}"
            );
        }
    }
    for gid in wal.groups() {
        if !model.groups.contains_key(&gid) {
            assert_eq!(
                wal.entry_range(gid),
                None,
                "{context}: unexpected group {gid}"
            );
        }
    }
}

/// Deterministic payload bytes for (group, index, salt).
pub fn payload(group: u64, index: u64, len: usize, salt: u64) -> Vec<u8> {
    let mut x = group.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(31) ^ salt;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
