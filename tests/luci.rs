//! luci-app-raopd: the JS parses, the menu/ACL/ucitrack JSON is valid, the ACL, the view's
//! RPC declarations and the rpcd backend name the same methods, and the backend talks to a
//! real raopd without ever handing the request to a shell.
//!
//! Needs node (Debian's `nodejs`, installed by scripts/setup-test-deps.sh); fails without it.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn app() -> PathBuf {
    common::repo_dir().join("board/openwrt/luci-app-raopd")
}

fn node() -> PathBuf {
    common::find_in_path("node").expect("node missing: run scripts/setup-test-deps.sh (nodejs)")
}

/// Runs a node script with `args`, returns stdout; panics on failure.
fn node_eval(script: &str, args: &[&Path]) -> String {
    let out = Command::new(node())
        .arg("-e")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn js_files() -> Vec<PathBuf> {
    let base = app().join("htdocs/luci-static/resources/view");
    vec![
        base.join("raopd/raopd.js"),
        base.join("status/include/60_raopd.js"),
    ]
}

#[test]
fn js_parses_and_json_agrees_with_the_backend() {
    for f in js_files() {
        let out = Command::new(node())
            .arg("--check")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let root = app().join("root/usr/share");
    let menu = root.join("luci/menu.d/luci-app-raopd.json");
    let acl = root.join("rpcd/acl.d/luci-app-raopd.json");
    let ucitrack = root.join("ucitrack/luci-app-raopd.json");
    // Menu: a view whose file exists, guarded by the ACL this package ships.
    let menu_facts = node_eval(
        "const fs=require('fs');const m=JSON.parse(fs.readFileSync(process.argv[1]));\
         const a=JSON.parse(fs.readFileSync(process.argv[2]));\
         const e=m['admin/services/raopd'];\
         console.log([e.action.type,e.action.path,e.depends.acl.every(x=>x in a)].join(' '))",
        &[&menu, &acl],
    );
    assert_eq!(menu_facts, "view raopd/raopd true");
    assert!(app()
        .join("htdocs/luci-static/resources/view/raopd/raopd.js")
        .is_file());
    let track = node_eval(
        "const t=JSON.parse(require('fs').readFileSync(process.argv[1]));\
         console.log(t.config+' '+t.init)",
        &[&ucitrack],
    );
    assert_eq!(track, "raopd raopd");
    // ACL methods (read + write) = backend's `list` = the methods the JS declares.
    let mut acl_methods: Vec<String> = node_eval(
        "const a=JSON.parse(require('fs').readFileSync(process.argv[1]))['luci-app-raopd'];\
         console.log([...(a.read.ubus['luci.raopd']||[]),...(a.write.ubus['luci.raopd']||[])].join(' '));\
         if(JSON.stringify(a.read.uci)!=='[\"raopd\"]'||JSON.stringify(a.write.uci)!=='[\"raopd\"]')process.exit(1);\
         if(Object.keys(a.read.ubus).length!==1||Object.keys(a.write.ubus).length!==1)process.exit(1)",
        &[&acl],
    )
    .split_whitespace()
    .map(String::from)
    .collect();
    acl_methods.sort();
    let list = backend(&["list"], "", None);
    let mut backend_methods: Vec<String> = node_eval(
        "console.log(Object.keys(JSON.parse(process.argv[1])).join(' '))",
        &[Path::new(&list)],
    )
    .split_whitespace()
    .map(String::from)
    .collect();
    backend_methods.sort();
    assert_eq!(acl_methods, backend_methods);
    let mut js_methods = Vec::new();
    for f in js_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        for decl in text.split("rpc.declare(").skip(1) {
            assert!(
                decl.contains("object: 'luci.raopd'"),
                "{}: another object",
                f.display()
            );
            let m = decl
                .split("method: '")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .unwrap();
            js_methods.push(m.to_string());
        }
    }
    js_methods.sort();
    js_methods.dedup();
    assert_eq!(js_methods, acl_methods);
}

/// Runs the rpcd backend like rpcd does (`list` / `call METHOD` with the JSON on stdin).
fn backend(args: &[&str], stdin: &str, socket: Option<&Path>) -> String {
    let mut cmd = Command::new("sh");
    cmd.arg(app().join("root/usr/libexec/rpcd/luci.raopd"))
        .args(args)
        .env("RAOPD_BIN", env!("CARGO_BIN_EXE_raopd"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    match socket {
        Some(s) => cmd.env("RAOPD_CONTROL_SOCKET", s),
        None => cmd.env("RAOPD_CONTROL_SOCKET", "/nonexistent/raopd.sock"),
    };
    let mut child = cmd.spawn().unwrap();
    // Methods that take no input exit without reading it: a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn backend_against_a_running_raopd() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("luci-backend");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("pwned");
    // No daemon: "stopped", and the control call says why.
    assert_eq!(
        backend(&["call", "status"], "{}", None),
        r#"{"state":"stopped"}"#
    );
    assert_eq!(
        backend(&["call", "control"], r#"{"command":"pause"}"#, None),
        r#"{"ok":false,"error":"raopd is not running"}"#
    );
    let sock = dir.join("raopd.sock");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let daemon = Kill(
        Command::new(env!("CARGO_BIN_EXE_raopd"))
            .args([
                "--name",
                "Büro \"Nord\"",
                "--no-mdns",
                "--output",
                "pipe:/dev/null",
            ])
            .arg("--port")
            .arg(port.to_string())
            .arg("--control-socket")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let up = common::wait_until(Duration::from_secs(10), || sock.exists());
    let status = backend(&["call", "status"], "{}", Some(&sock));
    let hostile = [
        format!(r#"{{"command":"pause; touch {}"}}"#, marker.display()),
        format!(r#"{{"command":"$(touch {})"}}"#, marker.display()),
        format!(r#"{{"command":"`touch {}`"}}"#, marker.display()),
        r#"{"command":"status"}"#.to_string(),
        r#"{"command":"pause","x":1}"#.to_string(),
        "not json".to_string(),
    ];
    let hostile_replies: Vec<String> = hostile
        .iter()
        .map(|h| backend(&["call", "control"], h, Some(&sock)))
        .collect();
    let pause = backend(
        &["call", "control"],
        "{ \"command\" : \"pause\" }\n",
        Some(&sock),
    );
    let unknown_method = backend(&["call", "reboot"], "{}", Some(&sock));
    drop(daemon);
    assert!(up, "raopd did not open its control socket");
    assert!(
        status.contains(r#""name":"Büro \"Nord\"""#) && status.contains(r#""state":"idle""#),
        "{status}"
    );
    for (h, r) in hostile.iter().zip(&hostile_replies) {
        assert_eq!(r, r#"{"ok":false,"error":"unknown command"}"#, "{h}");
    }
    assert!(!marker.exists(), "a request reached a shell");
    // The daemon's own answer: nobody is playing, so there is no sender to pause.
    assert!(
        pause.starts_with(r#"{"ok":false,"error":"#) && pause.contains("remote control"),
        "{pause}"
    );
    assert_eq!(unknown_method, r#"{"error":"unknown method"}"#);
}
