//! A private network namespace per test.
//!
//! Senders and the daemon under test share the namespace's loopback: no test sees another test's
//! ports or multicast, and nothing reaches the host's network. Every process started in the
//! namespace belongs to the test, so dropping the guard can kill all of them by namespace
//! membership and then delete the namespace, whatever state the test panicked in.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::wait_until;

/// Namespace names are `raopd-t<pid of the test process>-<n>`; the pid lets a later run find and
/// remove namespaces left behind by a test process that was killed before it could clean up.
const PREFIX: &str = "raopd-t";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A uniquely named network namespace with loopback up and multicast routed over it; deleted,
/// with every process inside it, on drop.
pub struct Netns {
    name: String,
    runtime_dir: PathBuf,
    /// Long-running helpers started by the harness itself, reaped on drop.
    helpers: Mutex<Vec<Child>>,
}

impl Netns {
    /// Creates the namespace: `lo` up with multicast on and a 224.0.0.0/4 route via `lo`, which
    /// mDNS inside a namespace needs (there is no other interface to carry multicast).
    pub fn new() -> Netns {
        remove_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        // A short runtime dir for unix sockets (sun_path is limited to 108 bytes).
        let runtime_dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&runtime_dir);
        std::fs::create_dir_all(&runtime_dir).expect("create namespace runtime dir");
        let ns = Netns {
            name,
            runtime_dir,
            helpers: Mutex::new(Vec::new()),
        };
        ns.run_ok("ip", ["link", "set", "lo", "up", "multicast", "on"]);
        ns.run_ok("ip", ["route", "replace", "224.0.0.0/4", "dev", "lo"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A private directory with a short path, removed with the namespace.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which execs the
    /// program in place: the child's pid is the program's pid).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args` inside the namespace to completion, output captured.
    pub fn run<I, S>(&self, program: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }

    /// Like [`Netns::run`], but panics unless the program succeeds; returns its stdout.
    pub fn run_ok<I, S>(&self, program: &str, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        run_checked(&mut cmd)
    }

    /// Whether something in the namespace listens on TCP `port` (any address).
    pub fn tcp_listening(&self, port: u16) -> bool {
        let out = self.run("ss", ["-Hltn", "sport", "=", &format!(":{port}")]);
        out.status.success() && !out.stdout.is_empty()
    }

    /// The UDP sockets in the namespace with their owning processes (`ss -Hunap`), for
    /// diagnostics and for finding the ports a daemon picked.
    pub fn udp_sockets(&self) -> String {
        String::from_utf8_lossy(&self.run("ss", ["-Hunap"]).stdout).into_owned()
    }

    /// The pids of all processes in the namespace.
    pub fn pids(&self) -> Vec<i32> {
        ns_pids(&self.name)
    }

    /// Hands a long-running child over to the namespace: it is killed (with everything else in
    /// the namespace) and reaped when the namespace is dropped.
    pub fn adopt(&self, child: Child) {
        self.helpers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
    }

    /// Starts a private dbus system bus and avahi-daemon inside the namespace, for mDNS tests
    /// and for receivers (shairport-sync) that publish through avahi. Returns the value for
    /// `DBUS_SYSTEM_BUS_ADDRESS`. Both processes end with the namespace.
    ///
    /// avahi-daemon runs in a private mount namespace with a tmpfs on /run/avahi-daemon, so its
    /// pid file and socket cannot clash with a host avahi-daemon or another test's.
    pub fn start_avahi(&self) -> String {
        self.start_avahi_on("lo")
    }

    /// [`Netns::start_avahi`] with avahi-daemon on the interfaces listed in `ifaces`
    /// (comma-separated, avahi's `allow-interfaces`) instead of loopback.
    pub fn start_avahi_on(&self, ifaces: &str) -> String {
        let dir = &self.runtime_dir;
        let socket = dir.join("dbus.sock");
        let conf = dir.join("dbus.conf");
        std::fs::write(
            &conf,
            DBUS_CONF.replace("@SOCKET@", &socket.to_string_lossy()),
        )
        .expect("write dbus config");
        self.run_ok(
            "dbus-daemon",
            [
                format!("--config-file={}", conf.display()),
                "--fork".to_string(),
            ],
        );
        assert!(
            wait_until(Duration::from_secs(5), || socket.exists()),
            "dbus-daemon in {} did not create {}",
            self.name,
            socket.display()
        );
        let bus = format!("unix:path={}", socket.display());

        let avahi_conf = dir.join("avahi-daemon.conf");
        std::fs::write(&avahi_conf, AVAHI_CONF.replace("@IFACES@", ifaces))
            .expect("write avahi config");
        let log = dir.join("avahi.log");
        let log_file = std::fs::File::create(&log).expect("create avahi log");
        let script = "mkdir -p /run/avahi-daemon && mount -t tmpfs none /run/avahi-daemon && \
                      exec avahi-daemon -f \"$0\" --no-drop-root --no-chroot --no-rlimits";
        let avahi = self
            .command("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script])
            .arg(&avahi_conf)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("start avahi-daemon");
        self.adopt(avahi);
        let started = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .map(|s| s.contains("Server startup complete"))
                .unwrap_or(false)
        });
        assert!(
            started,
            "avahi-daemon did not start in {}:\n{}",
            self.name,
            super::tail_of_file(&log, 4000)
        );
        bus
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        for mut child in self
            .helpers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

/// Runs `cmd` to completion; panics with its output unless it succeeds. Returns stdout.
pub fn run_checked(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ns_pids(name: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGTERM to everything in namespace `name`, then SIGKILL to what is left after 3 s.
fn kill_all_in(name: &str) {
    let pids = ns_pids(name);
    if pids.is_empty() {
        return;
    }
    for &pid in &pids {
        signal(pid, libc::SIGTERM);
    }
    wait_until(Duration::from_secs(3), || ns_pids(name).is_empty());
    for pid in ns_pids(name) {
        signal(pid, libc::SIGKILL);
    }
    wait_until(Duration::from_secs(2), || ns_pids(name).is_empty());
}

/// Sends `sig` to `pid`; a process that is already gone is not an error. Returns whether the
/// signal was sent.
pub fn signal(pid: i32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Deletes namespaces of this harness whose test process no longer exists.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(owner) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        kill_all_in(name);
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(name));
    }
}

const DBUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=@SOCKET@</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#;

/// The given interfaces only (loopback by default), IPv4 only, no rate limit that would slow the tests' bursts of queries.
const AVAHI_CONF: &str = "[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=@IFACES@
ratelimit-interval-usec=1000000
ratelimit-burst=1000
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
[reflector]
[rlimits]
";

/// Runs `f` on a thread that has joined `ns`'s network namespace (setns(2) changes only the
/// calling thread), for test code that opens its own sockets there.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{}", ns.name());
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) with a valid namespace fd; it changes only this thread.
            let r =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread panicked")
    })
}
