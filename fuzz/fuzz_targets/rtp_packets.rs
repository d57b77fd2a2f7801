//! The RTP / sync / timing / resend / retransmit packet views: whatever the bytes, the
//! checked views read their fields without panicking, and parse → emit → parse gives the
//! same fields.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raopd::rtp::{
    classify, AudioPacket, AudioRepr, ResendRequest, RetransmitPacket, SyncPacket, SyncRepr,
    TimingPacket, TimingRepr, RESEND_LEN, SYNC_LEN, TIMING_LEN,
};

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
    if let Ok(p) = AudioPacket::new_checked(data) {
        let r = AudioRepr::parse(&p);
        let _ = (
            p.marker(),
            p.sequence(),
            p.timestamp(),
            p.ssrc(),
            p.payload().len(),
        );
        let mut buf = data.to_vec();
        r.emit(buf.first_chunk_mut().expect("a checked packet holds a header"));
        let again = AudioRepr::parse(&AudioPacket::new_checked(&buf[..]).expect("emitted"));
        assert_eq!(r, again);
    }
    let mut owned = data.to_vec();
    if let Ok(mut p) = AudioPacket::new_checked(&mut owned[..]) {
        let _ = p.payload_mut().len();
    }
    if let Ok(p) = RetransmitPacket::new_checked(data) {
        let inner = &data[p.inner_range()];
        let _ = AudioPacket::new_checked(inner);
    }
    if let Ok(p) = SyncPacket::new_checked(data) {
        let r = SyncRepr::parse(&p);
        let _ = (p.first(), p.flags(), r.latency());
        let mut buf = [0u8; SYNC_LEN];
        r.emit(&mut buf);
        let again = SyncRepr::parse(&SyncPacket::new_checked(&buf[..]).expect("emitted"));
        assert_eq!(r, again);
    }
    if let Ok(p) = TimingPacket::new_checked(data) {
        let r = TimingRepr::parse(&p);
        let _ = (p.is_reply(), p.origin(), p.receive(), p.transmit());
        let mut buf = [0u8; TIMING_LEN];
        r.emit(&mut buf);
        let again = TimingRepr::parse(&TimingPacket::new_checked(&buf[..]).expect("emitted"));
        assert_eq!(r, again);
    }
    if let Ok(r) = ResendRequest::parse(data) {
        let mut buf = [0u8; RESEND_LEN];
        r.emit(&mut buf);
        assert_eq!(ResendRequest::parse(&buf).ok(), Some(r));
    }
});
