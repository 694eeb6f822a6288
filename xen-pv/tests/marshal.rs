//! `hypercall::marshal`, the one place guest handles are patched for real
//! Xen, and the argument checks of the x86 PV hypercall wrappers.

use hal::mem::Gfn;
use xenpal_xen_pv::abi::{self, Errno};
use xenpal_xen_pv::hypercall::{
    ArgBuf, ArgData, Handle, Hypervisor, MAX_MARSHALLED, marshal, set_trap_table,
};

#[test]
fn marshal_passes_plain_buffers_in_place() {
    let data = [1u8, 2, 3];
    let want = data.as_ptr() as u64;
    let buf = ArgBuf {
        slot: 2,
        data: ArgData::In(&data),
        handles: &[],
    };
    let ret = marshal([9; 5], Some(buf), |a| {
        assert_eq!(a, [9, 9, want, 9, 9]);
        7
    });
    assert_eq!(ret, 7);
    assert_eq!(marshal([1, 2, 3, 4, 5], None, |a| a[4] as isize), 5);
}

/// Xen writes an `InOut` buffer without handles where it lies: the address
/// `raw` receives must carry write permission for the caller's buffer.
#[test]
fn marshal_lets_xen_write_an_inout_buffer_in_place() {
    let mut data = [1u8, 2, 3, 4];
    let want = data.as_ptr().addr() as u64;
    let buf = ArgBuf {
        slot: 1,
        data: ArgData::InOut(&mut data),
        handles: &[],
    };
    let ret = marshal([0; 5], Some(buf), |a| {
        assert_eq!(a[1], want, "passed in place");
        let p = core::ptr::with_exposed_provenance_mut::<u8>(a[1] as usize);
        // SAFETY: `marshal` promises `a[1]` addresses the caller's 4-byte
        // buffer, valid for writes and unaliased until this returns.
        unsafe { p.add(2).write(b'X') };
        0
    });
    assert_eq!(ret, 0);
    assert_eq!(data, [1, 2, b'X', 4], "what Xen wrote is in the buffer");
}

#[test]
fn marshal_patches_handles_and_copies_back() {
    // 8 bytes of handle, then 8 bytes of data it points to.
    let mut data = [0u8; 16];
    data[8..].copy_from_slice(b"abcdefgh");
    let buf = ArgBuf {
        slot: 0,
        data: ArgData::InOut(&mut data),
        handles: &[Handle { at: 0, target: 8 }],
    };
    let ret = marshal([0; 5], Some(buf), |a| {
        let base = a[0] as *mut u8;
        // SAFETY: `marshal` promises `a[0]` addresses its live copy of
        // the 16-byte buffer for the duration of this call.
        let copy = unsafe { core::slice::from_raw_parts_mut(base, 16) };
        let handle = u64::from_le_bytes(copy[..8].try_into().unwrap());
        assert_eq!(handle, a[0] + 8, "the handle points into the copy");
        copy[8] = b'X';
        0
    });
    assert_eq!(ret, 0);
    assert_eq!(&data[8..], b"Xbcdefgh", "what Xen wrote comes back");
}

#[test]
fn marshal_refuses_bad_arguments_without_calling() {
    let data = [0u8; 16];
    let never = |_: [u64; 5]| -> isize { panic!("must not be called") };
    let bad_slot = ArgBuf {
        slot: 5,
        data: ArgData::In(&data),
        handles: &[],
    };
    assert_eq!(marshal([0; 5], Some(bad_slot), never), Errno::EFAULT.ret());
    for h in [
        Handle { at: 9, target: 0 },
        Handle { at: 0, target: 17 },
        Handle {
            at: usize::MAX,
            target: 0,
        },
    ] {
        let buf = ArgBuf {
            slot: 0,
            data: ArgData::In(&data),
            handles: &[h],
        };
        assert_eq!(marshal([0; 5], Some(buf), never), Errno::EFAULT.ret());
    }
    let big = [0u8; MAX_MARSHALLED + 8];
    let buf = ArgBuf {
        slot: 0,
        data: ArgData::In(&big),
        handles: &[Handle { at: 0, target: 8 }],
    };
    assert_eq!(marshal([0; 5], Some(buf), never), Errno::E2BIG.ret());
}

#[test]
fn set_trap_table_needs_its_terminator() {
    #[derive(Clone)]
    struct Never;
    impl Hypervisor for Never {
        type Mem = hal::mem::WordMemory;
        fn hypercall(&self, _: u32, _: [u64; 5], _: Option<ArgBuf<'_>>) -> isize {
            panic!("must not be called")
        }
        fn map_frames(&self, _: Gfn, _: usize) -> Result<Self::Mem, Errno> {
            Err(Errno::EINVAL)
        }
    }
    let entry = abi::x86_64::TrapInfo {
        address: 0x1000,
        ..Default::default()
    };
    assert_eq!(set_trap_table(&Never, &[entry]), Err(Errno::EINVAL));
    assert_eq!(set_trap_table(&Never, &[]), Err(Errno::EINVAL));
}
