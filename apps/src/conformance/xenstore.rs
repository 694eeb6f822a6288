//! Xenstore, against whatever xenstored the platform has (the simulator's,
//! or C xenstored in a Linux dom0): nodes, permissions and their
//! inheritance, watches, transactions, quotas, malformed requests and the
//! error each gives. Everything is done under our own `data/conformance`
//! (which a toolstack gives the guest) and removed at the end. Expected
//! outcomes from C xenstored (`tools/xenstored/core.c`, `watch.c`,
//! `transaction.c`, `domain.c`) with its default quotas.

use super::Ctx;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;
use hal::DomId;
use hal::time::{Clock, with_timeout};
use xen_pv::abi::io::xs;
use xen_pv::xenstore::{Perm, PermAccess, TxId, XenStore, XsError};

const BASE: &str = "data/conformance";

/// Every case here, for platforms without xenstore.
const CASES: &[&str] = &[
    "xs.get-domain-path.self",
    "xs.get-domain-path.other",
    "xs.read.home",
    "xs.read.name",
    "xs.write.data",
    "xs.read.data",
    "xs.read.absolute",
    "xs.write.creates-parents",
    "xs.read.created-parent",
    "xs.mkdir.existing-keeps-value",
    "xs.mkdir.new",
    "xs.directory.children",
    "xs.directory.missing",
    "xs.read.missing",
    "xs.write.binary",
    "xs.write.empty",
    "xs.rm.node",
    "xs.rm.missing-with-parent",
    "xs.rm.missing-parent",
    "xs.rm.subtree",
    "xs.perms.creator-owns",
    "xs.perms.set-own",
    "xs.perms.inherited",
    "xs.perms.give-away",
    "xs.perms.bad-letter",
    "xs.perms.too-many",
    "xs.read.toolstack-node",
    "xs.read.under-unreadable",
    "xs.write.outside-home",
    "xs.write.home-node",
    "xs.path.space",
    "xs.path.double-slash",
    "xs.path.trailing-slash",
    "xs.path.too-long",
    "xs.read.special-node",
    "xs.watch.fires-at-once",
    "xs.watch.duplicate",
    "xs.watch.fires-on-write-below",
    "xs.watch.absolute-path",
    "xs.watch.fires-on-rm-of-parent",
    "xs.watch.special-path",
    "xs.watch.bad-path",
    "xs.unwatch.ok",
    "xs.unwatch.twice",
    "xs.tx.invisible-before-commit",
    "xs.tx.commit",
    "xs.tx.abort",
    "xs.tx.conflict",
    "xs.tx.bad-id",
    "xs.tx.end-twice",
    "xs.quota.node-size",
    "xs.quota.transactions",
    "xs.malformed.no-nul",
    "xs.malformed.unknown-type",
    "xs.introduce.unprivileged",
];

/// A xenstore result as the suite writes it: `ok` or the error's name.
pub(crate) fn word<T>(r: &Result<T, XsError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(XsError::Errno(e)) => e.name().into(),
        Err(e) => format!("{e}"),
    }
}

fn value(r: Result<Vec<u8>, XsError>) -> String {
    match r {
        Ok(v) => format!("{:?}", String::from_utf8_lossy(&v)),
        Err(e) => word(&Err::<(), _>(e)),
    }
}

/// A permission list with our id and dom0's written as names.
fn perms(cx: &Ctx<'_>, r: Result<Vec<Perm>, XsError>) -> String {
    let list = match r {
        Ok(l) => l,
        Err(e) => return word(&Err::<(), _>(e)),
    };
    let mut out = Vec::new();
    for p in list {
        let who = if p.domid == cx.me {
            "self".to_string()
        } else if p.domid == DomId(0) {
            "dom0".to_string()
        } else {
            "other".to_string()
        };
        let a = match p.access {
            PermAccess::None => "n",
            PermAccess::Read => "r",
            PermAccess::Write => "w",
            PermAccess::Both => "b",
        };
        out.push(format!("{a}:{who}"));
    }
    out.join(" ")
}

fn perm(domid: DomId, access: PermAccess) -> Perm {
    Perm { domid, access }
}

/// The next watch event for `token`, or `none` within a second.
async fn event(cx: &Ctx<'_>, xs: &XenStore<xenpal::Hypervisor>, token: &str) -> String {
    let t = cx.p.timer();
    let deadline = t.now() + Duration::from_secs(1);
    match with_timeout(t, deadline, core::pin::pin!(xs.next_watch_event_for(token))).await {
        Ok(Ok(e)) => e.path.replace(&format!("/local/domain/{}", cx.me.0), "~"),
        Ok(Err(e)) => word(&Err::<(), _>(e)),
        Err(_) => "none".into(),
    }
}

pub(crate) async fn run(cx: &mut Ctx<'_>) {
    let p = cx.p;
    let Some(xs) = p.xenstore() else {
        for n in CASES {
            cx.not_applicable(n, "-", "no xenstore on this platform");
        }
        return;
    };
    let me = cx.me;
    let home = format!("/local/domain/{}", me.0);
    let n = TxId::NONE;
    let at = |p: &str| format!("{BASE}/{p}");

    // --- paths and plain nodes ------------------------------------------------
    let r = xs.domain_path(me).await;
    cx.check(
        "xs.get-domain-path.self",
        "/local/domain/<self>",
        match r {
            Ok(p) if p == home => "/local/domain/<self>".into(),
            Ok(p) => p,
            Err(e) => word(&Err::<(), _>(e)),
        },
    );
    let r = xs.domain_path(DomId(7)).await;
    cx.check(
        "xs.get-domain-path.other",
        "\"/local/domain/7\"",
        match r {
            Ok(p) => format!("{p:?}"),
            Err(e) => word(&Err::<(), _>(e)),
        },
    );
    let r = xs.read(n, &home).await;
    cx.check("xs.read.home", "ok", word(&r));
    let r = xs.read(n, &format!("{home}/name")).await;
    cx.check("xs.read.name", "ok", word(&r));
    let _ = xs.rm(n, BASE).await;
    let r = xs.write(n, &at("x"), b"hello").await;
    cx.check("xs.write.data", "ok", word(&r));
    cx.check(
        "xs.read.data",
        "\"hello\"",
        value(xs.read(n, &at("x")).await),
    );
    cx.check(
        "xs.read.absolute",
        "\"hello\"",
        value(xs.read(n, &format!("{home}/{BASE}/x")).await),
    );
    let r = xs.write(n, &at("p/q/r"), b"deep").await;
    cx.check("xs.write.creates-parents", "ok", word(&r));
    cx.check(
        "xs.read.created-parent",
        "\"\"",
        value(xs.read(n, &at("p/q")).await),
    );
    let _ = xs.mkdir(n, &at("x")).await;
    cx.check(
        "xs.mkdir.existing-keeps-value",
        "\"hello\"",
        value(xs.read(n, &at("x")).await),
    );
    let r = xs.mkdir(n, &at("d")).await;
    cx.check("xs.mkdir.new", "ok", word(&r));
    let r = xs.directory(n, BASE).await;
    cx.check(
        "xs.directory.children",
        "d p x",
        match r {
            Ok(mut v) => {
                v.sort();
                v.join(" ")
            }
            Err(e) => word(&Err::<(), _>(e)),
        },
    );
    let r = xs.directory(n, &at("nope")).await;
    cx.check("xs.directory.missing", "ENOENT", word(&r));
    cx.check(
        "xs.read.missing",
        "ENOENT",
        value(xs.read(n, &at("nope")).await),
    );
    let _ = xs.write(n, &at("bin"), b"a\0b").await;
    cx.check(
        "xs.write.binary",
        "\"a\\0b\"",
        value(xs.read(n, &at("bin")).await),
    );
    let _ = xs.write(n, &at("empty"), b"").await;
    cx.check(
        "xs.write.empty",
        "\"\"",
        value(xs.read(n, &at("empty")).await),
    );
    let r = xs.rm(n, &at("bin")).await;
    let gone = xs.read(n, &at("bin")).await;
    cx.check(
        "xs.rm.node",
        "ok, ENOENT",
        format!("{}, {}", word(&r), value(gone)),
    );
    cx.check(
        "xs.rm.missing-with-parent",
        "ok",
        word(&xs.rm(n, &at("bin")).await),
    );
    cx.check(
        "xs.rm.missing-parent",
        "ENOENT",
        word(&xs.rm(n, &at("no/such")).await),
    );
    let r = xs.rm(n, &at("p")).await;
    let below = xs.read(n, &at("p/q/r")).await;
    cx.check(
        "xs.rm.subtree",
        "ok, ENOENT",
        format!("{}, {}", word(&r), value(below)),
    );

    // --- permissions --------------------------------------------------------------
    // The rest of the list is inherited from `data`, which is the
    // toolstack's business.
    let owner = perms(cx, xs.get_perms(n, &at("x")).await);
    cx.check(
        "xs.perms.creator-owns",
        "owner self",
        match owner.split(' ').next() {
            Some(first) if first.ends_with(":self") => "owner self".into(),
            _ => owner,
        },
    );
    let set = [perm(me, PermAccess::None), perm(DomId(0), PermAccess::Read)];
    let r = xs.set_perms(n, &at("x"), &set).await;
    cx.check("xs.perms.set-own", "ok", word(&r));
    let _ = xs.write(n, &at("x/child"), b"").await;
    cx.check(
        "xs.perms.inherited",
        "n:self r:dom0",
        perms(cx, xs.get_perms(n, &at("x/child")).await),
    );
    if cx.privileged {
        cx.not_applicable("xs.perms.give-away", "EPERM", "dom0 may give nodes away");
    } else {
        let r = xs
            .set_perms(n, &at("x"), &[perm(DomId(0), PermAccess::None)])
            .await;
        cx.check("xs.perms.give-away", "EPERM", word(&r));
    }
    let mut raw = at("x").into_bytes();
    raw.extend_from_slice(format!("\0q{}\0", me.0).as_bytes());
    let r = xs.request(xs::SET_PERMS, n, &[&raw]).await;
    cx.check("xs.perms.bad-letter", "EINVAL", word(&r));
    let mut many = Vec::from([perm(me, PermAccess::None)]);
    many.extend([perm(DomId(0), PermAccess::Read); 5]);
    let r = xs.set_perms(n, &at("x"), &many).await;
    cx.check("xs.perms.too-many", "ENOSPC", word(&r));

    if cx.privileged {
        for c in [
            "xs.read.toolstack-node",
            "xs.read.under-unreadable",
            "xs.write.outside-home",
            "xs.write.home-node",
            "xs.introduce.unprivileged",
        ] {
            cx.not_applicable(c, "EACCES", "dom0 may do this");
        }
    } else {
        let r = xs.read(n, "/local/domain/0").await;
        cx.check("xs.read.toolstack-node", "EACCES", word(&r));
        let r = xs.read(n, "/local/domain/0/no/such").await;
        cx.check("xs.read.under-unreadable", "EACCES", word(&r));
        let r = xs.write(n, "/tool/xenpal-conformance", b"x").await;
        cx.check("xs.write.outside-home", "EACCES", word(&r));
        let r = xs.write(n, &format!("{home}/name"), b"renamed").await;
        cx.check("xs.write.home-node", "EACCES", word(&r));
        let r = xs
            .request(xs::INTRODUCE, n, &[b"1\0", b"1234\0", b"5\0"])
            .await;
        cx.check("xs.introduce.unprivileged", "EACCES", word(&r));
    }

    // --- path syntax --------------------------------------------------------------
    cx.check(
        "xs.path.space",
        "EINVAL",
        word(&xs.read(n, &at("a b")).await),
    );
    cx.check(
        "xs.path.double-slash",
        "EINVAL",
        word(&xs.read(n, &at("a//b")).await),
    );
    cx.check(
        "xs.path.trailing-slash",
        "EINVAL",
        word(&xs.read(n, &at("a/")).await),
    );
    let long = at(&"a".repeat(3100));
    cx.check("xs.path.too-long", "EINVAL", word(&xs.read(n, &long).await));
    cx.check(
        "xs.read.special-node",
        "EINVAL",
        word(&xs.read(n, "@releaseDomain").await),
    );

    // --- watches --------------------------------------------------------------------
    let r = xs.watch(BASE, "c1").await;
    let first = event(cx, xs, "c1").await;
    cx.check(
        "xs.watch.fires-at-once",
        &format!("ok, {BASE}"),
        format!("{}, {first}", word(&r)),
    );
    cx.check(
        "xs.watch.duplicate",
        "EEXIST",
        word(&xs.watch(BASE, "c1").await),
    );
    let _ = xs.write(n, &at("x"), b"changed").await;
    cx.check(
        "xs.watch.fires-on-write-below",
        &format!("{BASE}/x"),
        event(cx, xs, "c1").await,
    );
    let abs = format!("{home}/{BASE}/d");
    let r = xs.watch(&abs, "c2").await;
    let first = event(cx, xs, "c2").await;
    cx.check(
        "xs.watch.absolute-path",
        &format!("ok, ~/{BASE}/d"),
        format!("{}, {first}", word(&r)),
    );
    let _ = xs.write(n, &at("w/x"), b"").await;
    let _ = xs.watch(&at("w/x"), "c3").await;
    let _ = event(cx, xs, "c3").await;
    let _ = xs.rm(n, &at("w")).await;
    cx.check(
        "xs.watch.fires-on-rm-of-parent",
        &format!("{BASE}/w/x"),
        event(cx, xs, "c3").await,
    );
    let r = xs.watch("@introduceDomain", "c4").await;
    let first = event(cx, xs, "c4").await;
    cx.check(
        "xs.watch.special-path",
        "ok, @introduceDomain",
        format!("{}, {first}", word(&r)),
    );
    cx.check(
        "xs.watch.bad-path",
        "EINVAL",
        word(&xs.watch(&at("w/"), "c5").await),
    );
    cx.check("xs.unwatch.ok", "ok", word(&xs.unwatch(&abs, "c2").await));
    cx.check(
        "xs.unwatch.twice",
        "ENOENT",
        word(&xs.unwatch(&abs, "c2").await),
    );
    for (p, tok) in [
        (BASE.to_string(), "c1"),
        (at("w/x"), "c3"),
        ("@introduceDomain".into(), "c4"),
    ] {
        let _ = xs.unwatch(&p, tok).await;
    }
    while let Ok(Some(_)) = xs.try_watch_event() {}

    // --- transactions -------------------------------------------------------------------
    match xs.transaction_start().await {
        Ok(t1) => {
            let _ = xs.write(t1, &at("t/a"), b"one").await;
            let outside = xs.read(n, &at("t/a")).await;
            let inside = xs.read(t1, &at("t/a")).await;
            cx.check(
                "xs.tx.invisible-before-commit",
                "\"one\", ENOENT",
                format!("{}, {}", value(inside), value(outside)),
            );
            let r = xs.transaction_end(t1, true).await;
            let after = xs.read(n, &at("t/a")).await;
            cx.check(
                "xs.tx.commit",
                "ok, \"one\"",
                format!("{}, {}", word(&r), value(after)),
            );
            let r = xs.transaction_end(t1, true).await;
            cx.check("xs.tx.end-twice", "ENOENT", word(&r));
        }
        Err(e) => cx.check("xs.tx.commit", "ok, \"one\"", word(&Err::<(), _>(e))),
    }
    if let Ok(t2) = xs.transaction_start().await {
        let _ = xs.write(t2, &at("t/b"), b"two").await;
        let r = xs.transaction_end(t2, false).await;
        let after = xs.read(n, &at("t/b")).await;
        cx.check(
            "xs.tx.abort",
            "ok, ENOENT",
            format!("{}, {}", word(&r), value(after)),
        );
    }
    if let Ok(t3) = xs.transaction_start().await {
        let _ = xs.read(t3, &at("t/a")).await;
        let _ = xs.write(n, &at("t/a"), b"changed").await;
        let _ = xs.write(t3, &at("t/c"), b"three").await;
        let r = xs.transaction_end(t3, true).await;
        let after = xs.read(n, &at("t/c")).await;
        cx.check(
            "xs.tx.conflict",
            "EAGAIN, ENOENT",
            format!("{}, {}", word(&r), value(after)),
        );
    }
    cx.check(
        "xs.tx.bad-id",
        "ENOENT",
        word(&xs.read(TxId(0x7fff_fff0), &at("t/a")).await),
    );

    // --- quotas (C xenstored's defaults) ---------------------------------------------
    let big = alloc::vec![b'v'; 2100];
    cx.check(
        "xs.quota.node-size",
        "ENOSPC",
        word(&xs.write(n, &at("big"), &big).await),
    );
    let mut open = Vec::new();
    let mut end = Ok(());
    for _ in 0..64 {
        match xs.transaction_start().await {
            Ok(t) => open.push(t),
            Err(e) => {
                end = Err(e);
                break;
            }
        }
    }
    for t in open {
        let _ = xs.transaction_end(t, false).await;
    }
    cx.check("xs.quota.transactions", "ENOSPC", word(&end));

    // --- malformed requests -----------------------------------------------------------
    let path = at("x");
    if cx.version >= (4, 18) {
        let r = xs.request(xs::READ, n, &[path.as_bytes()]).await;
        cx.check("xs.malformed.no-nul", "EINVAL", word(&r));
    } else {
        // Before 4.18 (commit f174147e63) canonicalize() returned NULL
        // without setting errno: the reply is whatever failed last.
        cx.not_applicable(
            "xs.malformed.no-nul",
            "EINVAL",
            "C xenstored before 4.18 answers with a stale errno",
        );
    }
    let r = xs.request(20, n, &[b"\0"]).await;
    cx.check("xs.malformed.unknown-type", "ENOSYS", word(&r));

    let _ = xs.rm(n, BASE).await;
}
