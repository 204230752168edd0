//! The run of one member (see the parent module's docs): a loop disk for
//! the data dir when a fault needs one, every single-member fault.

use super::*;
/// One member, every single-member fault (see the module docs).
pub(super) fn run_single(cfg: &Config) -> Result<Summary> {
    if let Some(k) = cfg.faults.iter().find(|k| !k.single()) {
        bail!("{} needs a cluster (--members 3)", k.name());
    }
    std::fs::create_dir_all(&cfg.dir).with_context(|| format!("{}", cfg.dir.display()))?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let needs_disk = cfg.faults.iter().any(|k| k.needs_disk());
    let mut disk = match cfg.loop_disk_mib {
        Some(mib) => {
            members::loop_disks_available()
                .map_err(|why| anyhow::anyhow!("a loop disk is needed ({why})"))?;
            Some(LoopDisk::create(&cfg.dir, mib)?)
        }
        None if needs_disk => bail!("power-loss and disk-full need a loop disk"),
        None => None,
    };
    let data_root = disk.as_ref().map_or(cfg.dir.clone(), |d| d.mount.clone());
    let mut args = vec![
        "--shards".to_string(),
        cfg.shards.to_string(),
        // Small segments and frequent snapshots: rotation, reclaim and
        // snapshot installs happen within a short run.
        "--wal-segment-bytes".into(),
        "65536".into(),
        "--snapshot-count".into(),
        cfg.snapshot_count.to_string(),
    ];
    args.extend(cfg.member_args.iter().cloned());
    let port = crate::ports::free_port();
    let mut member = Member::new(
        &cfg.cairn,
        "m0",
        port,
        data_root.join("m0"),
        cfg.dir.join("member-m0.log"),
        args,
    );
    member.failpoints = cfg.failpoints.clone();
    member.start()?;

    let (history, ctx, writer) = record(cfg, vec![member.url()])?;
    let recorder = ctx.recorder.clone();
    let rt = runtime()?;
    let deadline = Instant::now() + Duration::from_secs(cfg.seconds);
    let work = start_workload(cfg, &mut rng, &ctx, &rt, deadline);

    // The nemesis runs here until the deadline.
    let mut schedule = nemesis::Schedule::new(cfg.faults.clone());
    let mut nemesis_errors = Vec::new();
    while let Some(kind) = next_fault(cfg, &mut rng, &mut schedule, deadline) {
        // A member may stop on its own after a fault (e.g. a snapshot that
        // could not be written once the disk was full): it must stop
        // non-zero, and is restarted before the next fault.
        if let Some(status) = member.try_exit() {
            let since = recorder.now_us();
            let found = "found before the next fault";
            if !nemesis::restart_stopped(
                &mut member,
                status,
                since,
                found,
                &recorder,
                &mut nemesis_errors,
            ) {
                break;
            }
        }
        match nemesis::inject(kind, &mut member, disk.as_mut(), &mut rng, &recorder) {
            Ok(nemesis::Injected::Done(detail)) => {
                eprintln!("cairn-harness: {}: {detail}", kind.name())
            }
            // Stopping on its own when the fault came: a recovery, not an
            // error; the next fault comes on the restarted member.
            Ok(nemesis::Injected::MemberStopped {
                status,
                since_us,
                why,
            }) => {
                let found = format!("{} not injected: {why}", kind.name());
                eprintln!("cairn-harness: {found}");
                if !nemesis::restart_stopped(
                    &mut member,
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
                if let Some(d) = disk.as_mut() {
                    let _ = d.unfill();
                }
                if member.try_exit().is_some() || !member.running() {
                    if let Err(e) = member.start() {
                        nemesis_errors.push(format!("restart: {e:#}"));
                        break;
                    }
                }
            }
        }
    }
    if let Some(rest) = deadline.checked_duration_since(Instant::now()) {
        std::thread::sleep(rest);
    }
    if !member.running() || member.try_exit().is_some() {
        // A member that does not come back (e.g. it refuses its data dir
        // after a power loss) is a finding; the history is still checked.
        if let Err(e) = member.start() {
            nemesis_errors.push(format!("start after the faults: {e:#}"));
        }
    }
    // The last fault may have been healed a moment ago (e.g. room given
    // back on a full disk, which the member notices on its own): the final
    // reads wait until it says it is healthy (bounded; a member that never
    // does shows in them).
    member.wait_healthy(SETTLE_MAX);
    ctx.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let up = member.running();
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
        if !up {
            for w in watchers {
                w.abort();
            }
            return Ok(vec!["the member is down: no final reads".to_string()]);
        }
        // The final reads: every key, linearizable, after every fault.
        let mut kv = cairn_proto::etcdserverpb::kv_client::KvClient::new(
            tonic::transport::Endpoint::from_shared(member.url())?
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy(),
        );
        let mut stuck = Vec::new();
        for key in &register_keys {
            if workload::get(&ctx, &mut kv, check::FINAL_CLIENT, key)
                .await
                .is_none()
            {
                stuck.push(format!("the final read of {key} got no answer"));
            }
        }
        for key in &append_keys {
            let read = vec![cairn_check::history::Micro::R { key: key.clone() }];
            if !workload::append_txn(&ctx, &mut kv, check::FINAL_CLIENT, read).await {
                stuck.push(format!("the final read of {key} got no answer"));
            }
        }
        for w in watchers {
            let _ = w.await;
        }
        Ok::<_, anyhow::Error>(stuck)
    })?;
    member.stop(Duration::from_secs(30));
    drop(recorder);
    drop(rt);
    let mut exits = BTreeMap::new();
    exits.insert(member.name.clone(), member.exits.clone());
    drop(member);
    drop(disk.take());
    let found = Found {
        nemesis_errors,
        exits,
        stuck,
        panics: Vec::new(),
    };
    finish(cfg, history, ctx, writer, found)
}
