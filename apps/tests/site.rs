//! The static-site unikernel in the deterministic simulator: the site is
//! packed into two FAT images (so it spans two disks), and a second guest
//! fetches every page over the virtual network and checks it byte for byte.

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{IpCidr, Ipv4Address};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenpal_apps::site::{self, SiteConfig};
use xenpal_drivers::net::{NetConfig, Netfront};
use xenpal_fatimg as fatimg;
use xenpal_sim::backends::blk::{Blkback, Disk, VbdOptions};
use xenpal_sim::backends::net::NetBackend;
use xenpal_sim::hal::Clock;
use xenpal_sim::hal::task::select;
use xenpal_sim::{DomainConfig, Sim, SimConfig, SimPlatform};

/// A fetched page: path, status, body.
type Fetched = (String, u16, Vec<u8>);

fn pages() -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        ("/index.html".to_string(), b"<h1>home</h1>".to_vec()),
        ("/css/Site Style.css".to_string(), b"body{}".to_vec()),
        ("/docs/index.html".to_string(), b"docs".to_vec()),
    ];
    // Big enough that the site needs two 3 MiB images.
    for i in 0..3u8 {
        v.push((
            format!("/data/blob{i}.bin"),
            (0..1_200_000u32).map(|x| (x as u8) ^ i).collect(),
        ));
    }
    v
}

fn now(p: &SimPlatform) -> SmolInstant {
    SmolInstant::from_micros((p.timer().now().as_nanos() / 1000) as i64)
}

/// The client's vif 0, up, with an interface at 10.0.0.3/24.
async fn client_vif(p: &SimPlatform) -> (xenpal::Netfront<'_>, Interface) {
    let deadline = p.timer().now() + Duration::from_secs(10);
    let mut nic = Netfront::open(p, "0", NetConfig::default()).await.unwrap();
    nic.wait_up(deadline).await.unwrap();
    let mut iface = Interface::new(Config::new(nic.hardware_address()), &mut nic, now(p));
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(Ipv4Address::new(10, 0, 0, 3).into(), 24))
            .unwrap();
    });
    (nic, iface)
}

/// GET each path from 10.0.0.2:80; returns (path, status, body).
async fn client(p: SimPlatform, paths: Vec<String>) -> Vec<Fetched> {
    let (mut nic, mut iface) = client_vif(&p).await;
    let mut out = Vec::new();
    for (n, path) in paths.into_iter().enumerate() {
        let mut sockets = SocketSet::new(vec![]);
        let sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        let h = sockets.add(sock);
        let local = 49152 + n as u16;
        sockets
            .get_mut::<tcp::Socket>(h)
            .connect(iface.context(), (Ipv4Address::new(10, 0, 0, 2), 80), local)
            .unwrap();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n",
            path.replace(' ', "%20")
        );
        let mut sent = false;
        let mut raw = Vec::new();
        let end = p.timer().now() + Duration::from_secs(30);
        loop {
            assert!(p.timer().now() < end, "no reply for {path}");
            iface.poll(now(&p), &mut nic, &mut sockets);
            let s = sockets.get_mut::<tcp::Socket>(h);
            if !sent && s.can_send() {
                s.send_slice(request.as_bytes()).unwrap();
                sent = true;
            }
            while s.can_recv() {
                s.recv(|b| {
                    raw.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            if sent && !s.may_recv() && raw.len() > 4 {
                s.close();
                break;
            }
            let at = p.timer().now() + Duration::from_millis(5);
            nic.wait(at).await;
        }
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of headers");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        out.push((path, status, raw[split + 4..].to_vec()));
    }
    out
}

/// Boot the site guest (with `cfg`, asserting on its stats with
/// `check_stats`) on `images` and a client guest running `client`; run the
/// simulation to the end and return what the client returned.
fn site_and_client<R, F, Fut>(
    seed: u64,
    images: Vec<Vec<u8>>,
    cfg: SiteConfig,
    check_stats: fn(site::SiteStats),
    client: F,
) -> R
where
    R: Default + Send + 'static,
    F: FnOnce(SimPlatform) -> Fut + Send + 'static,
    Fut: core::future::Future<Output = R> + 'static,
{
    let mut sim = Sim::new(SimConfig::seeded(seed));
    let site_dom = sim
        .spawn(
            DomainConfig::new("site").memory_pages(4096).paused(),
            move |p| async move {
                let stats = site::run(&p, cfg).await.unwrap();
                check_stats(stats);
            },
        )
        .unwrap();
    let result: Arc<Mutex<R>> = Arc::default();
    let r = result.clone();
    let client_dom = sim
        .spawn(
            DomainConfig::new("client").memory_pages(2048).paused(),
            move |p| async move {
                // Let the site index its disks first.
                xenpal_sim::hal::time::sleep(p.timer(), Duration::from_millis(50)).await;
                *r.lock().unwrap() = client(p).await;
            },
        )
        .unwrap();
    let net = NetBackend::new();
    net.add_vif(&sim, site_dom, 0, [0, 0x16, 0x3e, 0, 0, 2])
        .unwrap();
    net.add_vif(&sim, client_dom, 0, [0, 0x16, 0x3e, 0, 0, 3])
        .unwrap();
    let blk = Blkback::new();
    for (i, img) in images.into_iter().enumerate() {
        blk.add_vbd(
            &sim,
            site_dom,
            i as u32,
            Disk::memory(img),
            VbdOptions::default(),
        )
        .unwrap();
    }
    sim.spawn_dom0(move |p| async move {
        let n = core::pin::pin!(net.serve(&p));
        let b = core::pin::pin!(blk.serve(&p));
        let _ = select(n, b).await;
    })
    .unwrap();
    sim.unpause(site_dom).unwrap();
    sim.unpause(client_dom).unwrap();
    let report = sim.run();
    assert!(
        report.all_clean(),
        "{report:?}\n--- site\n{}\n--- client\n{}",
        sim.console_output(site_dom),
        sim.console_output(client_dom)
    );
    std::mem::take(&mut *result.lock().unwrap())
}

fn images(files: &[(String, Vec<u8>)], max: u64) -> Vec<Vec<u8>> {
    fatimg::split(files.iter().map(|(p, d)| (p.as_str(), d.clone())), max)
        .unwrap()
        .iter()
        .map(|i| i.build().unwrap())
        .collect()
}

#[test]
fn the_site_serves_every_page_from_two_disks() {
    let files = pages();
    let images = images(&files, 3 << 20);
    assert_eq!(images.len(), 2, "the site spans two disks");
    let cfg = SiteConfig {
        max_requests: Some(8),
        ..SiteConfig::default()
    };
    let mut paths: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    paths.push("/".into());
    paths.push("/nope.html".into());
    let results: Vec<Fetched> = site_and_client(
        7,
        images,
        cfg,
        |stats| {
            assert_eq!(stats.disks, 2);
            assert_eq!(stats.files, 6);
            assert_eq!(stats.not_found, 1);
        },
        move |p| client(p, paths),
    );
    for (path, data) in &files {
        let (_, status, body) = results.iter().find(|(p, _, _)| p == path).unwrap();
        assert_eq!(*status, 200, "{path}");
        assert!(
            body == data,
            "{path}: {} bytes, want {}",
            body.len(),
            data.len()
        );
    }
    let root = results.iter().find(|(p, _, _)| p == "/").unwrap();
    assert_eq!((root.1, root.2.as_slice()), (200, &b"<h1>home</h1>"[..]));
    assert_eq!(
        results
            .iter()
            .find(|(p, _, _)| p == "/nope.html")
            .unwrap()
            .1,
        404
    );
}

/// Split `raw` into responses (status, body) by their `Content-Length`.
fn responses(mut raw: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let body = &raw[split + 4..];
        assert!(body.len() >= len, "a response cut short");
        out.push((status, body[..len].to_vec()));
        raw = &body[len..];
    }
    assert!(raw.is_empty(), "{} stray bytes", raw.len());
    out
}

/// Open `n` connections at once to 10.0.0.2:80; on each, send two
/// pipelined requests in one segment (the second asks to close), and a
/// slow extra connection that sends half a head and stalls. Once all are
/// closed, one more request on a new connection. Returns the responses on
/// each connection, the slow one's last.
async fn burst(p: SimPlatform, n: usize, paths: Vec<String>) -> Vec<Vec<(u16, Vec<u8>)>> {
    let (mut nic, mut iface) = client_vif(&p).await;
    let mut sockets = SocketSet::new(vec![]);
    let site = (Ipv4Address::new(10, 0, 0, 2), 80);
    let mut conns = Vec::new();
    for i in 0..=n {
        let sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 16384]),
            tcp::SocketBuffer::new(vec![0; 1024]),
        );
        let h = sockets.add(sock);
        sockets
            .get_mut::<tcp::Socket>(h)
            .connect(iface.context(), site, 40000 + i as u16)
            .unwrap();
        let request = if i == n {
            // The slow client: half a head, then nothing.
            "GET /index.html HTTP/1.1\r\nHo".to_string()
        } else {
            let a = paths[i % paths.len()].replace(' ', "%20");
            let b = paths[(i + 1) % paths.len()].replace(' ', "%20");
            format!(
                "GET {a} HTTP/1.1\r\nHost: site\r\n\r\nGET {b} HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n"
            )
        };
        conns.push((h, request, false, Vec::new()));
    }
    let end = p.timer().now() + Duration::from_secs(60);
    loop {
        assert!(p.timer().now() < end, "the burst did not finish");
        iface.poll(now(&p), &mut nic, &mut sockets);
        let mut open = 0;
        for (h, request, sent, raw) in conns.iter_mut() {
            let s = sockets.get_mut::<tcp::Socket>(*h);
            if !*sent && s.can_send() {
                assert_eq!(s.send_slice(request.as_bytes()).unwrap(), request.len());
                *sent = true;
            }
            while s.can_recv() {
                s.recv(|b| {
                    raw.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            if *sent && !s.may_recv() {
                s.close();
            }
            open += usize::from(s.is_open());
        }
        if open == 0 {
            break;
        }
        let at = p.timer().now() + Duration::from_millis(5);
        nic.wait(at).await;
    }
    let mut got: Vec<_> = conns.iter().map(|c| responses(&c.3)).collect();
    drop(sockets);
    nic.close(p.timer().now() + Duration::from_secs(5))
        .await
        .unwrap();
    // The server still answers.
    got.push(
        client(p, vec!["/".into()]).await[0..1]
            .iter()
            .map(|f| (f.1, f.2.clone()))
            .collect(),
    );
    got
}

#[test]
fn two_hundred_clients_at_once_with_pipelining_and_a_slow_one() {
    const CLIENTS: usize = 200;
    let files: Vec<(String, Vec<u8>)> =
        pages().into_iter().filter(|(_, d)| d.len() < 100).collect();
    let images = images(&files, 3 << 20);
    let paths: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let cfg = SiteConfig {
        max_requests: Some(2 * CLIENTS as u64 + 1),
        ..SiteConfig::default()
    };
    let got = site_and_client(
        11,
        images,
        cfg,
        |stats| assert_eq!(stats.responses, 2 * CLIENTS as u64 + 1),
        move |p| burst(p, CLIENTS, paths),
    );
    assert_eq!(got.len(), CLIENTS + 2);
    for (i, rs) in got[..CLIENTS].iter().enumerate() {
        let want = [i % files.len(), (i + 1) % files.len()];
        assert_eq!(rs.len(), 2, "client {i}: {} responses", rs.len());
        for (r, w) in rs.iter().zip(want) {
            assert_eq!(r.0, 200, "client {i}");
            assert_eq!(r.1, files[w].1, "client {i}: {}", files[w].0);
        }
    }
    assert_eq!(got[CLIENTS].len(), 1, "the slow client gets one response");
    assert_eq!(got[CLIENTS][0].0, 408, "the slow client times out");
    assert_eq!(got[CLIENTS + 1], [(200, b"<h1>home</h1>".to_vec())]);
}

/// Several clients downloading the same large file at once (found by the
/// soak: the second got a 500, as `embedded-sdmmc` opens a file once):
/// they share its handle, each at its own offset.
#[test]
fn clients_downloading_one_file_at_once_each_get_all_of_it() {
    const CLIENTS: usize = 3;
    let files = pages();
    let images = images(&files, 3 << 20);
    let blob = files
        .iter()
        .position(|(p, _)| p == "/data/blob1.bin")
        .unwrap();
    let paths = vec![files[blob].0.clone()];
    let cfg = SiteConfig {
        max_requests: Some(2 * CLIENTS as u64 + 1),
        ..SiteConfig::default()
    };
    let got = site_and_client(
        12,
        images,
        cfg,
        |stats| assert_eq!(stats.responses, 2 * CLIENTS as u64 + 1),
        move |p| burst(p, CLIENTS, paths),
    );
    for (i, rs) in got[..CLIENTS].iter().enumerate() {
        assert_eq!(rs.len(), 2, "client {i}");
        for r in rs {
            assert_eq!(r.0, 200, "client {i}");
            assert!(r.1 == files[blob].1, "client {i}: a wrong body");
        }
    }
}
