//! One stream's logic, sans-IO (in the style of str0m): everything a RAOP stream does between
//! its three UDP sockets and the sink, with no socket, sink, timer or thread of its own.
//!
//! What it is: the per-stream state (decryption, decoding, the jitter buffer it borrows, the
//! clock model, the [`Renderer`] and the volume), fed with what the edge received and when:
//! [`Stream::handle_audio`], [`Stream::handle_control`], [`Stream::handle_timing`], the RTSP
//! session's commands ([`Stream::record`], [`Stream::flush`], [`Stream::set_volume`]) and the
//! sink's readings. What it wants done comes out as values: datagrams to send
//! ([`Stream::poll_transmit`]: resend requests to the sender's control port, timing requests to
//! its timing port), what to do with the sink next ([`Stream::poll_output`]: open it, read it,
//! write a period of frames the core produced, stop it), and when to be woken
//! ([`Stream::poll_timeout`]).
//!
//! What it is not: it never reads a socket or a clock, never calls the sink, never sleeps.
//! `player` is the edge that does those on the reactor thread; the unit tests below drive the
//! core with bytes and instants only.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

pub mod render;

pub use render::{Output, RenderStats, Renderer, SinkReading};

use crate::buffer::{BufferStats, Insert, JitterBuffer};
use crate::clock::{instant_of, ns_of, ClockConfig, ClockModel, ClockStats, LatencyRule};
use crate::codec::Decoder;
use crate::crypto::AudioCipher;
use crate::output::{Mixer, SoftMixer};
use crate::rtp::{self, payload_type as pt};
use crate::rtsp::StreamSetup;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How often a timing request goes to the sender (RAOP senders expect about one per 3 s), in
/// nanoseconds.
const TIMING_INTERVAL_NS: u64 = 3_000_000_000;

/// A stream's settings from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Latency used when the sender states none (`--latency`), in frames.
    pub default_latency_frames: u32,
    /// Added to every due instant (`--latency-offset`), in ms (positive: later).
    pub latency_offset_ms: i64,
    /// No packet from the sender for this long ends the stream ([`Stream::is_timed_out`]).
    pub session_timeout: Duration,
}

/// A stream's statistics, shared with the status interface (`control`) through `server`. A
/// new stream starts from zero.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    /// The jitter buffer's counters (packets).
    pub buffer: BufferStats,
    /// The renderer's counters (frames, µs).
    pub render: RenderStats,
    /// The clock model's state; `None` before the first reading.
    pub clock: Option<ClockStats>,
    /// Datagrams that did not parse as what their socket carries.
    pub garbage_packets: u64,
    /// Datagrams from a host other than the session's sender, dropped.
    pub foreign_packets: u64,
    /// Timing requests sent to the sender.
    pub timing_requests: u64,
    /// Audio packets that did not decode (played as silence).
    pub decode_errors: u64,
    /// Underruns the sink counted during this stream (set by the edge, which owns the sink).
    pub underruns: u64,
}

impl StreamStats {
    /// One line of `key=value` pairs: logged when a stream ends (tests read it) and
    /// periodically at debug level.
    pub fn summary(&self) -> String {
        let (b, r) = (&self.buffer, &self.render);
        let c = self.clock.as_ref();
        format!(
            "start_error_us={} sync_error_us={} max_sync_error_us={} frames_inserted={} frames_dropped={} resyncs={} \
             frames_written={} silence_frames={} received={} lost={} late={} duplicates={} requested={} recovered={} \
             resend_requests={} underruns={} decode_errors={} garbage_packets={} foreign_packets={} drift_ppm={:.1} \
             clock_offset_samples={} timing_requests={} latency_frames={} sync_outliers={} reanchors={} \
             late_restarts={} late_delay_ms={}",
            r.start_error_us,
            r.sync_error_us,
            r.max_sync_error_us,
            r.frames_inserted,
            r.frames_dropped,
            r.resyncs,
            r.frames_written,
            r.silence_frames,
            b.received,
            b.lost,
            b.late,
            b.duplicates,
            b.requested,
            b.recovered,
            b.resend_requests,
            self.underruns,
            self.decode_errors,
            self.garbage_packets,
            self.foreign_packets,
            c.map_or(0.0, |c| c.drift_ppm),
            c.map_or(0, |c| c.samples),
            self.timing_requests,
            c.map_or(0, |c| c.latency_frames),
            c.map_or(0, |c| c.sync_outliers),
            c.map_or(0, |c| c.reanchors),
            r.late_restarts,
            r.late_delay_ms,
        )
    }
}

/// Which of the stream's sockets a datagram goes out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The control socket (resend requests, payload type 0x55).
    Control,
    /// The timing socket (timing requests, payload type 0x52).
    Timing,
}

/// A datagram the core wants sent ([`Stream::poll_transmit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The socket to send it from.
    pub via: Via,
    /// The sender's port it goes to.
    pub to: SocketAddr,
    len: usize,
    buf: [u8; rtp::TIMING_LEN],
}

impl Transmit {
    /// The datagram's bytes (8 for a resend request, 32 for a timing request).
    pub fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }
}

/// Why the core could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError(pub String);

/// One stream's sans-IO core (module docs). Borrows the speaker's jitter buffer, which outlives
/// streams (allocated once).
pub struct Stream<'b> {
    client_ip: IpAddr,
    decoder: Decoder,
    cipher: Option<AudioCipher>,
    clock: ClockModel,
    buffer: &'b mut JitterBuffer,
    renderer: Renderer,
    mixer: SoftMixer,
    control_peer: Option<SocketAddr>,
    timing_peer: Option<SocketAddr>,
    stats: StreamStats,
    session_timeout: Duration,
    last_heard: Instant,
    first_packet_seen: bool,
    /// A timing reply has come with the kernel's arrival stamp (logged once).
    stamped: bool,
}

/// IPv4 peers may show up as v4-mapped IPv6 addresses on dual-stack sockets.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl<'b> Stream<'b> {
    /// A stream as SETUP described it, starting at `now` at `volume_db` (AirPlay dB). The
    /// buffer is reset for the stream's packet size and its statistics start from zero.
    pub fn new(
        setup: &StreamSetup,
        cfg: &StreamConfig,
        buffer: &'b mut JitterBuffer,
        volume_db: f32,
        now: Instant,
    ) -> Result<Self, SetupError> {
        let decoder = Decoder::new(&setup.format).map_err(SetupError)?;
        buffer.reset(setup.format.frames_per_packet as usize);
        // The buffer outlives the stream: its statistics start from zero.
        buffer.stats = Default::default();
        let mut mixer = SoftMixer::default();
        mixer.set_volume(volume_db);
        let peer = |port: u16| (port != 0).then_some(SocketAddr::new(setup.client_ip, port));
        Ok(Stream {
            client_ip: setup.client_ip,
            decoder,
            cipher: setup.aes.map(|(k, iv)| AudioCipher::new(k, iv)),
            clock: ClockModel::new(
                ClockConfig {
                    sample_rate: crate::RATE,
                    timing_interval_ns: TIMING_INTERVAL_NS,
                    output_offset_ns: cfg.latency_offset_ms * 1_000_000,
                    default_latency_frames: cfg.default_latency_frames,
                    latency: LatencyRule {
                        airplay_version: setup.airplay_version,
                        min_frames: setup.min_latency,
                        max_frames: setup.max_latency,
                        ..LatencyRule::default()
                    },
                },
                ns_of(now),
            ),
            buffer,
            renderer: Renderer::new(),
            mixer,
            control_peer: peer(setup.client_control_port),
            timing_peer: peer(setup.client_timing_port),
            stats: StreamStats::default(),
            session_timeout: cfg.session_timeout,
            last_heard: now,
            first_packet_seen: false,
            stamped: false,
        })
    }

    /// Only the session's sender may feed the stream; others count as foreign.
    fn accept(&mut self, from: SocketAddr) -> bool {
        let ok = canonical(from.ip()) == canonical(self.client_ip);
        if !ok {
            self.stats.foreign_packets += 1;
        }
        ok
    }

    /// An audio datagram (RTP payload type 0x60) from `from`, received at `now`. Decrypted in
    /// place.
    pub fn handle_audio(&mut self, now: Instant, pkt: &mut [u8], from: SocketAddr) {
        if self.accept(from) {
            self.on_audio(now, pkt);
        }
    }

    fn on_audio(&mut self, now: Instant, pkt: &mut [u8]) {
        let Ok(mut p) = rtp::AudioPacket::new_checked(&mut *pkt) else {
            self.stats.garbage_packets += 1;
            return;
        };
        self.last_heard = now;
        let (seq, ts) = (p.sequence(), p.timestamp());
        if !self.first_packet_seen {
            self.first_packet_seen = true;
            self.clock.handle_first_packet(ts, ns_of(now));
            // Without RECORD's RTP-Info the first packet to arrive starts the stream.
            self.renderer.set_start(ts);
        }
        match self.buffer.insert(seq, ts, ns_of(now)) {
            Insert::Slot(idx) => {
                let payload = p.payload_mut();
                if let Some(c) = &self.cipher {
                    c.decrypt(payload);
                }
                match self.decoder.decode(payload, self.buffer.slot_pcm(idx)) {
                    Ok(frames) => self.buffer.commit(idx, frames),
                    Err(e) => {
                        log::debug!("packet {seq}: {e:?}; played as silence");
                        self.stats.decode_errors += 1;
                        self.buffer.commit_silence(idx);
                    }
                }
            }
            other => log::trace!("packet {seq}: {other:?}"),
        }
    }

    /// A control datagram (sync 0x54, or a retransmitted audio packet 0x56) from `from`,
    /// received at `now`.
    pub fn handle_control(&mut self, now: Instant, pkt: &mut [u8], from: SocketAddr) {
        if !self.accept(from) {
            return;
        }
        match rtp::classify(pkt) {
            Ok(pt::SYNC) => {
                if let Ok(p) = rtp::SyncPacket::new_checked(&*pkt) {
                    self.last_heard = now;
                    let r = rtp::SyncRepr::parse(&p);
                    self.clock.handle_sync(&r, ns_of(now));
                    return;
                }
            }
            Ok(pt::RETRANSMIT) => {
                if let Ok(r) = rtp::RetransmitPacket::new_checked(&*pkt) {
                    let range = r.inner_range();
                    if let Some(inner) = pkt.get_mut(range) {
                        self.on_audio(now, inner);
                        return;
                    }
                }
            }
            _ => {}
        }
        self.stats.garbage_packets += 1;
    }

    /// A timing datagram (a reply, 0x53) from `from`, read at `now`; `arrival` is the kernel's
    /// arrival stamp on our clock when there is one (replies dated when the loop gets to them
    /// would make the return leg look long).
    pub fn handle_timing(
        &mut self,
        now: Instant,
        pkt: &[u8],
        from: SocketAddr,
        arrival: Option<Instant>,
    ) {
        if !self.accept(from) {
            return;
        }
        if arrival.is_some() && !self.stamped {
            self.stamped = true;
            log::debug!("timing replies dated by the kernel's arrival stamps");
        }
        let at = arrival.unwrap_or(now);
        match rtp::TimingPacket::new_checked(pkt) {
            Ok(p) if p.is_reply() => {
                self.last_heard = now;
                self.clock
                    .handle_timing_reply(p.origin(), p.receive(), p.transmit(), ns_of(at));
            }
            _ => self.stats.garbage_packets += 1,
        }
    }

    /// RECORD at `now`: playback starts at `start` (sequence number, RTP timestamp) when
    /// RTP-Info gave them.
    pub fn record(&mut self, now: Instant, start: Option<(u16, u32)>) {
        self.last_heard = now;
        if let Some((seq, ts)) = start {
            self.buffer.start_at(seq);
            self.renderer.set_start(ts);
        }
    }

    /// FLUSH at `now`: drops the audio up to `until` (sequence number, RTP timestamp; all of
    /// it when `None`); the stream starts afresh there. The edge stops the sink.
    pub fn flush(&mut self, now: Instant, until: Option<(u16, u32)>) {
        self.last_heard = now;
        log::info!("flush {until:?}");
        self.buffer.flush(until);
        self.renderer.reset();
        if let Some((_, ts)) = until {
            self.renderer.set_start(ts);
        }
        self.clock.reset_anchor();
        self.first_packet_seen = false;
    }

    /// SET_PARAMETER volume at `now`, in AirPlay dB (-30..0, -144 mutes).
    pub fn set_volume(&mut self, now: Instant, db: f32) {
        self.last_heard = now;
        self.mixer.set_volume(db);
    }

    /// The next datagram due at `now`: resend requests first, then a timing request. `None`
    /// when nothing is due. Requests for a sender port that SETUP did not give are dropped.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let t = ns_of(now);
        while let Some(r) = self.buffer.poll_resend(t) {
            let Some(to) = self.control_peer else {
                continue;
            };
            let mut buf = [0u8; rtp::TIMING_LEN];
            let mut b = [0u8; rtp::RESEND_LEN];
            rtp::ResendRequest {
                request_seq: r.request_seq,
                first: r.first,
                count: r.count,
            }
            .emit(&mut b);
            buf[..rtp::RESEND_LEN].copy_from_slice(&b);
            log::debug!("resend request {}+{}", r.first, r.count);
            return Some(Transmit {
                via: Via::Control,
                to,
                len: rtp::RESEND_LEN,
                buf,
            });
        }
        let transmit = self.clock.poll_timing_request(t)?;
        let to = self.timing_peer?;
        let mut buf = [0u8; rtp::TIMING_LEN];
        rtp::TimingRepr {
            reply: false,
            origin: 0,
            receive: 0,
            transmit,
        }
        .emit(&mut buf);
        self.stats.timing_requests += 1;
        Some(Transmit {
            via: Via::Timing,
            to,
            len: rtp::TIMING_LEN,
            buf,
        })
    }

    /// When the core next has something to do on its own (a resend or timing request falls
    /// due, the session times out); the renderer's wakeups come from [`Stream::poll_output`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            Some(self.last_heard + self.session_timeout),
            self.clock.poll_timeout().map(instant_of),
            self.buffer.poll_timeout().map(instant_of),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The sender has been silent longer than the session timeout at `now`: the stream ends.
    pub fn is_timed_out(&self, now: Instant) -> bool {
        now.duration_since(self.last_heard) > self.session_timeout
    }

    /// What the edge is to do with a sink of `capacity` frames at `now` ([`Output`]); the
    /// frames of an [`Output::Write`] are the next period, volume applied. Answer with
    /// [`Stream::output_started`], [`Stream::output_reading`] or [`Stream::output_wrote`]
    /// and poll again until it says to wait.
    pub fn poll_output(&mut self, now: Instant, capacity: usize) -> Output<'_> {
        self.renderer.set_latency(self.clock.latency_frames());
        let clock = &self.clock;
        let mixer = &self.mixer;
        self.renderer.poll(
            now,
            capacity,
            self.buffer,
            &|ts| clock.local_time_of(ts).map(instant_of),
            &|f| mixer.apply(f),
        )
    }

    /// The sink was opened as asked; it was open at `at`, and had counted `underruns`
    /// underruns since it was created.
    pub fn output_started(&mut self, at: Instant, underruns: u64) {
        self.renderer.started(at, underruns);
    }

    /// The sink's reading, as asked.
    pub fn output_reading(&mut self, r: SinkReading) {
        self.renderer.reading(r);
    }

    /// The sink took `frames` of the last write.
    pub fn output_wrote(&mut self, frames: usize) {
        self.renderer.wrote(frames);
    }

    /// The sink failed (the edge stopped it): the stream keeps its position and opens the
    /// sink again at the next [`Stream::poll_output`].
    pub fn output_failed(&mut self) {
        self.renderer.halt();
    }

    /// While the sink is down: drops the audio that fell due by `now`, as if played.
    pub fn discard_due(&mut self, now: Instant) {
        let clock = &self.clock;
        self.renderer.discard_due(now, self.buffer, &|ts| {
            clock.local_time_of(ts).map(instant_of)
        });
    }

    /// The sink is open and being fed.
    pub fn is_playing(&self) -> bool {
        self.renderer.is_started()
    }

    /// Frames written to the sink since the stream began.
    pub fn frames_written(&self) -> u64 {
        self.renderer.stats.frames_written
    }

    /// How long before its due instant a frame is committed to a sink of `capacity` frames
    /// ([`Renderer::lead`]; bounded by the stream's latency).
    pub fn lead(&mut self, capacity: usize) -> Duration {
        self.renderer.set_latency(self.clock.latency_frames());
        self.renderer.lead(capacity)
    }

    /// The stream's latency: how long after the sender's time a frame sounds.
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(
            u64::from(self.clock.latency_frames()) * 1_000_000_000 / u64::from(crate::RATE),
        )
    }

    /// The statistics now (`underruns` left at 0: the edge owns the sink).
    pub fn stats(&self) -> StreamStats {
        StreamStats {
            buffer: self.buffer.stats,
            render: self.renderer.stats,
            clock: Some(self.clock.stats()),
            ..self.stats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, StreamFormat};
    use crate::output::SinkStatus;

    const FPP: u32 = 352;
    const SENDER: [u8; 4] = [127, 0, 0, 1];
    const CONTROL_PORT: u16 = 6001;
    const TIMING_PORT: u16 = 6002;
    const AUDIO_PORT: u16 = 6000;

    fn setup() -> StreamSetup {
        StreamSetup {
            format: StreamFormat {
                codec: Codec::L16,
                frames_per_packet: FPP,
            },
            aes: None,
            client_ip: IpAddr::from(SENDER),
            client_control_port: CONTROL_PORT,
            client_timing_port: TIMING_PORT,
            min_latency: None,
            max_latency: None,
            airplay_version: None,
            dacp_id: None,
            active_remote: None,
        }
    }

    fn config() -> StreamConfig {
        StreamConfig {
            // 1 s when the sender states none (these tests send no sync packet).
            default_latency_frames: crate::RATE,
            latency_offset_ms: 0,
            session_timeout: Duration::from_secs(30),
        }
    }

    fn from(port: u16) -> SocketAddr {
        SocketAddr::from((SENDER, port))
    }

    /// The sample both channels of stream frame `f` carry.
    fn sample(f: u32) -> i16 {
        (f % 30_000 + 1) as i16
    }

    /// Audio packet `i` of the test stream: sequence 100 + i, RTP timestamp 1000 + 352 i,
    /// L16 (big-endian) frames numbered from the stream's start.
    fn audio_packet(i: u32) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        rtp::AudioRepr {
            marker: false,
            sequence: 100u16.wrapping_add(i as u16),
            timestamp: 1000 + FPP * i,
            ssrc: 7,
        }
        .emit(p.as_mut_slice().try_into().unwrap());
        for f in FPP * i..FPP * (i + 1) {
            let s = sample(f).to_be_bytes();
            p.extend_from_slice(&[s[0], s[1], s[0], s[1]]);
        }
        p
    }

    fn frames_to_duration(frames: u64) -> Duration {
        Duration::from_nanos(frames * 1_000_000_000 / u64::from(crate::RATE))
    }

    /// A model of a DAC that plays at exactly 44.1 kHz from the instant it is opened; it
    /// carries out what the core asks, as the edge does with a real sink, and keeps what was
    /// written.
    struct Dac {
        capacity: usize,
        opened: Option<Instant>,
        written: u64,
        out: Vec<i16>,
    }

    impl Dac {
        fn new() -> Dac {
            Dac {
                capacity: 22_050,
                opened: None,
                written: 0,
                out: Vec::new(),
            }
        }

        fn delay(&self, at: Instant) -> usize {
            let played = self.opened.map_or(0, |o| {
                (at.saturating_duration_since(o).as_nanos() * u128::from(crate::RATE)
                    / 1_000_000_000) as u64
            });
            (self.written - played.min(self.written)) as usize
        }

        fn drive(&mut self, s: &mut Stream<'_>, now: Instant) -> Option<Instant> {
            for _ in 0..64 {
                match s.poll_output(now, self.capacity) {
                    Output::Start => {
                        assert!(self.opened.is_none(), "opened twice");
                        self.opened = Some(now);
                        s.output_started(now, 0);
                    }
                    Output::Read(at) => {
                        let delay = self.delay(at);
                        s.output_reading(SinkReading {
                            status: SinkStatus {
                                avail: self.capacity - delay,
                                delay,
                            },
                            at,
                            capacity: self.capacity,
                            underruns: 0,
                            position_steps: false,
                        });
                    }
                    Output::Write { frames, at } => {
                        let n = (frames.len() / 2).min(self.capacity - self.delay(at));
                        self.out.extend_from_slice(&frames[..n * 2]);
                        self.written += n as u64;
                        s.output_wrote(n);
                    }
                    Output::SetWakeup(_) => {}
                    Output::Stop(_) => panic!("the output was stopped"),
                    Output::Wait(wake) => return wake,
                }
            }
            panic!("the core kept asking");
        }
    }

    /// Packets in, frames out: a stream of 3 s whose packet 20 is lost on the way. The core
    /// asks for it (a resend request to the sender's control port, from the control socket),
    /// the retransmission comes back on the control socket, and the DAC plays every frame
    /// sample for sample, the first exactly when it is due (arrival + 1 s of latency).
    #[test]
    fn packets_in_frames_out_with_a_resend() {
        let mut buffer = JitterBuffer::with_capacity_frames(3 * 44_100);
        let t0 = Instant::now();
        let mut s = Stream::new(&setup(), &config(), &mut buffer, 0.0, t0).unwrap();
        let mut dac = Dac::new();
        let packets = 375; // 2.99 s
        let mut sent = 0;
        let mut resends = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(5) {
            // The sender sends each packet on time; packet 20 is lost.
            while sent < packets && frames_to_duration(u64::from(FPP * sent)) <= now - t0 {
                if sent != 20 {
                    s.handle_audio(now, &mut audio_packet(sent), from(AUDIO_PORT));
                }
                sent += 1;
            }
            while let Some(t) = s.poll_transmit(now) {
                if t.via == Via::Control {
                    let r = rtp::ResendRequest::parse(t.bytes()).unwrap();
                    assert_eq!(t.to, from(CONTROL_PORT));
                    resends.push((r.first, r.count));
                    // The sender answers at once with the packet, wrapped (0x56).
                    let mut re = vec![0x80, 0x80 | pt::RETRANSMIT, 0, 1];
                    re.extend(audio_packet(u32::from(r.first.wrapping_sub(100))));
                    s.handle_control(now, &mut re, from(CONTROL_PORT));
                }
            }
            dac.drive(&mut s, now);
            now += Duration::from_millis(5);
        }
        assert_eq!(resends, vec![(120, 1)], "resend requests");
        let st = s.stats();
        assert_eq!(st.buffer.lost, 0, "{st:?}");
        assert_eq!((st.garbage_packets, st.foreign_packets), (0, 0));
        assert_eq!(
            (st.render.frames_inserted, st.render.frames_dropped),
            (0, 0)
        );
        let first = dac.out.iter().position(|&v| v != 0).unwrap() / 2;
        let sounds = dac.opened.unwrap() + frames_to_duration(first as u64);
        let due = t0 + Duration::from_secs(1);
        let off_us = if sounds > due {
            (sounds - due).as_micros()
        } else {
            (due - sounds).as_micros()
        };
        assert!(off_us <= 23, "first frame {off_us} µs off its due instant");
        let played: Vec<i16> = dac.out[first * 2..].to_vec();
        assert!(played.len() / 2 >= (FPP * packets) as usize);
        for f in 0..FPP * packets {
            let i = f as usize * 2;
            assert_eq!(
                (played[i], played[i + 1]),
                (sample(f), sample(f)),
                "frame {f}"
            );
        }
    }

    /// The core asks the sender's timing port for the time at once (0x52, our transmit time
    /// as NTP), takes the reply it gets back into the clock model, and ignores a reply from
    /// another host (counted as foreign).
    #[test]
    fn a_timing_exchange() {
        let mut buffer = JitterBuffer::with_capacity_frames(44_100);
        let t0 = Instant::now();
        let mut s = Stream::new(&setup(), &config(), &mut buffer, 0.0, t0).unwrap();
        let t = s.poll_transmit(t0).expect("a timing request");
        assert_eq!((t.via, t.to), (Via::Timing, from(TIMING_PORT)));
        let req = rtp::TimingPacket::new_checked(t.bytes()).unwrap();
        assert!(!req.is_reply());
        assert_eq!(req.transmit(), crate::clock::local_to_ntp(ns_of(t0)));
        assert_eq!(s.poll_transmit(t0), None, "one request at a time");
        assert_eq!(s.stats().timing_requests, 1);
        let mut reply = [0u8; rtp::TIMING_LEN];
        rtp::TimingRepr {
            reply: true,
            origin: req.transmit(),
            receive: 0xe000_0000_0000_0000,
            transmit: 0xe000_0000_0010_0000,
        }
        .emit(&mut reply);
        let stranger = SocketAddr::from(([10, 9, 8, 7], TIMING_PORT));
        let back = t0 + Duration::from_millis(1);
        s.handle_timing(back, &reply, stranger, None);
        assert_eq!(s.stats().foreign_packets, 1);
        assert_eq!(s.stats().clock.unwrap().samples, 0);
        s.handle_timing(back, &reply, from(TIMING_PORT), Some(back));
        let st = s.stats();
        assert_eq!(st.clock.unwrap().samples, 1, "{st:?}");
        assert_eq!(st.garbage_packets, 0);
        // A later request is due, no sooner than the core said.
        let next = s.poll_timeout().unwrap();
        assert!(next > back);
        assert!(s.poll_transmit(next).is_some());
        assert_eq!(s.stats().timing_requests, 2);
    }

    /// Bytes that are not what the socket carries count as garbage and change nothing; the
    /// sender's silence ends the stream after the session timeout.
    #[test]
    fn garbage_and_silence() {
        let mut buffer = JitterBuffer::with_capacity_frames(44_100);
        let t0 = Instant::now();
        let mut s = Stream::new(&setup(), &config(), &mut buffer, 0.0, t0).unwrap();
        s.handle_audio(t0, &mut [0x80, 0x60, 1], from(AUDIO_PORT));
        s.handle_control(t0, &mut [0xff; 20], from(CONTROL_PORT));
        s.handle_timing(t0, &[0x80, 0xd2], from(TIMING_PORT), None);
        let st = s.stats();
        assert_eq!(st.garbage_packets, 3);
        assert_eq!(st.buffer.received, 0);
        let mut dac = Dac::new();
        assert_eq!(dac.drive(&mut s, t0), None, "nothing to play");
        assert!(!s.is_timed_out(t0 + Duration::from_secs(30)));
        assert!(s.is_timed_out(t0 + Duration::from_secs(31)));
        assert!(s.poll_timeout().unwrap() <= t0 + Duration::from_secs(30));
    }
}
