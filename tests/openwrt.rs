//! The OpenWrt package: the init script maps UCI configurations to raopd command lines, and
//! the package Makefile agrees with the crate.
//!
//! The init script runs unchanged under Debian's dash and under busybox ash (OpenWrt's
//! shell), with OpenWrt's shell libraries replaced by the thin stand-ins in
//! `tests/openwrt/root` (see its README): their procd calls come out as lines, which are
//! compared with the expected command line, environment and triggers. The command line is
//! then handed to the real raopd (`--version` appended), which parses every option first.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const INIT: &str = "board/openwrt/raopd/files/raopd.init";

/// What the init script told (stub) procd.
#[derive(Debug, Default)]
struct Procd {
    /// `command` param of the instance, if one was opened.
    argv: Option<Vec<String>>,
    env: Vec<String>,
    respawn: Vec<String>,
    triggers: Vec<String>,
    stderr: String,
}

fn run_init(shell: &str, config: &str, networks: &str) -> Procd {
    let repo = common::repo_dir();
    let dir = tempdir(config);
    std::fs::write(dir.join("raopd"), config).unwrap();
    let out =
        Command::new(common::find_in_path(shell).unwrap_or_else(|| {
            panic!("{shell} missing: run scripts/setup-test-deps.sh (busybox)")
        }))
        .args(if shell == "busybox" {
            vec!["sh"]
        } else {
            vec![]
        })
        .arg(repo.join("tests/openwrt/root/etc/rc.common"))
        .arg(repo.join(INIT))
        .arg("start")
        .env("IPKG_INSTROOT", repo.join("tests/openwrt/root"))
        .env("UCI_CONFIG_DIR", &dir)
        .env("NETWORK_DEVICES", networks)
        .env_remove("PROCD_STUB_OUT")
        .output()
        .expect("run the init script");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() || !out.stderr.is_empty(),
        "init script failed silently"
    );
    let mut p = Procd {
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        ..Procd::default()
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["set", "command", v] => p.argv = Some(vec![v.to_string()]),
            ["append", "command", v] => p.argv.as_mut().expect("set first").push(v.to_string()),
            ["set" | "append", "env", v] => p.env.push(v.to_string()),
            ["set" | "append", "respawn", v] => p.respawn.push(v.to_string()),
            ["reload_trigger", ..] | ["interface_trigger", ..] | ["validation", ..] => {
                p.triggers.push(f.join(" "))
            }
            _ => {}
        }
    }
    p
}

fn tempdir(seed: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    std::thread::current().id().hash(&mut h);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("uci-{:x}", h.finish()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// raopd parses `argv` (with `--version` appended, which stops it before it opens anything).
fn raopd_accepts(argv: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_raopd"))
        .args(&argv[1..])
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "raopd refuses {argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const FULL: &str = r#"
config raopd 'main'
	option enabled 'yes'
	option name 'Living Room "Big" Speaker'
	option port '5100'
	option output 'alsa:plughw:1,0'
	option latency_offset_ms '-120'
	option password 'se cret $(reboot)'
	option session_interruption 'allow'
	option session_timeout '30'
	list interface 'lan'
	list interface 'guest'
	list interface 'iot'
	option on_start 'echo 1 > /sys/class/gpio/amp/value'
	option on_stop 'echo 0 > /sys/class/gpio/amp/value'
	option idle_timeout '20'
	option wait_for_output '0'
	option udp_port_base '6100'
	option log_level 'debug'
"#;

#[test]
fn init_script_maps_uci_to_command_lines() {
    let default_config =
        std::fs::read_to_string(common::repo_dir().join("board/openwrt/raopd/files/raopd.config"))
            .unwrap();
    for shell in ["sh", "busybox"] {
        // The shipped default: LAN only.
        let p = run_init(shell, &default_config, "lan=br-lan wan=eth1");
        let argv = p
            .argv
            .clone()
            .unwrap_or_else(|| panic!("no instance: {p:?}"));
        assert_eq!(
            argv,
            strings(&[
                "/usr/sbin/raopd",
                "--name",
                "OpenWrt",
                "--port",
                "5000",
                "--output",
                "alsa:default",
                "--latency-offset-ms",
                "0",
                "--session-interruption",
                "deny",
                "--session-timeout",
                "60",
                "--idle-timeout",
                "10",
                "--wait-for-output",
                "--interface",
                "br-lan",
            ]),
            "{shell}"
        );
        assert_eq!(p.env, ["RUST_LOG=warn"], "{shell}");
        assert_eq!(p.respawn, ["3600", "5", "5"], "{shell}");
        assert_eq!(
            p.triggers,
            [
                "reload_trigger raopd",
                "validation validate_raopd_section",
                "interface_trigger interface.* lan /etc/init.d/raopd reload",
            ],
            "{shell}"
        );
        raopd_accepts(&argv);

        // Every option; 'iot' is not up: left out, but its trigger is there.
        let p = run_init(shell, FULL, "lan=br-lan guest=br-guest");
        let argv = p
            .argv
            .clone()
            .unwrap_or_else(|| panic!("no instance: {p:?}"));
        assert_eq!(
            argv,
            strings(&[
                "/usr/sbin/raopd",
                "--name",
                "Living Room \"Big\" Speaker",
                "--port",
                "5100",
                "--output",
                "alsa:plughw:1,0",
                "--latency-offset-ms",
                "-120",
                "--session-interruption",
                "allow",
                "--session-timeout",
                "30",
                "--idle-timeout",
                "20",
                "--udp-port-base",
                "6100",
                "--interface",
                "br-lan",
                "--interface",
                "br-guest",
                "--on-start",
                "echo 1 > /sys/class/gpio/amp/value",
                "--on-stop",
                "echo 0 > /sys/class/gpio/amp/value",
            ]),
            "{shell}"
        );
        // The password is in the environment only, verbatim.
        assert!(!argv.iter().any(|a| a.contains("se cret")), "{argv:?}");
        assert_eq!(
            p.env,
            ["RUST_LOG=debug", "RAOPD_PASSWORD=se cret $(reboot)"],
            "{shell}"
        );
        assert!(p.stderr.contains("'iot' is not up"), "{}", p.stderr);
        assert_eq!(p.triggers.len(), 5, "{:?}", p.triggers);
        assert!(p.triggers[4].contains("interface.* iot /etc/init.d/raopd reload"));
        raopd_accepts(&argv);

        // No configured interface up: no instance (not every interface instead).
        let p = run_init(shell, FULL, "wan=eth1");
        assert!(p.argv.is_none(), "{shell}: started without its interfaces");
        assert!(p.stderr.contains("waiting"), "{}", p.stderr);

        // Invalid values: not started, and the reason is logged.
        for bad in [
            "option port '70000'",
            "option session_interruption 'sometimes'",
            "option latency_offset_ms '5000'",
            "option name '0123456789012345678901234567890123456789012345678901'",
            "list interface 'la n'",
        ] {
            let conf = format!("config raopd 'main'\n\t{bad}\n");
            let p = run_init(shell, &conf, "lan=br-lan");
            assert!(p.argv.is_none(), "{shell}: started with {bad}");
            assert!(p.stderr.contains("invalid settings"), "{bad}: {}", p.stderr);
        }

        // Disabled: nothing runs.
        let p = run_init(shell, "config raopd 'main'\n\toption enabled '0'\n", "");
        assert!(p.argv.is_none());
    }
}

#[test]
fn package_makefile_agrees_with_the_crate() {
    let repo = common::repo_dir();
    let mk = std::fs::read_to_string(repo.join("board/openwrt/raopd/Makefile")).unwrap();
    let cargo = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    let field = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.trim_start_matches([' ', ':', '='])
                    .trim()
                    .trim_matches('"')
                    .to_string()
            })
            .unwrap_or_else(|| panic!("no {key}"))
    };
    assert_eq!(field(&mk, "PKG_VERSION"), field(&cargo, "version"));
    assert_eq!(field(&mk, "PKG_LICENSE:"), field(&cargo, "license"));
    let license_file = field(&mk, "PKG_LICENSE_FILES");
    assert!(repo.join(&license_file).is_file(), "{license_file} missing");
    assert!(mk.contains("CARGO_RUSTFLAGS+=--cfg fix_y2038"));
    assert!(mk.contains("CARGO_PROFILE_RELEASE_PANIC=abort"));
    assert!(mk.contains("PKG_CONFIG_ALLOW_CROSS=1"));
    // Position-dependent unless OpenWrt's ASLR setting is "All", with the flag the dynamic
    // build of scripts/build-mips.sh (the one measured and tested under qemu) uses.
    let common = std::fs::read_to_string(repo.join("scripts/mips-common.sh")).unwrap();
    let no_pie = field(&common, "MIPS_NO_PIE_RUSTFLAGS");
    let none = mk
        .split("ifndef CONFIG_PKG_ASLR_PIE_ALL")
        .nth(1)
        .and_then(|rest| rest.split("endif").next())
        .expect("no CONFIG_PKG_ASLR_PIE_ALL block");
    assert_eq!(none.trim(), format!("CARGO_RUSTFLAGS+={no_pie}"));
    assert!(!mk.contains("PKG_ASLR_PIE_REGULAR"));
    assert!(field(&mk, "PKG_MAINTAINER").contains('@'));
    assert!(mk.contains("URL:="));
}
