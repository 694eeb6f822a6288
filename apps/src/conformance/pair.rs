//! Cases that need two guests: event channels, grants and xenstore
//! permissions across domains. Run where a toolstack starts two copies of
//! the suite and tells each the other's id in `data/peer-domid` (the
//! simulator's test, and the Linux-dom0 rig, which `xl create`s a second
//! guest). The lower id leads: it offers a port and grants, the other
//! follows, and they step through the cases by xenstore:
//!
//! 1. the leader allocates a port for the follower, grants it a page
//!    read-write and one read-only, and ends a third grant; it publishes
//!    them under `data/xc/shared` (readable by the follower) and sets
//!    `step` to 1;
//! 2. the follower binds the port, maps and copies the grants (keeping the
//!    read-write mapping), writes into it, notifies, and publishes its
//!    outcomes and `step` 1 under its own `data/xc`;
//! 3. the leader sees the notification, the flags of its entry and the
//!    follower's writing, finds `end_access` refused, sets `step` 2;
//! 4. the follower unmaps and closes its port, publishes `step` 2;
//! 5. the leader ends the grant, finds its port unbound, sends into it, and
//!    records the follower's outcomes as its own cases.
//!
//! Expected outcomes are Xen's; under XSM SILO (Arm's default) two guests
//! may not talk at all, so there they are SILO's refusals.

use super::evtchn::{alloc_unbound, bind_interdomain, clear_pending, close, port_op};
use super::gnttab::{hal_name, map_word, raw_unmap, unmap_word};
use super::xenstore::word;
use super::{Ctx, errno, gntst_name};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;
use hal::mem::{PageAlloc, Pages, SharedMemory};
use hal::time::{Clock, sleep};
use hal::{Access, DomId, GrantRef, GrantTable};
use xen_pv::abi::{self, evtchnop, gntcopy, gnttabop};
use xen_pv::hypercall::{self, Hypervisor as _};
use xen_pv::xenstore::{Perm, PermAccess, TxId, XenStore};

const LEADER_TEXT: &[u8] = b"from the leader";
const FOLLOWER_TEXT: &[u8] = b"from the follower";
/// How long either side waits for the other at one step.
const PATIENCE: Duration = Duration::from_secs(60);

type Xs = XenStore<xenpal::Hypervisor>;

/// What the two sides are to each other.
pub(crate) struct Pair {
    pub peer: DomId,
    pub leader: bool,
}

/// Our peer, if a toolstack wrote one into `data/peer-domid` (waiting a
/// while for it: the peer may be created after us).
pub(crate) async fn find(cx: &Ctx<'_>, wait: Duration) -> Option<Pair> {
    let xs = cx.p.xenstore()?;
    let t = cx.p.timer();
    let until = t.now() + wait;
    loop {
        if let Ok(v) = xs.read_string(TxId::NONE, "data/peer-domid").await
            && let Ok(id) = v.trim().parse::<u16>()
        {
            let peer = DomId(id);
            return Some(Pair {
                peer,
                leader: cx.me.0 < id,
            });
        }
        if t.now() >= until {
            return None;
        }
        sleep(t, Duration::from_millis(10)).await;
    }
}

/// Wait until `path` reads as a number of at least `step`.
async fn wait_step(cx: &Ctx<'_>, xs: &Xs, path: &str, step: u32) -> bool {
    let t = cx.p.timer();
    let until = t.now() + PATIENCE;
    while t.now() < until {
        if let Ok(v) = xs.read_string(TxId::NONE, path).await
            && v.trim().parse::<u32>().is_ok_and(|s| s >= step)
        {
            return true;
        }
        sleep(t, Duration::from_millis(2)).await;
    }
    false
}

/// The names of the leader's cases and the follower's, for a platform
/// where they cannot run.
const CASES: &[&str] = &[
    "pair.evtchn.alloc-unbound-for-peer",
    "pair.evtchn.peer-bind",
    "pair.evtchn.peer-status",
    "pair.evtchn.peer-bind-twice",
    "pair.gnttab.peer-map-rw",
    "pair.gnttab.peer-reads-leader",
    "pair.gnttab.peer-map-ro-grant-rw",
    "pair.gnttab.peer-map-ro-grant-ro",
    "pair.gnttab.peer-map-out-of-range",
    "pair.gnttab.peer-map-ended",
    "pair.gnttab.peer-copy-from-grant",
    "pair.gnttab.peer-copy-to-ro-grant",
    "pair.xs.peer-reads-private",
    "pair.xs.peer-reads-shared",
    "pair.xs.peer-writes-shared",
    "pair.evtchn.peer-send",
    "pair.evtchn.notification-arrives",
    "pair.gnttab.flags-while-peer-maps",
    "pair.gnttab.end-access-while-peer-maps",
    "pair.gnttab.peer-wrote-through",
    "pair.gnttab.peer-unmap",
    "pair.gnttab.peer-unmap-twice",
    "pair.evtchn.peer-close",
    "pair.gnttab.end-access-after-peer-unmaps",
    "pair.evtchn.status-after-peer-closed",
    "pair.evtchn.send-to-closed-peer",
];

/// Record every pair case as not applicable.
pub(crate) fn not_applicable(cx: &mut Ctx<'_>, why: &str) {
    for n in CASES {
        cx.not_applicable(n, "-", why);
    }
}

/// The leader's side; records every pair case.
pub(crate) async fn lead(cx: &mut Ctx<'_>, peer: DomId) {
    let p = cx.p;
    let Some(xs) = p.xenstore() else {
        return not_applicable(cx, "no xenstore");
    };
    let h = p.hypervisor();
    let g = p.grants();
    let n = TxId::NONE;
    let me = cx.me;
    let (Ok(a), Ok(b)) = (p.pages().alloc(1), p.pages().alloc(1)) else {
        return not_applicable(cx, "no pages");
    };
    a.write(0, LEADER_TEXT);
    b.write(0, LEADER_TEXT);

    // 1. Offer.
    let port = alloc_unbound(h, DomId::SELF, peer);
    let want = if cx.setup.xsm_silo { "-EPERM" } else { "ok" };
    cx.check("pair.evtchn.alloc-unbound-for-peer", want, errno(port));
    let port = port.unwrap_or(0);
    let rw = g.grant_access(peer, a.gfn(0), Access::ReadWrite);
    let ro = g.grant_access(peer, b.gfn(0), Access::ReadOnly);
    let ended = g.grant_access(peer, b.gfn(0), Access::ReadWrite);
    let (Ok(rw), Ok(ro), Ok(ended)) = (rw, ro, ended) else {
        p.pages().free(a);
        p.pages().free(b);
        return not_applicable(cx, "no grant table");
    };
    let _ = g.end_access(ended);
    let shared = "data/xc/shared";
    let _ = xs.rm(n, "data/xc").await;
    let _ = xs.write(n, "data/xc/private", b"not for the peer").await;
    let _ = xs
        .write(
            n,
            &format!("{shared}/offer"),
            format!("{port} {} {} {}", rw.0, ro.0, ended.0).as_bytes(),
        )
        .await;
    let perms = [
        Perm {
            domid: me,
            access: PermAccess::None,
        },
        Perm {
            domid: peer,
            access: PermAccess::Read,
        },
    ];
    let _ = xs.set_perms(n, shared, &perms).await;
    let _ = xs.set_perms(n, &format!("{shared}/offer"), &perms).await;
    let _ = xs.write(n, &format!("{shared}/step"), b"1").await;
    let _ = xs.set_perms(n, &format!("{shared}/step"), &perms).await;

    // 3. See what the follower did while it still maps the page.
    let theirs = format!("/local/domain/{}/data/xc", peer.0);
    let ok = wait_step(cx, xs, &format!("{theirs}/step"), 1).await;
    if !ok {
        p.pages().free(a);
        p.pages().free(b);
        return not_applicable(cx, "the peer never answered");
    }
    let pending = port != 0 && {
        let w = p.events().shared_info().load_u64(
            xen_pv::event::layout::PENDING + 8 * (port as usize / 64),
            core::sync::atomic::Ordering::Acquire,
        );
        w & (1 << (port % 64)) != 0
    };
    let want = if cx.setup.xsm_silo {
        "not pending"
    } else {
        "pending"
    };
    cx.check(
        "pair.evtchn.notification-arrives",
        want,
        if pending { "pending" } else { "not pending" },
    );
    if port != 0 {
        clear_pending(cx, port);
    }
    let flags = g.entry_flags(rw).unwrap_or(0);
    let mapped_flags = match (
        flags & abi::gtf::READING != 0,
        flags & abi::gtf::WRITING != 0,
    ) {
        (true, true) => "reading, writing",
        (true, false) => "reading",
        (false, true) => "writing",
        (false, false) => "idle",
    };
    let want = if cx.setup.xsm_silo {
        "idle"
    } else {
        "reading, writing"
    };
    cx.check("pair.gnttab.flags-while-peer-maps", want, mapped_flags);
    let r = g.end_access(rw);
    let want = if cx.setup.xsm_silo { "ended" } else { "InUse" };
    let ended_now = r.is_ok();
    cx.check(
        "pair.gnttab.end-access-while-peer-maps",
        want,
        match r {
            Ok(()) => "ended".to_string(),
            Err(e) => format!("{e:?}"),
        },
    );
    let mut got = [0u8; FOLLOWER_TEXT.len()];
    a.read(100, &mut got);
    let want = if cx.setup.xsm_silo {
        "untouched"
    } else {
        "written by the peer"
    };
    cx.check(
        "pair.gnttab.peer-wrote-through",
        want,
        if got == FOLLOWER_TEXT {
            "written by the peer"
        } else {
            "untouched"
        },
    );
    let _ = xs.write(n, &format!("{shared}/step"), b"2").await;

    // 5. After the follower unmapped and closed.
    let ok = wait_step(cx, xs, &format!("{theirs}/step"), 2).await;
    if ok {
        let r = if ended_now { Ok(()) } else { g.end_access(rw) };
        cx.check(
            "pair.gnttab.end-access-after-peer-unmaps",
            "ok",
            match r {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("{e:?}"),
            },
        );
        if port != 0 {
            let st = super::evtchn::describe_status(cx, DomId::SELF, port);
            cx.check(
                "pair.evtchn.status-after-peer-closed",
                "unbound to another domain, vcpu 0",
                st,
            );
            let r = port_op(h, evtchnop::SEND, port);
            cx.check("pair.evtchn.send-to-closed-peer", "ok", errno(r));
            let _ = close(h, port);
        } else {
            for c in [
                "pair.evtchn.status-after-peer-closed",
                "pair.evtchn.send-to-closed-peer",
            ] {
                cx.not_applicable(c, "-", "XSM SILO: no port between two guests");
            }
        }
    }
    // The follower's own outcomes, as our cases.
    let results = xs
        .read(n, &format!("{theirs}/results"))
        .await
        .unwrap_or_default();
    for line in String::from_utf8_lossy(&results).lines() {
        let mut f = line.split('\t');
        if let (Some(name), Some(observed), Some(expected)) = (f.next(), f.next(), f.next()) {
            if observed == "n/a" {
                cx.not_applicable(name, expected, "not run by the peer");
            } else {
                cx.check(name, expected, observed);
            }
        }
    }
    let _ = g.end_access(ro);
    let _ = xs.write(n, &format!("{shared}/step"), b"3").await;
    p.pages().free(a);
    p.pages().free(b);
}

/// The follower's outcomes, published to the leader.
struct Outcomes(Vec<(String, String, String)>);

impl Outcomes {
    fn check(&mut self, name: &str, expected: &str, observed: impl Into<String>) {
        self.0.push((name.into(), observed.into(), expected.into()));
    }

    fn text(&self) -> Vec<u8> {
        let mut s = String::new();
        for (n, o, e) in &self.0 {
            s.push_str(&format!("{n}\t{o}\t{e}\n"));
        }
        s.into_bytes()
    }
}

/// The follower's side: prints nothing; its outcomes go to the leader.
pub(crate) async fn follow(cx: &Ctx<'_>, leader: DomId) {
    let p = cx.p;
    let Some(xs) = p.xenstore() else {
        return;
    };
    let h = p.hypervisor();
    let g = p.grants();
    let n = TxId::NONE;
    let me = cx.me;
    let theirs = format!("/local/domain/{}/data/xc", leader.0);
    let mine = "data/xc";
    let _ = xs.rm(n, mine).await;
    let _ = xs.mkdir(n, mine).await;
    let perms = [
        Perm {
            domid: me,
            access: PermAccess::None,
        },
        Perm {
            domid: leader,
            access: PermAccess::Read,
        },
    ];
    let _ = xs.set_perms(n, mine, &perms).await;
    if !wait_step(cx, xs, &format!("{theirs}/shared/step"), 1).await {
        return;
    }
    let offer = xs
        .read_string(n, &format!("{theirs}/shared/offer"))
        .await
        .unwrap_or_default();
    let v: Vec<u32> = offer.split(' ').filter_map(|x| x.parse().ok()).collect();
    let [port, rw, ro, ended] = v[..] else {
        return;
    };
    let mut out = Outcomes(Vec::new());

    // 2. Event channel.
    let silo = cx.setup.xsm_silo;
    let local = if port != 0 {
        let r = bind_interdomain(h, leader, port);
        out.check("pair.evtchn.peer-bind", "ok", errno(r));
        let local = r.unwrap_or(0);
        let st = super::evtchn::describe_status(cx, DomId::SELF, local);
        out.check(
            "pair.evtchn.peer-status",
            "interdomain to another domain, another port, vcpu 0",
            st,
        );
        let r = bind_interdomain(h, leader, port);
        out.check("pair.evtchn.peer-bind-twice", "-EINVAL", errno(r));
        local
    } else {
        for c in [
            "pair.evtchn.peer-bind",
            "pair.evtchn.peer-status",
            "pair.evtchn.peer-bind-twice",
        ] {
            out.check(c, "n/a", "n/a");
        }
        0
    };

    // Grants.
    let want_ok = if silo {
        "GNTST_permission_denied"
    } else {
        "GNTST_okay"
    };
    let map = g.map(leader, GrantRef(rw), Access::ReadWrite);
    out.check("pair.gnttab.peer-map-rw", want_ok, map_word(&map));
    let mut seen = [0u8; LEADER_TEXT.len()];
    if let Ok(m) = &map {
        m.read(0, &mut seen);
        m.write(100, FOLLOWER_TEXT);
    }
    out.check(
        "pair.gnttab.peer-reads-leader",
        if silo { "nothing" } else { "the leader's text" },
        if seen == LEADER_TEXT {
            "the leader's text"
        } else {
            "nothing"
        },
    );
    let try_map = |gref: u32, access: Access| match g.map(leader, GrantRef(gref), access) {
        Ok(m) => {
            let _ = g.unmap(m);
            gntst_name(0)
        }
        Err(e) => hal_name(e),
    };
    let want_gen = if silo {
        "GNTST_permission_denied"
    } else {
        "GNTST_general_error"
    };
    out.check(
        "pair.gnttab.peer-map-ro-grant-rw",
        want_gen,
        try_map(ro, Access::ReadWrite),
    );
    out.check(
        "pair.gnttab.peer-map-ro-grant-ro",
        want_ok,
        try_map(ro, Access::ReadOnly),
    );
    out.check(
        "pair.gnttab.peer-map-out-of-range",
        if silo {
            "GNTST_permission_denied"
        } else {
            "GNTST_bad_gntref"
        },
        try_map(0xffff_ff00, Access::ReadWrite),
    );
    out.check(
        "pair.gnttab.peer-map-ended",
        want_gen,
        try_map(ended, Access::ReadWrite),
    );
    let copy = |src: abi::GnttabCopyPtr, dst: abi::GnttabCopyPtr, flags: u16| {
        let mut c = [abi::GnttabCopy {
            source: src,
            dest: dst,
            len: 8,
            flags,
            status: 0,
            _pad0: 0,
        }];
        match hypercall::grant_table_op(h, gnttabop::COPY, &mut c) {
            Ok(()) => gntst_name(c[0].status),
            Err(e) => format!("-{}", e.name()),
        }
    };
    if let Ok(page) = p.pages().alloc(1) {
        let frame = h.xen_frame(page.gfn(0)).unwrap_or(0);
        let local_ptr = abi::GnttabCopyPtr {
            u: frame,
            domid: DomId::SELF.0,
            offset: 0,
            _pad0: 0,
        };
        let grant_ptr = |gref: u32| abi::GnttabCopyPtr {
            u: u64::from(gref),
            domid: leader.0,
            offset: 0,
            _pad0: 0,
        };
        out.check(
            "pair.gnttab.peer-copy-from-grant",
            want_ok,
            copy(grant_ptr(rw), local_ptr, gntcopy::SOURCE_GREF),
        );
        out.check(
            "pair.gnttab.peer-copy-to-ro-grant",
            want_gen,
            copy(local_ptr, grant_ptr(ro), gntcopy::DEST_GREF),
        );
        p.pages().free(page);
    }

    // Xenstore permissions across domains.
    let r = xs.read(n, &format!("{theirs}/private")).await;
    out.check("pair.xs.peer-reads-private", "EACCES", word(&r));
    let r = xs.read(n, &format!("{theirs}/shared/offer")).await;
    out.check("pair.xs.peer-reads-shared", "ok", word(&r));
    let r = xs.write(n, &format!("{theirs}/shared/offer"), b"x").await;
    out.check("pair.xs.peer-writes-shared", "EACCES", word(&r));

    if local != 0 {
        let r = port_op(h, evtchnop::SEND, local);
        out.check("pair.evtchn.peer-send", "ok", errno(r));
    } else {
        out.check("pair.evtchn.peer-send", "n/a", "n/a");
    }
    let _ = xs.write(n, &format!("{mine}/results"), &out.text()).await;
    let _ = xs.write(n, &format!("{mine}/step"), b"1").await;

    // 4. Unmap and close once the leader has looked.
    if !wait_step(cx, xs, &format!("{theirs}/shared/step"), 2).await {
        return;
    }
    match map {
        Ok(m) => {
            let (addr, handle) = (m.gfn().addr(), m.handle());
            let r = g.unmap(m);
            out.check("pair.gnttab.peer-unmap", "GNTST_okay", unmap_word(r));
            out.check(
                "pair.gnttab.peer-unmap-twice",
                "GNTST_bad_handle",
                raw_unmap(h, addr, handle),
            );
        }
        Err(_) => {
            out.check("pair.gnttab.peer-unmap", "n/a", "n/a");
            out.check("pair.gnttab.peer-unmap-twice", "n/a", "n/a");
        }
    }
    if local != 0 {
        out.check("pair.evtchn.peer-close", "ok", errno(close(h, local)));
    } else {
        out.check("pair.evtchn.peer-close", "n/a", "n/a");
    }
    let _ = xs.write(n, &format!("{mine}/results"), &out.text()).await;
    let _ = xs.write(n, &format!("{mine}/step"), b"2").await;
    // Stay until the leader has read everything.
    let _ = wait_step(cx, xs, &format!("{theirs}/shared/step"), 3).await;
}
