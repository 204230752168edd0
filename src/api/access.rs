//! Who may do what: etcd 3.4's permission checks of the RPCs that touch
//! keys (`etcdserver/apply_auth.go`, `v3_server.go`), made on the member
//! that takes the request, against its applied auth store.
//!
//! - Range: read on its key or range. Put: write on the key, write on
//!   every key the named lease already holds, read on the key with
//!   `prev_kv`. DeleteRange: write on the range, read with `prev_kv`.
//! - Txn: read on every compare's key or range, then each op of both
//!   branches as above. Deliberate differences from 3.4.23 (fixed in
//!   3.4.42 and 3.4.44): a put inside a txn is checked as a Put is (read
//!   with `prev_kv`, write on its lease's keys), and nested txns are
//!   checked (3.4.23 looks at neither).
//! - LeaseRevoke: write on every key the lease holds.
//!   LeaseTimeToLive with keys: read on each key (etcd 3.4.26's fix of
//!   CVE-2023-32082; 3.4.23 does not check).
//!
//! While auth is off and a request carries no token, none of this costs
//! more than a flag load.

use crate::auth::{AuthFail, Caller, Credential, PermKind};
use crate::member::Member;
use cairn_proto::etcdserverpb as pb;
use pb::request_op::Request as Op;
use std::sync::Arc;
use tonic::Status;

/// A request's credential, read before its body is taken apart (the
/// check comes after validation, as in etcd): its token, else the
/// CommonName of its connection's client certificate.
pub fn credential<T>(req: &tonic::Request<T>) -> Option<Credential> {
    if let Some(t) = crate::member::auth::token_of(req.metadata()) {
        return Some(Credential::Token(t.to_owned()));
    }
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<super::tls::ClientPeer>>()?;
    peer.0
        .common_name
        .as_deref()
        .map(|cn| Credential::CertName(cn.to_owned()))
}

/// The client connection a request came on (its peer address), when the
/// server knows it.
pub fn connection(extensions: &axum::http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<super::tls::ClientPeer>>()
        .map(|peer| peer.0.addr)
}

/// Who sent a request whose credential is `credential`.
pub async fn caller(
    member: &Member,
    credential: Option<&Credential>,
) -> Result<Option<Caller>, Status> {
    Ok(member.caller(credential).await?)
}

/// Who sent `req`.
pub async fn caller_of<T>(
    member: &Member,
    req: &tonic::Request<T>,
) -> Result<Option<Caller>, Status> {
    caller(member, credential(req).as_ref()).await
}

/// etcd's permission check of `kind` on a key (empty `end`) or range.
fn permitted(
    member: &Member,
    caller: Option<&Caller>,
    kind: PermKind,
    key: &[u8],
    end: &[u8],
) -> Result<(), Status> {
    Ok(member.auth.view.permitted(caller, kind, key, end)?)
}

/// The auth store revision a write's rights were checked at, for the
/// write leader's second look: 0 if it was checked with auth off here (a
/// store revision is never 0), so a leader that has auth on refuses it.
pub fn checked_at(member: &Member, caller: Option<&Caller>) -> Option<u64> {
    if !member.auth.view.enabled() {
        return Some(0);
    }
    caller.map(|c| c.revision)
}

/// Whether checks are needed at all.
fn off(member: &Member, caller: Option<&Caller>) -> bool {
    caller.is_none() && !member.auth.view.enabled()
}

pub fn range(
    member: &Member,
    caller: Option<&Caller>,
    key: &[u8],
    end: &[u8],
) -> Result<(), Status> {
    if off(member, caller) {
        return Ok(());
    }
    permitted(member, caller, PermKind::Read, key, end)
}

/// After a read: etcd refuses an answer read while the auth store moved
/// past the caller's revision (the client retries).
pub fn still_current(member: &Member, caller: Option<&Caller>) -> Result<(), Status> {
    match caller {
        Some(c) if c.revision != 0 && member.auth.view.revision() != c.revision => {
            Err(crate::auth::AuthFail::AuthOldRevision.into())
        }
        _ => Ok(()),
    }
}

pub async fn put(
    member: &Arc<Member>,
    caller: Option<&Caller>,
    r: &pb::PutRequest,
) -> Result<(), Status> {
    if off(member, caller) {
        return Ok(());
    }
    permitted(member, caller, PermKind::Write, &r.key, &[])?;
    lease_keys_writable(member, caller, r.lease).await?;
    if r.prev_kv {
        permitted(member, caller, PermKind::Read, &r.key, &[])?;
    }
    Ok(())
}

pub fn delete(
    member: &Member,
    caller: Option<&Caller>,
    r: &pb::DeleteRangeRequest,
) -> Result<(), Status> {
    if off(member, caller) {
        return Ok(());
    }
    permitted(member, caller, PermKind::Write, &r.key, &r.range_end)?;
    if r.prev_kv {
        permitted(member, caller, PermKind::Read, &r.key, &r.range_end)?;
    }
    Ok(())
}

pub async fn txn(
    member: &Arc<Member>,
    caller: Option<&Caller>,
    r: &pb::TxnRequest,
) -> Result<(), Status> {
    if off(member, caller) {
        return Ok(());
    }
    let mut leases = Vec::new();
    txn_ops(member, caller, r, &mut leases)?;
    for lease in leases {
        lease_keys_writable(member, caller, lease).await?;
    }
    Ok(())
}

/// The synchronous part of [`txn`]; the leases its puts name go to `leases`.
fn txn_ops(
    member: &Member,
    caller: Option<&Caller>,
    r: &pb::TxnRequest,
    leases: &mut Vec<i64>,
) -> Result<(), Status> {
    for c in &r.compare {
        permitted(member, caller, PermKind::Read, &c.key, &c.range_end)?;
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Op::RequestRange(g)) => {
                permitted(member, caller, PermKind::Read, &g.key, &g.range_end)?
            }
            Some(Op::RequestPut(p)) => {
                permitted(member, caller, PermKind::Write, &p.key, &[])?;
                if p.prev_kv {
                    permitted(member, caller, PermKind::Read, &p.key, &[])?;
                }
                if p.lease != 0 {
                    leases.push(p.lease);
                }
            }
            Some(Op::RequestDeleteRange(d)) => {
                if d.prev_kv {
                    permitted(member, caller, PermKind::Read, &d.key, &d.range_end)?;
                }
                permitted(member, caller, PermKind::Write, &d.key, &d.range_end)?;
            }
            Some(Op::RequestTxn(t)) => txn_ops(member, caller, t, leases)?,
            None => {}
        }
    }
    Ok(())
}

/// Whether a txn only reads (then it is checked and served as a read).
pub fn txn_reads_only(r: &pb::TxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(_)) | None => true,
            Some(Op::RequestTxn(t)) => txn_reads_only(t),
            _ => false,
        })
}

/// Write on every key lease `id` holds (nothing for no lease or an unknown
/// one), as etcd checks a put with a lease and a revoke.
pub async fn lease_keys_writable(
    member: &Arc<Member>,
    caller: Option<&Caller>,
    id: i64,
) -> Result<(), Status> {
    if id == 0 || off(member, caller) || member.auth.view.admin(caller).is_ok() {
        return Ok(());
    }
    let held = member.lease_time_to_live(id, true).await?;
    for key in &held.keys {
        permitted(member, caller, PermKind::Write, key, &[])?;
    }
    Ok(())
}

/// Read on every key in a TimeToLive answer's `keys`.
pub fn keys_readable(
    member: &Member,
    caller: Option<&Caller>,
    keys: &[Vec<u8>],
) -> Result<(), Status> {
    if off(member, caller) {
        return Ok(());
    }
    for key in keys {
        permitted(member, caller, PermKind::Read, key, &[])?;
    }
    Ok(())
}

/// Root only (while auth is on), after the token is checked.
pub fn admin(member: &Member, caller: Option<&Caller>) -> Result<(), Status> {
    if off(member, caller) {
        return Ok(());
    }
    Ok(member.auth.view.admin(caller)?)
}

/// Member changes are root's: the token must be valid and name root,
/// while auth is on.
pub async fn admin_request<T>(member: &Member, req: &tonic::Request<T>) -> Result<(), Status> {
    let caller = caller_of(member, req).await?;
    admin(member, caller.as_ref())
}

/// etcd 3.4's auth errors that its Maintenance service sends unmapped:
/// code Unknown, the auth package's text.
fn unmapped(f: AuthFail) -> Status {
    Status::unknown(f.auth_text())
}

/// Hash, HashKV, Defragment and Snapshot are root's, as etcd's
/// `authMaintenanceServer` checks them: its refusals are [`unmapped`].
pub async fn admin_maintenance<T>(member: &Member, req: &tonic::Request<T>) -> Result<(), Status> {
    let caller = member
        .caller(credential(req).as_ref())
        .await
        .map_err(unmapped)?;
    if off(member, caller.as_ref()) {
        return Ok(());
    }
    member.auth.view.admin(caller.as_ref()).map_err(unmapped)
}

/// Alarm checks no right, but its token must be valid (etcd's refusal is
/// [`unmapped`]).
pub async fn valid_token_unmapped<T>(
    member: &Member,
    req: &tonic::Request<T>,
) -> Result<(), Status> {
    member
        .caller(credential(req).as_ref())
        .await
        .map(drop)
        .map_err(unmapped)
}
