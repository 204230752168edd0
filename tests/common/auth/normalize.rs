//! Answers as they are compared: `ok <what>` or `ERR <code>: <message>`,
//! headers reduced to their revision, tokens to their shape.

use super::{authpb, pb};
use cairn_proto::mvccpb;

/// An answer as it is compared: `ok <what>` or `ERR <code>: <message>`.
pub fn err(s: &tonic::Status) -> String {
    format!("ERR {:?}: {}", s.code(), s.message())
}

/// A response as it is compared (header: its revision alone).
pub trait Show {
    fn show(&self) -> String;
}

pub fn hdr(h: &Option<pb::ResponseHeader>) -> String {
    match h {
        None => "no header".into(),
        Some(h) => format!("rev {}", h.revision),
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn kv(kv: &mvccpb::KeyValue) -> String {
    format!(
        "{}={} c{} m{} v{} l{}",
        text(&kv.key),
        text(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

fn kvs(v: &[mvccpb::KeyValue]) -> String {
    v.iter().map(kv).collect::<Vec<_>>().join(", ")
}

pub fn perm(p: &authpb::Permission) -> String {
    let t = authpb::permission::Type::try_from(p.perm_type)
        .map(|t| format!("{t:?}"))
        .unwrap_or_else(|_| format!("type {}", p.perm_type));
    format!("{t} [{:?}, {:?})", text(&p.key), text(&p.range_end))
}

macro_rules! show_header_only {
    ($($t:ty),*) => {$(
        impl Show for $t {
            fn show(&self) -> String {
                hdr(&self.header)
            }
        }
    )*};
}

show_header_only!(
    pb::AuthEnableResponse,
    pb::AuthDisableResponse,
    pb::AuthUserAddResponse,
    pb::AuthUserDeleteResponse,
    pb::AuthUserChangePasswordResponse,
    pb::AuthUserGrantRoleResponse,
    pb::AuthUserRevokeRoleResponse,
    pb::AuthRoleAddResponse,
    pb::AuthRoleDeleteResponse,
    pb::AuthRoleGrantPermissionResponse,
    pb::AuthRoleRevokePermissionResponse,
    pb::LeaseRevokeResponse,
    pb::CompactionResponse,
    pb::DefragmentResponse
);

impl Show for pb::AuthUserGetResponse {
    fn show(&self) -> String {
        format!("{} roles {:?}", hdr(&self.header), self.roles)
    }
}

impl Show for pb::AuthUserListResponse {
    fn show(&self) -> String {
        format!("{} users {:?}", hdr(&self.header), self.users)
    }
}

impl Show for pb::AuthRoleListResponse {
    fn show(&self) -> String {
        format!("{} roles {:?}", hdr(&self.header), self.roles)
    }
}

impl Show for pb::AuthRoleGetResponse {
    fn show(&self) -> String {
        let perms: Vec<String> = self.perm.iter().map(perm).collect();
        format!("{} perms {perms:?}", hdr(&self.header))
    }
}

impl Show for pb::AuthenticateResponse {
    fn show(&self) -> String {
        format!("{} {}", hdr(&self.header), token_shape(&self.token))
    }
}

impl Show for pb::RangeResponse {
    fn show(&self) -> String {
        format!(
            "{} count {} more {} [{}]",
            hdr(&self.header),
            self.count,
            self.more,
            kvs(&self.kvs)
        )
    }
}

impl Show for pb::PutResponse {
    fn show(&self) -> String {
        match &self.prev_kv {
            None => hdr(&self.header),
            Some(p) => format!("{} prev {}", hdr(&self.header), kv(p)),
        }
    }
}

impl Show for pb::DeleteRangeResponse {
    fn show(&self) -> String {
        format!(
            "{} deleted {} prev [{}]",
            hdr(&self.header),
            self.deleted,
            kvs(&self.prev_kvs)
        )
    }
}

impl Show for pb::TxnResponse {
    fn show(&self) -> String {
        use pb::response_op::Response as R;
        let ops: Vec<String> = self
            .responses
            .iter()
            .map(|op| match &op.response {
                Some(R::ResponseRange(r)) => format!("range({})", r.show()),
                Some(R::ResponsePut(r)) => format!("put({})", r.show()),
                Some(R::ResponseDeleteRange(r)) => format!("delete({})", r.show()),
                Some(R::ResponseTxn(r)) => format!("txn({})", r.show()),
                None => "none".into(),
            })
            .collect();
        format!("{} succeeded {} {ops:?}", hdr(&self.header), self.succeeded)
    }
}

impl Show for pb::LeaseGrantResponse {
    fn show(&self) -> String {
        format!(
            "{} ID {} TTL {} error {:?}",
            hdr(&self.header),
            self.id,
            self.ttl,
            self.error
        )
    }
}

impl Show for pb::LeaseTimeToLiveResponse {
    fn show(&self) -> String {
        let mut keys: Vec<String> = self.keys.iter().map(|k| text(k)).collect();
        keys.sort();
        // The remaining TTL is the clock's: only whether it is left.
        format!(
            "ID {} TTL left {} granted {} keys {keys:?}",
            self.id,
            self.ttl > 0,
            self.granted_ttl
        )
    }
}

impl Show for pb::StatusResponse {
    fn show(&self) -> String {
        // (The version is the server's: cairn says 3.4.0.)
        hdr(&self.header)
    }
}

impl Show for pb::AlarmResponse {
    fn show(&self) -> String {
        format!("{} alarms {}", hdr(&self.header), self.alarms.len())
    }
}

impl Show for pb::HashResponse {
    fn show(&self) -> String {
        hdr(&self.header)
    }
}

impl Show for pb::HashKvResponse {
    fn show(&self) -> String {
        hdr(&self.header)
    }
}

impl Show for pb::MoveLeaderResponse {
    fn show(&self) -> String {
        hdr(&self.header)
    }
}

impl Show for pb::MemberListResponse {
    fn show(&self) -> String {
        format!("{} members {}", hdr(&self.header), self.members.len())
    }
}

impl Show for pb::MemberAddResponse {
    fn show(&self) -> String {
        format!("{} members {}", hdr(&self.header), self.members.len())
    }
}

impl Show for pb::WatchResponse {
    fn show(&self) -> String {
        let evs: Vec<String> = self
            .events
            .iter()
            .map(|e| {
                let t = if e.r#type == 0 { "PUT" } else { "DELETE" };
                format!("{t} {}", e.kv.as_ref().map(kv).unwrap_or_default())
            })
            .collect();
        format!(
            "{} id {} created {} canceled {} reason {:?} compact {} events {evs:?}",
            hdr(&self.header),
            self.watch_id,
            self.created,
            self.canceled,
            self.cancel_reason,
            self.compact_revision
        )
    }
}

/// A token as compared: a simple token's text is random (etcd 3.4: 16
/// letters, a dot, the raft index), a JWT's claims are the user and the
/// auth revision.
pub fn token_shape(token: &str) -> String {
    match jwt_claims(token) {
        Some(c) => format!("jwt user {} revision {}", c["username"], c["revision"]),
        None if token.is_empty() => "no token".into(),
        None => "simple token".into(),
    }
}

/// The claims of a JWT (not verified), if `token` is one.
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_, claims, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64url(claims)?;
    serde_json::from_slice(&bytes).ok()
}

fn base64url(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
