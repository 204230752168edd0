//! etcd's `etcd_network_peer_round_trip_time_seconds`: every few seconds
//! the transport's round-trip estimate to each connected member (QUIC's
//! smoothed RTT of the connection) goes into that member's histogram, as
//! etcd's prober measures each peer every few seconds.

use super::Member;
use cairn_wal::Histogram;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the round trips are sampled (etcd probes every 4 s or so).
const SAMPLE_EVERY: Duration = Duration::from_secs(4);
/// Members with a histogram at most (a removed member keeps its series,
/// as in etcd, until this many exist).
const PEERS_MAX: usize = 64;

/// The histograms, by member id.
#[derive(Default)]
pub struct PeerRtts(Mutex<BTreeMap<u64, Arc<Histogram>>>);

impl PeerRtts {
    /// Records one round trip per member.
    pub fn sample(&self, round_trips: &[(u64, Duration)]) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (id, rtt) in round_trips {
            if !all.contains_key(id) && all.len() >= PEERS_MAX {
                continue;
            }
            all.entry(*id)
                // etcd's buckets: 0.1 ms … 3.2768 s.
                .or_insert_with(|| Arc::new(Histogram::exponential(0.0001, 2.0, 16)))
                .observe(*rtt);
        }
    }

    /// Each member's histogram, by id.
    pub fn histograms(&self) -> Vec<(u64, Arc<Histogram>)> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().map(|(id, h)| (*id, h.clone())).collect()
    }
}

/// Samples until the member goes away.
pub async fn run(member: Arc<Member>) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if member.fatal.is_latched() {
            return;
        }
        member
            .peer_rtts
            .sample(&member.peers.transport.round_trips());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_member_gets_its_own_histogram_and_their_number_is_bounded() {
        let rtts = PeerRtts::default();
        rtts.sample(&[
            (1, Duration::from_micros(150)),
            (2, Duration::from_millis(3)),
        ]);
        rtts.sample(&[(1, Duration::from_micros(250))]);
        let h = rtts.histograms();
        assert_eq!(h.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1, 2]);
        let count = |h: &Histogram| h.cumulative().0.last().map_or(0, |(_, c)| *c);
        assert_eq!(count(&h[0].1), 2);
        assert_eq!(count(&h[1].1), 1);
        let many: Vec<(u64, Duration)> =
            (10..200).map(|id| (id, Duration::from_millis(1))).collect();
        rtts.sample(&many);
        assert_eq!(rtts.histograms().len(), PEERS_MAX);
    }
}
