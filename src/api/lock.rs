//! The Lock service (`v3lockpb.Lock`), as etcd 3.4's `v3lock` server: a
//! distributed mutex over keys `<name>/<lease in hex>`, the owner being the
//! key of lowest create revision (etcd's `concurrency.Mutex`), built from
//! the member's own KV, Lease and Watch ([`super::concurrency`]).
//!
//! Lock(name, lease): lease 0 takes a new 60 s lease that nobody keeps
//! alive; an unknown lease fails at the put (`etcdserver: requested lease
//! not found`). The key is created with the lease (or found, if this lease
//! already waits or holds it: the lock is then re-entered); Lock answers
//! once every key under `<name>/` created before it is deleted. A Lock whose
//! client goes away (or whose wait fails) deletes its key. If the caller's
//! lease expires while it waits, etcd 3.4 does not notice: the Lock still
//! answers when its turn comes, with a key that is gone; so does this one.
//!
//! Unlock(key): deletes the key.
//!
//! Runs on the tokio front runtime.

use super::concurrency::{contender_key, Cleanup, Client};
use crate::member::Member;
use cairn_proto::v3lockpb as lpb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct LockService(pub Arc<Member>);

#[tonic::async_trait]
impl lpb::lock_server::Lock for LockService {
    async fn lock(
        &self,
        request: Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        let credential = super::access::credential(&request);
        let r = request.into_inner();
        let client = Client(self.0.clone(), credential);
        let lease = client.session_lease(r.lease).await?;
        let mut prefix = r.name;
        prefix.push(b'/');
        let key = contender_key(&prefix, lease);
        // etcd's txn also reads the owner; here the wait's first range does
        // (the txn then stays on the key's shard).
        let (created, my_rev) = client.create_or_get(&key, b"", lease).await?;
        // From here on the key is deleted unless the lock is taken.
        let cleanup = Cleanup::new(client.clone(), key.clone(), None);
        // Taken at once: etcd answers with its txn's header; after a wait,
        // with that of the range that found no older key. An error leaves
        // `cleanup` armed: the key is deleted.
        let waited = client.wait_deletes(&prefix, my_rev - 1).await?;
        cleanup.disarm();
        let header = waited.or(created.header);
        Ok(Response::new(lpb::LockResponse { header, key }))
    }

    async fn unlock(
        &self,
        request: Request<lpb::UnlockRequest>,
    ) -> Result<Response<lpb::UnlockResponse>, Status> {
        let credential = super::access::credential(&request);
        let key = request.into_inner().key;
        let d = Client(self.0.clone(), credential).delete(key).await?;
        Ok(Response::new(lpb::UnlockResponse { header: d.header }))
    }
}
