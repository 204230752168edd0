//! The auth store, as etcd 3.4's (`auth/store.go`): users (a bcrypt hash,
//! or none for a `--no-password` user, and their roles), roles (key
//! permissions), whether auth is enabled, and the auth revision that every
//! change bumps.
//!
//! The store is the cluster's: the meta group holds it
//! (`MetaCommand::Auth`), applies [`AuthCommand`]s to it in log order on
//! every member, and each member mirrors it in its [`view::AuthView`] for
//! the API's checks. Applying is deterministic: passwords arrive hashed
//! (the member that took the request hashed them, off the shard cores), and
//! the admin check of a change runs here, at apply, against the caller the
//! command names (etcd's `authApplierV3`), so a change refused on one member
//! is refused on all.
//!
//! Not here: tokens ([`token`], [`jwt`]) and the permission arithmetic
//! ([`perms`]).

pub mod jwt;
pub mod perms;
pub mod token;
pub mod view;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The user (and role) with every right.
pub const ROOT: &str = "root";

/// `authpb.Permission.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermKind {
    Read,
    Write,
    ReadWrite,
    /// A number etcd has no name for: kept as granted (etcd 3.4 takes any),
    /// allows nothing.
    Other(i32),
}

impl PermKind {
    pub fn from_i32(v: i32) -> PermKind {
        match v {
            0 => PermKind::Read,
            1 => PermKind::Write,
            2 => PermKind::ReadWrite,
            other => PermKind::Other(other),
        }
    }

    pub fn as_i32(self) -> i32 {
        match self {
            PermKind::Read => 0,
            PermKind::Write => 1,
            PermKind::ReadWrite => 2,
            PermKind::Other(v) => v,
        }
    }
}

/// A key permission of a role: one key (empty `range_end`), a range, or
/// from a key on (`range_end` = `\0`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Perm {
    pub kind: PermKind,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

impl Perm {
    /// As etcd's `authpb.Permission` (RoleGet, snapshots).
    pub fn to_pb(&self) -> cairn_proto::authpb::Permission {
        cairn_proto::authpb::Permission {
            perm_type: self.kind.as_i32(),
            key: self.key.clone(),
            range_end: self.range_end.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The bcrypt hash of the password (None for a user added with
    /// `no_password`, until a password change gives it one).
    pub hash: Option<String>,
    /// Added with `no_password`: never authenticates by password (a
    /// password change does not change that, as in etcd 3.4).
    pub no_password: bool,
    /// Sorted, no repeats.
    pub roles: Vec<String>,
}

impl User {
    pub fn is_root(&self) -> bool {
        self.roles
            .binary_search_by(|r| r.as_str().cmp(ROOT))
            .is_ok()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Sorted by key (etcd's order: a grant of an existing key and range
    /// end replaces its type, any other is inserted in key order).
    pub perms: Vec<Perm>,
}

/// The whole store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStore {
    pub enabled: bool,
    /// Starts at 1 (0 means "no user" in a request), +1 per change.
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthStore {
    fn default() -> Self {
        AuthStore {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

/// A change of the store (or a login), as the meta log carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    Enable,
    Disable,
    UserAdd {
        name: String,
        /// None: `no_password`.
        hash: Option<String>,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        hash: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        perm: Perm,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    /// A login whose password was checked at store revision `checked`: it
    /// is refused as old if the store changed since (the member checks
    /// again), else every member assigns the simple token
    /// `{prefix}.{log index}` to `user`.
    Authenticate {
        user: String,
        prefix: String,
        checked: u64,
        /// When the login was taken (unix ms, the taking member's clock):
        /// a member applying it later (a restart replaying its log, a
        /// member catching up) gives the token only what is left of its
        /// TTL, not a new one.
        at_ms: u64,
    },
}

impl AuthCommand {
    /// Whether the caller must be root (when auth is enabled): every
    /// change, as etcd's `needAdminPermission`; a login needs no one.
    fn needs_admin(&self) -> bool {
        !matches!(self, AuthCommand::Authenticate { .. })
    }

    /// Short, for logs (no hashes).
    pub fn name(&self) -> &'static str {
        match self {
            AuthCommand::Enable => "auth-enable",
            AuthCommand::Disable => "auth-disable",
            AuthCommand::UserAdd { .. } => "user-add",
            AuthCommand::UserDelete { .. } => "user-delete",
            AuthCommand::UserChangePassword { .. } => "user-change-password",
            AuthCommand::UserGrantRole { .. } => "user-grant-role",
            AuthCommand::UserRevokeRole { .. } => "user-revoke-role",
            AuthCommand::RoleAdd { .. } => "role-add",
            AuthCommand::RoleDelete { .. } => "role-delete",
            AuthCommand::RoleGrantPermission { .. } => "role-grant-permission",
            AuthCommand::RoleRevokePermission { .. } => "role-revoke-permission",
            AuthCommand::Authenticate { .. } => "authenticate",
        }
    }
}

/// Why the store refused a command or a check: etcd's auth errors (the API
/// maps each to its gRPC code and message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthFail {
    UserEmpty,
    UserAlreadyExist,
    UserNotFound,
    RoleEmpty,
    RoleAlreadyExist,
    RoleNotFound,
    RoleNotGranted,
    PermissionNotGranted,
    RootUserNotExist,
    RootRoleNotExist,
    InvalidAuthMgmt,
    AuthNotEnabled,
    AuthFailed,
    /// etcd's `ErrNoPasswordUser`: a password given for a no-password user.
    NoPasswordUser,
    PermissionDenied,
    AuthOldRevision,
    InvalidAuthToken,
}

impl AuthFail {
    /// The auth package's own text for the error (etcd's `auth.Err*`),
    /// which some RPCs of etcd 3.4 send as is, with code Unknown, instead
    /// of the `etcdserver:` status the others map it to.
    pub fn auth_text(self) -> &'static str {
        match self {
            AuthFail::UserEmpty => "auth: user name is empty",
            AuthFail::UserAlreadyExist => "auth: user already exists",
            AuthFail::UserNotFound => "auth: user not found",
            AuthFail::RoleEmpty => "auth: role name is empty",
            AuthFail::RoleAlreadyExist => "auth: role already exists",
            AuthFail::RoleNotFound => "auth: role not found",
            AuthFail::RoleNotGranted => "auth: role is not granted to the user",
            AuthFail::PermissionNotGranted => "auth: permission is not granted to the role",
            AuthFail::RootUserNotExist => "auth: root user does not exist",
            AuthFail::RootRoleNotExist => "auth: root user does not have root role",
            AuthFail::InvalidAuthMgmt => "auth: invalid auth management",
            AuthFail::AuthNotEnabled => "auth: authentication is not enabled",
            AuthFail::AuthFailed => "auth: authentication failed, invalid user ID or password",
            AuthFail::NoPasswordUser => {
                "auth: authentication failed, password was given for no password user"
            }
            AuthFail::PermissionDenied => "auth: permission denied",
            AuthFail::AuthOldRevision => "auth: revision in header is old",
            AuthFail::InvalidAuthToken => "auth: invalid auth token",
        }
    }
}

/// What a request proves its user with: a token (gRPC metadata), or,
/// without one, the CommonName of the client certificate its TLS
/// connection presented (with `--client-cert-auth`, as etcd's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Token(String),
    CertName(String),
}

/// Who asks: a user and the store revision their token was checked at
/// (etcd's `AuthInfo`). None: no token (and no client certificate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub user: String,
    pub revision: u64,
}

impl AuthStore {
    /// etcd's `IsAdminPermitted`.
    pub fn admin_permitted(&self, caller: Option<&Caller>) -> Result<(), AuthFail> {
        if !self.enabled {
            return Ok(());
        }
        let Some(caller) = caller.filter(|c| !c.user.is_empty()) else {
            return Err(AuthFail::UserEmpty);
        };
        match self.users.get(&caller.user) {
            None => Err(AuthFail::UserNotFound),
            Some(u) if !u.is_root() => Err(AuthFail::PermissionDenied),
            Some(_) => Ok(()),
        }
    }

    /// etcd's `isOpPermitted` for `kind` on a key or range, with the
    /// user's merged permissions (computed by `unified` on demand, so a
    /// root or refused caller costs no merge).
    pub fn op_permitted(
        &self,
        caller: Option<&Caller>,
        kind: PermKind,
        key: &[u8],
        range_end: &[u8],
        unified: impl FnOnce(&str) -> std::sync::Arc<perms::Unified>,
    ) -> Result<(), AuthFail> {
        if !self.enabled {
            return Ok(());
        }
        let Some(caller) = caller.filter(|c| c.revision != 0) else {
            return Err(AuthFail::UserEmpty);
        };
        if caller.revision < self.revision {
            return Err(AuthFail::AuthOldRevision);
        }
        match self.users.get(&caller.user) {
            None => Err(AuthFail::PermissionDenied),
            Some(u) if u.is_root() => Ok(()),
            Some(_) if unified(&caller.user).allows(kind, key, range_end) => Ok(()),
            Some(_) => Err(AuthFail::PermissionDenied),
        }
    }

    /// The merged permissions of `user` (empty for an unknown one).
    pub fn unified(&self, user: &str) -> perms::Unified {
        let Some(u) = self.users.get(user) else {
            return perms::Unified::default();
        };
        perms::Unified::of(
            u.roles
                .iter()
                .filter_map(|r| self.roles.get(r))
                .flat_map(|r| r.perms.iter()),
        )
    }

    /// Applies `command` asked by `caller`: the store after it, or why not
    /// (then nothing changed).
    pub fn apply(
        &mut self,
        caller: Option<&Caller>,
        command: &AuthCommand,
    ) -> Result<(), AuthFail> {
        if command.needs_admin() {
            self.admin_permitted(caller)?;
        }
        match command {
            AuthCommand::Enable => {
                if self.enabled {
                    return Ok(());
                }
                match self.users.get(ROOT) {
                    None => return Err(AuthFail::RootUserNotExist),
                    Some(u) if !u.is_root() => return Err(AuthFail::RootRoleNotExist),
                    Some(_) => {}
                }
                // etcd 3.4 does not bump the revision here.
                self.enabled = true;
                return Ok(());
            }
            AuthCommand::Disable => {
                if !self.enabled {
                    return Ok(());
                }
                self.enabled = false;
            }
            AuthCommand::UserAdd { name, hash } => {
                if name.is_empty() {
                    return Err(AuthFail::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthFail::UserAlreadyExist);
                }
                let user = User {
                    hash: hash.clone(),
                    no_password: hash.is_none(),
                    roles: Vec::new(),
                };
                self.users.insert(name.clone(), user);
            }
            AuthCommand::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthFail::InvalidAuthMgmt);
                }
                if self.users.remove(name).is_none() {
                    return Err(AuthFail::UserNotFound);
                }
            }
            AuthCommand::UserChangePassword { name, hash } => {
                let Some(user) = self.users.get_mut(name) else {
                    return Err(AuthFail::UserNotFound);
                };
                // etcd 3.4 gives a no-password user a hash here, but it
                // stays a no-password user.
                user.hash = Some(hash.clone());
            }
            AuthCommand::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(AuthFail::UserNotFound);
                }
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(AuthFail::RoleNotFound);
                }
                let u = self.users.get_mut(user).expect("checked above");
                match u.roles.binary_search(role) {
                    // Granted already: ignored, no new revision.
                    Ok(_) => return Ok(()),
                    Err(at) => u.roles.insert(at, role.clone()),
                }
            }
            AuthCommand::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(AuthFail::InvalidAuthMgmt);
                }
                let Some(u) = self.users.get_mut(user) else {
                    return Err(AuthFail::UserNotFound);
                };
                match u.roles.binary_search(role) {
                    Ok(at) => {
                        u.roles.remove(at);
                    }
                    Err(_) => return Err(AuthFail::RoleNotGranted),
                }
            }
            AuthCommand::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthFail::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthFail::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
            }
            AuthCommand::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthFail::InvalidAuthMgmt);
                }
                if self.roles.remove(name).is_none() {
                    return Err(AuthFail::RoleNotFound);
                }
                for u in self.users.values_mut() {
                    u.roles.retain(|r| r != name);
                }
            }
            AuthCommand::RoleGrantPermission { role, perm } => {
                let Some(r) = self.roles.get_mut(role) else {
                    return Err(AuthFail::RoleNotFound);
                };
                let at = r.perms.partition_point(|p| p.key < perm.key);
                match r.perms.get_mut(at) {
                    Some(p) if p.key == perm.key && p.range_end == perm.range_end => {
                        p.kind = perm.kind;
                    }
                    _ => {
                        // After the others with this key, as Go's stable
                        // sort leaves an appended one.
                        let at = r.perms.partition_point(|p| p.key <= perm.key);
                        r.perms.insert(at, perm.clone());
                    }
                }
            }
            AuthCommand::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let Some(r) = self.roles.get_mut(role) else {
                    return Err(AuthFail::RoleNotFound);
                };
                let before = r.perms.len();
                r.perms
                    .retain(|p| !(p.key == *key && p.range_end == *range_end));
                if r.perms.len() == before {
                    return Err(AuthFail::PermissionNotGranted);
                }
            }
            AuthCommand::Authenticate { user, checked, .. } => {
                if !self.enabled {
                    return Err(AuthFail::AuthNotEnabled);
                }
                match self.users.get(user) {
                    None => return Err(AuthFail::AuthFailed),
                    Some(u) if u.no_password => return Err(AuthFail::AuthFailed),
                    Some(_) => {}
                }
                if *checked != self.revision {
                    return Err(AuthFail::AuthOldRevision);
                }
                // A login changes nothing in the store.
                return Ok(());
            }
        }
        self.revision += 1;
        Ok(())
    }
}

/// Hashes a password with bcrypt at `cost` (slow on purpose: run it off
/// the shard cores and the front runtime's workers).
pub fn hash_password(password: &str, cost: u32) -> Result<String, String> {
    bcrypt::hash(password, cost).map_err(|e| format!("hashing a password: {e}"))
}

/// Whether `password` matches `hash` (false for a malformed hash).
pub fn password_matches(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

#[cfg(test)]
mod tests;
