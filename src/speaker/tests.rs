use super::*;

const SESSION_TIMEOUT: Duration = Duration::from_secs(30);

fn speaker(interruption: Interruption, wait_for_output: bool) -> Speaker<&'static str, u8> {
    Speaker::new(SpeakerConfig {
        interruption,
        session_timeout: SESSION_TIMEOUT,
        idle_timeout: IDLE_CONNECTION,
        max_connections: 3,
        wait_for_output,
        output: "alsa:x".into(),
    })
}

fn actions<S, R>(sp: &mut Speaker<S, R>) -> Vec<Action<S>> {
    std::iter::from_fn(|| sp.poll_action()).collect()
}

fn sender(n: u8) -> IpAddr {
    IpAddr::from([192, 168, 1, n])
}

fn down(cause: &str) -> ProbeError {
    ProbeError {
        busy: false,
        cause: cause.into(),
        hint: "see aplay -l".into(),
    }
}

#[test]
fn a_second_sender_is_refused_while_the_first_holds_the_speaker() {
    let t = Instant::now();
    let mut sp = speaker(Interruption::Deny, false);
    let (a, b) = (sp.open(t).unwrap(), sp.open(t).unwrap());
    assert!(sp.claim(a));
    assert!(!sp.claim(b), "453 for the second sender");
    assert!(sp.owns(a) && !sp.owns(b));
    // A second ANNOUNCE on the holder's connection keeps the speaker.
    assert!(sp.claim(a));
    // Requests of the refused connection change nothing.
    sp.set_volume(a, -10.0);
    assert!(!sp.set_volume(b, -20.0));
    sp.record(b);
    sp.flush(b);
    sp.teardown(b);
    assert!(actions(&mut sp).is_empty());
    assert_eq!(sp.volume(), -10.0);
    assert!(sp.owns(a));
    // Once the first lets go, the second gets it.
    sp.teardown(a);
    assert!(sp.claim(b));
}

#[test]
fn take_over_stops_the_old_stream_and_closes_its_connection() {
    let t = Instant::now();
    let mut sp = speaker(Interruption::Allow, false);
    let (a, b) = (sp.open(t).unwrap(), sp.open(t).unwrap());
    assert!(sp.claim(a));
    let (serial, _) = sp.stream_started(a, sender(1), Some(7), "stream a");
    assert!(sp.claim(b));
    assert_eq!(
        actions(&mut sp),
        vec![
            Action::StopStream("stream a"),
            Action::Close {
                conn: a,
                why: "taken over"
            }
        ]
    );
    assert!(sp.owns(b) && !sp.owns(a));
    assert_eq!(sp.stream(), None);
    // The old stream's end, reported late, does not touch the new owner.
    sp.stream_ended(a, serial, StreamEnd::Stopped);
    assert_eq!(actions(&mut sp), vec![Action::AudioStopped]);
    assert!(sp.owns(b));
    // The old connection's teardown on close frees nothing of the new sender's.
    sp.teardown(a);
    sp.close(a);
    assert!(actions(&mut sp).is_empty());
    assert!(sp.owns(b));
}

#[test]
fn volume_is_kept_across_streams() {
    let t = Instant::now();
    let mut sp = speaker(Interruption::Deny, false);
    let a = sp.open(t).unwrap();
    assert!(sp.claim(a));
    assert_eq!(sp.stream_started(a, sender(1), None, "s1").1, 0.0);
    assert!(sp.set_volume(a, -12.5));
    sp.teardown(a);
    sp.close(a);
    let b = sp.open(t).unwrap();
    assert!(sp.claim(b));
    let (_, volume) = sp.stream_started(b, sender(2), None, "s2");
    assert_eq!(volume, -12.5, "the new stream starts at the last volume");
    assert_eq!(sp.volume(), -12.5);
}

#[test]
fn hooks_follow_record_flush_and_teardown_of_the_holder() {
    let t = Instant::now();
    let mut sp = speaker(Interruption::Deny, false);
    let a = sp.open(t).unwrap();
    assert!(sp.claim(a));
    sp.stream_started(a, sender(5), Some(1), "s");
    assert_eq!(sp.stream_of(a), Some(&"s"));
    sp.record(a);
    sp.flush(a);
    sp.teardown(a);
    assert_eq!(
        actions(&mut sp),
        vec![
            Action::AudioStarted(Some(sender(5))),
            Action::AudioStopped,
            Action::StopStream("s"),
            Action::AudioStopped,
        ]
    );
    assert_eq!((sp.sender(), sp.remote(), sp.stream()), (None, None, None));
}

#[test]
fn now_playing_comes_from_the_holder_and_is_cleared_with_it() {
    let t = Instant::now();
    let mut sp = speaker(Interruption::Deny, false);
    let (a, b) = (sp.open(t).unwrap(), sp.open(t).unwrap());
    assert!(sp.claim(a));
    sp.progress(b, 1, 2, 3);
    assert!(sp.now_playing().progress.is_none());
    sp.progress(a, 1, 2, 3);
    sp.artwork(a, "image/jpeg", b"abc");
    assert!(sp.now_playing().progress.is_some());
    assert!(sp.now_playing().artwork.is_some());
    sp.teardown(a);
    assert!(sp.now_playing().progress.is_none());
    assert!(sp.now_playing().artwork.is_none());
}

#[test]
fn silent_connections_time_out_unless_their_stream_runs() {
    let t = Instant::now();
    let mut sp = speaker(Interruption::Deny, false);
    let (a, b) = (sp.open(t).unwrap(), sp.open(t).unwrap());
    // Without the speaker: the idle limit.
    assert_eq!(sp.poll_timeout(b), Some(t + IDLE_CONNECTION));
    assert_eq!(sp.handle_timeout(b, t + SESSION_TIMEOUT), None, "not due");
    assert_eq!(
        sp.handle_timeout(b, t + IDLE_CONNECTION),
        Some(IDLE_CONNECTION)
    );
    // Holding it: the session timeout, from the last activity.
    assert!(sp.claim(a));
    let t1 = t + Duration::from_secs(5);
    sp.activity(a, t1);
    assert_eq!(sp.poll_timeout(a), Some(t1 + SESSION_TIMEOUT));
    // With its stream running, the stream watches the sender: the timer is re-armed.
    let (serial, _) = sp.stream_started(a, sender(1), None, "s");
    let due = t1 + SESSION_TIMEOUT;
    assert_eq!(sp.handle_timeout(a, due), None);
    assert_eq!(sp.poll_timeout(a), Some(due + SESSION_TIMEOUT));
    // The sender went silent: the stream ends, the speaker is free, the connection's next
    // timeout closes it.
    sp.stream_ended(a, serial, StreamEnd::SenderGone);
    assert!(!sp.owns(a));
    let b2 = sp.open(t).unwrap();
    assert!(sp.claim(b2), "a vanished sender frees the speaker");
    assert_eq!(
        sp.handle_timeout(a, due + SESSION_TIMEOUT),
        Some(SESSION_TIMEOUT)
    );
    assert_eq!(sp.poll_timeout(99), None, "unknown connection");
}

#[test]
fn connections_are_limited() {
    let t = Instant::now();
    let mut sp = speaker(Interruption::Deny, false);
    let ids: Vec<_> = (0..3).map(|_| sp.open(t).unwrap()).collect();
    assert_eq!(sp.open(t), None);
    assert_eq!(sp.connections(), 3);
    sp.close(ids[1]);
    assert!(sp.open(t).is_some());
}

#[test]
fn an_output_down_at_start_refuses_senders_until_it_works() {
    let t = Instant::now();
    let mut sp = speaker(Interruption::Deny, true);
    sp.set_output_problem(Some(down("output alsa:x: no such ALSA device")));
    let a = sp.open(t).unwrap();
    assert!(sp.output_check_due());
    assert_eq!(
        sp.output_checked(Err(down("output alsa:x: no such ALSA device"))),
        Err("output alsa:x: no such ALSA device".to_string())
    );
    // Held by another program: not refused, it is opened when audio comes.
    let busy = ProbeError {
        busy: true,
        ..down("output alsa:x: busy")
    };
    assert_eq!(sp.output_checked(Err(busy)), Ok(()));
    assert_eq!(sp.output_checked(Ok(())), Ok(()));
    assert_eq!(sp.output_problem(), None);
    assert!(sp.claim(a));
    sp.stream_started(a, sender(1), None, "s");
    assert!(!sp.output_check_due(), "a playing stream holds the output");
}

#[test]
fn an_output_failing_under_a_stream_closes_the_sender_and_refuses_the_next() {
    let t = Instant::now();
    let mut sp = speaker(Interruption::Deny, false);
    let a = sp.open(t).unwrap();
    assert!(
        !sp.output_check_due(),
        "not watched without --wait-for-output"
    );
    assert!(sp.claim(a));
    let (serial, _) = sp.stream_started(a, sender(1), Some(3), "s");
    sp.stream_ended(
        a,
        serial,
        StreamEnd::OutputFailed(down("output alsa:x: device unplugged")),
    );
    assert_eq!(
        actions(&mut sp),
        vec![
            Action::AudioStopped,
            Action::Close {
                conn: a,
                why: "output failed"
            }
        ]
    );
    assert!(!sp.owns(a));
    assert_eq!(sp.remote(), None);
    // The next sender finds the output checked, and gets the cause while it is down.
    assert!(sp.output_check_due());
    assert!(sp
        .output_checked(Err(down("output alsa:x: device unplugged")))
        .is_err());
    // SIGHUP finds it back.
    sp.output_rechecked(Ok(()));
    assert!(!sp.output_check_due());
}

#[test]
fn sighup_sets_the_cause_only_with_wait_for_output() {
    let mut sp = speaker(Interruption::Deny, false);
    sp.output_rechecked(Err(down("gone")));
    assert_eq!(sp.output_problem(), None);
    let mut sp = speaker(Interruption::Deny, true);
    sp.output_rechecked(Err(ProbeError {
        busy: true,
        ..down("busy")
    }));
    assert_eq!(sp.output_problem(), None);
    sp.output_rechecked(Err(down("gone")));
    assert_eq!(sp.output_problem().map(|p| p.cause.as_str()), Some("gone"));
}

#[test]
fn a_second_setup_replaces_the_stream() {
    let t = Instant::now();
    let mut sp = speaker(Interruption::Deny, false);
    let a = sp.open(t).unwrap();
    assert!(sp.claim(a));
    let (s1, _) = sp.stream_started(a, sender(1), None, "first");
    let (s2, _) = sp.stream_started(a, sender(1), None, "second");
    assert_ne!(s1, s2);
    assert_eq!(actions(&mut sp), vec![Action::StopStream("first")]);
    // The first stream's end leaves the second in place.
    sp.stream_ended(a, s1, StreamEnd::Stopped);
    assert_eq!(sp.stream(), Some(&"second"));
    sp.stream_ended(a, s2, StreamEnd::Stopped);
    assert_eq!(sp.stream(), None);
    assert!(sp.owns(a), "a stopped stream keeps the speaker");
}
