//! The host's side of the static site: its files as the guest serves them,
//! and an HTTP client that fetches every page and compares it byte for
//! byte. The simulator's launcher (`static-site --check`) and the QEMU
//! runner (`cargo xtask qemu ... --check site`) both use it. Host only.

use std::format;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::println;
use std::string::{String, ToString};
use std::time::Duration;
use std::vec;
use std::vec::Vec;

/// Every file under `root`, as the site serves it: (URL path, contents),
/// in name order.
///
/// Errors: a message naming the file or folder that cannot be read.
pub fn site_files(root: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut entries = std::fs::read_dir(&dir)
            .and_then(|d| d.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let ty = e
                .file_type()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if ty.is_dir() {
                stack.push((path, format!("{prefix}/{name}")));
            } else if ty.is_file() {
                let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                out.push((format!("{prefix}/{name}"), data));
            }
        }
    }
    Ok(out)
}

/// Percent-encode a path for a request line.
fn encode(path: &str) -> String {
    let mut s = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// `GET path` from `127.0.0.1:port`: (status, body).
///
/// Errors: a message if the connection fails or the reply is malformed
/// (no head, no status, a body shorter or longer than its `Content-Length`).
pub fn get(port: u16, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        encode(path)
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers in the reply")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status in the reply")?;
    let body = raw[split + 4..].to_vec();
    let length: Option<usize> = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok());
    if length.is_some_and(|n| n != body.len()) {
        return Err(format!(
            "Content-Length {length:?} but {} bytes of body",
            body.len()
        ));
    }
    Ok((status, body))
}

/// Fetch every page from `127.0.0.1:port` and compare it with its file;
/// `/` (the index) and a missing page (404) too. Prints a line per page;
/// returns the paths that failed.
pub fn check(port: u16, files: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut expect = |path: &str, status: u16, body: Option<&[u8]>| match get(port, path) {
        Ok((s, b)) if s == status && body.is_none_or(|want| want == b.as_slice()) => {
            println!("check: ok   {status} {path} ({} bytes)", b.len());
        }
        Ok((s, b)) => {
            println!("check: FAIL {path}: status {s}, {} bytes", b.len());
            failures.push(path.to_string());
        }
        Err(e) => {
            println!("check: FAIL {path}: {e}");
            failures.push(path.to_string());
        }
    };
    for (path, data) in files {
        expect(path, 200, Some(data));
    }
    if let Some((_, index)) = files.iter().find(|(p, _)| p == "/index.html") {
        expect("/", 200, Some(index));
    }
    expect("/no/such/page.html", 404, None);
    failures
}
