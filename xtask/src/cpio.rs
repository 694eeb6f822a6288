//! A Linux initramfs: a `newc` cpio archive (the format the kernel unpacks
//! into its root tmpfs), written from memory. Directories are created before
//! what they hold, hard links are stored as copies, and the archive ends
//! with the `TRAILER!!!` entry.

use std::collections::BTreeMap;

/// What an archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory (mode bits).
    Dir(u32),
    /// A regular file: mode bits and contents.
    File(u32, Vec<u8>),
    /// A symbolic link to the target.
    Symlink(String),
}

/// An initramfs under construction: paths (without a leading `/`) to
/// entries; parent directories are added as needed.
#[derive(Default, Debug)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

impl Archive {
    /// Add `entry` at `path`, replacing what was there, and create its
    /// parent directories (mode 755) if missing.
    ///
    /// Errors: a message if the path is empty, absolute after trimming, or
    /// has `.`/`..` components.
    pub fn add(&mut self, path: &str, entry: Entry) -> Result<(), String> {
        let path = path.trim_start_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!("bad initramfs path {path:?}"));
        }
        let mut parent = String::new();
        for c in path.split('/').take(path.split('/').count() - 1) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            self.entries
                .entry(parent.clone())
                .or_insert(Entry::Dir(0o755));
        }
        self.entries.insert(path.to_string(), entry);
        Ok(())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The archive bytes. Entries come in path order, which puts every
    /// directory before its contents.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, e)) in self.entries.iter().enumerate() {
            let (mode, data): (u32, &[u8]) = match e {
                Entry::Dir(m) => (S_IFDIR | m, &[]),
                Entry::File(m, d) => (S_IFREG | m, d),
                Entry::Symlink(t) => (S_IFLNK | 0o777, t.as_bytes()),
            };
            let nlink = if matches!(e, Entry::Dir(_)) { 2 } else { 1 };
            entry(&mut out, ino as u32 + 1, mode, nlink, path, data);
        }
        entry(&mut out, 0, 0, 1, "TRAILER!!!", &[]);
        out
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One `newc` entry: the 110-byte ASCII header, the NUL-terminated name and
/// the data, each padded to 4 bytes.
fn entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // dev major
        0, // dev minor
        0, // rdev major
        0, // rdev minor
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read a `newc` archive back: (name, mode, data) per entry.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut v = Vec::new();
        let mut at = 0usize;
        loop {
            assert_eq!(&b[..6], b"070701", "magic at offset {at}");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap() as usize
            };
            let (mode, size, namesize) = (field(1) as u32, field(6), field(11));
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[110 + namesize - 1], 0);
            let data_at = (110 + namesize).div_ceil(4) * 4;
            let data = b[data_at..data_at + size].to_vec();
            let next = (data_at + size).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                assert_eq!(next, b.len());
                return v;
            }
            v.push((name, mode, data));
            at += next;
            b = &b[next..];
        }
    }

    #[test]
    fn round_trips_files_links_and_parents() {
        let mut a = Archive::default();
        a.add("/init", Entry::File(0o755, b"#!/bin/sh\n".to_vec()))
            .unwrap();
        a.add(
            "usr/lib/x/libfoo.so.1",
            Entry::Symlink("libfoo.so.1.2".into()),
        )
        .unwrap();
        a.add("usr/lib/x/libfoo.so.1.2", Entry::File(0o644, vec![7; 5]))
            .unwrap();
        let got = parse(&a.to_bytes());
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "init",
                "usr",
                "usr/lib",
                "usr/lib/x",
                "usr/lib/x/libfoo.so.1",
                "usr/lib/x/libfoo.so.1.2"
            ]
        );
        assert_eq!(got[0].1, S_IFREG | 0o755);
        assert_eq!(got[0].2, b"#!/bin/sh\n");
        assert_eq!(got[1].1, S_IFDIR | 0o755);
        assert_eq!(got[4].1, S_IFLNK | 0o777);
        assert_eq!(got[4].2, b"libfoo.so.1.2");
        assert_eq!(got[5].2, vec![7; 5]);
    }

    #[test]
    fn rejects_paths_that_escape() {
        let mut a = Archive::default();
        for p in ["", "/", "a/../b", "a//b", "./a"] {
            assert!(a.add(p, Entry::Dir(0o755)).is_err(), "{p:?}");
        }
        assert_eq!(a.len(), 0);
    }
}
