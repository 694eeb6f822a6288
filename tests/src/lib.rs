//! Helpers the workspace's tests share (and, in `tests/`, cross-crate tests
//! of xenpal, including differential tests against Xen's C headers).

use std::path::PathBuf;

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
