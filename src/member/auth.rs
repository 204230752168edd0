//! Auth on the member: who a request comes from (its token), whether it
//! may do what it asks, auth store changes and logins (run by the meta
//! group on the write leader: a follower forwards them), and the bcrypt
//! work, bounded and off the shard cores.
//!
//! Checks run against the member's applied copy of the store (its
//! [`AuthView`]), as etcd checks reads on the member that serves them. A
//! change's admin check runs again where the meta group applies it, so a
//! change is refused on every member or on none.
//!
//! Logins: the password is checked here (bcrypt, off the front runtime's
//! workers), then the login goes through the meta log naming the store
//! revision it was checked at; if the store changed in between, it is
//! checked again (etcd's optimistic loop), a few times at most.
//!
//! A flood of logins (a password guesser) is bounded three ways: one hash
//! at a time, [`BCRYPT_QUEUE`] waiting in all, and per client connection
//! one in the queue and [`PER_CONNECTION`] in all: the queue is taken in
//! turn by connections, so a login on a connection of its own waits for at
//! most one hash per other connection, and a few flooding connections
//! cannot fill the queue.

use super::peers::Route;
use super::Member;
use crate::api::EtcdError;
use crate::auth::view::AuthView;
use crate::auth::{token, AuthCommand, AuthFail, Caller, Credential};
use crate::raft::meta::{MetaCommand, MetaReply};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tonic::metadata::MetadataMap;
use tonic::Status;

/// bcrypt hashes computed at once (each takes a core for tens of ms at
/// etcd's cost 10): one, so a flood of logins takes at most one core.
const BCRYPT_AT_ONCE: usize = 1;
/// Logins and password changes waiting for bcrypt beyond which more are
/// refused (`too many requests`) rather than queued.
const BCRYPT_QUEUE: usize = 64;
/// A client connection's logins at once (one in the bcrypt queue, the rest
/// waiting for their turn, which costs a parked task each); more are
/// refused (`too many requests`). As large as the queue: a guesser on a
/// few connections waits rather than spins on refusals.
const PER_CONNECTION: usize = 64;
/// Logins retried when the store changed between their check and apply.
const LOGIN_TRIES: usize = 3;

/// The member's auth state.
pub struct Auth {
    pub view: Arc<AuthView>,
    cost: u32,
    bcrypt: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
    /// Per client connection with logins under way: its turn (one permit)
    /// and how many it has under way.
    ///
    /// Invariant: an entry's count is the number of live [`Turn`]s for
    /// that connection, at most [`PER_CONNECTION`], and an entry exists
    /// only while that is above 0 (so the map holds at most one entry per
    /// login under way).
    conns: Mutex<HashMap<SocketAddr, (Arc<tokio::sync::Semaphore>, usize)>>,
}

/// A login's place on its connection: counted from its arrival until it
/// ends (or is dropped), holding the connection's turn once it has it.
struct Turn<'a> {
    auth: &'a Auth,
    conn: SocketAddr,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut conns = self.auth.lock_conns();
        let gone = match conns.get_mut(&self.conn) {
            Some((_, n)) => {
                assert!(*n > 0, "a connection's login count went below 0");
                *n -= 1;
                *n == 0
            }
            None => panic!("a login's connection was forgotten while it ran"),
        };
        if gone {
            conns.remove(&self.conn);
        }
    }
}

impl Auth {
    pub fn new(view: Arc<AuthView>, cost: u32) -> Auth {
        Auth {
            view,
            cost,
            bcrypt: Arc::new(tokio::sync::Semaphore::new(BCRYPT_AT_ONCE)),
            waiting: AtomicUsize::new(0),
            conns: Mutex::new(HashMap::new()),
        }
    }

    fn lock_conns(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, (Arc<tokio::sync::Semaphore>, usize)>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for `conn`'s turn at the bcrypt queue (refused beyond
    /// [`PER_CONNECTION`] logins on it at once).
    async fn turn(&self, conn: SocketAddr) -> Result<Turn<'_>, Status> {
        let gate = {
            let mut conns = self.lock_conns();
            let (gate, n) = conns
                .entry(conn)
                .or_insert_with(|| (Arc::new(tokio::sync::Semaphore::new(1)), 0));
            if *n >= PER_CONNECTION {
                return Err(EtcdError::TooManyRequests.status());
            }
            *n += 1;
            gate.clone()
        };
        let mut turn = Turn {
            auth: self,
            conn,
            _permit: None,
        };
        turn._permit = Some(
            gate.acquire_owned()
                .await
                .map_err(|_| EtcdError::Stopped.status())?,
        );
        Ok(turn)
    }

    /// Runs bcrypt work `f` on the blocking pool, at most
    /// [`BCRYPT_AT_ONCE`] at a time and [`BCRYPT_QUEUE`] waiting.
    ///
    /// Invariant: `waiting` counts exactly the calls between their count
    /// and their permit (or their refusal, or their drop), so it never
    /// exceeds [`BCRYPT_QUEUE`] for long and returns to 0 when idle; the
    /// work itself holds the permit.
    async fn bcrypt<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        // Counted while waiting, uncounted when the wait ends or is dropped
        // (a client that goes away drops its call mid-wait).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let waiting = Waiting(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= BCRYPT_QUEUE {
            return Err(EtcdError::TooManyRequests.status());
        }
        let permit = self.bcrypt.clone().acquire_owned().await;
        drop(waiting);
        let permit = permit.map_err(|_| EtcdError::Stopped.status())?;
        // The permit goes with the work: a call dropped while its hash runs
        // does not let another start beside it.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|e| Status::internal(format!("bcrypt: {e}")))
    }

    /// A password's bcrypt hash at `--bcrypt-cost`.
    pub async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.cost;
        self.bcrypt(move || crate::auth::hash_password(&password, cost))
            .await?
            .map_err(Status::internal)
    }

    /// Whether `password` is the one of `hash`, for a login that came on
    /// connection `conn` (if known): it waits for that connection's turn.
    async fn matches(
        &self,
        conn: Option<SocketAddr>,
        password: String,
        hash: String,
    ) -> Result<bool, Status> {
        self.bcrypt_on(conn, move || {
            crate::auth::password_matches(&password, &hash)
        })
        .await
    }

    /// [`Auth::bcrypt`] for work that came on connection `conn` (if
    /// known): once that connection's turn comes.
    async fn bcrypt_on<T: Send + 'static>(
        &self,
        conn: Option<SocketAddr>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        let _turn = match conn {
            Some(conn) => Some(self.turn(conn).await?),
            None => None,
        };
        self.bcrypt(f).await
    }
}

/// The token a request carries: gRPC metadata `token`, else
/// `authorization` (what etcd's gateway passes the HTTP header as).
pub fn token_of(md: &MetadataMap) -> Option<&str> {
    md.get("token")
        .or_else(|| md.get("authorization"))
        .and_then(|v| v.to_str().ok())
}

impl Member {
    /// Who sent a request with `credential`: None without one; a token
    /// that is not valid is `invalid auth token` (also while auth is off,
    /// as etcd's); a certificate's name is taken as it is (the TLS
    /// handshake checked the certificate).
    ///
    /// A simple token names the meta entry of its login. One past what
    /// this member applied is from a login it has not applied yet, or
    /// made up: it is looked for only if the write leader has applied
    /// that far (a made-up one fails at once, not after the wait).
    pub async fn caller(
        &self,
        credential: Option<&Credential>,
    ) -> Result<Option<Caller>, AuthFail> {
        match credential {
            None => Ok(None),
            Some(Credential::Token(t)) => {
                if let Some(index) = self.auth.view.simple_index(t) {
                    if index > self.auth.view.applied_index() {
                        match self.read_index().await {
                            Ok(known) if index > known.auth => {
                                return Err(AuthFail::InvalidAuthToken)
                            }
                            _ => {}
                        }
                    }
                }
                self.auth.view.caller(t).await.map(Some)
            }
            Some(Credential::CertName(name)) => Ok(Some(Caller {
                user: name.clone(),
                revision: self.auth.view.revision(),
            })),
        }
    }

    /// On the write leader, before a client's write: refused as etcd's
    /// apply refuses it if the auth store moved past the revision the
    /// write's rights were checked at.
    /// `checked` 0: checked while auth was off where it was taken (then
    /// refused if it is on here: auth was enabled meanwhile).
    pub fn auth_current(&self, checked: Option<u64>) -> Result<(), Status> {
        let old = match checked {
            None => false,
            Some(0) => self.auth.view.enabled(),
            Some(rev) => self.auth.view.revision() > rev,
        };
        if old {
            return Err(AuthFail::AuthOldRevision.into());
        }
        Ok(())
    }

    /// Runs an auth store change (or a login) through the meta group.
    pub async fn auth_change(
        self: &Arc<Self>,
        caller: Option<Caller>,
        command: AuthCommand,
    ) -> Result<MetaReply, Status> {
        match self.write_route().await? {
            Route::Here => self.auth_change_here(caller, command).await,
            Route::To(leader) => self.forward_auth(leader, caller, command).await,
        }
    }

    /// [`Member::auth_change`] on the write leader.
    pub(super) async fn auth_change_here(
        &self,
        caller: Option<Caller>,
        command: AuthCommand,
    ) -> Result<MetaReply, Status> {
        self.meta_write(MetaCommand::Auth { caller, command }).await
    }

    /// An auth store change that answers nothing but success.
    pub async fn auth_change_done(
        self: &Arc<Self>,
        caller: Option<Caller>,
        command: AuthCommand,
    ) -> Result<(), Status> {
        match self.auth_change(caller, command).await? {
            MetaReply::AuthDone(index) => {
                // Read-your-writes: this member enforces the change before
                // it says it is made.
                self.auth.view.reach(index).await;
                Ok(())
            }
            MetaReply::AuthRefused(f) => Err(f.into()),
            other => Err(Status::internal(format!(
                "an auth change answered {other:?}"
            ))),
        }
    }

    /// Authenticate: a token for `user` if `password` is theirs. `conn`:
    /// the client connection it came on, if known.
    pub async fn authenticate(
        self: &Arc<Self>,
        conn: Option<SocketAddr>,
        user: &str,
        password: &str,
    ) -> Result<String, Status> {
        for _ in 0..LOGIN_TRIES {
            let (hash, checked) = {
                let store = self.auth.view.store();
                if !store.enabled {
                    return Err(AuthFail::AuthNotEnabled.into());
                }
                match store.users.get(user) {
                    None => return Err(AuthFail::AuthFailed.into()),
                    Some(u) if u.no_password => return Err(AuthFail::NoPasswordUser.into()),
                    Some(u) => (u.hash.clone().unwrap_or_default(), store.revision),
                }
            };
            if !self.auth.matches(conn, password.to_string(), hash).await? {
                return Err(AuthFail::AuthFailed.into());
            }
            let prefix = token::new_prefix();
            let login = AuthCommand::Authenticate {
                user: user.to_string(),
                prefix: prefix.clone(),
                checked,
                at_ms: crate::auth::view::unix_ms(),
            };
            match self.auth_change(None, login).await? {
                MetaReply::LoggedIn(index) => {
                    self.auth.view.reach(index).await;
                    return self
                        .auth
                        .view
                        .token_for(&prefix, user, checked, index)
                        .map_err(Status::internal);
                }
                MetaReply::AuthRefused(AuthFail::AuthOldRevision) => continue,
                MetaReply::AuthRefused(f) => return Err(f.into()),
                other => return Err(Status::internal(format!("a login answered {other:?}"))),
            }
        }
        Err(AuthFail::AuthOldRevision.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A runtime of two workers and four blocking threads, and a member's
    /// auth state with bcrypt cost 4.
    fn set_up() -> (tokio::runtime::Runtime, Arc<Auth>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let view = Arc::new(AuthView::new(
            crate::auth::view::Tokens::Simple,
            crate::auth::token::DEFAULT_TTL,
        ));
        (rt, Arc::new(Auth::new(view, 4)))
    }

    /// Many callers at once, a third of them given up while they wait:
    /// never two hashes at a time, the queue bound refuses the excess, and
    /// the waiting count comes back to 0 (a dropped wait is uncounted).
    #[test]
    fn bcrypt_work_is_one_at_a_time_bounded_and_cancellation_safe() {
        let (rt, auth) = set_up();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let outcomes = rt.block_on(async {
            let calls = (0..200).map(|i| {
                let (auth, running, most) = (auth.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    let work = auth.bcrypt(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        running.fetch_sub(1, Ordering::SeqCst);
                    });
                    if i % 3 == 0 {
                        tokio::time::timeout(Duration::from_millis(5), work)
                            .await
                            .ok()
                    } else {
                        Some(work.await)
                    }
                })
            });
            futures::future::join_all(calls).await
        });
        let refused = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Some(Err(s))) if s.code() == tonic::Code::ResourceExhausted))
            .count();
        assert!(
            refused > 0,
            "200 callers at once: some past the queue bound"
        );
        // Let dropped calls' work finish.
        rt.block_on(async {
            while auth.bcrypt.available_permits() < BCRYPT_AT_ONCE {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1, "two hashes at once");
        assert_eq!(
            auth.waiting.load(Ordering::SeqCst),
            0,
            "waiting count leaked"
        );
    }

    /// One connection floods (80 logins at once), three others send one
    /// login each just after: the flood gets at most [`PER_CONNECTION`] at
    /// once (the rest refused), and each other connection's login runs
    /// within the first few hashes after it came, not after the flood's
    /// queue; the per-connection table is empty at the end.
    #[test]
    fn logins_take_turns_by_connection() {
        let (rt, auth) = set_up();
        let order = Arc::new(Mutex::new(Vec::new()));
        let conn = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let run = |port: u16, i: usize| {
            let (auth, order) = (auth.clone(), order.clone());
            async move {
                auth.bcrypt_on(Some(conn(port)), move || {
                    order.lock().unwrap().push((port, i));
                    std::thread::sleep(Duration::from_millis(2));
                })
                .await
            }
        };
        let (flood, others) = rt.block_on(async {
            let flood: Vec<_> = (0..80).map(|i| tokio::spawn(run(1, i))).collect();
            tokio::time::sleep(Duration::from_millis(2)).await;
            let others: Vec<_> = (2..5).map(|p| tokio::spawn(run(p, 0))).collect();
            (
                futures::future::join_all(flood).await,
                futures::future::join_all(others).await,
            )
        });
        let refused = flood
            .iter()
            .filter(|r| matches!(r, Ok(Err(s)) if s.code() == tonic::Code::ResourceExhausted))
            .count();
        let done = flood.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
        assert_eq!(done, PER_CONNECTION, "the flood's logins at once");
        assert_eq!(refused, 80 - PER_CONNECTION, "the rest refused");
        for r in others {
            assert!(matches!(r, Ok(Ok(()))), "{r:?}");
        }
        let order = order.lock().unwrap().clone();
        // The flooder holds one place in the queue at a time: the three
        // others come before its last logins.
        let last_other = order.iter().rposition(|(p, _)| *p != 1).unwrap();
        assert!(
            last_other < 8,
            "other connections waited behind the flood: {order:?}"
        );
        assert!(auth.lock_conns().is_empty(), "per-connection table leaked");
    }
}
