//! The RTSP control connection: framing ([`message`]), SDP ([`sdp`]), Digest auth
//! ([`auth`]) and the per-connection state machine ([`session`]).

pub mod auth;
pub mod message;
pub mod sdp;
pub mod session;

pub use message::{parse_request, Request, Response};
pub use session::{ConnectionInfo, Session, SessionIo, StreamSetup, UdpPorts};
