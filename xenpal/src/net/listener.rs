//! A TCP port that takes a burst of clients.
//!
//! smoltcp has no listen backlog: a listening socket takes one SYN and
//! becomes that connection, and a SYN that finds no listening socket is
//! answered with a reset. A server that opens N listening sockets therefore
//! resets client N+1 of a burst, which a client sees as "connection reset"
//! or an empty reply. [`Listener`] keeps a backlog of listening sockets and
//! tops it up after every packet it lets smoltcp process, so a burst is
//! accepted up to [`ListenerConfig::max_connections`] at once; closed
//! sockets are put back to listening or, above the backlog, freed, so
//! memory follows the load.

use alloc::vec::Vec;
use smoltcp::iface::{Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;

/// Heap a listener leaves free when it adds a socket: what the caller's
/// per-connection work (requests, responses, smoltcp's own tables) needs,
/// so a burst of clients meets resets, not an allocation failure.
const HEADROOM: usize = 256 * 1024;

/// A zeroed buffer of `len` bytes, or `None` if the heap has no room.
fn zeroed(len: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, 0);
    Some(v)
}

/// Whether the heap could give `len` bytes now (given straight back).
fn has_room(len: usize) -> bool {
    Vec::<u8>::new().try_reserve_exact(len).is_ok()
}

/// How a [`Listener`] sizes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Sockets kept listening: the SYNs that can arrive between two
    /// packets processed (at least 1).
    pub backlog: usize,
    /// Connections at once, listening sockets included. A SYN beyond this
    /// is reset, as a full backlog is on any TCP stack.
    pub max_connections: usize,
    /// Receive buffer of each socket, in bytes.
    pub rx_buffer: usize,
    /// Transmit buffer of each socket, in bytes.
    pub tx_buffer: usize,
    /// Sockets (at most) given the larger [`wide_tx_buffer`](Self::wide_tx_buffer)
    /// instead of `tx_buffer`. The transmit buffer bounds the TCP window a
    /// sender can keep in flight, so a large download over one connection
    /// runs at about `tx_buffer` per round trip; a few wide sockets let
    /// light load stream fast while many clients still cost little.
    pub wide_sockets: usize,
    /// Transmit buffer of each wide socket, in bytes.
    pub wide_tx_buffer: usize,
}

impl Default for ListenerConfig {
    /// 16 listening, 512 at once, 4 KiB in and 16 KiB out each, of which
    /// 8 have 256 KiB out (12 MiB of socket buffers when full; sockets are
    /// made as clients come, while the heap has room for their buffers
    /// and 256 KiB more, and freed as they go). 512 leaves room for 200
    /// clients closing while 200 others connect, as when one load test
    /// follows another.
    fn default() -> Self {
        ListenerConfig {
            backlog: 16,
            max_connections: 512,
            rx_buffer: 4 * 1024,
            tx_buffer: 16 * 1024,
            wide_sockets: 8,
            wide_tx_buffer: 256 * 1024,
        }
    }
}

/// A listening TCP port with a backlog that grows with the load. Each
/// connection carries the caller's state `T`, which starts as
/// `T::default()` and is reset when its socket is reused.
///
/// Use [`poll`](Self::poll) in place of `Interface::poll`, then walk the
/// connections with [`connections`](Self::connections).
#[derive(Debug)]
pub struct Listener<T> {
    port: u16,
    config: ListenerConfig,
    /// Every socket held, with its connection's state.
    slots: Vec<(SocketHandle, T)>,
    /// Those of them that have the wide transmit buffer.
    wide: Vec<SocketHandle>,
    /// Those of them that were listening at the last look.
    listening: Vec<SocketHandle>,
    /// Whether the last top-up found every socket in use (logged once per
    /// episode).
    full: bool,
}

impl<T: Default> Listener<T> {
    /// Listen on `port`, with `config.backlog` sockets added to `sockets`.
    pub fn new(port: u16, config: ListenerConfig, sockets: &mut SocketSet<'static>) -> Self {
        let backlog = config.backlog.max(1);
        let config = ListenerConfig {
            backlog,
            max_connections: config.max_connections.max(backlog),
            ..config
        };
        let mut l = Listener {
            port,
            config,
            slots: Vec::new(),
            wide: Vec::new(),
            listening: Vec::new(),
            full: false,
        };
        l.refill(sockets);
        l
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sockets held (listening or connected).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no socket is held (never, after [`new`](Self::new)).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Put closed sockets back to listening while the backlog is short,
    /// free the others, and add sockets until `backlog` listen (within
    /// `max_connections`). [`poll`](Self::poll) calls this once per call.
    pub fn refill(&mut self, sockets: &mut SocketSet<'static>) {
        self.forget_taken(sockets);
        self.recycle(sockets);
        self.top_up(sockets);
    }

    /// Drop from `listening` the sockets a SYN has taken.
    fn forget_taken(&mut self, sockets: &SocketSet<'static>) {
        self.listening
            .retain(|h| sockets.get::<tcp::Socket>(*h).is_listening());
    }

    /// Put closed sockets (`Closed`, `TimeWait`) back to listening while
    /// the backlog is short; free the others.
    fn recycle(&mut self, sockets: &mut SocketSet<'static>) {
        let mut i = 0;
        while i < self.slots.len() {
            let (h, _) = self.slots[i];
            let s = sockets.get_mut::<tcp::Socket>(h);
            if !s.is_open() {
                if self.listening.len() < self.config.backlog && s.listen(self.port).is_ok() {
                    self.listening.push(h);
                    self.slots[i].1 = T::default();
                } else {
                    sockets.remove(h);
                    self.slots.swap_remove(i);
                    self.wide.retain(|w| *w != h);
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Add listening sockets until the backlog is full (within
    /// `max_connections`, reusing closed sockets first when at the limit,
    /// and while the heap has room for a socket's buffers and
    /// [`HEADROOM`]; a wide socket becomes a narrow one if only that
    /// fits): a few checks when nothing was taken.
    fn top_up(&mut self, sockets: &mut SocketSet<'static>) {
        self.forget_taken(sockets);
        if self.listening.len() < self.config.backlog
            && self.slots.len() >= self.config.max_connections
        {
            self.recycle(sockets);
        }
        let mut short_of_memory = false;
        while self.listening.len() < self.config.backlog
            && self.slots.len() < self.config.max_connections
        {
            let rx = self.config.rx_buffer;
            // A wide socket if one is due and the heap has room for it,
            // else a narrow one if it has room for that.
            let wide = self.wide.len() < self.config.wide_sockets
                && has_room(rx + self.config.wide_tx_buffer);
            let tx = if wide {
                self.config.wide_tx_buffer
            } else {
                self.config.tx_buffer
            };
            let (Some(rx), Some(tx)) = (zeroed(rx), zeroed(tx)) else {
                short_of_memory = true;
                break;
            };
            if !has_room(HEADROOM) {
                short_of_memory = true;
                break;
            }
            let mut s = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
            if s.listen(self.port).is_err() {
                // Port 0: nothing can listen there.
                break;
            }
            let h = sockets.add(s);
            if wide {
                self.wide.push(h);
            }
            self.slots.push((h, T::default()));
            self.listening.push(h);
        }
        let full = self.listening.is_empty();
        if full && !self.full {
            let mut states: Vec<(tcp::State, u32)> = Vec::new();
            for (h, _) in &self.slots {
                let st = sockets.get::<tcp::Socket>(*h).state();
                match states.iter_mut().find(|(s, _)| *s == st) {
                    Some((_, n)) => *n += 1,
                    None => states.push((st, 1)),
                }
            }
            log::warn!(
                "listener: port {}: all {} connections in use ({states:?}){}; new clients are reset until one closes",
                self.port,
                self.slots.len(),
                if short_of_memory {
                    ", no memory for more"
                } else {
                    ""
                }
            );
        }
        self.full = full;
    }

    /// `Interface::poll`, one packet at a time, topping the backlog up
    /// after each: a burst of SYNs finds a listening socket for each (up to
    /// `max_connections`). Returns whether any socket may have changed.
    pub fn poll<D: Device + ?Sized>(
        &mut self,
        iface: &mut Interface,
        now: SmolInstant,
        device: &mut D,
        sockets: &mut SocketSet<'static>,
    ) -> bool {
        iface.poll_maintenance(now);
        let mut changed = false;
        loop {
            match iface.poll_ingress_single(now, device, sockets) {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => {
                    changed = true;
                    self.top_up(sockets);
                }
            }
        }
        while iface.poll_egress(now, device, sockets) == PollResult::SocketStateChanged {
            changed = true;
        }
        self.refill(sockets);
        changed
    }

    /// Call `f` on every connection (every socket held that is not
    /// listening), with its state.
    pub fn for_each(
        &mut self,
        sockets: &mut SocketSet<'static>,
        mut f: impl FnMut(&mut tcp::Socket<'static>, &mut T),
    ) {
        for (h, t) in &mut self.slots {
            let s = sockets.get_mut::<tcp::Socket>(*h);
            if !s.is_listening() {
                f(s, t);
            }
        }
    }

    /// Whether every connection's state satisfies `f` (listening sockets
    /// are not asked).
    pub fn all(&self, sockets: &SocketSet<'static>, mut f: impl FnMut(&T) -> bool) -> bool {
        self.slots
            .iter()
            .filter(|(h, _)| !sockets.get::<tcp::Socket>(*h).is_listening())
            .all(|(_, t)| f(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacities(l: &Listener<()>, sockets: &SocketSet<'static>) -> Vec<usize> {
        l.slots
            .iter()
            .map(|(h, _)| sockets.get::<tcp::Socket>(*h).send_capacity())
            .collect()
    }

    #[test]
    fn only_the_first_wide_sockets_get_the_wide_buffer() {
        let config = ListenerConfig {
            backlog: 4,
            max_connections: 8,
            rx_buffer: 1024,
            tx_buffer: 2048,
            wide_sockets: 2,
            wide_tx_buffer: 8192,
        };
        let mut sockets = SocketSet::new(Vec::new());
        let mut l: Listener<()> = Listener::new(80, config, &mut sockets);
        assert_eq!(capacities(&l, &sockets), [8192, 8192, 2048, 2048]);

        // A wide socket freed (above the backlog) makes room for another.
        let h = l.slots[0].0;
        sockets.get_mut::<tcp::Socket>(h).abort();
        l.forget_taken(&sockets);
        // With the backlog full, recycling frees the closed socket.
        l.config.backlog = 3;
        l.recycle(&mut sockets);
        assert_eq!(l.slots.len(), 3);
        assert_eq!(l.wide.len(), 1);
        l.config.backlog = 4;
        l.top_up(&mut sockets);
        let caps = capacities(&l, &sockets);
        assert_eq!(caps.iter().filter(|c| **c == 8192).count(), 2, "{caps:?}");
        assert_eq!(caps.len(), 4);
    }

    #[test]
    fn sockets_the_heap_cannot_hold_are_not_made() {
        // No heap has room for a wide buffer this large: narrow sockets.
        let config = ListenerConfig {
            backlog: 3,
            max_connections: 8,
            rx_buffer: 1024,
            tx_buffer: 2048,
            wide_sockets: 2,
            wide_tx_buffer: isize::MAX as usize - 4096,
        };
        let mut sockets = SocketSet::new(Vec::new());
        let l: Listener<()> = Listener::new(80, config, &mut sockets);
        assert_eq!(capacities(&l, &sockets), [2048, 2048, 2048]);
        assert!(l.wide.is_empty());

        // Nor for a narrow one: no socket, no panic; the port resets
        // clients until memory is back.
        let config = ListenerConfig {
            tx_buffer: isize::MAX as usize - 4096,
            ..config
        };
        let mut sockets = SocketSet::new(Vec::new());
        let mut l: Listener<()> = Listener::new(80, config, &mut sockets);
        assert!(l.is_empty());
        assert!(l.full);
        l.refill(&mut sockets);
        assert!(l.is_empty());
    }
}
