//! A guest's network in a few lines: [`Stack`] opens a vif with netfront,
//! finds the guest's address, and runs a `smoltcp` interface over it.
//!
//! ```text
//! let mut net = xenpal::net::Stack::open(&p, "0").await?;
//! let h = net.sockets().add(tcp_socket);
//! loop {
//!     net.poll();
//!     // ... use net.sockets().get_mut::<tcp::Socket>(h) ...
//!     net.wait().await;
//! }
//! ```
//!
//! The address comes from xenstore, where a toolstack puts it: the domain's
//! `data/ip` (`a.b.c.d/prefix`, what xenpal's simulator toolstack writes),
//! else the `ip` node of the vif's backend (what `xl` writes for a
//! `vif = ['ip=...']`; a bare address gets prefix 24). `data/gateway` adds a
//! default route.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;
use hal::time::{Clock, Instant};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr};
use xen_pv::xenstore::TxId;
use xenpal_drivers::net::{NetConfig, Netfront};

mod listener;
pub use listener::{Listener, ListenerConfig};

/// How long [`Stack::open`] waits for the toolstack and the backend.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the network could not be brought up or closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetError {
    /// The domain has no xenstore connection, so no devices.
    NoXenstore,
    /// The toolstack gave the domain no vif with this id.
    NoDevice(String),
    /// The toolstack gave this vif no address (`data/ip`, or the backend's
    /// `ip` node): the vif's id.
    NoAddress(String),
    /// An address node is malformed: the node and its value.
    BadAddress(String, String),
    /// netfront failed: opening, connecting or closing the vif.
    Device(xenpal_drivers::net::NetError),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::NoXenstore => f.write_str("no xenstore, so no network devices"),
            NetError::NoDevice(id) => write!(f, "the domain has no vif {id}"),
            NetError::NoAddress(id) => write!(
                f,
                "vif {id} has no address: set data/ip, or ip= in the xl config's vif"
            ),
            NetError::BadAddress(node, v) => write!(f, "{node} is not an IPv4 address: {v:?}"),
            NetError::Device(e) => write!(f, "netfront: {e}"),
        }
    }
}

impl core::error::Error for NetError {}

impl From<xenpal_drivers::net::NetError> for NetError {
    fn from(e: xenpal_drivers::net::NetError) -> Self {
        NetError::Device(e)
    }
}

/// `a.b.c.d/n`, or `a.b.c.d` with `default_prefix`.
pub fn parse_cidr(s: &str, default_prefix: u8) -> Option<Ipv4Cidr> {
    let s = s.trim();
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, p.parse().ok().filter(|p| *p <= 32)?),
        None => (s, default_prefix),
    };
    let ip: core::net::Ipv4Addr = ip.parse().ok()?;
    Some(Ipv4Cidr::new(ip, prefix))
}

/// smoltcp's clock from the platform's.
pub fn smol_now<C: Clock + ?Sized>(c: &C) -> SmolInstant {
    SmolInstant::from_micros((c.now().as_nanos() / 1000) as i64)
}

/// One vif, up, with a `smoltcp` interface and its sockets.
pub struct Stack<'p> {
    p: &'p crate::Platform,
    nic: crate::Netfront<'p>,
    iface: Interface,
    sockets: SocketSet<'static>,
    address: Ipv4Cidr,
}

impl fmt::Debug for Stack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("address", &self.address)
            .field("nic", &self.nic)
            .finish()
    }
}

/// Announce `ip` at the vif's MAC with a gratuitous ARP request, as
/// Linux's netfront does when it connects: a peer already asking for the
/// address (a client that tried before the guest was up) learns it now
/// rather than at its next ARP retry, a second later. [`Stack::open`]
/// does it; a server driving its own interface calls it once it listens.
#[doc(alias = "netdev_notify_peers")]
pub fn announce(nic: &mut crate::Netfront<'_>, now: SmolInstant, ip: Ipv4Address) {
    use smoltcp::phy::{Device, TxToken};
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        EthernetRepr,
    };
    let mac = EthernetAddress(nic.mac());
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    };
    let eth = EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    // No TX slot free right after connecting cannot happen; if it did,
    // peers would learn the address at their next ARP retry anyway.
    if let Some(tx) = nic.transmit(now) {
        tx.consume(eth.buffer_len() + arp.buffer_len(), |buf| {
            let mut frame = EthernetFrame::new_unchecked(buf);
            eth.emit(&mut frame);
            arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        });
    }
}

impl<'p> Stack<'p> {
    /// Open vif `id` (`"0"` for the first), wait (up to [`OPEN_TIMEOUT`])
    /// for the backend to connect, and bring up an interface at the address
    /// xenstore gives. Toolstacks (`xl`, the simulator's) create a domain's
    /// devices before it runs, so a vif missing at boot is an error, not
    /// something to wait for (use `Netfront::wait_for_device` for hotplug).
    ///
    /// Errors: [`NetError::NoXenstore`]; [`NetError::NoDevice`];
    /// [`NetError::NoAddress`] or
    /// [`NetError::BadAddress`]; [`NetError::Device`] if the vif does not
    /// appear or connect in time, or the backend misbehaves.
    pub async fn open(p: &'p crate::Platform, id: &str) -> Result<Stack<'p>, NetError> {
        let xs = p.xenstore().ok_or(NetError::NoXenstore)?.clone();
        let deadline = p.timer().now() + OPEN_TIMEOUT;
        if xs
            .read(TxId::NONE, &format!("device/vif/{id}/state"))
            .await
            .is_err()
        {
            return Err(NetError::NoDevice(id.to_string()));
        }
        let address = address(&xs, id).await?;
        let mut gateway = None;
        if let Ok(v) = xs.read_string(TxId::NONE, "data/gateway").await {
            let ip: core::net::Ipv4Addr = v
                .trim()
                .parse()
                .map_err(|_| NetError::BadAddress("data/gateway".into(), v.clone()))?;
            gateway = Some(ip);
        }
        let mut nic = Netfront::open(p, id, NetConfig::default()).await?;
        nic.wait_up(deadline).await?;
        announce(&mut nic, smol_now(p.timer()), address.address());
        let mut config = Config::new(nic.hardware_address());
        config.random_seed = u64::from(p.domid().0.max(1)) * 0x9e37_79b9 + 7;
        let mut iface = Interface::new(config, &mut nic, smol_now(p.timer()));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::Ipv4(address));
        });
        if let Some(gw) = gateway {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        Ok(Stack {
            p,
            nic,
            iface,
            sockets: SocketSet::new(Vec::new()),
            address,
        })
    }

    /// The interface's address and prefix.
    pub fn address(&self) -> Ipv4Cidr {
        self.address
    }

    /// The sockets: add yours here, then reach them by handle.
    pub fn sockets(&mut self) -> &mut SocketSet<'static> {
        &mut self.sockets
    }

    /// The smoltcp interface (routes, addresses, multicast).
    pub fn interface(&mut self) -> &mut Interface {
        &mut self.iface
    }

    /// Move packets between the vif and the sockets. Returns whether any
    /// socket may have changed.
    pub fn poll(&mut self) -> bool {
        let now = smol_now(self.p.timer());
        self.iface.poll(now, &mut self.nic, &mut self.sockets) != smoltcp::iface::PollResult::None
    }

    /// [`poll`](Self::poll) for a server: move packets one at a time,
    /// topping up `listener`'s backlog after each, so a burst of clients
    /// each finds a listening socket (see [`Listener`]). Returns whether
    /// any socket may have changed.
    pub fn poll_listener<T: Default>(&mut self, listener: &mut Listener<T>) -> bool {
        let now = smol_now(self.p.timer());
        listener.poll(&mut self.iface, now, &mut self.nic, &mut self.sockets)
    }

    /// Sleep until a packet arrives, a socket timer is due, or 100 ms pass
    /// (the vif's xenbus work runs meanwhile). Call it after [`poll`]
    /// (Self::poll) and your socket work, in the guest's loop.
    pub async fn wait(&mut self) {
        let now = smol_now(self.p.timer());
        let delay = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        let at: Instant = self.p.timer().now() + delay;
        self.nic.wait(at).await;
    }

    /// Poll for `time`, so what is queued (replies, FINs) goes out.
    pub async fn flush(&mut self, time: Duration) {
        let end = self.p.timer().now() + time;
        while self.p.timer().now() < end {
            self.poll();
            let at = (self.p.timer().now() + Duration::from_millis(10)).min(end);
            self.nic.wait(at).await;
        }
    }

    /// Close the vif as a frontend does on shutdown, giving back every
    /// grant and page.
    ///
    /// Errors: [`NetError::Device`] if the backend still holds grants after
    /// 5 s, or xenstore fails.
    pub async fn close(mut self) -> Result<(), NetError> {
        let deadline = self.p.timer().now() + Duration::from_secs(5);
        self.nic.close(deadline).await?;
        Ok(())
    }

    /// Connect to `remote:port`, send `request`, and return everything the
    /// peer sends until it closes the connection (at most `limit` bytes),
    /// waiting at most `timeout` in all: a one-shot TCP client, such as an
    /// HTTP/1.0 `GET`.
    ///
    /// Errors: [`FetchError`].
    pub async fn fetch(
        &mut self,
        remote: Ipv4Address,
        port: u16,
        request: &[u8],
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, FetchError> {
        use smoltcp::socket::tcp;
        let deadline = self.p.timer().now() + timeout;
        let sock = tcp::Socket::new(
            tcp::SocketBuffer::new(alloc::vec![0; 16 * 1024]),
            tcp::SocketBuffer::new(alloc::vec![0; request.len().max(1)]),
        );
        let h = self.sockets.add(sock);
        let local = 49152 + (smol_now(self.p.timer()).total_micros() as u16 % 16000);
        let result = async {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            s.connect(self.iface.context(), (remote, port), local)
                .map_err(|e| FetchError::Connect(e.to_string()))?;
            let mut sent = 0;
            let mut got = Vec::new();
            loop {
                self.poll();
                let s = self.sockets.get_mut::<tcp::Socket>(h);
                if sent < request.len() && s.can_send() {
                    sent += s.send_slice(&request[sent..]).unwrap_or(0);
                }
                while s.can_recv() {
                    let _ = s.recv(|b| {
                        got.extend_from_slice(b);
                        (b.len(), ())
                    });
                    if got.len() > limit {
                        return Err(FetchError::TooLong(limit));
                    }
                }
                if !s.is_open()
                    || (sent == request.len() && !s.may_recv() && s.state() != tcp::State::SynSent)
                {
                    if sent < request.len() {
                        return Err(FetchError::Closed);
                    }
                    return Ok(got);
                }
                if self.p.timer().now() >= deadline {
                    return Err(FetchError::Timeout);
                }
                self.wait().await;
            }
        }
        .await;
        self.sockets.get_mut::<tcp::Socket>(h).abort();
        self.poll();
        self.sockets.remove(h);
        result
    }
}

/// Why [`Stack::fetch`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The connection could not be started (smoltcp's reason).
    Connect(String),
    /// The peer closed or reset before the request was sent.
    Closed,
    /// More than this many bytes came back.
    TooLong(usize),
    /// The timeout passed first.
    Timeout,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Connect(e) => write!(f, "cannot connect: {e}"),
            FetchError::Closed => f.write_str("the peer closed before the request was sent"),
            FetchError::TooLong(n) => write!(f, "the reply is longer than {n} bytes"),
            FetchError::Timeout => f.write_str("timed out"),
        }
    }
}

impl core::error::Error for FetchError {}

/// The address vif `id` is configured with: `data/ip` (which xenpal's
/// simulator toolstack writes), else the `ip` node of the vif's backend
/// (which `xl` writes from `vif = [ 'ip=...' ]`); a bare address gets
/// prefix 24. For a guest that runs its own stack over netfront.
///
/// Errors: [`NetError::NoXenstore`]; [`NetError::NoAddress`] if neither
/// node exists; [`NetError::BadAddress`] if the value is not an IPv4
/// address (with an optional `/prefix`).
pub async fn vif_address(p: &crate::Platform, id: &str) -> Result<Ipv4Cidr, NetError> {
    let xs = p.xenstore().ok_or(NetError::NoXenstore)?;
    address(xs, id).await
}

/// The vif's address from `data/ip`, else its backend's `ip` node.
async fn address(
    xs: &xen_pv::xenstore::XenStore<crate::Hypervisor>,
    id: &str,
) -> Result<Ipv4Cidr, NetError> {
    if let Ok(v) = xs.read_string(TxId::NONE, "data/ip").await {
        return parse_cidr(&v, 24).ok_or(NetError::BadAddress("data/ip".into(), v));
    }
    let backend = xs
        .read_string(TxId::NONE, &format!("device/vif/{id}/backend"))
        .await
        .map_err(|_| NetError::NoAddress(id.to_string()))?;
    let node = format!("{}/ip", backend.trim_end_matches('\0'));
    match xs.read_string(TxId::NONE, &node).await {
        // xl may list several addresses, space-separated: take the first.
        Ok(v) => {
            let first = v.split_whitespace().next().unwrap_or("").to_string();
            parse_cidr(&first, 24).ok_or(NetError::BadAddress(node, v))
        }
        Err(_) => Err(NetError::NoAddress(id.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.1.2.3/16", 24),
            Some(Ipv4Cidr::new(Ipv4Address::new(10, 1, 2, 3), 16))
        );
        assert_eq!(
            parse_cidr(" 10.1.2.3 ", 24),
            Some(Ipv4Cidr::new(Ipv4Address::new(10, 1, 2, 3), 24))
        );
        assert_eq!(parse_cidr("10.1.2.3/33", 24), None);
        assert_eq!(parse_cidr("x/8", 24), None);
        assert_eq!(parse_cidr("", 24), None);
    }
}
