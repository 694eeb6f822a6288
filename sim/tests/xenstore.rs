//! xenstore end to end: guests use the real client (`xenpal-xen-pv`) over
//! their ring page and event channel against the simulator's xenstored.

use std::sync::{Arc, Mutex};
use xenpal_sim::hal::DomId;
use xenpal_sim::xen_pv::abi::Errno;
use xenpal_sim::xen_pv::xenstore::{Perm, PermAccess, TxId, XsError};
use xenpal_sim::{DomainConfig, Sim, SimConfig};

#[test]
fn read_write_directory_rm_from_a_guest() {
    let mut sim = Sim::new(SimConfig::seeded(21));
    let d = sim
        .spawn(DomainConfig::new("xs-basic"), |p| async move {
            let xs = p.xenstore().expect("xenstore connected");
            let t = TxId::NONE;
            assert_eq!(xs.read_string(t, "name").await.unwrap(), "xs-basic");
            assert_eq!(xs.read_u64(t, "domid").await.unwrap(), 1);
            xs.write(t, "data/greeting", b"hello").await.unwrap();
            xs.write(t, "data/sub/a", b"1").await.unwrap();
            xs.write(t, "data/sub/b", b"2").await.unwrap();
            assert_eq!(xs.read(t, "data/greeting").await.unwrap(), b"hello");
            assert_eq!(xs.directory(t, "data/sub").await.unwrap(), ["a", "b"]);
            xs.rm(t, "data/sub").await.unwrap();
            assert!(xs.read(t, "data/sub/a").await.unwrap_err().is_enoent());
            // Absolute paths work too.
            let home = xs.domain_path(DomId(1)).await.unwrap();
            assert_eq!(home, "/local/domain/1");
            assert_eq!(
                xs.read(t, "/local/domain/1/data/greeting").await.unwrap(),
                b"hello"
            );
            // A value bigger than the 1 KiB ring goes through in pieces.
            let big: Vec<u8> = (0..2000u32).map(|i| b'a' + (i % 26) as u8).collect();
            xs.write(t, "data/big", &big).await.unwrap();
            assert_eq!(xs.read(t, "data/big").await.unwrap(), big);
        })
        .unwrap();
    let report = sim.run();
    assert!(report.all_clean(), "{report:?}");
    // The toolstack removed the domain's home when it exited.
    assert_eq!(
        sim.xenstore_read(&format!("/local/domain/{}/name", d.0)),
        None
    );
}

#[test]
fn permissions_are_enforced_between_guests() {
    let mut sim = Sim::new(SimConfig::seeded(22));
    let ready: Arc<Mutex<bool>> = Arc::default();
    let r = ready.clone();
    sim.spawn(DomainConfig::new("owner"), move |p| async move {
        let xs = p.xenstore().unwrap();
        let t = TxId::NONE;
        xs.write(t, "data/secret", b"s3cr3t").await.unwrap();
        xs.write(t, "data/shared", b"for d2").await.unwrap();
        // The owner keeps full access; d2 may read `shared` only.
        let perms = [
            Perm {
                domid: DomId(1),
                access: PermAccess::None,
            },
            Perm {
                domid: DomId(2),
                access: PermAccess::Read,
            },
        ];
        xs.set_perms(t, "data/shared", &perms).await.unwrap();
        assert_eq!(xs.get_perms(t, "data/shared").await.unwrap(), perms);
        *r.lock().unwrap() = true;
        // Stay alive: when a domain exits, the toolstack removes its home.
        while *r.lock().unwrap() {
            xenpal_sim::hal::task::yield_now().await;
        }
    })
    .unwrap();
    let r = ready.clone();
    sim.spawn(DomainConfig::new("other"), move |p| async move {
        let xs = p.xenstore().unwrap();
        let t = TxId::NONE;
        while !*r.lock().unwrap() {
            xenpal_sim::hal::task::yield_now().await;
        }
        assert_eq!(
            xs.read(t, "/local/domain/1/data/shared").await.unwrap(),
            b"for d2"
        );
        let denied = XsError::Errno(Errno::EACCES);
        assert_eq!(
            xs.read(t, "/local/domain/1/data/secret").await.unwrap_err(),
            denied
        );
        assert_eq!(
            xs.write(t, "/local/domain/1/data/shared", b"x")
                .await
                .unwrap_err(),
            denied
        );
        assert_eq!(
            xs.write(t, "/local/domain/1/data/new", b"x")
                .await
                .unwrap_err(),
            denied
        );
        // Not the owner: cannot change permissions.
        let mine = [Perm {
            domid: DomId(2),
            access: PermAccess::Both,
        }];
        assert_eq!(
            xs.set_perms(t, "/local/domain/1/data/shared", &mine)
                .await
                .unwrap_err(),
            denied
        );
        // Its own home's toolstack-owned nodes are read-only to it.
        assert_eq!(xs.write(t, "name", b"renamed").await.unwrap_err(), denied);
        *r.lock().unwrap() = false;
    })
    .unwrap();
    assert!(sim.run().all_clean());
}

#[test]
fn watches_fire_across_domains() {
    let mut sim = Sim::new(SimConfig::seeded(23));
    let events: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let e = events.clone();
    sim.spawn(DomainConfig::new("watcher"), move |p| async move {
        let xs = p.xenstore().unwrap();
        let t = TxId::NONE;
        xs.write(t, "data/inbox", b"").await.unwrap();
        // Let d2 write under our inbox.
        let perms = [
            Perm {
                domid: DomId(1),
                access: PermAccess::None,
            },
            Perm {
                domid: DomId(2),
                access: PermAccess::Both,
            },
        ];
        xs.set_perms(t, "data/inbox", &perms).await.unwrap();
        xs.watch("data/inbox", "tok").await.unwrap();
        // The initial firing, then the peer's write.
        for _ in 0..2 {
            let ev = xs.next_watch_event().await.unwrap();
            e.lock().unwrap().push((ev.path, ev.token));
        }
        // A node is owned by the domain that created it (as in Xen), so the
        // watcher, though it owns the directory, may not read it.
        assert_eq!(
            xs.read(t, "data/inbox/msg").await.unwrap_err(),
            XsError::Errno(Errno::EACCES)
        );
        xs.unwatch("data/inbox", "tok").await.unwrap();
        assert_eq!(
            xs.unwatch("data/inbox", "tok").await.unwrap_err(),
            XsError::Errno(Errno::ENOENT)
        );
    })
    .unwrap();
    sim.spawn(DomainConfig::new("writer"), |p| async move {
        let xs = p.xenstore().unwrap();
        // Retry until the watcher has opened its inbox to us.
        loop {
            match xs
                .write(TxId::NONE, "/local/domain/1/data/inbox/msg", b"ping")
                .await
            {
                Ok(()) => break,
                Err(e) if e == XsError::Errno(Errno::EACCES) || e.is_enoent() => {
                    xenpal_sim::hal::task::yield_now().await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .unwrap();
    assert!(sim.run().all_clean());
    let ev = events.lock().unwrap().clone();
    assert_eq!(
        ev[0],
        ("data/inbox".into(), "tok".into()),
        "relative watch, relative path"
    );
    assert_eq!(ev[1], ("data/inbox/msg".into(), "tok".into()));
}

#[test]
fn conflicting_transactions_get_eagain_and_retry_succeeds() {
    let mut sim = Sim::new(SimConfig::seeded(24));
    let result: Arc<Mutex<Option<(u32, u64)>>> = Arc::default();
    let r = result.clone();
    sim.spawn(DomainConfig::new("counter"), move |p| async move {
        let xs = p.xenstore().unwrap();
        xs.write(TxId::NONE, "data/n", b"0").await.unwrap();
        let mut conflicts = 0;
        for _ in 0..20 {
            loop {
                let tx = xs.transaction_start().await.unwrap();
                let n = xs.read_u64(tx, "data/n").await.unwrap();
                // Someone else bumps the counter behind the transaction's back
                // on the first attempt of every round.
                if conflicts < 20 && n % 2 == 0 {
                    xs.write(TxId::NONE, "data/n", (n + 1).to_string().as_bytes())
                        .await
                        .unwrap();
                }
                xs.write(tx, "data/n", (n + 1).to_string().as_bytes())
                    .await
                    .unwrap();
                match xs.transaction_end(tx, true).await {
                    Ok(()) => break,
                    Err(XsError::Errno(Errno::EAGAIN)) => conflicts += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // An aborted transaction changes nothing.
        let tx = xs.transaction_start().await.unwrap();
        xs.write(tx, "data/n", b"999").await.unwrap();
        xs.transaction_end(tx, false).await.unwrap();
        let n = xs.read_u64(TxId::NONE, "data/n").await.unwrap();
        *r.lock().unwrap() = Some((conflicts, n));
    })
    .unwrap();
    assert!(sim.run().all_clean());
    let (conflicts, n) = result.lock().unwrap().unwrap();
    assert!(conflicts > 0, "conflicting commits were refused");
    assert_eq!(
        n,
        20 + u64::from(conflicts),
        "every commit and every outside write counted once"
    );
}

#[test]
fn many_guests_share_one_xenstored() {
    let mut sim = Sim::new(SimConfig::seeded(25));
    for i in 0..50 {
        sim.spawn(
            DomainConfig::new(format!("g{i}")).memory_pages(16),
            move |p| async move {
                let xs = p.xenstore().unwrap();
                for k in 0..5 {
                    xs.write(
                        TxId::NONE,
                        &format!("data/k{k}"),
                        format!("{i}-{k}").as_bytes(),
                    )
                    .await
                    .unwrap();
                }
                for k in 0..5 {
                    assert_eq!(
                        xs.read_string(TxId::NONE, &format!("data/k{k}"))
                            .await
                            .unwrap(),
                        format!("{i}-{k}")
                    );
                }
            },
        )
        .unwrap();
    }
    let report = sim.run();
    assert!(report.all_clean(), "{report:?}");
}

/// The time each of 100 write-then-read round trips took, with xenstored
/// answering up to `delay` late; and the run's trace hash.
fn round_trips(seed: u64, delay: std::time::Duration) -> (Vec<u64>, u64) {
    use xenpal_sim::hal::Clock;
    let mut sim = Sim::new(SimConfig {
        seed,
        xenstore_delay: delay,
        ..SimConfig::default()
    });
    let took: Arc<Mutex<Vec<u64>>> = Arc::default();
    let t = took.clone();
    sim.spawn(DomainConfig::new("xs-slow"), move |p| async move {
        let xs = p.xenstore().expect("xenstore connected");
        for i in 0..100u32 {
            let start = p.timer().now();
            let v = i.to_string();
            xs.write(TxId::NONE, "data/n", v.as_bytes()).await.unwrap();
            assert_eq!(xs.read_string(TxId::NONE, "data/n").await.unwrap(), v);
            let end = p.timer().now();
            t.lock().unwrap().push(end.as_nanos() - start.as_nanos());
        }
    })
    .unwrap();
    assert!(sim.run().all_clean());
    let took = std::mem::take(&mut *took.lock().unwrap());
    (took, sim.trace_hash())
}

/// xenstored answering late (as a busy dom0 does): every reply still
/// comes, right, each request waiting from 0 to the delay (two per round
/// trip), and the same seed replays the same delays.
#[test]
fn delayed_replies_are_late_right_and_replayed() {
    use std::time::Duration;
    let (fast, _) = round_trips(8, Duration::ZERO);
    let (slow, hash) = round_trips(8, Duration::from_millis(1));
    let mean = |v: &[u64]| v.iter().sum::<u64>() / v.len() as u64;
    assert!(mean(&fast) < 100_000, "{}", mean(&fast));
    // Two requests of 0..1 ms each: about 1 ms a round trip.
    assert!(
        (600_000..1_400_000).contains(&mean(&slow)),
        "{}",
        mean(&slow)
    );
    assert!(slow.iter().all(|&t| t <= 2_100_000), "{slow:?}");
    assert_eq!(round_trips(8, Duration::from_millis(1)), (slow, hash));
}
