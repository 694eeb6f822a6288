//! Artefacts for running a guest on real Xen: on an Arm board the kernel
//! (an arm64 `Image`, or a 32-bit `zImage`), an
//! `xl` domain config (for a board with a Linux dom0) and a dom0less snippet
//! for the board's device tree; on an x86 host the stripped ELF and an `xl`
//! PV domain config. See `docs/BOARDS.md`.

use std::path::{Path, PathBuf};

/// Whether an `xl` config sets `key` (a line `key = ...`).
fn sets(config: &str, key: &str) -> bool {
    config.lines().any(|l| {
        l.trim_start()
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', '+']))
    })
}

/// The `xl` config made from a guest crate's own domain config (the one
/// the simulator reads): its text as written, then the lines `xl` needs
/// that it leaves out (`kernel`, and `extra`, e.g. `type = "pv"`).
fn from_domain_config(header: &str, user: &str, kernel: &str, extra: &[(&str, &str)]) -> String {
    let mut out = format!(
        "{header}# Made from the crate's own domain config (xenpal.cfg), which the\n\
         # simulator also reads; xl ignores its xenpal_ keys.\n\n{user}"
    );
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let mut added = false;
    for (key, value) in std::iter::once(("kernel", kernel)).chain(extra.iter().copied()) {
        if !sets(user, key) {
            if !added {
                out.push_str("\n# Added for xl:\n");
                added = true;
            }
            out.push_str(&format!("{key} = \"{value}\"\n"));
        }
    }
    out
}

/// Write the artefacts for `guest` (the Arm kernel `image`, written as the
/// file `kernel`: `Image` or `zImage`) into `dir`. The `xl` config is made
/// from `domain_cfg`, the guest crate's own domain config, when there is
/// one.
///
/// Errors: a message if a file cannot be written.
pub fn write(
    dir: &Path,
    guest: &str,
    kernel: &str,
    image: &[u8],
    domain_cfg: Option<&str>,
) -> Result<(), String> {
    let w = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    std::fs::write(dir.join(kernel), image).map_err(|e| format!("{kernel}: {e}"))?;
    let header = format!(
        "# xl domain config: `xl create -c xenpal-{guest}.cfg` on a Xen Arm board with a\n\
         # Linux dom0. Copy `{kernel}` next to it (or change `kernel`).\n"
    );
    let xl = match domain_cfg {
        Some(user) => from_domain_config(&header, user, kernel, &[]),
        None => format!(
            "{header}\
             name = \"xenpal-{guest}\"\n\
             kernel = \"{kernel}\"\n\
             memory = 128\n\
             vcpus = 1\n\
             # The guest prints on Xen's emergency console (xl dmesg / the\n\
             # serial console with guest_loglvl=all) and on its PV console.\n"
        ),
    };
    w(&format!("xenpal-{guest}.cfg"), &xl)?;
    w(
        &format!("dom0less-{guest}.dtsi"),
        &format!(
            "/* Put under /chosen of the board's device tree, and load `{kernel}` ({len} bytes)\n\
             \x20  at LOAD_ADDR with the boot loader (e.g. u-boot `load ... LOAD_ADDR {kernel}`).\n\
             \x20  Xen >= 4.20 gives the guest grants and event channels without dom0 with\n\
             \x20  xen,enhanced = \"no-xenstore\"; on 4.17 drop that line (grants are then\n\
             \x20  unavailable). */\n\
             domU-xenpal-{guest} {{\n\
             \x20   compatible = \"xen,domain\";\n\
             \x20   #address-cells = <1>;\n\
             \x20   #size-cells = <1>;\n\
             \x20   memory = <0 131072>;\n\
             \x20   cpus = <1>;\n\
             \x20   vpl011;\n\
             \x20   xen,enhanced = \"no-xenstore\";\n\
             \x20   module@LOAD_ADDR {{\n\
             \x20       compatible = \"multiboot,kernel\", \"multiboot,module\";\n\
             \x20       reg = <LOAD_ADDR {len:#x}>;\n\
             \x20   }};\n\
             }};\n",
            len = image.len()
        ),
    )?;
    Ok(())
}

/// Write the x86_64 artefacts for `guest` (PV, or PVH with `pvh`): the stripped ELF `elf` as
/// `xenpal-<guest>.elf` and its `xl` config, made from `domain_cfg` (the
/// guest crate's own domain config) when there is one. Returns the ELF's
/// path.
///
/// Errors: a message if a file cannot be written.
pub fn write_x86(
    dir: &Path,
    guest: &str,
    elf: &[u8],
    domain_cfg: Option<&str>,
    pvh: bool,
) -> Result<PathBuf, String> {
    let name = format!("xenpal-{guest}.elf");
    let path = dir.join(&name);
    std::fs::write(&path, elf).map_err(|e| format!("{name}: {e}"))?;
    let cfg = format!("xenpal-{guest}.cfg");
    let (kind, mode) = if pvh {
        ("PVH kernel (entered at its PHYS32_ENTRY note)", "pvh")
    } else {
        ("64-bit PV kernel", "pv")
    };
    let header = format!(
        "# xl domain config: `xl create -c {cfg}` on an x86 Xen host (dom0 running\n\
         # Linux). The guest is a {kind}; copy {name} next to this file\n\
         # (or give `kernel` a full path).\n"
    );
    if let Some(user) = domain_cfg {
        let xl = from_domain_config(&header, user, &name, &[("type", mode)]);
        std::fs::write(dir.join(&cfg), xl).map_err(|e| format!("{cfg}: {e}"))?;
        return Ok(path);
    }
    std::fs::write(
        dir.join(&cfg),
        format!(
            "{header}\
             name = \"xenpal-{guest}\"\n\
             type = \"{mode}\"\n\
             kernel = \"{name}\"\n\
             memory = 64\n\
             vcpus = 1\n\
             # As a domU the guest prints on its PV console (`xl console`); the\n\
             # self-test poweroffs on PASS and crashes on FAIL:\n\
             on_poweroff = \"destroy\"\n\
             on_crash = \"preserve\"\n"
        ),
    )
    .map_err(|e| format!("{cfg}: {e}"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::{from_domain_config, sets};

    #[test]
    fn xl_config_from_the_crates_own() {
        let user = "name = \"web\"\nmemory = 32\nvif = [ 'ip=10.0.0.2/24' ]\n";
        let xl = from_domain_config("# head\n", user, "Image", &[("type", "pv")]);
        assert!(xl.starts_with("# head\n"));
        assert!(xl.contains(user));
        assert!(xl.contains("kernel = \"Image\"\n"));
        assert!(xl.contains("type = \"pv\"\n"));
        // What the user set stays theirs.
        let own = "kernel = '/boot/web'\ntype=\"pvh\"\n";
        let xl = from_domain_config("", own, "Image", &[("type", "pv")]);
        assert!(!xl.contains("Image") && !xl.contains("\"pv\""), "{xl}");
        assert!(sets("  kernel  = 'x'", "kernel"));
        assert!(sets("extra += 'x'", "extra"));
        assert!(!sets("kernelx = 1", "kernel"));
        assert!(!sets("# kernel = 1", "kernel"));
    }
}
