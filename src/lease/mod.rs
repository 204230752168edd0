//! Leases, etcd 3.4 semantics: the sans-IO pieces (no networking, no Raft, no clock).
//!
//! - [`Lessor`] (lessor.rs): the write leader's expiry bookkeeping: a deadline per lease,
//!   keepalives, the leases due for revocation, and etcd's `Promote`/`Demote`. Owned by the
//!   member that leads writes, behind its own lock; every method takes `now`.
//! - [`LeaseView`] (view.rs): every member's read-mostly view of the *applied* lease table
//!   plus the leader's fences (leases being revoked). Shared between threads in an `Arc`:
//!   the meta group's state machine (core 0) writes the table, write evaluation on every
//!   shard reads [`LeaseView::exists`].
//! - This file: etcd's constants, [`min_lease_ttl`] and [`IdGen`] (server-chosen lease IDs).
//!
//! The replicated lease table itself lives in the meta group; the keys attached to a
//! lease are derived from each shard's store. See notes/lease-design.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod lessor;
pub mod view;

pub use lessor::Lessor;
pub use view::LeaseView;

/// Largest TTL a grant may ask for, in seconds (etcd `MaxLeaseTTL`, lease/lessor.go:39).
/// A larger TTL is refused with `etcdserver: too large lease TTL`.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Leases revoked per second at most (etcd `leaseRevokeRate`, lessor.go:49). The expiry loop
/// takes at most `LEASE_REVOKE_RATE / 2` expired leases per [`EXPIRY_TICK`], and
/// [`Lessor::promote`] spreads expiries so that at most `3 * LEASE_REVOKE_RATE / 4` fall in
/// one second.
pub const LEASE_REVOKE_RATE: usize = 1000;

/// Period of the expiry loop (etcd's `runLoop`, lessor.go:613-626).
pub const EXPIRY_TICK: Duration = Duration::from_millis(500);

/// Quota cost of one grant, in bytes (etcd `leaseOverhead`, etcdserver/quota.go:59-60).
pub const LEASE_GRANT_COST: u64 = 64;

/// The smallest TTL a lease gets, in seconds: a grant asking for less (0 and negative
/// included) is raised to this.
///
/// etcd 3.4 (etcdserver/server.go:550, :559; embed/config.go:768): with
/// `ticks = election_ms / heartbeat_ms` (integer division), the minimum is
/// `(3 * ticks) / 2` heartbeats (integer division again), rounded *up* to whole seconds.
/// Defaults 100/1000 ms: 15 ticks of 100 ms = 1.5 s → 2.
///
/// # Panics
/// If `heartbeat_ms` is 0 (the configuration refuses it: `--heartbeat-interval must be
/// positive`).
pub fn min_lease_ttl(heartbeat_ms: u64, election_ms: u64) -> i64 {
    assert!(heartbeat_ms > 0, "min_lease_ttl: heartbeat interval 0");
    let election_ticks = election_ms / heartbeat_ms;
    let min_ms = (3 * election_ticks) / 2 * heartbeat_ms;
    i64::try_from(min_ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

/// Bits of the Unix-milliseconds timestamp in an id (etcd idutil `tsLen`).
const ID_TIMESTAMP_BITS: u32 = 40;
/// Bits of the counter below the timestamp (etcd idutil `cntLen`).
const ID_COUNTER_BITS: u32 = 8;
/// Bits below the member prefix (etcd idutil `suffixLen`).
const ID_SUFFIX_BITS: u32 = ID_TIMESTAMP_BITS + ID_COUNTER_BITS;

/// Server-chosen lease IDs, laid out as etcd's `idutil.Generator` (pkg/idutil/id.go:25-71):
///
/// ```text
/// | 2 bytes                  | 5 bytes                 | 1 byte  |
/// | member id (low 16 bits)  | Unix ms (low 40 bits)   | counter |
/// ```
///
/// The low 6 bytes (timestamp and counter) start at `unix_ms << 8` and grow by one per id;
/// the counter overflows into the timestamp on purpose (unique as long as fewer than 256
/// ids per millisecond are taken on average since start). [`IdGen::next`] masks the sign
/// bit off and skips 0, as etcd's LeaseGrant does with
/// `reqIDGen.Next() & (1<<63 - 1)` (etcdserver/v3_server.go:253-264), so the top bit of
/// the member prefix is lost and the result is always a valid, positive lease ID.
///
/// Unlike etcd, the counter is not shared with Raft request ids (cairn has none), so IDs
/// taken one after the other are consecutive. Safe to share between threads (`&self`).
#[derive(Debug)]
pub struct IdGen {
    /// `member_id as u16`, shifted to the top two bytes.
    prefix: u64,
    /// Timestamp and counter; only the low [`ID_SUFFIX_BITS`] are used.
    suffix: AtomicU64,
}

impl IdGen {
    /// A generator for member `member_id`, seeded with the wall-clock time `now` (taken
    /// by the caller; a time before 1970 counts as 0 ms).
    pub fn new(member_id: u64, now: SystemTime) -> IdGen {
        let unix_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        IdGen::with_unix_ms(member_id, unix_ms)
    }

    /// As [`IdGen::new`], with the time given as milliseconds since the Unix epoch.
    pub fn with_unix_ms(member_id: u64, unix_ms: u64) -> IdGen {
        let prefix = u64::from(member_id as u16) << ID_SUFFIX_BITS;
        let suffix = low_bits(unix_ms, ID_TIMESTAMP_BITS) << ID_COUNTER_BITS;
        IdGen {
            prefix,
            suffix: AtomicU64::new(suffix),
        }
    }

    /// The next id: positive, never 0, distinct from every earlier one of this generator
    /// (until 2^56 ids have been taken).
    pub fn next(&self) -> i64 {
        loop {
            let suffix = self.suffix.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            let id = (self.prefix | low_bits(suffix, ID_SUFFIX_BITS)) & (i64::MAX as u64);
            if id != 0 {
                return id as i64;
            }
        }
    }
}

/// The low `n` bits of `x` (etcd idutil `lowbit`), `0 < n < 64`.
fn low_bits(x: u64, n: u32) -> u64 {
    x & (u64::MAX >> (64 - n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn min_lease_ttl_matches_etcd() {
        // etcd defaults: 1000/100 = 10 ticks, 15 heartbeats = 1.5 s → 2 (observed on 3.4.23).
        assert_eq!(min_lease_ttl(100, 1000), 2);
        // 30 ticks → 45 × 100 ms = 4.5 s → 5.
        assert_eq!(min_lease_ttl(100, 3000), 5);
        // 6 ticks → 9 × 200 ms = 1.8 s → 2.
        assert_eq!(min_lease_ttl(200, 1200), 2);
        // 10 ticks → 15 × 50 ms = 0.75 s → 1.
        assert_eq!(min_lease_ttl(50, 500), 1);
        // Integer divisions: 1250/100 = 12 ticks (not 12.5) → 18 × 100 ms = 1.8 s → 2;
        // 7 ticks → (21)/2 = 10 heartbeats (not 10.5) × 300 ms = 3 s → exactly 3.
        assert_eq!(min_lease_ttl(100, 1250), 2);
        assert_eq!(min_lease_ttl(300, 2100), 3);
        // Whole seconds are not rounded up further: 20 ticks → 30 × 100 ms = 3 s.
        assert_eq!(min_lease_ttl(100, 2000), 3);
        // The largest election timeout the configuration accepts.
        assert_eq!(min_lease_ttl(100, 50_000), 75);
    }

    #[test]
    fn id_gen_layout_is_etcds() {
        let member: u64 = 0xabcd_ef01_2345_390d;
        let unix_ms: u64 = 0x0123_4567_89ab; // 41 bits: the 41st must be dropped
        let g = IdGen::with_unix_ms(member, unix_ms);
        let first = g.next() as u64;
        // Prefix: low 16 bits of the member id (0x390d), top bit already 0.
        assert_eq!(first >> 48, 0x390d);
        // Timestamp: low 40 bits of unix ms.
        assert_eq!((first >> 8) & ((1 << 40) - 1), unix_ms & ((1 << 40) - 1));
        // Counter starts at 1 (etcd increments before use).
        assert_eq!(first & 0xff, 1);
        assert_eq!(g.next() as u64, first + 1);

        // A member id with the top prefix bit set: the sign bit is masked off.
        let g = IdGen::with_unix_ms(0xf00d, 5);
        let id = g.next();
        assert!(id > 0);
        assert_eq!(id as u64, (0x700d << 48) | (5 << 8) | 1);

        // Seeding from SystemTime uses milliseconds since the epoch.
        let at = UNIX_EPOCH + Duration::from_millis(0x2_0000_0000);
        let id = IdGen::new(7, at).next() as u64;
        assert_eq!(id, (7 << 48) | (0x2_0000_0000 << 8) | 1);
    }

    #[test]
    fn id_gen_counter_overflows_into_timestamp() {
        let g = IdGen::with_unix_ms(1, 10);
        let ids: Vec<u64> = (0..300).map(|_| g.next() as u64).collect();
        assert_eq!(ids[254], (1 << 48) | (10 << 8) | 255);
        assert_eq!(ids[255], (1 << 48) | (11 << 8));
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn id_gen_never_returns_zero() {
        // Member prefix 0 (or 0x8000, masked to 0) and a suffix about to wrap to 0.
        for member in [0u64, 0x8000] {
            let g = IdGen {
                prefix: u64::from(member as u16) << ID_SUFFIX_BITS,
                suffix: AtomicU64::new((1 << ID_SUFFIX_BITS) - 2),
            };
            assert_eq!(g.next(), (1 << ID_SUFFIX_BITS) - 1);
            // The next suffix is 2^48 → low 48 bits 0 → id 0, skipped.
            assert_eq!(g.next(), 1);
        }
    }

    #[test]
    fn id_gen_unique_over_100k_and_across_threads() {
        let g = IdGen::new(0x390d, SystemTime::now());
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let id = g.next();
            assert!(id > 0);
            assert!(seen.insert(id), "duplicate id {id:#x}");
        }

        let g = std::sync::Arc::new(IdGen::with_unix_ms(3, 1_700_000_000_000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..25_000).map(|_| g.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            for id in t.join().expect("id thread") {
                assert!(all.insert(id), "duplicate id {id:#x} across threads");
            }
        }
        assert_eq!(all.len(), 100_000);
    }
}
