//! The settings of the control side (the control socket, the shell hooks) and the words of
//! `raopd ctl`. They live with the rest of the configuration so that `config` needs nothing
//! from [`crate::control`]; `control` imports them from here (and re-exports them where
//! its users expect them).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where the socket lives unless `--control-socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/raopd.sock";

/// Default time audio must stay idle before the stop hook runs: long enough to ride out
/// pauses between tracks and short seeks, short enough that an amplifier does not run on
/// for long after the music ends.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(10);

/// The hook settings from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    pub on_start: Option<String>,
    pub on_stop: Option<String>,
    /// Idle time before the stop hook.
    pub idle: Duration,
    /// The speaker name, passed to hooks as `RAOPD_NAME`.
    pub name: String,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            on_start: None,
            on_stop: None,
            idle: DEFAULT_IDLE,
            name: String::new(),
        }
    }
}

/// The control settings from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The control socket; `None` disables it.
    pub socket: Option<PathBuf>,
    pub hooks: HookConfig,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: Some(PathBuf::from(DEFAULT_SOCKET)),
            hooks: HookConfig::default(),
        }
    }
}

/// Usage lines for the flags [`ControlConfig::parse_flag`] takes.
pub const USAGE: &str = "\
  --control-socket PATH       local control socket (default /var/run/raopd.sock)
  --no-control-socket         do not open the control socket
  --on-start CMD              run CMD with /bin/sh when audio starts
  --on-stop CMD               run CMD when audio has been idle for --idle-timeout
  --idle-timeout SECONDS      idle time before --on-stop, 0 to 86400 (default 10)";

impl ControlConfig {
    /// Takes one command-line flag if it is one of [`USAGE`]'s; `value` fetches the flag's
    /// argument (with the flag's name for the error message). `Ok(false)`: not ours.
    pub fn parse_flag(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<bool, String> {
        match flag {
            "--control-socket" => {
                let p = value(flag)?;
                if p.is_empty() {
                    return Err(crate::config::invalid(flag, &p, "a path"));
                }
                self.socket = Some(PathBuf::from(p));
            }
            "--no-control-socket" => self.socket = None,
            "--on-start" => self.hooks.on_start = Some(value(flag)?).filter(|c| !c.is_empty()),
            "--on-stop" => self.hooks.on_stop = Some(value(flag)?).filter(|c| !c.is_empty()),
            "--idle-timeout" => {
                let v = value(flag)?;
                let s = crate::config::number(flag, &v, 0, 86_400, "seconds")?;
                self.hooks.idle = Duration::from_secs(s as u64);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A remote-control command, by the name the control socket uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteCommand {
    Play,
    Pause,
    PlayPause,
    Next,
    Previous,
    VolumeUp,
    VolumeDown,
    Stop,
}

impl RemoteCommand {
    /// Every command, for help texts and tests.
    pub const ALL: [RemoteCommand; 8] = [
        Self::Play,
        Self::Pause,
        Self::PlayPause,
        Self::Next,
        Self::Previous,
        Self::VolumeUp,
        Self::VolumeDown,
        Self::Stop,
    ];

    /// The control socket's word for the command.
    pub fn name(self) -> &'static str {
        match self {
            Self::Play => "play",
            Self::Pause => "pause",
            Self::PlayPause => "playpause",
            Self::Next => "next",
            Self::Previous => "previous",
            Self::VolumeUp => "volumeup",
            Self::VolumeDown => "volumedown",
            Self::Stop => "stop",
        }
    }

    /// The DACP path segment: `/ctrl-int/1/<this>`.
    pub fn dacp_path(self) -> &'static str {
        match self {
            Self::Next => "nextitem",
            Self::Previous => "previtem",
            other => other.name(),
        }
    }

    /// Parses the control socket's word, or the DACP name (`nextitem`, `previtem`).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|c| s.eq_ignore_ascii_case(c.name()) || s.eq_ignore_ascii_case(c.dacp_path()))
    }
}

impl fmt::Display for RemoteCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let mut c = ControlConfig::default();
        assert_eq!(
            c.socket.as_deref(),
            Some(std::path::Path::new(DEFAULT_SOCKET))
        );
        assert_eq!(c.hooks.idle, DEFAULT_IDLE);
        let mut args = vec!["run/x.sock", "amp on", "amp off", "30"].into_iter();
        let mut value = |name: &str| -> Result<String, String> {
            args.next()
                .map(String::from)
                .ok_or(format!("{name} needs a value"))
        };
        assert_eq!(c.parse_flag("--control-socket", &mut value), Ok(true));
        assert_eq!(c.parse_flag("--on-start", &mut value), Ok(true));
        assert_eq!(c.parse_flag("--on-stop", &mut value), Ok(true));
        assert_eq!(c.parse_flag("--idle-timeout", &mut value), Ok(true));
        assert_eq!(c.parse_flag("--port", &mut value), Ok(false));
        assert!(c.parse_flag("--on-stop", &mut value).is_err());
        assert_eq!(
            c.socket.as_deref(),
            Some(std::path::Path::new("run/x.sock"))
        );
        assert_eq!(c.hooks.on_start.as_deref(), Some("amp on"));
        assert_eq!(c.hooks.on_stop.as_deref(), Some("amp off"));
        assert_eq!(c.hooks.idle, Duration::from_secs(30));
        assert_eq!(c.parse_flag("--no-control-socket", &mut value), Ok(true));
        assert_eq!(c.socket, None);
        let mut bad = |_: &str| -> Result<String, String> { Ok("x".into()) };
        assert!(c.parse_flag("--idle-timeout", &mut bad).is_err());
    }

    #[test]
    fn command_names() {
        for c in RemoteCommand::ALL {
            assert_eq!(RemoteCommand::parse(c.name()), Some(c));
            assert_eq!(RemoteCommand::parse(c.dacp_path()), Some(c));
        }
        assert_eq!(RemoteCommand::Next.dacp_path(), "nextitem");
        assert_eq!(RemoteCommand::Previous.dacp_path(), "previtem");
        assert_eq!(
            RemoteCommand::parse(" PlayPause "),
            Some(RemoteCommand::PlayPause)
        );
        assert_eq!(RemoteCommand::parse("reboot"), None);
    }
}
