//! RTSP request framing and parsing, and response serialisation.
//!
//! Written by hand rather than with `rtsp-types`: real senders send request lines that
//! crate rejects (pyatv's `GET /info RTSP/1.0` and `POST /feedback` carry relative URIs,
//! which `rtsp-types` insists on parsing as absolute URLs; some senders use `HTTP/1.1`
//! on the RTSP connection), and we must bound header and body sizes *before* buffering
//! a body, which needs the framing step anyway. The grammar needed is tiny: a request
//! line, `Name: value` lines and a `Content-Length` body.

use std::fmt::Write as _;

/// Largest header block accepted (request line + headers).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 64;
/// Largest body buffered: artwork is the biggest legitimate body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest body read and thrown away after a `413` (cover art bigger than
/// [`MAX_BODY_BYTES`], which iTunes sends): the connection, and the stream it carries, go on.
/// A `Content-Length` beyond this is refused and the connection closed.
pub const MAX_DISCARD_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// As sent: `*`, a path (`/feedback`), an absolute `rtsp://…` URL, or empty
    /// (`TEARDOWN  RTSP/1.0`).
    pub uri: String,
    /// `RTSP/1.0` normally; echoed in the response.
    pub protocol: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The URI's path: `/feedback` for `/feedback`, `rtsp://host:port/feedback` or
    /// `http://host/feedback`; `*` and the empty URI as they are.
    pub fn path(&self) -> &str {
        let uri = self.uri.as_str();
        match uri.split_once("://") {
            Some((_, rest)) => rest.find('/').and_then(|j| rest.get(j..)).unwrap_or("/"),
            None => uri,
        }
    }
}

/// A request that cannot be served; carries the status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub status: u16,
    pub reason: &'static str,
    /// The connection cannot be resynchronised after this error: close it after replying.
    pub fatal: bool,
    /// Bytes of the input the refused request takes (header block and body), counted from
    /// the start of the buffer given to [`parse_request`]; may be more than was buffered (a
    /// body still arriving). The caller drops them and goes on with the next request.
    /// Meaningful only when not `fatal`.
    pub skip: usize,
    /// The request's `CSeq`, when it could be read, to echo in the reply.
    pub cseq: Option<String>,
}

fn fatal(status: u16, reason: &'static str) -> FrameError {
    FrameError {
        status,
        reason,
        fatal: true,
        skip: 0,
        cseq: None,
    }
}

fn too_large_header() -> FrameError {
    fatal(431, "Request Header Fields Too Large")
}

/// Tries to take one complete request from the front of `buf`.
/// `Ok(None)`: need more bytes. `Ok(Some((req, used)))`: a request and how many bytes it
/// took. `Err`: answer with the error's status, then close (`fatal`) or drop `skip` bytes
/// and go on.
///
/// Liberal in what a request line may be (RFC 2326 §6.1 and what senders send): the URI may
/// be `*`, a path, an absolute URL or missing altogether (`TEARDOWN  RTSP/1.0`); the version
/// `RTSP/1.0`, `HTTP/1.0` or `HTTP/1.1`. Strict in size: at most [`MAX_HEADER_BYTES`] of
/// header block, [`MAX_HEADERS`] lines and [`MAX_BODY_BYTES`] of body. Once the header block
/// has been read whole and its `Content-Length` is a number, every refusal is non-fatal: a
/// bad request inside a live session costs that request only, never the session.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, FrameError> {
    // Some senders put a blank line between requests: skip leading CR/LF.
    let mut buf = buf;
    let mut skip = 0;
    while let [b'\r' | b'\n', rest @ ..] = buf {
        buf = rest;
        skip += 1;
    }
    let Some((head_bytes, body_start)) = find_header_end(buf) else {
        if buf.len() > MAX_HEADER_BYTES {
            return Err(too_large_header());
        }
        return Ok(None);
    };
    if head_bytes.len() > MAX_HEADER_BYTES {
        return Err(too_large_header());
    }
    let lines = || {
        head_bytes
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.is_empty())
    };
    // First the two headers framing needs, leniently (the rest of the head may be bad).
    let mut content_length = 0usize;
    let mut cseq = None;
    for line in lines().skip(1) {
        let mut parts = line.splitn(2, |&b| b == b':');
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let name = name.trim_ascii();
        let value = std::str::from_utf8(value.trim_ascii()).ok();
        if name.eq_ignore_ascii_case(b"Content-Length") {
            content_length = match value.and_then(|v| v.parse::<usize>().ok()) {
                Some(n) => n,
                None => return Err(fatal(400, "Bad Request (bad Content-Length)")),
            };
        } else if name.eq_ignore_ascii_case(b"CSeq") {
            cseq = value
                .filter(|v| v.len() <= 32 && v.bytes().all(|b| b.is_ascii_graphic()))
                .map(str::to_string);
        }
    }
    // From here on the request's extent is known: refusals skip it and go on.
    let refuse = |status: u16, reason: &'static str| FrameError {
        status,
        reason,
        fatal: false,
        skip: skip + body_start + content_length,
        cseq: cseq.clone(),
    };
    if content_length > MAX_DISCARD_BYTES {
        let mut e = refuse(413, "Request Entity Too Large");
        e.fatal = true;
        return Err(e);
    }
    if content_length > MAX_BODY_BYTES {
        return Err(refuse(413, "Request Entity Too Large"));
    }
    let head = std::str::from_utf8(head_bytes)
        .map_err(|_| refuse(400, "Bad Request (header is not UTF-8)"))?;
    let mut lines = head
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty());
    let request_line = lines
        .next()
        .ok_or_else(|| refuse(400, "Bad Request (empty)"))?;
    let parts: Vec<&str> = request_line.split_ascii_whitespace().collect();
    let (method, uri, protocol) = match parts[..] {
        [m, u, p] => (m, u, p),
        // No URI at all: `TEARDOWN  RTSP/1.0`.
        [m, p] if p.starts_with("RTSP/") || p.starts_with("HTTP/") => (m, "", p),
        _ => return Err(refuse(400, "Bad Request (malformed request line)")),
    };
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return Err(refuse(400, "Bad Request (malformed method)"));
    }
    if protocol != "RTSP/1.0" && protocol != "HTTP/1.1" && protocol != "HTTP/1.0" {
        return Err(refuse(505, "RTSP Version Not Supported"));
    }
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(refuse(431, "Request Header Fields Too Large"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| refuse(400, "Bad Request (header line without ':')"))?;
        let name = name.trim();
        if name.is_empty() || name.contains(' ') {
            return Err(refuse(400, "Bad Request (malformed header name)"));
        }
        let value = value.trim();
        // RFC 9112 section 2.2: a bare CR inside a value is invalid (found by the fuzz
        // targets; echoed, it would split a response for clients that end lines at CR).
        if value.contains('\r') {
            return Err(refuse(400, "Bad Request (bare CR in a header)"));
        }
        headers.push((name.to_string(), value.to_string()));
    }
    let Some(body) = buf.get(body_start..body_start + content_length) else {
        return Ok(None);
    };
    let body = body.to_vec();
    let req = Request {
        method: method.to_string(),
        uri: uri.to_string(),
        protocol: protocol.to_string(),
        headers,
        body,
    };
    Ok(Some((req, skip + body_start + content_length)))
}

/// The header block, up to the blank line ending it (CRLFCRLF, or bare LFLF), and where the
/// body starts (after that blank line).
fn find_header_end(buf: &[u8]) -> Option<(&[u8], usize)> {
    let limit = buf.len().min(MAX_HEADER_BYTES + 4);
    (0..limit).find_map(|i| {
        let (head, rest) = buf.split_at_checked(i)?;
        let blank = if rest.starts_with(b"\r\n\r\n") {
            4
        } else if rest.starts_with(b"\n\n") {
            2
        } else {
            return None;
        };
        Some((head, i + blank))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Close the connection after sending.
    pub close: bool,
}

impl Response {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Response {
            status,
            reason: reason.into(),
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
        }
    }

    pub fn ok() -> Self {
        Response::new(200, "OK")
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.headers
            .push(("Content-Type".into(), content_type.into()));
        self.body = body;
        self
    }

    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Serialises with the request's protocol string and Content-Length.
    pub fn to_bytes(&self, protocol: &str) -> Vec<u8> {
        let mut head = String::with_capacity(256);
        let _ = write!(head, "{} {} {}\r\n", protocol, self.status, self.reason);
        for (n, v) in &self.headers {
            let _ = write!(head, "{n}: {v}\r\n");
        }
        if !self.body.is_empty() {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_requests_and_bodies() {
        let raw = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\nANNOUNCE rtsp://1.2.3.4/5 RTSP/1.0\r\nCSeq: 2\r\ncontent-length: 3\r\n\r\nabcGET";
        let (r1, n1) = parse_request(raw).unwrap().unwrap();
        assert_eq!(r1.method, "OPTIONS");
        assert_eq!(r1.header("cseq"), Some("1"));
        let (r2, n2) = parse_request(&raw[n1..]).unwrap().unwrap();
        assert_eq!(r2.body, b"abc");
        assert_eq!(r2.uri, "rtsp://1.2.3.4/5");
        assert_eq!(parse_request(&raw[n1 + n2..]).unwrap(), None);
    }

    /// Found by the `rtsp_session` fuzz target (a capture of PulseAudio with one byte
    /// changed): a bare CR inside `CSeq`.
    #[test]
    fn fuzz_bare_cr_in_a_header_is_refused() {
        let raw = b"ANNOUNCE rtsp://127.0.0.1/3178504324 RTSP/1.0\r\nCSeq: 1\rP rtsp://127.0.0.1/1155986552 RTSP/1.0\r\nCSeq: 2\r\n\r\n";
        let e = parse_request(raw).unwrap_err();
        assert_eq!(e.status, 400);
        // Refused echoing only the well-formed CSeq, and the request is skipped.
        assert_eq!(e.cseq.as_deref(), Some("2"));
        assert_eq!(e.skip, raw.len());
        // A CR before the line end is white space, as before.
        let (r, _) = parse_request(b"OPTIONS * RTSP/1.0\r\nCSeq: 7 \r\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.header("CSeq"), Some("7"));
    }

    #[test]
    fn incomplete_body_waits() {
        let raw = b"SET_PARAMETER * RTSP/1.0\r\nContent-Length: 10\r\n\r\n12345";
        assert_eq!(parse_request(raw).unwrap(), None);
    }

    #[test]
    fn relative_uri_and_http_version() {
        let (r, _) = parse_request(b"GET /info RTSP/1.0\r\nCSeq: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.method.as_str(), r.uri.as_str()), ("GET", "/info"));
        let (r, _) = parse_request(b"POST /auth-setup HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.protocol, "HTTP/1.1");
    }

    #[test]
    fn rejects_bad_input() {
        let cases: &[(&[u8], u16)] = &[
            (b"OPTIONS\r\n\r\n", 400),
            (b"OPTIONS * RTSP/1.0 extra\r\n\r\n", 400),
            (b"options * RTSP/1.0\r\n\r\n", 400),
            (b"OPTIONS * SIP/2.0\r\n\r\n", 505),
            (b"OPTIONS * RTSP/1.0\r\nNoColon\r\n\r\n", 400),
            (b"OPTIONS * RTSP/1.0\r\nContent-Length: x\r\n\r\n", 400),
            (
                b"OPTIONS * RTSP/1.0\r\nContent-Length: 99999999999\r\n\r\n",
                413,
            ),
            (b"OPTIONS * RTSP/1.0\r\n\xff\xfe: x\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            let err = parse_request(raw).unwrap_err();
            assert_eq!(err.status, *status, "{:?}", String::from_utf8_lossy(raw));
        }
        let mut many = b"OPTIONS * RTSP/1.0\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&many).unwrap_err().status, 431);
        let huge = vec![b'A'; MAX_HEADER_BYTES + 10];
        assert_eq!(parse_request(&huge).unwrap_err().status, 431);
    }

    #[test]
    fn liberal_request_lines() {
        for (raw, uri, path) in [
            (&b"TEARDOWN  RTSP/1.0\r\nCSeq: 7\r\n\r\n"[..], "", ""),
            (b"TEARDOWN RTSP/1.0\r\n\r\n", "", ""),
            (b"OPTIONS * RTSP/1.0\r\n\r\n", "*", "*"),
            (b"POST /feedback RTSP/1.0\r\n\r\n", "/feedback", "/feedback"),
            (
                b"POST rtsp://10.0.0.2:5000/feedback RTSP/1.0\r\n\r\n",
                "rtsp://10.0.0.2:5000/feedback",
                "/feedback",
            ),
            (b"GET http://h HTTP/1.1\r\n\r\n", "http://h", "/"),
            (b"SET_PARAMETER\t*\tRTSP/1.0\n\n", "*", "*"),
        ] {
            let (r, used) = parse_request(raw).unwrap().unwrap();
            assert_eq!((r.uri.as_str(), r.path()), (uri, path));
            assert_eq!(used, raw.len());
        }
    }

    #[test]
    fn refusals_after_a_complete_head_skip_the_request_and_keep_the_connection() {
        // An oversized body: refused at once, before it arrives, and skipped whole.
        let head = format!(
            "SET_PARAMETER * RTSP/1.0\r\nCSeq: 12\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        let e = parse_request(head.as_bytes()).unwrap_err();
        assert_eq!((e.status, e.fatal), (413, false));
        assert_eq!(e.skip, head.len() + MAX_BODY_BYTES + 1);
        assert_eq!(e.cseq.as_deref(), Some("12"));
        // Beyond what is worth reading: closed.
        let e = parse_request(b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 99999999999\r\n\r\n")
            .unwrap_err();
        assert_eq!((e.status, e.fatal), (413, true));
        // Malformed but framed: skipped with its body, CSeq echoed.
        let raw = b"OPTIONS * RTSP/1.0 x\r\nCSeq: 3\r\nContent-Length: 2\r\n\r\nabOPTIONS * RTSP/1.0\r\n\r\n";
        let e = parse_request(raw).unwrap_err();
        assert_eq!(
            (e.status, e.fatal, e.cseq.as_deref()),
            (400, false, Some("3"))
        );
        let (next, _) = parse_request(&raw[e.skip..]).unwrap().unwrap();
        assert_eq!(next.method, "OPTIONS");
        // A CSeq that is not a short token is not echoed.
        let e = parse_request(b"x\r\nCSeq: a\x01b\r\n\r\n").unwrap_err();
        assert_eq!(e.cseq, None);
    }

    #[test]
    fn response_serialises() {
        let r = Response::ok()
            .header("CSeq", "3")
            .body("text/parameters", b"volume: 0\r\n".to_vec());
        let s = String::from_utf8(r.to_bytes("RTSP/1.0")).unwrap();
        assert!(s.starts_with("RTSP/1.0 200 OK\r\nCSeq: 3\r\n"));
        assert!(s.ends_with("Content-Length: 11\r\n\r\nvolume: 0\r\n"));
    }
}
