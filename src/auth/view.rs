//! Every member's mirror of the auth store, for the API's checks on any
//! thread, and the member's tokens.
//!
//! The meta group's state machine (shard core 0) keeps it equal to the
//! store it applied: [`AuthView::load`] when a snapshot loads,
//! [`AuthView::applied`] after each auth entry (and [`AuthView::reached`]
//! after every meta entry, so a member can wait for the entry a simple
//! token names). Readers take a read lock; a check costs a hash lookup
//! when auth is disabled, or the user's merged permissions (cached until
//! the next change) when it is enabled.
//!
//! Invariant: the mirrored store is the one the meta group applied at the
//! index [`AuthView::reached`] last saw (entries apply in log order, and
//! only the state machine writes here); the index only moves forward
//! (asserted), and so does [`AuthView::changed`], the index of the last
//! entry that changed the store (or logged in), which passes it only while
//! that entry applies.

use super::jwt::JwtProvider;
use super::perms::Unified;
use super::token::{self, SimpleTokens};
use super::{AuthCommand, AuthFail, AuthStore, Caller, PermKind};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

/// How long a member waits to apply the entry a simple token names before
/// calling the token invalid.
const TOKEN_WAIT: Duration = Duration::from_secs(5);

/// Now, in unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a member issues and reads tokens (`--auth-token`).
pub enum Tokens {
    Simple,
    Jwt(JwtProvider),
}

impl Tokens {
    /// From `--auth-token` (etcd's syntax; an unknown option is logged and
    /// ignored, as etcd does).
    pub fn from_flag(flag: &str) -> Result<Tokens, String> {
        match super::jwt::parse_auth_token(flag)? {
            super::jwt::TokenKind::Simple => Ok(Tokens::Simple),
            super::jwt::TokenKind::Jwt(opts) => {
                for unknown in &opts.unknown {
                    eprintln!("cairn: --auth-token: unknown option {unknown:?} ignored");
                }
                let provider = JwtProvider::new(&opts)?;
                if provider.verify_only() {
                    eprintln!(
                        "cairn: --auth-token jwt without priv-key: this member checks \
                         tokens but cannot issue them (Authenticate fails here)"
                    );
                }
                Ok(Tokens::Jwt(provider))
            }
        }
    }
}

pub struct AuthView {
    store: RwLock<AuthStore>,
    /// `store.enabled`, readable without the lock (the fast path of every
    /// request while auth is off).
    enabled: AtomicBool,
    /// Merged permissions per user, for the store as it is now.
    unified: Mutex<HashMap<String, Arc<Unified>>>,
    simple: Mutex<SimpleTokens>,
    tokens: Tokens,
    /// The meta log index applied so far.
    index: tokio::sync::watch::Sender<u64>,
    /// The meta log index of the last auth entry applied (a change or a
    /// login), or of the snapshot loaded: a member whose `index` reached
    /// another member's `changed` has the auth state that one had.
    changed: AtomicU64,
}

impl AuthView {
    pub fn new(tokens: Tokens, simple_ttl: Duration) -> AuthView {
        AuthView {
            store: RwLock::new(AuthStore::default()),
            enabled: AtomicBool::new(false),
            unified: Mutex::new(HashMap::new()),
            simple: Mutex::new(SimpleTokens::new(simple_ttl)),
            tokens,
            index: tokio::sync::watch::channel(0).0,
            changed: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The store as applied (held briefly: the state machine waits).
    pub fn store(&self) -> RwLockReadGuard<'_, AuthStore> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn revision(&self) -> u64 {
        self.store().revision
    }

    /// A snapshot's store replaces the mirror. The tokens this member
    /// holds stay if their user is still there with the same password and
    /// auth is still on (what a password change, a deletion or a disable
    /// would have ended); logins inside the snapshot are not known here.
    pub fn load(&self, store: &AuthStore, index: u64) {
        let mut s = self.store.write().unwrap_or_else(|e| e.into_inner());
        let unchanged = |user: &str| {
            store.enabled
                && matches!(
                    (s.users.get(user), store.users.get(user)),
                    (Some(old), Some(new)) if old.hash == new.hash
                )
        };
        self.lock_simple().retain_users(unchanged);
        *s = store.clone();
        self.enabled.store(s.enabled, Ordering::Release);
        self.lock_unified().clear();
        drop(s);
        self.changed_at(index);
        self.index.send_replace(index);
    }

    /// Records that the entry at `index` changed the auth state.
    fn changed_at(&self, index: u64) {
        let before = self.changed.fetch_max(index, Ordering::AcqRel);
        assert!(
            before <= index,
            "auth change index went back: {index} after {before}"
        );
    }

    /// The meta index of the last auth change (or login, or snapshot) this
    /// member applied.
    pub fn changed(&self) -> u64 {
        self.changed.load(Ordering::Acquire)
    }

    /// The meta index this member applied.
    pub fn applied_index(&self) -> u64 {
        *self.index.borrow()
    }

    /// The meta group applied `command` (by `caller`) at `index`, and it
    /// succeeded there: the mirror does the same.
    pub fn applied(&self, caller: Option<&Caller>, command: &AuthCommand, index: u64) {
        let mut s = self.store.write().unwrap_or_else(|e| e.into_inner());
        let mirrored = s.apply(caller, command);
        assert!(
            mirrored.is_ok(),
            "the auth mirror refused {} that the meta group applied: {mirrored:?}",
            command.name()
        );
        self.enabled.store(s.enabled, Ordering::Release);
        self.lock_unified().clear();
        let mut simple = self.lock_simple();
        match command {
            AuthCommand::Authenticate {
                user,
                prefix,
                at_ms,
                ..
            } => {
                let age = Duration::from_millis(unix_ms().saturating_sub(*at_ms));
                simple.assign(
                    format!("{prefix}.{index}"),
                    user.clone(),
                    Instant::now(),
                    age,
                )
            }
            AuthCommand::UserDelete { name } | AuthCommand::UserChangePassword { name, .. } => {
                simple.invalidate_user(name)
            }
            AuthCommand::Disable => simple.clear(),
            _ => {}
        }
        drop(simple);
        drop(s);
        self.changed_at(index);
    }

    /// The meta group applied everything up to `index`.
    pub fn reached(&self, index: u64) {
        self.index.send_if_modified(|at| {
            assert!(index >= *at, "meta index went back: {index} after {}", *at);
            let moved = index > *at;
            *at = index;
            moved
        });
    }

    /// Waits (up to [`TOKEN_WAIT`]) until this member has applied the meta
    /// log up to `index`: an auth change or login made through another
    /// member then shows here.
    pub async fn reach(&self, index: u64) {
        let _ = tokio::time::timeout(TOKEN_WAIT, self.applied_to(index)).await;
    }

    /// Waits until this member has applied the meta log up to `index`.
    pub async fn applied_to(&self, index: u64) {
        let mut at = self.index.subscribe();
        let _ = at.wait_for(|i| *i >= index).await;
    }

    /// The meta index a simple token names (None for a JWT member, or a
    /// token of no index).
    pub fn simple_index(&self, token: &str) -> Option<u64> {
        match self.tokens {
            Tokens::Simple => token::index_of(token),
            Tokens::Jwt(_) => None,
        }
    }

    /// The user a token logs in, and the store revision it counts as
    /// (`InvalidAuthToken` if it is none of this member's tokens).
    pub async fn caller(&self, token: &str) -> Result<Caller, AuthFail> {
        match &self.tokens {
            Tokens::Jwt(jwt) => jwt
                .info(token)
                .map(|(user, revision)| Caller { user, revision })
                .ok_or(AuthFail::InvalidAuthToken),
            Tokens::Simple => {
                let index = token::index_of(token).ok_or(AuthFail::InvalidAuthToken)?;
                let mut at = self.index.subscribe();
                let applied = tokio::time::timeout(TOKEN_WAIT, at.wait_for(|i| *i >= index));
                if !matches!(applied.await, Ok(Ok(_))) {
                    return Err(AuthFail::InvalidAuthToken);
                }
                let user = self
                    .lock_simple()
                    .user_of(token, Instant::now())
                    .ok_or(AuthFail::InvalidAuthToken)?;
                Ok(Caller {
                    user,
                    revision: self.revision(),
                })
            }
        }
    }

    /// A login's token, once its entry applied at `index`.
    pub fn token_for(
        &self,
        prefix: &str,
        user: &str,
        revision: u64,
        index: u64,
    ) -> Result<String, String> {
        match &self.tokens {
            Tokens::Simple => Ok(format!("{prefix}.{index}")),
            Tokens::Jwt(jwt) => jwt.assign(user, revision),
        }
    }

    /// etcd's `isOpPermitted` against the applied store.
    pub fn permitted(
        &self,
        caller: Option<&Caller>,
        kind: PermKind,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthFail> {
        if !self.enabled() {
            return Ok(());
        }
        let store = self.store();
        store.op_permitted(caller, kind, key, range_end, |user| {
            let mut cache = self.lock_unified();
            cache
                .entry(user.to_string())
                .or_insert_with(|| Arc::new(store.unified(user)))
                .clone()
        })
    }

    /// etcd's `IsAdminPermitted` against the applied store.
    pub fn admin(&self, caller: Option<&Caller>) -> Result<(), AuthFail> {
        if !self.enabled() {
            return Ok(());
        }
        self.store().admin_permitted(caller)
    }

    fn lock_unified(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Unified>>> {
        self.unified.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_simple(&self) -> std::sync::MutexGuard<'_, SimpleTokens> {
        self.simple.lock().unwrap_or_else(|e| e.into_inner())
    }
}
