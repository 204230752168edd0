//! etcd's HTTP/JSON gateway on the client port: `POST /v3/kv/range`, `put`,
//! `deleterange`, `txn`, `compaction`, `/v3/maintenance/status` and
//! `/v3/cluster/member/list`, with the JSON etcd 3.4's gateway speaks (proto3
//! JSON: snake_case field names out, either spelling in, 64-bit integers as
//! strings, bytes as base64, enums by name). Each call runs the same gRPC
//! service code; errors come back as etcd's gateway shapes them:
//! `{"error": msg, "message": msg, "code": grpc_code}` with the HTTP status
//! grpc-gateway maps the code to. Other `/v3/` paths answer 501.

use super::cluster::ClusterService;
use super::kv::KvService;
use super::maintenance::MaintenanceService;
use crate::member::Member;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_proto::etcdserverpb as pb;
use pb::cluster_server::Cluster;
use pb::kv_server::Kv;
use pb::maintenance_server::Maintenance;
use std::future::Future;
use std::sync::Arc;
use tonic::{Code, Status};

/// The gateway's routes.
pub fn routes(member: Arc<Member>) -> axum::Router {
    use axum::routing::post;
    let m = member;
    macro_rules! rpc {
        ($service:ident, $method:ident) => {{
            let m = m.clone();
            post(move |body: Bytes| {
                let m = m.clone();
                async move {
                    call(body, |req| async move {
                        $service(m).$method(tonic::Request::new(req)).await
                    })
                    .await
                }
            })
        }};
    }
    axum::Router::new()
        .route("/v3/kv/range", rpc!(KvService, range))
        .route("/v3/kv/put", rpc!(KvService, put))
        .route("/v3/kv/deleterange", rpc!(KvService, delete_range))
        .route("/v3/kv/txn", rpc!(KvService, txn))
        .route("/v3/kv/compaction", rpc!(KvService, compact))
        .route("/v3/maintenance/status", rpc!(MaintenanceService, status))
        .route("/v3/cluster/member/list", rpc!(ClusterService, member_list))
        .route("/v3/{*rest}", axum::routing::any(not_built))
}

async fn call<Req, Resp, F, Fut>(body: Bytes, f: F) -> Response
where
    Req: serde::de::DeserializeOwned + Default,
    Resp: serde::Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        Req::default()
    } else {
        match serde_json::from_slice::<Req>(&body) {
            Ok(r) => r,
            Err(e) => return error(&Status::invalid_argument(e.to_string())),
        }
    };
    match f(req).await {
        Ok(resp) => match serde_json::to_vec(resp.get_ref()) {
            Ok(json) => {
                (StatusCode::OK, [("content-type", "application/json")], json).into_response()
            }
            Err(e) => error(&Status::internal(e.to_string())),
        },
        Err(s) => error(&s),
    }
}

/// grpc-gateway's mapping of gRPC codes to HTTP statuses.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(s: &Status) -> Response {
    let body = serde_json::json!({
        "error": s.message(),
        "message": s.message(),
        "code": s.code() as i32,
    });
    (
        http_status(s.code()),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The rest of etcd's gateway (watch, lease, auth, ...) is not built yet.
async fn not_built() -> Response {
    error(&Status::unimplemented(
        "cairn: this part of the JSON gateway is not implemented yet",
    ))
}
