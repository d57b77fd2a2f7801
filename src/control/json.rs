//! A minimal JSON writer for the control socket's replies.
//!
//! The daemon only ever writes JSON (requests on the control socket are plain words, see
//! [`super::socket`]), and it writes a few small objects. A serialisation framework would cost
//! more flash than the rest of the control interface, so this is a streaming writer that keeps
//! track of commas and escapes strings per RFC 8259; it cannot produce invalid JSON as long as
//! every `begin_*` is matched by its `end_*`.
//!
//! It escapes strings senders sent: no panic on input (issue 11).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable
    )
)]

use std::fmt::Write as _;

/// Writes one JSON value into a `String`.
///
/// Inside an object, call [`key`](Self::key) before each value; inside an array or at the top
/// level, write values directly.
#[derive(Debug, Default)]
pub struct JsonWriter {
    out: String,
    /// One entry per open object or array: whether it already holds a member.
    open: Vec<bool>,
    /// A key was just written: the next value belongs to it and needs no comma.
    after_key: bool,
}

impl JsonWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        debug_assert!(self.open.is_empty(), "unbalanced JSON writer");
        self.out
    }

    /// Puts the separator a new value or key needs.
    fn separate(&mut self) {
        if self.after_key {
            self.after_key = false;
            return;
        }
        if let Some(has) = self.open.last_mut() {
            if *has {
                self.out.push(',');
            }
            *has = true;
        }
    }

    pub fn begin_object(&mut self) -> &mut Self {
        self.separate();
        self.out.push('{');
        self.open.push(false);
        self
    }

    pub fn end_object(&mut self) -> &mut Self {
        self.open.pop();
        self.out.push('}');
        self
    }

    pub fn begin_array(&mut self) -> &mut Self {
        self.separate();
        self.out.push('[');
        self.open.push(false);
        self
    }

    pub fn end_array(&mut self) -> &mut Self {
        self.open.pop();
        self.out.push(']');
        self
    }

    /// An object member's name; the next call writes its value.
    pub fn key(&mut self, k: &str) -> &mut Self {
        self.separate();
        escape_into(&mut self.out, k);
        self.out.push(':');
        self.after_key = true;
        self
    }

    pub fn string(&mut self, s: &str) -> &mut Self {
        self.separate();
        escape_into(&mut self.out, s);
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.separate();
        self.out.push_str("null");
        self
    }

    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.separate();
        self.out.push_str(if b { "true" } else { "false" });
        self
    }

    pub fn u64(&mut self, n: u64) -> &mut Self {
        self.separate();
        let _ = write!(self.out, "{n}");
        self
    }

    pub fn i64(&mut self, n: i64) -> &mut Self {
        self.separate();
        let _ = write!(self.out, "{n}");
        self
    }

    /// A number rounded to `decimals` places. JSON has no NaN or infinity: those are `null`.
    pub fn f64(&mut self, x: f64, decimals: usize) -> &mut Self {
        self.separate();
        if x.is_finite() {
            let s = format!("{x:.decimals$}");
            // Trailing zeros carry no information; "-0" is just 0.
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.')
            } else {
                &s
            };
            self.out.push_str(if s == "-0" { "0" } else { s });
        } else {
            self.out.push_str("null");
        }
        self
    }

    /// A string or `null`.
    pub fn opt_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.string(s),
            None => self.null(),
        }
    }

    /// A number or `null`.
    pub fn opt_u64(&mut self, n: Option<u64>) -> &mut Self {
        match n {
            Some(n) => self.u64(n),
            None => self.null(),
        }
    }

    /// Splices in a value that is already JSON text (built by another writer).
    pub fn raw(&mut self, json: &str) -> &mut Self {
        self.separate();
        self.out.push_str(json);
        self
    }
}

/// Writes `s` as a JSON string literal: quotes, backslashes and control characters are
/// escaped (RFC 8259 section 7); everything else, including non-ASCII, is kept as UTF-8.
pub fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            // Line and paragraph separators are valid JSON but break JavaScript consumers.
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"ok":true}` or `{"ok":false,"error":…}`: the reply to a command.
pub fn ok_reply(result: Result<(), &str>) -> String {
    let mut w = JsonWriter::new();
    w.begin_object().key("ok").bool(result.is_ok());
    if let Err(e) = result {
        w.key("error").string(e);
    }
    w.end_object();
    w.finish()
}

/// A strict JSON syntax checker for tests: the writer's output must be accepted by any parser.
#[cfg(test)]
pub(crate) mod check {
    /// True if `s` is exactly one valid JSON value.
    pub fn valid(s: &str) -> bool {
        let b = s.as_bytes();
        let mut p = 0;
        value(b, &mut p, 0) && {
            ws(b, &mut p);
            p == b.len()
        }
    }

    fn ws(b: &[u8], p: &mut usize) {
        while *p < b.len() && matches!(b[*p], b' ' | b'\t' | b'\n' | b'\r') {
            *p += 1;
        }
    }

    fn lit(b: &[u8], p: &mut usize, l: &[u8]) -> bool {
        if b[*p..].starts_with(l) {
            *p += l.len();
            true
        } else {
            false
        }
    }

    fn value(b: &[u8], p: &mut usize, depth: usize) -> bool {
        ws(b, p);
        if *p >= b.len() || depth > 32 {
            return false;
        }
        match b[*p] {
            b'{' => {
                *p += 1;
                ws(b, p);
                if lit(b, p, b"}") {
                    return true;
                }
                loop {
                    ws(b, p);
                    if !string(b, p) {
                        return false;
                    }
                    ws(b, p);
                    if !lit(b, p, b":") || !value(b, p, depth + 1) {
                        return false;
                    }
                    ws(b, p);
                    if lit(b, p, b"}") {
                        return true;
                    }
                    if !lit(b, p, b",") {
                        return false;
                    }
                }
            }
            b'[' => {
                *p += 1;
                ws(b, p);
                if lit(b, p, b"]") {
                    return true;
                }
                loop {
                    if !value(b, p, depth + 1) {
                        return false;
                    }
                    ws(b, p);
                    if lit(b, p, b"]") {
                        return true;
                    }
                    if !lit(b, p, b",") {
                        return false;
                    }
                }
            }
            b'"' => string(b, p),
            b't' => lit(b, p, b"true"),
            b'f' => lit(b, p, b"false"),
            b'n' => lit(b, p, b"null"),
            _ => number(b, p),
        }
    }

    fn string(b: &[u8], p: &mut usize) -> bool {
        if !lit(b, p, b"\"") {
            return false;
        }
        while *p < b.len() {
            match b[*p] {
                b'"' => {
                    *p += 1;
                    return true;
                }
                b'\\' => {
                    *p += 1;
                    match b.get(*p) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => *p += 1,
                        Some(b'u') => {
                            let hex = b.get(*p + 1..*p + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return false;
                            }
                            *p += 5;
                        }
                        _ => return false,
                    }
                }
                c if c < 0x20 => return false,
                _ => *p += 1,
            }
        }
        false
    }

    fn number(b: &[u8], p: &mut usize) -> bool {
        let start = *p;
        lit(b, p, b"-");
        let int_start = *p;
        while *p < b.len() && b[*p].is_ascii_digit() {
            *p += 1;
        }
        let int = &b[int_start..*p];
        if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
            return false;
        }
        if lit(b, p, b".") {
            let f = *p;
            while *p < b.len() && b[*p].is_ascii_digit() {
                *p += 1;
            }
            if *p == f {
                return false;
            }
        }
        *p > start
    }
}

#[cfg(test)]
mod tests {
    use super::check::valid;
    use super::*;

    #[test]
    fn escaping() {
        let mut s = String::new();
        escape_into(
            &mut s,
            "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é☃\u{2028}/",
        );
        assert_eq!(s, r#""a\"b\\c\n\r\t\b\f\u0001\u001f\u007fé☃\u2028/""#);
        assert!(valid(&s));
    }

    #[test]
    fn nested_values_get_commas_right() {
        let mut w = JsonWriter::new();
        w.begin_object()
            .key("name")
            .string("Kitchen")
            .key("n")
            .u64(3)
            .key("neg")
            .i64(-4)
            .key("x")
            .f64(1.25, 3)
            .key("nan")
            .f64(f64::NAN, 1)
            .key("list")
            .begin_array()
            .u64(1)
            .begin_object()
            .end_object()
            .begin_array()
            .end_array()
            .null()
            .end_array()
            .key("inner")
            .begin_object()
            .key("b")
            .bool(false)
            .key("s")
            .opt_string(None)
            .end_object()
            .key("raw")
            .raw("{\"k\":1}")
            .end_object();
        let s = w.finish();
        assert_eq!(
            s,
            r#"{"name":"Kitchen","n":3,"neg":-4,"x":1.25,"nan":null,"list":[1,{},[],null],"inner":{"b":false,"s":null},"raw":{"k":1}}"#
        );
        assert!(valid(&s));
    }

    #[test]
    fn floats_are_plain_decimals() {
        let f = |x: f64, d: usize| {
            let mut w = JsonWriter::new();
            w.f64(x, d);
            w.finish()
        };
        assert_eq!(f(3.0, 3), "3");
        assert_eq!(f(-0.0001, 2), "0");
        assert_eq!(f(-30.5, 1), "-30.5");
        assert_eq!(f(1e20, 0), "100000000000000000000");
        assert_eq!(f(f64::INFINITY, 0), "null");
        assert!(valid(&f(-144.0, 2)));
    }

    #[test]
    fn replies() {
        assert_eq!(ok_reply(Ok(())), r#"{"ok":true}"#);
        assert_eq!(
            ok_reply(Err("no \"sender\"")),
            r#"{"ok":false,"error":"no \"sender\""}"#
        );
    }

    #[test]
    fn the_checker_rejects_invalid_json() {
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "[1,]",
            "01",
            "\"\u{1}\"",
            "{\"a\":1,}",
            "tru",
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
    }
}
