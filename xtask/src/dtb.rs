//! The dom0less device tree: QEMU's own tree for the machine (dumped with
//! `-machine dumpdtb=`), copied node by node, with a `/chosen` that tells
//! Xen its command line and the guest to start. Written with `vm-fdt`, not
//! by editing text.

use fdt::Fdt;
use fdt::node::FdtNode;
use vm_fdt::{FdtReserveEntry, FdtWriter};

/// The dom0less guest to describe.
#[derive(Clone, Debug)]
pub struct DomU {
    /// RAM in KiB.
    pub memory_kib: u64,
    /// Where QEMU's loader puts the kernel image.
    pub kernel_addr: u64,
    /// Its size in bytes.
    pub kernel_size: u64,
    /// `xen,enhanced` (e.g. `no-xenstore`), or none.
    pub enhanced: Option<&'static str>,
    /// The guest's command line.
    pub bootargs: String,
}

fn copy_node(
    w: &mut FdtWriter,
    node: FdtNode<'_, '_>,
    is_root: bool,
    chosen: &dyn Fn(&mut FdtWriter) -> Result<(), vm_fdt::Error>,
) -> Result<(), String> {
    let name = if is_root { "" } else { node.name };
    let n = w.begin_node(name).map_err(|e| e.to_string())?;
    for p in node.properties() {
        w.property(p.name, p.value).map_err(|e| e.to_string())?;
    }
    for c in node.children() {
        if is_root && c.name == "chosen" {
            continue;
        }
        copy_node(w, c, false, chosen)?;
    }
    if is_root {
        chosen(w).map_err(|e| e.to_string())?;
    }
    w.end_node(n).map_err(|e| e.to_string())?;
    Ok(())
}

/// Copy `base` (QEMU's tree) with a new `/chosen`: Xen's command line
/// (`console=dtuart` on QEMU's UART, then `xen_bootargs`) and what
/// `contents` writes inside it.
///
/// Errors: a message if `base` does not parse or the tree cannot be
/// written.
fn with_chosen(
    base: &[u8],
    xen_bootargs: &str,
    cells: u32,
    contents: &dyn Fn(&mut FdtWriter) -> Result<(), vm_fdt::Error>,
) -> Result<Vec<u8>, String> {
    let fdt = Fdt::new(base).map_err(|e| format!("QEMU's device tree: {e:?}"))?;
    let stdout = fdt
        .find_node("/chosen")
        .and_then(|c| c.property("stdout-path"))
        .and_then(|p| p.as_str())
        .unwrap_or("/pl011@9000000")
        .to_string();
    let reserves: Vec<FdtReserveEntry> = fdt
        .memory_reservations()
        .filter_map(|r| FdtReserveEntry::new(r.address() as u64, r.size() as u64).ok())
        .collect();
    let mut w = FdtWriter::new_with_mem_reserv(&reserves).map_err(|e| e.to_string())?;
    let root = fdt.find_node("/").ok_or("QEMU's device tree has no root")?;
    let bootargs = format!("console=dtuart dtuart={stdout} {xen_bootargs}");
    let chosen = |w: &mut FdtWriter| -> Result<(), vm_fdt::Error> {
        let c = w.begin_node("chosen")?;
        w.property_u32("#address-cells", cells)?;
        w.property_u32("#size-cells", cells)?;
        w.property_string("xen,xen-bootargs", &bootargs)?;
        w.property_string("stdout-path", &stdout)?;
        contents(w)?;
        w.end_node(c)
    };
    copy_node(&mut w, root, true, &chosen)?;
    w.finish().map_err(|e| e.to_string())
}

/// Rewrite `base` (QEMU's tree) for Xen dom0less with one domU.
///
/// Errors: a message if `base` does not parse or the tree cannot be
/// written.
pub fn dom0less(base: &[u8], xen_bootargs: &str, domu: &DomU) -> Result<Vec<u8>, String> {
    with_chosen(base, xen_bootargs, 1, &|w: &mut FdtWriter| {
        let d = w.begin_node("domU1")?;
        w.property_string("compatible", "xen,domain")?;
        w.property_u32("#address-cells", 1)?;
        w.property_u32("#size-cells", 1)?;
        w.property_array_u32("memory", &[0, domu.memory_kib as u32])?;
        w.property_u32("cpus", 1)?;
        w.property_null("vpl011")?;
        if let Some(e) = domu.enhanced {
            w.property_string("xen,enhanced", e)?;
        }
        let m = w.begin_node(&format!("module@{:x}", domu.kernel_addr))?;
        w.property_string_list(
            "compatible",
            vec!["multiboot,kernel".into(), "multiboot,module".into()],
        )?;
        w.property_array_u32("reg", &[domu.kernel_addr as u32, domu.kernel_size as u32])?;
        w.property_string("bootargs", &domu.bootargs)?;
        w.end_node(m)?;
        w.end_node(d)
    })
}

/// A dom0 kernel and initramfs that QEMU's loader puts in RAM.
#[derive(Clone, Debug)]
pub struct Dom0Modules {
    /// Kernel address and size.
    pub kernel: (u64, u64),
    /// Initramfs address and size.
    pub ramdisk: (u64, u64),
    /// dom0's command line.
    pub bootargs: String,
}

/// Rewrite `base` (QEMU's tree) for Xen with a dom0 kernel and ramdisk.
///
/// Errors: a message if `base` does not parse or the tree cannot be
/// written.
pub fn with_dom0(base: &[u8], xen_bootargs: &str, dom0: &Dom0Modules) -> Result<Vec<u8>, String> {
    let reg = |(addr, size): (u64, u64)| {
        [
            addr >> 32,
            addr & 0xffff_ffff,
            size >> 32,
            size & 0xffff_ffff,
        ]
        .map(|x| x as u32)
    };
    with_chosen(base, xen_bootargs, 2, &|w: &mut FdtWriter| {
        w.property_string("xen,dom0-bootargs", &dom0.bootargs)?;
        for (name, (addr, size), kind) in [
            ("module", dom0.kernel, "multiboot,kernel"),
            ("module", dom0.ramdisk, "multiboot,ramdisk"),
        ] {
            let m = w.begin_node(&format!("{name}@{addr:x}"))?;
            w.property_string_list("compatible", vec![kind.into(), "multiboot,module".into()])?;
            w.property_array_u32("reg", &reg((addr, size)))?;
            w.end_node(m)?;
        }
        Ok(())
    })
}
