//! etcd's gRPC errors: one table of code and exact message per error. Clients
//! match on the message text (etcd's `rpctypes.Error`), so the strings are the
//! contract; `tests` pins every row.

use tonic::{Code, Status};

/// Declares [`EtcdError`] and [`EtcdError::ALL`] from one list.
macro_rules! etcd_errors {
    ($($variant:ident,)*) => {
        /// An etcd API error. [`EtcdError::status`] gives the gRPC status clients see.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum EtcdError {
            $($variant,)*
        }

        impl EtcdError {
            /// Every error, for tables and tests.
            pub const ALL: [EtcdError; [$(EtcdError::$variant,)*].len()] =
                [$(EtcdError::$variant,)*];
        }
    };
}

etcd_errors! {
    EmptyKey,
    KeyNotFound,
    ValueProvided,
    LeaseProvided,
    TooManyOps,
    DuplicateKey,
    Compacted,
    FutureRev,
    NoSpace,
    LeaseNotFound,
    LeaseExist,
    LeaseTtlTooLarge,
    MemberExist,
    PeerUrlExist,
    MemberNotEnoughStarted,
    MemberBadUrls,
    MemberNotFound,
    RequestTooLarge,
    TooManyRequests,
    RootUserNotExist,
    RootRoleNotExist,
    UserAlreadyExist,
    UserEmpty,
    UserNotFound,
    RoleAlreadyExist,
    RoleNotFound,
    RoleEmpty,
    AuthFailed,
    PermissionDenied,
    RoleNotGranted,
    PermissionNotGranted,
    AuthNotEnabled,
    InvalidAuthToken,
    InvalidAuthMgmt,
    AuthOldRevision,
    NoLeader,
    NotLeader,
    LeaderChanged,
    NotCapable,
    Stopped,
    Timeout,
    TimeoutDueToLeaderFail,
    TimeoutDueToConnectionLost,
    Unhealthy,
    Corrupt,
    BadLeaderTransferee,
    DiskFull,
    TooManyLearners,
    LearnerNotReady,
    MemberNotLearner,
    NotSupportedForLearner,
}

impl EtcdError {
    /// The gRPC code and the exact message etcd 3.4 sends.
    pub fn code_and_message(self) -> (Code, &'static str) {
        use Code::*;
        use EtcdError as E;
        match self {
            E::EmptyKey => (InvalidArgument, "etcdserver: key is not provided"),
            E::KeyNotFound => (InvalidArgument, "etcdserver: key not found"),
            E::ValueProvided => (InvalidArgument, "etcdserver: value is provided"),
            E::LeaseProvided => (InvalidArgument, "etcdserver: lease is provided"),
            E::TooManyOps => (
                InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            E::DuplicateKey => (
                InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            E::Compacted => (
                OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            E::FutureRev => (
                OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            E::NoSpace => (
                ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            E::LeaseNotFound => (NotFound, "etcdserver: requested lease not found"),
            E::LeaseExist => (FailedPrecondition, "etcdserver: lease already exists"),
            E::LeaseTtlTooLarge => (OutOfRange, "etcdserver: too large lease TTL"),
            E::MemberExist => (FailedPrecondition, "etcdserver: member ID already exist"),
            E::PeerUrlExist => (FailedPrecondition, "etcdserver: Peer URLs already exists"),
            E::MemberNotEnoughStarted => (
                FailedPrecondition,
                "etcdserver: re-configuration failed due to not enough started members",
            ),
            E::MemberBadUrls => (InvalidArgument, "etcdserver: given member URLs are invalid"),
            E::MemberNotFound => (NotFound, "etcdserver: member not found"),
            E::TooManyLearners => (
                FailedPrecondition,
                "etcdserver: too many learner members in cluster",
            ),
            E::LearnerNotReady => (
                FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            E::MemberNotLearner => (
                FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            E::NotSupportedForLearner => (Unavailable, "etcdserver: rpc not supported for learner"),
            E::RequestTooLarge => (InvalidArgument, "etcdserver: request is too large"),
            E::TooManyRequests => (ResourceExhausted, "etcdserver: too many requests"),
            E::RootUserNotExist => (FailedPrecondition, "etcdserver: root user does not exist"),
            E::RootRoleNotExist => (
                FailedPrecondition,
                "etcdserver: root user does not have root role",
            ),
            E::UserAlreadyExist => (FailedPrecondition, "etcdserver: user name already exists"),
            E::UserEmpty => (InvalidArgument, "etcdserver: user name is empty"),
            E::UserNotFound => (FailedPrecondition, "etcdserver: user name not found"),
            E::RoleAlreadyExist => (FailedPrecondition, "etcdserver: role name already exists"),
            E::RoleNotFound => (FailedPrecondition, "etcdserver: role name not found"),
            E::RoleEmpty => (InvalidArgument, "etcdserver: role name is empty"),
            E::AuthFailed => (
                InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            E::PermissionDenied => (PermissionDenied, "etcdserver: permission denied"),
            E::RoleNotGranted => (
                FailedPrecondition,
                "etcdserver: role is not granted to the user",
            ),
            E::PermissionNotGranted => (
                FailedPrecondition,
                "etcdserver: permission is not granted to the role",
            ),
            E::AuthNotEnabled => (
                FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
            E::InvalidAuthToken => (Unauthenticated, "etcdserver: invalid auth token"),
            E::InvalidAuthMgmt => (InvalidArgument, "etcdserver: invalid auth management"),
            E::AuthOldRevision => (
                InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
            E::NoLeader => (Unavailable, "etcdserver: no leader"),
            E::NotLeader => (FailedPrecondition, "etcdserver: not leader"),
            E::LeaderChanged => (Unavailable, "etcdserver: leader changed"),
            E::NotCapable => (Unavailable, "etcdserver: not capable"),
            E::Stopped => (Unavailable, "etcdserver: server stopped"),
            E::Timeout => (Unavailable, "etcdserver: request timed out"),
            E::TimeoutDueToLeaderFail => (
                Unavailable,
                "etcdserver: request timed out, possibly due to previous leader failure",
            ),
            E::TimeoutDueToConnectionLost => (
                Unavailable,
                "etcdserver: request timed out, possibly due to connection lost",
            ),
            E::Unhealthy => (Unavailable, "etcdserver: unhealthy cluster"),
            E::Corrupt => (DataLoss, "etcdserver: corrupt cluster"),
            E::BadLeaderTransferee => (FailedPrecondition, "etcdserver: bad leader transferee"),
            // cairn's own: no room for the WAL's next segment (etcd has no
            // such answer: it stops). Nothing changed; writes resume once
            // there is room.
            E::DiskFull => (
                ResourceExhausted,
                "cairn: no space left on the data dir's device for the log; writes resume once there is room",
            ),
        }
    }

    pub fn code(self) -> Code {
        self.code_and_message().0
    }

    pub fn message(self) -> &'static str {
        self.code_and_message().1
    }

    /// The gRPC status sent to clients.
    pub fn status(self) -> Status {
        let (code, message) = self.code_and_message();
        Status::new(code, message)
    }
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for EtcdError {}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Self {
        e.status()
    }
}

impl From<crate::auth::AuthFail> for Status {
    /// etcd's answer for each auth error (`v3rpc/util.go`); the one it
    /// does not map travels as Unknown with the auth package's text.
    fn from(f: crate::auth::AuthFail) -> Self {
        use crate::auth::AuthFail as F;
        let e = match f {
            F::UserEmpty => EtcdError::UserEmpty,
            F::UserAlreadyExist => EtcdError::UserAlreadyExist,
            F::UserNotFound => EtcdError::UserNotFound,
            F::RoleEmpty => EtcdError::RoleEmpty,
            F::RoleAlreadyExist => EtcdError::RoleAlreadyExist,
            F::RoleNotFound => EtcdError::RoleNotFound,
            F::RoleNotGranted => EtcdError::RoleNotGranted,
            F::PermissionNotGranted => EtcdError::PermissionNotGranted,
            F::RootUserNotExist => EtcdError::RootUserNotExist,
            F::RootRoleNotExist => EtcdError::RootRoleNotExist,
            F::InvalidAuthMgmt => EtcdError::InvalidAuthMgmt,
            F::AuthNotEnabled => EtcdError::AuthNotEnabled,
            F::AuthFailed => EtcdError::AuthFailed,
            F::PermissionDenied => EtcdError::PermissionDenied,
            F::AuthOldRevision => EtcdError::AuthOldRevision,
            F::InvalidAuthToken => EtcdError::InvalidAuthToken,
            F::NoPasswordUser => return Status::unknown(f.auth_text()),
        };
        e.status()
    }
}

impl From<crate::mvcc::MvccError> for EtcdError {
    fn from(e: crate::mvcc::MvccError) -> Self {
        match e {
            crate::mvcc::MvccError::Compacted => EtcdError::Compacted,
            crate::mvcc::MvccError::FutureRevision => EtcdError::FutureRev,
        }
    }
}

impl From<crate::shard::ShardError> for EtcdError {
    fn from(e: crate::shard::ShardError) -> Self {
        use crate::shard::ShardError;
        match e {
            ShardError::Eval(e) => e.into(),
            ShardError::TooLarge => EtcdError::RequestTooLarge,
            ShardError::NoSpace => EtcdError::DiskFull,
            ShardError::Stopped => EtcdError::Stopped,
            ShardError::NotLeader | ShardError::LeaderChanged => EtcdError::LeaderChanged,
        }
    }
}

impl From<crate::shard::ShardError> for tonic::Status {
    fn from(e: crate::shard::ShardError) -> Self {
        EtcdError::from(e).status()
    }
}

impl From<crate::mvcc::txn::EvalError> for EtcdError {
    fn from(e: crate::mvcc::txn::EvalError) -> Self {
        use crate::mvcc::txn::EvalError;
        match e {
            EvalError::Mvcc(m) => m.into(),
            EvalError::KeyNotFound => EtcdError::KeyNotFound,
            EvalError::LeaseNotFound => EtcdError::LeaseNotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// One row per error: (error, code, message), as etcd 3.4 sends them.
    const TABLE: &[(EtcdError, Code, &str)] = &[
        (
            EtcdError::EmptyKey,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            EtcdError::KeyNotFound,
            Code::InvalidArgument,
            "etcdserver: key not found",
        ),
        (
            EtcdError::ValueProvided,
            Code::InvalidArgument,
            "etcdserver: value is provided",
        ),
        (
            EtcdError::LeaseProvided,
            Code::InvalidArgument,
            "etcdserver: lease is provided",
        ),
        (
            EtcdError::TooManyOps,
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        (
            EtcdError::DuplicateKey,
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ),
        (
            EtcdError::Compacted,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            EtcdError::FutureRev,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            EtcdError::NoSpace,
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        ),
        (
            EtcdError::LeaseNotFound,
            Code::NotFound,
            "etcdserver: requested lease not found",
        ),
        (
            EtcdError::LeaseExist,
            Code::FailedPrecondition,
            "etcdserver: lease already exists",
        ),
        (
            EtcdError::LeaseTtlTooLarge,
            Code::OutOfRange,
            "etcdserver: too large lease TTL",
        ),
        (
            EtcdError::MemberExist,
            Code::FailedPrecondition,
            "etcdserver: member ID already exist",
        ),
        (
            EtcdError::PeerUrlExist,
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        ),
        (
            EtcdError::MemberNotEnoughStarted,
            Code::FailedPrecondition,
            "etcdserver: re-configuration failed due to not enough started members",
        ),
        (
            EtcdError::MemberBadUrls,
            Code::InvalidArgument,
            "etcdserver: given member URLs are invalid",
        ),
        (
            EtcdError::MemberNotFound,
            Code::NotFound,
            "etcdserver: member not found",
        ),
        (
            EtcdError::RequestTooLarge,
            Code::InvalidArgument,
            "etcdserver: request is too large",
        ),
        (
            EtcdError::TooManyRequests,
            Code::ResourceExhausted,
            "etcdserver: too many requests",
        ),
        (
            EtcdError::RootUserNotExist,
            Code::FailedPrecondition,
            "etcdserver: root user does not exist",
        ),
        (
            EtcdError::RootRoleNotExist,
            Code::FailedPrecondition,
            "etcdserver: root user does not have root role",
        ),
        (
            EtcdError::UserAlreadyExist,
            Code::FailedPrecondition,
            "etcdserver: user name already exists",
        ),
        (
            EtcdError::UserEmpty,
            Code::InvalidArgument,
            "etcdserver: user name is empty",
        ),
        (
            EtcdError::UserNotFound,
            Code::FailedPrecondition,
            "etcdserver: user name not found",
        ),
        (
            EtcdError::RoleAlreadyExist,
            Code::FailedPrecondition,
            "etcdserver: role name already exists",
        ),
        (
            EtcdError::RoleNotFound,
            Code::FailedPrecondition,
            "etcdserver: role name not found",
        ),
        (
            EtcdError::RoleEmpty,
            Code::InvalidArgument,
            "etcdserver: role name is empty",
        ),
        (
            EtcdError::AuthFailed,
            Code::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password",
        ),
        (
            EtcdError::PermissionDenied,
            Code::PermissionDenied,
            "etcdserver: permission denied",
        ),
        (
            EtcdError::RoleNotGranted,
            Code::FailedPrecondition,
            "etcdserver: role is not granted to the user",
        ),
        (
            EtcdError::PermissionNotGranted,
            Code::FailedPrecondition,
            "etcdserver: permission is not granted to the role",
        ),
        (
            EtcdError::AuthNotEnabled,
            Code::FailedPrecondition,
            "etcdserver: authentication is not enabled",
        ),
        (
            EtcdError::InvalidAuthToken,
            Code::Unauthenticated,
            "etcdserver: invalid auth token",
        ),
        (
            EtcdError::InvalidAuthMgmt,
            Code::InvalidArgument,
            "etcdserver: invalid auth management",
        ),
        (
            EtcdError::AuthOldRevision,
            Code::InvalidArgument,
            "etcdserver: revision of auth store is old",
        ),
        (
            EtcdError::NoLeader,
            Code::Unavailable,
            "etcdserver: no leader",
        ),
        (
            EtcdError::NotLeader,
            Code::FailedPrecondition,
            "etcdserver: not leader",
        ),
        (
            EtcdError::LeaderChanged,
            Code::Unavailable,
            "etcdserver: leader changed",
        ),
        (
            EtcdError::NotCapable,
            Code::Unavailable,
            "etcdserver: not capable",
        ),
        (
            EtcdError::Stopped,
            Code::Unavailable,
            "etcdserver: server stopped",
        ),
        (
            EtcdError::DiskFull,
            Code::ResourceExhausted,
            "cairn: no space left on the data dir's device for the log; writes resume once there is room",
        ),
        (
            EtcdError::Timeout,
            Code::Unavailable,
            "etcdserver: request timed out",
        ),
        (
            EtcdError::TimeoutDueToLeaderFail,
            Code::Unavailable,
            "etcdserver: request timed out, possibly due to previous leader failure",
        ),
        (
            EtcdError::TimeoutDueToConnectionLost,
            Code::Unavailable,
            "etcdserver: request timed out, possibly due to connection lost",
        ),
        (
            EtcdError::Unhealthy,
            Code::Unavailable,
            "etcdserver: unhealthy cluster",
        ),
        (
            EtcdError::Corrupt,
            Code::DataLoss,
            "etcdserver: corrupt cluster",
        ),
        (
            EtcdError::BadLeaderTransferee,
            Code::FailedPrecondition,
            "etcdserver: bad leader transferee",
        ),
        (
            EtcdError::TooManyLearners,
            Code::FailedPrecondition,
            "etcdserver: too many learner members in cluster",
        ),
        (
            EtcdError::LearnerNotReady,
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        (
            EtcdError::MemberNotLearner,
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member",
        ),
        (
            EtcdError::NotSupportedForLearner,
            Code::Unavailable,
            "etcdserver: rpc not supported for learner",
        ),
    ];

    #[test]
    fn every_row_has_etcds_code_and_message() {
        for &(err, code, message) in TABLE {
            let status = err.status();
            assert_eq!(status.code(), code, "{err:?}");
            assert_eq!(status.message(), message, "{err:?}");
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn the_table_covers_every_error_once() {
        let in_table: HashSet<EtcdError> = TABLE.iter().map(|r| r.0).collect();
        assert_eq!(in_table.len(), TABLE.len(), "no error twice");
        assert_eq!(
            in_table,
            EtcdError::ALL.into_iter().collect(),
            "every error has a row"
        );
        let messages: HashSet<&str> = TABLE.iter().map(|r| r.2).collect();
        assert_eq!(
            messages.len(),
            TABLE.len(),
            "messages are distinct (clients match on them)"
        );
    }

    #[test]
    fn mvcc_errors_map_to_etcds() {
        assert_eq!(
            EtcdError::from(crate::mvcc::MvccError::Compacted),
            EtcdError::Compacted
        );
        assert_eq!(
            EtcdError::from(crate::mvcc::MvccError::FutureRevision),
            EtcdError::FutureRev
        );
        assert_eq!(
            crate::mvcc::MvccError::Compacted.to_string(),
            EtcdError::Compacted.message()
        );
        assert_eq!(
            crate::mvcc::MvccError::FutureRevision.to_string(),
            EtcdError::FutureRev.message()
        );
    }
}
