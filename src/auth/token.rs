//! etcd's simple tokens (`--auth-token simple`, the default): a token is
//! `{16 random letters}.{index}`, where the index is that of the meta log
//! entry that logged the user in. Every member applies that entry and
//! keeps the token, so any member accepts it (a member that has not
//! applied the entry yet waits for it, as etcd's `isValidSimpleToken`).
//!
//! A token lives `--auth-token-ttl` (etcd's default 300 s) past its last
//! use on this member; the user's deletion or password change, and
//! disabling auth, drop it. Tokens are in memory only.
//!
//! Bound: tokens expire, and expired ones are swept whenever the table has
//! doubled since the last sweep, so the table holds at most twice the
//! tokens used within one TTL (logins are themselves bounded by the
//! bcrypt work each costs).

use rand::RngExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// etcd's default simple token TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Length of a token's random part, as etcd's.
const PREFIX_LEN: usize = 16;

/// A fresh random prefix for a login's token.
pub fn new_prefix() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..PREFIX_LEN)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect()
}

/// The meta log index a simple token names (None if it is not one).
pub fn index_of(token: &str) -> Option<u64> {
    let (prefix, index) = token.rsplit_once('.')?;
    if prefix.is_empty() {
        return None;
    }
    index.parse().ok()
}

/// The live tokens of this member.
#[derive(Debug)]
pub struct SimpleTokens {
    ttl: Duration,
    /// token → (user, deadline).
    live: HashMap<String, (String, Instant)>,
    /// Sweep expired tokens once the table reaches this size.
    sweep_at: usize,
}

impl SimpleTokens {
    pub fn new(ttl: Duration) -> SimpleTokens {
        SimpleTokens {
            ttl,
            live: HashMap::new(),
            sweep_at: 1024,
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// `token` now logs `user` in, until `ttl` after its last use; `age`:
    /// how long ago the login was taken (a token older than its TTL is not
    /// kept).
    pub fn assign(&mut self, token: String, user: String, now: Instant, age: Duration) {
        if self.live.len() >= self.sweep_at {
            self.live.retain(|_, (_, deadline)| *deadline > now);
            self.sweep_at = (self.live.len() * 2).max(1024);
        }
        if age < self.ttl {
            self.live.insert(token, (user, now + (self.ttl - age)));
        }
    }

    /// The user `token` logs in (and its life starts again), or None if it
    /// is unknown or expired.
    pub fn user_of(&mut self, token: &str, now: Instant) -> Option<String> {
        let (user, deadline) = self.live.get_mut(token)?;
        if *deadline <= now {
            self.live.remove(token);
            return None;
        }
        *deadline = now + self.ttl;
        Some(user.clone())
    }

    /// Drops every token of `user`.
    pub fn invalidate_user(&mut self, user: &str) {
        self.live.retain(|_, (u, _)| u != user);
    }

    /// Keeps the tokens of the users `keep` says.
    pub fn retain_users(&mut self, keep: impl Fn(&str) -> bool) {
        self.live.retain(|_, (user, _)| keep(user));
    }

    pub fn clear(&mut self) {
        self.live.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lives_its_ttl_past_its_last_use() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut tokens = SimpleTokens::new(ttl);
        tokens.assign("abc.7".into(), "alice".into(), t0, Duration::ZERO);
        // A login applied late (a log replayed) gets what is left of its
        // TTL; one older than its TTL is not kept.
        tokens.assign("old.8".into(), "alice".into(), t0, ttl * 3 / 4);
        assert!(tokens.user_of("old.8", t0 + ttl / 8).is_some());
        tokens.assign("old.10".into(), "alice".into(), t0, ttl * 3 / 4);
        assert_eq!(tokens.user_of("old.10", t0 + ttl / 2), None);
        tokens.assign("older.9".into(), "alice".into(), t0, ttl);
        assert_eq!(tokens.user_of("older.9", t0), None);
        assert_eq!(
            tokens.user_of("abc.7", t0 + ttl / 2).as_deref(),
            Some("alice")
        );
        // Used at ttl/2: alive until 1.5 ttl.
        assert_eq!(
            tokens.user_of("abc.7", t0 + ttl * 14 / 10).as_deref(),
            Some("alice")
        );
        assert_eq!(tokens.user_of("abc.7", t0 + ttl * 3), None);
        assert_eq!(tokens.user_of("old.8", t0 + ttl * 3), None);
        assert!(
            tokens.is_empty(),
            "expired tokens are dropped when looked up"
        );
        assert_eq!(tokens.user_of("nope.1", t0), None);
    }

    #[test]
    fn a_users_tokens_go_with_invalidation_and_clear() {
        let t0 = Instant::now();
        let mut tokens = SimpleTokens::new(DEFAULT_TTL);
        let z = Duration::ZERO;
        tokens.assign("a.1".into(), "alice".into(), t0, z);
        tokens.assign("a.2".into(), "alice".into(), t0, z);
        tokens.assign("b.3".into(), "bob".into(), t0, z);
        tokens.invalidate_user("alice");
        assert_eq!(tokens.user_of("a.1", t0), None);
        assert_eq!(tokens.user_of("a.2", t0), None);
        assert_eq!(tokens.user_of("b.3", t0).as_deref(), Some("bob"));
        tokens.clear();
        assert_eq!(tokens.user_of("b.3", t0), None);
    }

    #[test]
    fn expired_tokens_are_swept_so_the_table_stays_bounded() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(1);
        let mut tokens = SimpleTokens::new(ttl);
        for i in 0..10_000u64 {
            // Each token is used once, at its login, 1 ms apart: at most
            // 1,000 are alive at any time.
            let now = t0 + Duration::from_millis(i);
            tokens.assign(format!("t.{i}"), "u".into(), now, Duration::ZERO);
            assert!(tokens.len() <= 2 * 1_000 + 1024, "{} tokens", tokens.len());
        }
    }

    #[test]
    fn prefixes_are_random_letters_and_indexes_parse() {
        let a = new_prefix();
        assert_eq!(a.len(), PREFIX_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_alphabetic()));
        assert_ne!(a, new_prefix());
        assert_eq!(index_of(&format!("{a}.42")), Some(42));
        assert_eq!(index_of("abc"), None);
        assert_eq!(index_of(".42"), None);
        assert_eq!(index_of("abc.x"), None);
        assert_eq!(index_of("a.b.9"), Some(9));
    }
}
