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
/// Largest body accepted: artwork is the biggest legitimate body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
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
}

/// A request that cannot be served; carries the status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub status: u16,
    pub reason: &'static str,
    /// The connection cannot be resynchronised after this error: close it after replying.
    pub fatal: bool,
}

fn bad(reason: &'static str) -> FrameError {
    FrameError {
        status: 400,
        reason,
        fatal: true,
    }
}

/// Tries to take one complete request from the front of `buf`.
/// `Ok(None)`: need more bytes. `Ok(Some((req, used)))`: a request and how many bytes it
/// took. `Err`: answer with the error's status and (if fatal) close.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, FrameError> {
    // Some senders put a blank line between requests: skip leading CR/LF.
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let buf = &buf[skip..];
    let Some(head_len) = find_header_end(buf) else {
        if buf.len() > MAX_HEADER_BYTES {
            return Err(FrameError {
                status: 431,
                reason: "Request Header Fields Too Large",
                fatal: true,
            });
        }
        return Ok(None);
    };
    if head_len > MAX_HEADER_BYTES {
        return Err(FrameError {
            status: 431,
            reason: "Request Header Fields Too Large",
            fatal: true,
        });
    }
    let head = std::str::from_utf8(&buf[..head_len])
        .map_err(|_| bad("Bad Request (header is not UTF-8)"))?;
    let mut lines = head
        .split("\r\n")
        .flat_map(|l| l.split('\n'))
        .filter(|l| !l.is_empty());
    let request_line = lines.next().ok_or_else(|| bad("Bad Request (empty)"))?;
    let mut parts = request_line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some(protocol), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("Bad Request (malformed request line)"));
    };
    if !method
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return Err(bad("Bad Request (malformed method)"));
    }
    if protocol != "RTSP/1.0" && protocol != "HTTP/1.1" && protocol != "HTTP/1.0" {
        return Err(FrameError {
            status: 505,
            reason: "RTSP Version Not Supported",
            fatal: true,
        });
    }
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(FrameError {
                status: 431,
                reason: "Request Header Fields Too Large",
                fatal: true,
            });
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("Bad Request (header line without ':')"))?;
        let name = name.trim();
        if name.is_empty() || name.contains(' ') {
            return Err(bad("Bad Request (malformed header name)"));
        }
        let value = value.trim();
        // RFC 9112 section 2.2: a bare CR is invalid. Echoed (CSeq) it would split the
        // response for clients that end lines at CR.
        if value.contains('\r') {
            return Err(bad("Bad Request (bare CR in a header)"));
        }
        if name.eq_ignore_ascii_case("Content-Length") {
            content_length = value
                .parse()
                .map_err(|_| bad("Bad Request (bad Content-Length)"))?;
            if content_length > MAX_BODY_BYTES {
                return Err(FrameError {
                    status: 413,
                    reason: "Request Entity Too Large",
                    fatal: true,
                });
            }
        }
        headers.push((name.to_string(), value.to_string()));
    }
    let body_start = head_len
        + if buf[head_len..].starts_with(b"\r\n\r\n") {
            4
        } else {
            2
        };
    if buf.len() < body_start + content_length {
        return Ok(None);
    }
    let body = buf[body_start..body_start + content_length].to_vec();
    let req = Request {
        method: method.to_string(),
        uri: uri.to_string(),
        protocol: protocol.to_string(),
        headers,
        body,
    };
    Ok(Some((req, skip + body_start + content_length)))
}

/// Index of the blank line ending the header block (CRLFCRLF, or bare LFLF).
fn find_header_end(buf: &[u8]) -> Option<usize> {
    let limit = buf.len().min(MAX_HEADER_BYTES + 4);
    (0..limit).find(|&i| buf[i..].starts_with(b"\r\n\r\n") || buf[i..].starts_with(b"\n\n"))
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
    /// changed): a bare CR inside `CSeq` was echoed into the response head.
    #[test]
    fn fuzz_bare_cr_in_a_header_is_refused() {
        let raw = b"ANNOUNCE rtsp://127.0.0.1/3178504324 RTSP/1.0\r\nCSeq: 1\rP rtsp://127.0.0.1/1155986552 RTSP/1.0\r\nCSeq: 2\r\n\r\n";
        let e = parse_request(raw).unwrap_err();
        assert_eq!((e.status, e.fatal), (400, true));
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
    fn response_serialises() {
        let r = Response::ok()
            .header("CSeq", "3")
            .body("text/parameters", b"volume: 0\r\n".to_vec());
        let s = String::from_utf8(r.to_bytes("RTSP/1.0")).unwrap();
        assert!(s.starts_with("RTSP/1.0 200 OK\r\nCSeq: 3\r\n"));
        assert!(s.ends_with("Content-Length: 11\r\n\r\nvolume: 0\r\n"));
    }
}
