use super::*;
use crate::rtsp::message::parse_request;

/// The edge, as the tests need it: answers the session's questions from its fields and
/// records the questions and effects it carries out.
#[derive(Default)]
struct Recorder {
    busy: bool,
    /// The output is down with this cause (an output that cannot be opened).
    unready: Option<String>,
    events: Vec<String>,
    volume: f32,
}

impl Recorder {
    fn answer(&mut self, q: Question) -> Answer {
        match q {
            Question::Claim => Answer::Claim(match (&self.unready, self.busy) {
                (Some(cause), _) => Claim::Unavailable(cause.clone()),
                (None, true) => Claim::Busy,
                (None, false) => Claim::Granted,
            }),
            Question::Setup(s) => {
                self.events.push(format!(
                    "setup {} {} {} {}",
                    s.format.name(),
                    s.aes.is_some(),
                    s.client_control_port,
                    s.client_timing_port
                ));
                Answer::Setup(Ok(UdpPorts {
                    audio: 7000,
                    control: 7001,
                    timing: 7002,
                }))
            }
            Question::Volume => Answer::Volume(self.volume),
        }
    }

    /// Carries out the session's effects.
    fn drain(&mut self, s: &mut Session) {
        while let Some(e) = s.poll_effect() {
            self.events.push(match e {
                Effect::Record(start) => format!("record {start:?}"),
                Effect::Flush(until) => format!("flush {until:?}"),
                Effect::Volume(db) => {
                    self.volume = db;
                    format!("volume {db}")
                }
                Effect::Metadata(dmap) => format!("metadata {}", dmap.len()),
                Effect::Artwork { content_type, data } => {
                    format!("artwork {content_type} {}", data.len())
                }
                Effect::Progress {
                    start,
                    current,
                    end,
                } => format!("progress {start} {current} {end}"),
                Effect::Teardown => "teardown".into(),
            });
        }
    }
}

/// One request through the session as the edge runs it: answer a question if there is one,
/// then carry out the effects.
fn handle(s: &mut Session, r: &Request, key: &AirportKey, io: &mut Recorder) -> Response {
    let resp = match s.handle(r, key) {
        Reply::Done(resp) => resp,
        Reply::Ask(q) => {
            let a = io.answer(q);
            s.answer(a)
        }
    };
    io.drain(s);
    resp
}

fn info(password: Option<&str>) -> ConnectionInfo {
    ConnectionInfo {
        local: "127.0.0.1:5000".parse().unwrap(),
        peer: "127.0.0.1:40000".parse().unwrap(),
        mac: [1, 2, 3, 4, 5, 6],
        password: password.map(str::to_string),
    }
}

fn req(raw: &str) -> Request {
    parse_request(raw.as_bytes()).unwrap().unwrap().0
}

const SDP_L16: &str = "v=0\r\no=iTunes 1 0 IN IP4 127.0.0.1\r\ns=iTunes\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 96\r\na=rtpmap:96 L16/44100/2\r\na=fmtp:96 352 0 16 40 10 14 2 255 0 0 44100\r\n";

fn announce(cseq: u32, sdp: &str) -> Request {
    req(&format!("ANNOUNCE rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len()))
}

#[test]
fn full_session_flow() {
    let key = AirportKey::load();
    let mut io = Recorder::default();
    let mut s = Session::new(info(None));
    let r = handle(
        &mut s,
        &req("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nApple-Challenge: AAECAwQFBgcICQoLDA0ODw==\r\n\r\n"),
        &key,
        &mut io,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.get_header("CSeq"), Some("1"));
    assert!(r.get_header("Apple-Response").is_some());
    assert_eq!(
        r.get_header("Audio-Jack-Status"),
        Some("connected; type=analog")
    );
    assert_eq!(
        handle(&mut s, &announce(2, SDP_L16), &key, &mut io).status,
        200
    );
    let r = handle(&mut s, &req("SETUP rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/UDP;unicast;interleaved=0-1;mode=record;control_port=6001;timing_port=6002\r\n\r\n"), &key, &mut io);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.get_header("Transport"),
        Some("RTP/AVP/UDP;unicast;mode=record;server_port=7000;control_port=7001;timing_port=7002")
    );
    let sid: u32 = r.get_header("Session").unwrap().parse().unwrap();
    assert!(sid > 0);
    let r = handle(&mut s, &req("RECORD rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 4\r\nRTP-Info: seq=100;rtptime=5000\r\n\r\n"), &key, &mut io);
    assert_eq!(r.status, 200);
    assert_eq!(r.get_header("Audio-Latency"), Some("11025"));
    let r = handle(&mut s, &req("SET_PARAMETER rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 5\r\nContent-Type: text/parameters\r\nContent-Length: 15\r\n\r\nvolume: -11.5\r\n"), &key, &mut io);
    assert_eq!(r.status, 200);
    let r = handle(&mut s, &req("GET_PARAMETER rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 6\r\nContent-Type: text/parameters\r\nContent-Length: 8\r\n\r\nvolume\r\n"), &key, &mut io);
    assert_eq!(String::from_utf8_lossy(&r.body), "volume: -11.500000\r\n");
    handle(&mut s, &req("FLUSH rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 7\r\nRTP-Info: seq=200;rtptime=9000\r\n\r\n"), &key, &mut io);
    handle(&mut s, &req("SET_PARAMETER rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 8\r\nContent-Type: text/parameters\r\nContent-Length: 24\r\n\r\nprogress: 1/2/3\r\n       \r\n"), &key, &mut io);
    handle(&mut s, &req("SET_PARAMETER rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 9\r\nContent-Type: image/jpeg\r\nContent-Length: 3\r\n\r\nabc"), &key, &mut io);
    let r = handle(
        &mut s,
        &req("TEARDOWN rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 10\r\n\r\n"),
        &key,
        &mut io,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        io.events,
        vec![
            "setup L16 false 6001 6002",
            "record Some((100, 5000))",
            "volume -11.5",
            "flush Some((200, 9000))",
            "progress 1 2 3",
            "artwork image/jpeg 3",
            "teardown"
        ]
    );
    assert!(!s.holds_speaker());
}

#[test]
fn out_of_order_and_unknown_methods() {
    let key = AirportKey::load();
    let mut io = Recorder::default();
    let mut s = Session::new(info(None));
    assert_eq!(
        handle(
            &mut s,
            &req("SETUP rtsp://x/1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
            &key,
            &mut io
        )
        .status,
        455
    );
    assert_eq!(
        handle(
            &mut s,
            &req("RECORD rtsp://x/1 RTSP/1.0\r\nCSeq: 2\r\n\r\n"),
            &key,
            &mut io
        )
        .status,
        455
    );
    assert_eq!(
        handle(
            &mut s,
            &req("FLUSH rtsp://x/1 RTSP/1.0\r\nCSeq: 2\r\n\r\n"),
            &key,
            &mut io
        )
        .status,
        455
    );
    assert_eq!(
        handle(
            &mut s,
            &req("DESCRIBE rtsp://x/1 RTSP/1.0\r\nCSeq: 3\r\n\r\n"),
            &key,
            &mut io
        )
        .status,
        501
    );
    assert_eq!(
        handle(
            &mut s,
            &req("GET /info RTSP/1.0\r\nCSeq: 4\r\n\r\n"),
            &key,
            &mut io
        )
        .status,
        404
    );
    assert_eq!(
        handle(
            &mut s,
            &req("POST /feedback RTSP/1.0\r\nCSeq: 5\r\n\r\n"),
            &key,
            &mut io
        )
        .status,
        200
    );
    let r = handle(
        &mut s,
        &announce(
            6,
            "v=0\r\nm=audio 0 RTP/AVP 96\r\na=rtpmap:96 mpeg4-generic/44100/2\r\n",
        ),
        &key,
        &mut io,
    );
    assert!(r.status == 400 || r.status == 415, "{r:?}");
    assert!(io.events.is_empty());
}

#[test]
fn second_sender_gets_453() {
    let key = AirportKey::load();
    let mut io = Recorder {
        busy: true,
        ..Recorder::default()
    };
    let mut s = Session::new(info(None));
    assert_eq!(
        handle(&mut s, &announce(1, SDP_L16), &key, &mut io).status,
        453
    );
    assert!(!s.holds_speaker());
}

#[test]
fn unready_output_gets_503_with_the_cause() {
    let key = AirportKey::load();
    let mut io = Recorder {
        unready: Some("output alsa:x: no such ALSA device\r\n(ENOENT)".into()),
        ..Recorder::default()
    };
    let mut s = Session::new(info(None));
    let r = handle(&mut s, &announce(1, SDP_L16), &key, &mut io);
    assert_eq!(r.status, 503);
    // One line: control characters are dropped from the reason phrase.
    assert_eq!(
        r.reason,
        "Service Unavailable (output alsa:x: no such ALSA device(ENOENT))"
    );
    assert!(!s.holds_speaker());
    // The next ANNOUNCE asks again: the device is there now.
    io.unready = None;
    assert_eq!(
        handle(&mut s, &announce(2, SDP_L16), &key, &mut io).status,
        200
    );
    assert!(s.holds_speaker());
}

#[test]
fn digest_auth_required_once_per_connection() {
    let key = AirportKey::load();
    let mut io = Recorder::default();
    let mut s = Session::new(info(Some("secret")));
    let r = handle(
        &mut s,
        &req("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
        &key,
        &mut io,
    );
    assert_eq!(r.status, 401);
    let chal = r.get_header("WWW-Authenticate").unwrap().to_string();
    let nonce = chal.split('"').nth(3).unwrap();
    let ha1 = crate::crypto::md5_hex(&[b"iTunes:raop:secret"]);
    let ha2 = crate::crypto::md5_hex(&[b"OPTIONS:*"]);
    let resp = crate::crypto::md5_hex(&[format!("{ha1}:{nonce}:{ha2}").as_bytes()]);
    let wrong = crate::crypto::md5_hex(&[format!("{ha1}:{nonce}:x").as_bytes()]);
    let hdr = |r: &str| {
        format!("Digest username=\"iTunes\", realm=\"raop\", nonce=\"{nonce}\", uri=\"*\", response=\"{r}\"")
    };
    let r = handle(
        &mut s,
        &req(&format!(
            "OPTIONS * RTSP/1.0\r\nCSeq: 2\r\nAuthorization: {}\r\n\r\n",
            hdr(&wrong)
        )),
        &key,
        &mut io,
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        handle(&mut s, &announce(3, SDP_L16), &key, &mut io).status,
        401
    );
    assert!(io.events.is_empty());
    let r = handle(
        &mut s,
        &req(&format!(
            "OPTIONS * RTSP/1.0\r\nCSeq: 4\r\nAuthorization: {}\r\n\r\n",
            hdr(&resp)
        )),
        &key,
        &mut io,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        handle(&mut s, &announce(5, SDP_L16), &key, &mut io).status,
        200
    );
}

#[test]
fn closed_connection_releases_speaker() {
    let key = AirportKey::load();
    let mut io = Recorder::default();
    let mut s = Session::new(info(None));
    handle(&mut s, &announce(1, SDP_L16), &key, &mut io);
    assert!(s.holds_speaker());
    s.closed();
    io.drain(&mut s);
    assert_eq!(io.events, vec!["teardown"]);
}

#[test]
fn airplay_version_from_user_agent() {
    assert_eq!(super::airplay_version("AirPlay/353.2"), Some(353));
    assert_eq!(
        super::airplay_version("iTunes/12.8 (Macintosh; OS X 10.13) AirPlay/371"),
        Some(371)
    );
    assert_eq!(super::airplay_version("pyatv/0.18.0"), None);
    assert_eq!(super::airplay_version("AirPlay/x.1"), None);
    assert_eq!(super::airplay_version(""), None);
}

fn set_volume(s: &mut Session, io: &mut Recorder, value: &str) -> Response {
    let body = format!("volume: {value}\r\n");
    let raw = format!("SET_PARAMETER * RTSP/1.0\r\nCSeq: 9\r\nContent-Type: text/parameters\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    handle(s, &req(&raw), &AirportKey::load(), io)
}

#[test]
fn volume_is_normalised_once_at_the_boundary() {
    let key = AirportKey::load();
    let mut io = Recorder::default();
    let mut s = Session::new(info(None));
    handle(&mut s, &announce(1, SDP_L16), &key, &mut io);
    // What is stored (and reported by GET_PARAMETER / status) is what the mixer applies.
    for (sent, stored) in [
        ("0.300000", 0.0),
        ("-200", -144.0),
        ("-144.000000", -144.0),
        ("-100", -30.0),
        ("-31", -30.0),
        ("-15.25", -15.25),
        ("1e9", 0.0),
    ] {
        assert_eq!(set_volume(&mut s, &mut io, sent).status, 200, "{sent}");
        assert_eq!(io.volume, stored, "volume: {sent}");
    }
    for bad in ["NaN", "inf", "loud", ""] {
        assert_eq!(set_volume(&mut s, &mut io, bad).status, 400, "{bad}");
    }
    assert_eq!(io.volume, 0.0, "a refused volume changes nothing");
}

#[test]
fn progress_outside_the_track_is_taken_as_its_end() {
    let key = AirportKey::load();
    let mut io = Recorder::default();
    let mut s = Session::new(info(None));
    handle(&mut s, &announce(1, SDP_L16), &key, &mut io);
    for (sent, want) in [
        ("100/200/300", "progress 100 200 300"),
        ("100/400/300", "progress 100 300 300"),
        ("100/50/300", "progress 100 300 300"),
        // Wrapping around 2^32 inside the track is fine.
        ("4294967200/10/500", "progress 4294967200 10 500"),
    ] {
        let body = format!("progress: {sent}\r\n");
        let raw = format!("SET_PARAMETER * RTSP/1.0\r\nContent-Type: text/parameters\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        assert_eq!(handle(&mut s, &req(&raw), &key, &mut io).status, 200);
        assert_eq!(io.events.last().map(String::as_str), Some(want));
    }
}

#[test]
fn teardown_with_an_empty_uri_ends_the_stream_and_echoes_cseq() {
    let key = AirportKey::load();
    let mut io = Recorder::default();
    let mut s = Session::new(info(None));
    handle(&mut s, &announce(1, SDP_L16), &key, &mut io);
    let r = handle(
        &mut s,
        &req("TEARDOWN  RTSP/1.0\r\nCSeq: 42\r\n\r\n"),
        &key,
        &mut io,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.get_header("CSeq"), Some("42"));
    assert!(!s.holds_speaker());
    assert_eq!(io.events.last().map(String::as_str), Some("teardown"));
}

fn digest(nonce: &str, method: &str, pw: &str) -> String {
    let ha1 = crate::crypto::md5_hex(&[format!("iTunes:raop:{pw}").as_bytes()]);
    let ha2 = crate::crypto::md5_hex(&[format!("{method}:*").as_bytes()]);
    let r = crate::crypto::md5_hex(&[format!("{ha1}:{nonce}:{ha2}").as_bytes()]);
    format!("Digest username=\"iTunes\", realm=\"raop\", nonce=\"{nonce}\", uri=\"*\", response=\"{r}\"")
}

fn nonce_of(r: &Response) -> String {
    let chal = r.get_header("WWW-Authenticate").unwrap();
    chal.split('"').nth(3).unwrap().to_string()
}

#[test]
fn nonces_are_bound_to_their_connection() {
    let key = AirportKey::load();
    let mut io = Recorder::default();
    let mut a = Session::new(info(Some("secret")));
    let mut b = Session::new(info(Some("secret")));
    let ra = handle(&mut a, &req("OPTIONS * RTSP/1.0\r\n\r\n"), &key, &mut io);
    let rb = handle(&mut b, &req("OPTIONS * RTSP/1.0\r\n\r\n"), &key, &mut io);
    let (na, nb) = (nonce_of(&ra), nonce_of(&rb));
    assert_ne!(na, nb, "every connection gets its own nonce");
    // A's right answer, replayed on B, is refused; B's own works.
    let replay = format!(
        "OPTIONS * RTSP/1.0\r\nAuthorization: {}\r\n\r\n",
        digest(&na, "OPTIONS", "secret")
    );
    assert_eq!(handle(&mut b, &req(&replay), &key, &mut io).status, 401);
    assert_eq!(handle(&mut a, &req(&replay), &key, &mut io).status, 200);
    let own = format!(
        "OPTIONS * RTSP/1.0\r\nAuthorization: {}\r\n\r\n",
        digest(&nb, "OPTIONS", "secret")
    );
    assert_eq!(handle(&mut b, &req(&own), &key, &mut io).status, 200);
}

#[test]
fn nothing_changes_before_authentication() {
    let key = AirportKey::load();
    let mut io = Recorder::default();
    let mut s = Session::new(info(Some("secret")));
    let sdp = SDP_L16;
    let requests = [
        announce(1, sdp),
        req("SETUP rtsp://x/1 RTSP/1.0\r\nTransport: RTP/AVP/UDP;unicast;control_port=1;timing_port=2\r\n\r\n"),
        req("RECORD rtsp://x/1 RTSP/1.0\r\n\r\n"),
        req("SET_PARAMETER * RTSP/1.0\r\nContent-Type: text/parameters\r\nContent-Length: 11\r\n\r\nvolume: -5\n"),
        req("SET_PARAMETER * RTSP/1.0\r\nContent-Type: image/jpeg\r\nContent-Length: 3\r\n\r\nabc"),
        req("FLUSH * RTSP/1.0\r\n\r\n"),
        req("TEARDOWN * RTSP/1.0\r\n\r\n"),
        req("GET_PARAMETER * RTSP/1.0\r\nContent-Length: 7\r\n\r\nvolume\n"),
    ];
    for r in &requests {
        let resp = handle(&mut s, r, &key, &mut io);
        assert_eq!(resp.status, 401, "{} before authentication", r.method);
        assert!(resp.body.is_empty());
    }
    // Wrong passwords and garbage Authorization headers change nothing either.
    let n = nonce_of(&handle(
        &mut s,
        &req("OPTIONS * RTSP/1.0\r\n\r\n"),
        &key,
        &mut io,
    ));
    for auth in [
        digest(&n, "ANNOUNCE", "wrong"),
        digest(&n, "OPTIONS", "secret"), // answer for another method
        "Digest".to_string(),
        format!("Digest nonce=\"{n}\", response=\"\""),
        "Basic aVR1bmVzOnNlY3JldA==".to_string(),
    ] {
        let mut r = announce(2, sdp);
        r.headers.push(("Authorization".into(), auth.clone()));
        assert_eq!(handle(&mut s, &r, &key, &mut io).status, 401, "{auth}");
    }
    assert!(io.events.is_empty(), "{:?}", io.events);
    assert!(!s.holds_speaker());
    let mut r = announce(3, sdp);
    r.headers
        .push(("Authorization".into(), digest(&n, "ANNOUNCE", "secret")));
    assert_eq!(handle(&mut s, &r, &key, &mut io).status, 200);
}

/// Transport ports from the network are normalised at the boundary: out of range or not a
/// number is refused with 400 (not silently taken as "no port"), absent or 0 is "none", the
/// parameter names are matched whole and case-insensitively.
#[test]
fn transport_ports_are_checked_at_the_boundary() {
    let key = AirportKey::load();
    let setup = |transport: &str| {
        let mut io = Recorder::default();
        let mut s = Session::new(info(None));
        assert_eq!(
            handle(&mut s, &announce(1, SDP_L16), &key, &mut io).status,
            200
        );
        let r = handle(
            &mut s,
            &req(&format!(
                "SETUP rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 2\r\nTransport: {transport}\r\n\r\n"
            )),
            &key,
            &mut io,
        );
        (r.status, io.events.last().cloned().unwrap_or_default())
    };
    for bad in [
        "RTP/AVP/UDP;unicast;control_port=70000;timing_port=6002",
        "RTP/AVP/UDP;unicast;control_port=6001;timing_port=65536",
        "RTP/AVP/UDP;unicast;control_port=-1;timing_port=6002",
        "RTP/AVP/UDP;unicast;control_port=6001;timing_port=abc",
        "RTP/AVP/UDP;unicast;control_port=;timing_port=6002",
    ] {
        assert_eq!(setup(bad).0, 400, "{bad}");
    }
    assert_eq!(
        setup("RTP/AVP/UDP;unicast;mode=record;CONTROL_PORT= 6001 ;timing_port=65535"),
        (200, "setup L16 false 6001 65535".to_string())
    );
    assert_eq!(
        setup("RTP/AVP/UDP;unicast;mode=record"),
        (200, "setup L16 false 0 0".to_string())
    );
    // A longer name that starts with the wanted one is another parameter.
    assert_eq!(
        setup("RTP/AVP/UDP;unicast;control_portx=5;control_port=6001;timing_port=0"),
        (200, "setup L16 false 6001 0".to_string())
    );
}

/// The two-step requests: the question carries what the edge needs, the answer gives the
/// response with the request's CSeq; an answer that fits no question is the edge's bug and
/// gets 500, and a question left unanswered is dropped by the next request.
#[test]
fn questions_are_answered_once_and_in_kind() {
    let key = AirportKey::load();
    let mut s = Session::new(info(None));
    let r = s.answer(Answer::Volume(-3.0));
    assert_eq!(r.status, 500, "an answer without a question");
    let Reply::Ask(Question::Claim) = s.handle(&announce(7, SDP_L16), &key) else {
        panic!("ANNOUNCE asks for the speaker");
    };
    assert!(!s.holds_speaker(), "nothing is held before the answer");
    let r = s.answer(Answer::Volume(-3.0));
    assert_eq!((r.status, r.get_header("CSeq")), (500, Some("7")));
    assert!(!s.holds_speaker());
    // Asked again, answered in kind.
    let Reply::Ask(Question::Claim) = s.handle(&announce(8, SDP_L16), &key) else {
        panic!("ANNOUNCE asks for the speaker");
    };
    let r = s.answer(Answer::Claim(Claim::Granted));
    assert_eq!((r.status, r.get_header("CSeq")), (200, Some("8")));
    assert!(s.holds_speaker());
    let setup = req("SETUP rtsp://x/1 RTSP/1.0\r\nCSeq: 9\r\nTransport: RTP/AVP/UDP;unicast;control_port=6001;timing_port=6002\r\nDACP-ID: 14413BE4996FEA4D\r\nActive-Remote: 1986535575\r\nUser-Agent: AirPlay/353.2\r\n\r\n");
    let Reply::Ask(Question::Setup(q)) = s.handle(&setup, &key) else {
        panic!("SETUP asks for ports");
    };
    assert_eq!(q.client_ip, info(None).peer.ip());
    assert_eq!((q.client_control_port, q.client_timing_port), (6001, 6002));
    assert_eq!(q.dacp_id.as_deref(), Some("14413BE4996FEA4D"));
    assert_eq!(q.active_remote.as_deref(), Some("1986535575"));
    assert_eq!(q.airplay_version, Some(353));
    // Unanswered: the next request drops the question, and SETUP did not happen.
    let r = handle(
        &mut s,
        &req("RECORD rtsp://x/1 RTSP/1.0\r\nCSeq: 10\r\n\r\n"),
        &key,
        &mut Recorder::default(),
    );
    assert_eq!(r.status, 455);
    assert_eq!(s.answer(Answer::Setup(Err("x".into()))).status, 500);
    // A SETUP whose ports cannot be bound gets 500 and no Session header.
    let Reply::Ask(Question::Setup(_)) = s.handle(&setup, &key) else {
        panic!("SETUP asks for ports");
    };
    let r = s.answer(Answer::Setup(Err("address in use".into())));
    assert_eq!(r.status, 500);
    assert_eq!(r.get_header("Session"), None);
    assert_eq!(s.poll_effect(), None, "no effect without a stream");
}

/// Effects come out in the order the requests asked for them, several from one request
/// (a `text/parameters` body with volume and progress) in the body's order.
#[test]
fn effects_keep_the_order_of_the_requests() {
    let key = AirportKey::load();
    let mut io = Recorder::default();
    let mut s = Session::new(info(None));
    handle(&mut s, &announce(1, SDP_L16), &key, &mut io);
    let body = "progress: 1/2/3\r\nvolume: -7\r\n";
    let raw = format!("SET_PARAMETER * RTSP/1.0\r\nContent-Type: text/parameters\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let Reply::Done(r) = s.handle(&req(&raw), &key) else {
        panic!("SET_PARAMETER needs no answer");
    };
    assert_eq!(r.status, 200);
    let Reply::Done(_) = s.handle(&req("FLUSH * RTSP/1.0\r\n\r\n"), &key) else {
        panic!("FLUSH needs no answer");
    };
    s.closed();
    let effects: Vec<Effect> = std::iter::from_fn(|| s.poll_effect()).collect();
    assert_eq!(
        effects,
        vec![
            Effect::Progress {
                start: 1,
                current: 2,
                end: 3
            },
            Effect::Volume(-7.0),
            Effect::Flush(None),
            Effect::Teardown,
        ]
    );
}
