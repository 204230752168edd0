//! Protobuf encode/decode of the hot requests and responses (what every Put
//! and Range costs on the front threads before any routing).

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, RangeResponse, ResponseHeader};
use cairn_proto::mvccpb::KeyValue;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use std::hint::black_box;
use std::time::Duration;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("grpc_codec");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(1));

    let put = PutRequest {
        key: b"key00001".to_vec(),
        value: vec![7u8; 256],
        ..Default::default()
    };
    let put_bytes = put.encode_to_vec();
    g.bench_function("put_request_encode (8 B key, 256 B value)", |b| {
        b.iter(|| black_box(put.encode_to_vec()))
    });
    g.bench_function("put_request_decode", |b| {
        b.iter(|| black_box(PutRequest::decode(put_bytes.as_slice()).unwrap()))
    });

    let range = RangeRequest {
        key: b"key00001".to_vec(),
        ..Default::default()
    };
    let range_bytes = range.encode_to_vec();
    g.bench_function("range_request_decode", |b| {
        b.iter(|| black_box(RangeRequest::decode(range_bytes.as_slice()).unwrap()))
    });

    let kv = |i: u64| KeyValue {
        key: format!("key{i:05}").into_bytes(),
        create_revision: 100 + i as i64,
        mod_revision: 200 + i as i64,
        version: 3,
        value: vec![9u8; 256],
        lease: 0,
    };
    for n in [1u64, 100] {
        let resp = RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 300,
                raft_term: 4,
            }),
            kvs: (0..n).map(kv).collect(),
            more: false,
            count: n as i64,
        };
        g.bench_function(format!("range_response_encode ({n} kvs)"), |b| {
            b.iter(|| black_box(resp.encode_to_vec()))
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
