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
    /// Whether the client keeps the connection for another request:
    /// HTTP/1.1 unless it sent `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
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

/// The length of the first request head in `buf`, through the empty line
/// that ends it (`\r\n\r\n`, or a bare `\n\n`), if `buf` holds a whole
/// one. What follows it is the next request (pipelining).
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut prev_nl = false;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'\n' if prev_nl => return Some(i + 1),
            b'\n' => prev_nl = true,
            b'\r' => {}
            _ => prev_nl = false,
        }
    }
    None
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
    let (mut close, mut keep) = (false, false);
    let fields = core::str::from_utf8(&head[end + 1..]).map_err(|_| HttpError::BadRequest)?;
    for field in fields.lines() {
        let field = field.trim_end_matches('\r');
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':').ok_or(HttpError::BadRequest)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && value != "0")
        {
            // A GET or HEAD with a body: we could not tell where the next
            // request starts.
            return Err(HttpError::BadRequest);
        }
    }
    let keep_alive = !close && (version == "HTTP/1.1" || keep);
    Ok(Request {
        head_only,
        path: normalise(target)?,
        keep_alive,
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
/// body; `keep_alive` says whether the connection stays open after it.
pub fn response(
    status: (u16, &str),
    content_type: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = head(status, content_type, body.len() as u64, keep_alive);
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The head of a response whose body is `length` bytes; `keep_alive` says
/// whether the connection stays open after it.
pub fn head(status: (u16, &str), content_type: &str, length: u64, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "HTTP/1.1 {} {}\r\nServer: xenpal\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: {connection}\r\n\r\n",
        status.0, status.1
    )
    .into_bytes()
}

/// The page for an error status; `keep_alive` as for [`response`].
pub fn error_page(status: (u16, &str), head_only: bool, keep_alive: bool) -> Vec<u8> {
    let body = format!(
        "<!doctype html><title>{0} {1}</title><h1>{0} {1}</h1>\n",
        status.0, status.1
    );
    response(
        status,
        "text/html; charset=utf-8",
        body.as_bytes(),
        head_only,
        keep_alive,
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
                path: "/a/b c.html".into(),
                keep_alive: true,
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
    }

    #[test]
    fn heads_are_split_and_connections_kept_as_asked() {
        // Two pipelined requests: the first head ends at its empty line.
        let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let n = head_end(two).unwrap();
        assert_eq!(&two[n..], b"GET /b HTTP/1.1\r\n\r\n");
        assert_eq!(head_end(&two[n..]), Some(two.len() - n));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.0\r\nA: b\r\n\r"), None);
        let ka = |h: &[u8]| parse(h).map(|r| r.keep_alive);
        assert_eq!(ka(b"GET / HTTP/1.1\r\n\r\n"), Ok(true));
        assert_eq!(
            ka(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"),
            Ok(false)
        );
        assert_eq!(ka(b"GET / HTTP/1.0\r\n\r\n"), Ok(false));
        assert_eq!(
            ka(b"GET / HTTP/1.0\r\nconnection: foo, Keep-Alive\r\n\r\n"),
            Ok(true)
        );
        // A body on a GET would desynchronise the pipeline: refused.
        assert_eq!(
            ka(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            Err(HttpError::BadRequest)
        );
        assert_eq!(
            ka(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::BadRequest)
        );
        assert_eq!(ka(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), Ok(true));
        assert_eq!(
            ka(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Err(HttpError::BadRequest)
        );
    }

    #[test]
    fn responses() {
        let r = response((200, "OK"), content_type("/x.CSS"), b"body", false, false);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Type: text/css\r\n"));
        assert!(text.contains("Content-Length: 4\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nbody"));
        let head = response((200, "OK"), "text/plain", b"body", true, true);
        assert!(
            String::from_utf8(head.clone())
                .unwrap()
                .contains("Connection: keep-alive\r\n")
        );
        assert!(!String::from_utf8(head).unwrap().ends_with("body"));
        assert_eq!(content_type("/noext"), "application/octet-stream");
        assert!(
            String::from_utf8(error_page((404, "Not Found"), false, true))
                .unwrap()
                .contains("404")
        );
    }
}
