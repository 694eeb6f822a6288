//! Grant tables (`grant_table_op`, v1): granting to ourselves, mapping,
//! unmapping and copying, with every `GNTST_*` a guest can provoke alone.
//! Expected outcomes from Xen's `xen/common/grant_table.c` (note Xen's
//! surprises: a write map of a read-only grant, or a map of a grant made
//! for another domain, is `GNTST_general_error`, not
//! `GNTST_permission_denied`; a map naming `DOMID_SELF` is
//! `GNTST_bad_domain`; a copy checks its references before its length).

use super::evtchn::NO_SUCH_DOMAIN;
use super::{Ctx, errno, gntst_name};
use alloc::format;
use alloc::string::String;
use hal::mem::{PAGE_SIZE, PageAlloc, Pages, SharedMemory};
use hal::{Access, DomId, GrantError, GrantRef, GrantTable};
use xen_pv::abi::{self, Errno, gntcopy, gntmap, gnttabop, gtf, op};
use xen_pv::hypercall::{self, Hypervisor};

/// A grant reference beyond any table.
const OUT_OF_RANGE: u32 = 0xffff_ff00;
/// A frame number no guest has.
const NO_SUCH_FRAME: u64 = 0xf_ffff_fff0;
/// `GNTTABOP_get_version`.
const GET_VERSION: u32 = gnttabop::GET_VERSION;

fn table_op<H: Hypervisor, T>(h: &H, cmd: u32, count: u64, arg: &mut T) -> Result<usize, Errno>
where
    T: zerocopy::IntoBytes + zerocopy::FromBytes,
{
    hypercall::call_with(
        h,
        op::GRANT_TABLE_OP,
        [u64::from(cmd), 0, count, 0, 0],
        1,
        arg,
    )
}

fn query_size<H: Hypervisor>(h: &H, dom: DomId, count: u64) -> String {
    let mut q = abi::GnttabQuerySize {
        dom: dom.0,
        ..Default::default()
    };
    match table_op(h, gnttabop::QUERY_SIZE, count, &mut q) {
        Ok(_) => gntst_name(q.status),
        Err(e) => format!("-{}", e.name()),
    }
}

fn get_version<H: Hypervisor>(h: &H, dom: DomId) -> String {
    // struct gnttab_get_version { domid_t dom; uint16_t pad; uint32_t version; }
    let mut v = [u32::from(dom.0), 0u32];
    match table_op(h, GET_VERSION, 1, &mut v) {
        Ok(_) => format!("version {}", v[1]),
        Err(e) => format!("-{}", e.name()),
    }
}

/// A raw map (for what `GrantTable::map` never sends): its status.
fn raw_map<H: Hypervisor>(h: &H, dom: DomId, gref: u32, flags: u32) -> String {
    let mut m = [abi::GnttabMapGrantRef {
        host_addr: 0,
        flags,
        ref_: gref,
        dom: dom.0,
        ..Default::default()
    }];
    match hypercall::grant_table_op(h, gnttabop::MAP_GRANT_REF, &mut m) {
        Ok(()) => gntst_name(m[0].status),
        Err(e) => format!("-{}", e.name()),
    }
}

pub(crate) fn raw_unmap<H: Hypervisor>(h: &H, host_addr: u64, handle: u32) -> String {
    let mut u = [abi::GnttabUnmapGrantRef {
        host_addr,
        handle,
        ..Default::default()
    }];
    match hypercall::grant_table_op(h, gnttabop::UNMAP_GRANT_REF, &mut u) {
        Ok(()) => gntst_name(u[0].status),
        Err(e) => format!("-{}", e.name()),
    }
}

/// One end of a raw copy.
#[derive(Clone, Copy)]
enum End {
    /// A frame of ours, named as Xen asks: `DOMID_SELF`, or (wrongly) by
    /// another domain id.
    Frame(u64, DomId),
    /// A grant reference of a domain.
    Gref(DomId, u32),
}

fn raw_copy<H: Hypervisor>(
    h: &H,
    src: End,
    src_off: u16,
    dst: End,
    dst_off: u16,
    len: u16,
) -> String {
    let mut flags = 0;
    let mut ptr = |e: End, off: u16, gref_flag: u16| match e {
        End::Frame(f, d) => abi::GnttabCopyPtr {
            u: f,
            domid: d.0,
            offset: off,
            _pad0: 0,
        },
        End::Gref(d, r) => {
            flags |= gref_flag;
            abi::GnttabCopyPtr {
                u: u64::from(r),
                domid: d.0,
                offset: off,
                _pad0: 0,
            }
        }
    };
    let source = ptr(src, src_off, gntcopy::SOURCE_GREF);
    let dest = ptr(dst, dst_off, gntcopy::DEST_GREF);
    let mut c = [abi::GnttabCopy {
        source,
        dest,
        len,
        flags,
        status: 0,
        _pad0: 0,
    }];
    match hypercall::grant_table_op(h, gnttabop::COPY, &mut c) {
        Ok(()) => gntst_name(c[0].status),
        Err(e) => format!("-{}", e.name()),
    }
}

/// A HAL grant error as the `GNTST_*` Xen returned.
pub(crate) fn hal_name(e: GrantError) -> String {
    let s = match e {
        GrantError::BadRef => abi::gntst::BAD_GNTREF,
        GrantError::BadDomain => abi::gntst::BAD_DOMAIN,
        GrantError::PermissionDenied => abi::gntst::PERMISSION_DENIED,
        GrantError::BadHandle => abi::gntst::BAD_HANDLE,
        GrantError::BadCopyArg => abi::gntst::BAD_COPY_ARG,
        GrantError::BadPage => abi::gntst::BAD_PAGE,
        GrantError::BadAddress => abi::gntst::BAD_VIRT_ADDR,
        GrantError::NoSpace => abi::gntst::NO_SPACE,
        GrantError::Again => abi::gntst::EAGAIN,
        GrantError::General => abi::gntst::GENERAL_ERROR,
        other => return format!("{other:?}"),
    };
    gntst_name(s)
}

/// A map's outcome as the suite writes it.
pub(crate) fn map_word<M>(r: &Result<M, GrantError>) -> String {
    match r {
        Ok(_) => gntst_name(abi::gntst::OKAY),
        Err(e) => hal_name(*e),
    }
}

/// An unmap's outcome as the suite writes it.
pub(crate) fn unmap_word<M>(r: Result<(), (M, GrantError)>) -> String {
    match r {
        Ok(()) => gntst_name(abi::gntst::OKAY),
        Err((_, e)) => hal_name(e),
    }
}

/// The flags Xen keeps in our entry for `gref`: `reading`, `writing`.
fn entry_flags(cx: &Ctx<'_>, gref: GrantRef) -> String {
    match cx.p.grants().entry_flags(gref) {
        Err(e) => format!("{e:?}"),
        Ok(f) => match (f & gtf::READING != 0, f & gtf::WRITING != 0) {
            (false, false) => "idle".into(),
            (true, false) => "reading".into(),
            (false, true) => "writing".into(),
            (true, true) => "reading, writing".into(),
        },
    }
}

/// The cases that grant to ourselves besides those in [`SELF_MAP_CASES`] (not
/// applicable without a grant table).
const OWN_GRANT_CASES: [&str; 7] = [
    "gnttab.end-access.after-unmap",
    "gnttab.copy.local-to-own-grant",
    "gnttab.copy.own-grant-to-local",
    "gnttab.copy.ro-grant-as-source",
    "gnttab.copy.to-ro-grant",
    "gnttab.copy.ended-grant",
    "gnttab.copy.flags-after-copy",
];

/// The cases that map our own grants (skipped where that is destructive:
/// x86 HVM/PVH, docs/PVH.md).
fn maps_of_own_grants<M: SharedMemory>(
    cx: &mut Ctx<'_>,
    h: &xenpal::Hypervisor,
    a: &M,
    me: DomId,
    [rw, ro, other, ended]: [GrantRef; 4],
) {
    let g = cx.p.grants();
    let m1 = g.map(me, rw, Access::ReadWrite);
    cx.check("gnttab.map.self-rw", "GNTST_okay", map_word(&m1));
    if let Ok(m1) = m1 {
        let mut buf = [0u8; 13];
        m1.read(0, &mut buf);
        m1.write(200, b"through the map");
        let mut back = [0u8; 15];
        a.read(200, &mut back);
        cx.check(
            "gnttab.map.reads-and-writes-through",
            "both",
            match (&buf == b"copied by Xen", &back == b"through the map") {
                (true, true) => "both",
                (true, false) => "reads only",
                (false, true) => "writes only",
                (false, false) => "neither",
            },
        );
        cx.check(
            "gnttab.map.flags-while-rw-mapped",
            "reading, writing",
            entry_flags(cx, rw),
        );
        cx.check(
            "gnttab.end-access.while-mapped",
            "InUse",
            match g.end_access(rw) {
                Ok(()) => "ended".into(),
                Err(e) => format!("{e:?}"),
            },
        );
        let m2 = g.map(me, rw, Access::ReadWrite);
        cx.check(
            "gnttab.map.second-rw-mapping",
            "GNTST_okay, another handle",
            match &m2 {
                Ok(m2) if m2.handle() != m1.handle() => "GNTST_okay, another handle".into(),
                Ok(_) => "GNTST_okay, the same handle".into(),
                Err(e) => hal_name(*e),
            },
        );
        let (addr, handle) = (m1.gfn().addr(), m1.handle());
        let u1 = g.unmap(m1);
        cx.check("gnttab.unmap.first", "GNTST_okay", unmap_word(u1));
        if let Ok(m2) = m2 {
            let u2 = g.unmap(m2);
            cx.check("gnttab.unmap.second", "GNTST_okay", unmap_word(u2));
        } else {
            cx.check("gnttab.unmap.second", "GNTST_okay", "no mapping");
        }
        cx.check("gnttab.map.flags-after-unmap", "idle", entry_flags(cx, rw));
        cx.check(
            "gnttab.unmap.twice",
            "GNTST_bad_handle",
            raw_unmap(h, addr, handle),
        );
    }

    let map_word = |r: Result<xen_pv::grant::ForeignPage<_>, GrantError>, cx: &Ctx<'_>| match r {
        Ok(m) => {
            let _ = cx.p.grants().unmap(m);
            gntst_name(0)
        }
        Err(e) => hal_name(e),
    };
    let m = g.map(me, rw, Access::ReadOnly);
    let flags = if m.is_ok() {
        entry_flags(cx, rw)
    } else {
        "no mapping".into()
    };
    let w = map_word(m, cx);
    cx.check("gnttab.map.ro-of-rw-grant", "GNTST_okay", w);
    cx.check("gnttab.map.flags-while-ro-mapped", "reading", flags);
    let w = map_word(g.map(me, ro, Access::ReadWrite), cx);
    cx.check("gnttab.map.rw-of-ro-grant", "GNTST_general_error", w);
    let w = map_word(g.map(me, ro, Access::ReadOnly), cx);
    cx.check("gnttab.map.ro-of-ro-grant", "GNTST_okay", w);
    let w = map_word(g.map(me, GrantRef(OUT_OF_RANGE), Access::ReadWrite), cx);
    cx.check("gnttab.map.ref-out-of-range", "GNTST_bad_gntref", w);
    let w = map_word(g.map(me, ended, Access::ReadWrite), cx);
    cx.check("gnttab.map.ended-grant", "GNTST_general_error", w);
    let w = map_word(g.map(me, other, Access::ReadWrite), cx);
    cx.check("gnttab.map.granted-to-another", "GNTST_general_error", w);
    let w = map_word(
        g.map(me, GrantRef(abi::GNTTAB_RESERVED_CONSOLE), Access::ReadOnly),
        cx,
    );
    cx.check("gnttab.map.reserved-console-ref", "GNTST_general_error", w);
}

/// The cases [`maps_of_own_grants`] records.
const SELF_MAP_CASES: [&str; 17] = [
    "gnttab.map.self-rw",
    "gnttab.map.reads-and-writes-through",
    "gnttab.map.flags-while-rw-mapped",
    "gnttab.end-access.while-mapped",
    "gnttab.map.second-rw-mapping",
    "gnttab.unmap.first",
    "gnttab.unmap.second",
    "gnttab.map.flags-after-unmap",
    "gnttab.unmap.twice",
    "gnttab.map.ro-of-rw-grant",
    "gnttab.map.flags-while-ro-mapped",
    "gnttab.map.rw-of-ro-grant",
    "gnttab.map.ro-of-ro-grant",
    "gnttab.map.ref-out-of-range",
    "gnttab.map.ended-grant",
    "gnttab.map.granted-to-another",
    "gnttab.map.reserved-console-ref",
];

pub(crate) fn run(cx: &mut Ctx<'_>) {
    let p = cx.p;
    let h = p.hypervisor();
    let me = cx.me;

    // --- query_size, get_version, unknown ops --------------------------------
    cx.check(
        "gnttab.query-size.self",
        "GNTST_okay",
        query_size(h, DomId::SELF, 1),
    );
    cx.check(
        "gnttab.query-size.dom-missing",
        "GNTST_bad_domain",
        query_size(h, NO_SUCH_DOMAIN, 1),
    );
    cx.check(
        "gnttab.query-size.count-2",
        "-EINVAL",
        query_size(h, DomId::SELF, 2),
    );
    cx.check(
        "gnttab.get-version.self",
        "version 1",
        get_version(h, DomId::SELF),
    );
    cx.check(
        "gnttab.get-version.dom-missing",
        "-ESRCH",
        get_version(h, NO_SUCH_DOMAIN),
    );
    match cx.setup.other {
        Some(other) if !cx.privileged => {
            cx.check(
                "gnttab.query-size.other-dom",
                "GNTST_permission_denied",
                query_size(h, other, 1),
            );
            cx.check(
                "gnttab.get-version.other-dom",
                "-EPERM",
                get_version(h, other),
            );
        }
        _ => {
            let why = "needs another domain and an unprivileged guest";
            cx.not_applicable(
                "gnttab.query-size.other-dom",
                "GNTST_permission_denied",
                why,
            );
            cx.not_applicable("gnttab.get-version.other-dom", "-EPERM", why);
        }
    }
    let r = table_op(h, 99, 1, &mut [0u64; 4]);
    cx.check("gnttab.unknown-op", "-ENOSYS", errno(r));

    // --- raw maps and unmaps that fail before an address is looked at --------
    cx.check(
        "gnttab.map.no-flags",
        "GNTST_bad_gntref",
        raw_map(h, me, 8, 0),
    );
    cx.check(
        "gnttab.map.domid-self",
        "GNTST_bad_domain",
        raw_map(h, DomId::SELF, 8, gntmap::HOST_MAP),
    );
    cx.check(
        "gnttab.map.dom-missing",
        "GNTST_bad_domain",
        raw_map(h, NO_SUCH_DOMAIN, 8, gntmap::HOST_MAP),
    );
    cx.check(
        "gnttab.unmap.bad-handle",
        "GNTST_bad_handle",
        raw_unmap(h, 0, 0xffff_fff0),
    );

    // --- copies between our own frames -----------------------------------------
    let pages = cx.p.pages();
    let (Ok(a), Ok(b)) = (pages.alloc(1), pages.alloc(1)) else {
        cx.check("gnttab.pages", "allocated", "no pages");
        return;
    };
    let fa = h.xen_frame(a.gfn(0)).unwrap_or(NO_SUCH_FRAME);
    let fb = h.xen_frame(b.gfn(0)).unwrap_or(NO_SUCH_FRAME);
    a.write(0, b"copied by Xen");
    let local = |f| End::Frame(f, DomId::SELF);
    cx.check(
        "gnttab.copy.local-to-local",
        "GNTST_okay",
        raw_copy(h, local(fa), 0, local(fb), 100, 13),
    );
    let mut got = [0u8; 13];
    b.read(100, &mut got);
    cx.check(
        "gnttab.copy.local-to-local-data",
        "copied",
        if &got == b"copied by Xen" {
            "copied"
        } else {
            "not copied"
        },
    );
    cx.check(
        "gnttab.copy.crossing-page",
        "GNTST_bad_copy_arg",
        raw_copy(h, local(fa), 4000, local(fb), 0, 200),
    );
    cx.check(
        "gnttab.copy.crossing-page-dest",
        "GNTST_bad_copy_arg",
        raw_copy(h, local(fa), 0, local(fb), 4095, 2),
    );
    cx.check(
        "gnttab.copy.whole-page",
        "GNTST_okay",
        raw_copy(h, local(fa), 0, local(fb), 0, PAGE_SIZE as u16),
    );
    // Xen 4.19 ignores a zero-length copy before looking at anything
    // (commit a4a790f432, "gnttab: fully ignore zero-size copy requests");
    // before, the domains were checked first.
    let want = if cx.version >= (4, 19) {
        "GNTST_okay"
    } else {
        "GNTST_bad_domain"
    };
    cx.check(
        "gnttab.copy.zero-len-bad-ref",
        want,
        raw_copy(
            h,
            End::Gref(NO_SUCH_DOMAIN, OUT_OF_RANGE),
            0,
            local(fb),
            0,
            0,
        ),
    );
    cx.check(
        "gnttab.copy.local-named-by-own-id",
        "GNTST_permission_denied",
        raw_copy(h, End::Frame(fa, me), 0, local(fb), 0, 8),
    );
    cx.check(
        "gnttab.copy.bad-local-frame",
        "GNTST_bad_page",
        raw_copy(h, local(NO_SUCH_FRAME), 0, local(fb), 0, 8),
    );
    cx.check(
        "gnttab.copy.dom-missing",
        "GNTST_bad_domain",
        raw_copy(h, End::Gref(NO_SUCH_DOMAIN, 8), 0, local(fb), 0, 8),
    );
    cx.check(
        "gnttab.copy.ref-out-of-range",
        "GNTST_bad_gntref",
        raw_copy(h, End::Gref(DomId::SELF, OUT_OF_RANGE), 0, local(fb), 0, 8),
    );
    // The references are checked before the length.
    cx.check(
        "gnttab.copy.crossing-page-bad-ref",
        "GNTST_bad_gntref",
        raw_copy(
            h,
            End::Gref(DomId::SELF, OUT_OF_RANGE),
            4000,
            local(fb),
            0,
            200,
        ),
    );

    // --- granting to ourselves: map, unmap, copy ----------------------------------
    let g = cx.p.grants();
    if g.capacity() == 0 {
        for n in SELF_MAP_CASES.iter().chain(&OWN_GRANT_CASES) {
            cx.not_applicable(
                n,
                "-",
                "no grant table (Xen 4.17 dom0less without xen,enhanced)",
            );
        }
        pages.free(a);
        pages.free(b);
        return;
    }
    let rw = g.grant_access(me, a.gfn(0), Access::ReadWrite);
    let ro = g.grant_access(me, b.gfn(0), Access::ReadOnly);
    let other = g.grant_access(NO_SUCH_DOMAIN, a.gfn(0), Access::ReadWrite);
    let ended = g.grant_access(me, a.gfn(0), Access::ReadWrite);
    let (Ok(rw), Ok(ro), Ok(other), Ok(ended)) = (rw, ro, other, ended) else {
        cx.check("gnttab.grant-access", "granted", "refused");
        pages.free(a);
        pages.free(b);
        return;
    };
    let _ = g.end_access(ended);

    if cx.setup.self_map {
        maps_of_own_grants(cx, h, &a, me, [rw, ro, other, ended]);
    } else {
        for n in SELF_MAP_CASES {
            cx.not_applicable(
                n,
                "-",
                "x86 HVM/PVH: mapping our own grant would take the page from its frame number",
            );
        }
    }

    // Copies through our own grants.
    a.write(300, b"via grant");
    cx.check(
        "gnttab.copy.own-grant-to-local",
        "GNTST_okay",
        raw_copy(h, End::Gref(DomId::SELF, rw.0), 300, local(fb), 300, 9),
    );
    cx.check(
        "gnttab.copy.local-to-own-grant",
        "GNTST_okay",
        raw_copy(h, local(fb), 300, End::Gref(DomId::SELF, rw.0), 400, 9),
    );
    cx.check(
        "gnttab.copy.ro-grant-as-source",
        "GNTST_okay",
        raw_copy(h, End::Gref(DomId::SELF, ro.0), 0, local(fa), 500, 9),
    );
    cx.check(
        "gnttab.copy.to-ro-grant",
        "GNTST_general_error",
        raw_copy(h, local(fa), 0, End::Gref(DomId::SELF, ro.0), 0, 9),
    );
    cx.check(
        "gnttab.copy.ended-grant",
        "GNTST_general_error",
        raw_copy(h, End::Gref(DomId::SELF, ended.0), 0, local(fb), 0, 9),
    );
    cx.check("gnttab.copy.flags-after-copy", "idle", entry_flags(cx, rw));
    let ok = [rw, ro, other].into_iter().all(|r| g.end_access(r).is_ok());
    cx.check(
        "gnttab.end-access.after-unmap",
        "ok",
        if ok { "ok" } else { "refused" },
    );
    pages.free(a);
    pages.free(b);
}
