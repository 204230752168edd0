//! [`ChannelNet`]: members in one process, connected by in-memory channels
//! that the test controls: cut links (partitions, one way or both), delay
//! with jitter (which reorders), and drop a fraction of frames.
//!
//! Frames travel on the net's own small tokio runtime, so a caller on any
//! runtime (glommio shard cores, tokio fronts) can wait for its reply.
//! A dropped frame or a cut link looks like a peer that never answers: the
//! call fails when its deadline passes, as over a real network.
//! Bounded: at most [`IN_FLIGHT_MAX`] frames per destination are travelling
//! or being handled at once; more fail at once as unreachable.

use super::{CallError, Frame, Inbox, Kind, Transport};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Frames travelling to, or being handled by, one member at once.
pub const IN_FLIGHT_MAX: usize = 4096;

#[derive(Default)]
struct Links {
    inboxes: BTreeMap<u64, Arc<dyn Inbox>>,
    /// (from, to) pairs whose frames are lost.
    cut: BTreeSet<(u64, u64)>,
    /// (from, to, group) triples whose Raft frames of that group are lost.
    cut_groups: BTreeSet<(u64, u64, u64)>,
    delay: Duration,
    jitter: Duration,
    /// Fraction of frames lost, in parts per million.
    loss_ppm: u32,
    /// xorshift state for loss and jitter (seeded: runs repeat).
    rng: u64,
    in_flight: BTreeMap<u64, usize>,
}

impl Links {
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// The net's runtime. The last clone of the net may go away on one of its
/// own threads (a frame still travelling): it is then shut down without
/// blocking.
struct NetRuntime(Option<tokio::runtime::Runtime>);

impl NetRuntime {
    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        if let Some(rt) = &self.0 {
            rt.spawn(f);
        }
    }
}

impl Drop for NetRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// See the module docs. Cloning shares the net.
#[derive(Clone)]
pub struct ChannelNet {
    links: Arc<Mutex<Links>>,
    runtime: Arc<NetRuntime>,
}

impl ChannelNet {
    /// A net with no members, perfect links, and `seed` for its randomness.
    pub fn new(seed: u64) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cairn-channel-net")
            .enable_time()
            .build()
            .expect("channel net runtime");
        Self {
            links: Arc::new(Mutex::new(Links {
                rng: seed | 1,
                ..Links::default()
            })),
            runtime: Arc::new(NetRuntime(Some(runtime))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes member `id` reachable through `inbox` (replacing an earlier one:
    /// a restarted member).
    pub fn register(&self, id: u64, inbox: Arc<dyn Inbox>) {
        self.lock().inboxes.insert(id, inbox);
    }

    /// Makes member `id` unreachable (it stopped).
    pub fn unregister(&self, id: u64) {
        self.lock().inboxes.remove(&id);
    }

    /// The transport member `me` sends with.
    pub fn endpoint(&self, me: u64) -> Arc<dyn Transport> {
        Arc::new(Endpoint {
            me,
            net: self.clone(),
        })
    }

    /// Loses every frame from `from` to `to` (one way).
    pub fn cut(&self, from: u64, to: u64) {
        self.lock().cut.insert((from, to));
    }

    /// Cuts every link between `id` and the other members, both ways.
    pub fn isolate(&self, id: u64) {
        let mut l = self.lock();
        let others: Vec<u64> = l.inboxes.keys().copied().filter(|o| *o != id).collect();
        for o in others {
            l.cut.insert((id, o));
            l.cut.insert((o, id));
        }
    }

    /// Loses every Raft frame of `group` (the frame's group: a shard's, or
    /// the meta group's) from `from` to `to`, one way: that group lags on
    /// `to` while the others keep up.
    pub fn cut_group(&self, from: u64, to: u64, group: u64) {
        self.lock().cut_groups.insert((from, to, group));
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        let mut l = self.lock();
        l.cut.clear();
        l.cut_groups.clear();
    }

    /// Delays every frame by `delay` plus a uniform random part of `jitter`
    /// (frames overtake each other), and loses `loss` (0..=1) of them.
    pub fn degrade(&self, delay: Duration, jitter: Duration, loss: f64) {
        let mut l = self.lock();
        l.delay = delay;
        l.jitter = jitter;
        l.loss_ppm = (loss.clamp(0.0, 1.0) * 1e6) as u32;
    }

    /// What happens to one frame from `from` to `to`: its inbox and delay,
    /// or None if it is lost.
    fn route(&self, from: u64, to: u64, frame: &Frame) -> Result<Option<Route>, CallError> {
        let mut l = self.lock();
        let Some(inbox) = l.inboxes.get(&to).cloned() else {
            return Err(CallError::Unreachable(format!("no member {to:x}")));
        };
        let in_flight = l.in_flight.entry(to).or_default();
        if *in_flight >= IN_FLIGHT_MAX {
            return Err(CallError::Unreachable(format!(
                "{IN_FLIGHT_MAX} frames already travelling to {to:x}"
            )));
        }
        // Counted until the call ends (`arrived`), lost or not.
        *in_flight += 1;
        let raft = !matches!(frame.kind, Kind::Forward | Kind::ReadIndex | Kind::Removed);
        if l.cut.contains(&(from, to)) || (raft && l.cut_groups.contains(&(from, to, frame.group)))
        {
            return Ok(None);
        }
        if l.loss_ppm > 0 && (l.next_random() % 1_000_000) < l.loss_ppm as u64 {
            return Ok(None);
        }
        let jitter = match l.jitter.as_micros() as u64 {
            0 => Duration::ZERO,
            j => Duration::from_micros(l.next_random() % j),
        };
        let delay = l.delay + jitter;
        Ok(Some((inbox, delay)))
    }

    fn arrived(&self, to: u64) {
        if let Some(n) = self.lock().in_flight.get_mut(&to) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Where a frame goes, and how long it travels.
type Route = (Arc<dyn Inbox>, Duration);

struct Endpoint {
    me: u64,
    net: ChannelNet,
}

impl Transport for Endpoint {
    fn call(
        &self,
        to: u64,
        frame: Frame,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>> {
        let (me, net) = (self.me, self.net.clone());
        let (tx, rx) = futures::channel::oneshot::channel();
        match net.route(me, to, &frame) {
            Err(e) => return Box::pin(futures::future::ready(Err(e))),
            Ok(route) => {
                let runtime = net.runtime.clone();
                runtime.spawn(async move {
                    let deadline = tokio::time::Instant::now() + ttl;
                    let trip = async {
                        // Lost: the caller hears nothing until its deadline.
                        let (inbox, delay) = route?;
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let handled = inbox.deliver(me, frame).await;
                        // The reply is lost if the link back is cut.
                        if net.lock().cut.contains(&(to, me)) {
                            return None;
                        }
                        Some(handled.map_err(CallError::Remote))
                    };
                    let outcome = match tokio::time::timeout_at(deadline, trip).await {
                        Ok(Some(outcome)) => outcome,
                        Ok(None) => {
                            tokio::time::sleep_until(deadline).await;
                            Err(CallError::Timeout)
                        }
                        Err(_) => Err(CallError::Timeout),
                    };
                    net.arrived(to);
                    let _ = tx.send(outcome);
                });
            }
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(CallError::Unreachable("channel net stopped".into())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every frame with its body reversed, counting them.
    struct Echo(Arc<std::sync::atomic::AtomicUsize>);

    impl Inbox for Echo {
        fn deliver(&self, _from: u64, frame: Frame) -> BoxFuture<'static, Result<Vec<u8>, String>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut body = frame.body;
            body.reverse();
            Box::pin(futures::future::ready(Ok(body)))
        }
    }

    fn frame(body: &[u8]) -> Frame {
        Frame {
            kind: super::super::Kind::Append,
            group: 0,
            body: body.to_vec(),
        }
    }

    fn call(net: &ChannelNet, from: u64, to: u64, ttl_ms: u64) -> Result<Vec<u8>, CallError> {
        futures::executor::block_on(net.endpoint(from).call(
            to,
            frame(b"abc"),
            Duration::from_millis(ttl_ms),
        ))
    }

    #[test]
    fn frames_reach_members_until_a_link_is_cut_one_way() {
        let net = ChannelNet::new(7);
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        net.register(1, Arc::new(Echo(seen.clone())));
        net.register(2, Arc::new(Echo(seen.clone())));
        assert_eq!(call(&net, 1, 2, 1000), Ok(b"cba".to_vec()));
        assert!(matches!(
            call(&net, 1, 3, 1000),
            Err(CallError::Unreachable(_))
        ));
        net.cut(1, 2);
        assert_eq!(call(&net, 1, 2, 50), Err(CallError::Timeout));
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1, "lost");
        // The other way the frame arrives, and its reply is lost.
        assert_eq!(call(&net, 2, 1, 50), Err(CallError::Timeout));
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
        net.heal();
        net.isolate(2);
        assert_eq!(call(&net, 2, 1, 50), Err(CallError::Timeout));
        assert_eq!(call(&net, 1, 2, 50), Err(CallError::Timeout));
        net.heal();
        assert_eq!(call(&net, 1, 2, 1000), Ok(b"cba".to_vec()));
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn loss_drops_about_the_asked_fraction_and_delay_holds_frames_back() {
        let net = ChannelNet::new(11);
        net.register(2, Arc::new(Echo(Default::default())));
        net.degrade(Duration::ZERO, Duration::ZERO, 0.5);
        let ok = (0..200).filter(|_| call(&net, 1, 2, 5).is_ok()).count();
        assert!((60..=140).contains(&ok), "{ok} of 200 arrived at 50% loss");
        net.degrade(Duration::from_millis(30), Duration::ZERO, 0.0);
        let t = std::time::Instant::now();
        assert!(call(&net, 1, 2, 1000).is_ok());
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert_eq!(
            call(&net, 1, 2, 10),
            Err(CallError::Timeout),
            "slower than its deadline"
        );
    }
}
