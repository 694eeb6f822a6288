//! The 2-level event-channel ABI (Xen's `common/event_2l.c`): the pending
//! and mask bitmaps in `shared_info`, the selector word and
//! `evtchn_upcall_pending` in `vcpu_info`, and when a vCPU is kicked.

use crate::domain::Domain;
use crate::hypervisor::Core;
use hal::mem::SharedMemory;
use std::sync::atomic::Ordering;
use xen_pv::event::layout;

impl Core {
    /// Xen's 2-level `set_pending`: mark `port` pending in `dom`'s
    /// shared_info; if it is unmasked and this is a new edge, set the
    /// selector bit and `evtchn_upcall_pending`, and kick the vCPU.
    pub(crate) fn set_pending(&self, dom: &Domain, port: u32) {
        let si = &dom.shared_info;
        let (word, bit) = ((port / 64) as usize, 1u64 << (port % 64));
        if si.fetch_or_u64(layout::PENDING + 8 * word, bit, Ordering::SeqCst) & bit != 0 {
            return;
        }
        if si.load_u64(layout::MASK + 8 * word, Ordering::SeqCst) & bit != 0 {
            return;
        }
        self.mark_events_pending(dom, word);
        self.poll_wake(dom, port);
    }

    fn mark_events_pending(&self, dom: &Domain, word: usize) {
        let si = &dom.shared_info;
        let sel = 1u64 << word;
        if si.fetch_or_u64(layout::PENDING_SEL, sel, Ordering::SeqCst) & sel == 0 {
            si.store_u8(layout::UPCALL_PENDING, 1, Ordering::SeqCst);
            self.kick(dom);
        }
    }

    /// A domain polling `port` wakes even if the port is masked.
    fn poll_wake(&self, dom: &Domain, port: u32) {
        let polling = {
            let st = dom.st.lock().unwrap();
            st.poll.as_ref().is_some_and(|p| p.contains(&port))
        };
        if polling {
            self.kick(dom);
        }
    }

    /// Xen's 2-level unmask: clear the mask bit; if the port is pending,
    /// raise the upcall as for a new edge.
    pub(crate) fn unmask(&self, dom: &Domain, port: u32) {
        let si = &dom.shared_info;
        let (word, bit) = ((port / 64) as usize, 1u64 << (port % 64));
        si.fetch_and_u64(layout::MASK + 8 * word, !bit, Ordering::SeqCst);
        if si.load_u64(layout::PENDING + 8 * word, Ordering::SeqCst) & bit != 0 {
            self.mark_events_pending(dom, word);
        }
    }

    /// Clear `port`'s pending bit (on close, as Xen's `evtchn_free`).
    pub(crate) fn clear_pending(&self, dom: &Domain, port: u32) {
        let (word, bit) = ((port / 64) as usize, 1u64 << (port % 64));
        dom.shared_info
            .fetch_and_u64(layout::PENDING + 8 * word, !bit, Ordering::SeqCst);
    }
}
