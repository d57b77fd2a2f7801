//! luci-app-raopd in a real browser: headless Chromium shows the shipped view while pyatv
//! streams to raopd, pauses the sender through DACP and renames the speaker.
//!
//! LuCI cannot be installed on Debian, so `tests/luci/` stands in for it, thinly:
//! - `luci-standin.js`: the parts of LuCI's JS API the views use (`L`, `E`/`dom`, `view`,
//!   `form`, `rpc`, `poll`, `ui`), written from LuCI's documentation (see its header);
//! - `server.py`: uhttpd + rpcd + procd for this page. `/ubus` runs the REAL rpcd backend
//!   (`luci.raopd`) against the running raopd, checks calls against the shipped ACL, edits a
//!   copy of `/etc/config/raopd` and applies it through the REAL init script (with the OpenWrt
//!   shell stand-ins of `tests/openwrt/root`), restarting raopd with the command line the init
//!   script produced. It runs with a private tmpfs on /run, so raopd and the backend meet at
//!   the default control socket, as on the router.
//!
//! Two network namespaces joined by a veth pair: the router (`br-lan`, 192.168.1.1, which
//! the UCI file's `list interface 'lan'` resolves to) runs the server, raopd and the browser;
//! a LAN host (192.168.1.100, its own avahi-daemon) is the phone: pyatv streams from there,
//! and avahi-browse there sees the speaker's name. The sender must be a host of its own:
//! raopd asks the sender's address (port 5353) for its DACP service, and on one host that
//! query would reach raopd's own mDNS socket instead of the sender's responder.
//!
//! pyatv sends `DACP-ID` and `Active-Remote` but runs no DACP server, so the test is the
//! sender's DACP server: it listens on the LAN host, announces
//! `iTunes_Ctrl_<DACP-ID>._dacp._tcp` through that host's avahi, and records the requests
//! raopd sends (pyatv is given the two values).
//!
//! Chromium and chromedriver (Debian's `chromium`, `chromium-driver`) run in the router's
//! namespace; the test speaks chromedriver's WebDriver HTTP API from a thread that has
//! joined it. Screenshots are kept in `<target>/tmp/luci-browser/`.
//! Needs root and scripts/setup-test-deps.sh; fails (does not skip) without them.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::{in_netns, Netns};
use common::senders::{self, PyatvOpts};
use common::{audio, TestDir};

const WEB_PORT: u16 = 8080;
const DRIVER_PORT: u16 = 9515;
const RAOP_PORT: u16 = 5000;
const ROUTER_IP: &str = "192.168.1.1";
const PHONE_IP: &str = "192.168.1.100";
const DACP_ID: &str = "A1B2C3D4E5F60718";
const ACTIVE_REMOTE: u32 = 3_141_592_653;
/// Markup in a title must show as text, not run in the router's admin page.
const TITLE: &str = "Blue \"Monday\" <i>live</i> & more";
const OLD_NAME: &str = "Wohnzimmer";
const NEW_NAME: &str = "Küche 2";
const PAGE: &str = "/cgi-bin/luci/admin/services/raopd";

// ----- the test's own network access inside the namespace ------------------------------------

/// One HTTP/1.1 request to 127.0.0.1:`port` in `ns`; returns status and body.
fn http(ns: &Netns, port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = in_netns(ns, || TcpStream::connect(("127.0.0.1", port)))
        .unwrap_or_else(|e| panic!("connect to port {port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read the head, then Content-Length bytes (chromedriver keeps the connection open), or
    // to the end of a chunked or unsized reply.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).expect("read HTTP reply");
        assert!(n > 0, "connection closed before the reply's head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = raw.split_off(head_end + 4);
    match length {
        Some(n) => {
            while body.len() < n {
                let got = s.read(&mut buf).expect("read HTTP body");
                assert!(got > 0, "connection closed in the reply's body");
                body.extend_from_slice(&buf[..got]);
            }
        }
        None => {
            s.read_to_end(&mut body).expect("read HTTP body");
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    let body = String::from_utf8_lossy(&body).into_owned();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&body)
    } else {
        body
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ----- JSON, just enough for WebDriver replies ------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(s: &str) -> Json {
        let chars: Vec<char> = s.chars().collect();
        let mut i = 0;
        Self::value(&chars, &mut i).unwrap_or_else(|| panic!("bad JSON: {s}"))
    }

    fn ws(c: &[char], i: &mut usize) {
        while *i < c.len() && c[*i].is_whitespace() {
            *i += 1;
        }
    }

    fn value(c: &[char], i: &mut usize) -> Option<Json> {
        Self::ws(c, i);
        let rest: String = c[*i..].iter().take(5).collect();
        for (word, v) in [
            ("null", Json::Null),
            ("true", Json::Bool(true)),
            ("false", Json::Bool(false)),
        ] {
            if rest.starts_with(word) {
                *i += word.len();
                return Some(v);
            }
        }
        match *c.get(*i)? {
            '"' => Self::string(c, i).map(Json::Str),
            '[' => {
                *i += 1;
                let mut items = Vec::new();
                loop {
                    Self::ws(c, i);
                    if c.get(*i) == Some(&']') {
                        *i += 1;
                        return Some(Json::Arr(items));
                    }
                    items.push(Self::value(c, i)?);
                    Self::ws(c, i);
                    if c.get(*i) == Some(&',') {
                        *i += 1;
                    }
                }
            }
            '{' => {
                *i += 1;
                let mut items = Vec::new();
                loop {
                    Self::ws(c, i);
                    match c.get(*i)? {
                        '}' => {
                            *i += 1;
                            return Some(Json::Obj(items));
                        }
                        ',' => *i += 1,
                        _ => {
                            let k = Self::string(c, i)?;
                            Self::ws(c, i);
                            (c.get(*i) == Some(&':')).then_some(())?;
                            *i += 1;
                            items.push((k, Self::value(c, i)?));
                        }
                    }
                }
            }
            _ => {
                let start = *i;
                while *i < c.len() && "+-0123456789.eE".contains(c[*i]) {
                    *i += 1;
                }
                let n: String = c[start..*i].iter().collect();
                n.parse().ok().map(Json::Num)
            }
        }
    }

    fn string(c: &[char], i: &mut usize) -> Option<String> {
        (c.get(*i) == Some(&'"')).then_some(())?;
        *i += 1;
        let mut out = String::new();
        let mut pending_high: Option<u32> = None;
        loop {
            let ch = *c.get(*i)?;
            *i += 1;
            match ch {
                '"' => return Some(out),
                '\\' => {
                    let e = *c.get(*i)?;
                    *i += 1;
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'u' => {
                            let hex: String = c.get(*i..*i + 4)?.iter().collect();
                            *i += 4;
                            let u = u32::from_str_radix(&hex, 16).ok()?;
                            match (pending_high.take(), u) {
                                (None, 0xD800..=0xDBFF) => pending_high = Some(u),
                                (Some(h), 0xDC00..=0xDFFF) => out.push(char::from_u32(
                                    0x10000 + ((h - 0xD800) << 10) + (u - 0xDC00),
                                )?),
                                (_, u) => out.push(char::from_u32(u).unwrap_or('\u{fffd}')),
                            }
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
    }

    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(items) => items
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or(&Json::Null),
            _ => &Json::Null,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out + "\""
}

// ----- WebDriver ------------------------------------------------------------------------------

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver session (W3C WebDriver over HTTP).
struct Browser<'a> {
    ns: &'a Netns,
    session: String,
}

impl<'a> Browser<'a> {
    fn start(ns: &'a Netns, profile: &Path) -> Browser<'a> {
        let chromium = common::find_in_path("chromium").expect("chromium");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1000,1450",
            &format!("--user-data-dir={}", profile.display()),
        ]
        .map(quote)
        .join(",");
        let body = format!(
            "{{\"capabilities\":{{\"alwaysMatch\":{{\"browserName\":\"chrome\",\
             \"goog:chromeOptions\":{{\"binary\":{},\"args\":[{args}]}}}}}}}}",
            quote(&chromium.to_string_lossy())
        );
        let (status, reply) = http(ns, DRIVER_PORT, "POST", "/session", &body);
        let v = Json::parse(&reply);
        let session = v.get("value").get("sessionId").str().map(String::from);
        assert!(
            status == 200 && session.is_some(),
            "chromedriver could not start chromium ({status}): {reply}"
        );
        Browser {
            ns,
            session: session.unwrap(),
        }
    }

    /// A command on the session; panics with chromedriver's message on an error.
    fn cmd(&self, method: &str, path: &str, body: &str) -> Json {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn try_cmd(&self, method: &str, path: &str, body: &str) -> Result<Json, String> {
        let url = format!("/session/{}{path}", self.session);
        let (status, reply) = http(self.ns, DRIVER_PORT, method, &url, body);
        let v = Json::parse(&reply).get("value").clone();
        if status == 200 {
            Ok(v)
        } else {
            Err(format!(
                "{status} {}: {}",
                v.get("error").str().unwrap_or("?"),
                v.get("message").str().unwrap_or(&reply)
            ))
        }
    }

    fn goto(&self, path: &str) {
        let url = format!("http://127.0.0.1:{WEB_PORT}{path}");
        self.cmd("POST", "/url", &format!("{{\"url\":{}}}", quote(&url)));
    }

    fn element(&self, css: &str) -> Result<String, String> {
        let body = format!("{{\"using\":\"css selector\",\"value\":{}}}", quote(css));
        let v = self.try_cmd("POST", "/element", &body)?;
        v.get(ELEMENT)
            .str()
            .map(String::from)
            .ok_or_else(|| format!("no element id in {v:?}"))
    }

    /// Runs `action` on the element `css`, again if the page re-rendered it in between.
    fn on_element(&self, css: &str, action: &str, body: &str) {
        let mut last = String::new();
        for _ in 0..5 {
            match self
                .element(css)
                .and_then(|id| self.try_cmd("POST", &format!("/element/{id}/{action}"), body))
            {
                Ok(_) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{action} on {css}: {last}");
    }

    /// A real mouse click on the element.
    fn click(&self, css: &str) {
        self.on_element(css, "click", "{}");
    }

    /// Clears a text field and types `text` into it with key events.
    fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "clear", "{}");
        self.on_element(css, "value", &format!("{{\"text\":{}}}", quote(text)));
    }

    /// Runs `script` (a function body) in the page; returns what it returns.
    fn js(&self, script: &str) -> Json {
        self.cmd(
            "POST",
            "/execute/sync",
            &format!("{{\"script\":{},\"args\":[]}}", quote(script)),
        )
    }

    /// Polls the page until `script` returns true; panics with `facts` (another script) then.
    fn wait_for(&self, script: &str, timeout: Duration, facts: &str, what: &str) {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.js(script) == Json::Bool(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{what}: not within {timeout:?}; the page shows {:?}",
            self.js(facts)
        );
    }

    fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", "");
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.str().expect("screenshot data"))
            .expect("screenshot base64");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self.try_cmd("DELETE", "", "");
    }
}

// ----- the sender's DACP server ---------------------------------------------------------------

/// A DACP responder in place of the sender's: records each request's head, answers 204.
struct DacpResponder {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl DacpResponder {
    fn start(ns: &Netns) -> DacpResponder {
        let listener = in_netns(ns, || TcpListener::bind("0.0.0.0:0")).expect("bind DACP");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        reqs.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).into_owned());
                        let _ = s.write_all(
                            b"HTTP/1.1 204 No Content\r\nDAAP-Server: iTunes/12.0\r\n\
                              Content-Length: 0\r\n\r\n",
                        );
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(_) => break,
                }
            }
        });
        DacpResponder {
            port,
            requests,
            stop,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for DacpResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ----- helpers --------------------------------------------------------------------------------

/// The LAN: `br-lan` in the router with its address, `eth0` in the LAN host with its own and
/// a default route to the router; multicast goes over the link, not the harness's loopback
/// route.
fn lan_link(router: &Netns, host: &Netns) {
    for ns in [router, host] {
        ns.run_ok("ip", ["route", "del", "224.0.0.0/4", "dev", "lo"]);
    }
    router.run_ok(
        "ip",
        [
            "link",
            "add",
            "br-lan",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.name(),
        ],
    );
    router.run_ok(
        "ip",
        ["addr", "add", &format!("{ROUTER_IP}/24"), "dev", "br-lan"],
    );
    router.run_ok("ip", ["link", "set", "br-lan", "up", "multicast", "on"]);
    host.run_ok(
        "ip",
        ["addr", "add", &format!("{PHONE_IP}/24"), "dev", "eth0"],
    );
    host.run_ok("ip", ["link", "set", "eth0", "up", "multicast", "on"]);
    host.run_ok("ip", ["route", "add", "default", "via", ROUTER_IP]);
}

/// Starts `program args` in `ns` for the rest of the test, output to `log`.
fn spawn_in(ns: &Netns, program: &str, args: &[&str], env: &[(&str, &str)], log: &Path) {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = ns.command(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child: Child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    ns.adopt(child);
}

fn wait_for_file(path: &Path, what: &str, timeout: Duration, cond: impl Fn(&str) -> bool) {
    assert!(
        common::wait_until(timeout, || std::fs::read_to_string(path)
            .map(|s| cond(&s))
            .unwrap_or(false)),
        "{what}: not within {timeout:?}; {}:\n{}",
        path.display(),
        common::tail_of_file(path, 4000)
    );
}

/// Undoes avahi-browse's escapes in a parsable-output field: `\DDD` (a decimal byte value)
/// and `\X` (the character X).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let digits = b
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(u8::is_ascii_digit))
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.parse::<u8>().ok());
            match digits {
                Some(v) => {
                    out.push(v);
                    i += 4;
                }
                None => {
                    out.push(b[i + 1]);
                    i += 2;
                }
            }
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The speaker names (after `MAC@`) avahi-browse resolves for `_raop._tcp` in `ns`.
fn raop_names(ns: &Netns, bus: &str) -> Vec<String> {
    let out = ns
        .command("avahi-browse")
        .args(["-kprt", "_raop._tcp"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .output()
        .expect("run avahi-browse");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('='))
        .filter_map(|l| l.split(';').nth(3).map(unescape))
        .filter_map(|n| n.split_once('@').map(|(_, name)| name.to_string()))
        .collect()
}

/// The instance the server's procd stand-in runs: (pid, argv).
fn instance(state: &Path) -> (i64, Vec<String>) {
    let v = Json::parse(&std::fs::read_to_string(state.join("instance.json")).unwrap());
    let pid = match v.get("pid") {
        Json::Num(n) => *n as i64,
        _ => 0,
    };
    let argv = match v.get("argv") {
        Json::Arr(a) => a.iter().filter_map(|x| x.str().map(String::from)).collect(),
        _ => Vec::new(),
    };
    (pid, argv)
}

fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("luci-browser");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What the page shows, for failure messages.
const FACTS: &str = "const t = s => { const e = document.querySelector(s); return e ? e.textContent : null; };\
     return { state: t('#raopd-status [data-raopd=state]'), name: t('#raopd-status [data-raopd=name]'),\
     title: t('#raopd-status [data-raopd=title]'), view: t('#view').slice(0, 300),\
     notes: t('#notifications'), errors: window.__errors };";

#[test]
fn luci_page_in_chromium_shows_pauses_and_renames_the_speaker() {
    common::require_env();
    for tool in [
        "chromium",
        "chromedriver",
        "python3",
        "unshare",
        "avahi-daemon",
        "avahi-browse",
        "avahi-publish",
        "dbus-daemon",
    ] {
        assert!(
            common::find_in_path(tool).is_some(),
            "{tool} missing: run scripts/setup-test-deps.sh (chromium chromium-driver avahi-utils)"
        );
    }
    let _serial = common::serial();
    let dir = TestDir::new("luci-browser");
    let repo = common::repo_dir();
    let router = Netns::new();
    let phone = Netns::new();
    lan_link(&router, &phone);
    let bus = phone.start_avahi_on("eth0");

    // The router: a copy of the shipped UCI file, the sound card swapped for a pipe.
    let uci = dir.join("config");
    let state = dir.join("state");
    std::fs::create_dir_all(&uci).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let shipped = std::fs::read_to_string(repo.join("board/openwrt/raopd/files/raopd.config"))
        .expect("shipped UCI file");
    let config = shipped
        .replace(
            "option name 'OpenWrt'",
            &format!("option name '{OLD_NAME}'"),
        )
        .replace(
            "option output 'alsa:default'",
            "option output 'pipe:/dev/null'",
        )
        .replace("option log_level 'warn'", "option log_level 'debug'");
    assert!(
        config.contains(OLD_NAME)
            && config.contains("pipe:/dev/null")
            && config.contains("'debug'")
    );
    std::fs::write(uci.join("raopd"), config).unwrap();
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let server_args = [
        "-m".to_string(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        "mount -t tmpfs none /run && exec \"$0\" \"$@\"".into(),
        "python3".into(),
        p(&repo.join("tests/luci/server.py")),
        format!("--port={WEB_PORT}"),
        format!("--app={}", p(&repo.join("board/openwrt/luci-app-raopd"))),
        format!("--openwrt-root={}", p(&repo.join("tests/openwrt/root"))),
        format!(
            "--init={}",
            p(&repo.join("board/openwrt/raopd/files/raopd.init"))
        ),
        format!("--uci-dir={}", p(&uci)),
        format!("--raopd-bin={}", env!("CARGO_BIN_EXE_raopd")),
        format!("--state-dir={}", p(&state)),
        // netifd's answer for `list interface 'lan'`.
        "--network-devices=lan=br-lan".into(),
    ];
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let server_log = dir.join("server.log");
    spawn_in(&router, "unshare", &server_args, &[], &server_log);
    let raopd_log = state.join("raopd.log");
    let _log = common::LogOnPanic(raopd_log.clone());
    assert!(
        common::wait_until(Duration::from_secs(20), || router.tcp_listening(WEB_PORT)
            && router.tcp_listening(RAOP_PORT)),
        "server or raopd not up:\n{}",
        common::tail_of_file(&server_log, 4000)
    );
    let (first_pid, argv) = instance(&state);
    assert!(first_pid > 0, "no instance: {argv:?}");
    assert!(
        argv.windows(2).any(|w| w == ["--name", OLD_NAME])
            && argv.windows(2).any(|w| w == ["--interface", "br-lan"]),
        "init script's command line: {argv:?}"
    );

    // The sender's DACP server, announced as the sender would.
    let dacp = DacpResponder::start(&phone);
    let publish_log = dir.join("avahi-publish.log");
    let dacp_port = dacp.port.to_string();
    let service = format!("iTunes_Ctrl_{DACP_ID}");
    spawn_in(
        &phone,
        "avahi-publish",
        &["-s", &service, "_dacp._tcp", &dacp_port],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus)],
        &publish_log,
    );
    wait_for_file(
        &publish_log,
        "avahi-publish",
        Duration::from_secs(10),
        |s| s.contains("Established"),
    );

    // The browser.
    spawn_in(
        &router,
        "chromedriver",
        &[&format!("--port={DRIVER_PORT}")],
        &[],
        &dir.join("chromedriver.log"),
    );
    assert!(
        common::wait_until(Duration::from_secs(10), || router
            .tcp_listening(DRIVER_PORT)),
        "chromedriver did not listen:\n{}",
        common::tail_of_file(&dir.join("chromedriver.log"), 2000)
    );
    let browser = Browser::start(&router, &dir.join("chromium-profile"));

    // A real sender streams with metadata and remote-control headers.
    let wav = dir.join("noise.wav");
    audio::make_noise_wav(&wav, 10.0, 1.0);
    let opts = PyatvOpts {
        title: Some(TITLE.into()),
        artist: Some("Ørkestra".into()),
        album: Some("Tests".into()),
        dacp_id: Some(DACP_ID.into()),
        active_remote: Some(ACTIVE_REMOTE),
        ..PyatvOpts::default()
    };
    let sender_dir = dir.join("sender");
    std::fs::create_dir_all(&sender_dir).unwrap();
    let sender = senders::pyatv_spawn(&phone, ROUTER_IP, RAOP_PORT, &wav, &sender_dir, &opts);

    browser.goto(PAGE);
    browser.wait_for(
        &format!(
            "const t = s => {{ const e = document.querySelector(s); return e ? e.textContent : null; }};\
             return t('#raopd-status [data-raopd=state]') === 'playing'\
             && t('#raopd-status [data-raopd=name]') === {}\
             && t('#raopd-status [data-raopd=title]') !== '-';",
            quote(OLD_NAME)
        ),
        Duration::from_secs(15),
        FACTS,
        "speaker name, \"playing\" and a title",
    );
    assert_eq!(
        browser.js(
            "return [...document.querySelectorAll('#view h2')].map(h => h.textContent).join('|');"
        ),
        Json::Str("AirPlay speaker".into()),
        "the page's headings"
    );
    // The title exactly as sent, its markup as text: no element was made from it.
    assert_eq!(
        browser.js(
            "return document.querySelector('#raopd-status [data-raopd=title]').textContent\
             + '|' + document.querySelectorAll('#view i').length;"
        ),
        Json::Str(format!("{TITLE}|0")),
        "the sender's title (and how many <i> elements the page has)"
    );

    // The daemon's uptime, as `raopd status` reports it.
    let uptime = browser
        .js("return document.querySelector('#raopd-status [data-raopd=uptime]').textContent;");
    assert!(
        matches!(&uptime, Json::Str(u) if u.ends_with('s') && u.contains("h ") && u.contains("m ")),
        "uptime shown as {uptime:?}"
    );

    // Pause: button → ubus → rpcd backend → raopd ctl → DACP to the sender.
    let pause = "button[data-raopd-command=pause]";
    browser.wait_for(
        &format!("const b = document.querySelector('{pause}'); return !!b && !b.disabled;"),
        Duration::from_secs(6),
        FACTS,
        "an enabled Pause button",
    );
    browser.click(pause);
    assert!(
        common::wait_until(Duration::from_secs(10), || !dacp.requests().is_empty()),
        "no DACP request reached the sender's DACP server; server log:\n{}",
        common::tail_of_file(&server_log, 3000)
    );
    browser.wait_for(
        "return window.__luciPending === 0;",
        Duration::from_secs(10),
        FACTS,
        "the Pause click's reply",
    );
    let notes = browser.js("return document.getElementById('notifications').textContent;");
    let shots = shots_dir();
    browser.screenshot(&shots.join("playing.png"));
    let requests = dacp.requests();
    let first = &requests[0];
    assert!(
        first.starts_with("GET /ctrl-int/1/pause HTTP/1.1\r\n"),
        "DACP request: {first:?}"
    );
    assert!(
        first
            .lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("Active-Remote: {ACTIVE_REMOTE}"))),
        "DACP request without the sender's Active-Remote: {first:?}"
    );
    assert_eq!(requests.len(), 1, "one click, one request: {requests:?}");
    assert_eq!(
        notes,
        Json::Str(String::new()),
        "the page reported a failure"
    );
    sender.wait().assert_ok();

    // Rename through the form: Save & Apply → uci set/apply → init script → new raopd.
    let name_field = "input[name='cbid.raopd.main.name']";
    browser.type_into(name_field, NEW_NAME);
    browser.click(".cbi-page-actions .cbi-button-apply");
    assert!(
        common::wait_until(Duration::from_secs(15), || {
            let (pid, argv) = instance(&state);
            pid > 0 && pid != first_pid && argv.windows(2).any(|w| w == ["--name", NEW_NAME])
        }),
        "raopd was not restarted under the new name: {:?}\n{}",
        instance(&state),
        common::tail_of_file(&server_log, 3000)
    );
    let committed = std::fs::read_to_string(uci.join("raopd")).unwrap();
    assert!(
        committed.contains(&format!("option name '{NEW_NAME}'"))
            && committed.contains("list interface 'lan'")
            && !committed.contains(OLD_NAME),
        "UCI file after apply:\n{committed}"
    );
    let t0 = Instant::now();
    let mut names = Vec::new();
    while t0.elapsed() < Duration::from_secs(15) {
        names = raop_names(&phone, &bus);
        if names.iter().any(|n| n == NEW_NAME) && !names.iter().any(|n| n == OLD_NAME) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        names.iter().any(|n| n == NEW_NAME) && !names.iter().any(|n| n == OLD_NAME),
        "mDNS after the rename lists {names:?}"
    );
    // The page reloads after applying and shows the renamed speaker.
    browser.wait_for(
        &format!(
            "const e = document.querySelector(\"{name_field}\"),\
                   n = document.querySelector('#raopd-status [data-raopd=name]');\
             return !!e && e.value === {0} && !!n && n.textContent === {0};",
            quote(NEW_NAME)
        ),
        Duration::from_secs(15),
        FACTS,
        "the new name in the form and the status",
    );
    browser.screenshot(&shots.join("renamed.png"));
    assert_eq!(
        browser.js("return window.__errors;"),
        Json::Arr(Vec::new()),
        "JavaScript errors on the page"
    );

    // The status overview card.
    browser.goto("/cgi-bin/luci/admin/status/overview");
    browser.wait_for(
        &format!(
            "const e = document.querySelector('[data-raopd=name]'); return !!e && e.textContent === {};",
            quote(NEW_NAME)
        ),
        Duration::from_secs(10),
        FACTS,
        "the status card with the new name",
    );
    browser.screenshot(&shots.join("overview.png"));
    assert_eq!(
        browser.js("return window.__errors;"),
        Json::Arr(Vec::new()),
        "JavaScript errors on the overview page"
    );
    eprintln!("screenshots in {}", shots.display());
}
