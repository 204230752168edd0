//! The write leader's lease expiry bookkeeping (etcd's `lessor`, primary side only).
//!
//! [`Lessor`] knows, for every lease of the applied table, its granted TTL and its deadline,
//! and answers: renew this lease (keepalive), how long does it have left (TimeToLive),
//! which leases are due for revocation (the expiry loop), all leases by remaining time
//! (LeaseLeases). It is sans-IO: the clock is an argument (`now`) of every method that needs
//! it, nothing is spawned and nothing waits. It does not know about the replicated table,
//! the fences or the attached keys: the caller grants/removes here *after* the meta group
//! applied the grant/revoke.
//!
//! Held by the member that leads writes, behind its lock; a member that does not lead keeps
//! it empty ([`Lessor::demote`]). Every operation is O(log n) except [`Lessor::promote`] and
//! [`Lessor::by_expiry`], which visit every lease.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::{LEASE_REVOKE_RATE, MAX_LEASE_TTL};

/// One lease as the lessor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// Granted TTL in seconds (already raised to the minimum by the caller).
    ttl: i64,
    /// When the lease expires unless renewed. Renewing moves it; offering the lease for
    /// revocation ([`Lessor::expired`]) does not.
    deadline: Instant,
    /// This lease's key in [`Lessor::queue`]: its deadline, or, once it has been offered
    /// for revocation, the time it is to be offered again.
    offer_at: Instant,
}

/// Deadlines of the leases, for the write leader. See the module doc.
///
/// Invariants ([`Lessor::check_invariants`]): `queue` holds exactly one `(offer_at, id)` per
/// entry of `by_id`, and `offer_at >= deadline` for each.
#[derive(Debug)]
pub struct Lessor {
    by_id: HashMap<i64, Entry>,
    /// `(offer_at, id)` of every lease: the next lease to offer for revocation is first.
    queue: BTreeSet<(Instant, i64)>,
    /// How long after being offered for revocation a lease not yet revoked is offered
    /// again (etcd `ExpiredLeasesRetryInterval` = `ReqTimeout()` = 5 s + 2 × election).
    retry: Duration,
}

impl Lessor {
    /// An empty lessor; `election` is the election timeout, giving the re-offer interval
    /// of an expired lease not revoked in time: 5 s + 2 × `election` (etcd's
    /// `ReqTimeout()`, etcdserver/config.go:286-290).
    pub fn new(election: Duration) -> Lessor {
        Lessor::with_retry(Duration::from_secs(5) + 2 * election)
    }

    /// An empty lessor re-offering unrevoked expired leases every `retry`.
    ///
    /// # Panics
    /// If `retry` is zero (a lease would be offered twice in one [`Lessor::expired`]).
    pub fn with_retry(retry: Duration) -> Lessor {
        assert!(!retry.is_zero(), "lessor retry interval must be positive");
        Lessor {
            by_id: HashMap::new(),
            queue: BTreeSet::new(),
            retry,
        }
    }

    /// The re-offer interval of expired leases.
    pub fn retry(&self) -> Duration {
        self.retry
    }

    /// Starts tracking lease `id` (just granted, applied): it expires at `now + ttl` s.
    /// Granting an id already tracked replaces it (new TTL, new deadline).
    pub fn grant(&mut self, id: i64, ttl: i64, now: Instant) {
        self.set(id, ttl, deadline(now, Duration::ZERO, ttl));
    }

    /// Keepalive: moves the deadline of `id` to `now + ttl` and returns its granted TTL.
    /// `None` if the lease is unknown or already overdue (deadline ≤ `now`, etcd's
    /// `expired()`): an overdue lease is about to be revoked and must not be revived; the
    /// caller waits for the revoke (etcd lessor.go:412-426).
    pub fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let entry = *self.by_id.get(&id)?;
        if entry.deadline <= now {
            return None;
        }
        self.set(id, entry.ttl, deadline(now, Duration::ZERO, entry.ttl));
        Some(entry.ttl)
    }

    /// Stops tracking `id` (revoked, or known to be gone). Unknown ids are ignored.
    pub fn remove(&mut self, id: i64) {
        if let Some(entry) = self.by_id.remove(&id) {
            let was_queued = self.queue.remove(&(entry.offer_at, id));
            debug_assert!(was_queued, "lease {id} was not queued");
        }
    }

    /// Seconds left before `id` expires, truncated toward zero as etcd's
    /// `int64(Remaining().Seconds())` (etcdserver/v3_server.go:325-373): 29 just after a
    /// 30 s grant, negative once overdue and not yet revoked. `None` if unknown.
    pub fn remaining(&self, id: i64, now: Instant) -> Option<i64> {
        let entry = self.by_id.get(&id)?;
        Some(go_seconds(signed_nanos(entry.deadline, now)))
    }

    /// The granted TTL of `id`, if tracked.
    pub fn ttl(&self, id: i64) -> Option<i64> {
        self.by_id.get(&id).map(|e| e.ttl)
    }

    /// Whether `id` is tracked.
    pub fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Number of leases tracked.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no lease is tracked.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Leadership starts: forgets whatever was tracked and tracks exactly `leases`
    /// (`(id, ttl)`, the applied table; a repeated id counts once, the last TTL wins), each
    /// expiring at `now + extend + ttl` — etcd's `Promote(extend)` (lease/lessor.go:467-519),
    /// where `extend` is the election timeout and `ttl` the full TTL (cairn has no
    /// checkpoints, so etcd's `RemainingTTL()` is the TTL).
    ///
    /// With at least [`LEASE_REVOKE_RATE`] leases, expiries are then spread as etcd spreads
    /// them, so that a pile of leases with equal TTLs does not expire at once: leases are
    /// visited in remaining order (ties by id; etcd's sort is unstable); a window starts at
    /// the first lease's remaining time and ends one second later; the first
    /// `3 * LEASE_REVOKE_RATE / 4` (750) leases counted in a window keep their deadline; the
    /// n-th one after that, counting on from 750, gets `delay = n/750 s − (its remaining −
    /// window start)`, expires at `now + extend + ttl + delay`, and the window end moves to
    /// `start + delay`; a lease whose remaining time is past the window end starts a new
    /// window (counted as its first lease). Remaining times are those before spreading.
    /// The arithmetic is etcd's, in `f64` nanoseconds truncated toward zero.
    ///
    /// This gives at most 750 expiries per second for leases of equal TTL (5000 leases:
    /// 750, 749, 750, 750, 750, 750, 501 per successive second). With mixed TTLs etcd's
    /// window bookkeeping lets more through: when a spread pile reaches into the next
    /// second's leases, the first of those sets the window end *behind* them, so the next
    /// one opens a new window while the spread leases already sit in it (1000 leases of
    /// TTL t and 1000 of t + 1: 750, 1001, 249). Reproduced on purpose; see the tests.
    pub fn promote(
        &mut self,
        leases: impl Iterator<Item = (i64, i64)>,
        now: Instant,
        extend: Duration,
    ) {
        self.by_id.clear();
        self.queue.clear();
        for (id, ttl) in leases {
            self.set(id, ttl, deadline(now, extend, ttl));
        }
        if self.by_id.len() < LEASE_REVOKE_RATE {
            // No possibility of a pile-up (etcd: `len(le.leaseMap) < leaseRevokeRate`).
            return;
        }

        let mut order: Vec<(Duration, i64)> = self
            .by_id
            .iter()
            .map(|(&id, e)| (e.deadline.saturating_duration_since(now), id))
            .collect();
        order.sort_unstable();

        let target_per_second = (3 * LEASE_REVOKE_RATE / 4) as u64;
        let second = Duration::from_secs(1);
        let mut window_start = order[0].0;
        let mut window_end = window_start + second;
        let mut expires: u64 = 0;
        for (remaining, id) in order {
            if remaining > window_end {
                window_start = remaining;
                window_end = window_start + second;
                expires = 1;
                continue;
            }
            expires += 1;
            if expires <= target_per_second {
                continue;
            }
            let rate_delay_ns = 1e9 * (expires as f64 / target_per_second as f64)
                - duration_nanos(remaining - window_start) as f64;
            // Go's `time.Duration(float)` truncates toward zero; the delay is positive here
            // (remaining − start ≤ the previous delay < this one), `as` floors a
            // negative one at 0 anyway.
            let delay = Duration::from_nanos(rate_delay_ns as u64);
            window_end = window_start + delay;
            let ttl = self.by_id[&id].ttl;
            self.set(id, ttl, deadline(now, delay + extend, ttl));
        }
    }

    /// Leadership ends: forgets every lease (etcd sets every expiry to "forever" and clears
    /// its queues, lessor.go:527-543). A lessor that does not lead has nothing to expire and
    /// nothing to renew; the next [`Lessor::promote`] rebuilds it from the applied table,
    /// which is where followers answer LeaseLeases from.
    pub fn demote(&mut self) {
        self.by_id.clear();
        self.queue.clear();
    }

    /// The expiry loop's question: up to `limit` leases whose turn has come (deadline ≤
    /// `now`, or, for a lease offered before and still not revoked, its re-offer time ≤
    /// `now`), in that order (ties by id). Each one returned stays tracked, with its deadline
    /// unchanged (it stays overdue: [`Lessor::renew`] refuses it, [`Lessor::remaining`] is
    /// negative), and is offered again at `now + retry` unless [`Lessor::remove`]d before
    /// (etcd's `expireExists`, lessor.go:687-711). O(k log n) for k returned.
    pub fn expired(&mut self, now: Instant, limit: usize) -> Vec<i64> {
        let offer_again = now + self.retry;
        let mut due = Vec::new();
        while due.len() < limit {
            let Some(&(offer_at, id)) = self.queue.first() else {
                break;
            };
            if offer_at > now {
                break;
            }
            self.queue.pop_first();
            let entry = self
                .by_id
                .get_mut(&id)
                .expect("every queued lease is in by_id");
            debug_assert!(entry.deadline <= now);
            entry.offer_at = offer_again;
            self.queue.insert((offer_again, id));
            due.push(id);
        }
        due
    }

    /// Every lease as `(id, ttl, remaining seconds)` (remaining as [`Lessor::remaining`]),
    /// soonest deadline first, ties by id — LeaseLeases' order (lessor.go:459-465). O(n log n).
    pub fn by_expiry(&self, now: Instant) -> Vec<(i64, i64, i64)> {
        let mut leases: Vec<(Instant, i64, i64)> = self
            .by_id
            .iter()
            .map(|(&id, e)| (e.deadline, id, e.ttl))
            .collect();
        leases.sort_unstable();
        leases
            .into_iter()
            .map(|(deadline, id, ttl)| (id, ttl, go_seconds(signed_nanos(deadline, now))))
            .collect()
    }

    /// Checks the invariants of the struct doc; O(n), for tests.
    ///
    /// # Panics
    /// If one does not hold.
    pub fn check_invariants(&self) {
        assert_eq!(
            self.by_id.len(),
            self.queue.len(),
            "one queue entry per lease"
        );
        for (&id, e) in &self.by_id {
            assert!(
                self.queue.contains(&(e.offer_at, id)),
                "lease {id} queued at its offer time"
            );
            assert!(
                e.offer_at >= e.deadline,
                "lease {id} offered before its deadline"
            );
        }
    }

    /// Tracks `id` with `ttl`, due at `deadline` (first offer at the deadline), replacing
    /// any previous entry.
    fn set(&mut self, id: i64, ttl: i64, deadline: Instant) {
        let entry = Entry {
            ttl,
            deadline,
            offer_at: deadline,
        };
        if let Some(old) = self.by_id.insert(id, entry) {
            self.queue.remove(&(old.offer_at, id));
        }
        self.queue.insert((deadline, id));
    }
}

/// `now + extend + ttl` seconds; a TTL outside `0..=MAX_LEASE_TTL` (the caller validates and
/// raises TTLs, so only by mistake) is clamped into it.
///
/// # Panics
/// If the sum does not fit in an `Instant` (not with a clamped TTL and an `extend` of the
/// configuration's range: 9e9 s is 285 years).
fn deadline(now: Instant, extend: Duration, ttl: i64) -> Instant {
    let ttl_secs = ttl.clamp(0, MAX_LEASE_TTL) as u64;
    extend
        .checked_add(Duration::from_secs(ttl_secs))
        .and_then(|d| now.checked_add(d))
        .expect("lease deadline overflows Instant")
}

/// Nanoseconds, saturating at `i64::MAX` (Go's `time.Duration` range, ±292 years).
fn duration_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// `deadline − now` in nanoseconds, negative if the deadline is past (Go's
/// `time.Until(expiry)`).
fn signed_nanos(deadline: Instant, now: Instant) -> i64 {
    if deadline >= now {
        duration_nanos(deadline - now)
    } else {
        -duration_nanos(now - deadline)
    }
}

/// Go's `int64(d.Seconds())` for a duration of `nanos` ns: `Seconds()` is
/// `float64(d / 1e9) + float64(d % 1e9) / 1e9` (truncating division), and the conversion to
/// int64 truncates toward zero.
fn go_seconds(nanos: i64) -> i64 {
    let whole = nanos / 1_000_000_000;
    let fraction = nanos % 1_000_000_000;
    (whole as f64 + fraction as f64 / 1e9) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn lessor() -> Lessor {
        // Default election timeout 1 s → retry 7 s, as etcd's ReqTimeout.
        let l = Lessor::new(SEC);
        assert_eq!(l.retry(), 7 * SEC);
        l
    }

    #[test]
    fn grant_remaining_and_ttl() {
        let t0 = Instant::now();
        let mut l = lessor();
        l.grant(1, 30, t0);
        l.check_invariants();
        assert_eq!(l.ttl(1), Some(30));
        assert_eq!(l.remaining(1, t0), Some(30));
        // Truncated toward zero: 29.999 s → 29, as etcd's TimeToLive right after a grant.
        assert_eq!(l.remaining(1, t0 + MS), Some(29));
        assert_eq!(
            l.remaining(1, t0 + 30 * SEC - Duration::from_nanos(1)),
            Some(0)
        );
        assert_eq!(l.remaining(1, t0 + 30 * SEC), Some(0));
        // Overdue: truncated toward zero as well (−0.5 s → 0, −1.5 s → −1).
        assert_eq!(l.remaining(1, t0 + 30 * SEC + 500 * MS), Some(0));
        assert_eq!(l.remaining(1, t0 + 31 * SEC + 500 * MS), Some(-1));
        assert_eq!(l.remaining(2, t0), None);
        assert_eq!(l.ttl(2), None);
        assert!(l.contains(1) && !l.contains(2));
        assert_eq!((l.len(), l.is_empty()), (1, false));
    }

    #[test]
    fn go_seconds_truncates_like_go() {
        assert_eq!(go_seconds(0), 0);
        assert_eq!(go_seconds(1_999_999_999), 1);
        assert_eq!(go_seconds(-1_999_999_999), -1);
        assert_eq!(go_seconds(-999_999_999), 0);
        // Near MaxLeaseTTL the f64 sum rounds up, as it does in Go.
        assert_eq!(
            go_seconds(9_000_000_000 * 1_000_000_000 + 999_999_999),
            9_000_000_001
        );
    }

    #[test]
    fn renew_moves_the_deadline_and_changes_the_expiry_order() {
        let t0 = Instant::now();
        let mut l = lessor();
        l.grant(1, 10, t0);
        l.grant(2, 20, t0);
        assert_eq!(l.by_expiry(t0), vec![(1, 10, 10), (2, 20, 20)]);
        // Renew lease 2 at t0+5 s: due at 25.
        assert_eq!(l.renew(2, t0 + 5 * SEC), Some(20));
        // Renew lease 1 at t0+9 s: due at 19, still before 2.
        assert_eq!(l.renew(1, t0 + 9 * SEC), Some(10));
        assert_eq!(l.by_expiry(t0 + 9 * SEC), vec![(1, 10, 10), (2, 20, 16)]);
        // Renew lease 1 at t0+18 s: due at 28, now after 2 (25).
        assert_eq!(l.renew(1, t0 + 18 * SEC), Some(10));
        assert_eq!(l.by_expiry(t0 + 18 * SEC), vec![(2, 20, 7), (1, 10, 10)]);
        l.check_invariants();
        // The queue follows: at t0+26 only 2 is due, at t0+28 lease 1 too.
        assert_eq!(l.expired(t0 + 26 * SEC, 10), vec![2]);
        assert_eq!(l.expired(t0 + 28 * SEC, 10), vec![1]);
        l.check_invariants();
        assert_eq!(l.renew(3, t0), None);
    }

    #[test]
    fn renew_of_an_overdue_lease_is_refused_and_changes_nothing() {
        let t0 = Instant::now();
        let mut l = lessor();
        l.grant(1, 10, t0);
        assert_eq!(l.renew(1, t0 + 10 * SEC - MS), Some(10));
        // Due at 20 s - 1 ms. Exactly at the deadline it is expired (etcd: Remaining() <= 0).
        let due = t0 + 20 * SEC - MS;
        assert_eq!(l.renew(1, due), None);
        assert_eq!(l.renew(1, due + SEC), None);
        assert_eq!(l.remaining(1, due + 2 * SEC), Some(-2));
        // Still offered for revocation at its old deadline.
        assert_eq!(l.expired(due, 10), vec![1]);
        // Offered, not revoked: still refused, still overdue.
        assert_eq!(l.renew(1, due + SEC), None);
        assert_eq!(l.remaining(1, due + 3 * SEC), Some(-3));
        l.check_invariants();
    }

    #[test]
    fn expired_respects_limit_and_deadline_order_and_requeues_after_retry() {
        let t0 = Instant::now();
        let mut l = lessor();
        // Deadlines 5, 3, 4, 1, 2 s (ids 15, 13, 14, 11, 12) and one due later (id 99).
        for (id, ttl) in [(15, 5), (13, 3), (14, 4), (11, 1), (12, 2), (99, 100)] {
            l.grant(id, ttl, t0);
        }
        assert_eq!(l.expired(t0 + 500 * MS, 10), Vec::<i64>::new());
        // At 4.5 s four are due; the limit takes the first three by deadline.
        let t1 = t0 + 4 * SEC + 500 * MS;
        assert_eq!(l.expired(t1, 3), vec![11, 12, 13]);
        // Then the fourth; 15 (due at 5) is not due yet; nothing is offered twice.
        assert_eq!(l.expired(t1, 3), vec![14]);
        assert_eq!(l.expired(t1, 3), Vec::<i64>::new());
        l.check_invariants();
        // At 5 s lease 15 is due (deadline ≤ now).
        let t2 = t0 + 5 * SEC;
        assert_eq!(l.expired(t2, 10), vec![15]);
        // Not revoked (still tracked): 11..13 offered again at t1 + 7 s, 14 too, 15 at t2 + 7.
        assert_eq!(l.expired(t1 + 7 * SEC - MS, 10), Vec::<i64>::new());
        assert_eq!(l.expired(t1 + 7 * SEC, 2), vec![11, 12]);
        assert_eq!(l.expired(t1 + 7 * SEC, 10), vec![13, 14]);
        assert_eq!(l.expired(t2 + 7 * SEC, 10), vec![15]);
        // Each re-offer counts from the time of the last offer: 11..=14 again at t1 + 14 s.
        assert_eq!(l.expired(t1 + 14 * SEC, 10), vec![11, 12, 13, 14]);
        l.check_invariants();
        assert_eq!(l.len(), 6);
        assert_eq!(l.expired(t0 + 99 * SEC, 0), Vec::<i64>::new());
    }

    #[test]
    fn removed_lease_is_never_offered() {
        let t0 = Instant::now();
        let mut l = lessor();
        l.grant(1, 1, t0);
        l.grant(2, 1, t0);
        l.grant(3, 2, t0);
        l.remove(2);
        l.remove(2);
        l.remove(42);
        l.check_invariants();
        assert_eq!(l.expired(t0 + 10 * SEC, 10), vec![1, 3]);
        // Revoked after being offered: never offered again.
        l.remove(1);
        l.check_invariants();
        assert_eq!(l.expired(t0 + 100 * SEC, 10), vec![3]);
        assert_eq!(l.expired(t0 + 1000 * SEC, 10), vec![3]);
        assert_eq!(l.remaining(1, t0), None);
        assert_eq!(l.renew(2, t0), None);
        assert_eq!(l.by_expiry(t0).len(), 1);
    }

    #[test]
    fn grant_of_a_tracked_id_replaces_it() {
        let t0 = Instant::now();
        let mut l = lessor();
        l.grant(1, 5, t0);
        assert_eq!(l.expired(t0 + 5 * SEC, 10), vec![1]);
        l.grant(1, 60, t0 + 6 * SEC);
        l.check_invariants();
        assert_eq!(l.len(), 1);
        assert_eq!(l.ttl(1), Some(60));
        assert_eq!(l.expired(t0 + 13 * SEC, 10), Vec::<i64>::new());
        assert_eq!(l.expired(t0 + 66 * SEC, 10), vec![1]);
    }

    #[test]
    fn promote_extends_by_extend_plus_ttl_and_forgets_the_rest() {
        let t0 = Instant::now();
        let mut l = lessor();
        l.grant(7, 3, t0);
        l.grant(8, 3, t0);
        let now = t0 + 2 * SEC;
        l.promote([(1, 10), (2, 5), (8, 100)].into_iter(), now, SEC);
        l.check_invariants();
        assert!(!l.contains(7), "promote tracks exactly the table");
        // Full TTL + extend from now, whatever was left before (no checkpoints).
        assert_eq!(l.remaining(1, now), Some(11));
        assert_eq!(l.remaining(2, now), Some(6));
        assert_eq!(l.remaining(8, now), Some(101));
        assert_eq!(l.expired(now + 6 * SEC - MS, 10), Vec::<i64>::new());
        assert_eq!(l.expired(now + 6 * SEC, 10), vec![2]);
        assert_eq!(l.expired(now + 11 * SEC, 10), vec![1]);
        // Fewer than 1000 leases of equal TTL: no spreading at all.
        l.promote((1..1000).map(|id| (id, 10)), now, SEC);
        assert_eq!(l.len(), 999);
        assert_eq!(l.expired(now + 11 * SEC, 5000).len(), 999);
    }

    #[test]
    fn demote_forgets_everything() {
        let t0 = Instant::now();
        let mut l = lessor();
        l.grant(1, 1, t0);
        l.grant(2, 10, t0);
        l.demote();
        l.check_invariants();
        assert!(l.is_empty());
        assert_eq!(l.expired(t0 + 100 * SEC, 10), Vec::<i64>::new());
        assert_eq!(l.renew(2, t0), None);
        assert_eq!(l.by_expiry(t0), vec![]);
    }

    /// Deadlines of a promoted lessor, in ns after `now + extend`, sorted.
    fn offsets_ns(l: &Lessor, now: Instant, extend: Duration) -> Vec<u128> {
        let mut offsets: Vec<u128> = l
            .by_id
            .values()
            .map(|e| (e.deadline - (now + extend)).as_nanos())
            .collect();
        offsets.sort_unstable();
        offsets
    }

    /// How many offsets fall in each whole second `[k s, k+1 s)` after `from_ns`.
    fn per_second(offsets: &[u128], from_ns: u128) -> Vec<usize> {
        let mut counts = Vec::new();
        for &o in offsets {
            let k = ((o - from_ns) / 1_000_000_000) as usize;
            if counts.len() <= k {
                counts.resize(k + 1, 0);
            }
            counts[k] += 1;
        }
        counts
    }

    #[test]
    fn promote_spreads_5000_equal_leases_at_most_750_per_second() {
        let t0 = Instant::now();
        let mut l = lessor();
        let ttl = 10;
        let extend = SEC;
        l.promote((1..=5000).map(|id| (id, ttl)), t0, extend);
        l.check_invariants();
        let offsets = offsets_ns(&l, t0, extend);
        let base = ttl as u128 * 1_000_000_000;
        // Windows of one second from the common remaining time, as etcd's numbers: the
        // n-th lease (n > 750) is delayed n/750 s, so 751..=1499 fall in [1 s, 2 s).
        assert_eq!(
            per_second(&offsets, base),
            vec![750, 749, 750, 750, 750, 750, 501]
        );
        assert!(per_second(&offsets, base).iter().all(|&c| c <= 750));
        // Exact delays: lease 751 by 1.001333333 s, lease 1500 by exactly 2 s, the last
        // (5000) by 6.666666666 s (truncated ns).
        assert_eq!(offsets[749], base);
        assert_eq!(offsets[750], base + 1_001_333_333);
        assert_eq!(offsets[1499], base + 2_000_000_000);
        assert_eq!(offsets[4999], base + 6_666_666_666);
        // Ties broken by id: the lowest ids keep their deadline.
        assert_eq!(l.remaining(750, t0), Some(11));
        assert_eq!(l.remaining(751, t0), Some(12));
        // Any 1 s window, not only aligned ones, holds at most 750, give or take the
        // truncation to whole ns: lease 3003's delay, 3003/750 s, is 4.003999999 s in f64,
        // which puts it 1 ns inside the second that starts at lease 2253 (3.004 s).
        for (i, &start) in offsets.iter().enumerate() {
            let in_window = offsets[i..].partition_point(|&o| o < start + 1_000_000_000);
            assert!(
                in_window <= 751,
                "{in_window} expiries in the second after lease {i}"
            );
        }
        assert_eq!(offsets[3002], base + 4_003_999_999);
        // The expiry loop then sees them at that pace.
        let due = l.expired(t0 + extend + (ttl as u32) * SEC, 5000);
        assert_eq!(due.len(), 750);
    }

    #[test]
    fn promote_spreading_starts_at_1000_leases() {
        let t0 = Instant::now();
        let mut l = lessor();
        l.promote((1..=1000).map(|id| (id, 5)), t0, SEC);
        let offsets = offsets_ns(&l, t0, SEC);
        assert_eq!(per_second(&offsets, 5_000_000_000), vec![750, 250]);
        assert_eq!(offsets[999], 5_000_000_000 + 1_333_333_333);
    }

    #[test]
    fn promote_spreading_mixed_ttls_reproduces_etcds_window_bookkeeping() {
        // 1000 leases of TTL 10 and 1000 of TTL 11. etcd (lessor.go:481-518): the first
        // 1000 give 750 at +0 and 250 spread over (1 s, 1.334 s]; the window end is then
        // base + 1.333 s, so the first TTL-11 lease (at +1 s) is counted as the 1001st of
        // the first window and delayed to +1.33467 s — but its delay, 0.33467 s, becomes
        // the window end, so the second TTL-11 lease opens a new window at +1 s where 750
        // stay and the rest are spread from +2.0013 s: 1001 expiries in [1 s, 2 s).
        let t0 = Instant::now();
        let mut l = lessor();
        l.promote(
            (1..=2000).map(|id| (id, if id <= 1000 { 10 } else { 11 })),
            t0,
            SEC,
        );
        l.check_invariants();
        let offsets = offsets_ns(&l, t0, SEC);
        let base = 10_000_000_000;
        assert_eq!(per_second(&offsets, base), vec![750, 1001, 249]);
        // Lease 1001 (the first of TTL 11) moved to +1.334666666 s.
        assert_eq!(
            l.by_id[&1001].deadline - (t0 + SEC),
            Duration::from_nanos(base as u64 + 1_334_666_666)
        );
        // Lease 1002 opened the new window: 1002..=1751 keep +1 s, 1752 is the first delayed.
        assert_eq!(l.by_id[&1002].deadline - (t0 + SEC), 11 * SEC);
        assert_eq!(l.by_id[&1751].deadline - (t0 + SEC), 11 * SEC);
        assert_eq!(
            l.by_id[&1752].deadline - (t0 + SEC),
            12 * SEC + Duration::from_nanos(1_333_333)
        );
    }
}
