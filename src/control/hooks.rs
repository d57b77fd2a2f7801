//! Shell hooks around playback: `--on-start CMD` when audio starts, `--on-stop CMD` once
//! audio has been idle for a while. Typical use is switching an amplifier on and off, so a
//! short pause (a FLUSH between tracks, a seek, a pause of a few seconds) must not cycle it:
//! the stop hook waits for [`HookConfig::idle`] of silence, and audio that resumes within
//! that time runs no hook at all.
//!
//! The decision when to run a hook is the sans-IO [`HookMachine`] (tested with a fake clock);
//! [`Hooks`] adds the process handling. Hooks run as `/bin/sh -c CMD`, started with
//! `std::process::Command` and never waited for: the reactor thread must not block on a
//! user's script. Finished children are reaped with `try_wait` on later calls and on the
//! periodic [`tick`](Hooks::tick), so no zombie outlives a tick and no thread is needed.

use crate::reactor::Timer;
use std::cell::RefCell;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often [`run_ticks`] checks the idle timer and reaps children.
pub const TICK: Duration = Duration::from_secs(1);
/// Hooks still running beyond this many are not started again: a hook that hangs must not
/// pile up processes on a small router.
const MAX_RUNNING: usize = 8;

pub use crate::config::ctl::{HookConfig, DEFAULT_IDLE};

/// A hook to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    Start { sender: Option<IpAddr> },
    Stop { sender: Option<IpAddr> },
}

impl HookEvent {
    /// The `RAOPD_EVENT` value.
    pub fn name(&self) -> &'static str {
        match self {
            HookEvent::Start { .. } => "start",
            HookEvent::Stop { .. } => "stop",
        }
    }

    pub fn sender(&self) -> Option<IpAddr> {
        match *self {
            HookEvent::Start { sender } | HookEvent::Stop { sender } => sender,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No audio, and the stop hook (if any start happened) has run.
    Idle,
    Playing {
        sender: Option<IpAddr>,
    },
    /// Audio stopped at some point; the stop hook runs at `until` unless audio resumes.
    Draining {
        sender: Option<IpAddr>,
        until: Instant,
    },
}

/// When to run which hook. Every input is idempotent, so the daemon may report edges
/// (RECORD, FLUSH, TEARDOWN) or simply the current level on every tick.
#[derive(Debug, Clone)]
pub struct HookMachine {
    idle: Duration,
    state: State,
}

impl HookMachine {
    pub fn new(idle: Duration) -> Self {
        HookMachine {
            idle,
            state: State::Idle,
        }
    }

    /// Audio is playing. Runs the start hook only when coming from idle; a new sender
    /// taking over, or audio resuming before the idle time ran out, is not a new start.
    pub fn audio_started(&mut self, sender: Option<IpAddr>) -> Option<HookEvent> {
        let was_idle = self.state == State::Idle;
        self.state = State::Playing { sender };
        was_idle.then_some(HookEvent::Start { sender })
    }

    /// Audio stopped at `now`. The stop hook is due after the idle time (at once if that
    /// is zero). Repeated calls keep the first deadline.
    pub fn audio_stopped(&mut self, now: Instant) -> Option<HookEvent> {
        if let State::Playing { sender } = self.state {
            self.state = State::Draining {
                sender,
                until: now + self.idle,
            };
        }
        self.poll(now)
    }

    /// The stop hook, if its time has come.
    pub fn poll(&mut self, now: Instant) -> Option<HookEvent> {
        match self.state {
            State::Draining { sender, until } if now >= until => {
                self.state = State::Idle;
                Some(HookEvent::Stop { sender })
            }
            _ => None,
        }
    }

    /// When [`poll`](Self::poll) will next have something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Draining { until, .. } => Some(until),
            _ => None,
        }
    }

    /// The daemon exits: a started session gets its stop hook now, so the amplifier is not
    /// left on.
    pub fn shutdown(&mut self) -> Option<HookEvent> {
        let ev = match self.state {
            State::Playing { sender } | State::Draining { sender, .. } => {
                Some(HookEvent::Stop { sender })
            }
            State::Idle => None,
        };
        self.state = State::Idle;
        ev
    }

    /// True between a start hook and its stop hook.
    pub fn active(&self) -> bool {
        self.state != State::Idle
    }
}

/// The hooks of the daemon: the state machine plus the processes it starts.
#[derive(Debug)]
pub struct Hooks {
    cfg: HookConfig,
    machine: HookMachine,
    running: Vec<(HookEvent, Child)>,
}

impl Hooks {
    pub fn new(cfg: HookConfig) -> Self {
        Hooks {
            machine: HookMachine::new(cfg.idle),
            cfg,
            running: Vec::new(),
        }
    }

    /// Whether any hook is configured; without one the daemon need not drive this at all.
    pub fn configured(&self) -> bool {
        self.cfg.on_start.is_some() || self.cfg.on_stop.is_some()
    }

    pub fn machine(&self) -> &HookMachine {
        &self.machine
    }

    /// Audio started (RECORD, or audio flowing again after a FLUSH).
    pub fn audio_started(&mut self, sender: Option<IpAddr>) {
        self.reap();
        if let Some(ev) = self.machine.audio_started(sender) {
            self.run(ev);
        }
    }

    /// Audio stopped (FLUSH, TEARDOWN, stream ended) at `now`.
    pub fn audio_stopped(&mut self, now: Instant) {
        self.reap();
        if let Some(ev) = self.machine.audio_stopped(now) {
            self.run(ev);
        }
    }

    /// Runs the stop hook when the idle time is over and reaps finished hooks. Call it
    /// periodically ([`run_ticks`] does).
    pub fn tick(&mut self, now: Instant) {
        self.reap();
        if let Some(ev) = self.machine.poll(now) {
            self.run(ev);
        }
    }

    /// The daemon exits: runs a pending stop hook without waiting for it.
    pub fn shutdown(&mut self) {
        self.reap();
        if let Some(ev) = self.machine.shutdown() {
            self.run(ev);
        }
    }

    /// Hooks started and not yet reaped.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    fn run(&mut self, ev: HookEvent) {
        let cmd = match ev {
            HookEvent::Start { .. } => self.cfg.on_start.as_deref(),
            HookEvent::Stop { .. } => self.cfg.on_stop.as_deref(),
        };
        let Some(cmd) = cmd else {
            log::debug!("audio {}: no hook", ev.name());
            return;
        };
        if self.running.len() >= MAX_RUNNING {
            log::warn!(
                "{} hook not run: {} earlier hooks are still running",
                ev.name(),
                self.running.len()
            );
            return;
        }
        match spawn(cmd, &ev, &self.cfg.name) {
            Ok(child) => {
                log::info!("{} hook started (pid {})", ev.name(), child.id());
                self.running.push((ev, child));
            }
            Err(e) => log::warn!("{} hook: cannot run /bin/sh: {e}", ev.name()),
        }
    }

    /// Collects the exit status of finished hooks, so they do not linger as zombies.
    fn reap(&mut self) {
        self.running
            .retain_mut(|(ev, child)| match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    log::debug!("{} hook finished", ev.name());
                    false
                }
                Ok(Some(status)) => {
                    log::warn!("{} hook failed: {status}", ev.name());
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    log::warn!("{} hook: {e}", ev.name());
                    false
                }
            });
    }
}

/// Starts `/bin/sh -c cmd` with the event in its environment: `RAOPD_EVENT` (`start` or
/// `stop`), `RAOPD_SENDER` (the sender's IP address, empty if unknown) and `RAOPD_NAME`.
/// stdin is closed so that a hook cannot read the daemon's input; stdout and stderr stay
/// the daemon's, which is where a service manager collects logs.
fn spawn(cmd: &str, ev: &HookEvent, name: &str) -> std::io::Result<Child> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("RAOPD_EVENT", ev.name())
        .env(
            "RAOPD_SENDER",
            ev.sender().map(|ip| ip.to_string()).unwrap_or_default(),
        )
        .env("RAOPD_NAME", name)
        .stdin(Stdio::null())
        .spawn()
}

/// Drives [`Hooks::tick`] every [`TICK`] forever. Spawn it on the daemon's executor when
/// hooks are configured.
pub async fn run_ticks(hooks: Rc<RefCell<Hooks>>) {
    loop {
        Timer::after(TICK).await;
        hooks.borrow_mut().tick(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const S: Duration = Duration::from_secs(1);

    fn ip() -> Option<IpAddr> {
        Some(Ipv4Addr::new(192, 168, 1, 5).into())
    }

    #[test]
    fn start_idle_stop() {
        let t0 = Instant::now();
        let mut m = HookMachine::new(10 * S);
        assert_eq!(m.poll(t0), None);
        assert_eq!(m.audio_stopped(t0), None, "stop without start runs nothing");
        assert_eq!(
            m.audio_started(ip()),
            Some(HookEvent::Start { sender: ip() })
        );
        assert_eq!(m.audio_started(ip()), None, "idempotent");
        assert!(m.active());
        assert_eq!(m.audio_stopped(t0), None);
        assert_eq!(m.deadline(), Some(t0 + 10 * S));
        assert_eq!(
            m.audio_stopped(t0 + 5 * S),
            None,
            "keeps the first deadline"
        );
        assert_eq!(m.poll(t0 + 9 * S), None);
        assert_eq!(m.poll(t0 + 10 * S), Some(HookEvent::Stop { sender: ip() }));
        assert_eq!(m.poll(t0 + 20 * S), None, "once");
        assert!(!m.active());
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn resuming_within_the_idle_time_runs_nothing() {
        let t0 = Instant::now();
        let mut m = HookMachine::new(10 * S);
        m.audio_started(ip());
        m.audio_stopped(t0);
        let other = Some(Ipv4Addr::new(10, 0, 0, 2).into());
        assert_eq!(m.audio_started(other), None);
        assert_eq!(m.poll(t0 + 60 * S), None, "playing again: no stop");
        m.audio_stopped(t0 + 60 * S);
        assert_eq!(
            m.poll(t0 + 70 * S),
            Some(HookEvent::Stop { sender: other }),
            "the stop names the sender that played last"
        );
        assert_eq!(
            m.audio_started(ip()),
            Some(HookEvent::Start { sender: ip() })
        );
    }

    #[test]
    fn zero_idle_and_shutdown() {
        let t0 = Instant::now();
        let mut m = HookMachine::new(Duration::ZERO);
        m.audio_started(None);
        assert_eq!(m.audio_stopped(t0), Some(HookEvent::Stop { sender: None }));
        assert_eq!(m.shutdown(), None);
        m.audio_started(ip());
        assert_eq!(m.shutdown(), Some(HookEvent::Stop { sender: ip() }));
        assert_eq!(m.shutdown(), None);
    }

    fn wait_reaped(h: &mut Hooks, now: Instant) {
        for _ in 0..500 {
            h.tick(now);
            if h.running() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("hook did not finish");
    }

    #[test]
    fn real_hooks_write_a_file() {
        let dir = std::env::temp_dir().join(format!("raopd-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("events");
        let _ = std::fs::remove_file(&out);
        let line = format!(
            "echo \"$RAOPD_EVENT $RAOPD_SENDER $RAOPD_NAME\" >> '{}'",
            out.display()
        );
        let mut h = Hooks::new(HookConfig {
            on_start: Some(line.clone()),
            on_stop: Some(line),
            idle: 2 * S,
            name: "Kitchen".into(),
        });
        assert!(h.configured());
        let t0 = Instant::now();
        h.audio_started(ip());
        wait_reaped(&mut h, t0);
        h.audio_stopped(t0);
        wait_reaped(&mut h, t0 + S);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "start 192.168.1.5 Kitchen\n"
        );
        h.tick(t0 + 2 * S);
        wait_reaped(&mut h, t0 + 3 * S);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "start 192.168.1.5 Kitchen\nstop 192.168.1.5 Kitchen\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hanging_and_failing_hooks_are_bounded() {
        let mut h = Hooks::new(HookConfig {
            on_start: Some("exec sleep 5".into()),
            on_stop: Some("exit 3".into()),
            idle: Duration::ZERO,
            name: String::new(),
        });
        let t0 = Instant::now();
        for _ in 0..MAX_RUNNING + 3 {
            h.audio_started(None);
            h.audio_stopped(t0);
        }
        assert!(h.running() <= MAX_RUNNING, "{}", h.running());
        for (_, c) in h.running.iter_mut() {
            let _ = c.kill();
        }
        wait_reaped(&mut h, t0);
        assert!(!Hooks::new(HookConfig::default()).configured());
    }
}
