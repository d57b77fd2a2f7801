//! RTSP Digest authentication (RFC 2617 without qop), as RAOP senders speak it.

use crate::crypto::md5_hex;

pub const REALM: &str = "raop";

/// The `WWW-Authenticate` value. pyatv splits it on `"`, so the shape is fixed:
/// `Digest realm="…", nonce="…"`.
pub fn challenge(nonce: &str) -> String {
    format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\"")
}

/// Parses `Digest k="v", k=v, …` into (key, value) pairs.
fn params(header: &str) -> Option<Vec<(&str, &str)>> {
    let rest = header.trim().strip_prefix("Digest")?.trim_start();
    let mut out = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        let (k, v) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim();
        let v = v.trim_start();
        let (val, next) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (v[..end].trim(), &v[end..])
        };
        out.push((k, val));
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

/// Checks an `Authorization` header against the password and this connection's nonce.
/// The response is MD5(MD5(user:realm:pw):nonce:MD5(method:uri)); the method is the
/// request's, the uri the one the client put in the header (PulseAudio uses `*`).
pub fn verify(header: &str, method: &str, password: &str, nonce: &str) -> bool {
    let Some(p) = params(header) else {
        return false;
    };
    let get = |k: &str| {
        p.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| *v)
    };
    let (Some(user), Some(realm), Some(n), Some(uri), Some(resp)) = (
        get("username"),
        get("realm"),
        get("nonce"),
        get("uri"),
        get("response"),
    ) else {
        return false;
    };
    // A nonce is this connection's alone (see `Session`): one issued on another connection,
    // or by another daemon, is refused.
    if !ct_eq(n.as_bytes(), nonce.as_bytes()) {
        return false;
    }
    let ha1 = md5_hex(&[
        user.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ]);
    let ha2 = md5_hex(&[method.as_bytes(), b":", uri.as_bytes()]);
    let expect = md5_hex(&[ha1.as_bytes(), b":", nonce.as_bytes(), b":", ha2.as_bytes()]);
    // Hex digits in either case; compared in constant time.
    ct_eq(expect.as_bytes(), resp.to_ascii_lowercase().as_bytes())
}

/// Equality whose time depends only on the lengths, not on where the bytes differ, so a
/// remote guesser learns nothing from response times.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(user: &str, pw: &str, nonce: &str, method: &str, uri: &str) -> String {
        let ha1 = md5_hex(&[format!("{user}:{REALM}:{pw}").as_bytes()]);
        let ha2 = md5_hex(&[format!("{method}:{uri}").as_bytes()]);
        let r = md5_hex(&[format!("{ha1}:{nonce}:{ha2}").as_bytes()]);
        format!("Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\"")
    }

    #[test]
    fn accepts_right_password_rejects_wrong() {
        let h = answer("iTunes", "secret", "abc123", "OPTIONS", "*");
        assert!(verify(&h, "OPTIONS", "secret", "abc123"));
        assert!(!verify(&h, "OPTIONS", "wrong", "abc123"));
        assert!(!verify(&h, "OPTIONS", "secret", "othernonce"));
        assert!(!verify(&h, "ANNOUNCE", "secret", "abc123"));
        assert!(!verify("Basic abc", "OPTIONS", "secret", "abc123"));
        assert!(!verify("Digest garbage", "OPTIONS", "secret", "abc123"));
        assert!(!verify(
            "Digest username=\"x",
            "OPTIONS",
            "secret",
            "abc123"
        ));
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        // Upper-case hex in the response is the same answer.
        let h = answer("iTunes", "secret", "abc123", "OPTIONS", "*");
        let (head, resp) = h.rsplit_once("response=\"").unwrap();
        let upper = format!("{head}response=\"{}", resp.to_uppercase());
        assert!(verify(&upper, "OPTIONS", "secret", "abc123"));
    }

    #[test]
    fn challenge_splits_like_pyatv() {
        let c = challenge("n0nce");
        let parts: Vec<&str> = c.split('"').collect();
        assert_eq!(parts.len(), 5);
        assert_eq!((parts[1], parts[3]), (REALM, "n0nce"));
    }
}
