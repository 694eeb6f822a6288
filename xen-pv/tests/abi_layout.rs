//! Proves that every `#[repr(C)]` structure in `xenpal_xen_pv::abi` (`mod.rs`,
//! `x86_64.rs`, `arm.rs`, `io.rs`) has the layout Xen's public headers give
//! it: the size and alignment of each structure, and the offset and size of
//! each named (non-`_pad`) field, for x86_64 (`gcc`), AArch64
//! (`aarch64-linux-gnu-gcc`) and 32-bit Arm (`arm-linux-gnueabihf-gcc`;
//! `xen_ulong_t` and guest handles are 64-bit there too).
//!
//! The table below is the only list. From it the test generates a C probe
//! that includes the headers (from `libxen-dev`, with
//! `__XEN_INTERFACE_VERSION__` set to the newest version they support) and
//! turns each value into the size of a global array; the probe is compiled
//! to an object file, never run, and the values are read back from its ELF
//! symbol table. They are compared with `size_of`/`align_of`/`offset_of!` of
//! the Rust types, computed on the host: `#[repr(C)]` layouts of fixed-width
//! integers are the same on all three targets (the Arm EABI aligns `u64` to
//! 8 bytes, as the 64-bit ABIs do). A second test checks that
//! the table names every such structure and field in the sources, so a new
//! one cannot be left unchecked.

mod layout;

use layout::{Arch, Entry, Field, Mismatch};
use std::collections::HashMap;
use xenpal_xen_pv::abi;

/// `entry!("struct c_name" => abi::RustType { field, rust_field => "c_field",
/// nested.rust => "nested.c" })`: a Rust type, its C counterpart, and the
/// fields to compare; a field without `=> "..."` has the same name in C.
macro_rules! entry {
    ($c:literal => $ty:path { $($($f:ident).+ $(=> $cf:literal)?),* $(,)? }) => {
        Entry {
            rust: layout::squash(stringify!($ty)),
            c: $c.to_owned(),
            size: ::core::mem::size_of::<$ty>(),
            align: ::core::mem::align_of::<$ty>(),
            fields: vec![$(Field {
                rust: layout::squash(stringify!($($f).+)),
                c: layout::squash(entry!(@c $($cf)? ; $($f).+)),
                offset: ::core::mem::offset_of!($ty, $($f).+),
                size: layout::field_size(|s: &$ty| &s.$($f).+),
            }),*],
        }
    };
    (@c $cf:literal ; $($f:ident).+) => { $cf };
    (@c ; $($f:ident).+) => { stringify!($($f).+) };
}

/// Headers the probe includes (below Xen's include directory's parent).
const HEADERS: &[&str] = &[
    "xen/xen.h",
    "xen/event_channel.h",
    "xen/grant_table.h",
    "xen/memory.h",
    "xen/hvm/hvm_op.h",
    "xen/sched.h",
    "xen/vcpu.h",
    "xen/callback.h",
    "xen/io/xs_wire.h",
    "xen/io/console.h",
    "xen/io/netif.h",
    "xen/io/blkif.h",
    "xen/arch-x86/hvm/start_info.h",
];

/// Every checked structure. `abi::x86_64::*` is checked on x86_64 only,
/// `abi::arm::*` on AArch64 only, everything else on both.
fn table() -> Vec<Entry> {
    vec![
        // ---- abi (mod.rs)
        entry!("struct vcpu_time_info" => abi::VcpuTimeInfo {
            version, pad0, tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift, flags, pad1,
        }),
        entry!("struct evtchn_alloc_unbound" => abi::EvtchnAllocUnbound { dom, remote_dom, port }),
        entry!("struct evtchn_bind_interdomain" => abi::EvtchnBindInterdomain {
            remote_dom, remote_port, local_port,
        }),
        entry!("struct evtchn_bind_virq" => abi::EvtchnBindVirq { virq, vcpu, port }),
        entry!("struct evtchn_send" => abi::EvtchnPort { port }),
        entry!("struct evtchn_close" => abi::EvtchnPort { port }),
        entry!("struct evtchn_unmask" => abi::EvtchnPort { port }),
        // `u` is a union (unbound / interdomain / pirq / virq): one field.
        entry!("struct evtchn_status" => abi::EvtchnStatus { dom, port, status, vcpu, u }),
        entry!("struct grant_entry_v1" => abi::GrantEntryV1 { flags, domid, frame }),
        entry!("struct gnttab_map_grant_ref" => abi::GnttabMapGrantRef {
            host_addr, flags, ref_ => "ref", dom, status, handle, dev_bus_addr,
        }),
        entry!("struct gnttab_unmap_grant_ref" => abi::GnttabUnmapGrantRef {
            host_addr, dev_bus_addr, handle, status,
        }),
        entry!("struct gnttab_setup_table" => abi::GnttabSetupTable {
            dom, nr_frames, status, frame_list,
        }),
        entry!("struct gnttab_query_size" => abi::GnttabQuerySize {
            dom, nr_frames, max_nr_frames, status,
        }),
        // `u` is a union (ref / gmfn): one field.
        entry!("struct gnttab_copy_ptr" => abi::GnttabCopyPtr { u, domid, offset }),
        entry!("struct gnttab_copy" => abi::GnttabCopy {
            source, dest, len, flags, status, source.u, dest.domid, dest.offset,
        }),
        entry!("struct xen_add_to_physmap" => abi::XenAddToPhysmap {
            domid, size, space, idx, gpfn,
        }),
        entry!("struct xen_hvm_param" => abi::XenHvmParam { domid, pad, index, value }),
        entry!("struct sched_shutdown" => abi::SchedShutdown { reason }),
        entry!("struct sched_poll" => abi::SchedPoll { ports, nr_ports, timeout }),
        entry!("struct sched_remote_shutdown" => abi::SchedRemoteShutdown { domain_id, reason }),
        entry!("struct vcpu_register_vcpu_info" => abi::VcpuRegisterVcpuInfo { mfn, offset, rsvd }),
        entry!("struct vcpu_runstate_info" => abi::VcpuRunstateInfo { state, state_entry_time, time }),
        entry!("struct vcpu_register_runstate_memory_area" => abi::VcpuRegisterRunstateMemoryArea { addr }),
        // ---- abi::x86_64
        entry!("struct arch_vcpu_info" => abi::x86_64::ArchVcpuInfo { cr2, pad }),
        entry!("struct vcpu_info" => abi::x86_64::VcpuInfo {
            evtchn_upcall_pending, evtchn_upcall_mask, evtchn_pending_sel, arch, time,
        }),
        entry!("struct arch_shared_info" => abi::x86_64::ArchSharedInfo {
            max_pfn, pfn_to_mfn_frame_list_list, nmi_reason, p2m_cr3, p2m_vaddr, p2m_generation,
        }),
        entry!("struct shared_info" => abi::x86_64::SharedInfo {
            vcpu_info, evtchn_pending, evtchn_mask, wc_version, wc_sec, wc_nsec, wc_sec_hi, arch,
        }),
        // The domU view of start_info's `console` union.
        entry!("__typeof__(((struct start_info *)0)->console.domU)" => abi::x86_64::StartInfoConsole {
            mfn, evtchn,
        }),
        entry!("struct start_info" => abi::x86_64::StartInfo {
            magic, nr_pages, shared_info, flags, store_mfn, store_evtchn,
            console, console.mfn => "console.domU.mfn", console.evtchn => "console.domU.evtchn",
            pt_base, nr_pt_frames, mfn_list, mod_start, mod_len, cmd_line,
            first_p2m_pfn, nr_p2m_frames,
        }),
        entry!("struct mmu_update" => abi::x86_64::MmuUpdate { ptr, val }),
        // PVH boot.
        entry!("struct hvm_start_info" => abi::x86_64::HvmStartInfo {
            magic, version, flags, nr_modules, modlist_paddr, cmdline_paddr, rsdp_paddr,
            memmap_paddr, memmap_entries, reserved,
        }),
        entry!("struct hvm_modlist_entry" => abi::x86_64::HvmModlistEntry {
            paddr, size, cmdline_paddr, reserved,
        }),
        entry!("struct hvm_memmap_table_entry" => abi::x86_64::HvmMemmapTableEntry {
            addr, size, type_ => "type", reserved,
        }),
        entry!("struct trap_info" => abi::x86_64::TrapInfo { vector, flags, cs, address }),
        entry!("struct callback_register" => abi::x86_64::CallbackRegister {
            kind => "type", flags, address,
        }),
        // ---- abi::arm (arch_vcpu_info and arch_shared_info are empty there)
        entry!("struct vcpu_info" => abi::arm::VcpuInfo {
            evtchn_upcall_pending, pad0, evtchn_pending_sel, time,
        }),
        entry!("struct shared_info" => abi::arm::SharedInfo {
            vcpu_info, evtchn_pending, evtchn_mask, wc_version, wc_sec, wc_nsec, wc_sec_hi,
        }),
        // ---- abi::io
        entry!("struct xsd_sockmsg" => abi::io::XsdSockmsg { type_ => "type", req_id, tx_id, len }),
        entry!("struct xenstore_domain_interface" => abi::io::XenstoreDomainInterface {
            req, rsp, req_cons, req_prod, rsp_cons, rsp_prod, server_features, connection, error,
        }),
        entry!("struct xencons_interface" => abi::io::XenconsInterface {
            in_ => "in", out, in_cons, in_prod, out_cons, out_prod,
        }),
        entry!("struct netif_tx_request" => abi::io::NetifTxRequest { gref, offset, flags, id, size }),
        // `u` is a union (gso / mcast / hash / pad): one field.
        entry!("struct netif_extra_info" => abi::io::NetifExtraInfo { type_ => "type", flags, u }),
        entry!("struct netif_tx_response" => abi::io::NetifTxResponse { id, status }),
        entry!("struct netif_rx_request" => abi::io::NetifRxRequest { id, pad, gref }),
        entry!("struct netif_rx_response" => abi::io::NetifRxResponse { id, offset, flags, status }),
        entry!("struct blkif_request_segment" => abi::io::BlkifRequestSegment {
            gref, first_sect, last_sect,
        }),
        entry!("struct blkif_request" => abi::io::BlkifRequest {
            operation, nr_segments, handle, id, sector_number, seg,
        }),
        entry!("struct blkif_request_discard" => abi::io::BlkifRequestDiscard {
            operation, flag, handle, id, sector_number, nr_sectors,
        }),
        entry!("struct blkif_request_indirect" => abi::io::BlkifRequestIndirect {
            operation, indirect_op, nr_segments, id, sector_number, handle, indirect_grefs,
        }),
        entry!("struct blkif_response" => abi::io::BlkifResponse { id, operation, status }),
    ]
}

fn report(mismatches: &[Mismatch]) -> String {
    let mut s = format!(
        "{} ABI layout mismatch(es) between xenpal_xen_pv::abi and Xen's headers:\n",
        mismatches.len()
    );
    for m in mismatches {
        s.push_str(&format!("  {m}\n"));
    }
    s
}

#[test]
#[cfg_attr(
    miri,
    ignore = "runs gcc and writes files: Miri cannot spawn processes"
)]
fn abi_layout_matches_xen_headers() {
    assert_eq!(
        usize::BITS,
        64,
        "the Rust side of this test must run on a 64-bit host"
    );
    let entries = table();
    let dir = layout::work_dir("table");
    let mut mismatches = Vec::new();
    for arch in Arch::ALL {
        let measured = layout::measure(arch, HEADERS, &entries, &dir);
        let checked: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.arches().contains(&arch))
            .collect();
        let fields: usize = checked.iter().map(|e| e.fields.len()).sum();
        eprintln!(
            "{}: {} structs, {} fields (offset and size each) checked against Xen interface {:#010x}",
            arch.name(),
            checked.len(),
            fields,
            measured.interface_version
        );
        mismatches.extend(layout::compare(arch, &entries, &measured));
    }
    assert!(mismatches.is_empty(), "{}", report(&mismatches));
}

#[test]
#[cfg_attr(miri, ignore = "reads src/abi: Miri's isolation forbids file access")]
fn every_abi_struct_and_field_is_checked() {
    let entries = table();
    let sources = layout::abi_source_structs().unwrap_or_else(|e| panic!("{e}"));
    let mut problems = Vec::new();
    for s in &sources {
        let matching: Vec<&Entry> = entries.iter().filter(|e| e.rust == s.path).collect();
        if matching.is_empty() {
            problems.push(format!("{} is not in the table", s.path));
        }
        for e in matching {
            for f in &s.fields {
                if !e.fields.iter().any(|tf| &tf.rust == f) {
                    problems.push(format!(
                        "{} (as {}): field `{f}` is not checked",
                        s.path, e.c
                    ));
                }
            }
        }
    }
    for e in &entries {
        if !sources.iter().any(|s| s.path == e.rust) {
            problems.push(format!(
                "table entry {} is not a #[repr(C)] struct in src/abi",
                e.rust
            ));
        }
        for f in &e.fields {
            if f.rust.starts_with("_pad") {
                problems.push(format!(
                    "{}: padding field `{}` is in the table",
                    e.rust, f.rust
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the layout table does not match src/abi:\n  {}",
        problems.join("\n  ")
    );
    assert!(
        sources.len() >= 40,
        "found only {} structs in src/abi",
        sources.len()
    );
}

/// The test can fail: a deliberately wrong entry goes through the whole
/// pipeline (probe, compilers, symbol table, comparison) and is reported by
/// arch, C struct, field, and both values.
#[test]
#[cfg_attr(
    miri,
    ignore = "runs gcc and writes files: Miri cannot spawn processes"
)]
fn a_wrong_entry_is_reported_by_name() {
    let mut wrong = table()
        .into_iter()
        .find(|e| e.c == "struct evtchn_status")
        .expect("evtchn_status in the table");
    let port = wrong.fields.iter_mut().find(|f| f.c == "port").unwrap();
    assert_eq!(port.offset, 4);
    port.offset = 6;
    wrong.size += 8;
    let entries = [wrong];

    let dir = layout::work_dir("negative");
    for arch in Arch::ALL {
        let measured = layout::measure(arch, HEADERS, &entries, &dir);
        let mismatches = layout::compare(arch, &entries, &measured);
        let text = report(&mismatches);
        assert_eq!(mismatches.len(), 2, "{text}");
        let field = mismatches
            .iter()
            .map(ToString::to_string)
            .find(|m| m.contains("offsetof"))
            .unwrap_or_else(|| panic!("no offset mismatch in:\n{text}"));
        for needle in [
            arch.name(),
            "struct evtchn_status",
            "abi::EvtchnStatus",
            "`port`",
            "C 4",
            "Rust 6",
        ] {
            assert!(field.contains(needle), "`{needle}` missing from `{field}`");
        }
        let size = mismatches
            .iter()
            .map(ToString::to_string)
            .find(|m| m.contains("sizeof:"))
            .unwrap_or_else(|| panic!("no size mismatch in:\n{text}"));
        assert!(size.contains("C 24, Rust 32"), "{size}");
    }

    // A value the probe did not produce is a mismatch too, not a pass.
    let none = layout::Measured::from_values(HashMap::new());
    let missing = layout::compare(Arch::X86_64, &entries, &none);
    assert_eq!(missing.len(), 2 + 2 * entries[0].fields.len());
    assert!(missing.iter().all(|m| m.c.is_none()));
}
