//! The run of a cluster (see the parent module's docs): N members behind
//! relays, every cluster fault, final reads once they agree on a leader.

use super::*;
/// Restarts the members of `cluster` that stopped on their own (found
/// `found`): each is a nemesis error (in a cluster no fault makes a member
/// stop by itself; the disk error waits for its own), then restarted and a
/// recovery recorded. False if one did not come back.
fn restart_exited(
    cluster: &mut cluster::Cluster,
    found: &str,
    recorder: &Recorder,
    errors: &mut Vec<String>,
) -> bool {
    let mut up = true;
    for m in &mut cluster.members {
        if let Some(status) = m.try_exit() {
            errors.push(format!("{} stopped on its own ({status}; {found})", m.name));
            let since = recorder.now_us();
            up &= nemesis::restart_stopped(m, status, since, found, recorder, errors);
        }
    }
    up
}

/// A cluster of `cfg.members`, the cluster faults (see the module docs).
pub(super) fn run_cluster(cfg: &Config) -> Result<Summary> {
    if let Some(k) = cfg.faults.iter().find(|k| !k.cluster()) {
        bail!("{} needs one member (--members 1)", k.name());
    }
    if cfg.loop_disk_mib.is_some() {
        bail!("a cluster run has its data dirs on the local disk (no loop disk)");
    }
    std::fs::create_dir_all(&cfg.dir).with_context(|| format!("{}", cfg.dir.display()))?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut args = vec![
        "--shards".to_string(),
        cfg.shards.to_string(),
        // Small segments and frequent snapshots: rotation, reclaim,
        // snapshot sends and installs happen within a short run.
        "--wal-segment-bytes".into(),
        "65536".into(),
        "--snapshot-count".into(),
        cfg.snapshot_count.to_string(),
        "--heartbeat-interval".into(),
        cfg.heartbeat_ms.to_string(),
        "--election-timeout".into(),
        cfg.election_ms.to_string(),
    ];
    args.extend(cfg.member_args.iter().cloned());
    let rt = runtime()?;
    let relay_seed = rng.random();
    let started = Instant::now();
    // A member that exits at start fails the run, its log's end shown.
    let mut cluster = cluster::Cluster::start(
        &cfg.cairn,
        &cfg.dir,
        cfg.members,
        &args,
        &cfg.failpoints,
        &rt,
        cfg.relays,
        relay_seed,
    )?;
    let relays = cluster.net.as_ref().map(|net| {
        (0..net.len())
            .map(|i| net.relay_addr(i))
            .collect::<Vec<_>>()
    });
    eprintln!(
        "cairn-harness: {} members up in {:?} (ids {:x?}), peers through relays at {relays:?}",
        cluster.len(),
        started.elapsed(),
        cluster.ids,
    );

    let (history, ctx, writer) = record(cfg, cluster.urls())?;
    let recorder = ctx.recorder.clone();
    let deadline = Instant::now() + Duration::from_secs(cfg.seconds);
    let work = start_workload(cfg, &mut rng, &ctx, &rt, deadline);

    // The nemesis runs here until the deadline.
    let mut schedule = nemesis::Schedule::new(cfg.faults.clone());
    let mut nemesis_errors = Vec::new();
    while let Some(kind) = next_fault(cfg, &mut rng, &mut schedule, deadline) {
        let found = "found before the next fault";
        if !restart_exited(&mut cluster, found, &recorder, &mut nemesis_errors) {
            break;
        }
        match nemesis::inject_cluster(kind, &mut cluster, &mut rng, &recorder) {
            Ok((_, nemesis::Injected::Done(detail))) => {
                eprintln!("cairn-harness: {}: {detail}", kind.name())
            }
            // A failpoint's request not answered by a member stopping on
            // its own (as in a one-member run): restarted, and reported
            // (nothing but the disk error stops a member of a cluster).
            Ok((
                i,
                nemesis::Injected::MemberStopped {
                    status,
                    since_us,
                    why,
                },
            )) => {
                let found = format!("{} not injected: {why}", kind.name());
                eprintln!("cairn-harness: {found}");
                let m = &mut cluster.members[i];
                nemesis_errors.push(format!("{} stopped on its own ({status}; {found})", m.name));
                if !nemesis::restart_stopped(
                    m,
                    status,
                    since_us,
                    &found,
                    &recorder,
                    &mut nemesis_errors,
                ) {
                    break;
                }
            }
            Err(e) => {
                let e = format!("{}: {e:#}", kind.name());
                eprintln!("cairn-harness: nemesis error: {e}");
                nemesis_errors.push(e);
                // Heal what can be healed and go on.
                cluster.heal();
                let mut up = true;
                for m in &mut cluster.members {
                    if m.try_exit().is_some() || !m.running() {
                        if let Err(e) = m.start() {
                            nemesis_errors.push(format!("restart {}: {e:#}", m.name));
                            up = false;
                        }
                    }
                }
                if !up {
                    break;
                }
            }
        }
    }
    if let Some(rest) = deadline.checked_duration_since(Instant::now()) {
        std::thread::sleep(rest);
    }
    // Everything healed and every member up before the final reads.
    cluster.heal();
    restart_exited(
        &mut cluster,
        "found after the faults",
        &recorder,
        &mut nemesis_errors,
    );
    for m in &mut cluster.members {
        if !m.running() {
            if let Err(e) = m.start() {
                nemesis_errors.push(format!("start {} after the faults: {e:#}", m.name));
            }
        }
    }
    for m in &cluster.members {
        m.wait_healthy(SETTLE_MAX);
    }
    ctx.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let leader = cluster.leader(cluster::FORM_MAX);
    let urls = cluster.urls();
    let Workload {
        clients,
        watchers,
        register_keys,
        append_keys,
    } = work;
    let stuck = rt.block_on(async {
        for c in clients {
            let _ = c.await;
        }
        let Some(leader) = leader else {
            for w in watchers {
                w.abort();
            }
            return Ok(vec![format!(
                "the members did not agree on a leader within {:?} after the faults: no final reads",
                cluster::FORM_MAX
            )]);
        };
        // The final reads: every key, linearizable, after every fault, on
        // the leader first; a read that gets no answer is tried again on
        // the next member (a few times: the cluster may still be settling).
        let kv = |i: usize| -> Result<_> {
            Ok(cairn_proto::etcdserverpb::kv_client::KvClient::new(
                tonic::transport::Endpoint::from_shared(urls[i % urls.len()].clone())?
                    .connect_timeout(Duration::from_secs(5))
                    .connect_lazy(),
            ))
        };
        let mut stuck = Vec::new();
        for key in &register_keys {
            let mut answered = false;
            for attempt in 0..FINAL_TRIES {
                let mut kv = kv(leader + attempt)?;
                if workload::get(&ctx, &mut kv, check::FINAL_CLIENT, key)
                    .await
                    .is_some()
                {
                    answered = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if !answered {
                stuck.push(format!(
                    "the final read of {key} got no answer ({FINAL_TRIES} tries)"
                ));
            }
        }
        for key in &append_keys {
            let mut answered = false;
            for attempt in 0..FINAL_TRIES {
                let mut kv = kv(leader + attempt)?;
                let read = vec![cairn_check::history::Micro::R { key: key.clone() }];
                if workload::append_txn(&ctx, &mut kv, check::FINAL_CLIENT, read).await {
                    answered = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if !answered {
                stuck.push(format!(
                    "the final read of {key} got no answer ({FINAL_TRIES} tries)"
                ));
            }
        }
        for w in watchers {
            let _ = w.await;
        }
        Ok::<_, anyhow::Error>(stuck)
    })?;
    // Nothing stops a member on its own in a cluster, nor makes it
    // unhealthy once everything has healed.
    for m in &mut cluster.members {
        if let Some(status) = m.try_exit() {
            nemesis_errors.push(format!(
                "{} stopped on its own ({status}; found after the final reads)",
                m.name
            ));
        } else if !m.wait_healthy(Duration::from_secs(5)) {
            let health = m.http("GET", "/health", "");
            nemesis_errors.push(format!(
                "{} not healthy after the final reads: {health:?}",
                m.name
            ));
        }
    }
    cluster.stop(Duration::from_secs(30));
    if let Some(net) = &cluster.net {
        for (i, s) in net.stats().iter().enumerate() {
            eprintln!("cairn-harness: relay {i}: {s:?}");
        }
    }
    drop(recorder);
    let mut exits = BTreeMap::new();
    for m in &cluster.members {
        exits.insert(m.name.clone(), m.exits.clone());
    }
    let names: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
    drop(cluster);
    drop(rt);
    let panics = panics_in_logs(&cfg.dir, &names);
    let found = Found {
        nemesis_errors,
        exits,
        stuck,
        panics,
    };
    finish(cfg, history, ctx, writer, found)
}
