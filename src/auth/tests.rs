//! The auth store's rules, one by one, against etcd 3.4's `auth/store.go`.

use super::*;
use std::sync::Arc;

fn root() -> Option<Caller> {
    Some(Caller {
        user: ROOT.into(),
        revision: u64::MAX,
    })
}

fn as_user(user: &str, revision: u64) -> Option<Caller> {
    Some(Caller {
        user: user.into(),
        revision,
    })
}

fn user_add(name: &str) -> AuthCommand {
    AuthCommand::UserAdd {
        name: name.into(),
        hash: Some(format!("hash-of-{name}")),
    }
}

fn grant(user: &str, role: &str) -> AuthCommand {
    AuthCommand::UserGrantRole {
        user: user.into(),
        role: role.into(),
    }
}

fn perm(kind: PermKind, key: &str, end: &str) -> Perm {
    Perm {
        kind,
        key: key.into(),
        range_end: end.into(),
    }
}

/// A store with root (role root), role `r` and user `u` holding `r`; auth
/// enabled if `enabled`.
fn store(enabled: bool) -> AuthStore {
    let mut s = AuthStore::default();
    for c in [
        user_add(ROOT),
        grant(ROOT, ROOT),
        AuthCommand::RoleAdd { name: "r".into() },
        user_add("u"),
        grant("u", "r"),
    ] {
        s.apply(None, &c).unwrap();
    }
    if enabled {
        s.apply(None, &AuthCommand::Enable).unwrap();
    }
    s
}

/// Applies `c`, which must fail with `fail` and change nothing.
fn refused(s: &mut AuthStore, caller: Option<&Caller>, c: AuthCommand, fail: AuthFail) {
    let before = s.clone();
    assert_eq!(s.apply(caller, &c), Err(fail), "{c:?}");
    assert_eq!(*s, before, "a refused {c:?} changed the store");
}

#[test]
fn enabling_needs_a_root_user_with_the_root_role() {
    let mut s = AuthStore::default();
    refused(
        &mut s,
        None,
        AuthCommand::Enable,
        AuthFail::RootUserNotExist,
    );
    s.apply(None, &user_add(ROOT)).unwrap();
    refused(
        &mut s,
        None,
        AuthCommand::Enable,
        AuthFail::RootRoleNotExist,
    );
    // The root role need not be added to be granted.
    s.apply(None, &grant(ROOT, ROOT)).unwrap();
    let rev = s.revision;
    s.apply(None, &AuthCommand::Enable).unwrap();
    assert!(s.enabled);
    assert_eq!(
        s.revision, rev,
        "etcd 3.4 does not bump the revision on enable"
    );
    // Again: nothing to do, no error.
    s.apply(root().as_ref(), &AuthCommand::Enable).unwrap();
    s.apply(root().as_ref(), &AuthCommand::Disable).unwrap();
    assert!(!s.enabled);
    assert_eq!(s.revision, rev + 1);
    s.apply(None, &AuthCommand::Disable).unwrap();
    assert_eq!(s.revision, rev + 1, "disabling twice is one change");
}

#[test]
fn every_change_needs_root_while_auth_is_on() {
    let mut s = store(true);
    let changes = [
        AuthCommand::Disable,
        user_add("x"),
        AuthCommand::UserDelete { name: "u".into() },
        AuthCommand::UserChangePassword {
            name: "u".into(),
            hash: "h".into(),
        },
        grant("u", ROOT),
        AuthCommand::UserRevokeRole {
            user: "u".into(),
            role: "r".into(),
        },
        AuthCommand::RoleAdd { name: "x".into() },
        AuthCommand::RoleDelete { name: "r".into() },
        AuthCommand::RoleGrantPermission {
            role: "r".into(),
            perm: perm(PermKind::Read, "k", ""),
        },
    ];
    for c in changes {
        refused(&mut s, None, c.clone(), AuthFail::UserEmpty);
        refused(
            &mut s,
            as_user("", 5).as_ref(),
            c.clone(),
            AuthFail::UserEmpty,
        );
        refused(
            &mut s,
            as_user("nobody", 5).as_ref(),
            c.clone(),
            AuthFail::UserNotFound,
        );
        refused(
            &mut s,
            as_user("u", 5).as_ref(),
            c,
            AuthFail::PermissionDenied,
        );
    }
    s.apply(root().as_ref(), &user_add("x")).unwrap();
}

#[test]
fn users_are_added_granted_revoked_and_deleted_as_in_etcd() {
    let mut s = store(false);
    refused(&mut s, None, user_add(""), AuthFail::UserEmpty);
    refused(&mut s, None, user_add("u"), AuthFail::UserAlreadyExist);
    refused(&mut s, None, grant("nobody", "r"), AuthFail::UserNotFound);
    refused(&mut s, None, grant("u", "nope"), AuthFail::RoleNotFound);
    let rev = s.revision;
    s.apply(None, &grant("u", "r")).unwrap();
    assert_eq!(s.revision, rev, "granting a held role changes nothing");
    s.apply(None, &AuthCommand::RoleAdd { name: "a".into() })
        .unwrap();
    s.apply(None, &grant("u", "a")).unwrap();
    assert_eq!(s.users["u"].roles, ["a", "r"], "roles stay sorted");
    let revoke = |role: &str| AuthCommand::UserRevokeRole {
        user: "u".into(),
        role: role.into(),
    };
    s.apply(None, &revoke("a")).unwrap();
    refused(&mut s, None, revoke("a"), AuthFail::RoleNotGranted);
    refused(
        &mut s,
        None,
        AuthCommand::UserDelete {
            name: "nobody".into(),
        },
        AuthFail::UserNotFound,
    );
    s.apply(None, &AuthCommand::UserDelete { name: "u".into() })
        .unwrap();
    assert!(!s.users.contains_key("u"));
}

#[test]
fn root_cannot_be_taken_apart_while_auth_is_on() {
    let mut s = store(true);
    let r = root();
    let r = r.as_ref();
    let revoke_root = AuthCommand::UserRevokeRole {
        user: ROOT.into(),
        role: ROOT.into(),
    };
    refused(&mut s, r, revoke_root.clone(), AuthFail::InvalidAuthMgmt);
    let delete_root = AuthCommand::UserDelete { name: ROOT.into() };
    refused(&mut s, r, delete_root.clone(), AuthFail::InvalidAuthMgmt);
    s.apply(None, &AuthCommand::RoleAdd { name: ROOT.into() })
        .unwrap_err();
    s.apply(r, &AuthCommand::RoleAdd { name: ROOT.into() })
        .unwrap();
    let delete_role = AuthCommand::RoleDelete { name: ROOT.into() };
    refused(&mut s, r, delete_role.clone(), AuthFail::InvalidAuthMgmt);
    // With auth off, all three are allowed.
    s.apply(r, &AuthCommand::Disable).unwrap();
    s.apply(None, &delete_role).unwrap();
    s.apply(None, &revoke_root).unwrap_err(); // the role went with it
    s.apply(None, &delete_root).unwrap();
}

#[test]
fn roles_and_permissions_as_in_etcd() {
    let mut s = store(false);
    refused(
        &mut s,
        None,
        AuthCommand::RoleAdd { name: "".into() },
        AuthFail::RoleEmpty,
    );
    refused(
        &mut s,
        None,
        AuthCommand::RoleAdd { name: "r".into() },
        AuthFail::RoleAlreadyExist,
    );
    let grant_perm = |role: &str, p: Perm| AuthCommand::RoleGrantPermission {
        role: role.into(),
        perm: p,
    };
    refused(
        &mut s,
        None,
        grant_perm("nope", perm(PermKind::Read, "k", "")),
        AuthFail::RoleNotFound,
    );
    s.apply(None, &grant_perm("r", perm(PermKind::Read, "m", "")))
        .unwrap();
    s.apply(None, &grant_perm("r", perm(PermKind::Read, "b", "c")))
        .unwrap();
    // The same key and range end: the type is replaced.
    s.apply(None, &grant_perm("r", perm(PermKind::Write, "m", "")))
        .unwrap();
    let perms = &s.roles["r"].perms;
    assert_eq!(
        perms,
        &[
            perm(PermKind::Read, "b", "c"),
            perm(PermKind::Write, "m", "")
        ],
        "sorted by key, m replaced"
    );
    let revoke = |key: &str, end: &str| AuthCommand::RoleRevokePermission {
        role: "r".into(),
        key: key.into(),
        range_end: end.into(),
    };
    refused(
        &mut s,
        None,
        revoke("b", ""),
        AuthFail::PermissionNotGranted,
    );
    s.apply(None, &revoke("b", "c")).unwrap();
    assert_eq!(s.roles["r"].perms.len(), 1);
    // Deleting a role takes it from its users.
    s.apply(None, &AuthCommand::RoleDelete { name: "r".into() })
        .unwrap();
    assert!(s.users["u"].roles.is_empty());
    refused(
        &mut s,
        None,
        AuthCommand::RoleDelete { name: "r".into() },
        AuthFail::RoleNotFound,
    );
}

#[test]
fn every_change_bumps_the_revision_once() {
    let mut s = store(false);
    let mut rev = s.revision;
    for c in [
        user_add("v"),
        AuthCommand::UserChangePassword {
            name: "v".into(),
            hash: "h2".into(),
        },
        AuthCommand::RoleAdd { name: "q".into() },
        grant("v", "q"),
        AuthCommand::RoleGrantPermission {
            role: "q".into(),
            perm: perm(PermKind::Read, "k", ""),
        },
        AuthCommand::RoleRevokePermission {
            role: "q".into(),
            key: "k".into(),
            range_end: "".into(),
        },
        AuthCommand::UserRevokeRole {
            user: "v".into(),
            role: "q".into(),
        },
        AuthCommand::RoleDelete { name: "q".into() },
        AuthCommand::UserDelete { name: "v".into() },
    ] {
        s.apply(None, &c).unwrap();
        assert_eq!(s.revision, rev + 1, "{c:?}");
        rev = s.revision;
    }
}

#[test]
fn logins_need_auth_on_a_known_user_with_a_password_and_a_current_check() {
    let mut s = store(false);
    let login = |user: &str, checked: u64| AuthCommand::Authenticate {
        user: user.into(),
        prefix: "p".into(),
        checked,
        at_ms: 0,
    };
    let rev = s.revision;
    refused(&mut s, None, login("u", rev), AuthFail::AuthNotEnabled);
    s.apply(None, &AuthCommand::Enable).unwrap();
    refused(&mut s, None, login("nobody", rev), AuthFail::AuthFailed);
    refused(&mut s, None, login("u", rev - 1), AuthFail::AuthOldRevision);
    s.apply(None, &login("u", rev)).unwrap();
    assert_eq!(s.revision, rev, "a login changes nothing");
    let nopw = AuthCommand::UserAdd {
        name: "n".into(),
        hash: None,
    };
    s.apply(root().as_ref(), &nopw).unwrap();
    let rev = s.revision;
    refused(&mut s, None, login("n", rev), AuthFail::AuthFailed);
    // A password change gives a no-password user a hash, not a login
    // (etcd 3.4 keeps its option).
    let change = AuthCommand::UserChangePassword {
        name: "n".into(),
        hash: "h".into(),
    };
    s.apply(root().as_ref(), &change).unwrap();
    let rev = s.revision;
    refused(&mut s, None, login("n", rev), AuthFail::AuthFailed);
}

#[test]
fn key_checks_follow_etcds_order_of_refusals() {
    let mut s = store(true);
    let r = root();
    let grant_perm = AuthCommand::RoleGrantPermission {
        role: "r".into(),
        perm: perm(PermKind::ReadWrite, "a/", "a0"),
    };
    s.apply(r.as_ref(), &grant_perm).unwrap();
    let rev = s.revision;
    let unified = |u: &str| Arc::new(s.unified(u));
    let check = |caller: Option<Caller>, kind, key: &str, end: &str| {
        s.op_permitted(
            caller.as_ref(),
            kind,
            key.as_bytes(),
            end.as_bytes(),
            unified,
        )
    };
    assert_eq!(
        check(None, PermKind::Read, "a/1", ""),
        Err(AuthFail::UserEmpty)
    );
    assert_eq!(
        check(as_user("u", 0), PermKind::Read, "a/1", ""),
        Err(AuthFail::UserEmpty)
    );
    assert_eq!(
        check(as_user("u", rev - 1), PermKind::Read, "a/1", ""),
        Err(AuthFail::AuthOldRevision)
    );
    assert_eq!(
        check(as_user("ghost", rev), PermKind::Read, "a/1", ""),
        Err(AuthFail::PermissionDenied)
    );
    assert_eq!(check(as_user("u", rev), PermKind::Write, "a/1", ""), Ok(()));
    assert_eq!(check(as_user("u", rev), PermKind::Read, "a/", "a0"), Ok(()));
    assert_eq!(
        check(as_user("u", rev), PermKind::Read, "b", ""),
        Err(AuthFail::PermissionDenied)
    );
    assert_eq!(
        check(as_user(ROOT, rev), PermKind::Write, "zz", "\0"),
        Ok(())
    );
}

#[test]
fn with_auth_off_everything_is_allowed() {
    let s = store(false);
    let none = |_: &str| -> Arc<perms::Unified> { panic!("no merge needed") };
    assert_eq!(
        s.op_permitted(None, PermKind::Write, b"k", b"", none),
        Ok(())
    );
    assert_eq!(s.admin_permitted(None), Ok(()));
}
