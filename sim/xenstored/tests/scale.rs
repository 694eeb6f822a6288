//! 10,000 domains in one xenstored: nothing may be quadratic in domains or
//! nodes.

use core::mem::offset_of;
use core::sync::atomic::Ordering;
use xenpal_hal::mem::{SharedMemory, WordMemory};
use xenpal_xen_pv::abi::io::{XenstoreDomainInterface as Intf, XsdSockmsg, xs};
use xenpal_xenstored::{Config, DomId, Xenstored};
use zerocopy::IntoBytes;

const REQ_PROD: usize = offset_of!(Intf, req_prod);
const RSP_PROD: usize = offset_of!(Intf, rsp_prod);

fn ok(xs: &mut Xenstored, dom: u16, type_: u32, payload: String) {
    let r = xs.request(DomId(dom), type_, 0, payload.as_bytes());
    assert_eq!(r.payload, b"OK\0", "d{dom} {payload:?}");
}

#[test]
fn ten_thousand_domains() {
    const N: u16 = 10_000;
    let mut xs = Xenstored::new(Config::default());
    ok(&mut xs, 0, xs::WATCH, "@releaseDomain\0rel\0".into());
    let mut pages = Vec::with_capacity(usize::from(N));
    for d in 1..=N {
        let page = WordMemory::new(4096);
        xs.introduce(DomId(d), Box::new(page.clone()));
        let home = format!("/local/domain/{d}");
        ok(&mut xs, 0, xs::WRITE, format!("{home}/name\0vm{d}"));
        ok(&mut xs, 0, xs::SET_PERMS, format!("{home}\0n0\0r{d}\0"));
        ok(&mut xs, 0, xs::MKDIR, format!("{home}/data\0"));
        ok(&mut xs, 0, xs::SET_PERMS, format!("{home}/data\0n{d}\0"));
        ok(&mut xs, 0, xs::WRITE, format!("{home}/data/state\0one"));
        // Each guest watches its own data directory, through its ring.
        let payload = b"data\0w\0";
        let hdr = XsdSockmsg {
            type_: xs::WATCH,
            req_id: 1,
            tx_id: 0,
            len: payload.len() as u32,
        };
        page.write(0, hdr.as_bytes());
        page.write(hdr.as_bytes().len(), payload);
        page.store_u32(
            REQ_PROD,
            (hdr.as_bytes().len() + payload.len()) as u32,
            Ordering::Release,
        );
        xs.serve(DomId(d));
        pages.push(page);
    }
    assert_eq!(xs.node_count(), 4 + 4 * usize::from(N));
    assert_eq!(xs.take_notifications().len(), usize::from(N));

    let rsp_prod = |pages: &[WordMemory]| -> Vec<u32> {
        pages
            .iter()
            .map(|p| p.load_u32(RSP_PROD, Ordering::Acquire))
            .collect()
    };
    let before = rsp_prod(&pages);
    // Every guest got its reply and first event: 16 + 3, 16 + 7 bytes.
    assert!(before.iter().all(|&p| p == 19 + 23));

    // One write fires exactly one watch.
    ok(
        &mut xs,
        0,
        xs::WRITE,
        "/local/domain/5000/data/state\0two".into(),
    );
    assert_eq!(xs.take_notifications(), [DomId(5000)]);
    let after = rsp_prod(&pages);
    let changed: Vec<usize> = (0..pages.len())
        .filter(|&i| after[i] != before[i])
        .collect();
    assert_eq!(changed, [4999]);
    assert_eq!(
        after[4999] - before[4999],
        16 + "data/state\0w\0".len() as u32
    );

    // So does a guest's own write.
    ok(&mut xs, 7, xs::WRITE, "data/x\0y".into());
    assert_eq!(xs.take_notifications(), [DomId(7)]);

    // Tear down: release each domain and remove its home.
    for d in 1..=N {
        xs.release(DomId(d));
        ok(&mut xs, 0, xs::RM, format!("/local/domain/{d}\0"));
    }
    assert_eq!(xs.node_count(), 4);
    let released = xs.take_watch_events(DomId(0));
    // The first event, then one per release.
    assert_eq!(released.len(), 1 + usize::from(N));
    assert!(xs.take_notifications().is_empty());
}
