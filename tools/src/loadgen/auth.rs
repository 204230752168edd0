//! Auth in `cairn-bench`: `--user name:password` logs in once per
//! connection (Authenticate) and every request on that connection carries
//! the token as gRPC metadata `token`, as etcd's clients send it; and the
//! `authenticate` operation, one Authenticate call (a wrong password is an
//! error, by design: that is what a brute-force flood looks like).
//!
//! Without `--user` a request is built exactly as before (`Request::new`),
//! plus one branch on an empty token: the put path's cost is unchanged.

use anyhow::{bail, Context, Result};
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::AuthenticateRequest;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

/// A connection's token, if `--user` was given.
pub type Token = Option<AsciiMetadataValue>;

/// `name:password` → (name, password); the password may contain ':'.
pub fn split_user(user: &str) -> Result<(&str, &str)> {
    match user.split_once(':') {
        Some((name, password)) if !name.is_empty() => Ok((name, password)),
        _ => bail!("--user is name:password"),
    }
}

/// Logs in on `ch`; the token to send.
pub async fn login(ch: &Channel, name: &str, password: &str) -> Result<AsciiMetadataValue> {
    let resp = AuthClient::new(ch.clone())
        .authenticate(AuthenticateRequest {
            name: name.to_string(),
            password: password.to_string(),
        })
        .await
        .with_context(|| format!("--user: Authenticate as {name}"))?
        .into_inner();
    resp.token
        .parse()
        .context("--user: the token is not valid gRPC metadata")
}

/// One token per connection (all `None` without `--user`).
pub async fn tokens(conns: &[Channel], user: Option<&str>) -> Result<Vec<Token>> {
    let Some(user) = user else {
        return Ok(vec![None; conns.len()]);
    };
    let (name, password) = split_user(user)?;
    let mut out = Vec::with_capacity(conns.len());
    for ch in conns {
        out.push(Some(login(ch, name, password).await?));
    }
    Ok(out)
}

/// `msg` as a request, with the token if there is one.
#[inline]
pub fn request<T>(msg: T, token: &Token) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert("token", t.clone());
    }
    req
}

/// The `authenticate` operation: one Authenticate call, token discarded.
pub async fn authenticate(
    auth: &mut AuthClient<Channel>,
    name: &str,
    password: &str,
) -> Result<(), tonic::Status> {
    auth.authenticate(AuthenticateRequest {
        name: name.to_string(),
        password: password.to_string(),
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_splits_at_the_first_colon() {
        assert_eq!(split_user("root:pw").unwrap(), ("root", "pw"));
        assert_eq!(split_user("root:a:b").unwrap(), ("root", "a:b"));
        assert_eq!(split_user("root:").unwrap(), ("root", ""));
        assert!(split_user("root").is_err());
        assert!(split_user(":pw").is_err());
    }

    #[test]
    fn a_request_carries_the_token_only_if_there_is_one() {
        let none = request((), &None);
        assert!(none.metadata().get("token").is_none());
        let t: AsciiMetadataValue = "abc.1".parse().unwrap();
        let some = request((), &Some(t));
        assert_eq!(some.metadata().get("token").unwrap(), "abc.1");
    }
}
