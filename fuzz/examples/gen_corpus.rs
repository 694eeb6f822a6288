//! Write the seed corpora in `fuzz/corpus/<target>/` from real inputs:
//! requests as curl, ab and browsers send them; device trees shaped like
//! the ones Xen builds; `start_info` pages like Xen's; replies and
//! requests made by the real xenstored and xenstore client; hypercalls
//! recorded from the typed wrappers a guest uses, issued in the
//! simulator; ring traffic as a backend sends it; the site's FAT image.
//!
//! `cargo run --release --example gen_corpus [DIR]` (DIR defaults to `corpus` next to
//! this crate's manifest). Deterministic: the same files every time.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use xenpal_fuzz::input::Script;
use xenpal_fuzz::targets::{
    blkfront, console, fat, hypercall, netfront, xenstore_client, xenstored,
};
use xenpal_sim::hal::DomId;
use xenpal_sim::hal::mem::Gfn;
use xenpal_sim::xen_pv::abi::Errno;
use xenpal_sim::xen_pv::abi::io::xs;
use xenpal_sim::xen_pv::hypercall::{self as hc, ArgBuf, ArgData, Hypervisor};
use xenpal_sim::{DomainConfig, Sim, SimConfig};
use zerocopy::{FromZeros, IntoBytes};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("corpus directory");
    std::fs::write(d.join(name), bytes).expect("corpus file");
}

fn http(dir: &Path) {
    let seeds: [(&str, &[u8]); 8] = [
        (
            "curl",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
        ),
        (
            "ab",
            b"GET /index.html HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n",
        ),
        (
            "ab-keepalive",
            b"GET /index.html HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n",
        ),
        (
            "browser",
            b"GET /css/Site%20Style.css?v=3#top HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/css,*/*;q=0.1\r\nAccept-Language: en-GB,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nReferer: http://localhost:8080/\r\nSec-Fetch-Dest: style\r\n\r\n",
        ),
        (
            "pipelined",
            b"GET /a.html HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b/ HTTP/1.1\r\nHost: x\r\n\r\nGET /c.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
        (
            "post-with-body",
            b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
        ),
        ("bare-newlines", b"GET /docs/./x/../y HTTP/1.1\nHost: x\n\n"),
        (
            "wrk",
            b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\nGET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        ),
    ];
    for (name, bytes) in seeds {
        write(dir, "http", name, bytes);
    }
}

/// A device tree shaped like the one Xen 4.20 gives a dom0less domU (as
/// `arch-aarch64`'s tests build it).
fn domu_tree(gic_v3: bool, with_hypervisor: bool, with_uart: bool) -> Vec<u8> {
    use vm_fdt::FdtWriter;
    let mut w = FdtWriter::new().expect("fdt");
    let root = w.begin_node("").expect("fdt");
    w.property_u32("#address-cells", 2).expect("fdt");
    w.property_u32("#size-cells", 2).expect("fdt");
    let chosen = w.begin_node("chosen").expect("fdt");
    w.property_string("bootargs", "console=hvc0").expect("fdt");
    w.end_node(chosen).expect("fdt");
    let mem = w.begin_node("memory@40000000").expect("fdt");
    w.property_string("device_type", "memory").expect("fdt");
    w.property_array_u64("reg", &[0x4000_0000, 0x800_0000])
        .expect("fdt");
    w.end_node(mem).expect("fdt");
    let g = w.begin_node("interrupt-controller@3001000").expect("fdt");
    if gic_v3 {
        w.property_string("compatible", "arm,gic-v3").expect("fdt");
        w.property_array_u64("reg", &[0x0800_0000, 0x1_0000, 0x080a_0000, 0x2_0000])
            .expect("fdt");
    } else {
        w.property_string_list(
            "compatible",
            vec!["arm,gic-400".into(), "arm,cortex-a15-gic".into()],
        )
        .expect("fdt");
        w.property_array_u64("reg", &[0x0800_0000, 0x1000, 0x0801_0000, 0x2000])
            .expect("fdt");
    }
    w.property_u32("#interrupt-cells", 3).expect("fdt");
    w.property_null("interrupt-controller").expect("fdt");
    w.end_node(g).expect("fdt");
    let t = w.begin_node("timer").expect("fdt");
    w.property_string("compatible", "arm,armv8-timer")
        .expect("fdt");
    w.property_array_u32(
        "interrupts",
        &[1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08],
    )
    .expect("fdt");
    w.end_node(t).expect("fdt");
    if with_hypervisor {
        let h = w.begin_node("hypervisor").expect("fdt");
        w.property_string_list("compatible", vec!["xen,xen-4.20".into(), "xen,xen".into()])
            .expect("fdt");
        w.property_array_u64("reg", &[0x3800_0000, 0x100_0000, 0x4800_0000, 0xb800_0000])
            .expect("fdt");
        w.property_array_u32("interrupts", &[1, 15, 0xf08])
            .expect("fdt");
        w.end_node(h).expect("fdt");
    }
    if with_uart {
        let u = w.begin_node("sbsa-uart@22000000").expect("fdt");
        w.property_string("compatible", "arm,sbsa-uart")
            .expect("fdt");
        w.property_array_u64("reg", &[0x2200_0000, 0x1000])
            .expect("fdt");
        w.property_array_u32("interrupts", &[0, 0, 4]).expect("fdt");
        w.end_node(u).expect("fdt");
    }
    w.end_node(root).expect("fdt");
    w.finish().expect("fdt")
}

fn devicetree(dir: &Path) {
    for (name, v3, hyp, uart) in [
        ("xen-4.20-gicv3", true, true, true),
        ("xen-4.20-gicv2", false, true, false),
        ("xen-4.17-no-hypervisor", true, false, true),
    ] {
        let blob = domu_tree(v3, hyp, uart);
        assert!(
            xenpal_arch_aarch64::boot_info::parse(&blob, 0x47e0_0000).is_ok(),
            "{name} parses"
        );
        write(dir, "devicetree", name, &blob);
    }
}

fn start_info(dir: &Path) {
    use xenpal_sim::xen_pv::abi::x86_64::{StartInfo, sif};
    // A dom0 like the one Xen 4.20 gave our guest under QEMU.
    let mut si = StartInfo::new_zeroed();
    si.magic[..17].copy_from_slice(b"xen-3.0-x86_64\0\0\0");
    si.nr_pages = 16384;
    si.shared_info = 0x3_1234_5000;
    si.flags = sif::PRIVILEGED | sif::INITDOMAIN;
    si.pt_base = 0x6a000;
    si.nr_pt_frames = 5;
    si.mfn_list = 0x45000;
    si.cmd_line[..6].copy_from_slice(b"quiet\0");
    let mut bytes = si.as_bytes().to_vec();
    // The image's end (in pages) and two ring frames.
    bytes.extend_from_slice(&0x40u32.to_le_bytes());
    write(dir, "start_info", "xen-4.20-dom0", &bytes);
    // A domU of `xl create`: console and xenstore rings, a module.
    si.flags = 0;
    si.console.mfn = 0x1_2345;
    si.console.evtchn = 2;
    si.store_mfn = 0x1_2346;
    si.store_evtchn = 1;
    si.mod_start = 0x20_0000;
    si.mod_len = 0x1_0000;
    si.cmd_line[..22].copy_from_slice(b"console=hvc0 loglevel\0");
    let mut bytes = si.as_bytes().to_vec();
    for v in [0x40u32, 16380, 16381] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write(dir, "start_info", "xl-domu", &bytes);
}

/// Replies of the real xenstored to the requests the client's typed calls
/// make, as scripts for the client target.
fn xenstore_client_seeds(dir: &Path) {
    use xenstore_client::script;
    let mut d = xenpal_xenstored::Xenstored::new(xenpal_xenstored::Config::default());
    let mut req = |t: u32, p: &[u8]| d.request(DomId(0), t, 0, p).payload;
    req(xs::WRITE, b"/local/domain/1/name\0guest");
    req(xs::WRITE, b"/local/domain/1/memory/target\x00262144");
    req(xs::WRITE, b"/local/domain/1/device/vif/0/state\x004");
    let read = req(xs::READ, b"/local/domain/1/name\0");
    let number = req(xs::READ, b"/local/domain/1/memory/target\0");
    let dirlist = req(xs::DIRECTORY, b"/local/domain/1\0");
    let perms = req(xs::GET_PERMS, b"/local/domain/1/name\0");
    let missing = req(xs::READ, b"/local/domain/1/nothing\0");
    let tx = req(xs::TRANSACTION_START, b"\0");
    let path = req(xs::GET_DOMAIN_PATH, b"1\0");
    let ok = req(xs::WRITE, b"/local/domain/1/x\0y");

    let mut s = Script::new();
    script::request(&mut s, 0, "name", "");
    script::answer(&mut s, 0, &read);
    script::request(&mut s, 2, "memory/target", "");
    script::answer(&mut s, 0, &number);
    script::request(&mut s, 6, "/local/domain/1", "");
    script::answer(&mut s, 0, &dirlist);
    script::request(&mut s, 7, "name", "");
    script::answer(&mut s, 0, &perms);
    write(dir, "xenstore_client", "reads", &s.finish());

    let mut s = Script::new();
    script::request(&mut s, 0, "nothing", "");
    script::answer(&mut s, 1, &missing);
    script::request(&mut s, 11, "", "");
    script::answer(&mut s, 0, &tx);
    script::request(&mut s, 3, "x", "y");
    script::answer(&mut s, 0, &ok);
    script::request(&mut s, 12, "", "");
    script::answer(&mut s, 0, &ok);
    script::request(&mut s, 13, "d", "");
    script::answer(&mut s, 0, &path);
    write(
        dir,
        "xenstore_client",
        "errors-and-transactions",
        &s.finish(),
    );

    let mut s = Script::new();
    script::request(&mut s, 9, "device/vif/0/state", "netfront:0");
    script::answer(&mut s, 0, &ok);
    script::watch_event(&mut s, "device/vif/0/state", "netfront:0");
    script::request(&mut s, 14, "", "netfront:0");
    script::watch_event(&mut s, "device/vif/0/state", "netfront:0");
    script::request(&mut s, 0, "device/vif/0/state", "");
    script::answer(&mut s, 0, b"4");
    write(dir, "xenstore_client", "watches", &s.finish());

    // A reply longer than the ring, in parts.
    let long: Vec<u8> = (0..3000u32).map(|v| b'a' + (v % 26) as u8).collect();
    let mut s = Script::new();
    script::request(&mut s, 0, "big", "");
    script::answer(&mut s, 0, &long);
    for _ in 0..4 {
        s.u8(xenstore_client::Op::Raw as u8).u8(0);
        s.u8(xenstore_client::Op::Poll as u8).u8(0);
    }
    write(dir, "xenstore_client", "long-reply", &s.finish());
}

fn xenstored_seeds(dir: &Path) {
    use xenstored::script;
    let mut s = Script::new();
    s.u8(0);
    script::request(&mut s, 0, xs::WRITE, 0, b"/local/domain/1/data/x\0hello");
    script::request(&mut s, 0, xs::READ, 0, b"/local/domain/1/data/x\0");
    script::request(&mut s, 0, xs::DIRECTORY, 0, b"/local/domain/1\0");
    script::request(&mut s, 0, xs::GET_PERMS, 0, b"data/x\0");
    script::request(&mut s, 0, xs::SET_PERMS, 0, b"data/x\0b1\0r2\0");
    script::request(&mut s, 1, xs::READ, 0, b"/local/domain/1/data/x\0");
    script::request(&mut s, 0, xs::RM, 0, b"data/x\0");
    script::request(&mut s, 0, xs::GET_DOMAIN_PATH, 0, b"2\0");
    write(dir, "xenstored", "guest-requests", &s.finish());

    let mut s = Script::new();
    s.u8(1);
    script::request(&mut s, 0, xs::WATCH, 0, b"data\0tok\0");
    script::request(&mut s, 1, xs::WATCH, 0, b"/local/domain/1/data\0other\0");
    script::request(&mut s, 0, xs::TRANSACTION_START, 0, b"\0");
    script::request(&mut s, 0, xs::WRITE, 1, b"data/a\0in a transaction");
    script::request(&mut s, 0, xs::MKDIR, 1, b"data/b\0");
    script::request(&mut s, 0, xs::TRANSACTION_END, 1, b"T\0");
    script::request(&mut s, 0, xs::DIRECTORY_PART, 0, b"data\x000\x00");
    script::request(&mut s, 0, xs::UNWATCH, 0, b"data\0tok\0");
    script::request(&mut s, 0, xs::RESET_WATCHES, 0, b"");
    script::toolstack(&mut s, xs::INTRODUCE, b"3\x001234\x005\x00");
    script::toolstack(&mut s, xs::RELEASE, b"2\0");
    script::toolstack(&mut s, xs::IS_DOMAIN_INTRODUCED, b"1\0");
    write(dir, "xenstored", "watches-transactions-quotas", &s.finish());
}

fn console_seeds(dir: &Path) {
    let mut s = Script::new();
    console::script::printed(&mut s, b"xenpal: booting on Xen 4.20\r\n");
    console::script::typed(&mut s, b"help\r");
    console::script::printed(&mut s, &[b'.'; 200]);
    write(dir, "console", "session", &s.finish());
}

/// A hypervisor that records every call it forwards: the exact bytes the
/// typed wrappers of `xen-pv` hand to Xen.
#[derive(Clone)]
struct Recorder<H> {
    inner: H,
    calls: Rc<RefCell<Script>>,
}

impl<H: Hypervisor> Hypervisor for Recorder<H> {
    type Mem = H::Mem;

    fn hypercall(&self, op: u32, args: [u64; 5], buf: Option<ArgBuf<'_>>) -> isize {
        {
            let mut s = self.calls.borrow_mut();
            let handles: Vec<(u16, u16)> = buf
                .as_ref()
                .map(|b| {
                    b.handles
                        .iter()
                        .map(|h| (h.at as u16, h.target as u16))
                        .collect()
                })
                .unwrap_or_default();
            let recorded = buf.as_ref().map(|b| {
                (
                    b.slot,
                    matches!(b.data, ArgData::InOut(_)),
                    b.data.bytes().to_vec(),
                )
            });
            hypercall::script::call(
                &mut s,
                op,
                args,
                recorded.as_ref().map(|(s, io, b)| (*s, *io, b.as_slice())),
                &handles,
            );
        }
        self.inner.hypercall(op, args, buf)
    }

    fn map_frames(&self, gfn: Gfn, count: usize) -> Result<Self::Mem, Errno> {
        self.inner.map_frames(gfn, count)
    }
}

fn hypercall_seeds(dir: &Path) {
    let mut sim = Sim::new(SimConfig::seeded(1));
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out2 = out.clone();
    sim.spawn(DomainConfig::new("recorder"), move |p| async move {
        let rec = || Recorder {
            inner: p.hypervisor().clone(),
            calls: Rc::new(RefCell::new(Script::new())),
        };
        // Boot-time calls: versions, parameters, sizes, virqs, time.
        let r = rec();
        let _ = hc::xen_version(&r);
        for param in [1, 2, 17, 18] {
            let _ = hc::hvm_get_param(&r, param);
        }
        let _ = hc::gnttab_query_size(&r);
        let mut frames = [0u64; 4];
        let _ = hc::gnttab_setup_table(&r, &mut frames);
        let _ = hc::evtchn_bind_virq(&r, 0);
        let _ = hc::vcpu_runstate(&r);
        let _ = hc::register_runstate_area(&r, Some((Gfn(3), 64)));
        let _ = hc::set_timer_op(&r, 1_000_000);
        let _ = hc::console_write(&r, b"hello from the recorder\n");
        let _ = hc::add_to_physmap(&r, 0, 0, Gfn(0x8_0000));
        let boot = r.calls.borrow().bytes.clone();
        // Event channels: offer, bind, send, poll, status, close.
        let r = rec();
        if let Ok(port) = hc::evtchn_alloc_unbound(&r, DomId(2)) {
            let _ = hc::evtchn_status(&r, port);
            let _ = hc::evtchn_port_op(&r, 4, port);
            let _ = hc::sched_poll(&r, &[port], 1);
            let _ = hc::evtchn_port_op(&r, 9, port);
            let _ = hc::evtchn_port_op(&r, 3, port);
        }
        let _ = hc::evtchn_bind_interdomain(&r, DomId(2), xenpal_sim::hal::EventPort(1));
        let _ = hc::sched_yield(&r);
        let events = r.calls.borrow().bytes.clone();
        let mut o = out2.lock().unwrap();
        o.push(("boot".to_string(), boot));
        o.push(("events".to_string(), events));
    })
    .expect("spawn");
    sim.spawn(DomainConfig::new("peer"), |_p| async {})
        .expect("spawn");
    let _ = sim.run();
    for (name, body) in out.lock().unwrap().iter() {
        // Unprivileged, then privileged.
        for (flag, suffix) in [(0u8, ""), (1, "-privileged")] {
            let mut bytes = vec![flag];
            bytes.extend_from_slice(body);
            write(dir, "hypercall", &format!("{name}{suffix}"), &bytes);
        }
    }
    // Grants offered to the peer, mapped and copied by it; rings written.
    let mut s = Script::new();
    s.u8(0);
    hypercall::script::offer(&mut s, true);
    hypercall::script::offer(&mut s, false);
    hypercall::script::peer(&mut s, 1, 0);
    hypercall::script::peer(&mut s, 3, 0x0400_0100);
    hypercall::script::peer(&mut s, 4, 5);
    hypercall::script::scribble(&mut s, 2, 8, &[0x05, 0x01, 0x02, 0, 0x40, 0, 0, 0], 3);
    hypercall::script::peer(&mut s, 0, 0);
    hypercall::script::scribble(
        &mut s,
        1,
        0,
        b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x05\0\0\0name\0",
        1,
    );
    hypercall::script::scribble(&mut s, 0, 1024, b"console bytes\n", 2);
    hypercall::script::sleep(&mut s, 50);
    hypercall::script::peer(&mut s, 2, 0);
    hypercall::script::peer(&mut s, 5, 0);
    write(dir, "hypercall", "peer-grants-and-rings", &s.finish());
}

/// Ethernet frames a peer on the link sends: an ARP reply, a UDP datagram
/// to the guest's port 7, an ICMP echo request.
fn frames() -> Vec<Vec<u8>> {
    let guest = [0x00, 0x16, 0x3e, 0, 1, 0];
    let peer = [0x00, 0x16, 0x3e, 0, 0, 1];
    let eth = |ty: u16| {
        let mut f = guest.to_vec();
        f.extend_from_slice(&peer);
        f.extend_from_slice(&ty.to_be_bytes());
        f
    };
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    arp.extend_from_slice(&peer);
    arp.extend_from_slice(&[10, 0, 0, 1]);
    arp.extend_from_slice(&guest);
    arp.extend_from_slice(&[10, 0, 0, 2]);
    let ip = |proto: u8, payload: &[u8]| {
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let mut sum = 0u32;
        for c in h.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let ck = !(sum as u16);
        h[10..12].copy_from_slice(&ck.to_be_bytes());
        h.extend_from_slice(payload);
        h
    };
    let mut udp_payload = vec![0, 7, 0, 7, 0, 13, 0, 0];
    udp_payload.extend_from_slice(b"hello");
    let mut udp = eth(0x0800);
    udp.extend_from_slice(&ip(17, &udp_payload));
    let mut icmp_payload = vec![8, 0, 0, 0, 0, 1, 0, 1];
    icmp_payload.extend_from_slice(b"ping");
    let mut sum = 0u32;
    for c in icmp_payload.chunks(2) {
        let hi = c[0];
        let lo = c.get(1).copied().unwrap_or(0);
        sum += u32::from(u16::from_be_bytes([hi, lo]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    icmp_payload[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut icmp = eth(0x0800);
    icmp.extend_from_slice(&ip(1, &icmp_payload));
    vec![arp, udp, icmp]
}

fn netfront_seeds(dir: &Path) {
    use netfront::script;
    let f = frames();
    let mut s = Script::new();
    script::connect(&mut s);
    script::sleep(&mut s, 100);
    script::tx_ok(&mut s);
    script::rx_frame(&mut s, &f[0], 0);
    script::sleep(&mut s, 100);
    script::tx_ok(&mut s);
    script::rx_frame(&mut s, &f[1], 0);
    script::sleep(&mut s, 100);
    script::tx_ok(&mut s);
    script::rx_frame(&mut s, &f[2], 0);
    script::sleep(&mut s, 100);
    script::tx_ok(&mut s);
    write(dir, "netfront", "arp-udp-icmp", &s.finish());

    // A packet in two slots (more_data), then an extra-info slot.
    let mut s = Script::new();
    script::connect(&mut s);
    script::sleep(&mut s, 100);
    let (a, b) = f[1].split_at(20);
    script::rx_frame(&mut s, a, xenpal_sim::xen_pv::abi::io::netrxf::MORE_DATA);
    script::rx_frame(&mut s, b, 0);
    script::rx_frame(
        &mut s,
        &f[0],
        xenpal_sim::xen_pv::abi::io::netrxf::EXTRA_INFO,
    );
    s.u8(netfront::Op::RxRaw as u8)
        .bytes(&[1, 0, 0, 0, 0, 0, 0, 0]);
    script::sleep(&mut s, 100);
    write(dir, "netfront", "multi-slot-extra-info", &s.finish());
}

fn blkfront_seeds(dir: &Path) {
    use blkfront::script;
    for order in 0..3u8 {
        let mut s = Script::new();
        script::connect(&mut s, order);
        for _ in 0..12 {
            script::sleep(&mut s, 20);
            script::all(&mut s);
        }
        write(
            dir,
            "blkfront",
            &format!("honest-order-{order}"),
            &s.finish(),
        );
    }
    let mut s = Script::new();
    script::connect(&mut s, 0);
    script::sleep(&mut s, 20);
    script::ok(&mut s);
    script::sleep(&mut s, 20);
    script::status(&mut s, 1);
    script::sleep(&mut s, 20);
    script::ok(&mut s);
    script::sleep(&mut s, 20);
    script::status(&mut s, 2);
    script::sleep(&mut s, 20);
    script::status(&mut s, 2);
    write(dir, "blkfront", "errors-and-unsupported", &s.finish());
}

fn fat_seeds(dir: &Path) {
    let img = fat::base_image();
    write(dir, "fat", "valid", &[]);
    // Sectors per cluster 0; a FAT entry pointing to itself; a huge size in
    // the first root directory entry.
    let mut s = Script::new();
    fat::script::patch(&mut s, 13, &[0]);
    write(dir, "fat", "zero-cluster-size", &s.finish());
    let bpb = |off: usize, len: usize| -> u64 {
        let mut v = 0u64;
        for k in (0..len).rev() {
            v = (v << 8) | u64::from(img[off + k]);
        }
        v
    };
    let reserved = bpb(14, 2);
    let fat_sectors = bpb(22, 2);
    let fats = bpb(16, 1);
    let fat0 = (reserved * 512) as u32;
    let root = ((reserved + fats * fat_sectors) * 512) as u32;
    let mut s = Script::new();
    fat::script::patch(&mut s, fat0 + 6, &[3, 0]);
    write(dir, "fat", "cluster-loop", &s.finish());
    let mut s = Script::new();
    fat::script::patch(&mut s, root + 32 + 28, &[0xff, 0xff, 0xff, 0x7f]);
    fat::script::patch(&mut s, root + 64 + 26, &[0xf0, 0xff]);
    write(dir, "fat", "bad-directory-entries", &s.finish());
}

fn main() {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    http(&dir);
    devicetree(&dir);
    start_info(&dir);
    xenstore_client_seeds(&dir);
    xenstored_seeds(&dir);
    console_seeds(&dir);
    hypercall_seeds(&dir);
    netfront_seeds(&dir);
    blkfront_seeds(&dir);
    fat_seeds(&dir);
    println!("seed corpora written to {}", dir.display());
}
