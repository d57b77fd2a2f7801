//! Responder behaviour against a fake clock: every packet it emits is parsed back and checked.

use super::*;
use crate::mdns::raop_txt;
use simple_dns::rdata::RData;
use std::net::Ipv6Addr;

const MAC: [u8; 6] = [0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF];
const INSTANCE: &str = "AABBCCDDEEFF@Kitchen._raop._tcp.local";
const HOST: &str = "raopd-aabbccddeeff.local";
const OWN_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);

fn service() -> Service {
    Service {
        instance_name: "Kitchen".into(),
        mac: MAC,
        port: 5000,
        txt: raop_txt(false, "0.1.0"),
        hostname: String::new(),
        addrs: vec![IpAddr::V4(OWN_ADDR)],
    }
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)), port)
}

fn drain(r: &mut Responder, now: Instant) -> Vec<Transmit> {
    std::iter::from_fn(|| r.poll_output(now)).collect()
}

fn parse(t: &Transmit) -> Packet<'_> {
    Packet::parse(&t.payload).expect("responder emitted an unparsable packet")
}

fn name(s: &str) -> Name<'static> {
    Name::new_unchecked(s).into_owned()
}

/// Runs the timers until the responder has announced twice; returns the time it got there.
fn announce(r: &mut Responder, start: Instant) -> Instant {
    let mut now = start;
    for _ in 0..20 {
        match r.poll_timeout() {
            Some(t) => {
                now = now.max(t);
                drain(r, now);
            }
            None => break,
        }
    }
    assert!(
        r.is_announced() && r.poll_timeout().is_none(),
        "did not finish announcing"
    );
    now
}

/// An announced responder and an instant a second after its last announcement, from which on
/// a query is answered by multicast again (RFC 6762 section 6).
fn announced() -> (Responder, Instant) {
    let t0 = Instant::now();
    let mut r = Responder::with_seed(service(), t0, 7);
    let now = announce(&mut r, t0) + MULTICAST_INTERVAL;
    (r, now)
}

fn query(id: u16, questions: &[(&str, TYPE, bool)]) -> Vec<u8> {
    let mut p = Packet::new_query(id);
    for (n, t, qu) in questions {
        p.questions.push(Question::new(
            name(n),
            QTYPE::TYPE(*t),
            CLASS::IN.into(),
            *qu,
        ));
    }
    p.build_bytes_vec().unwrap()
}

fn response_with(records: Vec<ResourceRecord<'static>>) -> Vec<u8> {
    let mut p = Packet::new_reply(0);
    p.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    p.answers = records;
    p.build_bytes_vec().unwrap()
}

fn srv(instance: &str, port: u16) -> ResourceRecord<'static> {
    ResourceRecord::new(
        name(instance),
        CLASS::IN,
        120,
        RData::SRV(SRV {
            priority: 0,
            weight: 0,
            port,
            target: name("other.local"),
        }),
    )
}

fn find<'a>(rrs: &'a [ResourceRecord<'a>], t: TYPE) -> Vec<&'a ResourceRecord<'a>> {
    rrs.iter().filter(|r| r.rdata.type_code() == t).collect()
}

fn txt_strings(rr: &ResourceRecord) -> Vec<String> {
    match &rr.rdata {
        RData::TXT(t) => t
            .iter_raw()
            .map(|(k, v)| match v {
                Some(v) => format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                ),
                None => String::from_utf8_lossy(k).into_owned(),
            })
            .collect(),
        other => panic!("not a TXT: {other:?}"),
    }
}

#[test]
fn probes_three_times_then_announces_twice() {
    let t0 = Instant::now();
    let mut r = Responder::with_seed(service(), t0, 42);
    assert!(!r.is_announced());
    let first = r.poll_timeout().expect("probe timer");
    assert!(
        first >= t0 && first < t0 + Duration::from_millis(250),
        "initial delay 0-250 ms"
    );
    if first > t0 {
        assert!(
            drain(&mut r, t0).is_empty(),
            "nothing before the first probe"
        );
    }

    let mut now = first;
    for i in 0..3u32 {
        assert_eq!(
            r.poll_timeout(),
            Some(now),
            "probe {i} due 250 ms after the previous one"
        );
        assert!(drain(&mut r, now - Duration::from_millis(1)).is_empty());
        let out = drain(&mut r, now);
        assert_eq!(out.len(), 1, "one probe {i}");
        assert_eq!(out[0].dst, MDNS_GROUP_V4);
        let p = parse(&out[0]);
        assert!(!p.has_flags(PacketFlag::RESPONSE), "probes are queries");
        assert_eq!(p.questions.len(), 2);
        assert_eq!(p.questions[0].qname, name(INSTANCE));
        assert_eq!(p.questions[0].qtype, QTYPE::ANY);
        assert_eq!(
            p.questions[0].unicast_response,
            i == 0,
            "the first probe is QU, the others QM"
        );
        assert_eq!(p.questions[1].qname, name(HOST));
        assert!(p.answers.is_empty());
        let srvs = find(&p.name_servers, TYPE::SRV);
        assert_eq!(srvs.len(), 1, "proposed SRV in the authority section");
        match &srvs[0].rdata {
            RData::SRV(s) => {
                assert_eq!(s.port, 5000);
                assert_eq!(s.target, name(HOST));
            }
            _ => unreachable!(),
        }
        assert_eq!(find(&p.name_servers, TYPE::TXT).len(), 1);
        assert_eq!(find(&p.name_servers, TYPE::A).len(), 1);
        assert!(!r.is_announced());
        now += Duration::from_millis(250);
    }

    // 250 ms after the third probe: the first announcement.
    assert_eq!(r.poll_timeout(), Some(now));
    let out = drain(&mut r, now);
    assert_eq!(out.len(), 1);
    assert!(r.is_announced());
    let p = parse(&out[0]);
    assert!(p.has_flags(PacketFlag::RESPONSE));
    assert!(p.has_flags(PacketFlag::AUTHORITATIVE_ANSWER));
    assert_eq!(p.id(), 0);
    let ptrs = find(&p.answers, TYPE::PTR);
    assert_eq!(
        ptrs.len(),
        2,
        "service PTR and service-type enumeration PTR"
    );
    assert!(ptrs.iter().any(|rr| rr.name == name("_raop._tcp.local")
        && rr.rdata == RData::PTR(PTR(name(INSTANCE)))
        && !rr.cache_flush
        && rr.ttl == 4500));
    assert!(ptrs
        .iter()
        .any(|rr| rr.name == name("_services._dns-sd._udp.local")
            && rr.rdata == RData::PTR(PTR(name("_raop._tcp.local")))));
    let srv = find(&p.answers, TYPE::SRV);
    assert_eq!(srv.len(), 1);
    assert!(
        srv[0].cache_flush,
        "unique records carry the cache-flush bit"
    );
    assert_eq!(srv[0].ttl, 120);
    let txt = find(&p.answers, TYPE::TXT);
    assert!(txt_strings(txt[0]).contains(&"am=raopd".to_string()));
    let a = find(&p.answers, TYPE::A);
    assert_eq!(a[0].rdata, RData::A(A::from(OWN_ADDR)));
    assert_eq!(a[0].name, name(HOST));

    // The second announcement 1 s later, then nothing scheduled.
    assert_eq!(r.poll_timeout(), Some(now + Duration::from_secs(1)));
    assert!(drain(&mut r, now + Duration::from_millis(999)).is_empty());
    let out = drain(&mut r, now + Duration::from_secs(1));
    assert_eq!(out.len(), 1);
    assert_eq!(find(&parse(&out[0]).answers, TYPE::SRV).len(), 1);
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(r.current_instance(), "AABBCCDDEEFF@Kitchen");
}

#[test]
fn conflict_while_probing_renames_the_name_part() {
    let t0 = Instant::now();
    let mut r = Responder::with_seed(service(), t0, 1);
    let t1 = r.poll_timeout().unwrap();
    assert_eq!(drain(&mut r, t1).len(), 1);

    // Someone else already owns the name (different port).
    r.handle_input(t1, peer(5353), &response_with(vec![srv(INSTANCE, 7000)]));
    assert_eq!(r.current_name(), "Kitchen (2)");
    assert_eq!(r.current_instance(), "AABBCCDDEEFF@Kitchen (2)");
    assert!(!r.is_announced());
    // Probing restarts at once with the new name.
    assert_eq!(r.poll_timeout(), Some(t1));
    let out = drain(&mut r, t1);
    assert_eq!(out.len(), 1);
    assert_eq!(
        parse(&out[0]).questions[0].qname,
        name("AABBCCDDEEFF@Kitchen (2)._raop._tcp.local")
    );

    // That one is taken too.
    r.handle_input(
        t1,
        peer(5353),
        &response_with(vec![srv("AABBCCDDEEFF@Kitchen (2)._raop._tcp.local", 7001)]),
    );
    assert_eq!(r.current_instance(), "AABBCCDDEEFF@Kitchen (3)");

    // A record for the old name no longer matters.
    r.handle_input(t1, peer(5353), &response_with(vec![srv(INSTANCE, 7000)]));
    assert_eq!(r.current_name(), "Kitchen (3)");

    announce(&mut r, t1);
    let t = answer_ptr(&mut r);
    let resp = parse(&t);
    assert_eq!(
        resp.answers[0].rdata,
        RData::PTR(PTR(name("AABBCCDDEEFF@Kitchen (3)._raop._tcp.local")))
    );
}

#[test]
fn own_records_looped_back_are_no_conflict() {
    let t0 = Instant::now();
    let mut r = Responder::with_seed(service(), t0, 3);
    let mut now = r.poll_timeout().unwrap();
    let probe = drain(&mut r, now).remove(0);
    // Multicast loopback delivers our own probe and announcements back to us.
    r.handle_input(
        now,
        SocketAddr::new(IpAddr::V4(OWN_ADDR), 5353),
        &probe.payload,
    );
    assert_eq!(r.poll_timeout(), Some(now + Duration::from_millis(250)));
    while let Some(t) = r.poll_timeout() {
        now = t;
        for t in drain(&mut r, now) {
            r.handle_input(now, SocketAddr::new(IpAddr::V4(OWN_ADDR), 5353), &t.payload);
        }
    }
    assert!(r.is_announced());
    assert_eq!(r.current_name(), "Kitchen");
}

#[test]
fn simultaneous_probe_tiebreak() {
    let t0 = Instant::now();
    let mut r = Responder::with_seed(service(), t0, 5);
    let t1 = r.poll_timeout().unwrap();
    let own_probe = drain(&mut r, t1).remove(0).payload;
    // The other host proposes the same records except for the SRV port.
    let probe_from = |port: u16| {
        let mut p = Packet::parse(&own_probe).unwrap();
        for rr in p.name_servers.iter_mut() {
            if let RData::SRV(s) = &mut rr.rdata {
                s.port = port;
            }
        }
        p.build_bytes_vec().unwrap()
    };
    // Their data sorts before ours (port 1 < 5000): we win and carry on.
    r.handle_input(t1, peer(5353), &probe_from(1));
    assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_millis(250)));
    assert_eq!(r.current_name(), "Kitchen");

    // Identical data (our own probe looped back): no effect.
    r.handle_input(t1, peer(5353), &probe_from(5000));
    assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_millis(250)));

    // Their data sorts after ours: we lose, wait 1 s and probe again, same name.
    r.handle_input(t1, peer(5353), &probe_from(9000));
    assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(1)));
    assert_eq!(r.current_name(), "Kitchen");
    assert!(drain(&mut r, t1 + Duration::from_millis(999)).is_empty());
    let out = drain(&mut r, t1 + Duration::from_secs(1));
    assert_eq!(out.len(), 1, "probing starts over");
    assert!(!parse(&out[0]).has_flags(PacketFlag::RESPONSE));
}

#[test]
fn queries_are_not_answered_while_probing() {
    let t0 = Instant::now();
    let mut r = Responder::with_seed(service(), t0, 9);
    let t1 = r.poll_timeout().unwrap();
    drain(&mut r, t1);
    r.handle_input(
        t1,
        peer(5353),
        &query(0, &[("_raop._tcp.local", TYPE::PTR, false)]),
    );
    assert!(drain(&mut r, t1).is_empty());
}

fn answer_ptr(r: &mut Responder) -> Transmit {
    let now = Instant::now() + Duration::from_secs(10);
    r.handle_input(
        now,
        peer(5353),
        &query(0, &[("_raop._tcp.local", TYPE::PTR, false)]),
    );
    let mut out = drain(r, now);
    assert_eq!(out.len(), 1, "one answer to a PTR query");
    out.remove(0)
}

#[test]
fn answers_ptr_with_srv_txt_and_address_as_additionals() {
    let (mut r, _) = announced();
    let t = answer_ptr(&mut r);
    let p = parse(&t);
    assert_eq!(t.dst, MDNS_GROUP_V4, "QM query: multicast answer");
    assert!(p.has_flags(PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER));
    assert_eq!(p.answers.len(), 1);
    assert_eq!(p.answers[0].name, name("_raop._tcp.local"));
    assert_eq!(p.answers[0].rdata, RData::PTR(PTR(name(INSTANCE))));
    assert!(
        p.questions.is_empty(),
        "multicast answers carry no question"
    );
    assert_eq!(find(&p.additional_records, TYPE::SRV).len(), 1);
    assert_eq!(find(&p.additional_records, TYPE::TXT).len(), 1);
    assert_eq!(find(&p.additional_records, TYPE::A).len(), 1);
}

#[test]
fn answers_srv_txt_a_aaaa_and_service_enumeration() {
    let t0 = Instant::now();
    let mut svc = service();
    let v6: Ipv6Addr = "fe80::1".parse().unwrap();
    svc.addrs.push(IpAddr::V6(v6));
    let mut r = Responder::with_seed(svc, t0, 11);
    let mut now = announce(&mut r, t0);
    // A second apart: each answer may multicast the records again.
    let mut ask = |r: &mut Responder, n: &str, t: TYPE| {
        now += MULTICAST_INTERVAL;
        r.handle_input(now, peer(5353), &query(0, &[(n, t, false)]));
        let out = drain(r, now);
        out.into_iter().map(|t| t.payload).collect::<Vec<_>>()
    };

    let out = ask(&mut r, INSTANCE, TYPE::SRV);
    assert_eq!(out.len(), 1);
    let p = Packet::parse(&out[0]).unwrap();
    assert_eq!(p.answers.len(), 1);
    match &p.answers[0].rdata {
        RData::SRV(s) => {
            assert_eq!(s.port, 5000);
            assert_eq!(s.target, name(HOST));
        }
        other => panic!("expected SRV, got {other:?}"),
    }
    assert_eq!(
        find(&p.additional_records, TYPE::A).len(),
        1,
        "address of the SRV target"
    );
    assert_eq!(find(&p.additional_records, TYPE::AAAA).len(), 1);

    let out = ask(&mut r, INSTANCE, TYPE::TXT);
    let p = Packet::parse(&out[0]).unwrap();
    let flat = txt_strings(&p.answers[0]).join(" ");
    assert_eq!(
        flat,
        "txtvers=1 ch=2 cn=0,1 et=0,1 ek=1 md=0,1,2 pw=false sr=44100 ss=16 tp=UDP vn=3 \
         sv=false sm=false am=raopd vs=0.1.0 da=true"
    );

    let out = ask(&mut r, HOST, TYPE::A);
    let p = Packet::parse(&out[0]).unwrap();
    assert_eq!(p.answers.len(), 1);
    assert_eq!(p.answers[0].rdata, RData::A(A::from(OWN_ADDR)));
    assert!(p.answers[0].cache_flush);

    let out = ask(&mut r, HOST, TYPE::AAAA);
    let p = Packet::parse(&out[0]).unwrap();
    assert_eq!(p.answers.len(), 1);
    assert_eq!(p.answers[0].rdata, RData::AAAA(AAAA::from(v6)));

    let out = ask(&mut r, "_services._dns-sd._udp.local", TYPE::PTR);
    let p = Packet::parse(&out[0]).unwrap();
    assert_eq!(
        p.answers[0].rdata,
        RData::PTR(PTR(name("_raop._tcp.local")))
    );

    // Case-insensitive names.
    let out = ask(&mut r, "_RAOP._TCP.LOCAL", TYPE::PTR);
    assert_eq!(out.len(), 1);

    // Not ours: silence.
    assert!(ask(&mut r, "_airplay._tcp.local", TYPE::PTR).is_empty());
    assert!(ask(&mut r, "other.local", TYPE::A).is_empty());
    assert!(ask(&mut r, INSTANCE, TYPE::A).is_empty());
}

#[test]
fn qu_question_gets_a_unicast_answer() {
    let (mut r, now) = announced();
    r.handle_input(
        now,
        peer(5353),
        &query(0, &[("_raop._tcp.local", TYPE::PTR, true)]),
    );
    let out = drain(&mut r, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, peer(5353), "QU: unicast to the asker");
    let p = parse(&out[0]);
    assert_eq!(p.answers[0].rdata, RData::PTR(PTR(name(INSTANCE))));

    // Mixed QU and QM in one packet: one multicast answer covers both.
    r.handle_input(
        now,
        peer(5353),
        &query(
            0,
            &[
                ("_raop._tcp.local", TYPE::PTR, true),
                (INSTANCE, TYPE::SRV, false),
            ],
        ),
    );
    let out = drain(&mut r, now);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].dst, MDNS_GROUP_V4);
    assert_eq!(find(&parse(&out[0]).answers, TYPE::SRV).len(), 1);
    assert_eq!(out[1].dst, peer(5353));
    assert_eq!(find(&parse(&out[1]).answers, TYPE::PTR).len(), 1);

    // QU from this very host: unicast to the shared port might not reach the asker.
    for (i, src) in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(OWN_ADDR)]
        .into_iter()
        .enumerate()
    {
        let now = now + MULTICAST_INTERVAL * (i as u32 + 1);
        r.handle_input(
            now,
            SocketAddr::new(src, 5353),
            &query(0, &[("_raop._tcp.local", TYPE::PTR, true)]),
        );
        let out = drain(&mut r, now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dst, MDNS_GROUP_V4);
    }
}

#[test]
fn legacy_unicast_echoes_id_and_question_with_short_ttl() {
    let (mut r, now) = announced();
    let src = peer(41000);
    r.handle_input(
        now,
        src,
        &query(0xBEEF, &[("_raop._tcp.local", TYPE::PTR, false)]),
    );
    let out = drain(&mut r, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, src, "legacy: unicast back to the source port");
    let p = parse(&out[0]);
    assert_eq!(p.id(), 0xBEEF);
    assert_eq!(p.questions.len(), 1);
    assert_eq!(p.questions[0].qname, name("_raop._tcp.local"));
    assert_eq!(p.questions[0].qtype, QTYPE::TYPE(TYPE::PTR));
    assert_eq!(p.answers.len(), 1);
    for rr in p.answers.iter().chain(p.additional_records.iter()) {
        assert!(rr.ttl <= 10, "legacy TTL capped: {rr:?}");
        assert!(!rr.cache_flush, "no cache-flush bit for legacy resolvers");
    }
    assert!(!p.additional_records.is_empty());
}

#[test]
fn known_answer_suppression() {
    let (mut r, now) = announced();
    let known = |ttl: u32| {
        let mut p = Packet::new_query(0);
        p.questions.push(Question::new(
            name("_raop._tcp.local"),
            TYPE::PTR.into(),
            CLASS::IN.into(),
            false,
        ));
        p.answers.push(ResourceRecord::new(
            name("_raop._tcp.local"),
            CLASS::IN,
            ttl,
            RData::PTR(PTR(name(INSTANCE))),
        ));
        p.build_bytes_vec().unwrap()
    };
    r.handle_input(now, peer(5353), &known(4500));
    assert!(
        drain(&mut r, now).is_empty(),
        "querier already knows the PTR"
    );
    r.handle_input(now, peer(5353), &known(2000));
    assert_eq!(
        drain(&mut r, now).len(),
        1,
        "less than half the TTL left: answer again"
    );
}

#[test]
fn goodbye_has_ttl_zero_and_silences_the_responder() {
    let (mut r, now) = announced();
    r.shutdown();
    let out = drain(&mut r, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, MDNS_GROUP_V4);
    let p = parse(&out[0]);
    assert!(p.has_flags(PacketFlag::RESPONSE));
    assert!(p.answers.iter().all(|rr| rr.ttl == 0));
    assert!(p.answers.iter().any(
        |rr| rr.name == name("_raop._tcp.local") && rr.rdata == RData::PTR(PTR(name(INSTANCE)))
    ));
    assert_eq!(find(&p.answers, TYPE::SRV).len(), 1);
    assert_eq!(find(&p.answers, TYPE::TXT).len(), 1);
    assert_eq!(find(&p.answers, TYPE::A).len(), 1);
    assert_eq!(r.poll_timeout(), None);
    r.handle_input(
        now,
        peer(5353),
        &query(0, &[("_raop._tcp.local", TYPE::PTR, false)]),
    );
    assert!(drain(&mut r, now).is_empty(), "silent after shutdown");

    // Nothing was ever announced: nothing to retract.
    let t0 = Instant::now();
    let mut r = Responder::with_seed(service(), t0, 2);
    let t1 = r.poll_timeout().unwrap();
    drain(&mut r, t1);
    r.shutdown();
    assert!(drain(&mut r, t1 + Duration::from_secs(5)).is_empty());
}

#[test]
fn address_change_sends_goodbye_and_reannounces() {
    let (mut r, now) = announced();
    let new = Ipv4Addr::new(192, 168, 1, 11);
    r.set_addresses(now, vec![IpAddr::V4(new)]);
    let out = drain(&mut r, now);
    assert_eq!(
        out.len(),
        2,
        "goodbye for the old address, then an announcement"
    );
    let bye = parse(&out[0]);
    assert_eq!(bye.answers.len(), 1);
    assert_eq!(bye.answers[0].rdata, RData::A(A::from(OWN_ADDR)));
    assert_eq!(bye.answers[0].ttl, 0);
    let ann = parse(&out[1]);
    let a = find(&ann.answers, TYPE::A);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].rdata, RData::A(A::from(new)));
    assert_eq!(
        r.poll_timeout(),
        Some(now + Duration::from_secs(1)),
        "second announcement"
    );
    // The same set again is no change.
    drain(&mut r, now + Duration::from_secs(1));
    r.set_addresses(now, vec![IpAddr::V4(new), IpAddr::V4(new)]);
    assert!(drain(&mut r, now + Duration::from_secs(2)).is_empty());
}

#[test]
fn conflict_after_announcing_reprobes_then_renames_if_defended() {
    let (mut r, now) = announced();
    r.handle_input(now, peer(5353), &response_with(vec![srv(INSTANCE, 7000)]));
    assert!(!r.is_announced(), "back to probing");
    assert_eq!(
        r.current_name(),
        "Kitchen",
        "no rename before the name is defended"
    );
    let out = drain(&mut r, now);
    assert!(!parse(&out[0]).has_flags(PacketFlag::RESPONSE));
    // The other host defends it.
    r.handle_input(now, peer(5353), &response_with(vec![srv(INSTANCE, 7000)]));
    assert_eq!(r.current_name(), "Kitchen (2)");
}

#[test]
fn host_name_conflict_renames_the_host() {
    let t0 = Instant::now();
    let mut r = Responder::with_seed(service(), t0, 4);
    let t1 = r.poll_timeout().unwrap();
    drain(&mut r, t1);
    let other_a = ResourceRecord::new(
        name(HOST),
        CLASS::IN,
        120,
        RData::A(A::from(Ipv4Addr::new(10, 0, 0, 9))),
    );
    r.handle_input(t1, peer(5353), &response_with(vec![other_a]));
    assert_eq!(r.current_hostname(), "raopd-aabbccddeeff-2.local");
    assert_eq!(r.current_name(), "Kitchen");
    // The same address as ours is not a conflict (another responder on this host).
    let same_a = ResourceRecord::new(
        name("raopd-aabbccddeeff-2.local"),
        CLASS::IN,
        120,
        RData::A(A::from(OWN_ADDR)),
    );
    r.handle_input(t1, peer(5353), &response_with(vec![same_a]));
    assert_eq!(r.current_hostname(), "raopd-aabbccddeeff-2.local");
}

#[test]
fn responses_from_other_ports_and_odd_opcodes_are_ignored() {
    let t0 = Instant::now();
    let mut r = Responder::with_seed(service(), t0, 6);
    let t1 = r.poll_timeout().unwrap();
    drain(&mut r, t1);
    r.handle_input(t1, peer(12345), &response_with(vec![srv(INSTANCE, 7000)]));
    assert_eq!(r.current_name(), "Kitchen");
    let mut bytes = response_with(vec![srv(INSTANCE, 7000)]);
    bytes[2] |= 0x28; // opcode 5 (update)
    r.handle_input(t1, peer(5353), &bytes);
    assert_eq!(r.current_name(), "Kitchen");
}

#[test]
fn long_names_fit_one_label() {
    let mut svc = service();
    svc.instance_name = "Ä very long speaker name that goes on and on and on and on".into();
    let t0 = Instant::now();
    let mut r = Responder::with_seed(svc, t0, 8);
    assert_eq!(
        r.current_instance(),
        format!(
            "{}@Ä very long speaker name that goes on and on and",
            hex_mac(r.mac, true)
        )
    );
    assert_eq!(r.current_instance().len(), 62);
    r.name_number = 999;
    r.refresh_names();
    assert!(r.current_instance().len() <= 63);
    assert!(
        r.current_name().ends_with("goes on and o (999)"),
        "{}",
        r.current_name()
    );
    let now = announce(&mut r, t0) + MULTICAST_INTERVAL;
    r.handle_input(
        now,
        peer(5353),
        &query(0, &[("_raop._tcp.local", TYPE::PTR, false)]),
    );
    assert_eq!(drain(&mut r, now).len(), 1);

    let mut svc = service();
    svc.instance_name = "  \u{7}  ".into();
    svc.hostname = "not a host name!".into();
    let r = Responder::with_seed(svc, t0, 8);
    assert_eq!(r.current_name(), "raopd");
    assert_eq!(r.current_hostname(), HOST);

    let mut svc = service();
    svc.hostname = "kitchen-pi.local.".into();
    assert_eq!(
        Responder::with_seed(svc, t0, 8).current_hostname(),
        "kitchen-pi.local"
    );
}

#[test]
fn rdata_bytes_are_the_wire_form() {
    assert_eq!(
        rdata_bytes(&RData::A(A::from(Ipv4Addr::new(1, 2, 3, 4)))),
        vec![1, 2, 3, 4]
    );
    let srv = rdata_bytes(&RData::SRV(SRV {
        priority: 0,
        weight: 0,
        port: 0x1388,
        target: name("a.local"),
    }));
    assert_eq!(srv, b"\x00\x00\x00\x00\x13\x88\x01a\x05local\x00");
}

/// Tiny deterministic generator so the fuzz table is reproducible.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn malformed_packets_are_ignored_without_panic() {
    let (mut r, now) = announced();
    let valid_query = query(
        7,
        &[
            ("_raop._tcp.local", TYPE::PTR, false),
            (INSTANCE, TYPE::SRV, true),
        ],
    );
    let valid_response = response_with(vec![srv(INSTANCE, 7000), srv("x._raop._tcp.local", 1)]);
    let mut table: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff; 11],
        vec![0; 12],
        // header says 1 question, nothing follows
        vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        // 65535 of everything
        vec![0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        // name that points at itself
        vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 12, 0, 1],
        // label longer than 63
        [
            &[0u8, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 64][..],
            &[b'a'; 64],
            &[0, 0, 12, 0, 1],
        ]
        .concat(),
        // pointer past the end
        vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0, 12, 0, 1],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ];
    for n in 0..valid_query.len() {
        table.push(valid_query[..n].to_vec());
    }
    for n in 0..valid_response.len() {
        table.push(valid_response[..n].to_vec());
    }
    let mut rng = XorShift(0x1234_5678_9abc_def0);
    for _ in 0..5000 {
        let base = if rng.next() % 2 == 0 {
            &valid_query
        } else {
            &valid_response
        };
        let mut p = base.clone();
        for _ in 0..1 + rng.next() % 4 {
            let i = (rng.next() as usize) % p.len();
            p[i] = rng.next() as u8;
        }
        if rng.next() % 3 == 0 {
            p.truncate((rng.next() as usize) % p.len());
        }
        table.push(p);
    }
    for _ in 0..1000 {
        let len = (rng.next() % 600) as usize;
        table.push((0..len).map(|_| rng.next() as u8).collect());
    }
    for p in &table {
        for port in [5353, 40000] {
            r.handle_input(now, peer(port), p);
            // Whatever comes out must itself be well-formed.
            for t in drain(&mut r, now) {
                Packet::parse(&t.payload).expect("valid output");
            }
        }
        r.handle_timeout(now + Duration::from_secs(1));
    }
    // Still alive and answering (it may have been pushed into re-probing by a mutated
    // response: let it finish, possibly under a new name).
    let later = announce(&mut r, now + Duration::from_secs(2)) + MULTICAST_INTERVAL;
    r.handle_input(
        later,
        peer(5353),
        &query(0, &[("_raop._tcp.local", TYPE::PTR, false)]),
    );
    assert_eq!(drain(&mut r, later).len(), 1);
}

#[test]
fn duplicate_questions_collapse_and_oversized_queries_are_dropped() {
    let (mut r, now) = announced();
    // The flood seen in the field: the speaker's own names asked over and over.
    let names = [
        ("_raop._tcp.local", TYPE::PTR),
        (INSTANCE, TYPE::SRV),
        (INSTANCE, TYPE::TXT),
    ];
    let qs: Vec<(&str, TYPE, bool)> = (0..super::MAX_QUESTIONS)
        .map(|i| (names[i % 3].0, names[i % 3].1, false))
        .collect();
    r.handle_input(now, peer(5353), &query(0, &qs));
    let out = drain(&mut r, now);
    assert_eq!(out.len(), 1, "one answer packet");
    let p = parse(&out[0]);
    assert_eq!(p.answers.len(), 3, "each record once: {:?}", p.answers);
    // Legacy: the echoed question section is collapsed too.
    r.handle_input(now, peer(40000), &query(7, &qs));
    let out = drain(&mut r, now);
    assert_eq!(out.len(), 1);
    let p = parse(&out[0]);
    assert_eq!((p.questions.len(), p.answers.len()), (3, 3));
    // Beyond the cap: dropped before parsing, nothing sent.
    let many: Vec<(&str, TYPE, bool)> = (0..=super::MAX_QUESTIONS)
        .map(|i| (names[i % 3].0, names[i % 3].1, false))
        .collect();
    r.handle_input(now, peer(5353), &query(0, &many));
    assert!(drain(&mut r, now).is_empty());
    let mut p = Packet::new_query(0);
    p.questions.push(Question::new(
        name("_raop._tcp.local"),
        TYPE::PTR.into(),
        CLASS::IN.into(),
        false,
    ));
    for i in 0..=super::MAX_RECORDS {
        p.answers.push(ResourceRecord::new(
            name("_raop._tcp.local"),
            CLASS::IN,
            4500,
            RData::PTR(PTR(name(&format!("x{i}._raop._tcp.local")))),
        ));
    }
    r.handle_input(now, peer(5353), &p.build_bytes_vec().unwrap());
    assert!(drain(&mut r, now).is_empty());
}

/// The record types of every answer and additional record of a packet, as `name/TYPE`.
fn records_of(t: &Transmit) -> Vec<String> {
    let p = parse(t);
    p.answers
        .iter()
        .chain(p.additional_records.iter())
        .map(|rr| format!("{}/{:?}", rr.name, rr.rdata.type_code()))
        .collect()
}

/// A probe from another host for our instance name, proposing a different port.
fn foreign_probe() -> Vec<u8> {
    let mut p = Packet::new_query(0);
    p.questions.push(Question::new(
        name(INSTANCE),
        QTYPE::ANY,
        CLASS::IN.into(),
        false,
    ));
    p.name_servers.push(srv(INSTANCE, 7000));
    p.build_bytes_vec().unwrap()
}

/// RFC 6762 section 6: 50 multicast-answer queries within a second, as a flooder sends them,
/// get one multicast answer per record per interface; the next second one more.
#[test]
fn multicast_answers_are_limited_to_one_per_record_and_interface_per_second() {
    let (mut r, now) = announced();
    let ptr = query(0, &[("_raop._tcp.local", TYPE::PTR, false)]);
    let mut sent = Vec::new();
    for i in 0..50u32 {
        let at = now + Duration::from_millis(20) * i;
        r.handle_input_on(at, Some(2), peer(5353), &ptr);
        sent.extend(drain(&mut r, at));
    }
    assert_eq!(sent.len(), 1, "one answer for 50 queries within a second");
    assert_eq!(sent[0].dst, MDNS_GROUP_V4);
    assert_eq!(sent[0].interface, Some(2), "on the query's interface only");
    assert_eq!(records_of(&sent[0]).len(), 4, "PTR + SRV, TXT, A");

    // Another interface has its own second.
    let at = now + Duration::from_millis(500);
    r.handle_input_on(at, Some(3), peer(5353), &ptr);
    let out = drain(&mut r, at);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].interface, Some(3));
    // Unknown interface: the answer would go out on all of them, so a copy on any within
    // the second holds it back.
    r.handle_input(at, peer(5353), &ptr);
    assert!(drain(&mut r, at).is_empty());

    // A second after the first answer, the next one goes out; just before, nothing.
    let before = now + Duration::from_millis(999);
    r.handle_input_on(before, Some(2), peer(5353), &ptr);
    assert!(drain(&mut r, before).is_empty());
    let after = now + MULTICAST_INTERVAL;
    r.handle_input_on(after, Some(2), peer(5353), &ptr);
    let out = drain(&mut r, after);
    assert_eq!(out.len(), 1);
    // Other records asked for are not held back by the PTR's second.
    r.handle_input_on(
        after,
        Some(2),
        peer(5353),
        &query(0, &[(HOST, TYPE::A, false)]),
    );
    assert!(
        drain(&mut r, after).is_empty(),
        "the A record went out as an additional a moment ago"
    );
    let meta = query(0, &[("_services._dns-sd._udp.local", TYPE::PTR, false)]);
    r.handle_input_on(after, Some(2), peer(5353), &meta);
    assert_eq!(drain(&mut r, after).len(), 1, "a record not sent yet");
}

/// Additional records multicast within the second are left out of the next answer; the
/// records answered are noted too.
#[test]
fn recently_multicast_additionals_are_left_out() {
    let (mut r, now) = announced();
    r.handle_input_on(
        now,
        Some(2),
        peer(5353),
        &query(0, &[(HOST, TYPE::A, false)]),
    );
    let out = drain(&mut r, now);
    assert_eq!(records_of(&out[0]), vec![format!("{HOST}/A")]);
    let at = now + Duration::from_millis(300);
    r.handle_input_on(
        at,
        Some(2),
        peer(5353),
        &query(0, &[("_raop._tcp.local", TYPE::PTR, false)]),
    );
    let out = drain(&mut r, at);
    assert_eq!(out.len(), 1);
    let p = parse(&out[0]);
    assert_eq!(p.answers.len(), 1);
    assert_eq!(find(&p.additional_records, TYPE::SRV).len(), 1);
    assert_eq!(find(&p.additional_records, TYPE::TXT).len(), 1);
    assert!(
        find(&p.additional_records, TYPE::A).is_empty(),
        "sent 300 ms ago"
    );
}

/// The announcements count: a query right after the last one is not answered by multicast
/// again within the second.
#[test]
fn announcements_count_for_the_limit() {
    let t0 = Instant::now();
    let mut r = Responder::with_seed(service(), t0, 7);
    let last = announce(&mut r, t0);
    let ptr = query(0, &[("_raop._tcp.local", TYPE::PTR, false)]);
    let at = last + Duration::from_millis(100);
    r.handle_input_on(at, Some(2), peer(5353), &ptr);
    assert!(drain(&mut r, at).is_empty());
    let at = last + MULTICAST_INTERVAL;
    r.handle_input_on(at, Some(2), peer(5353), &ptr);
    assert_eq!(drain(&mut r, at).len(), 1);
}

/// Unicast answers (QU from another host, legacy unicast) go to the asker only and are not
/// limited: every one of a burst is answered, while multicast is.
#[test]
fn unicast_answers_are_not_limited() {
    let (mut r, now) = announced();
    let qu = query(0, &[("_raop._tcp.local", TYPE::PTR, true)]);
    let legacy = query(9, &[("_raop._tcp.local", TYPE::PTR, false)]);
    let qm = query(0, &[("_raop._tcp.local", TYPE::PTR, false)]);
    let (mut unicast, mut multicast) = (0, 0);
    for i in 0..20u32 {
        let at = now + Duration::from_millis(10) * i;
        r.handle_input_on(at, Some(2), peer(5353), &qu);
        r.handle_input_on(at, Some(2), peer(40000), &legacy);
        r.handle_input_on(at, Some(2), peer(5353), &qm);
        for t in drain(&mut r, at) {
            if t.dst == MDNS_GROUP_V4 {
                multicast += 1;
            } else {
                assert!(t.dst == peer(5353) || t.dst == peer(40000));
                assert_eq!(t.interface, None);
                unicast += 1;
            }
        }
    }
    assert_eq!((unicast, multicast), (40, 1));
}

/// RFC 6762 section 6's exception: a probe for our name is defended at once even within the
/// second, held back only within 250 ms of the record's last multicast; ordinary queries
/// keep the full second.
#[test]
fn probe_defences_need_only_250_ms() {
    let (mut r, now) = announced();
    let srv_q = query(0, &[(INSTANCE, TYPE::SRV, false)]);
    r.handle_input_on(now, Some(2), peer(5353), &srv_q);
    assert_eq!(drain(&mut r, now).len(), 1, "SRV multicast at `now`");

    let defended = |r: &mut Responder, at: Instant| {
        r.handle_input_on(at, Some(2), peer(5353), &foreign_probe());
        let out = drain(r, at);
        assert!(out.iter().all(|t| t.dst == MDNS_GROUP_V4));
        out.iter()
            .any(|t| records_of(t).contains(&format!("{INSTANCE}/SRV")))
    };
    assert!(!defended(&mut r, now + Duration::from_millis(100)));
    assert!(defended(&mut r, now + Duration::from_millis(300)));
    assert!(!defended(&mut r, now + Duration::from_millis(400)));
    assert!(defended(&mut r, now + Duration::from_millis(550)));
    // An ordinary query still waits for the full second since the last copy (550 ms).
    let at = now + Duration::from_millis(1200);
    r.handle_input_on(at, Some(2), peer(5353), &srv_q);
    assert!(drain(&mut r, at).is_empty());
    let at = now + Duration::from_millis(1550);
    r.handle_input_on(at, Some(2), peer(5353), &srv_q);
    assert_eq!(drain(&mut r, at).len(), 1);
}

/// The log of recent multicasts stays bounded however many interfaces and records a flood
/// makes it see.
#[test]
fn multicast_log_stays_bounded() {
    let (mut r, now) = announced();
    let all = query(
        0,
        &[
            ("_raop._tcp.local", TYPE::PTR, false),
            ("_services._dns-sd._udp.local", TYPE::PTR, false),
        ],
    );
    for i in 0..10_000u32 {
        let at = now + Duration::from_millis(1) * i;
        r.handle_input_on(at, Some(i % 4), peer(5353), &all);
        drain(&mut r, at);
    }
    assert!(r.multicast_log.len() <= 6 * 4, "{}", r.multicast_log.len());
}
