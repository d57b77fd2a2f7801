//! Capture side of a kernel ALSA device, served over TCP: the guest half of the firmware-image
//! test (`tests/image.rs`, `scripts/build-image.sh`).
//!
//! `loopback_capture DEVICE PORT` listens on TCP `PORT`. Each client that connects gets the raw
//! audio captured from `DEVICE` (e.g. `hw:Loopback,1,0`, the other side of the `snd-aloop`
//! device raopd plays into) from the moment it connected until it disconnects: S16 in host byte
//! order, 2 channels, 44100 Hz, no header. The PCM is opened per connection and closed after it,
//! so raopd and the capture never hold parameters of an old session.
//!
//! The hardware parameters are raopd's own (period 1024 frames, buffer 8192 frames, see
//! `src/output/alsa.rs`): `snd-aloop` requires both sides of a cable to agree on them. An
//! overrun loses audio, so it ends the connection (and is logged) rather than being papered
//! over: a test that compares the capture bit for bit must see an incomplete capture as such.

#[cfg(feature = "alsa")]
fn main() {
    use std::io::Write;
    use std::net::TcpListener;

    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: {} DEVICE PORT", args[0]);
        std::process::exit(2);
    }
    let (device, port) = (&args[1], &args[2]);
    let listener = TcpListener::bind(format!("0.0.0.0:{port}")).unwrap_or_else(|e| {
        eprintln!("loopback_capture: cannot listen on port {port}: {e}");
        std::process::exit(1);
    });
    eprintln!("loopback_capture: serving {device} on TCP port {port}");
    for conn in listener.incoming() {
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("loopback_capture: accept: {e}");
                continue;
            }
        };
        let _ = conn.set_nodelay(true);
        let pcm = match open(device) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("loopback_capture: cannot open {device}: {e}");
                continue;
            }
        };
        let io = match pcm.io_i16() {
            Ok(io) => io,
            Err(e) => {
                eprintln!("loopback_capture: {e}");
                continue;
            }
        };
        let mut buf = vec![0i16; 1024 * 2];
        let mut frames: u64 = 0;
        let why = loop {
            match io.readi(&mut buf) {
                Ok(n) => {
                    let bytes: Vec<u8> =
                        buf[..n * 2].iter().flat_map(|s| s.to_ne_bytes()).collect();
                    if let Err(e) = conn.write_all(&bytes) {
                        break format!("client gone ({e})");
                    }
                    frames += n as u64;
                }
                Err(e) if e.errno() == libc::EPIPE => break "overrun: audio lost".to_string(),
                Err(e) if e.errno() == libc::EINTR => {}
                Err(e) => break format!("read: {e}"),
            }
        };
        eprintln!("loopback_capture: {frames} frames sent; {why}");
    }
}

#[cfg(feature = "alsa")]
fn open(device: &str) -> Result<alsa::PCM, alsa::Error> {
    use alsa::pcm::{Access, Format, HwParams};
    use alsa::{Direction, ValueOr};

    let pcm = alsa::PCM::new(device, Direction::Capture, false)?;
    {
        let hw = HwParams::any(&pcm)?;
        hw.set_access(Access::RWInterleaved)?;
        hw.set_format(Format::s16())?;
        hw.set_channels(2)?;
        hw.set_rate(44_100, ValueOr::Nearest)?;
        hw.set_period_size_near(1024, ValueOr::Nearest)?;
        hw.set_buffer_size_near(8192)?;
        pcm.hw_params(&hw)?;
    }
    pcm.start()?;
    Ok(pcm)
}

#[cfg(not(feature = "alsa"))]
fn main() {
    eprintln!("loopback_capture needs the `alsa` feature");
    std::process::exit(2);
}
