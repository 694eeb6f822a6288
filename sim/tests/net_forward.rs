//! A real `TcpStream` on the host reaches an HTTP server in a simulated
//! guest through dom0's gateway and a forwarded port (free-running mode:
//! simulated time is real time).

mod net_support;

use net_support::*;
use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp;
use smoltcp::wire::Ipv4Address;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;
use xenpal_drivers::net::NetConfig;
use xenpal_sim::backends::net::NetBackend;
use xenpal_sim::hal::{Clock, DomId};
use xenpal_sim::{Mode, Sim, SimConfig, SimPlatform};

const SERVER: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const BODY: &str = "hello from a simulated guest\n";

/// The body of request `i`: [`BODY`], then 60,000 bytes (sent as large TCP
/// segments, which reach dom0's gateway whole).
fn body(i: usize) -> String {
    match i {
        0 => BODY.to_string(),
        _ => (0..60_000)
            .map(|k| char::from(b'a' + (k % 26) as u8))
            .collect(),
    }
}

/// Serve `requests` HTTP requests on port 80, each on its own listening
/// socket (a backlog: a connection that comes early finds one listening).
async fn http_server(p: SimPlatform, requests: usize) {
    let base = Baseline::of(&p);
    let mut s = Stack::up(&p, "0", SERVER, NetConfig::default()).await;
    let mut sockets = SocketSet::new(vec![]);
    let handles: Vec<_> = (0..requests)
        .map(|_| {
            let mut sock = tcp_socket(64 * 1024);
            sock.listen(80).unwrap();
            sockets.add(sock)
        })
        .collect();
    let mut request = vec![Vec::new(); requests];
    let mut answered = vec![false; requests];
    let mut done = vec![false; requests];
    let deadline = p.timer().now() + Duration::from_secs(60);
    while done.iter().any(|d| !d) {
        assert!(p.timer().now() < deadline, "no client came");
        s.poll(&mut sockets);
        for (i, &h) in handles.iter().enumerate() {
            let sock = sockets.get_mut::<tcp::Socket>(h);
            while sock.can_recv() {
                sock.recv(|b| {
                    request[i].extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            if !answered[i] && request[i].windows(4).any(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&request[i]);
                log::info!("http: {}", text.lines().next().unwrap_or_default());
                let body = body(i);
                let reply = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                sock.send_slice(reply.as_bytes()).unwrap();
                sock.close();
                answered[i] = true;
            }
            if answered[i] && matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait) {
                done[i] = true;
            }
        }
        s.turn(&mut sockets).await;
    }
    s.linger(&mut sockets, Duration::from_millis(20)).await;
    s.close(&base).await;
}

#[test]
fn host_tcp_reaches_a_guest_http_server_through_a_forwarded_port() {
    let mut sim = Sim::new(SimConfig {
        mode: Mode::FreeRunning { threads: 2 },
        ..SimConfig::seeded(0)
    });
    let mut net = NetBackend::new();
    net.gateway(Ipv4Addr::new(10, 0, 0, 254), 24);
    let port = net.forward(0, SERVER, 80).unwrap();
    let d = sim
        .spawn(guest_config("http"), move |p| http_server(p, 2))
        .unwrap();
    net.add_vif(&sim, d, 0, mac(d, 0)).unwrap();
    let status = net.spawn(&mut sim).unwrap();

    for i in 0..2 {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // Generous limits: they only keep a broken run from hanging.
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        conn.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(conn, "GET /{i} HTTP/1.0\r\nHost: guest\r\n\r\n").unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap_or_else(|e| {
            panic!(
                "reading the reply: {e}\n--- guest\n{}\n--- dom0\n{}",
                sim.console_output(d),
                sim.console_output(DomId::DOM0)
            )
        });
        assert!(
            reply.starts_with("HTTP/1.0 200 OK\r\n") && reply.ends_with(&body(i)),
            "{reply:?}\n--- guest\n{}\n--- dom0\n{}",
            sim.console_output(d),
            sim.console_output(DomId::DOM0)
        );
    }
    let report = sim.run_for(Duration::from_secs(30));
    assert!(
        report.all_clean(),
        "{report:?}\n--- guest\n{}\n--- dom0\n{}",
        sim.console_output(d),
        sim.console_output(DomId::DOM0)
    );
    let console = sim.console_output(d);
    assert!(console.contains("http: GET /0 HTTP/1.0"), "{console}");
    assert!(console.contains("http: GET /1 HTTP/1.0"), "{console}");
    let snap = status.snapshot();
    assert_eq!(snap.forwarded_connections, 2);
    let vif = status.vif(d, 0).unwrap();
    assert!(vif.counters.from_guest_large > 0, "{vif:?}");
}
