//! `raopd`: the daemon's entry point. Parses the command line, opens the output, and
//! runs everything on one smol `LocalExecutor` on this thread.

use futures_lite::{future, StreamExt};
use raopd::config::{self, Command};
use raopd::mdns;
use raopd::server::Daemon;
use std::net::TcpListener;
use std::process::ExitCode;
use std::rc::Rc;

/// Used when neither `--mac` nor a network interface gives one (a loopback-only host).
const FALLBACK_MAC: [u8; 6] = [0x02, 0x52, 0x41, 0x4f, 0x50, 0x44];

fn main() -> ExitCode {
    let cfg = match config::parse_args(std::env::args().skip(1)) {
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
    let listener = TcpListener::bind(("0.0.0.0", cfg.port))
        .map_err(|e| std::io::Error::new(e.kind(), format!("RTSP port {}: {e}", cfg.port)))?;
    let listener = async_io::Async::new(listener)?;
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])?;
    let ex = Rc::new(smol::LocalExecutor::new());
    let daemon = Daemon::new(cfg, mac, sink, ex.clone());
    log::info!(
        "raopd {} listening on port {}",
        env!("CARGO_PKG_VERSION"),
        daemon.cfg.port
    );
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
        ex.spawn(async move {
            if let Err(e) = mdns::run(service, Vec::new(), async move {
                stop.recv().await.unwrap_or(())
            })
            .await
            {
                log::error!("mDNS: {e}");
            }
        })
    });
    smol::block_on(ex.run(async {
        let serve = async { daemon.clone().serve(listener).await };
        let signal = async {
            if let Some(Ok(sig)) = signals.next().await {
                log::info!("{sig:?}: shutting down");
            }
            Ok(())
        };
        let r = future::or(serve, signal).await;
        // Goodbye packets go out before we exit.
        drop(stop_tx);
        if let Some(t) = mdns_task {
            t.await;
        }
        r
    }))
}
