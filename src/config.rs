//! Command-line configuration. Parsed by hand: a dozen flags do not justify an argument
//! parser's code size on a router's flash.
//!
//! Every value is checked here, at the boundary, so that a daemon that starts can serve: an
//! error names the flag, the value given and what is allowed (see [`invalid`]), on one line.

pub mod ctl;

use crate::output::OutputSpec;
use ctl::ControlConfig;
use std::time::Duration;

/// What a second sender gets while one is playing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// `453 Not Enough Bandwidth`; the first sender keeps playing.
    Deny,
    /// The new sender takes over; the old session is torn down.
    Allow,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The speaker's name as senders list it.
    pub name: String,
    /// RTSP port.
    pub port: u16,
    pub output: OutputSpec,
    pub mdns: bool,
    /// MAC address used in the mDNS instance name and in Apple-Response; from the
    /// network interface unless given.
    pub mac: Option<[u8; 6]>,
    /// Playback latency used until the sender states its own (sync packets). It also
    /// sizes the jitter buffer: max(latency, 2 s) + 1 s of headroom.
    pub latency: Duration,
    /// Moves the sound later (positive, ms) or earlier (negative) than the sender asked:
    /// added to every frame's due time. A DAC or amplifier that delays the sound by 30 ms
    /// is made up for with -30.
    pub latency_offset_ms: i64,
    pub password: Option<String>,
    pub interruption: Interruption,
    /// A sender silent this long (no RTSP, no audio) loses the speaker.
    pub session_timeout: Duration,
    /// First UDP port to bind for audio/control/timing; 0 = ephemeral ports. Streams use
    /// ports from `udp_port_base` to `udp_port_base + UDP_PORT_RANGE - 1`.
    pub udp_port_base: u16,
    /// An output that cannot be opened at start is waited for instead of ending the daemon
    /// (boards whose USB DAC appears after boot); senders are refused until it opens.
    pub wait_for_output: bool,
    /// Control socket and hooks.
    pub control: ControlConfig,
    /// `--interface`: the network interfaces (kernel names, e.g. `br-lan`) that RTSP, the
    /// RTP/UDP sockets and mDNS use; empty = all. See [`crate::bind`].
    pub interfaces: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "raopd".into(),
            port: 5000,
            output: OutputSpec::Alsa("default".into()),
            mdns: true,
            mac: None,
            latency: Duration::from_millis(2000),
            latency_offset_ms: 0,
            password: None,
            interruption: Interruption::Deny,
            session_timeout: Duration::from_secs(60),
            udp_port_base: 0,
            wait_for_output: false,
            control: ControlConfig::default(),
            interfaces: Vec::new(),
        }
    }
}

/// `raopd --help`.
pub const USAGE: &str = "\
usage: raopd [options]          an AirPlay 1 (RAOP) speaker
  --name NAME                 speaker name, 1 to 50 characters (default raopd)
  --port PORT                 RTSP port, 1 to 65535 (default 5000)
  --output SPEC               alsa:PCM | pipe:PATH | stdout | sim:PATH[:+PPMppm]  (default alsa:default)
  --wait-for-output           if the output cannot be opened at start, keep running and retry it
                              at each new sender (refused until then) instead of exiting
  --no-mdns                   do not announce the speaker with mDNS
  --mac AA:BB:CC:DD:EE:FF     MAC address to announce (default: the network interface's)
  --latency-ms N              latency until the sender gives its own, 100 to 10000 (default 2000)
  --latency-offset-ms N       play N ms later (positive) or earlier (negative), -2000 to 2000
                              (default 0): -30 makes up for an amplifier that adds 30 ms
  --password PW               require this password (RTSP Digest); not empty
  --session-interruption allow|deny   a second sender takes over, or gets 453 (default deny)
  --session-timeout SECONDS   free the speaker after this much silence from a sender,
                              1 to 86400 (default 60)
  --udp-port-base PORT        bind the stream's UDP ports from PORT to PORT+9, 1 to 65526
                              (default 0: ephemeral ports)
  --interface IFACE           serve and announce on this network interface only (repeatable;
                              default: all)
  --control-socket PATH       local control socket (default /var/run/raopd.sock)
  --no-control-socket         do not open the control socket
  --on-start CMD              run CMD with /bin/sh when audio starts
  --on-stop CMD               run CMD when audio has been idle for --idle-timeout
  --idle-timeout SECONDS      idle time before --on-stop, 0 to 86400 (default 10)
  --version                   print the version
  -h, --help                  this text
raopd status [--control-socket PATH]      the running daemon's state as JSON
raopd ctl COMMAND [--control-socket PATH] remote control of the playing sender
environment: RUST_LOG=info|debug|trace for logs (default: warnings and the start line);
             RAOPD_PASSWORD=PW instead of --password (kept out of `ps`)";

/// `raopd status --help`.
pub const STATUS_USAGE: &str = "\
usage: raopd status [--control-socket PATH]
  Prints the running daemon's state as one JSON object: name, port, state (idle/playing),
  sender, volume, now playing and stream statistics. Asks over the control socket
  (default /var/run/raopd.sock; give the --control-socket the daemon was started with).
  Exit status: 0 ok, 2 the daemon could not be reached.";

/// `raopd ctl --help`.
pub const CTL_USAGE: &str = "\
usage: raopd ctl COMMAND [--control-socket PATH]
  COMMAND: play | pause | playpause | next | previous | volumeup | volumedown | stop
  Sent to the playing sender (DACP), when the sender offered remote control. Asks over the
  control socket (default /var/run/raopd.sock; give the --control-socket the daemon was
  started with). Exit status: 0 done, 1 refused (e.g. no sender), 2 daemon not reached.";

/// Longest speaker name, in characters (not bytes). mDNS carries at most
/// [`crate::mdns::MAX_ANNOUNCED_NAME_BYTES`] bytes of it; a longer name is announced cut at a
/// character boundary (see [`announced_name`]).
pub const MAX_NAME_CHARS: usize = 50;

/// UDP ports a stream may use from `--udp-port-base` upwards: three per stream (audio,
/// control, timing), twice during a take-over, plus room for ports other programs hold.
/// shairport-sync's default `udp_port_range` is the same 10.
pub const UDP_PORT_RANGE: u16 = 10;

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Version,
    /// Print this usage text and exit successfully (`--help` of the daemon or a subcommand).
    Help(&'static str),
    /// `raopd status` / `raopd ctl WORD`: one request to a running daemon's control socket.
    Client {
        socket: std::path::PathBuf,
        request: String,
    },
}

/// The one-line error for a bad value: `invalid --port value "0": must be 1 to 65535`.
/// `allowed` completes "must be …".
pub fn invalid(flag: &str, value: &str, allowed: &str) -> String {
    format!("invalid {flag} value {value:?}: must be {allowed}")
}

/// Parses a whole number for `flag` and checks it is within `min..=max` (with `unit`, e.g.
/// "ms", for the message).
pub fn number(flag: &str, value: &str, min: i64, max: i64, unit: &str) -> Result<i64, String> {
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            invalid(
                flag,
                value,
                &format!("a whole number from {min} to {max}{unit}"),
            )
        })
}

/// Checks a speaker name: 1 to [`MAX_NAME_CHARS`] characters, no control characters, not
/// only spaces.
pub fn check_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > MAX_NAME_CHARS {
        return Err(invalid(
            "--name",
            name,
            &format!("1 to {MAX_NAME_CHARS} characters (it has {chars})"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            "--name",
            name,
            "printable text (no control characters)",
        ));
    }
    Ok(())
}

/// The part of `name` that mDNS can carry: the instance label `AABBCCDDEEFF@Name` is one DNS
/// label of at most 63 bytes (RFC 1035 section 2.3.4, RFC 6763 section 4.1.1), which leaves
/// [`crate::mdns::MAX_ANNOUNCED_NAME_BYTES`] bytes of UTF-8 for the name. A longer name is cut
/// at a character boundary, as Apple's mDNSResponder cuts long computer names; senders list
/// the cut name, while `raopd status` and the hooks keep the whole one.
pub fn announced_name(name: &str) -> &str {
    let max = crate::mdns::MAX_ANNOUNCED_NAME_BYTES;
    let name = name.trim();
    if name.len() <= max {
        return name;
    }
    let mut end = max;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].trim_end()
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// Parses the command line (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let args: Vec<String> = args.into_iter().collect();
    match args.first().map(String::as_str) {
        Some("status") => parse_client(&args[1..], None),
        Some("ctl") => parse_client(&args[1..], Some(())),
        _ => parse_daemon(args),
    }
}

/// `status [--control-socket PATH]` or `ctl WORD [--control-socket PATH]` (`ctl` is `Some`).
fn parse_client(args: &[String], ctl: Option<()>) -> Result<Command, String> {
    let usage = if ctl.is_some() {
        CTL_USAGE
    } else {
        STATUS_USAGE
    };
    let sub = if ctl.is_some() { "ctl" } else { "status" };
    let mut socket = std::path::PathBuf::from(ctl::DEFAULT_SOCKET);
    let mut word: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.strip_prefix("--control-socket="), a.as_str()) {
            (_, "--help" | "-h") => return Ok(Command::Help(usage)),
            (Some(p), _) => socket = p.into(),
            (None, "--control-socket") => match it.next() {
                Some(p) => socket = p.into(),
                None => return Err("--control-socket needs a path".into()),
            },
            (None, w) if ctl.is_some() && word.is_none() && !w.starts_with('-') => {
                let cmd = ctl::RemoteCommand::parse(w).ok_or_else(|| {
                    format!("{} (see raopd ctl --help)", invalid("ctl", w, &ctl_words()))
                })?;
                word = Some(cmd.name().to_string());
            }
            (None, other) => {
                return Err(format!(
                    "{sub}: unexpected argument {other:?} (see raopd {sub} --help)"
                ))
            }
        }
    }
    if socket.as_os_str().is_empty() {
        return Err(invalid("--control-socket", "", "a path"));
    }
    let request = match ctl {
        None => "status".to_string(),
        Some(()) => word.ok_or_else(|| {
            format!(
                "ctl needs a COMMAND: {} (see raopd ctl --help)",
                ctl_words()
            )
        })?,
    };
    Ok(Command::Client { socket, request })
}

fn ctl_words() -> String {
    let words: Vec<&str> = ctl::RemoteCommand::ALL.iter().map(|c| c.name()).collect();
    format!("one of {}", words.join(", "))
}

fn parse_daemon(args: Vec<String>) -> Result<Command, String> {
    let mut c = Config::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--version" | "-V" => return Ok(Command::Version),
            "--help" | "-h" => return Ok(Command::Help(USAGE)),
            "--name" => {
                let name = value("--name")?;
                check_name(&name)?;
                c.name = name.trim().to_string();
            }
            "--port" => {
                let v = value("--port")?;
                c.port = number("--port", &v, 1, 65535, "")? as u16;
            }
            "--output" | "-o" => {
                let v = value("--output")?;
                c.output = v.parse().map_err(|e| format!("invalid --output: {e}"))?;
            }
            "--wait-for-output" => c.wait_for_output = true,
            "--no-mdns" => c.mdns = false,
            "--mac" => {
                let v = value("--mac")?;
                c.mac =
                    Some(parse_mac(&v).ok_or_else(|| {
                        invalid("--mac", &v, "six hex bytes like AA:BB:CC:DD:EE:FF")
                    })?)
            }
            "--latency-ms" => {
                let v = value("--latency-ms")?;
                c.latency =
                    Duration::from_millis(number("--latency-ms", &v, 100, 10_000, "ms")? as u64);
            }
            "--latency-offset-ms" => {
                let v = value("--latency-offset-ms")?;
                c.latency_offset_ms = number("--latency-offset-ms", &v, -2000, 2000, "ms")?;
            }
            "--password" => {
                let v = value("--password")?;
                if v.is_empty() {
                    return Err(invalid(
                        "--password",
                        &v,
                        "at least one character (leave --password out to play without one)",
                    ));
                }
                c.password = Some(v);
            }
            "--session-interruption" => {
                let v = value("--session-interruption")?;
                c.interruption = match v.as_str() {
                    "allow" => Interruption::Allow,
                    "deny" => Interruption::Deny,
                    _ => return Err(invalid("--session-interruption", &v, "allow or deny")),
                }
            }
            "--session-timeout" => {
                let v = value("--session-timeout")?;
                c.session_timeout =
                    Duration::from_secs(
                        number("--session-timeout", &v, 1, 86_400, "seconds")? as u64
                    );
            }
            "--udp-port-base" => {
                let v = value("--udp-port-base")?;
                let max = 65535 - i64::from(UDP_PORT_RANGE - 1);
                c.udp_port_base = number("--udp-port-base", &v, 0, max, "").map_err(|_| {
                    invalid(
                        "--udp-port-base",
                        &v,
                        &format!(
                            "0 (ephemeral ports) or a whole number from 1 to {max}: the \
                             stream's UDP ports run from it to it + {}, all within 65535",
                            UDP_PORT_RANGE - 1
                        ),
                    )
                })? as u16;
            }
            "--interface" => {
                let iface = value("--interface")?;
                // IFNAMSIZ - 1 bytes, no '/' or whitespace (the kernel's dev_valid_name).
                if iface.is_empty()
                    || iface.len() > 15
                    || iface.contains(|ch: char| ch == '/' || ch == ':' || ch.is_whitespace())
                {
                    return Err(format!("--interface: bad interface name {iface:?}"));
                }
                if !c.interfaces.contains(&iface) {
                    c.interfaces.push(iface);
                }
            }
            other => {
                if !c.control.parse_flag(other, &mut value)? {
                    return Err(format!("unknown option {other:?}"));
                }
            }
        }
    }
    Ok(Command::Run(Box::new(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse_args(args.iter().map(|s| s.to_string()))? {
            Command::Run(c) => Ok(*c),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn issue_flags() {
        let c = run(&[
            "--name",
            "Kitchen",
            "--port",
            "5100",
            "--output",
            "pipe:/tmp/x.raw",
            "--no-mdns",
            "--mac",
            "AA:BB:CC:DD:EE:0F",
            "--latency-ms",
            "1500",
        ])
        .unwrap();
        assert_eq!(c.name, "Kitchen");
        assert_eq!(c.port, 5100);
        assert!(!c.mdns);
        assert_eq!(c.mac, Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f]));
        assert_eq!(c.latency, Duration::from_millis(1500));
        assert!(matches!(c.output, OutputSpec::Pipe(_)));
        assert!(!c.wait_for_output);
        let c = run(&[
            "--output=stdout",
            "--session-interruption=allow",
            "--wait-for-output",
        ])
        .unwrap();
        assert!(matches!(c.output, OutputSpec::Stdout));
        assert_eq!(c.interruption, Interruption::Allow);
        assert!(c.wait_for_output);
        let c = run(&[
            "--interface",
            "br-lan",
            "--interface=wlan0",
            "--interface",
            "br-lan",
        ])
        .unwrap();
        assert_eq!(c.interfaces, ["br-lan", "wlan0"]);
        assert!(run(&["--interface", "a/b"])
            .unwrap_err()
            .contains("--interface"));
        assert!(run(&["--interface", "abcdefghijklmnop"]).is_err());
    }

    #[test]
    fn errors_name_flag_value_and_range() {
        let err = |a: &[&str]| run(a).unwrap_err();
        assert_eq!(err(&["--port"]), "--port needs a value");
        assert_eq!(
            err(&["--port", "0"]),
            r#"invalid --port value "0": must be a whole number from 1 to 65535"#
        );
        assert!(err(&["--port", "x"]).contains("from 1 to 65535"));
        assert!(err(&["--port", "70000"]).contains(r#""70000""#));
        assert!(err(&["--mac", "zz"]).contains(r#"invalid --mac value "zz""#));
        assert_eq!(err(&["--bogus"]), r#"unknown option "--bogus""#);
        assert_eq!(
            err(&["--latency-ms", "5"]),
            r#"invalid --latency-ms value "5": must be a whole number from 100 to 10000 ms"#
        );
        assert!(err(&["--latency-offset-ms", "-2001"]).contains("from -2000 to 2000 ms"));
        assert!(err(&["--session-timeout", "0"]).contains("from 1 to 86400 seconds"));
        assert!(err(&["--session-interruption", "maybe"]).contains("allow or deny"));
        assert!(err(&["--password", ""]).contains("leave --password out"));
        assert!(err(&["--output", "jack:x"]).starts_with("invalid --output: unknown output"));
        let udp = err(&["--udp-port-base", "65534"]);
        assert!(
            udp.contains(r#""65534""#) && udp.contains("1 to 65526"),
            "{udp}"
        );
        assert_eq!(
            run(&["--udp-port-base", "65526"]).unwrap().udp_port_base,
            65526
        );
        assert_eq!(run(&["--udp-port-base", "0"]).unwrap().udp_port_base, 0);
        assert!(matches!(
            parse_args(["--version".to_string()]),
            Ok(Command::Version)
        ));
    }

    #[test]
    fn names_count_characters() {
        let cyr = "Кухня в гостиной на втором этаже";
        assert_eq!(cyr.chars().count(), 32);
        assert_eq!(run(&["--name", cyr]).unwrap().name, cyr);
        let fifty = "ё".repeat(50);
        assert_eq!(run(&["--name", &fifty]).unwrap().name, fifty);
        let e = run(&["--name", &"ё".repeat(51)]).unwrap_err();
        assert!(e.contains("1 to 50 characters (it has 51)"), "{e}");
        assert!(run(&["--name", ""]).is_err());
        assert!(run(&["--name", "   "]).is_err());
        assert!(run(&["--name", "a\nb"]).unwrap_err().contains("control"));
    }

    #[test]
    fn announced_names_fit_one_dns_label() {
        assert_eq!(announced_name("Kitchen"), "Kitchen");
        let cyr = "Кухня в гостиной на втором этаже";
        let cut = announced_name(cyr);
        assert!(cut.len() <= crate::mdns::MAX_ANNOUNCED_NAME_BYTES);
        assert_eq!(cut, "Кухня в гостиной на втором");
        assert!(cyr.starts_with(cut));
        let ascii = "x".repeat(50);
        assert_eq!(announced_name(&ascii), ascii);
    }

    #[test]
    fn subcommands() {
        let p = |a: &[&str]| parse_args(a.iter().map(|s| s.to_string()));
        for (args, usage) in [
            (&["status", "--help"][..], STATUS_USAGE),
            (&["ctl", "--help"][..], CTL_USAGE),
            (&["ctl", "play", "-h"][..], CTL_USAGE),
            (&["--help"][..], USAGE),
        ] {
            match p(args) {
                Ok(Command::Help(u)) => assert_eq!(u, usage),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        match p(&["ctl", "nextitem", "--control-socket=/x.sock"]).unwrap() {
            Command::Client { socket, request } => {
                assert_eq!(socket, std::path::Path::new("/x.sock"));
                assert_eq!(request, "next");
            }
            other => panic!("{other:?}"),
        }
        match p(&["status"]).unwrap() {
            Command::Client { request, .. } => assert_eq!(request, "status"),
            other => panic!("{other:?}"),
        }
        assert!(p(&["ctl"]).unwrap_err().contains("needs a COMMAND"));
        assert!(p(&["ctl", "reboot"])
            .unwrap_err()
            .starts_with(r#"invalid ctl value "reboot": must be one of play, pause"#));
        assert!(p(&["status", "now"])
            .unwrap_err()
            .contains("unexpected argument"));
        assert!(p(&["status", "--control-socket"]).is_err());
    }
}
