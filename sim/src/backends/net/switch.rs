//! A learning Ethernet switch (a Linux bridge, in effect): it learns which
//! port each source MAC lives behind, forwards unicast frames there, and
//! floods broadcast, multicast and unknown destinations to every other port.

use super::VifId;
use std::collections::{BTreeMap, BTreeSet};

/// A port of a switch.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortId {
    /// A guest's vif.
    Vif(VifId),
    /// dom0's gateway node (host port forwarding).
    Gateway,
}

/// One switch.
#[doc(alias = "bridge")]
#[derive(Debug, Default)]
pub struct Switch {
    ports: BTreeSet<PortId>,
    fdb: BTreeMap<[u8; 6], PortId>,
    /// Frames forwarded.
    pub frames: u64,
    /// Frames flooded (broadcast, multicast, unknown unicast).
    pub flooded: u64,
}

impl Switch {
    /// Attach a port.
    pub fn attach(&mut self, port: PortId) {
        self.ports.insert(port);
    }

    /// Detach a port and forget the addresses learnt behind it.
    pub fn detach(&mut self, port: PortId) {
        self.ports.remove(&port);
        self.fdb.retain(|_, p| *p != port);
    }

    /// Whether `port` is attached.
    pub fn has(&self, port: PortId) -> bool {
        self.ports.contains(&port)
    }

    /// The ports a frame entering at `from` goes to (appended to `out`),
    /// learning its source address. Runt frames go nowhere.
    pub fn forward(&mut self, from: PortId, frame: &[u8], out: &mut Vec<PortId>) {
        if frame.len() < 14 || !self.ports.contains(&from) {
            return;
        }
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&frame[0..6]);
        src.copy_from_slice(&frame[6..12]);
        if src[0] & 1 == 0 {
            self.fdb.insert(src, from);
        }
        self.frames += 1;
        match self.fdb.get(&dst) {
            Some(&to) if dst[0] & 1 == 0 => {
                if to != from {
                    out.push(to);
                }
            }
            _ => {
                self.flooded += 1;
                out.extend(self.ports.iter().copied().filter(|&p| p != from));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hal::DomId;

    fn vif(d: u16) -> PortId {
        PortId::Vif(VifId {
            domid: DomId(d),
            index: 0,
        })
    }

    fn frame(dst: u8, src: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, dst]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
        f
    }

    #[test]
    fn learns_and_floods() {
        let mut s = Switch::default();
        for d in 1..=3 {
            s.attach(vif(d));
        }
        let mut out = Vec::new();
        // Unknown destination: flooded to the others.
        s.forward(vif(1), &frame(2, 1), &mut out);
        assert_eq!(out, [vif(2), vif(3)]);
        out.clear();
        // 2 answers 1: 1 is known now.
        s.forward(vif(2), &frame(1, 2), &mut out);
        assert_eq!(out, [vif(1)]);
        out.clear();
        // And 2 is known to 1.
        s.forward(vif(1), &frame(2, 1), &mut out);
        assert_eq!(out, [vif(2)]);
        out.clear();
        // Broadcast floods.
        let mut b = frame(0, 3);
        b[0..6].copy_from_slice(&[0xff; 6]);
        s.forward(vif(3), &b, &mut out);
        assert_eq!(out, [vif(1), vif(2)]);
        out.clear();
        // A detached port's addresses are forgotten.
        s.detach(vif(2));
        s.forward(vif(1), &frame(2, 1), &mut out);
        assert_eq!(out, [vif(3)]);
    }
}
