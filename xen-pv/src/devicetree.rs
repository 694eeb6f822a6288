//! The boot information of an Arm guest: the device tree Xen (or a boot
//! loader) hands it (in `x0` on AArch64, `r2` on 32-bit Arm), read for
//! memory, the `/hypervisor` node, the GIC, the timer and a PL011. Both Arm
//! arch crates use it (as their `boot_info`).
//!
//! The `fdt` crate walks the structure; property values are decoded here
//! with every length checked, so a malformed or missing node is a
//! [`DtError`] naming the node and the problem — printed on the emergency
//! console at boot — never a fault or a panic.
//!
//! Nodes are looked up at the root, as in the device tree Xen generates for
//! a domU; `reg` addresses are not translated through bus `ranges`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use fdt::Fdt;
use fdt::node::FdtNode;

/// A physical address range.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

/// The interrupt controller.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Gic {
    /// GICv2 (GIC-400 on most small boards): distributor and CPU interface.
    V2 {
        /// Distributor (`GICD`).
        dist: Region,
        /// CPU interface (`GICC`).
        cpu: Region,
    },
    /// GICv3: distributor and redistributors (CPU interface in system
    /// registers).
    V3 {
        /// Distributor (`GICD`).
        dist: Region,
        /// Redistributor region (`GICR`), one frame per vCPU.
        redist: Region,
    },
}

/// What Xen says about itself in `/hypervisor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XenNode {
    /// `compatible`, e.g. `xen,xen-4.20`.
    pub compatible: String,
    /// Region 0: where to map the grant table.
    pub grant_table: Region,
    /// Regions 1..N: unused address space for foreign mappings.
    pub extended: Vec<Region>,
    /// The interrupt (GIC INTID) Xen raises for event channels.
    pub event_irq: u32,
}

/// Everything the platform needs from the device tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// RAM banks.
    pub memory: Vec<Region>,
    /// `/hypervisor`, if Xen provides one (dom0less guests get it with
    /// `xen,enhanced`).
    pub hypervisor: Option<XenNode>,
    /// The GIC.
    pub gic: Gic,
    /// INTID of the virtual timer (the generic timer's third interrupt).
    pub virt_timer_irq: u32,
    /// A PL011 UART (Xen's `vpl011`), if present.
    pub pl011: Option<Region>,
    /// The device tree blob itself.
    pub dtb: Region,
}

/// Why the device tree cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtError {
    /// Not a device tree blob (bad magic, size or structure).
    BadBlob(&'static str),
    /// A node the platform needs is absent.
    Missing(&'static str),
    /// A property is malformed: the node, the property, what is wrong.
    Malformed(String, &'static str, &'static str),
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::BadBlob(why) => write!(f, "not a usable device tree: {why}"),
            DtError::Missing(what) => write!(f, "device tree has no {what}"),
            DtError::Malformed(node, prop, why) => {
                write!(f, "device tree node {node}: property {prop} {why}")
            }
        }
    }
}

impl core::error::Error for DtError {}

/// Size of the blob at the start of `header` (its `totalsize`), after
/// checking the magic. Lets the caller bound the blob before parsing.
///
/// Errors: [`DtError::BadBlob`].
pub fn blob_size(header: &[u8]) -> Result<usize, DtError> {
    if header.len() < 8 {
        return Err(DtError::BadBlob("truncated header"));
    }
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if magic != 0xd00d_feed {
        return Err(DtError::BadBlob("bad magic"));
    }
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if !(40..=(64 << 20)).contains(&size) {
        return Err(DtError::BadBlob("implausible size"));
    }
    Ok(size)
}

fn cells(bytes: &[u8], at: usize, n: usize) -> Option<u64> {
    if n == 0 || n > 2 {
        return None;
    }
    let mut v = 0u64;
    for i in 0..n {
        let b = bytes.get(at + 4 * i..at + 4 * i + 4)?;
        v = (v << 32) | u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    }
    Some(v)
}

fn cell_count(node: Option<FdtNode<'_, '_>>, name: &str, default: usize) -> usize {
    node.and_then(|n| n.property(name))
        .and_then(|p| p.as_usize())
        .unwrap_or(default)
}

/// Decode a `reg` property with the parent's cell sizes.
fn regs(
    node: FdtNode<'_, '_>,
    path: &str,
    acells: usize,
    scells: usize,
) -> Result<Vec<Region>, DtError> {
    let bad = |why| DtError::Malformed(String::from(path), "reg", why);
    let prop = node.property("reg").ok_or_else(|| bad("is missing"))?;
    if acells == 0 || acells > 2 || scells > 2 {
        return Err(bad("has unsupported cell sizes"));
    }
    let entry = 4 * (acells + scells);
    if prop.value.is_empty() || prop.value.len() % entry != 0 {
        return Err(bad("has a length that is not a whole number of entries"));
    }
    let mut out = Vec::new();
    for e in prop.value.chunks(entry) {
        let base = cells(e, 0, acells).ok_or_else(|| bad("is truncated"))?;
        let size = if scells == 0 {
            0
        } else {
            cells(e, 4 * acells, scells).ok_or_else(|| bad("is truncated"))?
        };
        if base.checked_add(size).is_none() {
            return Err(bad("overflows the address space"));
        }
        out.push(Region { base, size });
    }
    Ok(out)
}

/// Decode GIC interrupt specifiers (3 cells: type, number, flags) into
/// INTIDs.
fn interrupts(node: FdtNode<'_, '_>, path: &str) -> Result<Vec<u32>, DtError> {
    let bad = |why| DtError::Malformed(String::from(path), "interrupts", why);
    let prop = node
        .property("interrupts")
        .ok_or_else(|| bad("is missing"))?;
    if prop.value.is_empty() || prop.value.len() % 12 != 0 {
        return Err(bad("is not a list of 3-cell specifiers"));
    }
    let mut out = Vec::new();
    for s in prop.value.chunks(12) {
        let kind = cells(s, 0, 1).ok_or_else(|| bad("is truncated"))?;
        let num = cells(s, 4, 1).ok_or_else(|| bad("is truncated"))?;
        let intid = match kind {
            0 if num < 988 => num + 32,
            1 if num < 16 => num + 16,
            _ => return Err(bad("names an interrupt the GIC cannot have")),
        };
        out.push(intid as u32);
    }
    Ok(out)
}

/// The strings of a `compatible` property (decoded here: the `fdt` crate's
/// own accessor panics on a value without a NUL).
fn compatibles<'a>(node: FdtNode<'_, 'a>) -> impl Iterator<Item = &'a str> {
    node.property("compatible")
        .map(|p| p.value)
        .unwrap_or(&[])
        .split(|&b| b == 0)
        .filter_map(|s| core::str::from_utf8(s).ok())
        .filter(|s| !s.is_empty())
}

fn first_compatible<'b, 'a>(fdt: &'b Fdt<'a>, with: &[&str]) -> Option<FdtNode<'b, 'a>> {
    fdt.all_nodes()
        .find(|n| compatibles(*n).any(|s| with.contains(&s)))
}

fn be32(blob: &[u8], at: usize) -> Option<u32> {
    let b = blob.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Check the blob's whole structure before any parser looks at it: header
/// offsets inside the blob, every token, node name, property length and
/// string-table offset in bounds, names UTF-8, nodes balanced. The `fdt`
/// crate assumes a well-formed blob (it indexes without checking); after
/// this it can only see one.
///
/// Errors: [`DtError::BadBlob`] saying what is wrong.
pub fn validate(blob: &[u8]) -> Result<(), DtError> {
    const BEGIN_NODE: u32 = 1;
    const END_NODE: u32 = 2;
    const PROP: u32 = 3;
    const NOP: u32 = 4;
    const END: u32 = 9;
    let hdr = |i: usize| be32(blob, 4 * i).ok_or(DtError::BadBlob("truncated header"));
    if blob.len() < 40 || hdr(0)? != 0xd00d_feed {
        return Err(DtError::BadBlob("bad magic or truncated header"));
    }
    if hdr(1)? as usize != blob.len() {
        return Err(DtError::BadBlob("totalsize does not match"));
    }
    let (off_struct, off_strings, off_rsv) = (hdr(2)? as usize, hdr(3)? as usize, hdr(4)? as usize);
    let (version, size_strings, size_struct) = (hdr(5)?, hdr(8)? as usize, hdr(9)? as usize);
    if version < 17 {
        return Err(DtError::BadBlob("version older than 17"));
    }
    let within = |off: usize, len: usize| off.checked_add(len).is_some_and(|e| e <= blob.len());
    if !within(off_struct, size_struct)
        || !within(off_strings, size_strings)
        || !within(off_rsv, 16)
    {
        return Err(DtError::BadBlob("a block lies outside the blob"));
    }
    if off_struct % 4 != 0 || off_rsv % 8 != 0 {
        return Err(DtError::BadBlob("misaligned block"));
    }
    // Memory reservations: (address, size) pairs up to a (0, 0) pair.
    let mut r = off_rsv;
    loop {
        if !within(r, 16) {
            return Err(DtError::BadBlob("unterminated memory reservation map"));
        }
        if blob[r..r + 16].iter().all(|&b| b == 0) {
            break;
        }
        r += 16;
    }
    let strings = &blob[off_strings..off_strings + size_strings];
    let st = &blob[off_struct..off_struct + size_struct];
    let cstr = |bytes: &[u8], at: usize| -> Option<usize> {
        let tail = bytes.get(at..)?;
        let n = tail.iter().position(|&b| b == 0)?;
        core::str::from_utf8(&tail[..n]).ok()?;
        Some(n)
    };
    let mut pos = 0usize;
    let mut depth = 0usize;
    let mut seen_root = false;
    loop {
        let token = be32(st, pos).ok_or(DtError::BadBlob("structure block ends without END"))?;
        pos += 4;
        match token {
            BEGIN_NODE => {
                if depth == 0 && seen_root {
                    return Err(DtError::BadBlob("more than one root node"));
                }
                seen_root = true;
                let n = cstr(st, pos).ok_or(DtError::BadBlob("bad node name"))?;
                pos = (pos + n + 1).next_multiple_of(4);
                depth += 1;
                if depth > 64 {
                    return Err(DtError::BadBlob("nodes nested too deep"));
                }
            }
            END_NODE => {
                depth = depth
                    .checked_sub(1)
                    .ok_or(DtError::BadBlob("unbalanced END_NODE"))?;
            }
            PROP => {
                if depth == 0 {
                    return Err(DtError::BadBlob("property outside a node"));
                }
                let len = be32(st, pos).ok_or(DtError::BadBlob("truncated property"))? as usize;
                let nameoff =
                    be32(st, pos + 4).ok_or(DtError::BadBlob("truncated property"))? as usize;
                pos += 8;
                if pos.checked_add(len).is_none_or(|e| e > st.len()) {
                    return Err(DtError::BadBlob(
                        "property value outside the structure block",
                    ));
                }
                cstr(strings, nameoff).ok_or(DtError::BadBlob("bad property name"))?;
                pos = (pos + len).next_multiple_of(4);
            }
            NOP => {}
            END => {
                if depth != 0 || !seen_root {
                    return Err(DtError::BadBlob("END inside a node or without a root"));
                }
                return Ok(());
            }
            _ => return Err(DtError::BadBlob("unknown structure token")),
        }
    }
}

/// Parse the device tree in `blob` (exactly [`blob_size`] bytes), located
/// at physical address `addr`.
///
/// Errors: [`DtError`] naming what is missing or malformed.
pub fn parse(blob: &[u8], addr: u64) -> Result<BootInfo, DtError> {
    validate(blob)?;
    let fdt = Fdt::new(blob).map_err(|_| DtError::BadBlob("structure does not parse"))?;
    let root = fdt.all_nodes().next();
    let acells = cell_count(root, "#address-cells", 2);
    let scells = cell_count(root, "#size-cells", 1);

    let mut memory = Vec::new();
    for n in fdt.all_nodes() {
        if n.property("device_type").and_then(|p| p.as_str()) == Some("memory") {
            memory.extend(regs(n, n.name, acells, scells)?);
        }
    }
    memory.retain(|r| r.size > 0);
    if memory.is_empty() {
        return Err(DtError::Missing("memory node"));
    }

    let gic_node = first_compatible(&fdt, &["arm,gic-v3"]);
    let gic = if let Some(n) = gic_node {
        let r = regs(n, n.name, acells, scells)?;
        if r.len() < 2 {
            return Err(DtError::Malformed(
                String::from(n.name),
                "reg",
                "needs distributor and redistributor",
            ));
        }
        Gic::V3 {
            dist: r[0],
            redist: r[1],
        }
    } else if let Some(n) = first_compatible(
        &fdt,
        &["arm,gic-400", "arm,cortex-a15-gic", "arm,cortex-a9-gic"],
    ) {
        let r = regs(n, n.name, acells, scells)?;
        if r.len() < 2 {
            return Err(DtError::Malformed(
                String::from(n.name),
                "reg",
                "needs distributor and CPU interface",
            ));
        }
        Gic::V2 {
            dist: r[0],
            cpu: r[1],
        }
    } else {
        return Err(DtError::Missing("GICv2 or GICv3 interrupt controller"));
    };

    let timer = first_compatible(&fdt, &["arm,armv8-timer", "arm,armv7-timer"])
        .ok_or(DtError::Missing("generic timer (arm,armv8-timer)"))?;
    let tirq = interrupts(timer, timer.name)?;
    let virt_timer_irq = *tirq.get(2).ok_or_else(|| {
        DtError::Malformed(
            String::from(timer.name),
            "interrupts",
            "lacks the virtual timer",
        )
    })?;

    let hypervisor = match fdt.all_nodes().find(|n| n.name == "hypervisor") {
        None => None,
        Some(n) => {
            let compatible = compatibles(n).next().map(String::from).ok_or_else(|| {
                DtError::Malformed(String::from("/hypervisor"), "compatible", "is missing")
            })?;
            if !compatible.starts_with("xen,xen") {
                return Err(DtError::Malformed(
                    String::from("/hypervisor"),
                    "compatible",
                    "is not Xen's",
                ));
            }
            let r = regs(n, "/hypervisor", acells, scells)?;
            let irq = interrupts(n, "/hypervisor")?;
            Some(XenNode {
                compatible,
                grant_table: r[0],
                extended: r[1..].to_vec(),
                event_irq: irq[0],
            })
        }
    };

    let pl011 = match first_compatible(&fdt, &["arm,pl011", "arm,sbsa-uart"]) {
        Some(n) => Some(regs(n, n.name, acells, scells)?[0]),
        None => None,
    };

    Ok(BootInfo {
        memory,
        hypervisor,
        gic,
        virt_timer_irq,
        pl011,
        dtb: Region {
            base: addr,
            size: blob.len() as u64,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_fdt::FdtWriter;

    /// A device tree shaped like the one Xen 4.20 gives a dom0less domU.
    fn domu(gic_v3: bool, with_hypervisor: bool, hyp_reg: &[u64]) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        let mem = w.begin_node("memory@40000000").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u64("reg", &[0x4000_0000, 0x800_0000])
            .unwrap();
        w.end_node(mem).unwrap();
        if gic_v3 {
            let g = w.begin_node("interrupt-controller@3001000").unwrap();
            w.property_string("compatible", "arm,gic-v3").unwrap();
            w.property_array_u64("reg", &[0x0800_0000, 0x1_0000, 0x080a_0000, 0x2_0000])
                .unwrap();
            w.end_node(g).unwrap();
        } else {
            let g = w.begin_node("interrupt-controller@3001000").unwrap();
            w.property_string_list(
                "compatible",
                vec!["arm,gic-400".into(), "arm,cortex-a15-gic".into()],
            )
            .unwrap();
            w.property_array_u64("reg", &[0x0800_0000, 0x1000, 0x0801_0000, 0x2000])
                .unwrap();
            w.end_node(g).unwrap();
        }
        let t = w.begin_node("timer").unwrap();
        w.property_string("compatible", "arm,armv8-timer").unwrap();
        w.property_array_u32(
            "interrupts",
            &[1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08],
        )
        .unwrap();
        w.end_node(t).unwrap();
        if with_hypervisor {
            let h = w.begin_node("hypervisor").unwrap();
            w.property_string_list("compatible", vec!["xen,xen-4.20".into(), "xen,xen".into()])
                .unwrap();
            w.property_array_u64("reg", hyp_reg).unwrap();
            w.property_array_u32("interrupts", &[1, 15, 0xf08]).unwrap();
            w.end_node(h).unwrap();
        }
        let u = w.begin_node("sbsa-uart@22000000").unwrap();
        w.property_string("compatible", "arm,sbsa-uart").unwrap();
        w.property_array_u64("reg", &[0x2200_0000, 0x1000]).unwrap();
        w.end_node(u).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    const HYP: [u64; 4] = [0x3800_0000, 0x100_0000, 0x4800_0000, 0xb800_0000];

    #[test]
    fn parses_a_xen_domu_tree() {
        let blob = domu(true, true, &HYP);
        assert_eq!(blob_size(&blob).unwrap(), blob.len());
        let info = parse(&blob, 0x47e0_0000).unwrap();
        assert_eq!(
            info.memory,
            [Region {
                base: 0x4000_0000,
                size: 0x800_0000
            }]
        );
        assert_eq!(
            info.gic,
            Gic::V3 {
                dist: Region {
                    base: 0x0800_0000,
                    size: 0x1_0000
                },
                redist: Region {
                    base: 0x080a_0000,
                    size: 0x2_0000
                }
            }
        );
        assert_eq!(info.virt_timer_irq, 27);
        let h = info.hypervisor.unwrap();
        assert_eq!(h.compatible, "xen,xen-4.20");
        assert_eq!(
            h.grant_table,
            Region {
                base: 0x3800_0000,
                size: 0x100_0000
            }
        );
        assert_eq!(
            h.extended,
            [Region {
                base: 0x4800_0000,
                size: 0xb800_0000
            }]
        );
        assert_eq!(h.event_irq, 31);
        assert_eq!(
            info.pl011,
            Some(Region {
                base: 0x2200_0000,
                size: 0x1000
            })
        );
    }

    #[test]
    fn gicv2_and_no_hypervisor_node() {
        let info = parse(&domu(false, false, &[]), 0).unwrap();
        assert!(matches!(info.gic, Gic::V2 { .. }));
        assert!(info.hypervisor.is_none());
    }

    #[test]
    fn malformed_nodes_are_named() {
        // A `reg` that is not a whole number of (address, size) pairs.
        let bad = domu(true, true, &[0x3800_0000, 0x100_0000, 0x4800_0000]);
        let e = parse(&bad, 0).unwrap_err();
        assert_eq!(
            e,
            DtError::Malformed(
                "/hypervisor".into(),
                "reg",
                "has a length that is not a whole number of entries"
            )
        );
        assert!(e.to_string().contains("/hypervisor"));
        assert_eq!(
            blob_size(b"\0\0\0\0\0\0\0\0").unwrap_err(),
            DtError::BadBlob("bad magic")
        );
        assert!(parse(&[0u8; 16], 0).is_err());
    }

    #[test]
    fn missing_memory_is_reported() {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.end_node(root).unwrap();
        let blob = w.finish().unwrap();
        assert_eq!(
            parse(&blob, 0).unwrap_err(),
            DtError::Missing("memory node")
        );
    }

    #[test]
    fn corrupted_blobs_never_panic() {
        let good = domu(true, true, &HYP);
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut errors = 0;
        let mut reached_fdt = 0;
        for _ in 0..20_000 {
            let mut blob = good.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % blob.len();
                blob[i] = next() as u8;
            }
            let r = std::panic::catch_unwind(|| {
                let n = blob_size(&blob).ok()?;
                let slice = blob.get(..n)?;
                Some(parse(slice, 0))
            });
            match r {
                Ok(Some(Err(DtError::BadBlob(_)))) | Ok(None) => errors += 1,
                Ok(Some(Err(_))) => {
                    errors += 1;
                    reached_fdt += 1;
                }
                Ok(Some(Ok(_))) => reached_fdt += 1,
                Err(_) => panic!("parsing a corrupted blob panicked"),
            }
        }
        assert!(
            errors > 100,
            "mutations should break the tree often: {errors}"
        );
        // Most mutations hit property values, which pass validation and so
        // exercise the fdt crate and our decoding.
        assert!(
            reached_fdt > 3_000,
            "only {reached_fdt} mutations got past validation"
        );
    }
}
