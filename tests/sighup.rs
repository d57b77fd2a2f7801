//! SIGHUP on a running daemon reloads what can be reloaded (README, Decisions): mDNS
//! re-reads the interfaces at once, and the output is probed and its state logged. The
//! daemon keeps serving RTSP afterwards.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::daemon::Daemon;
use common::netns::{self, Netns};
use common::TestDir;

const PORT: u16 = 5451;

fn options_status(ns: &Netns) -> String {
    let path = format!("/var/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on this thread only; the fd is valid for the call.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0);
        let mut s = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
    .join()
    .unwrap()
}

#[test]
fn sighup_rereads_interfaces_and_checks_the_output_and_the_daemon_serves_on() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("sighup");
    let ns = Netns::new();
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        PORT,
        &["--name", "hup", "--output", "stdout"],
    );
    netns::signal(raopd.pid(), libc::SIGHUP);
    let reloaded = common::wait_until(Duration::from_secs(5), || {
        let log = raopd.log();
        log.contains("mdns: re-reading interfaces") && log.contains("output stdout works")
    });
    assert!(
        raopd.is_running(),
        "SIGHUP ended the daemon:\n{}",
        raopd.log_tail()
    );
    assert!(reloaded, "no reload after SIGHUP:\n{}", raopd.log_tail());
    assert!(options_status(&ns).starts_with("RTSP/1.0 200"));
    // A second SIGHUP is handled the same way, and SIGTERM still ends it cleanly.
    netns::signal(raopd.pid(), libc::SIGHUP);
    let twice = common::wait_until(Duration::from_secs(5), || {
        raopd.log().matches("mdns: re-reading interfaces").count() == 2
    });
    assert!(twice, "{}", raopd.log_tail());
    let status = raopd.stop();
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        raopd.log_tail()
    );
}
