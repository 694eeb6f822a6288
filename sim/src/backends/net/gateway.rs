//! The gateway: a node of dom0 on a switch, with its own MAC and IP, running
//! smoltcp, that forwards TCP ports of the host's loopback into the virtual
//! network. A host connection to `127.0.0.1:<host port>` becomes a smoltcp
//! TCP connection from the gateway to `<guest ip>:<guest port>`; bytes are
//! shuttled both ways, and a close on either side is passed on.
//!
//! Host sockets are non-blocking and polled from dom0's loop (which sleeps a
//! millisecond between polls while forwards exist): dom0 never blocks its
//! thread. This is meant for [`crate::Mode::FreeRunning`], where simulated
//! time is real time.

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpEndpoint, Ipv4Address};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

/// Bytes buffered per direction per forwarded connection.
const BUFFER: usize = 256 * 1024;

/// Frames between the gateway's smoltcp and the switch.
#[derive(Default)]
pub(super) struct Queues {
    /// Frames from the switch to the gateway.
    pub rx: VecDeque<Vec<u8>>,
    /// Frames the gateway sent.
    pub tx: Vec<Vec<u8>>,
}

pub(super) struct Rx(Vec<u8>);
pub(super) struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// A forwarded port: where host connections arrive and where they go.
#[derive(Debug)]
pub(super) struct Forward {
    pub listener: TcpListener,
    pub to: IpEndpoint,
}

struct Conn {
    host: TcpStream,
    socket: SocketHandle,
    to_guest: Vec<u8>,
    to_host: Vec<u8>,
    host_eof: bool,
    host_shut: bool,
}

/// The gateway node.
pub(super) struct Gateway {
    pub queues: Queues,
    iface: Interface,
    sockets: SocketSet<'static>,
    forwards: Vec<Forward>,
    conns: Vec<Conn>,
    next_port: u16,
    /// Host connections accepted so far.
    pub accepted: u64,
    /// When a host connection last arrived or a byte last moved
    /// (nanoseconds).
    pub last_active: u64,
}

impl Gateway {
    pub fn new(
        mac: [u8; 6],
        ip: Ipv4Address,
        prefix: u8,
        forwards: Vec<Forward>,
        now: u64,
    ) -> Self {
        let mut queues = Queues::default();
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        cfg.random_seed = 0x006e_6574_6261_636b;
        let mut iface = Interface::new(cfg, &mut queues, smol(now));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(ip.into(), prefix));
        });
        Gateway {
            queues,
            iface,
            sockets: SocketSet::new(Vec::new()),
            forwards,
            conns: Vec::new(),
            next_port: 49152,
            accepted: 0,
            last_active: 0,
        }
    }

    /// Whether host sockets need polling (so dom0 must not sleep long).
    pub fn has_forwards(&self) -> bool {
        !self.forwards.is_empty()
    }

    /// Accept host connections, move bytes, run smoltcp. Frames to send are
    /// left in `queues.tx`. Returns when smoltcp wants to run next.
    pub fn poll(&mut self, now: u64) -> Option<u64> {
        let accepted = self.accepted;
        self.accept();
        if self.accepted != accepted {
            self.last_active = now;
        }
        for _ in 0..4 {
            self.iface
                .poll(smol(now), &mut self.queues, &mut self.sockets);
            let moved = self.shuttle();
            if moved {
                self.last_active = now;
            }
            if !moved {
                break;
            }
        }
        self.iface
            .poll(smol(now), &mut self.queues, &mut self.sockets);
        self.iface
            .poll_delay(smol(now), &self.sockets)
            .map(|d| now.saturating_add(d.total_micros().saturating_mul(1000)))
    }

    fn accept(&mut self) {
        for f in &self.forwards {
            loop {
                let host = match f.listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::warn!("gateway: accept: {e}");
                        break;
                    }
                };
                if host.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = host.set_nodelay(true);
                let mut sock = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; BUFFER]),
                    tcp::SocketBuffer::new(vec![0; BUFFER]),
                );
                // ACK at once: a delayed ACK of the guest's FIN would
                // never go out once the socket is dropped in TimeWait,
                // leaving the guest's side in LastAck until it gives up.
                sock.set_ack_delay(None);
                let port = self.next_port;
                self.next_port = if port == u16::MAX { 49152 } else { port + 1 };
                if let Err(e) = sock.connect(self.iface.context(), f.to, port) {
                    log::warn!("gateway: connecting to {}: {e}", f.to);
                    continue;
                }
                log::debug!("gateway: host connection forwarded to {}", f.to);
                self.accepted += 1;
                let socket = self.sockets.add(sock);
                self.conns.push(Conn {
                    host,
                    socket,
                    to_guest: Vec::new(),
                    to_host: Vec::new(),
                    host_eof: false,
                    host_shut: false,
                });
            }
        }
    }

    /// Move bytes between host streams and sockets; drop finished
    /// connections. Returns whether any byte moved.
    fn shuttle(&mut self) -> bool {
        let mut moved = false;
        let mut buf = [0u8; 16 * 1024];
        // Aborted this round: kept one more poll, so their RST goes out
        // (the guest's side would otherwise wait for a retransmission
        // timeout to learn the connection is gone).
        let mut aborted = Vec::new();
        let sockets = &mut self.sockets;
        self.conns.retain_mut(|c| {
            let s = sockets.get_mut::<tcp::Socket>(c.socket);
            // Host to guest.
            while !c.host_eof && c.to_guest.len() < BUFFER {
                match c.host.read(&mut buf) {
                    Ok(0) => c.host_eof = true,
                    Ok(n) => {
                        c.to_guest.extend_from_slice(&buf[..n]);
                        moved = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        s.abort();
                        aborted.push(c.socket);
                        return false;
                    }
                }
            }
            if !c.to_guest.is_empty()
                && s.can_send()
                && let Ok(n) = s.send_slice(&c.to_guest)
            {
                c.to_guest.drain(..n);
                moved |= n > 0;
            }
            if c.host_eof && c.to_guest.is_empty() && s.may_send() {
                s.close();
            }
            // Guest to host.
            while s.can_recv() && c.to_host.len() < BUFFER {
                match s.recv_slice(&mut buf) {
                    Ok(n) if n > 0 => {
                        c.to_host.extend_from_slice(&buf[..n]);
                        moved = true;
                    }
                    _ => break,
                }
            }
            while !c.to_host.is_empty() {
                match c.host.write(&c.to_host) {
                    Ok(n) => {
                        c.to_host.drain(..n);
                        moved |= n > 0;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        s.abort();
                        aborted.push(c.socket);
                        return false;
                    }
                }
            }
            // The guest closed its side and everything reached the host.
            if !s.may_recv()
                && c.to_host.is_empty()
                && !c.host_shut
                && s.state() != tcp::State::SynSent
            {
                let _ = c.host.shutdown(Shutdown::Write);
                c.host_shut = true;
            }
            let done = matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait);
            !(done && c.to_host.is_empty())
        });
        let live: Vec<SocketHandle> = self.conns.iter().map(|c| c.socket).collect();
        let dead: Vec<SocketHandle> = self
            .sockets
            .iter()
            .map(|(h, _)| h)
            .filter(|h| !live.contains(h) && !aborted.contains(h))
            .collect();
        for h in dead {
            self.sockets.remove(h);
        }
        moved
    }
}

fn smol(nanos: u64) -> SmolInstant {
    SmolInstant::from_micros((nanos / 1000) as i64)
}
