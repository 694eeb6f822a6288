//! smoltcp's view of a vif: [`Device`] and its tokens.
//!
//! Packets are copied: out of the granted receive pages into a private
//! buffer before smoltcp sees them, and from a private buffer into granted
//! transmit pages after smoltcp built them. Both buffers are allocated once,
//! at [`Netfront::open`]; the data path allocates nothing.

use super::front::Netfront;
use super::gso::{self, Crossing};
use super::rings::{Block, TxSide};
use super::{ETHERNET_HEADER, NetStats};
use hal::Clock;
use hal::mem::PAGE_SIZE;
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant as SmolInstant;
use xen_pv::Hypervisor;
use xen_pv::platform::XenPlatform;
use xen_pv::timer::AlarmHw;

/// A received packet, already copied out of shared memory.
pub struct NetRxToken<'a> {
    data: &'a [u8],
}

impl RxToken for NetRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.data)
    }
}

/// Room to send one packet. If the link went down or filled up in the
/// meantime (only possible for the token [`Device::receive`] hands out with
/// a packet), the packet is dropped and counted in
/// [`NetStats::tx_dropped`].
pub struct NetTxToken<'a, H: Hypervisor, C: Clock, A: AlarmHw> {
    p: &'a XenPlatform<H, C, A>,
    side: Option<&'a mut TxSide<Block<H>>>,
    buf: &'a mut [u8],
    stats: &'a mut NetStats,
    /// The link's IP MTU.
    mtu: usize,
}

impl<H: Hypervisor, C: Clock, A: AlarmHw> TxToken for NetTxToken<'_, H, C, A> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        if len > self.buf.len() {
            // Longer than any frame a vif carries: smoltcp never asks for
            // this with our MTU. Build it to satisfy the contract; drop it.
            let mut scratch = alloc::vec![0u8; len];
            let r = f(&mut scratch);
            self.stats.tx_dropped += 1;
            return r;
        }
        let r = f(&mut self.buf[..len]);
        let frame = &mut self.buf[..len];
        let sent = match self.side {
            Some(side) if side.gso => {
                gso::clamp_mss(frame, gso::link_mss(self.mtu));
                match gso::crossing(frame, self.mtu) {
                    Crossing::Whole => side.send(self.p, frame, None),
                    Crossing::Segmented(size) => {
                        let sent = side.send(self.p, frame, Some(size));
                        self.stats.tx_large += u64::from(sent);
                        sent
                    }
                    Crossing::TooLong => false,
                }
            }
            Some(side) => side.send(self.p, frame, None),
            None => false,
        };
        if sent {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += len as u64;
        } else {
            self.stats.tx_dropped += 1;
        }
        r
    }
}

impl<'p, H: Hypervisor, C: Clock, A: AlarmHw> Netfront<'p, H, C, A> {
    /// Transmit buffers to keep free for one full-sized frame.
    fn reserve(&self) -> usize {
        self.frame_max().div_ceil(PAGE_SIZE)
    }

    /// Longest frame smoltcp may build: the link's, or a 64 KiB one while
    /// the backend cuts large TCP segments (see [`super::gso`]).
    pub(super) fn frame_max(&self) -> usize {
        match &self.conn {
            Some(c) if c.tx.gso => super::MAX_FRAME,
            _ => self.mtu() + ETHERNET_HEADER,
        }
    }

    /// Take transmit completions (for [`super::wait_any`]).
    pub(super) fn reap_now(&mut self) {
        self.reap();
    }

    fn reap(&mut self) -> bool {
        let reserve = self.reserve();
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        match c.tx.reap(reserve) {
            Ok(()) => true,
            Err(v) => {
                self.violated(v);
                false
            }
        }
    }
}

/// The data path, for smoltcp. Never blocks, never allocates, never fails:
///
/// - [`receive`](Device::receive) takes transmit completions, then the next
///   complete received packet, copied into a private buffer (the buffers it
///   came in are posted again at once). `None`: no packet, no room to send
///   an answer to one (it waits in the ring), or the link is down, or the
///   backend just broke the protocol — the vif then fails
///   ([`super::LinkState::Failed`]) and [`Netfront::wait`] reports it.
/// - [`transmit`](Device::transmit) takes completions, then gives a token if
///   a full-sized frame fits in free buffers and ring slots. `None`: no room
///   (the backend is notified to tell us when there is), or no link.
/// - [`capabilities`](Device::capabilities): Ethernet, MTU
///   [`Netfront::mtu`] + 14 (65535 while the backend cuts large TCP
///   segments for us: see the module documentation), checksums computed
///   and checked by smoltcp.
impl<'p, H: Hypervisor, C: Clock, A: AlarmHw> Device for Netfront<'p, H, C, A> {
    type RxToken<'a>
        = NetRxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = NetTxToken<'a, H, C, A>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: SmolInstant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.reap() {
            return None;
        }
        let max = self.frame_max();
        let mtu = self.mtu();
        let c = self.conn.as_mut()?;
        // smoltcp answers a packet (an ACK, a SYN-ACK) through the token
        // handed out with it: without room for that answer, leave the
        // packet in the ring until transmit buffers come back, rather than
        // take it and drop the answer (which costs the peer a
        // retransmission timeout).
        let len = max.min(c.tx.max_len());
        if !c.tx.room_for(len, len > mtu + ETHERNET_HEADER) {
            return None;
        }
        let gso = c.tx.gso;
        let len = match c.rx.next_packet(self.p, &mut self.rx_pkt) {
            Ok(Some(len)) => len,
            Ok(None) => return None,
            Err(v) => {
                self.violated(v);
                return None;
            }
        };
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += len as u64;
        if gso {
            gso::raise_mss(&mut self.rx_pkt[..len], gso::link_mss(mtu));
        }
        let p = self.p;
        let Netfront {
            conn,
            rx_pkt,
            tx_buf,
            stats,
            ..
        } = self;
        let side = conn.as_mut().map(|c| &mut c.tx);
        Some((
            NetRxToken {
                data: &rx_pkt[..len],
            },
            NetTxToken {
                p,
                side,
                buf: &mut tx_buf[..max],
                stats,
                mtu,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: SmolInstant) -> Option<Self::TxToken<'_>> {
        if !self.reap() {
            return None;
        }
        let max = self.frame_max();
        let mtu = self.mtu();
        let p = self.p;
        let Netfront {
            conn,
            tx_buf,
            stats,
            ..
        } = self;
        let side = &mut conn.as_mut()?.tx;
        let len = max.min(side.max_len());
        if !side.room_for(len, len > mtu + ETHERNET_HEADER) {
            return None;
        }
        Some(NetTxToken {
            p,
            side: Some(side),
            buf: &mut tx_buf[..max],
            stats,
            mtu,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.frame_max();
        caps
    }
}
