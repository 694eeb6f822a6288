//! `cargo xtask new PATH`: write a standalone unikernel crate at PATH that
//! depends on this checkout's `xenpal` by path. The files are
//! `xtask/template/*.in`, with `{{name}}` (the package name, from PATH's last
//! component), `{{crate}}` (the same as a Rust identifier), `{{xenpal}}`
//! (this checkout) and `{{toolchain}}` (our pinned Rust) filled in.

use std::path::{Path, PathBuf};

/// The template: (path in the new crate, text).
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../template/Cargo.toml.in")),
    (
        "rust-toolchain.toml",
        include_str!("../template/rust-toolchain.toml.in"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../template/.cargo/config.toml.in"),
    ),
    ("xenpal.cfg", include_str!("../template/xenpal.cfg.in")),
    ("README.md", include_str!("../template/README.md.in")),
    ("ci.sh", include_str!("../template/ci.sh.in")),
    ("src/lib.rs", include_str!("../template/src/lib.rs.in")),
    ("src/main.rs", include_str!("../template/src/main.rs.in")),
    ("tests/sim.rs", include_str!("../template/tests/sim.rs.in")),
    (".gitignore", "/target\n"),
];

/// Whether `name` is a usable package name: a letter, then letters, digits,
/// `-` or `_`, and not a name Rust or Cargo reserves.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && ![
            "test", "core", "std", "alloc", "xenpal", "self", "crate", "super",
        ]
        .contains(&name.replace('-', "_").as_str())
}

/// Fill in the placeholders.
fn render(text: &str, name: &str, xenpal: &str, toolchain: &str) -> String {
    text.replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{xenpal}}", xenpal)
        .replace("{{toolchain}}", toolchain)
}

/// Our pinned toolchain, from `rust-toolchain.toml` in `root`.
fn toolchain(root: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(root.join("rust-toolchain.toml"))
        .map_err(|e| format!("rust-toolchain.toml: {e}"))?;
    text.lines()
        .find_map(|l| {
            let v = l.trim().strip_prefix("channel")?.trim().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
        .ok_or_else(|| "rust-toolchain.toml names no channel".to_string())
}

/// `cargo xtask new PATH`: write the crate, refusing to touch an existing
/// non-empty folder. Returns what to tell the user.
///
/// Errors: a message for a missing or bad PATH, a name Cargo would refuse,
/// an existing non-empty folder, or a file that cannot be written.
pub fn new_crate(args: &[String], root: &Path) -> Result<String, String> {
    let [path] = args else {
        return Err("new takes one argument: the folder to create".into());
    };
    let path = PathBuf::from(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{}: no folder name to call the crate", path.display()))?;
    if !valid_name(&name) {
        return Err(format!(
            "{name:?} cannot name a crate: use a letter, then letters, digits, - or _"
        ));
    }
    if path.exists() {
        let empty = path.is_dir()
            && std::fs::read_dir(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .next()
                .is_none();
        if !empty {
            return Err(format!(
                "{} exists and is not an empty folder: nothing written",
                path.display()
            ));
        }
    }
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let xenpal = root
        .to_str()
        .ok_or_else(|| format!("{}: not UTF-8, cannot go in Cargo.toml", root.display()))?;
    if xenpal.contains(['"', '\\', '\n']) {
        return Err(format!(
            "{xenpal}: a path with quotes cannot go in Cargo.toml"
        ));
    }
    let toolchain = toolchain(&root)?;
    for (file, text) in FILES {
        let dest = path.join(file);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&dest, render(text, &name, xenpal, &toolchain))
            .map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ci = path.join("ci.sh");
        std::fs::set_permissions(&ci, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", ci.display()))?;
    }
    Ok(format!(
        "created {name} in {}: cd there, then `cargo test`, `cargo run`, or \
         `cargo run --release --target aarch64-unknown-none` (or armv7a-none-eabi, \
         x86_64-unknown-none; see its README.md)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("myguest"));
        assert!(valid_name("my-guest_2"));
        assert!(!valid_name("2guest"));
        assert!(!valid_name("my guest"));
        assert!(!valid_name(""));
        assert!(!valid_name("xenpal"));
        assert!(!valid_name("std"));
    }

    #[test]
    fn writes_a_crate_and_refuses_to_overwrite() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dir = std::env::temp_dir().join(format!("xtask-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("my-guest");
        let msg = new_crate(&[path.display().to_string()], root).unwrap();
        assert!(msg.contains("my-guest"));
        let main = std::fs::read_to_string(path.join("src/main.rs")).unwrap();
        assert!(main.contains("my_guest::serve"), "{main}");
        let cargo = std::fs::read_to_string(path.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"my-guest\""));
        assert!(!cargo.contains("{{"), "every placeholder filled: {cargo}");
        for (f, _) in FILES {
            let text = std::fs::read_to_string(path.join(f)).unwrap();
            assert!(!text.contains("{{"), "{f}: {text}");
        }
        assert!(
            new_crate(&[path.display().to_string()], root)
                .unwrap_err()
                .contains("not an empty folder")
        );
        assert!(new_crate(&[], root).is_err());
        assert!(new_crate(&[dir.join("9lives").display().to_string()], root).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
