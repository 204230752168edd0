//! MVCC: one shard's keys and their revision histories, in memory.
//!
//! Owned by one shard core; synchronous, no IO, no clock. It applies committed
//! (or, on the write leader, speculative) changes stamped with a revision, and
//! answers reads at any revision between the compaction point and the newest
//! one applied. The write leader applies its own proposals at once and reads at
//! the committed prefix C (DESIGN §2.1), so a read never sees a revision above
//! the one it asks for; [`Store::rollback_to`] drops speculative revisions that
//! never committed.
//!
//! - [`store`]: key histories, apply, range at a revision, compaction.
//! - [`lease_index`]: the live keys of each lease, kept by the store.
//! - [`txn`]: evaluating etcd requests (Put, DeleteRange, Txn with compares and
//!   nested txns) into a response and the changes to stamp with one revision.

pub mod lease_index;
pub mod store;
pub mod txn;

pub use store::{
    Change, Event, KeyValue, MvccError, RangeEnd, RangeResult, Store, StoreImage, VersionImage,
};
