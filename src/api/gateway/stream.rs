//! The gateway's streams, as etcd 3.4's grpc-gateway (v1) streams them:
//! reading a body's JSON values one after another ([`BodyReader`]), and
//! writing a gRPC stream's answers as newline-ended `{"result": ...}` lines.
//!
//! What grpc-gateway does, kept here:
//! - Bidirectional (`/v3/watch`, `/v3/lease/keepalive`): the body's first
//!   JSON value is read before the call; if it is not the request's JSON,
//!   the call fails at once with the decoder's message, code Unknown (500),
//!   in the unary error shape. Later values are sent as they arrive; at the
//!   body's end, or at a value that does not decode, the request side is
//!   closed (the rest of the body is not read). The keepalive stream then
//!   ends once its answers are out; a watch stream goes on (etcd's server
//!   ends it only when the client goes away).
//! - Server streams (`/v3/maintenance/snapshot`, `/v3/election/observe`):
//!   the body is one request, decoded as a unary one (400 if bad).
//! - The status and headers go out with the first answer (etcd's server
//!   sends its gRPC headers with its first message): a stream that ends
//!   before any answer is a 200 with an empty body, one whose first answer
//!   is an error gets that error's HTTP status. An error ends the stream
//!   with `{"error":{"grpc_code","http_code","message","http_status"}}`
//!   (no newline after it).
//! - A client that goes away (the response body dropped, or the request
//!   body cut) ends the service's work: the request stream ends.

use super::{error, http_status, json_bytes_max, json_response, too_large, Decoded};
use crate::member::Member;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::v3electionpb as epb;
use epb::election_server::Election;
use futures::{Stream, StreamExt};
use pb::maintenance_server::Maintenance;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::Status;

/// Reads JSON values one after another from a body (whitespace between
/// them optional, as for Go's `json.Decoder`), as the bytes arrive. Holds at
/// most one value's bytes (bounded by `max`) plus one chunk of the body.
pub(super) struct BodyReader {
    body: axum::body::BodyDataStream,
    /// Bytes read and not yet decoded; the value being read starts at 0.
    buf: Vec<u8>,
    /// The body has ended.
    ended: bool,
    max: usize,
    /// How far `buf` has been scanned for the end of its object or array,
    /// and the scanner's state there.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl BodyReader {
    pub(super) fn new(body: Body, max: usize) -> BodyReader {
        BodyReader {
            body: body.into_data_stream(),
            buf: Vec::new(),
            ended: false,
            max,
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    /// The end (exclusive) of the object or array at the start of `buf`, if
    /// all of it has arrived. Scans each byte once.
    fn structured_end(&mut self) -> Option<usize> {
        for i in self.scanned..self.buf.len() {
            let c = self.buf[i];
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if c == b'\\' {
                    self.escaped = true;
                } else if c == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match c {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        self.scanned = self.buf.len();
        None
    }

    /// Takes the first `end` bytes off `buf` and decodes them.
    fn take<T: DeserializeOwned>(&mut self, end: usize) -> Decoded<T> {
        let r = serde_json::from_slice::<T>(&self.buf[..end]);
        self.buf.drain(..end);
        (self.scanned, self.depth, self.in_string, self.escaped) = (0, 0, false, false);
        match r {
            Ok(v) => Decoded::Value(v),
            Err(e) => Decoded::Bad(e.to_string()),
        }
    }

    /// The next value of the body.
    pub(super) async fn next<T: DeserializeOwned>(&mut self) -> Decoded<T> {
        loop {
            let blank = self
                .buf
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            self.buf.drain(..blank);
            if let Some(&first) = self.buf.first() {
                if matches!(first, b'{' | b'[') {
                    if let Some(end) = self.structured_end() {
                        return self.take(end);
                    }
                    if self.ended {
                        // Cut short: serde says what is missing.
                        return self.take(self.buf.len());
                    }
                } else {
                    // A scalar (or not JSON): decoded as far as it goes.
                    let mut values =
                        serde_json::Deserializer::from_slice(&self.buf).into_iter::<T>();
                    match values.next() {
                        Some(Err(e)) if e.is_eof() && !self.ended => {}
                        Some(Err(e)) => return Decoded::Bad(e.to_string()),
                        Some(Ok(v)) => {
                            let end = values.byte_offset();
                            self.buf.drain(..end);
                            return Decoded::Value(v);
                        }
                        None => {}
                    }
                }
            } else if self.ended {
                return Decoded::End;
            }
            if self.buf.len() > self.max {
                return Decoded::TooLarge(self.buf.len());
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) => return Decoded::Gone,
                None => self.ended = true,
            }
        }
    }
}

type Requests<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A bidirectional call's request stream: `first`, then the body's values
/// as they arrive. At the body's end (or a value that does not decode),
/// ends at once, or, with `until_gone`, when that receiver's sender is
/// dropped (the client went away).
fn requests<T>(
    first: Option<T>,
    reader: BodyReader,
    until_gone: Option<oneshot::Receiver<()>>,
) -> Requests<T>
where
    T: DeserializeOwned + Send + 'static,
{
    let head = futures::stream::iter(first.map(Ok));
    let body = futures::stream::unfold(Some((reader, until_gone)), |state| async move {
        let (mut reader, until_gone) = state?;
        match reader.next::<T>().await {
            Decoded::Value(v) => Some((Ok(v), Some((reader, until_gone)))),
            Decoded::Gone => None,
            Decoded::End | Decoded::Bad(_) | Decoded::TooLarge(_) => {
                if let Some(gone) = until_gone {
                    let _ = gone.await;
                }
                None
            }
        }
    });
    Box::pin(head.chain(body))
}

/// Reads a bidirectional call's first request: Err is the answer when the
/// body does not start with one.
async fn first_request<T: DeserializeOwned>(
    reader: &mut BodyReader,
    max: usize,
) -> Result<Option<T>, Response> {
    match reader.next::<T>().await {
        Decoded::Value(v) => Ok(Some(v)),
        Decoded::End => Ok(None),
        // Not a gRPC status in grpc-gateway: code Unknown.
        Decoded::Bad(e) => Err(error(&Status::unknown(e))),
        Decoded::TooLarge(len) => Err(error(&too_large(len, max))),
        Decoded::Gone => Err(error(&Status::cancelled("the request's body was cut"))),
    }
}

/// `POST /v3/watch`.
pub(super) async fn watch(member: Arc<Member>, req: axum::extract::Request) -> Response {
    // clientv3's WithRequireLeader, as grpc-gateway forwards it.
    let require_leader = req
        .headers()
        .get("grpc-metadata-hasleader")
        .is_some_and(|v| v.as_bytes() == b"true");
    let token = super::token_header(req.headers());
    let max = json_bytes_max(&member);
    let mut reader = BodyReader::new(req.into_body(), max);
    let first = match first_request::<pb::WatchRequest>(&mut reader, max).await {
        Ok(first) => first,
        Err(answer) => return answer,
    };
    let (open, gone) = oneshot::channel();
    let requests = requests(first, reader, Some(gone));
    match crate::api::watch::serve(
        member,
        requests,
        require_leader,
        token.map(crate::auth::Credential::Token),
    ) {
        Ok(responses) => respond(responses, Some(open)).await,
        Err(s) => {
            respond(
                futures::stream::iter([Err::<pb::WatchResponse, _>(s)]),
                None,
            )
            .await
        }
    }
}

/// `POST /v3/lease/keepalive`.
pub(super) async fn keep_alive(member: Arc<Member>, req: axum::extract::Request) -> Response {
    let max = json_bytes_max(&member);
    let mut reader = BodyReader::new(req.into_body(), max);
    let first = match first_request::<pb::LeaseKeepAliveRequest>(&mut reader, max).await {
        Ok(first) => first,
        Err(answer) => return answer,
    };
    let responses = crate::api::lease::keep_alive(member, requests(first, reader, None));
    respond(responses, None).await
}

/// A server stream: the body is its one request.
async fn server_stream<Req, S, T, F, Fut>(
    member: Arc<Member>,
    req: axum::extract::Request,
    call: F,
) -> Response
where
    Req: DeserializeOwned + Default,
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
    T: serde::Serialize + Send + 'static,
    F: FnOnce(Arc<Member>, tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<S>, Status>>,
{
    let max = json_bytes_max(&member);
    let token = super::token_header(req.headers());
    let mut reader = BodyReader::new(req.into_body(), max);
    let request = match reader.next::<Req>().await {
        Decoded::Value(r) => r,
        Decoded::End => Req::default(),
        Decoded::Bad(e) => return error(&Status::invalid_argument(e)),
        Decoded::TooLarge(len) => return error(&too_large(len, max)),
        Decoded::Gone => return error(&Status::cancelled("the request's body was cut")),
    };
    match call(member, super::grpc_request(request, token.as_deref(), None)).await {
        Ok(responses) => respond(responses.into_inner(), None).await,
        Err(s) => respond(futures::stream::iter([Err::<T, _>(s)]), None).await,
    }
}

/// `POST /v3/maintenance/snapshot`.
pub(super) async fn snapshot(member: Arc<Member>, req: axum::extract::Request) -> Response {
    server_stream(
        member,
        req,
        |m, r: tonic::Request<pb::SnapshotRequest>| async move {
            crate::api::maintenance::MaintenanceService(m)
                .snapshot(r)
                .await
        },
    )
    .await
}

/// `POST /v3/election/observe`.
pub(super) async fn observe(member: Arc<Member>, req: axum::extract::Request) -> Response {
    server_stream(
        member,
        req,
        |m, r: tonic::Request<epb::LeaderRequest>| async move {
            crate::api::election::ElectionService(m).observe(r).await
        },
    )
    .await
}

/// grpc-gateway v1's `StreamError`, fields in its order.
#[derive(serde::Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

#[derive(serde::Serialize)]
struct ErrorChunk<'a> {
    error: StreamError<'a>,
}

/// The chunk that ends a stream with `s`.
fn error_chunk(s: &Status) -> Bytes {
    let code = http_status(s.code());
    let chunk = ErrorChunk {
        error: StreamError {
            grpc_code: s.code() as i32,
            http_code: code.as_u16(),
            message: s.message(),
            http_status: code.canonical_reason().unwrap_or(""),
        },
    };
    Bytes::from(serde_json::to_vec(&chunk).unwrap_or_default())
}

/// One answer's line, or the error chunk if it does not serialize.
fn result_line<T: serde::Serialize>(answer: &T) -> Result<Bytes, Bytes> {
    let mut line = b"{\"result\":".to_vec();
    match serde_json::to_writer(&mut line, answer) {
        Ok(()) => {
            line.extend_from_slice(b"}\n");
            Ok(Bytes::from(line))
        }
        Err(e) => Err(error_chunk(&Status::internal(e.to_string()))),
    }
}

/// Streams `responses` as the HTTP answer, once the first one is there.
/// `open` is held until the answer's body is dropped (sent, or the client
/// gone).
async fn respond<S, T>(mut responses: S, open: Option<oneshot::Sender<()>>) -> Response
where
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
    T: serde::Serialize + Send + 'static,
{
    let (code, head, go_on) = match responses.next().await {
        None => (StatusCode::OK, None, false),
        Some(Ok(answer)) => match result_line(&answer) {
            Ok(line) => (StatusCode::OK, Some(line), true),
            Err(chunk) => (StatusCode::INTERNAL_SERVER_ERROR, Some(chunk), false),
        },
        Some(Err(s)) => (http_status(s.code()), Some(error_chunk(&s)), false),
    };
    let with_answer = head.is_some() && code == StatusCode::OK;
    // After an error, nothing more.
    let rest = responses
        .take_while(move |_| futures::future::ready(go_on))
        .scan(false, |failed, answer| {
            if *failed {
                return futures::future::ready(None);
            }
            let chunk = match answer {
                Ok(answer) => result_line(&answer).unwrap_or_else(|chunk| {
                    *failed = true;
                    chunk
                }),
                Err(s) => {
                    *failed = true;
                    error_chunk(&s)
                }
            };
            futures::future::ready(Some(chunk))
        });
    let body = futures::stream::iter(head).chain(rest).map(move |chunk| {
        let _held = &open;
        Ok::<_, std::convert::Infallible>(chunk)
    });
    let mut resp = json_response(code, Body::from_stream(body));
    if !with_answer {
        // No answer: no gRPC header came to forward.
        resp.headers_mut().remove("grpc-metadata-content-type");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that arrives in these pieces.
    fn body(chunks: &[&str]) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from(c.to_string())))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn body_values_split_anywhere_are_read_one_after_another() {
        rt().block_on(async {
            // Cut inside a string holding braces and an escaped quote.
            let mut r = BodyReader::new(
                body(&[
                    " {\"ID\":",
                    "\"9\"}{\"ID\":10}\n",
                    " {\"name\":\"}{\\\"",
                    "\"}  ",
                ]),
                1024,
            );
            let ids: Vec<i64> = [r.next::<pb::LeaseKeepAliveRequest>().await, r.next().await]
                .into_iter()
                .map(|d| match d {
                    Decoded::Value(v) => v.id,
                    _ => panic!("not a value"),
                })
                .collect();
            assert_eq!(ids, [9, 10]);
            match r.next::<pb::AuthUserAddRequest>().await {
                Decoded::Value(v) => assert_eq!(v.name, "}{\""),
                _ => panic!("not a value"),
            }
            assert!(matches!(r.next::<pb::RangeRequest>().await, Decoded::End));
        });
    }

    #[test]
    fn bad_cut_and_oversized_bodies_are_told_apart() {
        rt().block_on(async {
            let mut r = BodyReader::new(body(&["{\"ID\":1} garbage"]), 1024);
            assert!(matches!(
                r.next::<pb::LeaseKeepAliveRequest>().await,
                Decoded::Value(_)
            ));
            assert!(matches!(
                r.next::<pb::LeaseKeepAliveRequest>().await,
                Decoded::Bad(_)
            ));
            let mut r = BodyReader::new(body(&["{\"ID\":", "1"]), 1024);
            assert!(matches!(
                r.next::<pb::LeaseKeepAliveRequest>().await,
                Decoded::Bad(_)
            ));
            let big = format!("{{\"key\":\"{}", "A".repeat(100));
            let mut r = BodyReader::new(body(&[&big, &big]), 64);
            assert!(matches!(
                r.next::<pb::RangeRequest>().await,
                Decoded::TooLarge(n) if n > 64
            ));
            let mut r = BodyReader::new(body(&[" \n "]), 64);
            assert!(matches!(r.next::<pb::RangeRequest>().await, Decoded::End));
        });
    }

    async fn answered(items: Vec<Result<pb::LeaseKeepAliveResponse, Status>>) -> (u16, String) {
        let resp = respond(futures::stream::iter(items), None).await;
        let code = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[test]
    fn stream_errors_are_grpc_gateway_v1_chunks() {
        rt().block_on(async {
            let ok = |id| {
                Ok(pb::LeaseKeepAliveResponse {
                    id,
                    ..Default::default()
                })
            };
            let unavailable = || Err(Status::unavailable("etcdserver: no leader"));
            // An error first: its HTTP status, the error chunk alone.
            assert_eq!(
                answered(vec![unavailable(), ok(1)]).await,
                (
                    503,
                    r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#
                        .to_string()
                )
            );
            // An error later: 200, the answers, the error chunk, nothing after.
            assert_eq!(
                answered(vec![ok(1), ok(2), unavailable(), ok(3)]).await,
                (
                    200,
                    concat!(
                        "{\"result\":{\"ID\":\"1\"}}\n{\"result\":{\"ID\":\"2\"}}\n",
                        r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#
                    )
                    .to_string()
                )
            );
            // No answer at all: 200, empty.
            assert_eq!(answered(vec![]).await, (200, String::new()));
        });
    }
}
