//! The host's side of the static site: its files as the guest serves them,
//! and an HTTP client that fetches every page and compares it byte for
//! byte. The simulator's launcher (`static-site --check`) and the QEMU
//! runner (`cargo xtask qemu ... --check site`) both use it. Host only.

use std::format;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::println;
use std::string::{String, ToString};
use std::time::Duration;
use std::vec;
use std::vec::Vec;

/// One file of the site: where the site serves it and where it is on the
/// host. Its contents are read only when a page is checked, so a large
/// site costs no memory here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteFile {
    /// The URL path (`/css/site.css`).
    pub path: String,
    /// The file on the host.
    pub host: PathBuf,
    /// Its size in bytes.
    pub len: u64,
}

/// Every file under `root`, as the site serves it, in name order. Symbolic
/// links are followed while they stay inside `root`, as the image packer
/// follows them; one leading outside is not part of the site.
///
/// Errors: a message naming the file or folder that cannot be read.
pub fn site_files(root: &Path) -> Result<Vec<SiteFile>, String> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e: std::io::Error| format!("{p}: {e}")
    };
    let top = std::fs::canonicalize(root).map_err(io(root))?;
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut entries = std::fs::read_dir(&dir)
            .and_then(|d| d.collect::<Result<Vec<_>, _>>())
            .map_err(io(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if !std::fs::canonicalize(&path)
                .map_err(io(&path))?
                .starts_with(&top)
            {
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(io(&path))?;
            if meta.is_dir() {
                stack.push((path, format!("{prefix}/{name}")));
            } else if meta.is_file() {
                out.push(SiteFile {
                    path: format!("{prefix}/{name}"),
                    host: path,
                    len: meta.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
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
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        encode(path)
    );
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
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

/// `GET path` from `127.0.0.1:port`, comparing the body with the file
/// `want` as it arrives (never holding either whole): the status, the
/// body's length, and whether it matched (`true` when there is no `want`).
///
/// Errors: a message if the connection fails, the reply is malformed, or
/// the file cannot be read.
fn get_matching(port: u16, path: &str, want: Option<&Path>) -> Result<(u16, u64, bool), String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        encode(path)
    );
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    // The head, and whatever of the body came with it.
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if raw.len() > 64 * 1024 {
            return Err("no end of headers in the first 64 KiB".into());
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("no end of headers in the reply".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status in the reply")?;
    let length: Option<u64> = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok());
    let mut file = match want {
        Some(p) => Some(std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let mut same = true;
    let mut got = 0u64;
    let mut theirs = vec![0u8; buf.len()];
    let mut chunk = raw[split + 4..].to_vec();
    loop {
        got += chunk.len() as u64;
        if let Some(f) = &mut file
            && same
        {
            let mine = &mut theirs[..chunk.len()];
            same = f.read_exact(mine).is_ok() && *mine == chunk[..];
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        chunk.clear();
        chunk.extend_from_slice(&buf[..n]);
    }
    if length.is_some_and(|n| n != got) {
        return Err(format!("Content-Length {length:?} but {got} bytes of body"));
    }
    // The file must have ended where the body did.
    if let Some(f) = &mut file
        && same
    {
        same = f.read(&mut theirs[..1]).map_err(|e| e.to_string())? == 0;
    }
    Ok((status, got, same))
}

/// Fetch every page from `127.0.0.1:port` and compare it with its file;
/// `/` (the index) and a missing page (404) too. Prints a line per page;
/// returns the paths that failed.
pub fn check(port: u16, files: &[SiteFile]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut expect =
        |path: &str, status: u16, body: Option<&Path>| match get_matching(port, path, body) {
            Ok((s, n, true)) if s == status => {
                println!("check: ok   {status} {path} ({n} bytes)");
            }
            Ok((s, n, _)) => {
                println!("check: FAIL {path}: status {s}, {n} bytes");
                failures.push(path.to_string());
            }
            Err(e) => {
                println!("check: FAIL {path}: {e}");
                failures.push(path.to_string());
            }
        };
    for f in files {
        expect(&f.path, 200, Some(&f.host));
    }
    if let Some(index) = files.iter().find(|f| f.path == "/index.html") {
        expect("/", 200, Some(&index.host));
    }
    expect("/no/such/page.html", 404, None);
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serve one canned reply on a free port; returns the port.
    fn serve_once(reply: Vec<u8>) -> u16 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // The whole request, so closing does not reset the connection.
            let mut req = Vec::new();
            let mut b = [0u8; 256];
            while !req.ends_with(b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(n) if n > 0 => req.extend_from_slice(&b[..n]),
                    _ => break,
                }
            }
            let _ = s.write_all(&reply);
        });
        port
    }

    fn reply(body: &[u8], length: usize) -> Vec<u8> {
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n").into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn bodies_are_compared_with_the_file_as_they_arrive() {
        let dir = std::env::temp_dir().join(format!("xenpal-site-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("page.bin");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&file, &data).unwrap();

        let port = serve_once(reply(&data, data.len()));
        assert_eq!(
            get_matching(port, "/page.bin", Some(&file)).unwrap(),
            (200, data.len() as u64, true)
        );
        // One byte changed far into the body.
        let mut bad = data.clone();
        bad[150_000] ^= 1;
        let port = serve_once(reply(&bad, bad.len()));
        assert!(!get_matching(port, "/page.bin", Some(&file)).unwrap().2);
        // A body one byte short, and one byte long.
        let port = serve_once(reply(&data[1..], data.len() - 1));
        assert!(!get_matching(port, "/page.bin", Some(&file)).unwrap().2);
        let mut long = data.clone();
        long.push(0);
        let port = serve_once(reply(&long, long.len()));
        assert!(!get_matching(port, "/page.bin", Some(&file)).unwrap().2);
        // A body shorter than its Content-Length is an error.
        let port = serve_once(reply(&data[..10], data.len()));
        assert!(get_matching(port, "/page.bin", Some(&file)).is_err());

        // Listing follows links inside the site, not outside it.
        std::os::unix::fs::symlink(&file, dir.join("inside.bin")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("outside")).unwrap();
        let files = site_files(&dir).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/inside.bin", "/page.bin"]);
        assert_eq!(files[0].len, data.len() as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
