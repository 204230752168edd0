//! etcd 3.4's HTTP/JSON gateway (grpc-gateway v1) on the client port, on the
//! tokio front runtime. Every path of 3.4's `rpc.proto`,
//! `v3lock.proto` and `v3election.proto` is served by running the same gRPC
//! service code, with the JSON etcd's gateway speaks (proto3 JSON: snake_case
//! field names out, either spelling in, unknown fields skipped, 64-bit
//! integers as strings, bytes as base64, enums by name).
//!
//! - Unary (`POST`): `/v3/kv/{range,put,deleterange,txn,compaction}`,
//!   `/v3/lease/{grant,revoke,timetolive,leases}` and 3.4's aliases
//!   `/v3/kv/lease/{revoke,timetolive,leases}`,
//!   `/v3/maintenance/{alarm,status,defragment,hash,transfer-leadership}`
//!   (`hash` is Hash, not HashKV, as in etcd 3.4, whose gateway registers
//!   both on that path and the first registered one answers),
//!   `/v3/cluster/member/{add,remove,update,list,promote}`,
//!   `/v3/lock/{lock,unlock}`,
//!   `/v3/election/{campaign,proclaim,leader,resign}`. The body's first JSON
//!   value is the request (an empty body is the empty request; what follows
//!   the first value is ignored, as Go's decoder leaves it). Errors:
//!   `{"error": msg, "message": msg, "code": grpc_code}` with the HTTP status
//!   grpc-gateway maps the code to ([`http_status`]); a body that is not the
//!   request's JSON is InvalidArgument (400).
//! - Streams ([`stream`]): `/v3/watch` and `/v3/lease/keepalive`
//!   (bidirectional: the body's JSON values, one after another, are the
//!   requests), `/v3/maintenance/snapshot` and `/v3/election/observe` (the
//!   body is the one request). Each answer is a line `{"result": ...}`; an
//!   error ends the stream with `{"error": {"grpc_code", "http_code",
//!   "message", "http_status"}}`.
//! - Auth: `/v3/auth/{enable,disable,authenticate}`,
//!   `/v3/auth/user/{add,get,list,delete,changepw,grant,revoke}`,
//!   `/v3/auth/role/{add,get,list,delete,grant,revoke}`; every path takes
//!   the token in the `Authorization` header, as etcd's gateway passes it
//!   on (gRPC metadata `authorization`). (AuthStatus is gRPC only: 3.4's
//!   gateway has no `/v3/auth/status`.) Any other `/v3/` path is a 404
//!   `Not Found`, another method than POST on a known path a 405 (plain
//!   text, as Go's mux answers), OPTIONS a 200 (etcd's CORS preflight).
//!   Every answer carries etcd's `Access-Control-Allow-*` headers.
//!
//! Bounds: a body is read up to [`json_bytes_max`] (per JSON value for the
//! streams), past which the call fails as gRPC fails an oversized message
//! (ResourceExhausted); a stream's answers wait in the service's own small
//! queue while the client does not read.

mod stream;

use super::auth::AuthService;
use super::cluster::ClusterService;
use super::election::ElectionService;
use super::kv::KvService;
use super::lease::LeaseService;
use super::lock::LockService;
use super::maintenance::MaintenanceService;
use crate::member::Member;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use cairn_proto::etcdserverpb as pb;
use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3lockpb::lock_server::Lock;
use pb::auth_server::Auth;
use pb::cluster_server::Cluster;
use pb::kv_server::Kv;
use pb::lease_server::Lease;
use pb::maintenance_server::Maintenance;
use std::future::Future;
use std::sync::Arc;
use tonic::{Code, Status};

/// A JSON body (a unary request, or one request of a stream) is read up to
/// this: room for a message of `--max-request-bytes` plus gRPC's overhead
/// (etcd's server accepts 512 KiB more than the flag), base64 and field
/// names included.
pub fn json_bytes_max(member: &Member) -> usize {
    2 * (member.max_request_bytes + 512 * 1024)
}

/// The token of a gateway request: its `Grpc-Metadata-Token` header, else
/// its `Authorization` header (etcd's gateway passes them on as gRPC
/// metadata `token` and `authorization`, and the server prefers `token`).
pub(super) fn token_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("grpc-metadata-token")
        .or_else(|| headers.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A gRPC request for the service code, carrying the gateway request's
/// token and the connection it came on.
pub(super) fn grpc_request<T>(
    message: T,
    token: Option<&str>,
    conn: Option<std::net::SocketAddr>,
) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(v) = token.and_then(|t| t.parse().ok()) {
        req.metadata_mut().insert("token", v);
    }
    if let Some(addr) = conn {
        // The address only: a gateway request is not a certificate's user.
        let peer = super::tls::ClientPeer {
            addr,
            common_name: None,
        };
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
    }
    req
}

/// The gateway's routes.
pub fn routes(member: Arc<Member>) -> axum::Router {
    let m = member;
    macro_rules! rpc {
        ($service:ident, $method:ident) => {{
            let m = m.clone();
            only_post(post(
                move |headers: HeaderMap, ext: axum::http::Extensions, body: Body| {
                    let m = m.clone();
                    async move {
                        let max = json_bytes_max(&m);
                        let token = token_header(&headers);
                        let conn = super::access::connection(&ext);
                        call(body, max, |req| async move {
                            let req = grpc_request(req, token.as_deref(), conn);
                            $service(m).$method(req).await
                        })
                        .await
                    }
                },
            ))
        }};
    }
    macro_rules! streamed {
        ($f:path) => {{
            let m = m.clone();
            only_post(post(move |req: axum::extract::Request| $f(m.clone(), req)))
        }};
    }
    let mut router = axum::Router::new()
        .route("/v3/kv/range", rpc!(KvService, range))
        .route("/v3/kv/put", rpc!(KvService, put))
        .route("/v3/kv/deleterange", rpc!(KvService, delete_range))
        .route("/v3/kv/txn", rpc!(KvService, txn))
        .route("/v3/kv/compaction", rpc!(KvService, compact))
        .route("/v3/watch", streamed!(stream::watch))
        .route("/v3/lease/grant", rpc!(LeaseService, lease_grant))
        .route("/v3/lease/revoke", rpc!(LeaseService, lease_revoke))
        .route("/v3/kv/lease/revoke", rpc!(LeaseService, lease_revoke))
        .route("/v3/lease/keepalive", streamed!(stream::keep_alive))
        .route(
            "/v3/lease/timetolive",
            rpc!(LeaseService, lease_time_to_live),
        )
        .route(
            "/v3/kv/lease/timetolive",
            rpc!(LeaseService, lease_time_to_live),
        )
        .route("/v3/lease/leases", rpc!(LeaseService, lease_leases))
        .route("/v3/kv/lease/leases", rpc!(LeaseService, lease_leases))
        .route("/v3/cluster/member/add", rpc!(ClusterService, member_add))
        .route(
            "/v3/cluster/member/remove",
            rpc!(ClusterService, member_remove),
        )
        .route(
            "/v3/cluster/member/update",
            rpc!(ClusterService, member_update),
        )
        .route("/v3/cluster/member/list", rpc!(ClusterService, member_list))
        .route(
            "/v3/cluster/member/promote",
            rpc!(ClusterService, member_promote),
        )
        .route("/v3/maintenance/alarm", rpc!(MaintenanceService, alarm))
        .route("/v3/maintenance/status", rpc!(MaintenanceService, status))
        .route(
            "/v3/maintenance/defragment",
            rpc!(MaintenanceService, defragment),
        )
        .route("/v3/maintenance/hash", rpc!(MaintenanceService, hash))
        .route("/v3/maintenance/snapshot", streamed!(stream::snapshot))
        .route(
            "/v3/maintenance/transfer-leadership",
            rpc!(MaintenanceService, move_leader),
        )
        .route("/v3/lock/lock", rpc!(LockService, lock))
        .route("/v3/lock/unlock", rpc!(LockService, unlock))
        .route("/v3/election/campaign", rpc!(ElectionService, campaign))
        .route("/v3/election/proclaim", rpc!(ElectionService, proclaim))
        .route("/v3/election/leader", rpc!(ElectionService, leader))
        .route("/v3/election/observe", streamed!(stream::observe))
        .route("/v3/election/resign", rpc!(ElectionService, resign));
    router = router
        .route("/v3/auth/enable", rpc!(AuthService, auth_enable))
        .route("/v3/auth/disable", rpc!(AuthService, auth_disable))
        .route("/v3/auth/authenticate", rpc!(AuthService, authenticate))
        .route("/v3/auth/user/add", rpc!(AuthService, user_add))
        .route("/v3/auth/user/get", rpc!(AuthService, user_get))
        .route("/v3/auth/user/list", rpc!(AuthService, user_list))
        .route("/v3/auth/user/delete", rpc!(AuthService, user_delete))
        .route(
            "/v3/auth/user/changepw",
            rpc!(AuthService, user_change_password),
        )
        .route("/v3/auth/user/grant", rpc!(AuthService, user_grant_role))
        .route("/v3/auth/user/revoke", rpc!(AuthService, user_revoke_role))
        .route("/v3/auth/role/add", rpc!(AuthService, role_add))
        .route("/v3/auth/role/get", rpc!(AuthService, role_get))
        .route("/v3/auth/role/list", rpc!(AuthService, role_list))
        .route("/v3/auth/role/delete", rpc!(AuthService, role_delete))
        .route(
            "/v3/auth/role/grant",
            rpc!(AuthService, role_grant_permission),
        )
        .route(
            "/v3/auth/role/revoke",
            rpc!(AuthService, role_revoke_permission),
        );
    router
        .route("/v3/{*rest}", axum::routing::any(not_found))
        .layer(axum::middleware::map_response(cors))
}

/// Other methods than POST: OPTIONS is etcd's CORS preflight (200, empty),
/// the rest Go's 405.
fn only_post(route: MethodRouter) -> MethodRouter {
    route.fallback(|method: Method, body: Body| async move {
        crate::api::http::drain(body).await;
        if method == Method::OPTIONS {
            StatusCode::OK.into_response()
        } else {
            plain(StatusCode::METHOD_NOT_ALLOWED)
        }
    })
}

/// etcd's CORS headers, on every gateway answer.
async fn cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    resp
}

/// Go's plain text answer for a status: `Not Found\n`, ...
fn plain(code: StatusCode) -> Response {
    (
        code,
        [
            ("content-type", "text/plain; charset=utf-8"),
            ("x-content-type-options", "nosniff"),
        ],
        format!("{}\n", code.canonical_reason().unwrap_or("")),
    )
        .into_response()
}

async fn not_found(method: Method, body: Body) -> Response {
    crate::api::http::drain(body).await;
    if method == Method::OPTIONS {
        return StatusCode::OK.into_response();
    }
    plain(StatusCode::NOT_FOUND)
}

/// What came of reading a body's JSON value.
enum Decoded<T> {
    Value(T),
    /// The body ended (or held only whitespace) before a value began.
    End,
    /// Not the request's JSON: the decoder's message.
    Bad(String),
    /// Longer than [`json_bytes_max`].
    TooLarge(usize),
    /// Reading the body failed (the client went away).
    Gone,
}

/// The error of a value past [`json_bytes_max`]: gRPC's for a message over
/// the server's limit.
fn too_large(len: usize, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "grpc: received message larger than max ({len} vs. {max})"
    ))
}

/// A unary call: the body's first JSON value is the request (the empty
/// request if the body is empty).
async fn call<Req, Resp, F, Fut>(body: Body, max: usize, f: F) -> Response
where
    Req: serde::de::DeserializeOwned + Default,
    Resp: serde::Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let mut reader = stream::BodyReader::new(body, max);
    let req = match reader.next::<Req>().await {
        Decoded::Value(r) => r,
        Decoded::End => Req::default(),
        Decoded::Bad(e) => return error(&Status::invalid_argument(e)),
        Decoded::TooLarge(len) => return error(&too_large(len, max)),
        Decoded::Gone => return error(&Status::cancelled("the request's body was cut")),
    };
    match f(req).await {
        Ok(resp) => match serde_json::to_vec(resp.get_ref()) {
            Ok(json) => json_response(StatusCode::OK, json),
            Err(e) => error(&Status::internal(e.to_string())),
        },
        Err(s) => error(&s),
    }
}

fn json_response(code: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = (code, body.into()).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if code == StatusCode::OK {
        // The gRPC server's header, forwarded as etcd's gateway does.
        h.insert(
            "grpc-metadata-content-type",
            HeaderValue::from_static("application/grpc"),
        );
    }
    resp
}

/// grpc-gateway v1's mapping of gRPC codes to HTTP statuses (etcd 3.4's:
/// FailedPrecondition is 412 there, 400 only from grpc-gateway v2 on).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
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

/// A unary call's error, as grpc-gateway v1's `DefaultHTTPError` writes it
/// (fields in its order).
#[derive(serde::Serialize)]
struct UnaryError<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

fn error(s: &Status) -> Response {
    let body = UnaryError {
        error: s.message(),
        message: s.message(),
        code: s.code() as i32,
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    json_response(http_status(s.code()), json)
}
