//! `raopd`: the daemon's entry point. Parses the command line, opens the output, and
//! runs everything on one smol `LocalExecutor` on this thread.

use futures_lite::{future, StreamExt};
use raopd::config::{self, Command};
use raopd::mdns;
use raopd::server::Daemon;
use std::process::ExitCode;
use std::rc::Rc;

/// Used when neither `--mac` nor a network interface gives one (a loopback-only host).
const FALLBACK_MAC: [u8; 6] = [0x02, 0x52, 0x41, 0x4f, 0x50, 0x44];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `raopd status [--control-socket PATH]`, `raopd ctl CMD [--control-socket PATH]`.
    if let Some(request) = match args.first().map(String::as_str) {
        Some("status") => Some("status".to_string()),
        Some("ctl") => Some("help".to_string()),
        _ => None,
    } {
        let mut request = request;
        let mut path = std::path::PathBuf::from(raopd::control::DEFAULT_SOCKET);
        let mut rest = args.iter().skip(1);
        let mut word_seen = args[0] == "status";
        while let Some(a) = rest.next() {
            match (a.strip_prefix("--control-socket="), a.as_str()) {
                (Some(p), _) => path = p.into(),
                (None, "--control-socket") => match rest.next() {
                    Some(p) => path = p.into(),
                    None => {
                        eprintln!("raopd: --control-socket needs a path");
                        return ExitCode::from(2);
                    }
                },
                _ if !word_seen => {
                    request = a.clone();
                    word_seen = true;
                }
                _ => {
                    eprintln!("raopd: unexpected argument {a}");
                    return ExitCode::from(2);
                }
            }
        }
        return raopd::control::client_main(&path, &request);
    }
    let mut cfg = match config::parse_args(args) {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Version) => {
            println!("raopd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help) => {
            println!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("raopd: {e}\n{}", config::USAGE);
            return ExitCode::from(2);
        }
    };
    // The OpenWrt init script hands the password over in the environment, where `ps` does
    // not show it; it is removed at once so that --on-start/--on-stop hooks do not inherit it.
    if let Some(pw) = std::env::var_os("RAOPD_PASSWORD") {
        std::env::remove_var("RAOPD_PASSWORD");
        if cfg.password.is_none() && !pw.is_empty() {
            cfg.password = Some(pw.to_string_lossy().into_owned());
        }
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raopd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: config::Config) -> std::io::Result<()> {
    let sink = raopd::output::open(&cfg.output)
        .map_err(|e| std::io::Error::new(e.kind(), format!("output {}: {e}", cfg.output)))?;
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
        let listener = raopd::bind::tcp_listener(iface.as_deref(), cfg.port)
            .map_err(|e| std::io::Error::new(e.kind(), format!("RTSP port {}: {e}", cfg.port)))?;
        listeners.push((async_io::Async::new(listener)?, iface));
    }
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])?;
    let ex = Rc::new(smol::LocalExecutor::new());
    let daemon = Daemon::new(cfg, mac, sink, ex.clone());
    log::info!(
        "raopd {} listening on port {}",
        env!("CARGO_PKG_VERSION"),
        daemon.cfg.port
    );
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
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
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
        ex.spawn(async move {
            if let Err(e) = mdns::run(
                service,
                only,
                async move { stop.recv().await.unwrap_or(()) },
            )
            .await
            {
                log::error!("mDNS: {e}");
            }
        })
    });
    smol::block_on(ex.run(async {
        let serve = async {
            let mut all: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> =
                Box::pin(future::pending());
            for (listener, iface) in listeners {
                all = Box::pin(future::or(all, daemon.clone().serve(listener, iface)));
            }
            all.await
        };
        // Served inside this future (not a detached task) so that the socket, and with it
        // the socket file, goes away when the daemon shuts down.
        let control = async {
            match &control_socket {
                Some(sock) => {
                    let handler: Rc<dyn raopd::control::ControlHandler> = daemon.clone();
                    sock.serve(handler, &ex).await
                }
                None => future::pending().await,
            }
        };
        let serve = future::or(serve, control);
        let signal = async {
            if let Some(Ok(sig)) = signals.next().await {
                log::info!("{sig:?}: shutting down");
            }
            Ok(())
        };
        let r = future::or(serve, signal).await;
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
