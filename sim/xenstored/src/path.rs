//! Path syntax: validation, canonical (absolute) form, parents.
//!
//! Rules as in Xen's `canonicalize()` (tools/xenstored/core.c, Xen 4.21):
//! only `[A-Za-z0-9-/_@]`; `@` first only where special paths are allowed;
//! relative paths are taken from the caller's home `/local/domain/<id>`;
//! no trailing `/` (except `/` itself), no `//`; and for unprivileged callers
//! the part after a `/local/domain/<id>/` prefix may be at most the path
//! quota (`XENSTORE_REL_PATH_MAX`) long. Every violation is `EINVAL`.

use xenpal_xen_pv::abi::Errno;

/// Whether every byte is one Xen accepts in a path.
fn valid_chars(raw: &[u8]) -> bool {
    raw.iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@'))
}

/// Length of a leading `/local/domain/<id>/`, as C's
/// `sscanf(name, "/local/domain/%5u/%n")` measures it (0 if absent).
fn local_prefix_len(name: &str) -> usize {
    const PREFIX: &str = "/local/domain/";
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return 0;
    };
    let b = rest.as_bytes();
    // `%5u`: an optional sign, then digits, five characters at most.
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let digits_start = i;
    while i < 5 && b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if i == digits_start || b.get(i) != Some(&b'/') {
        return 0;
    }
    PREFIX.len() + i + 1
}

/// The caller's home directory, base of relative paths.
pub(crate) fn home(domid: u16) -> String {
    format!("/local/domain/{domid}")
}

/// The absolute form of path `raw` sent by domain `domid`, or `EINVAL`.
pub(crate) fn canonicalize(
    raw: &[u8],
    domid: u16,
    unprivileged: bool,
    path_max: usize,
    allow_special: bool,
) -> Result<String, Errno> {
    if !valid_chars(raw) || (raw.first() == Some(&b'@') && !allow_special) {
        return Err(Errno::EINVAL);
    }
    // Only ASCII is left, so this cannot fail.
    let s = core::str::from_utf8(raw).map_err(|_| Errno::EINVAL)?;
    let name = if s.starts_with('/') || s.starts_with('@') {
        s.to_owned()
    } else {
        format!("{}/{s}", home(domid))
    };
    let rel_len = name.len() - local_prefix_len(&name);
    if (name.ends_with('/') && name != "/")
        || name.contains("//")
        || (unprivileged && rel_len > path_max)
    {
        return Err(Errno::EINVAL);
    }
    Ok(name)
}

/// The parent of a canonical path, as Xen's `get_parent()`: everything
/// before the last `/` (not counting a leading one), else `/`. The parent of
/// `/` and of special `@...` paths is `/`.
pub(crate) fn parent(path: &str) -> &str {
    match path.get(1..).and_then(|rest| rest.rfind('/')) {
        Some(i) => &path[..=i],
        None => "/",
    }
}

/// The last component of a canonical path other than `/`.
pub(crate) fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The path of child `name` of `parent`.
pub(crate) fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The watch paths that match a change of `path` under Xen's `is_child()`
/// rule: `/`, every proper prefix of `path` that ends before a `/`, and
/// `path` itself. Each is yielded once.
pub(crate) fn watch_candidates(path: &str) -> impl Iterator<Item = &str> {
    let prefixes = path
        .char_indices()
        .filter(|&(i, c)| c == '/' && i > 0)
        .map(move |(i, _)| &path[..i]);
    core::iter::once("/")
        .chain(prefixes)
        .chain((path != "/").then_some(path))
}

/// C's `atoi()`: leading white space, an optional sign, decimal digits;
/// anything else ends the number. Overflow wraps (C leaves it undefined).
pub(crate) fn atoi(s: &[u8]) -> i32 {
    let mut i = 0;
    while s
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
    {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut v: i32 = 0;
    while let Some(d) = s.get(i).filter(|c| c.is_ascii_digit()) {
        v = v.wrapping_mul(10).wrapping_add(i32::from(d - b'0'));
        i += 1;
    }
    if neg { v.wrapping_neg() } else { v }
}

/// C's `strtol(s, &end, 0)` over all of `s`: `None` unless the whole string
/// is one number (base 16 with `0x`, 8 with a leading `0`, else 10).
/// Out-of-range values saturate, as `strtol` does.
pub(crate) fn strtol_whole(s: &[u8]) -> Option<i64> {
    let mut i = 0;
    while s
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
    {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let radix = if s.get(i) == Some(&b'0')
        && matches!(s.get(i + 1), Some(b'x' | b'X'))
        && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        i += 2;
        16
    } else if s.get(i) == Some(&b'0') {
        8
    } else {
        10
    };
    let start = i;
    let mut v: i64 = 0;
    while let Some(d) = s.get(i).and_then(|&c| char::from(c).to_digit(radix)) {
        v = v
            .saturating_mul(i64::from(radix))
            .saturating_add(i64::from(d));
        i += 1;
    }
    if i == start || i != s.len() {
        return None;
    }
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let c = |p: &str| canonicalize(p.as_bytes(), 7, true, 2048, false);
        assert_eq!(c("/a/b").unwrap(), "/a/b");
        assert_eq!(c("x").unwrap(), "/local/domain/7/x");
        assert_eq!(c("/").unwrap(), "/");
        assert_eq!(c(""), Err(Errno::EINVAL));
        assert_eq!(c("/a/"), Err(Errno::EINVAL));
        assert_eq!(c("/a//b"), Err(Errno::EINVAL));
        assert_eq!(c("/a b"), Err(Errno::EINVAL));
        assert_eq!(c("@foo"), Err(Errno::EINVAL));
        assert_eq!(canonicalize(b"@foo", 7, true, 2048, true).unwrap(), "@foo");
        // The length limit counts only what follows /local/domain/<id>/.
        let long = format!("/local/domain/99/{}", "a".repeat(2048));
        assert!(c(&long).is_ok());
        let long = format!("/local/domain/99/{}", "a".repeat(2049));
        assert_eq!(c(&long), Err(Errno::EINVAL));
        assert!(canonicalize(long.as_bytes(), 0, false, 2048, false).is_ok());
        assert_eq!(c(&format!("/{}", "a".repeat(2048))), Err(Errno::EINVAL));
    }

    #[test]
    fn parents_and_candidates() {
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
        assert_eq!(parent("@releaseDomain"), "/");
        assert_eq!(basename("/a/bc"), "bc");
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a", "b"), "/a/b");
        let c: Vec<_> = watch_candidates("/a/b/c").collect();
        assert_eq!(c, ["/", "/a", "/a/b", "/a/b/c"]);
        let c: Vec<_> = watch_candidates("/").collect();
        assert_eq!(c, ["/"]);
        let c: Vec<_> = watch_candidates("@x").collect();
        assert_eq!(c, ["/", "@x"]);
    }

    #[test]
    fn c_number_parsing() {
        assert_eq!(atoi(b"12"), 12);
        assert_eq!(atoi(b" -3x"), -3);
        assert_eq!(atoi(b"abc"), 0);
        assert_eq!(strtol_whole(b"12"), Some(12));
        assert_eq!(strtol_whole(b"0x1f"), Some(31));
        assert_eq!(strtol_whole(b"010"), Some(8));
        assert_eq!(strtol_whole(b"0"), Some(0));
        assert_eq!(strtol_whole(b""), None);
        assert_eq!(strtol_whole(b"1a"), None);
        assert_eq!(strtol_whole(b"-"), None);
    }
}
