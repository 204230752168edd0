//! Regression: the first DMA file a process opens is a new (empty) segment;
//! reads of records just written must still work. glommio probes polled-IO
//! support on the first file it opens per device, and an empty file fooled it
//! into using the poll ring, which virtio disks reject (EOPNOTSUPP). This test
//! is alone in its binary so that its WAL really is the first DMA open.
#![cfg(feature = "dma")]

use cairn_wal::storage::DmaStorage;
use cairn_wal::{Config, Wal};
use glommio::{LocalExecutorBuilder, Placement};

#[test]
fn records_read_back_right_after_a_fresh_wal_writes_them() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let cfg = Config {
                segment_bytes: 256 * 1024,
                batch_bytes_max: 64 * 1024,
                spare_segments_max: 1,
            };
            let (wal, _) = Wal::open(DmaStorage::new(&path).unwrap(), cfg)
                .await
                .unwrap();
            for i in 1..=20u64 {
                let lsn = wal
                    .append(1, [(i, format!("entry {i}").as_bytes())])
                    .await
                    .unwrap();
                wal.sync(lsn).await.unwrap();
            }
            let got = wal
                .read(1, ..)
                .await
                .expect("reading durable records from disk");
            assert_eq!(got.len(), 20);
            assert_eq!(got[4], (5, b"entry 5".to_vec()));
        })
        .unwrap()
        .join()
        .unwrap();
}
