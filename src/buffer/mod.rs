//! The jitter buffer: one fixed allocation of decoded-PCM slots indexed by RTP sequence
//! number. Packets are decoded straight into their slot (no copy, no allocation per
//! packet), gaps are remembered and re-requested from the sender, and the player reads
//! frames out in sequence order, getting silence for packets that never came.
//!
//! Sans-IO: time comes in as `now` (nanoseconds of the caller's monotonic clock); resend
//! requests come out of [`JitterBuffer::poll_resend`] and the next retry time out of
//! [`JitterBuffer::poll_timeout`].
//!
//! Sequence numbers and timestamps come off the network: no panic on input (issue 11). Slots
//! are reached through `slot` and `slot_mut`, which give nothing for a sequence number outside
//! the window the buffer holds.
//!
//! The slots are a ring: the packet `d` after the one playing (`read_seq`) lives `d` slots
//! after `read_pos`, wrapping at the ring's length. Indexing relative to the read point (rather
//! than `seq % len` or `seq & mask`) lets the ring be exactly as long as the latency needs:
//! 16-bit sequence numbers wrap at 65,536, which a ring of any other length than a power of
//! two does not divide, and a power of two would round 376 packets (3 s) up to 512, 190 KB
//! of PCM more (issue 10's memory goal).
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

use crate::codec::MAX_SAMPLES_PER_PACKET;

/// How long to wait before asking again for a packet already requested.
const RETRY_NS: u64 = 120_000_000;
/// How many times one packet is requested before it is given up.
const MAX_TRIES: u8 = 4;

#[derive(Clone, Copy, Default)]
struct Slot {
    seq: u16,
    ts: u32,
    frames: u16,
    /// Holds decoded audio for `seq`.
    filled: bool,
    /// `seq` is known missing (a later packet arrived first).
    missing: bool,
    tries: u8,
    last_request: u64,
}

/// Counters, exposed for logs and the status interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    pub received: u64,
    pub duplicates: u64,
    /// Arrived after their time to play had passed.
    pub late: u64,
    /// Played as silence because they never arrived.
    pub lost: u64,
    /// Resend requests sent (one request may cover several packets).
    pub resend_requests: u64,
    /// Packets asked for again.
    pub requested: u64,
    /// Requested packets that then arrived in time.
    pub recovered: u64,
    /// Times the stream jumped too far to buffer and the buffer restarted at it.
    pub resyncs: u64,
    /// Dropped because they belonged to audio flushed away.
    pub flushed: u64,
}

/// Where to decode an accepted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Decode into [`JitterBuffer::slot_pcm`] of this slot, then [`JitterBuffer::commit`].
    Slot(usize),
    Duplicate,
    Late,
    Flushed,
}

/// What the next frames to play are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing has been received since start or the last reset.
    Empty,
    /// Audio starting at this RTP timestamp is ready.
    Audio { ts: u32 },
    /// The packet due next is missing (later ones arrived); `frames` is how much
    /// silence it stands for.
    Missing { seq: u16, frames: usize },
    /// Everything received has been played: the sender is behind or has stopped.
    Starved { frames: usize },
}

pub struct JitterBuffer {
    slots: Box<[Slot]>,
    pcm: Box<[i16]>,
    /// Next sequence number to play, and frames of it already played.
    read_seq: u16,
    /// The slot of `read_seq` (`< slots.len()`).
    read_pos: usize,
    read_offset: usize,
    /// Highest sequence number received (or implied by RECORD).
    highest: u16,
    started: bool,
    /// After FLUSH: packets with timestamps before this one belong to flushed audio.
    flush_before: Option<u32>,
    /// Frames in one packet, for sizing silence when a packet is missing.
    frames_per_packet: usize,
    next_retry: Option<u64>,
    request_seq: u16,
    /// Sequence number and timestamp of the last packet refused as late.
    last_late: Option<(u16, u32)>,
    pub stats: BufferStats,
}

/// A request for `count` packets from `first`, ready to be emitted as 0x55.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resend {
    pub request_seq: u16,
    pub first: u16,
    pub count: u16,
}

fn seq_diff(a: u16, b: u16) -> i32 {
    a.wrapping_sub(b) as i16 as i32
}

/// Wrapping "a is before b" for RTP timestamps.
fn ts_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl JitterBuffer {
    /// A buffer with room for at least `frames` of audio: that many frames rounded up to
    /// whole packets of [`crate::codec::MAX_FRAMES_PER_PACKET`], at least 16 and at most
    /// 16,384 packets. Allocated once; reused for every session.
    pub fn with_capacity_frames(frames: usize) -> Self {
        let packets = frames
            .div_ceil(crate::codec::MAX_FRAMES_PER_PACKET as usize)
            .clamp(16, 16384);
        JitterBuffer {
            slots: vec![Slot::default(); packets].into_boxed_slice(),
            pcm: vec![0; packets * MAX_SAMPLES_PER_PACKET].into_boxed_slice(),
            read_seq: 0,
            read_pos: 0,
            read_offset: 0,
            highest: 0,
            started: false,
            flush_before: None,
            frames_per_packet: crate::codec::MAX_FRAMES_PER_PACKET as usize,
            next_retry: None,
            request_seq: 0,
            last_late: None,
            stats: BufferStats::default(),
        }
    }

    /// Frames in one packet of the current stream.
    pub fn frames_per_packet(&self) -> usize {
        self.frames_per_packet
    }

    /// Sequence number and RTP timestamp of the last packet refused as late (it came after
    /// its turn to play had passed), since the last reset.
    pub fn last_late(&self) -> Option<(u16, u32)> {
        self.last_late
    }

    pub fn capacity_packets(&self) -> usize {
        self.slots.len()
    }

    /// Bytes held by the buffer (PCM plus slot bookkeeping).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.pcm) + std::mem::size_of_val(&*self.slots)
    }

    /// The index of `seq`'s slot, if `seq` is in the window held: from `read_seq` to
    /// `read_seq + capacity - 1`.
    fn index(&self, seq: u16) -> Option<usize> {
        let len = self.slots.len();
        let ahead = seq.wrapping_sub(self.read_seq) as usize;
        (ahead < len).then(|| (self.read_pos + ahead) % len)
    }

    /// The slot of `seq`; an empty one outside the window (its `seq` never matches a
    /// sequence number the caller asks about, as `filled` and `missing` are false).
    fn slot(&self, seq: u16) -> Slot {
        self.index(seq)
            .and_then(|i| self.slots.get(i))
            .copied()
            .unwrap_or_default()
    }

    /// The slot of `seq`, writable; `None` outside the window.
    fn slot_mut(&mut self, seq: u16) -> Option<&mut Slot> {
        let i = self.index(seq)?;
        self.slots.get_mut(i)
    }

    /// Empties the buffer for a new stream.
    pub fn reset(&mut self, frames_per_packet: usize) {
        for s in self.slots.iter_mut() {
            *s = Slot::default();
        }
        self.started = false;
        self.read_offset = 0;
        self.flush_before = None;
        self.next_retry = None;
        self.last_late = None;
        self.frames_per_packet =
            frames_per_packet.clamp(1, crate::codec::MAX_FRAMES_PER_PACKET as usize);
    }

    /// RECORD's `RTP-Info: seq=…`: the stream starts at `seq`, so a lost first packet is
    /// noticed and requested like any other.
    pub fn start_at(&mut self, seq: u16) {
        if !self.started {
            self.started = true;
            self.read_seq = seq;
            self.read_offset = 0;
            self.highest = seq.wrapping_sub(1);
        }
    }

    /// FLUSH. With `RTP-Info` (`seq`, `ts`): audio stamped before `ts` is dropped, the
    /// stream resumes at `seq`, and packets of the new audio that already arrived (a
    /// sender may stream before its FLUSH is processed) are kept. Without: drop all.
    pub fn flush(&mut self, until: Option<(u16, u32)>) {
        let fpp = self.frames_per_packet;
        let Some((seq, ts)) = until else {
            self.reset(fpp);
            return;
        };
        let len = self.slots.len();
        let mut highest = seq.wrapping_sub(1);
        // Kept slots stay where they are: the new read point's slot is where `seq` sits in
        // the old ring. A kept packet is in both windows, so it is `k` further from the old
        // read point than from the new one, one `k` for all of them.
        let mut read_pos = None;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let keep = slot.filled
                && !ts_before(slot.ts, ts)
                && seq_diff(slot.seq, seq) >= 0
                && (seq_diff(slot.seq, seq) as usize) < len;
            if keep {
                if seq_diff(slot.seq, highest) > 0 {
                    highest = slot.seq;
                }
                let behind = slot.seq.wrapping_sub(seq) as usize; // < len: kept
                read_pos.get_or_insert((i + len - behind) % len);
            } else {
                *slot = Slot::default();
            }
        }
        self.read_pos = read_pos.unwrap_or(0);
        self.started = true;
        self.read_seq = seq;
        self.read_offset = 0;
        self.highest = highest;
        self.next_retry = None;
        self.flush_before = Some(ts);
    }

    /// Packets between what is playing and the newest received.
    pub fn fill_packets(&self) -> usize {
        if !self.started {
            return 0;
        }
        (seq_diff(self.highest, self.read_seq) + 1).max(0) as usize
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Decides where a packet goes. On `Insert::Slot`, decode into [`Self::slot_pcm`]
    /// and call [`Self::commit`] (or [`Self::commit_silence`] if decoding failed).
    pub fn insert(&mut self, seq: u16, ts: u32, now: u64) -> Insert {
        if let Some(before) = self.flush_before {
            if ts_before(ts, before) {
                self.stats.flushed += 1;
                return Insert::Flushed;
            }
            self.flush_before = None;
        }
        if !self.started {
            self.start_at(seq);
        }
        let ahead = seq_diff(seq, self.read_seq);
        if ahead < 0 {
            self.stats.late += 1;
            self.last_late = Some((seq, ts));
            return Insert::Late;
        }
        if ahead as usize >= self.slots.len() {
            // The stream jumped further than the buffer holds (sender restarted without
            // FLUSH): start again from this packet rather than drop the stream forever.
            self.stats.resyncs += 1;
            let fpp = self.frames_per_packet;
            self.reset(fpp);
            self.start_at(seq);
            return self.insert(seq, ts, now);
        }
        let Some(idx) = self.index(seq) else {
            return Insert::Late;
        };
        let slot = self.slots.get(idx).copied().unwrap_or_default();
        if slot.seq == seq && slot.filled {
            self.stats.duplicates += 1;
            return Insert::Duplicate;
        }
        let past_highest = seq_diff(seq, self.highest);
        if past_highest > 1 {
            // A gap: mark the packets in between missing and ask for them at once.
            let first = self.highest.wrapping_add(1);
            let count = (past_highest - 1) as u16;
            for i in 0..count {
                let s = first.wrapping_add(i);
                if let Some(slot) = self.slot_mut(s) {
                    *slot = Slot {
                        seq: s,
                        missing: true,
                        ..Slot::default()
                    };
                }
            }
            if self.next_retry.is_none() {
                self.next_retry = Some(now);
            }
        }
        if past_highest > 0 {
            self.highest = seq;
        } else if slot.seq == seq && slot.missing && slot.tries > 0 {
            self.stats.recovered += 1;
        }
        self.stats.received += 1;
        if let Some(slot) = self.slots.get_mut(idx) {
            *slot = Slot {
                seq,
                ts,
                ..Slot::default()
            };
        }
        Insert::Slot(idx)
    }

    /// The PCM storage of a slot ([`MAX_SAMPLES_PER_PACKET`] samples), for the decoder to
    /// write into; empty for an index no [`Insert::Slot`] gave.
    pub fn slot_pcm(&mut self, idx: usize) -> &mut [i16] {
        self.pcm
            .chunks_exact_mut(MAX_SAMPLES_PER_PACKET)
            .nth(idx)
            .unwrap_or_default()
    }

    /// Marks slot `idx` (from [`Insert::Slot`]) as holding `frames` of decoded audio.
    pub fn commit(&mut self, idx: usize, frames: usize) {
        let Some(s) = self.slots.get_mut(idx) else {
            return;
        };
        s.frames = frames.min(crate::codec::MAX_FRAMES_PER_PACKET as usize) as u16;
        s.filled = true;
        s.missing = false;
    }

    /// A packet arrived but could not be decoded: it plays as silence of the usual length.
    pub fn commit_silence(&mut self, idx: usize) {
        let fpp = self.frames_per_packet;
        if let Some(pcm) = self.slot_pcm(idx).get_mut(..fpp * 2) {
            pcm.fill(0);
        }
        self.commit(idx, fpp);
    }

    /// What would be played next.
    pub fn peek(&self) -> Next {
        if !self.started {
            return Next::Empty;
        }
        let slot = self.slot(self.read_seq);
        if slot.filled && slot.seq == self.read_seq {
            Next::Audio {
                ts: slot.ts.wrapping_add(self.read_offset as u32),
            }
        } else {
            Next::Missing {
                seq: self.read_seq,
                frames: self
                    .frames_per_packet
                    .saturating_sub(self.read_offset)
                    .max(1),
            }
        }
    }

    /// Copies up to `out.len() / 2` frames of the next packet into `out`; returns frames
    /// copied. Only whole-slot audio: call after `peek()` returned `Audio`.
    pub fn read(&mut self, out: &mut [i16]) -> usize {
        let idx = self.read_pos;
        let slot = self.slots.get(idx).copied().unwrap_or_default();
        if !(slot.filled && slot.seq == self.read_seq) {
            return 0;
        }
        let left = (slot.frames as usize).saturating_sub(self.read_offset);
        let n = left.min(out.len() / 2);
        let base = idx * MAX_SAMPLES_PER_PACKET + self.read_offset * 2;
        let (Some(dst), Some(src)) = (out.get_mut(..n * 2), self.pcm.get(base..base + n * 2))
        else {
            return 0;
        };
        dst.copy_from_slice(src);
        self.read_offset += n;
        if self.read_offset >= slot.frames as usize {
            self.advance();
        }
        n
    }

    /// Skips `frames` of a missing or not yet received packet (played as silence by
    /// the caller). Only packets known to be missing count as lost.
    pub fn skip_missing(&mut self, frames: usize) {
        self.read_offset += frames;
        if self.read_offset >= self.frames_per_packet {
            if seq_diff(self.read_seq, self.highest) <= 0 {
                self.stats.lost += 1;
            }
            self.advance();
        }
    }

    fn advance(&mut self) {
        if let Some(slot) = self.slot_mut(self.read_seq) {
            slot.filled = false;
            slot.missing = false;
        }
        self.read_seq = self.read_seq.wrapping_add(1);
        self.read_pos = (self.read_pos + 1) % self.slots.len().max(1);
        self.read_offset = 0;
        if seq_diff(self.read_seq, self.highest) > 1 {
            // Playing ahead of anything received (sender paused): keep `highest` just
            // behind the read point so a later packet is not seen as a huge gap.
            self.highest = self.read_seq.wrapping_sub(1);
        }
    }

    /// When [`Self::poll_resend`] next has something to say.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_retry
    }

    /// The next resend request due at `now`: a run of missing packets not asked for in
    /// the last [`RETRY_NS`], each asked for at most [`MAX_TRIES`] times. Runs start
    /// after the packet being played (that one is due now: too late to ask).
    pub fn poll_resend(&mut self, now: u64) -> Option<Resend> {
        match self.next_retry {
            Some(t) if t <= now && self.started => {}
            _ => return None,
        }
        let requestable = |s: &Slot, seq: u16| s.missing && s.seq == seq && s.tries < MAX_TRIES;
        let due = |s: &Slot| s.tries == 0 || s.last_request + RETRY_NS <= now;
        // A packet already being played is past asking for.
        let from = if self.read_offset == 0 {
            self.read_seq
        } else {
            self.read_seq.wrapping_add(1)
        };
        let end = self.highest;
        let mut seq = from;
        let mut next_due: Option<u64> = None;
        while seq_diff(seq, end) < 0 {
            let s = self.slot(seq);
            if requestable(&s, seq) {
                if due(&s) {
                    // Extend the run over contiguous packets that are due too.
                    let first = seq;
                    let mut count: u16 = 0;
                    while seq_diff(seq, end) < 0 && count < 512 {
                        let t = self.slot(seq);
                        if !(requestable(&t, seq) && due(&t)) {
                            break;
                        }
                        if let Some(t) = self.slot_mut(seq) {
                            t.tries += 1;
                            t.last_request = now;
                        }
                        count += 1;
                        seq = seq.wrapping_add(1);
                    }
                    self.request_seq = self.request_seq.wrapping_add(1);
                    self.stats.resend_requests += 1;
                    self.stats.requested += count as u64;
                    return Some(Resend {
                        request_seq: self.request_seq,
                        first,
                        count,
                    });
                }
                let t = s.last_request + RETRY_NS;
                next_due = Some(next_due.map_or(t, |d: u64| d.min(t)));
            }
            seq = seq.wrapping_add(1);
        }
        self.next_retry = next_due;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(b: &mut JitterBuffer, seq: u16, now: u64) -> Insert {
        let r = b.insert(seq, seq as u32 * 352, now);
        if let Insert::Slot(i) = r {
            let pcm = b.slot_pcm(i);
            for (k, s) in pcm.iter_mut().enumerate().take(704) {
                *s = (seq as i16).wrapping_add(k as i16);
            }
            b.commit(i, 352);
        }
        r
    }

    fn play_packet(b: &mut JitterBuffer) -> Option<i16> {
        match b.peek() {
            Next::Audio { .. } => {
                let mut out = [0i16; 704];
                assert_eq!(b.read(&mut out), 352);
                Some(out[0])
            }
            Next::Missing { frames, .. } | Next::Starved { frames } => {
                b.skip_missing(frames);
                None
            }
            Next::Empty => panic!("empty"),
        }
    }

    #[test]
    fn in_order_across_sequence_wrap() {
        let mut b = JitterBuffer::with_capacity_frames(44100);
        b.reset(352);
        for i in 0..10u16 {
            let seq = 65530u16.wrapping_add(i);
            assert!(matches!(put(&mut b, seq, 0), Insert::Slot(_)));
        }
        assert_eq!(b.fill_packets(), 10);
        for i in 0..10u16 {
            let seq = 65530u16.wrapping_add(i);
            assert_eq!(play_packet(&mut b), Some(seq as i16));
        }
        assert_eq!(b.stats.lost, 0);
        assert_eq!(b.poll_resend(1_000_000_000), None);
    }

    #[test]
    fn duplicates_and_late_dropped() {
        let mut b = JitterBuffer::with_capacity_frames(44100);
        b.reset(352);
        put(&mut b, 100, 0);
        put(&mut b, 101, 0);
        assert_eq!(put(&mut b, 101, 0), Insert::Duplicate);
        play_packet(&mut b);
        assert_eq!(put(&mut b, 100, 0), Insert::Late);
        assert_eq!(put(&mut b, 99, 0), Insert::Late);
        assert_eq!((b.stats.duplicates, b.stats.late), (1, 2));
    }

    #[test]
    fn gap_requested_recovered_or_silenced() {
        let mut b = JitterBuffer::with_capacity_frames(44100);
        b.reset(352);
        b.start_at(10);
        put(&mut b, 10, 0);
        put(&mut b, 14, 5);
        // 11..=13 missing: one request at once.
        assert_eq!(b.poll_timeout(), Some(5));
        let r = b.poll_resend(5).unwrap();
        assert_eq!((r.first, r.count), (11, 3));
        assert_eq!(b.poll_resend(5), None);
        // Retry only after RETRY_NS.
        assert_eq!(b.poll_timeout(), Some(5 + RETRY_NS));
        assert_eq!(b.poll_resend(5 + RETRY_NS - 1), None);
        // 12 arrives; 11 and 13 are asked for again, as separate runs.
        put(&mut b, 12, 10);
        let r1 = b.poll_resend(5 + RETRY_NS).unwrap();
        let r2 = b.poll_resend(5 + RETRY_NS).unwrap();
        assert_eq!((r1.first, r1.count, r2.first, r2.count), (11, 1, 13, 1));
        assert_eq!(b.stats.recovered, 1);
        // Playing: 10, silence for 11, 12, silence for 13, 14.
        let played: Vec<_> = (0..5).map(|_| play_packet(&mut b)).collect();
        assert_eq!(played, vec![Some(10), None, Some(12), None, Some(14)]);
        assert_eq!(b.stats.lost, 2);
    }

    #[test]
    fn lost_first_packet_is_requested_after_record() {
        let mut b = JitterBuffer::with_capacity_frames(44100);
        b.reset(352);
        b.start_at(500);
        put(&mut b, 501, 0);
        let r = b.poll_resend(0).unwrap();
        assert_eq!((r.first, r.count), (500, 1));
        assert!(matches!(b.peek(), Next::Missing { seq: 500, .. }));
        put(&mut b, 500, 1);
        assert_eq!(play_packet(&mut b), Some(500));
        assert_eq!(play_packet(&mut b), Some(501));
    }

    #[test]
    fn gives_up_after_max_tries() {
        let mut b = JitterBuffer::with_capacity_frames(44100);
        b.reset(352);
        put(&mut b, 0, 0);
        put(&mut b, 2, 0);
        let mut t = 0;
        let mut requests = 0;
        for _ in 0..20 {
            while b.poll_resend(t).is_some() {
                requests += 1;
            }
            t += RETRY_NS;
        }
        assert_eq!(requests, MAX_TRIES as usize);
        assert_eq!(b.poll_timeout(), None);
    }

    #[test]
    fn flush_drops_stale_and_restarts() {
        let mut b = JitterBuffer::with_capacity_frames(44100);
        b.reset(352);
        put(&mut b, 1, 0);
        put(&mut b, 50, 0); // new audio that came before the FLUSH
        b.flush(Some((50, 352 * 50)));
        assert_eq!(put(&mut b, 2, 0), Insert::Flushed);
        assert_eq!(b.peek(), Next::Audio { ts: 352 * 50 });
        assert!(matches!(put(&mut b, 51, 0), Insert::Slot(_)));
        assert_eq!(play_packet(&mut b), Some(50));
        assert_eq!(play_packet(&mut b), Some(51));
        b.flush(None);
        assert_eq!(b.peek(), Next::Empty);
    }

    #[test]
    fn jump_beyond_capacity_resyncs() {
        let mut b = JitterBuffer::with_capacity_frames(352 * 16);
        b.reset(352);
        put(&mut b, 0, 0);
        assert!(matches!(put(&mut b, 1000, 0), Insert::Slot(_)));
        assert_eq!(b.stats.resyncs, 1);
        assert_eq!(play_packet(&mut b), Some(1000));
    }

    #[test]
    fn partial_reads() {
        let mut b = JitterBuffer::with_capacity_frames(44100);
        b.reset(352);
        put(&mut b, 7, 0);
        let mut out = [0i16; 200];
        assert_eq!(b.read(&mut out), 100);
        assert_eq!(b.peek(), Next::Audio { ts: 7 * 352 + 100 });
        let mut rest = [0i16; 704];
        assert_eq!(b.read(&mut rest), 252);
        assert_eq!(rest[0], 7i16.wrapping_add(200));
    }

    /// A ring of 17 packets (no power of two, so 65,536 is no multiple of it) carried
    /// twice across the sequence number's wrap, packets arriving up to 16 ahead and swapped in
    /// pairs: every packet plays in order, none lost, none refused.
    #[test]
    fn ring_of_any_length_across_sequence_wraps() {
        let mut b = JitterBuffer::with_capacity_frames(352 * 16 + 1);
        assert_eq!(b.capacity_packets(), 17);
        b.reset(352);
        let first = 65_000u16;
        b.start_at(first);
        let total = 140_000u32;
        let mut sent = 0u32;
        let mut played = 0u32;
        while played < total {
            // Keep 16 ahead of the read point, sending odd/even pairs swapped.
            while sent < total && sent < played + 16 {
                let pair = sent ^ 1;
                let n = if pair < total { pair } else { sent };
                let seq = first.wrapping_add(n as u16);
                assert!(matches!(put(&mut b, seq, 0), Insert::Slot(_)), "{n}");
                sent += 1;
            }
            let want = first.wrapping_add(played as u16);
            assert_eq!(play_packet(&mut b), Some(want as i16), "packet {played}");
            played += 1;
        }
        assert_eq!((b.stats.lost, b.stats.late, b.stats.duplicates), (0, 0, 0));
    }

    /// FLUSH keeping packets that came before it, with the read point anywhere in a ring of
    /// 17: the kept packets are found where they were written, new ones fill in around them.
    #[test]
    fn flush_keeps_packets_wherever_the_ring_stands() {
        // Packet n of the test: sequence number 65,530 + n (wrapping), timestamp n * 352.
        let base = 65_530u16;
        let put_n = |b: &mut JitterBuffer, n: u16| {
            let seq = base.wrapping_add(n);
            if let Insert::Slot(i) = b.insert(seq, n as u32 * 352, 0) {
                b.slot_pcm(i).fill(seq as i16);
                b.commit(i, 352);
            }
        };
        for played in 0..40u16 {
            let mut b = JitterBuffer::with_capacity_frames(352 * 16 + 1);
            b.reset(352);
            for n in 0..played {
                put_n(&mut b, n);
                play_packet(&mut b);
            }
            put_n(&mut b, played); // old audio, flushed away
            let resume = played + 5;
            put_n(&mut b, resume + 2); // new audio that came before the FLUSH
            put_n(&mut b, resume + 4);
            b.flush(Some((base.wrapping_add(resume), resume as u32 * 352)));
            for i in [0, 1, 3, 5, 6] {
                put_n(&mut b, resume + i);
            }
            for i in 0..7 {
                let want = base.wrapping_add(resume + i);
                assert_eq!(play_packet(&mut b), Some(want as i16), "{played}: {i}");
            }
            assert_eq!(b.stats.lost, 0);
        }
    }

    #[test]
    fn memory_is_reported() {
        let b = JitterBuffer::with_capacity_frames(88200 + 44100);
        // 3 s: 375.8 packets, whole packets, no rounding to a power of two.
        assert_eq!(b.capacity_packets(), 376);
        assert!(b.memory_bytes() >= 376 * 704 * 2);
        assert!(b.memory_bytes() < 376 * (704 * 2 + 64));
    }
}
