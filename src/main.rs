//! `raopd`: the daemon's entry point. Parses the command line, opens the output, and
//! runs everything on one smol `LocalExecutor` on this thread.

use futures_lite::future;
use raopd::config::{self, Command};
use raopd::mdns;
use raopd::server::Daemon;
use std::process::ExitCode;
use std::rc::Rc;

/// Used when neither `--mac` nor a network interface gives one (a loopback-only host).
const FALLBACK_MAC: [u8; 6] = [0x02, 0x52, 0x41, 0x4f, 0x50, 0x44];

/// Log target of the start line, which is shown at the default log level.
const START_TARGET: &str = "raopd::start";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = match config::parse_args(args) {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Version) => {
            println!("raopd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help(usage)) => {
            println!("{usage}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Client { socket, request }) => {
            return raopd::control::client_main(&socket, &request)
        }
        Err(e) => {
            // One line: the message names the flag, the value and what is allowed.
            if e.contains("--help") {
                eprintln!("raopd: {e}");
            } else {
                eprintln!("raopd: {e} (see raopd --help)");
            }
            return ExitCode::from(2);
        }
    };
    // A bug (a panic, which the firmware builds turn into a trap) leaves a line in the log.
    raopd::fatal::install();
    // The OpenWrt init script hands the password over in the environment, where `ps` does
    // not show it; it is removed at once so that --on-start/--on-stop hooks do not inherit it.
    if let Some(pw) = std::env::var_os("RAOPD_PASSWORD") {
        std::env::remove_var("RAOPD_PASSWORD");
        if cfg.password.is_none() && !pw.is_empty() {
            cfg.password = Some(pw.to_string_lossy().into_owned());
        }
    }
    env_logger::Builder::new()
        .parse_filters(&log_filter(std::env::var("RUST_LOG").ok().as_deref()))
        .init();
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raopd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter: `RUST_LOG` (default `warn`: quiet), plus the start line at info, so that
/// even the default or an init script's `RUST_LOG=warn` says which speaker is up. Left out
/// when `RUST_LOG` says something about the start line itself, or is `off`.
fn log_filter(rust_log: Option<&str>) -> String {
    let base = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("warn");
    if base == "off" || base.contains(START_TARGET) {
        base.to_string()
    } else {
        format!("{base},{START_TARGET}=info")
    }
}

/// Opens the output and checks it can play, before anything else: a wrong device is an error
/// at start (or, with `--wait-for-output`, a warning and a problem to report to senders).
fn check_output(cfg: &config::Config) -> std::io::Result<Option<raopd::output::ProbeError>> {
    match raopd::output::probe(&cfg.output) {
        Ok(()) => Ok(None),
        Err(p) if p.busy => {
            log::warn!("{p}");
            Ok(None)
        }
        Err(p) if cfg.wait_for_output => {
            log::warn!(
                "{p}; waiting for it (--wait-for-output): senders are refused until it opens"
            );
            Ok(Some(p))
        }
        Err(p) => Err(std::io::Error::other(p.to_string())),
    }
}

/// The start line: name, port, output, interfaces, latency.
fn start_line(cfg: &config::Config, output_missing: bool) -> String {
    // Without mDNS and without --interface nothing needs the interface list: it is not read
    // (getifaddrs(3) spins under qemu-user on big-endian MIPS, see docs/mips.md).
    let listed = if !cfg.mdns && cfg.interfaces.is_empty() {
        Ok(Vec::new())
    } else {
        mdns::interfaces_named(&cfg.interfaces)
    };
    let interfaces = match listed {
        _ if !cfg.mdns && cfg.interfaces.is_empty() => "all".to_string(),
        Ok(list) if !list.is_empty() => list
            .iter()
            .map(|i| format!("{} {}", i.name, i.addr))
            .collect::<Vec<_>>()
            .join(", "),
        Ok(_) => "none with IPv4 and multicast".to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    let announced = config::announced_name(&cfg.name);
    let mdns = match (cfg.mdns, announced == cfg.name) {
        (false, _) => "mDNS off".to_string(),
        (true, true) => "announced with mDNS".to_string(),
        (true, false) => format!("announced with mDNS as \"{announced}\""),
    };
    let udp = match cfg.udp_port_base {
        0 => "ephemeral".to_string(),
        b => format!("{b}-{}", b + (config::UDP_PORT_RANGE - 1)),
    };
    format!(
        "raopd {}: speaker \"{}\" ({mdns}) on RTSP port {}, UDP ports {udp}, output {}{}, \
         interfaces {interfaces}, latency {} ms (until the sender states its own), offset {:+} ms{}",
        env!("CARGO_PKG_VERSION"),
        cfg.name,
        cfg.port,
        cfg.output,
        if output_missing { " (waiting for it)" } else { "" },
        cfg.latency.as_millis(),
        cfg.latency_offset_ms,
        if cfg.password.is_some() {
            ", password required"
        } else {
            ""
        }
    )
}

fn run(cfg: config::Config) -> std::io::Result<()> {
    let sink = raopd::output::open(&cfg.output)
        .map_err(|e| std::io::Error::new(e.kind(), format!("output {}: {e}", cfg.output)))?;
    let output_problem = check_output(&cfg)?;
    let mac = cfg
        .mac
        .or_else(mdns::mac_of_default_interface)
        .unwrap_or(FALLBACK_MAC);
    // One RTSP listener per `--interface` (tied to that device), or one on all of them.
    let ifaces: Vec<Option<Rc<str>>> = if cfg.interfaces.is_empty() {
        vec![None]
    } else {
        cfg.interfaces
            .iter()
            .map(|i| Some(Rc::from(i.as_str())))
            .collect()
    };
    let mut listeners = Vec::new();
    for iface in ifaces {
        let listener = raopd::bind::tcp_listener(iface.as_deref(), cfg.port).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "; another program listens there (another raopd, shairport-sync?): \
                     `ss -ltnp` shows which; choose another --port"
                }
                std::io::ErrorKind::PermissionDenied => "; ports below 1024 need root",
                _ => "",
            };
            std::io::Error::new(e.kind(), format!("RTSP port {}: {e}{hint}", cfg.port))
        })?;
        listeners.push((raopd::reactor::Async::new(listener)?, iface));
    }
    let mut signals = raopd::reactor::Signals::new(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP])?;
    let (reload_tx, reload_rx) = async_channel::bounded::<()>(1);
    let ex = Rc::new(async_executor::LocalExecutor::new());
    if cfg.mdns && config::announced_name(&cfg.name) != cfg.name {
        log::warn!(
            "--name \"{}\" is {} bytes of UTF-8; mDNS carries {} after the MAC@ prefix, so \
             senders list it as \"{}\"",
            cfg.name,
            cfg.name.len(),
            mdns::MAX_ANNOUNCED_NAME_BYTES,
            config::announced_name(&cfg.name)
        );
    }
    log::info!(target: START_TARGET, "{}", start_line(&cfg, output_problem.is_some()));
    let daemon = Daemon::new(cfg, mac, sink, ex.clone());
    daemon.set_output_problem(output_problem);
    let control_socket = daemon.cfg.control.socket.as_deref().and_then(|p| {
        // The speaker works without the socket: a read-only /var/run is not fatal.
        raopd::control::ControlSocket::bind(p)
            .map_err(|e| log::warn!("control socket {}: {e}", p.display()))
            .ok()
    });
    if daemon.hooks.borrow().configured() {
        ex.spawn(raopd::control::hooks::run_ticks(daemon.hooks.clone()))
            .detach();
    }
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let mdns_task = daemon.cfg.mdns.then(|| {
        let service = mdns::Service {
            instance_name: daemon.cfg.name.clone(),
            mac,
            port: daemon.cfg.port,
            txt: mdns::raop_txt(daemon.cfg.password.is_some(), env!("CARGO_PKG_VERSION")),
            hostname: String::new(),
            addrs: Vec::new(),
        };
        let stop = stop_rx.clone();
        let only = daemon.cfg.interfaces.clone();
        let seen = daemon.clone();
        ex.spawn(async move {
            if let Err(e) = mdns::run(
                service,
                only,
                async move { stop.recv().await.unwrap_or(()) },
                move |src, packet| seen.mdns_response(src, packet),
                Some(reload_rx),
            )
            .await
            {
                log::error!("mDNS: {e}");
            }
        })
    });
    // The RTSP listener, the control socket and the signals each run as their own task: the
    // executor polls a task only when it was woken, whereas a future raced inside the main
    // one would be polled, and its socket tried (an accept or read per try), on every wakeup
    // of every stream packet.
    let serve = ex.spawn({
        let serving: Vec<_> = listeners
            .into_iter()
            .map(|(listener, iface)| ex.spawn(daemon.clone().serve(listener, iface)))
            .collect();
        async move {
            let mut all: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> =
                Box::pin(future::pending());
            for task in serving {
                all = Box::pin(future::or(all, task));
            }
            all.await
        }
    });
    // The control socket lives in its task: cancelling the task at shutdown drops it, and
    // with it the socket file.
    let control = ex.spawn({
        let handler: Rc<dyn raopd::control::ControlHandler> = daemon.clone();
        let ex = ex.clone();
        async move {
            match &control_socket {
                Some(sock) => sock.serve(handler, &ex).await,
                None => future::pending().await,
            }
        }
    });
    // SIGHUP reloads what can change under a running daemon: the interfaces (mDNS re-reads
    // them and re-announces) and the output (probed now; it is opened afresh for every
    // stream anyway). A playing stream is not interrupted. Other settings come from the
    // command line (procd restarts the service when the UCI configuration changes).
    let signal = ex.spawn({
        let daemon = daemon.clone();
        async move {
            while let Ok(sig) = signals.next().await {
                if sig == libc::SIGHUP {
                    log::warn!("SIGHUP: re-reading interfaces, checking the output");
                    let _ = reload_tx.try_send(());
                    daemon.recheck_output();
                    continue;
                }
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                log::info!("{name}: shutting down");
                break;
            }
            Ok(())
        }
    });
    raopd::reactor::block_on(ex.run(async {
        let r = future::or(future::or(serve, control), signal).await;
        // An amplifier switched on by --on-start is switched off on exit too.
        daemon.hooks.borrow_mut().shutdown();
        // Goodbye packets go out before we exit.
        drop(stop_tx);
        if let Some(t) = mdns_task {
            t.await;
        }
        r
    }))
}
