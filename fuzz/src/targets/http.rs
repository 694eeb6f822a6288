//! The static site's HTTP request parser (`xenpal_apps::http`), fed a
//! client's byte stream as the site feeds it: find each request head with
//! `head_end`, parse it, answer it; and a stream with no head end within
//! `MAX_HEAD` bytes is parsed as it is (it must be refused).

use xenpal_apps::http::{self, HttpError, MAX_HEAD};

/// Run one input: the bytes a client sent on one connection.
pub fn run(data: &[u8]) {
    let mut inbuf = data;
    // As the site does: take whole heads off the front (pipelining).
    for _ in 0..64 {
        let window = &inbuf[..inbuf.len().min(MAX_HEAD + 1)];
        let Some(n) = http::head_end(window) else {
            if window.len() > MAX_HEAD {
                check(http::parse(window));
            }
            break;
        };
        assert!(
            n > 0 && n <= window.len(),
            "head_end {n} outside the buffer"
        );
        check(http::parse(&window[..n]));
        inbuf = &inbuf[n..];
    }
    // The parser on its own, on everything: never panics.
    check(http::parse(data));
    if let Ok(s) = core::str::from_utf8(data) {
        check_path(http::normalise(s));
    }
}

fn check(r: Result<http::Request, HttpError>) {
    match r {
        Ok(req) => {
            check_path(Ok(req.path.clone()));
            let ct = http::content_type(&req.path);
            let head = http::head((200, "OK"), ct, 12, req.keep_alive);
            assert!(head.ends_with(b"\r\n\r\n"));
        }
        Err(e) => {
            let page = http::error_page(e.status(), false, false);
            assert!(page.starts_with(b"HTTP/1.1 4"));
        }
    }
}

/// What the site relies on when it maps a path to a file.
fn check_path(r: Result<String, HttpError>) {
    let Ok(path) = r else { return };
    assert!(path.starts_with('/'), "{path:?}: not absolute");
    assert!(!path.contains("//"), "{path:?}: empty segment");
    assert!(
        path.split('/').all(|s| s != "." && s != ".."),
        "{path:?}: dot segment"
    );
    assert!(
        !path.chars().any(|c| c.is_control() || c == '\\'),
        "{path:?}: control character or backslash"
    );
}
