//! The mDNS responder against real peers: avahi-daemon (through avahi-browse) and
//! python-zeroconf, all inside a private network namespace whose loopback carries multicast.
//!
//! Needs root (network namespaces, mounts) and the Debian packages avahi-daemon, avahi-utils,
//! dbus, iproute2 and python3-venv; zeroconf is installed from PyPI into a venv under the
//! target directory on first use. Missing tools fail the tests with a message saying what to
//! install. Set RAOPD_SKIP_NETNS_TESTS=1 to skip them explicitly (the skip is printed).
//!
//! With RAOPD_MDNS_TCPDUMP=1 (and tcpdump installed) each namespace also records its mDNS
//! traffic to `tcpdump.log` in its directory under the target dir's `tmp/`, which is kept when
//! a test fails.
//!
//! The responder under test runs in a child process (this test binary re-executed in the
//! namespace, see `helper_responder`), so that SIGTERM and the goodbye it triggers are real.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const HELPER_ENV: &str = "RAOPD_MDNS_TEST_HELPER";

// ----- the responder process -----

/// Not a test: the body of the responder child process. The other tests start this binary with
/// `--ignored --exact helper_responder` and the helper environment set; run on its own it
/// returns at once.
#[test]
#[ignore = "child process of the namespace tests"]
fn helper_responder() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let mac_hex = var("MDNS_MAC");
    let mut mac = [0u8; 6];
    for (i, b) in mac.iter_mut().enumerate() {
        *b = u8::from_str_radix(&mac_hex[2 * i..2 * i + 2], 16).expect("MDNS_MAC hex");
    }
    let service = raopd::mdns::Service {
        instance_name: var("MDNS_NAME"),
        mac,
        port: var("MDNS_PORT").parse().expect("MDNS_PORT"),
        txt: raopd::mdns::raop_txt(false, "0.1.0-test"),
        hostname: String::new(),
        addrs: Vec::new(),
    };
    let _ = env_logger::builder().is_test(false).try_init();
    let mut signals = raopd::reactor::Signals::new(&[libc::SIGTERM]).expect("catch SIGTERM");
    let term = async move {
        let _ = signals.next().await;
    };
    raopd::reactor::block_on(raopd::mdns::run(service, Vec::new(), term, |_, _| {}, None))
        .expect("mdns run");
}

// ----- namespace fixture -----

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace with a private dbus-daemon and avahi-daemon; everything it started is
/// killed and the namespace deleted on drop, also when a test fails.
struct Netns {
    name: String,
    dir: PathBuf,
    /// Started processes, stopped in reverse order.
    children: Vec<(String, Child)>,
}

fn require_environment() -> bool {
    if std::env::var_os("RAOPD_SKIP_NETNS_TESTS").is_some() {
        eprintln!("SKIPPED: RAOPD_SKIP_NETNS_TESTS is set; mDNS namespace test not run");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the mDNS namespace tests need root (ip netns, mount); set RAOPD_SKIP_NETNS_TESTS=1 to skip"
    );
    for tool in [
        "ip",
        "unshare",
        "dbus-daemon",
        "avahi-daemon",
        "avahi-browse",
        "avahi-publish",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            found,
            "{tool} not found: apt-get install avahi-daemon avahi-utils dbus iproute2 util-linux"
        );
    }
    true
}

fn run_cmd(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Netns {
    fn up() -> Netns {
        let name = format!(
            "raopd-mdns-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        run_cmd(Command::new("ip").args(["netns", "add", &name]));
        // From here on Drop cleans up.
        let mut ns = Netns {
            name,
            dir,
            children: Vec::new(),
        };
        ns.ip(&["link", "set", "lo", "up", "multicast", "on"]);
        ns.ip(&["route", "add", "224.0.0.0/4", "dev", "lo"]);
        if std::env::var_os("RAOPD_MDNS_TCPDUMP").is_some() {
            let mut c = ns.exec("tcpdump");
            c.args(["-i", "lo", "-n", "-vv", "-l", "udp port 5353"]);
            ns.spawn("tcpdump", c);
        }
        ns.start_dbus();
        ns.start_avahi();
        ns
    }

    fn ip(&self, args: &[&str]) {
        run_cmd(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c.env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address());
        c
    }

    fn bus_address(&self) -> String {
        format!("unix:path={}", self.dir.join("dbus.sock").display())
    }

    fn spawn(&mut self, label: &str, mut cmd: Command) -> u32 {
        let log = fs::File::create(self.dir.join(format!("{label}.log"))).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let pid = child.id();
        self.children.push((label.to_string(), child));
        pid
    }

    fn log(&self, label: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{label}.log"))).unwrap_or_default()
    }

    fn start_dbus(&mut self) {
        let sock = self.dir.join("dbus.sock");
        let conf = self.dir.join("dbus.conf");
        fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/> <allow own="*"/> <allow send_type="method_call"/>
    <allow send_destination="*" eavesdrop="true"/> <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
                sock.display()
            ),
        )
        .expect("dbus.conf");
        let mut cmd = self.exec("dbus-daemon");
        cmd.arg(format!("--config-file={}", conf.display())).args([
            "--nofork",
            "--nopidfile",
            "--nosyslog",
        ]);
        self.spawn("dbus", cmd);
        assert!(
            wait_until(Duration::from_secs(5), || sock.exists()),
            "dbus-daemon did not start: {}",
            self.log("dbus")
        );
    }

    fn start_avahi(&mut self) {
        let conf = self.dir.join("avahi.conf");
        fs::write(
            &conf,
            "[server]\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=lo\n\
             ratelimit-interval-usec=1000000\nratelimit-burst=1000\nenable-dbus=yes\n\
             [wide-area]\nenable-wide-area=no\n\
             [publish]\npublish-hinfo=no\npublish-workstation=no\n",
        )
        .expect("avahi.conf");
        // A private mount namespace with a tmpfs on /run/avahi-daemon keeps this daemon's pid
        // file and socket apart from any avahi-daemon of the host.
        let mut cmd = self.exec("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mkdir -p /run/avahi-daemon && mount -t tmpfs none /run/avahi-daemon && \
                 exec avahi-daemon -f \"$0\" --no-drop-root --no-chroot --no-rlimits",
            )
            .arg(&conf);
        self.spawn("avahi", cmd);
        assert!(
            wait_until(Duration::from_secs(10), || self
                .log("avahi")
                .contains("Server startup complete")),
            "avahi-daemon did not start: {}",
            self.log("avahi")
        );
    }

    /// Starts the responder under test; returns its pid.
    fn start_responder(&mut self, label: &str, name: &str, mac: &str, port: u16) -> u32 {
        let exe = std::env::current_exe().expect("test binary path");
        let mut cmd = self.exec(exe.to_str().expect("utf-8 path"));
        cmd.args(["--ignored", "--exact", "helper_responder", "--nocapture"])
            .env(HELPER_ENV, "1")
            .env("MDNS_NAME", name)
            .env("MDNS_MAC", mac)
            .env("MDNS_PORT", port.to_string())
            .env("RUST_LOG", "debug");
        self.spawn(label, cmd)
    }

    fn child(&mut self, label: &str) -> &mut Child {
        &mut self
            .children
            .iter_mut()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("no child {label}"))
            .1
    }

    fn signal(&mut self, label: &str, sig: libc::c_int) {
        let pid = self.child(label).id() as libc::pid_t;
        // SAFETY: signalling a child we started and have not reaped.
        unsafe { libc::kill(pid, sig) };
    }

    fn wait_exit(&mut self, label: &str, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child(label).try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < end,
                "{label} did not exit: {}",
                self.log(label)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `avahi-browse -pt[r] TYPE` lines, split into fields (names unescaped).
    fn browse(&self, resolve: bool) -> Vec<Vec<String>> {
        let mut cmd = self.exec("avahi-browse");
        cmd.arg(if resolve { "-kprt" } else { "-kpt" })
            .arg("_raop._tcp");
        let out = run_cmd(&mut cmd);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split(';').map(unescape).collect())
            .collect()
    }

    /// Instance names that avahi lists for `_raop._tcp`.
    fn instances(&self) -> Vec<String> {
        self.browse(false)
            .into_iter()
            .filter(|f| f.len() > 3 && f[0] == "+")
            .map(|f| f[3].clone())
            .collect()
    }

    /// The resolved avahi entry (`=` line) of one instance.
    fn resolved(&self, instance: &str) -> Option<Vec<String>> {
        self.browse(true)
            .into_iter()
            .find(|f| f.len() > 9 && f[0] == "=" && f[3] == instance)
    }

    fn wait_resolved(&self, instance: &str) -> Vec<String> {
        let mut found = None;
        wait_until(Duration::from_secs(15), || {
            found = self.resolved(instance);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "avahi-browse never resolved {instance}; it lists {:?}",
                self.instances()
            )
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        while let Some((_, mut child)) = self.children.pop() {
            // SAFETY: signalling a child we started; reaped right below.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(3);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
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
                .and_then(|d| std::str::from_utf8(d).ok());
            if let Some(v) = digits.and_then(|d| d.parse::<u8>().ok()) {
                out.push(v);
                i += 4;
            } else {
                out.push(b[i + 1]);
                i += 2;
            }
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn assert_txt(resolved: &[String]) {
    let txt = &resolved[9];
    for kv in [
        "txtvers=1",
        "ch=2",
        "cn=0,1",
        "et=0,1",
        "ek=1",
        "md=0,1,2",
        "pw=false",
        "sr=44100",
        "ss=16",
        "tp=UDP",
        "vn=3",
        "sv=false",
        "sm=false",
        "am=raopd",
        "vs=0.1.0-test",
    ] {
        assert!(txt.contains(&format!("\"{kv}\"")), "TXT lacks {kv}: {txt}");
    }
}

// ----- python-zeroconf -----

fn zeroconf_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mdns-zeroconf-venv");
    let python = venv.join("bin/python");
    let ok = |p: &Path| {
        Command::new(p)
            .args(["-c", "import zeroconf"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !ok(&python) {
        let venv_made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            venv_made,
            "python3 -m venv failed: apt-get install python3-venv"
        );
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "zeroconf"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            pip && ok(&python),
            "pip install zeroconf into {} failed",
            venv.display()
        );
    }
    python
}

// ----- the tests -----

#[test]
fn avahi_and_zeroconf_find_the_speaker_and_goodbye_removes_it_at_once() {
    if !require_environment() {
        return;
    }
    let python = zeroconf_python();
    let mut ns = Netns::up();
    ns.start_responder("kitchen", "Kitchen", "AABBCCDDEEFF", 5000);

    let r = ns.wait_resolved("AABBCCDDEEFF@Kitchen");
    // =;lo;IPv4;NAME;TYPE;DOMAIN;HOST;ADDRESS;PORT;TXT
    assert_eq!(r[4], "_raop._tcp");
    assert_eq!(r[6], "raopd-aabbccddeeff.local");
    assert_eq!(r[7], "127.0.0.1");
    assert_eq!(r[8], "5000");
    assert_txt(&r);

    // python-zeroconf: browse and resolve.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/senders/zeroconf_resolve.py");
    let mut cmd = ns.exec(python.to_str().expect("path"));
    cmd.arg(&script)
        .arg("AABBCCDDEEFF@Kitchen._raop._tcp.local.");
    let out = run_cmd(&mut cmd);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        json.contains(r#""seen": ["AABBCCDDEEFF@Kitchen._raop._tcp.local."]"#),
        "zeroconf did not browse the service: {json}"
    );
    assert!(json.contains(r#""port": 5000"#), "zeroconf port: {json}");
    assert!(
        json.contains(r#""server": "raopd-aabbccddeeff.local.""#),
        "zeroconf host: {json}"
    );
    assert!(
        json.contains(r#""addresses": ["127.0.0.1"]"#),
        "zeroconf address: {json}"
    );
    for kv in [
        r#""am": "raopd""#,
        r#""tp": "UDP""#,
        r#""cn": "0,1""#,
        r#""pw": "false""#,
    ] {
        assert!(json.contains(kv), "zeroconf TXT lacks {kv}: {json}");
    }

    // A second speaker that will be killed without a goodbye, for comparison.
    ns.start_responder("bedroom", "Bedroom", "112233445566", 5001);
    ns.wait_resolved("112233445566@Bedroom");

    // SIGTERM: goodbye packet, clean exit, gone from avahi's cache at once (its TTL is 75 min).
    ns.signal("kitchen", libc::SIGTERM);
    let status = ns.wait_exit("kitchen", Duration::from_secs(5));
    assert!(
        status.success(),
        "responder exit {status:?}: {}",
        ns.log("kitchen")
    );
    assert!(
        wait_until(Duration::from_secs(3), || !ns
            .instances()
            .contains(&"AABBCCDDEEFF@Kitchen".to_string())),
        "Kitchen still listed 3 s after SIGTERM: {:?}",
        ns.instances()
    );

    // SIGKILL: no goodbye, so the entry stays cached.
    ns.signal("bedroom", libc::SIGKILL);
    let status = ns.wait_exit("bedroom", Duration::from_secs(5));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        ns.instances().contains(&"112233445566@Bedroom".to_string()),
        "without a goodbye the entry should stay cached: {:?}",
        ns.instances()
    );
}

#[test]
fn name_conflicts_rename_the_speaker() {
    if !require_environment() {
        return;
    }
    let mut ns = Netns::up();
    // avahi already publishes the name, on another port.
    let mut publish = ns.exec("avahi-publish");
    publish.args([
        "-s",
        "AABBCCDDEEFF@Kitchen",
        "_raop._tcp",
        "6000",
        "am=other",
    ]);
    ns.spawn("publish", publish);
    let r = ns.wait_resolved("AABBCCDDEEFF@Kitchen");
    assert_eq!(r[8], "6000");

    ns.start_responder("first", "Kitchen", "AABBCCDDEEFF", 5000);
    let r = ns.wait_resolved("AABBCCDDEEFF@Kitchen (2)");
    assert_eq!(r[8], "5000", "the renamed instance is ours");
    assert_txt(&r);

    // A second raopd with the same name on the same board: next free number.
    ns.start_responder("second", "Kitchen", "AABBCCDDEEFF", 5002);
    let r = ns.wait_resolved("AABBCCDDEEFF@Kitchen (3)");
    assert_eq!(r[8], "5002");

    // avahi's own entry and the first speaker were not displaced.
    let all = ns.browse(true);
    let port_of = |inst: &str| {
        all.iter()
            .find(|f| f.len() > 9 && f[0] == "=" && f[3] == inst)
            .map(|f| f[8].clone())
    };
    assert_eq!(port_of("AABBCCDDEEFF@Kitchen").as_deref(), Some("6000"));
    assert_eq!(port_of("AABBCCDDEEFF@Kitchen (2)").as_deref(), Some("5000"));
}
