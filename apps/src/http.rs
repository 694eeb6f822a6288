//! Just enough HTTP/1.x for a static site: parse a request head, map its
//! path, build a response. Pure functions, no I/O; the client is untrusted,
//! so everything is bounded and checked.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Longest request head we accept (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `true` for `HEAD` (send headers only), `false` for `GET`.
    pub head_only: bool,
    /// The decoded, normalised path: starts with `/`, no `.`/`..`
    /// segments, no query.
    pub path: String,
}

/// Why a request cannot be served, as an HTTP status.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// 400: not HTTP, or a bad path.
    BadRequest,
    /// 405: not GET or HEAD.
    MethodNotAllowed,
    /// 431: head longer than [`MAX_HEAD`].
    HeadTooLarge,
}

impl HttpError {
    /// Status code and reason phrase.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            HttpError::BadRequest => (400, "Bad Request"),
            HttpError::MethodNotAllowed => (405, "Method Not Allowed"),
            HttpError::HeadTooLarge => (431, "Request Header Fields Too Large"),
        }
    }
}

/// Whether `buf` holds a complete request head (ends with an empty line).
pub fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// Parse a request head.
///
/// Errors: [`HttpError`].
pub fn parse(head: &[u8]) -> Result<Request, HttpError> {
    if head.len() > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let end = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(HttpError::BadRequest)?;
    let line = core::str::from_utf8(&head[..end]).map_err(|_| HttpError::BadRequest)?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(HttpError::BadRequest),
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::BadRequest);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(HttpError::MethodNotAllowed),
    };
    Ok(Request {
        head_only,
        path: normalise(target)?,
    })
}

/// Decode and normalise a request target: drop the query and fragment,
/// percent-decode, collapse `//`, refuse `..` and control characters.
///
/// Errors: [`HttpError::BadRequest`].
pub fn normalise(target: &str) -> Result<String, HttpError> {
    let raw = target.split(['?', '#']).next().unwrap_or("");
    if !raw.starts_with('/') {
        return Err(HttpError::BadRequest);
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut it = raw.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = |c: Option<u8>| c.and_then(|c| (c as char).to_digit(16));
            match (hex(it.next()), hex(it.next())) {
                (Some(h), Some(l)) => bytes.push((h * 16 + l) as u8),
                _ => return Err(HttpError::BadRequest),
            }
        } else {
            bytes.push(b);
        }
    }
    let decoded = String::from_utf8(bytes).map_err(|_| HttpError::BadRequest)?;
    if decoded.chars().any(|c| c.is_control() || c == '\\') {
        return Err(HttpError::BadRequest);
    }
    let mut out = String::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(HttpError::BadRequest),
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    if out.is_empty() || decoded.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

/// The media type for a file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

/// A complete response: status line, headers and (unless `head_only`) the
/// body. The connection closes after it.
pub fn response(status: (u16, &str), content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = head(status, content_type, body.len() as u64);
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The head of a response whose body is `length` bytes (the connection
/// closes after it).
pub fn head(status: (u16, &str), content_type: &str, length: u64) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} {}\r\nServer: xenpal\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
        status.0, status.1
    )
    .into_bytes()
}

/// The page for an error status.
pub fn error_page(status: (u16, &str), head_only: bool) -> Vec<u8> {
    let body = format!(
        "<!doctype html><title>{0} {1}</title><h1>{0} {1}</h1>\n",
        status.0, status.1
    );
    response(
        status,
        "text/html; charset=utf-8",
        body.as_bytes(),
        head_only,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let r = parse(b"GET /a/b%20c.html?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            r,
            Request {
                head_only: false,
                path: "/a/b c.html".into()
            }
        );
        assert!(parse(b"HEAD / HTTP/1.0\r\n\r\n").unwrap().head_only);
        assert_eq!(normalise("//a/./b/").unwrap(), "/a/b/");
        assert_eq!(normalise("/").unwrap(), "/");
        assert_eq!(normalise("/a/../etc/passwd"), Err(HttpError::BadRequest));
        assert_eq!(normalise("/%2e%2e/x"), Err(HttpError::BadRequest));
        assert_eq!(normalise("/bad%zz"), Err(HttpError::BadRequest));
        assert_eq!(normalise("/nul%00"), Err(HttpError::BadRequest));
        assert_eq!(normalise("no-slash"), Err(HttpError::BadRequest));
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\n\r\n"),
            Err(HttpError::MethodNotAllowed)
        );
        assert_eq!(parse(b"GET / SPDY\r\n\r\n"), Err(HttpError::BadRequest));
        assert_eq!(parse(b"GET /\r\n\r\n"), Err(HttpError::BadRequest));
        assert_eq!(parse(&[b'a'; MAX_HEAD + 1]), Err(HttpError::HeadTooLarge));
        assert_eq!(parse(&[0xff, b'\n']), Err(HttpError::BadRequest));
        assert!(head_complete(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(!head_complete(b"GET / HTTP/1.0\r\n"));
    }

    #[test]
    fn responses() {
        let r = response((200, "OK"), content_type("/x.CSS"), b"body", false);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Type: text/css\r\n"));
        assert!(text.contains("Content-Length: 4\r\n"));
        assert!(text.ends_with("\r\n\r\nbody"));
        let head = response((200, "OK"), "text/plain", b"body", true);
        assert!(!String::from_utf8(head).unwrap().ends_with("body"));
        assert_eq!(content_type("/noext"), "application/octet-stream");
        assert!(
            String::from_utf8(error_page((404, "Not Found"), false))
                .unwrap()
                .contains("404")
        );
    }
}
