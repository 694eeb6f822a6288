//! Helpers the workspace's tests share (and, in `tests/`, cross-crate tests
//! of xenpal, including differential tests against Xen's C headers).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The path of host tool `name` (looked up on `PATH`, then in the `sbin`
/// and `bin` directories, where `mkfs.fat` and `fsck.fat` live but a user's
/// `PATH` often does not reach). Panics, naming the Debian package
/// `package` to install, if it is missing: the tests that use a tool never
/// skip, and CI installs them all.
pub fn host_tool(name: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the host tool `{name}` is missing: these tests check their results with it. \
         Install the Debian package {package} (sudo apt-get install {package})."
    );
}

/// Deterministic pseudo-random bytes: SplitMix64 from `seed`, `len` of
/// them. Test data that differs at every offset, so a misplaced block
/// shows.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Assert that `got` is `want`, byte for byte; on failure, say what
/// (`what`), both lengths and the first differing offset instead of
/// printing both buffers.
#[track_caller]
pub fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert!(
        got == want,
        "{what}: {} bytes differ from the {} expected (first difference at {:?})",
        got.len(),
        want.len(),
        got.iter().zip(want).position(|(a, b)| a != b)
    );
}

/// A new, empty scratch directory under the system's temporary directory,
/// removed with everything in it when dropped (kept, and its path
/// printed, if `XENPAL_KEEP_SCRATCH` is set).
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new scratch directory; `label` goes into its name.
    pub fn new(label: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xenpal-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// A path in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Write `data` to `name` in the directory, creating its parents.
    /// Panics on an I/O error (this is for tests).
    pub fn write(&self, name: &str, data: &[u8]) {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create a directory in the scratch directory");
        }
        std::fs::write(&p, data).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("XENPAL_KEEP_SCRATCH").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_a_tool_every_machine_has_and_names_the_package_of_a_missing_one() {
        assert!(super::host_tool("sh", "dash").is_file());
        let missing = std::panic::catch_unwind(|| super::host_tool("no-such-tool-xenpal", "nope"));
        let msg = missing.expect_err("a missing tool panics");
        let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            text.contains("no-such-tool-xenpal") && text.contains("apt-get install nope"),
            "{text}"
        );
    }
}
