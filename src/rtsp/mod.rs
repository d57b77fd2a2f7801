//! The RTSP control connection: framing ([`message`]), SDP ([`sdp`]), Digest auth
//! ([`auth`]) and the per-connection state machine ([`session`]).
//!
//! Everything here reads what senders send: no panic on input (issue 11).
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

pub mod auth;
pub mod message;
pub mod sdp;
pub mod session;

pub use message::{parse_request, Request, Response};
pub use session::{
    Answer, Claim, ConnectionInfo, Effect, Question, Reply, Session, StreamSetup, UdpPorts,
};
