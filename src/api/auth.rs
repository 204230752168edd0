//! The Auth service: etcd's messages to the member's auth calls
//! (`crate::member::auth`) and back.
//!
//! Changes go through the meta group, where the admin check runs (root
//! only while auth is on). Reads of the store (UserGet, UserList, RoleGet,
//! RoleList, AuthStatus) are answered from this member's applied store
//! once it holds every change acknowledged before the call (as etcd 3.4
//! serves them through its log), with etcd 3.4's rules: the lists need
//! root; a user may get itself, and a role it holds. Passwords are hashed here (bounded, off the shard
//! cores) before a change is proposed; the caller's rights are checked
//! first, so nobody but root makes the member hash.

use crate::auth::{AuthCommand, Caller, Perm, PermKind};
use crate::member::Member;
use cairn_proto::etcdserverpb as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AuthService(pub Arc<Member>);

impl AuthService {
    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.0.header(self.0.seq.committed(), self.0.raft_term()))
    }

    /// The caller, for an RPC a learner does not serve.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Option<Caller>, Status> {
        self.0.not_a_learner()?;
        super::access::caller_of(&self.0, req).await
    }

    /// The caller, for a read of the store: this member first catches up
    /// with the write leader's store.
    async fn reader<T>(&self, req: &Request<T>) -> Result<Option<Caller>, Status> {
        self.0.not_a_learner()?;
        self.0.auth_caught_up().await?;
        super::access::caller_of(&self.0, req).await
    }

    async fn change<T>(&self, req: &Request<T>, command: AuthCommand) -> Result<(), Status> {
        let caller = self.caller(req).await?;
        self.0.auth_change_done(caller, command).await
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        self.change(&request, AuthCommand::Enable).await?;
        Ok(Response::new(pb::AuthEnableResponse {
            header: self.header(),
        }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        self.change(&request, AuthCommand::Disable).await?;
        Ok(Response::new(pb::AuthDisableResponse {
            header: self.header(),
        }))
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        // etcd 3.5 answers anyone (a token, if sent, must be valid).
        self.reader(&request).await?;
        let (enabled, auth_revision) = {
            let store = self.0.auth.view.store();
            (store.enabled, store.revision)
        };
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.header(),
            enabled,
            auth_revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        self.0.not_a_learner()?;
        let conn = super::access::connection(request.extensions());
        let r = request.into_inner();
        let token = self.0.authenticate(conn, &r.name, &r.password).await?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: self.header(),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let caller = self.caller(&request).await?;
        super::access::admin(&self.0, caller.as_ref())?;
        let r = request.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        let hash = if no_password || r.name.is_empty() {
            None
        } else {
            Some(self.0.auth.hash(r.password).await?)
        };
        let command = AuthCommand::UserAdd { name: r.name, hash };
        self.0.auth_change_done(caller, command).await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: self.header(),
        }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let caller = self.reader(&request).await?;
        let name = request.into_inner().name;
        if let Err(e) = super::access::admin(&self.0, caller.as_ref()) {
            // etcd compares the name with the caller's, "" without a token.
            if caller.as_ref().map_or("", |c| c.user.as_str()) != name {
                return Err(e);
            }
        }
        let roles = match self.0.auth.view.store().users.get(&name) {
            Some(u) => u.roles.clone(),
            None => return Err(crate::auth::AuthFail::UserNotFound.into()),
        };
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let caller = self.reader(&request).await?;
        super::access::admin(&self.0, caller.as_ref())?;
        let users = self.0.auth.view.store().users.keys().cloned().collect();
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.header(),
            users,
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let name = request.get_ref().name.clone();
        self.change(&request, AuthCommand::UserDelete { name })
            .await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: self.header(),
        }))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let caller = self.caller(&request).await?;
        super::access::admin(&self.0, caller.as_ref())?;
        let r = request.into_inner();
        if !self.0.auth.view.store().users.contains_key(&r.name) {
            return Err(crate::auth::AuthFail::UserNotFound.into());
        }
        let hash = self.0.auth.hash(r.password).await?;
        let command = AuthCommand::UserChangePassword { name: r.name, hash };
        self.0.auth_change_done(caller, command).await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: self.header(),
        }))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = request.get_ref();
        let command = AuthCommand::UserGrantRole {
            user: r.user.clone(),
            role: r.role.clone(),
        };
        self.change(&request, command).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: self.header(),
        }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = request.get_ref();
        let command = AuthCommand::UserRevokeRole {
            user: r.name.clone(),
            role: r.role.clone(),
        };
        self.change(&request, command).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: self.header(),
        }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let name = request.get_ref().name.clone();
        self.change(&request, AuthCommand::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: self.header(),
        }))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let caller = self.reader(&request).await?;
        let role = request.into_inner().role;
        let store = self.0.auth.view.store();
        if let Err(e) = store.admin_permitted(caller.as_ref()) {
            let holds = caller
                .as_ref()
                .and_then(|c| store.users.get(&c.user))
                .is_some_and(|u| u.roles.contains(&role));
            if !holds {
                return Err(e.into());
            }
        }
        let Some(r) = store.roles.get(&role) else {
            return Err(crate::auth::AuthFail::RoleNotFound.into());
        };
        let perm = r.perms.iter().map(crate::auth::Perm::to_pb).collect();
        drop(store);
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.header(),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let caller = self.reader(&request).await?;
        super::access::admin(&self.0, caller.as_ref())?;
        let roles = self.0.auth.view.store().roles.keys().cloned().collect();
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let name = request.get_ref().role.clone();
        self.change(&request, AuthCommand::RoleDelete { name })
            .await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: self.header(),
        }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = request.get_ref();
        // etcd 3.4 crashes on a grant without a permission; 3.5 answers this.
        let Some(p) = &r.perm else {
            return Err(Status::invalid_argument("etcdserver: permission not given"));
        };
        // Any type is kept, as etcd keeps it (one it does not know grants
        // nothing).
        let kind = PermKind::from_i32(p.perm_type);
        let command = AuthCommand::RoleGrantPermission {
            role: r.name.clone(),
            perm: Perm {
                kind,
                key: p.key.clone(),
                range_end: p.range_end.clone(),
            },
        };
        self.change(&request, command).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: self.header(),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = request.get_ref();
        let command = AuthCommand::RoleRevokePermission {
            role: r.role.clone(),
            key: r.key.clone(),
            range_end: r.range_end.clone(),
        };
        self.change(&request, command).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: self.header(),
        }))
    }
}
