//! The local control interface: a Unix stream socket with a line protocol.
//!
//! Requests are plain words, one per line (`status`, `play`, `next`, …; see [`handle_line`]).
//! Words instead of JSON requests keep the parser to a `match` and let a shell script talk to
//! the daemon with `echo status | nc -U /var/run/raopd.sock`. Every request line gets exactly
//! one reply line, a JSON object: the status object, or `{"ok":true}` /
//! `{"ok":false,"error":"…"}`. A bad request is answered with an error and the connection
//! stays open.
//!
//! The socket is the only way into the daemon besides RTSP, so it is bounded: request lines
//! of at most [`MAX_LINE`] bytes, at most [`MAX_CLIENTS`] connections at once, connections
//! idle between requests closed after [`CLIENT_IDLE`], a request line that is not complete
//! [`REQUEST_TIMEOUT`] after its first byte answered with an error and its connection closed
//! (a client trickling a byte at a time cannot hold a slot), and file mode 0660 so that only
//! root and the daemon's group can connect. Everything runs as tasks on the daemon's
//! `LocalExecutor`.
//!
//! The timeouts follow OpenWrt's own local servers: uhttpd closes a keep-alive connection
//! after 20 s without a request (`http_keepalive`), and the RTSP side gives a request 10 s
//! from its first byte. Real clients send their one line at once (`raopd status`, a script's
//! `nc -U`; a terminal sends a typed line whole when Enter is pressed).
//!
//! Request lines come from clients: no panic on input (issue 11).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable
    )
)]

use super::json::{ok_reply, JsonWriter};
use crate::config::ctl::RemoteCommand;
use crate::reactor::{Async, Timer};
use async_executor::LocalExecutor;
use futures_lite::future::{self, BoxedLocal};
use futures_lite::{AsyncReadExt, AsyncWriteExt, Future};
use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use crate::config::ctl::DEFAULT_SOCKET;
/// Longest request line. Real requests are a single word; this only bounds memory.
pub const MAX_LINE: usize = 1024;
/// Connections served at once; more are answered with an error and closed.
pub const MAX_CLIENTS: usize = 8;
/// A connection that sends nothing for this long between requests is closed, freeing its
/// slot (uhttpd's default keep-alive timeout on OpenWrt).
pub const CLIENT_IDLE: Duration = Duration::from_secs(20);
/// A request line must be complete this long after its first byte arrived, or the client gets
/// an error and the connection is closed (as RTSP's [`crate::server::REQUEST_TIMEOUT`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply the client does not read within this time ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the command-line client waits: a remote command may need an mDNS lookup and
/// an HTTP exchange with the sender first.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);
/// Socket file permissions: owner and group may connect.
const SOCKET_MODE: u32 = 0o660;

/// What the daemon offers to the control socket.
pub trait ControlHandler {
    /// The reply to `status`: one JSON object (see [`super::status_json`]), no newline.
    fn status_json(&self) -> String;
    /// Carries out a remote command. The future resolves once the sender has answered, so
    /// the client learns whether the command worked; `Err` is a message for the user.
    fn remote(&self, cmd: RemoteCommand) -> BoxedLocal<Result<(), String>>;
}

/// The bound socket. Dropping it removes the socket file.
#[derive(Debug)]
pub struct ControlSocket {
    listener: Async<UnixListener>,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds the socket at `path`. A socket file left by a daemon that died is removed
    /// first; a live one (something accepts connections on it) or a path that is not a
    /// socket is an error rather than something to delete.
    pub fn bind(path: &Path) -> io::Result<Self> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is in use by another process", path.display()),
                    ));
                }
                log::debug!("removing stale control socket {}", path.display());
                std::fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
        log::info!("control socket at {}", path.display());
        Ok(ControlSocket {
            listener: Async::new(listener)?,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections forever, one task on `ex` per connection.
    pub async fn serve(
        &self,
        handler: Rc<dyn ControlHandler>,
        ex: &Rc<LocalExecutor<'static>>,
    ) -> io::Result<()> {
        let clients = Rc::new(Cell::new(0usize));
        loop {
            let (mut stream, _) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    log::warn!("control socket: accept: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if clients.get() >= MAX_CLIENTS {
                let reply = line(&ok_reply(Err("too many clients")));
                ex.spawn(async move {
                    let _ = with_timeout(WRITE_TIMEOUT, stream.write_all(reply.as_bytes())).await;
                })
                .detach();
                continue;
            }
            let slot = ClientSlot::take(&clients);
            let handler = handler.clone();
            ex.spawn(async move {
                client(stream, handler).await;
                drop(slot);
            })
            .detach();
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` and serves it forever (see [`ControlSocket`]). The socket file is removed
/// when the returned future is dropped.
pub async fn serve(
    path: &Path,
    handler: Rc<dyn ControlHandler>,
    ex: &Rc<LocalExecutor<'static>>,
) -> io::Result<()> {
    ControlSocket::bind(path)?.serve(handler, ex).await
}

/// One connection's claim on a client slot, given back when the connection ends.
struct ClientSlot(Rc<Cell<usize>>);

impl ClientSlot {
    fn take(count: &Rc<Cell<usize>>) -> Self {
        count.set(count.get() + 1);
        ClientSlot(count.clone())
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// `None` if `fut` did not finish within `t`.
async fn with_timeout<T>(t: Duration, fut: impl Future<Output = T>) -> Option<T> {
    with_deadline(Instant::now() + t, fut).await
}

/// `None` if `fut` did not finish by `deadline`.
async fn with_deadline<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        Timer::at(deadline).await;
        None
    })
    .await
}

fn line(reply: &str) -> String {
    let mut s = String::with_capacity(reply.len() + 1);
    s.push_str(reply);
    s.push('\n');
    s
}

/// Writes one reply line; `false` if the client is gone or does not read.
async fn send_line(stream: &mut Async<UnixStream>, reply: &str) -> bool {
    let out = line(reply);
    matches!(
        with_timeout(WRITE_TIMEOUT, stream.write_all(out.as_bytes())).await,
        Some(Ok(()))
    )
}

/// One item from a [`LineReader`].
#[doc(hidden)]
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A request line, without its newline; at most [`MAX_LINE`] bytes.
    Request(Vec<u8>),
    /// A line longer than [`MAX_LINE`] began: answer once, its rest is skipped.
    TooLong,
}

/// Splits the bytes of one connection into request lines, holding at most [`MAX_LINE`]
/// bytes of an unfinished line (sans-IO, so the fuzz target drives the same code).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
    /// The rest of an over-long line, already answered, is being skipped.
    skipping: bool,
}

impl LineReader {
    /// Appends bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held of lines not yet complete.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a line has begun and not ended: bytes of it are held, or the rest of an
    /// over-long one is being skipped.
    pub fn in_line(&self) -> bool {
        !self.buf.is_empty() || self.skipping
    }

    /// The next complete line, or the notice of an over-long one; `None` when more bytes
    /// are needed.
    pub fn next_line(&mut self) -> Option<Line> {
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let request: Vec<u8> = self.buf.drain(..=i).take(i).collect();
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            return Some(if request.len() > MAX_LINE {
                Line::TooLong
            } else {
                Line::Request(request)
            });
        }
        if self.buf.len() > MAX_LINE {
            self.buf.clear();
            if !self.skipping {
                self.skipping = true;
                return Some(Line::TooLong);
            }
        }
        None
    }
}

/// Serves one connection: reads request lines, answers each in order. Between requests it
/// waits at most [`CLIENT_IDLE`]; a line begun must end within [`REQUEST_TIMEOUT`].
async fn client(mut stream: Async<UnixStream>, handler: Rc<dyn ControlHandler>) {
    let mut lines = LineReader::default();
    let mut chunk = [0u8; 512];
    // When the first byte of the line not yet complete arrived, and the last read.
    let mut line_started: Option<Instant> = None;
    let mut last_read = Instant::now();
    loop {
        let mut completed = false;
        while let Some(line) = lines.next_line() {
            completed = true;
            let reply = match line {
                Line::Request(request) => handle_line(&request, handler.as_ref()).await,
                Line::TooLong => ok_reply(Err("request too long")),
            };
            if !send_line(&mut stream, &reply).await {
                return;
            }
        }
        if !lines.in_line() {
            line_started = None;
        } else if completed {
            // The rest of the last read began the next line.
            line_started = Some(last_read);
        }
        let deadline = match line_started {
            Some(t) => t + REQUEST_TIMEOUT,
            None => Instant::now() + CLIENT_IDLE,
        };
        match with_deadline(deadline, stream.read(&mut chunk)).await {
            Some(Ok(0)) | Some(Err(_)) => return,
            Some(Ok(n)) => {
                last_read = Instant::now();
                lines.push(chunk.get(..n).unwrap_or_default());
                line_started.get_or_insert(last_read);
            }
            None if line_started.is_some() => {
                log::debug!(
                    "control socket: request not complete {REQUEST_TIMEOUT:?} after its first \
                     byte: closing"
                );
                send_line(&mut stream, &ok_reply(Err("request timeout"))).await;
                return;
            }
            None => return,
        }
    }
}

/// The reply to one request line (without its newline). Requests are case-insensitive
/// words; surrounding white space (and the `\r` of a CRLF line) is ignored.
///
/// - `status`: the daemon's status object.
/// - `play`, `pause`, `playpause`, `next`, `previous`, `volumeup`, `volumedown`, `stop`:
///   sent to the sender as DACP commands; `{"ok":true}` once the sender accepted.
/// - `help`: `{"ok":true,"commands":[…]}`.
pub async fn handle_line(request: &[u8], handler: &dyn ControlHandler) -> String {
    let Ok(request) = std::str::from_utf8(request) else {
        return ok_reply(Err("request is not UTF-8"));
    };
    let word = request.trim();
    if word.is_empty() {
        return ok_reply(Err("empty request"));
    }
    if word.eq_ignore_ascii_case("status") {
        return handler.status_json();
    }
    if word.eq_ignore_ascii_case("help") {
        let mut w = JsonWriter::new();
        w.begin_object().key("ok").bool(true).key("commands");
        w.begin_array().string("status").string("help");
        for c in RemoteCommand::ALL {
            w.string(c.name());
        }
        w.end_array().end_object();
        return w.finish();
    }
    match RemoteCommand::parse(word) {
        Some(cmd) => {
            log::debug!("control socket: {cmd}");
            let r = handler.remote(cmd).await;
            if let Err(e) = &r {
                log::info!("remote control {cmd}: {e}");
            }
            ok_reply(r.as_ref().map(|_| ()).map_err(|e| e.as_str()))
        }
        None => {
            // Echo a bounded, printable part of the word so the user sees the typo.
            let shown: String = word.chars().take(32).filter(|c| !c.is_control()).collect();
            ok_reply(Err(&format!("unknown command: {shown}")))
        }
    }
}

/// Sends one request to a running daemon and returns its reply line (without the newline).
/// Blocking, for the `raopd status` / `raopd ctl CMD` command line.
pub fn client_request(path: &Path, request: &str) -> io::Result<String> {
    let request = request.trim();
    if request.contains('\n') || request.len() > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "one request of one line",
        ));
    }
    request_on(UnixStream::connect(path)?, request)
}

/// [`client_request`] on a connected stream.
fn request_on(mut stream: UnixStream, request: &str) -> io::Result<String> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    if let Err(e) = stream.write_all(format!("{request}\n").as_bytes()) {
        // A daemon with every client slot taken answers "too many clients" and closes at
        // once, without reading: the write may then find the socket closed, but the refusal
        // is waiting to be read.
        if !matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            return Err(e);
        }
    }
    let mut reply = String::new();
    // The status object is the largest reply; a megabyte leaves room for any growth.
    BufReader::new(stream).take(1 << 20).read_line(&mut reply)?;
    if !reply.ends_with('\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection without a reply",
        ));
    }
    reply.pop();
    Ok(reply)
}

/// Whether a reply reports success: everything but `{"ok":false,…}` does (the status
/// object carries no `ok` member).
pub fn reply_ok(reply: &str) -> bool {
    !reply.starts_with(r#"{"ok":false"#)
}

/// The command-line client: prints the reply to stdout. Exit status 0 on success, 1 when
/// the daemon refused the request, 2 when it could not be reached.
pub fn client_main(path: &Path, request: &str) -> std::process::ExitCode {
    match client_request(path, request) {
        Ok(reply) => {
            println!("{reply}");
            if reply_ok(&reply) {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("raopd: {}", unreachable_message(path, &e));
            std::process::ExitCode::from(2)
        }
    }
}

/// One line saying why the daemon could not be asked, and what to check.
pub fn unreachable_message(path: &Path, e: &io::Error) -> String {
    let p = path.display();
    let flag = "or give the --control-socket it was started with";
    match e.kind() {
        io::ErrorKind::NotFound => {
            format!("no control socket at {p}: is raopd running? (start it, {flag})")
        }
        io::ErrorKind::ConnectionRefused => format!(
            "nothing answers at {p}: is raopd running? (the file is left from a daemon that \
             stopped; start raopd, {flag})"
        ),
        io::ErrorKind::PermissionDenied => {
            format!("{p}: permission denied: run this as root or as the user raopd runs as")
        }
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
            "raopd at {p} did not answer within {} s: is it stuck? (`logread -e raopd` or \
             its log says more)",
            CLIENT_TIMEOUT.as_secs()
        ),
        _ => format!("control socket {p}: {e}: is raopd running? ({flag})"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::json::check::valid;
    use super::*;
    use std::cell::RefCell;

    /// A daemon that refused (every slot taken) wrote its answer and closed before the client
    /// wrote its request: the client's write fails, and it still reports the refusal, not an
    /// unreachable daemon (exit status 1, not 2).
    #[test]
    fn a_refusal_sent_before_the_request_is_still_read() {
        let (client, mut daemon) = UnixStream::pair().unwrap();
        daemon
            .write_all(b"{\"ok\":false,\"error\":\"too many clients\"}\n")
            .unwrap();
        drop(daemon);
        let reply = request_on(client, "status").unwrap();
        assert_eq!(reply, r#"{"ok":false,"error":"too many clients"}"#);
        assert!(!reply_ok(&reply));
    }

    /// Records remote commands; `next` fails as a sender without DACP would.
    #[derive(Default)]
    struct Fake {
        sent: RefCell<Vec<RemoteCommand>>,
    }

    impl ControlHandler for Fake {
        fn status_json(&self) -> String {
            r#"{"name":"test","state":"idle"}"#.into()
        }
        fn remote(&self, cmd: RemoteCommand) -> BoxedLocal<Result<(), String>> {
            self.sent.borrow_mut().push(cmd);
            Box::pin(async move {
                Timer::after(Duration::from_millis(5)).await;
                match cmd {
                    RemoteCommand::Next => Err("no remote control".to_string()),
                    _ => Ok(()),
                }
            })
        }
    }

    /// Lines split across reads come out whole; an over-long line is reported once, its
    /// rest skipped up to its newline, and the buffer never holds more than a line.
    #[test]
    fn line_reader_frames_pieces_and_bounds_long_lines() {
        let mut r = LineReader::default();
        assert!(!r.in_line());
        r.push(b"sta");
        assert_eq!(r.next_line(), None);
        assert!(r.in_line(), "a line has begun");
        r.push(b"tus\r\npl");
        assert_eq!(r.next_line(), Some(Line::Request(b"status\r".to_vec())));
        assert_eq!(r.next_line(), None);
        r.push(b"ay\n");
        assert_eq!(r.next_line(), Some(Line::Request(b"play".to_vec())));
        r.push(&[b'x'; MAX_LINE + 1]);
        assert_eq!(r.next_line(), Some(Line::TooLong));
        assert_eq!(r.buffered(), 0);
        assert!(
            r.in_line(),
            "the rest of the over-long line is still to come"
        );
        r.push(&[b'x'; MAX_LINE + 1]);
        assert_eq!(r.next_line(), None);
        r.push(b"xx\nhelp\n");
        assert_eq!(r.next_line(), Some(Line::Request(b"help".to_vec())));
        assert_eq!(r.next_line(), None);
    }

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("raopd-ctl-{}-{tag}.sock", std::process::id()))
    }

    #[test]
    fn lines_and_replies() {
        let h = Fake::default();
        let run = |s: &[u8]| crate::reactor::block_on(handle_line(s, &h));
        assert_eq!(run(b"status"), r#"{"name":"test","state":"idle"}"#);
        assert_eq!(run(b" STATUS\r"), r#"{"name":"test","state":"idle"}"#);
        assert_eq!(run(b"play"), r#"{"ok":true}"#);
        assert_eq!(
            run(b"nextitem"),
            r#"{"ok":false,"error":"no remote control"}"#
        );
        assert_eq!(run(b""), r#"{"ok":false,"error":"empty request"}"#);
        assert_eq!(
            run(b"\xff"),
            r#"{"ok":false,"error":"request is not UTF-8"}"#
        );
        let r = run(b"reboot \"now\"\x01");
        assert_eq!(
            r,
            r#"{"ok":false,"error":"unknown command: reboot \"now\""}"#
        );
        assert!(valid(&r));
        let help = run(b"help");
        assert!(valid(&help), "{help}");
        assert!(help.contains(r#""volumedown""#));
        assert_eq!(
            *h.sent.borrow(),
            vec![RemoteCommand::Play, RemoteCommand::Next]
        );
        assert!(reply_ok(r#"{"ok":true}"#));
        assert!(reply_ok(r#"{"name":"x"}"#));
        assert!(!reply_ok(r#"{"ok":false,"error":"x"}"#));
    }

    /// Runs the socket on a local executor in this thread while `client` talks to it from
    /// another (test-only) thread.
    fn with_server(tag: &str, client: impl FnOnce(PathBuf) + Send + 'static) -> Rc<Fake> {
        let path = temp_path(tag);
        let handler = Rc::new(Fake::default());
        let ex = Rc::new(LocalExecutor::new());
        let sock = ControlSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        let p = path.clone();
        let t = std::thread::spawn(move || client(p));
        let h: Rc<dyn ControlHandler> = handler.clone();
        crate::reactor::block_on(ex.run(async {
            let serve = sock.serve(h, &ex);
            let done = async {
                while !t.is_finished() {
                    Timer::after(Duration::from_millis(5)).await;
                }
                Ok(())
            };
            future::or(serve, done).await.unwrap();
        }));
        drop(sock);
        assert!(!path.exists(), "socket file removed on drop");
        handler
    }

    #[test]
    fn socket_round_trip_with_the_blocking_client() {
        let h = with_server("client", |p| {
            assert_eq!(
                client_request(&p, "status").unwrap(),
                r#"{"name":"test","state":"idle"}"#
            );
            assert_eq!(client_request(&p, "pause\n").unwrap(), r#"{"ok":true}"#);
            assert!(client_request(&p, "a\nb").is_err());
        });
        assert_eq!(*h.sent.borrow(), vec![RemoteCommand::Pause]);
    }

    #[test]
    fn long_and_bad_lines_keep_the_connection() {
        with_server("long", |p| {
            let mut s = UnixStream::connect(&p).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut next = || {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                l
            };
            // A long line sent in pieces, then a complete long line, then normal requests.
            s.write_all(&vec![b'x'; 3000]).unwrap();
            assert_eq!(next(), "{\"ok\":false,\"error\":\"request too long\"}\n");
            s.write_all(&[vec![b'y'; 500], b"\n".to_vec()].concat())
                .unwrap();
            let mut long = vec![b'z'; MAX_LINE + 1];
            long.push(b'\n');
            s.write_all(&long).unwrap();
            assert_eq!(next(), "{\"ok\":false,\"error\":\"request too long\"}\n");
            s.write_all(b"bogus\nstatus\n\nplay\n").unwrap();
            assert_eq!(
                next(),
                "{\"ok\":false,\"error\":\"unknown command: bogus\"}\n"
            );
            assert_eq!(next(), "{\"name\":\"test\",\"state\":\"idle\"}\n");
            assert_eq!(next(), "{\"ok\":false,\"error\":\"empty request\"}\n");
            assert_eq!(next(), "{\"ok\":true}\n");
        });
    }

    #[test]
    fn clients_are_bounded() {
        with_server("many", |p| {
            let held: Vec<UnixStream> = (0..MAX_CLIENTS)
                .map(|_| {
                    let mut s = UnixStream::connect(&p).unwrap();
                    // A request answered proves the connection holds a slot.
                    s.write_all(b"status\n").unwrap();
                    let mut b = [0u8; 64];
                    let _ = s.read(&mut b).unwrap();
                    s
                })
                .collect();
            let reply = client_request(&p, "status").unwrap();
            assert_eq!(reply, r#"{"ok":false,"error":"too many clients"}"#);
            drop(held);
            // Slots come back once the server has seen the connections close.
            let mut ok = false;
            for _ in 0..200 {
                if client_request(&p, "status").is_ok_and(|r| reply_ok(&r)) {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(ok);
        });
    }

    #[test]
    fn stale_socket_is_replaced_but_live_or_foreign_files_are_not() {
        let path = temp_path("stale");
        let _ = std::fs::remove_file(&path);
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a dead daemon's socket file");
        let live = ControlSocket::bind(&path).unwrap();
        let e = ControlSocket::bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        drop(live);
        std::fs::write(&path, b"not a socket").unwrap();
        let e = ControlSocket::bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
        std::fs::remove_file(&path).unwrap();
        assert!(client_request(&path, "status").is_err());
    }
}
