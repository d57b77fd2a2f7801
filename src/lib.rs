//! raopd: an AirPlay 1 (RAOP) audio receiver.
//!
//! The data path reads top to bottom:
//! [`mdns`] announces the speaker, [`rtsp`] negotiates a session, [`rtp`] parses the UDP
//! packets, [`crypto`] decrypts them, [`codec`] decodes them, [`buffer`] reorders them by
//! sequence number, [`clock`] maps sender time to local time, [`output`] plays them, and
//! [`server`] exposes state to the outside. [`speaker`] decides who holds the speaker.
//! [`stream`] is one stream's sans-IO core (packets, clock, renderer). [`player`] and
//! [`server`] are the I/O edge that drives the sans-IO cores from one thread, on the epoll
//! [`reactor`].

/// The sample rate of everything raopd handles, in frames per second (and RTP ticks per
/// second): AirPlay 1 streams are always 44.1 kHz. The one definition; SDP, the clock model,
/// the renderer and the sinks all use it.
pub const RATE: u32 = 44_100;

pub mod bind;
pub mod buffer;
pub mod clock;
pub mod codec;
pub mod config;
pub mod control;
pub mod crypto;
pub mod fatal;
pub mod mdns;
pub mod output;
pub mod player;
pub mod reactor;
pub mod rtp;
pub mod rtsp;
pub mod server;
pub mod speaker;
pub mod stream;
