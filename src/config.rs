//! Command-line configuration. Parsed by hand: a dozen flags do not justify an argument
//! parser's code size on a router's flash.

use crate::control::ControlConfig;
use crate::output::OutputSpec;
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
    /// Added to the sender's latency for DACs and amplifiers with delay of their own;
    /// may be negative.
    pub latency_offset_ms: i64,
    pub password: Option<String>,
    pub interruption: Interruption,
    /// A sender silent this long (no RTSP, no audio) loses the speaker.
    pub session_timeout: Duration,
    /// First UDP port to bind for audio/control/timing; 0 = ephemeral ports.
    pub udp_port_base: u16,
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
            control: ControlConfig::default(),
            interfaces: Vec::new(),
        }
    }
}

pub const USAGE: &str = "\
usage: raopd [options]
  --name NAME                 speaker name (default raopd)
  --port PORT                 RTSP port (default 5000)
  --output SPEC               alsa:PCM | pipe:PATH | stdout | sim:PATH[:+PPMppm]  (default alsa:default)
  --no-mdns                   do not announce the speaker with mDNS
  --mac AA:BB:CC:DD:EE:FF     MAC address to announce (default: the network interface's)
  --latency-ms N              latency until the sender gives its own (default 2000)
  --latency-offset-ms N       extra output delay compensation, may be negative (default 0)
  --password PW               require this password (RTSP Digest)
  --session-interruption allow|deny   a second sender takes over, or gets 453 (default deny)
  --session-timeout SECONDS   free the speaker after this much silence from a sender (default 60)
  --udp-port-base PORT        bind UDP ports from PORT upwards (default: ephemeral)
  --interface IFACE           serve and announce on this network interface only (repeatable;
                              default: all)
  --control-socket PATH       local control socket (default /var/run/raopd.sock)
  --no-control-socket         do not open the control socket
  --on-start CMD              run CMD with /bin/sh when audio starts
  --on-stop CMD               run CMD when audio has been idle for --idle-timeout
  --idle-timeout SECONDS      idle time before --on-stop (default 10)
  --version                   print the version
usage: raopd status | raopd ctl play|pause|playpause|next|previous|volumeup|volumedown|stop
  [--control-socket PATH]     ask a running raopd over its control socket
  environment: RUST_LOG=info|debug|trace for logs (default warn);
               RAOPD_PASSWORD=PW instead of --password (kept out of `ps`)";

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Version,
    Help,
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

pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
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
            "--help" | "-h" => return Ok(Command::Help),
            "--name" => c.name = value("--name")?,
            "--port" => {
                c.port = value("--port")?
                    .parse()
                    .map_err(|_| "--port needs a port number")?
            }
            "--output" | "-o" => c.output = value("--output")?.parse()?,
            "--no-mdns" => c.mdns = false,
            "--mac" => {
                c.mac = Some(parse_mac(&value("--mac")?).ok_or("--mac needs AA:BB:CC:DD:EE:FF")?)
            }
            "--latency-ms" => {
                let ms: u64 = value("--latency-ms")?
                    .parse()
                    .map_err(|_| "--latency-ms needs milliseconds")?;
                if !(100..=10_000).contains(&ms) {
                    return Err("--latency-ms must be between 100 and 10000".into());
                }
                c.latency = Duration::from_millis(ms);
            }
            "--latency-offset-ms" => {
                c.latency_offset_ms = value("--latency-offset-ms")?
                    .parse()
                    .map_err(|_| "--latency-offset-ms needs milliseconds")?;
                if c.latency_offset_ms.abs() > 2000 {
                    return Err("--latency-offset-ms must be within ±2000".into());
                }
            }
            "--password" => c.password = Some(value("--password")?).filter(|p| !p.is_empty()),
            "--session-interruption" => {
                c.interruption = match value("--session-interruption")?.as_str() {
                    "allow" => Interruption::Allow,
                    "deny" => Interruption::Deny,
                    _ => return Err("--session-interruption needs allow or deny".into()),
                }
            }
            "--session-timeout" => {
                let s: u64 = value("--session-timeout")?
                    .parse()
                    .map_err(|_| "--session-timeout needs seconds")?;
                c.session_timeout = Duration::from_secs(s.max(1));
            }
            "--udp-port-base" => {
                c.udp_port_base = value("--udp-port-base")?
                    .parse()
                    .map_err(|_| "--udp-port-base needs a port number")?
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
                    return Err(format!("unknown option {other}"));
                }
            }
        }
    }
    if c.name.is_empty() || c.name.len() > 50 {
        return Err("--name must be 1 to 50 characters".into());
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
        let c = run(&["--output=stdout", "--session-interruption=allow"]).unwrap();
        assert!(matches!(c.output, OutputSpec::Stdout));
        assert_eq!(c.interruption, Interruption::Allow);
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
    fn errors_are_clear() {
        assert!(run(&["--port"]).unwrap_err().contains("needs a value"));
        assert!(run(&["--port", "x"]).unwrap_err().contains("port number"));
        assert!(run(&["--mac", "zz"]).unwrap_err().contains("--mac"));
        assert!(run(&["--bogus"]).unwrap_err().contains("unknown option"));
        assert!(run(&["--latency-ms", "5"]).is_err());
        assert!(matches!(
            parse_args(["--version".to_string()]),
            Ok(Command::Version)
        ));
    }
}
