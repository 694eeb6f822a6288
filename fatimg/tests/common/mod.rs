//! What the image tests share: the expected contents of an image, and
//! long names.

#![allow(dead_code)] // each test file uses its part

use std::collections::{BTreeMap, BTreeSet};
use xenpal_fatimg::FatImage;

/// What an image must hold: files (path, contents) and directories.
#[derive(Clone, Default)]
pub struct Expect {
    /// Path to contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Every directory, parents included.
    pub dirs: BTreeSet<String>,
    /// The volume label, as mlabel shows it.
    pub label: Option<String>,
}

impl Expect {
    /// Add a file to the image and to what is expected, with its parents.
    pub fn file(&mut self, img: &mut FatImage, path: &str, data: Vec<u8>) {
        img.add_file(path, data.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        self.parents(path);
        self.files.insert(path.to_string(), data);
    }

    /// Add a directory to the image and to what is expected.
    pub fn dir(&mut self, img: &mut FatImage, path: &str) {
        img.add_dir(path).unwrap_or_else(|e| panic!("{e}"));
        self.parents(path);
        self.dirs.insert(path.to_string());
    }

    /// Expect the directories above `path`.
    pub fn parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            self.dirs.insert(path[..at + i].to_string());
            at += i + 1;
        }
    }
}

/// A name of `len` UTF-16 units ending in `ext`, not ending in a space.
pub fn long_name(len: usize, ext: &str) -> String {
    let mut s: String = "Long name ".chars().cycle().take(len - ext.len()).collect();
    if s.ends_with(' ') {
        s.pop();
        s.push('x');
    }
    s + ext
}
