//! The HTTP/JSON gateway's streams (`/v3/watch`, `/v3/lease/keepalive`,
//! `/v3/maintenance/snapshot`, `/v3/election/observe`): the same bodies sent
//! to real etcd 3.4 and to cairn (two shards) get the same status and the
//! same `{"result": ...}` lines (member specific header fields aside); a
//! watch goes on after its body ends, and a client that goes away ends its
//! watchers.

mod common;

use common::Cairn;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A streamed answer being read.
struct Streamed {
    code: u16,
    chunked: bool,
    reader: BufReader<TcpStream>,
    /// Text of chunks read and not yet taken as lines.
    pending: String,
    ended: bool,
}

impl Streamed {
    /// POSTs `body` (sent whole, with its length) and reads the answer's head.
    fn open(endpoint: &str, path: &str, body: &str) -> Streamed {
        let mut s = TcpStream::connect(endpoint).unwrap();
        // A bound on every read: a stream that stalls fails the test.
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut chunked = false;
        for _ in 0..100 {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            chunked |= line
                .to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked");
        }
        Streamed {
            code,
            chunked,
            reader,
            pending: String::new(),
            ended: false,
        }
    }

    /// Reads one chunk into `pending`; false at the body's end.
    fn read_chunk(&mut self) -> bool {
        if self.ended {
            return false;
        }
        if !self.chunked {
            self.reader.read_to_string(&mut self.pending).unwrap();
            self.ended = true;
            return false;
        }
        let mut size = String::new();
        self.reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            self.ended = true;
            return false;
        }
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).unwrap();
        self.pending
            .push_str(std::str::from_utf8(&data[..size]).unwrap());
        true
    }

    /// The next `n` lines, each one JSON value.
    fn lines(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            while let Some((line, rest)) = self.pending.split_once('\n') {
                out.push(serde_json::from_str(line).unwrap());
                self.pending = rest.to_string();
                if out.len() == n {
                    return out;
                }
            }
            assert!(self.read_chunk(), "the stream ended after {out:?}");
        }
        panic!("no {n} lines");
    }

    /// Everything up to the body's end (at most 10,000 chunks).
    fn rest(&mut self) -> String {
        for _ in 0..10_000 {
            if !self.read_chunk() {
                return std::mem::take(&mut self.pending);
            }
        }
        panic!("the stream did not end");
    }
}

/// Drops what differs between two members (ids, term) everywhere.
fn norm(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in ["cluster_id", "member_id", "raft_term"] {
                m.remove(k);
            }
            m.values_mut().for_each(norm);
        }
        Value::Array(a) => a.iter_mut().for_each(norm),
        _ => {}
    }
}

fn normed(mut lines: Vec<Value>) -> Vec<Value> {
    lines.iter_mut().for_each(norm);
    lines
}

fn parse_lines(text: &str) -> Vec<Value> {
    normed(
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

fn post(endpoint: &str, path: &str, body: &str) {
    let mut s = Streamed::open(endpoint, path, body);
    let answer = s.rest();
    assert_eq!(s.code, 200, "{path} {body}: {answer}");
}

fn watchers(c: &Cairn) -> u64 {
    let (_, metrics) = c.http("GET", "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn gateway_streams_answer_like_etcds() {
    let etcd = common::etcd();
    let e = etcd.url.trim_start_matches("http://").to_string();
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cairn = Cairn::start(base.path(), 2);
    let c = cairn.endpoint();
    let both = [e.as_str(), c.as_str()];
    // a = YQ==, b = Yg==, c = Yw==
    for ep in both {
        post(ep, "/v3/kv/put", r#"{"key":"YQ==","value":"Yg=="}"#);
        post(ep, "/v3/lease/grant", r#"{"ID":9,"TTL":60}"#);
    }

    // Watch: several requests in one body; events after the body ended.
    let body = concat!(
        r#"{"create_request":{"key":"YQ==","prev_kv":true}}"#,
        r#"{"progress_request":{}} "#,
        r#"{"create_request":{"key":"Yg==","watch_id":7,"filters":["NODELETE"]}}"#,
        "\n",
        r#"{"create_request":{"key":"YQ==","range_end":"YQ=="}}"#,
        r#"{"cancel_request":{"watch_id":7}}"#,
    );
    let mut watches: Vec<Streamed> = both
        .iter()
        .map(|ep| Streamed::open(ep, "/v3/watch", body))
        .collect();
    let mut first: Vec<Vec<Value>> = watches.iter_mut().map(|w| normed(w.lines(5))).collect();
    assert_eq!(first[1], first[0], "watch's first answers differ");
    assert_eq!(watches[1].code, 200);
    assert!(watches[1].chunked);
    for ep in both {
        post(ep, "/v3/kv/put", r#"{"key":"YQ==","value":"Yw=="}"#);
        post(ep, "/v3/kv/deleterange", r#"{"key":"YQ=="}"#);
    }
    first = watches.iter_mut().map(|w| normed(w.lines(2))).collect();
    assert_eq!(first[1], first[0], "watch events differ");
    assert_eq!(first[1][1]["result"]["events"][0]["type"], "DELETE");
    // Dropping the connection ends cairn's watchers.
    assert_eq!(watchers(&cairn), 1);
    drop(watches);
    let mut left = 1;
    for _ in 0..100 {
        left = watchers(&cairn);
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(left, 0, "the watchers of a closed connection stay");

    // A first request that is not JSON fails the call: 500, Unknown.
    for ep in both {
        let mut w = Streamed::open(ep, "/v3/watch", "garbage");
        let err: Value = serde_json::from_str(&w.rest()).unwrap();
        assert_eq!((w.code, err["code"].as_i64()), (500, Some(2)), "{ep}");
    }

    // Keepalive: the answers to the body's requests up to the first one that
    // does not decode, then the end; an unknown lease answers TTL 0.
    for body in [
        r#"{"ID":9}{"ID":10} {"ID":"9"}"#,
        r#"{"ID":9}{"ID":10} garbage {"ID":9}"#,
        "",
    ] {
        let answers: Vec<(u16, Vec<Value>)> = both
            .iter()
            .map(|ep| {
                let mut s = Streamed::open(ep, "/v3/lease/keepalive", body);
                (s.code, parse_lines(&s.rest()))
            })
            .collect();
        assert_eq!(answers[1], answers[0], "keepalive {body:?} differs");
    }

    // Observe: the leader, then what it proclaims.
    let campaign = r#"{"name":"ZQ==","lease":"9","value":"djE="}"#;
    for ep in both {
        post(ep, "/v3/election/campaign", campaign);
    }
    let mut observes: Vec<Streamed> = both
        .iter()
        .map(|ep| Streamed::open(ep, "/v3/election/observe", r#"{"name":"ZQ=="}"#))
        .collect();
    let leader = normed(observes[0].lines(1));
    assert_eq!(normed(observes[1].lines(1)), leader, "observe differs");
    let rev = leader[0]["result"]["kv"]["create_revision"]
        .as_str()
        .unwrap();
    let proclaim = format!(
        r#"{{"leader":{{"name":"ZQ==","key":"ZS85","rev":"{rev}","lease":"9"}},"value":"djI="}}"#
    );
    for ep in both {
        post(ep, "/v3/election/proclaim", &proclaim);
    }
    let proclaimed: Vec<Vec<Value>> = observes.iter_mut().map(|o| normed(o.lines(1))).collect();
    assert_eq!(proclaimed[1], proclaimed[0], "observe differs");
    assert_eq!(proclaimed[1][0]["result"]["kv"]["value"], "djI=");
    drop(observes);

    // Snapshot: chunks of the store's own bytes, then its SHA-256; a bad
    // body is a 400 (the request is decoded as a unary one).
    for ep in both {
        let mut s = Streamed::open(ep, "/v3/maintenance/snapshot", "");
        assert_eq!(s.code, 200);
        let lines = parse_lines(&s.rest());
        assert!(lines.len() >= 2, "{ep}: {lines:?}");
        let digest = lines.last().unwrap()["result"]["blob"].as_str().unwrap();
        assert_eq!(digest.len(), 44, "{ep}: a SHA-256 in base64");
        assert!(lines.iter().all(|l| l["result"]["blob"].is_string()));
        let mut s = Streamed::open(ep, "/v3/maintenance/snapshot", "garbage");
        let err: Value = serde_json::from_str(&s.rest()).unwrap();
        assert_eq!((s.code, err["code"].as_i64()), (400, Some(3)), "{ep}");
    }
}
