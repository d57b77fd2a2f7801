//! Sans-IO mDNS responder for one DNS-SD service.
//!
//! Everything time-dependent takes `now` from the caller, and every packet goes out through
//! [`Responder::poll_output`], so the whole RFC 6762 behaviour (probe, rename, announce, answer,
//! goodbye) can be driven by a fake clock in tests and by [`super::run`] on the real network.

use super::{default_hostname, hex_mac, Service};
use simple_dns::rdata::{RData, A, AAAA, PTR, SRV, TXT};
use simple_dns::{
    CharacterString, Label, Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, OPCODE,
    QCLASS, QTYPE, RCODE, TYPE,
};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The mDNS UDP port. Packets from any other source port are legacy unicast queries.
pub const MDNS_PORT: u16 = 5353;
/// The IPv4 mDNS group and port that multicast packets go to.
pub const MDNS_GROUP_V4: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)), MDNS_PORT);

const SERVICE_TYPE: &str = "_raop._tcp.local";
/// DNS-SD service type enumeration (RFC 6763 section 9): lets "browse everything" tools see us.
const META_QUERY: &str = "_services._dns-sd._udp.local";

/// RFC 6762 section 10: records naming a host (SRV, A, AAAA) live 120 s, others 75 minutes.
const TTL_HOST: u32 = 120;
const TTL_OTHER: u32 = 4500;
/// RFC 6762 section 6.7: legacy unicast answers must not be cached for longer than 10 s.
const LEGACY_TTL_CAP: u32 = 10;

const PROBE_COUNT: u8 = 3;
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// RFC 6762 section 8.1: wait a random 0-250 ms before the first probe so that devices powered
/// on together do not probe in lock step.
const PROBE_MAX_INITIAL_DELAY_MS: u64 = 250;
const ANNOUNCE_COUNT: u8 = 2;
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// RFC 6762 section 8.2: the loser of a simultaneous probe tie-break waits 1 s and probes again.
const TIEBREAK_LOSS_DELAY: Duration = Duration::from_secs(1);
/// RFC 6762 section 6: a record is multicast on an interface at most once a second, so that a
/// flood of queries does not turn the responder into an amplifier. A querier that asked within
/// the second saw the previous copy (it listens on the group) or asks again, and its retries
/// are at least a second apart (RFC 6762 section 5.2).
pub const MULTICAST_INTERVAL: Duration = Duration::from_secs(1);
/// RFC 6762 section 6: the one exception, defending a name against a probe, must be quick
/// (the prober decides after 750 ms) and needs only 250 ms since the record's last multicast
/// on that interface. A defence within that time is left out rather than delayed: the prober
/// saw the earlier copy, or its next probe (250 ms later, section 8.1) is answered.
pub const PROBE_DEFENCE_INTERVAL: Duration = Duration::from_millis(250);
/// RFC 6762 section 8.1: after 15 conflicts within 10 s, wait 5 s between probe rounds.
const CONFLICT_WINDOW: Duration = Duration::from_secs(10);
const CONFLICT_BURST: usize = 15;
const CONFLICT_BACKOFF: Duration = Duration::from_secs(5);

/// A DNS label holds at most 63 bytes: the instance label is `AABBCCDDEEFF@` (13 bytes), then
/// the speaker name and, after a rename, a suffix such as ` (2)`. Longer names are cut at a
/// character boundary so that the label always fits; the suffix takes its room from the name.
const MAX_NAME_BYTES: usize = super::MAX_ANNOUNCED_NAME_BYTES;
/// Queries with more questions than this are dropped unparsed (a bound on the cost of one
/// packet: real queriers ask a handful of questions and split long known-answer lists over
/// several packets, RFC 6762 section 7.2, never their questions). avahi's limit on
/// questions it processes per packet is in the same range.
pub const MAX_QUESTIONS: usize = 64;
/// Packets with more answer, authority and additional records than this are dropped
/// unparsed: a known-answer list this long is a flood, not a querier.
pub const MAX_RECORDS: usize = 256;

/// One datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// [`MDNS_GROUP_V4`] for multicast, otherwise the unicast destination.
    pub dst: SocketAddr,
    /// For multicast: the interface (kernel index) to send on, the one the query that this
    /// answers arrived on; `None` means every interface (probes, announcements, goodbyes, and
    /// answers to queries whose interface is unknown). Unicast leaves by the routing table.
    pub interface: Option<u32>,
    /// The DNS message.
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `sent` probes have gone out; the next timer sends another or, after the last, announces.
    Probing {
        sent: u8,
    },
    /// `sent` announcements have gone out. Queries are answered from here on.
    Announcing {
        sent: u8,
    },
    Running,
    /// After [`Responder::shutdown`]: silent for good.
    Stopped,
}

/// Which of our unique names a record is about: they conflict and get renamed independently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Instance,
    Host,
}

/// The records this responder owns, by role. Resource records are built from these on demand
/// so that renames and address changes never leave a stale copy behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rec {
    /// `_services._dns-sd._udp.local PTR _raop._tcp.local` (shared).
    Meta,
    /// `_raop._tcp.local PTR <instance>` (shared).
    Ptr,
    /// `<instance> SRV 0 0 <port> <host>` (unique).
    Srv,
    /// `<instance> TXT …` (unique).
    Txt,
    /// `<host> A|AAAA <addr>` (unique).
    Addr(IpAddr),
}

impl Rec {
    fn is_unique(self) -> bool {
        !matches!(self, Rec::Meta | Rec::Ptr)
    }
}

/// The names we answer for, rebuilt whenever one of them changes.
#[derive(Clone)]
struct Names {
    meta: Name<'static>,
    service_type: Name<'static>,
    instance: Name<'static>,
    host: Name<'static>,
}

/// RFC 6762 responder for one `_raop._tcp` service.
///
/// Lifecycle: probe the instance and host names three times 250 ms apart, rename on conflict,
/// announce twice 1 s apart, then answer queries until [`Responder::shutdown`] queues the
/// goodbye packet. Drive it with [`handle_input_on`](Self::handle_input_on) (or
/// [`handle_input`](Self::handle_input) when the arrival interface is unknown) for every
/// received datagram, [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout)
/// expires, and send whatever [`poll_output`](Self::poll_output) yields. `Clone` lets the
/// fuzz target start every input from an announced responder without re-running its timers.
#[derive(Clone)]
pub struct Responder {
    mac: [u8; 6],
    port: u16,
    txt: Vec<(String, String)>,
    addrs: Vec<IpAddr>,
    base_name: String,
    /// 1 = the configured name; n > 1 = `Name (n)`.
    name_number: u32,
    host_base: String,
    /// 1 = the configured host name; n > 1 = `host-n`.
    host_number: u32,
    names: Names,
    phase: Phase,
    next: Option<Instant>,
    out: VecDeque<Transmit>,
    recent_conflicts: VecDeque<Instant>,
    /// When each record was last multicast, and on which interface (`None`: on all of them):
    /// the RFC 6762 section 6 rate limit. Entries older than [`MULTICAST_INTERVAL`] are
    /// dropped, so this holds at most one entry per record and interface.
    multicast_log: Vec<(Rec, Option<u32>, Instant)>,
}

impl Responder {
    /// A responder that starts probing within 250 ms of `now`.
    pub fn new(service: Service, now: Instant) -> Self {
        Self::with_seed(service, now, random_u64())
    }

    /// Like [`Responder::new`] with the random start delay derived from `seed`, for
    /// reproducible runs.
    pub fn with_seed(service: Service, now: Instant, seed: u64) -> Self {
        let base_name = clean_name(&service.instance_name);
        let host_base = clean_host(&service.hostname, service.mac);
        let mut addrs = Vec::new();
        for a in service.addrs {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        let names = Names {
            meta: dotted(META_QUERY),
            service_type: dotted(SERVICE_TYPE),
            instance: Name::new_with_labels(&[]),
            host: Name::new_with_labels(&[]),
        };
        let mut r = Self {
            mac: service.mac,
            port: service.port,
            txt: service.txt,
            addrs,
            base_name,
            name_number: 1,
            host_base,
            host_number: 1,
            names,
            phase: Phase::Probing { sent: 0 },
            next: Some(now + Duration::from_millis(splitmix(seed) % PROBE_MAX_INITIAL_DELAY_MS)),
            out: VecDeque::new(),
            recent_conflicts: VecDeque::new(),
            multicast_log: Vec::new(),
        };
        r.refresh_names();
        r
    }

    /// The full instance label in use now, `AABBCCDDEEFF@Name` or `AABBCCDDEEFF@Name (2)` after
    /// a rename.
    pub fn current_instance(&self) -> String {
        format!("{}@{}", hex_mac(self.mac, true), self.current_name())
    }

    /// The speaker name part of [`current_instance`](Self::current_instance).
    pub fn current_name(&self) -> String {
        if self.name_number <= 1 {
            self.base_name.clone()
        } else {
            let suffix = format!(" ({})", self.name_number);
            let base = cut_to(&self.base_name, MAX_NAME_BYTES - suffix.len());
            format!("{}{suffix}", base.trim_end())
        }
    }

    /// The host name in use now, with the `.local` suffix.
    pub fn current_hostname(&self) -> String {
        if self.host_number <= 1 {
            format!("{}.local", self.host_base)
        } else {
            format!("{}-{}.local", self.host_base, self.host_number)
        }
    }

    /// True once probing has succeeded and the records are being announced or answered.
    pub fn is_announced(&self) -> bool {
        matches!(self.phase, Phase::Announcing { .. } | Phase::Running)
    }

    /// Feed one received datagram whose arrival interface is unknown: like
    /// [`handle_input_on`](Self::handle_input_on) with `None`.
    pub fn handle_input(&mut self, now: Instant, src: SocketAddr, packet: &[u8]) {
        self.handle_input_on(now, None, src, packet);
    }

    /// Feed one datagram received on interface `interface` (kernel index; `None` when
    /// unknown). Multicast answers go out on that interface only, and the once-a-second limit
    /// per record ([`MULTICAST_INTERVAL`]) is kept per interface; with `None` they go out on
    /// all interfaces and a record sent recently on any of them is held back. Anything that
    /// does not parse as a DNS message is dropped.
    pub fn handle_input_on(
        &mut self,
        now: Instant,
        interface: Option<u32>,
        src: SocketAddr,
        packet: &[u8],
    ) {
        if self.phase == Phase::Stopped {
            return;
        }
        // The counts in the header bound the work before anything is parsed.
        if let Some(&[q0, q1, a0, a1, n0, n1, r0, r1]) = packet.get(4..12) {
            let count = |hi: u8, lo: u8| usize::from(u16::from_be_bytes([hi, lo]));
            if count(q0, q1) > MAX_QUESTIONS
                || count(a0, a1) + count(n0, n1) + count(r0, r1) > MAX_RECORDS
            {
                log::trace!("mdns: dropping an oversized packet from {src}");
                return;
            }
        }
        let msg = match Packet::parse(packet) {
            Ok(m) => m,
            Err(e) => {
                log::trace!("mdns: dropping unparsable packet from {src}: {e}");
                return;
            }
        };
        // RFC 6762 section 18.3 and 18.11: other opcodes and non-zero rcodes are ignored.
        if msg.opcode() != OPCODE::StandardQuery || msg.rcode() != RCODE::NoError {
            return;
        }
        if msg.has_flags(PacketFlag::RESPONSE) {
            // RFC 6762 section 11: responses not from port 5353 are not mDNS responses.
            if src.port() == MDNS_PORT {
                self.handle_response(now, &msg);
            }
        } else {
            self.handle_query(now, interface, src, &msg);
        }
    }

    /// The next packet to send, if any. Timers due at `now` are fired first, so a caller that
    /// only polls still makes progress.
    pub fn poll_output(&mut self, now: Instant) -> Option<Transmit> {
        self.handle_timeout(now);
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next; `None` when idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// Fire the probe and announcement timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(due) = self.next {
            if due > now {
                break;
            }
            match self.phase {
                Phase::Probing { sent } if sent < PROBE_COUNT => {
                    self.send_probe(sent == 0);
                    self.phase = Phase::Probing { sent: sent + 1 };
                    self.next = Some(now + PROBE_INTERVAL);
                }
                Phase::Probing { .. } | Phase::Announcing { .. } => {
                    let sent = match self.phase {
                        Phase::Announcing { sent } => sent,
                        _ => {
                            log::info!(
                                "mdns: announcing {}._raop._tcp.local on {}",
                                self.current_instance(),
                                self.current_hostname()
                            );
                            0
                        }
                    };
                    self.send_announcement(now);
                    if sent + 1 >= ANNOUNCE_COUNT {
                        self.phase = Phase::Running;
                        self.next = None;
                    } else {
                        self.phase = Phase::Announcing { sent: sent + 1 };
                        self.next = Some(now + ANNOUNCE_INTERVAL);
                    }
                }
                Phase::Running | Phase::Stopped => self.next = None,
            }
        }
    }

    /// Replace the published addresses. Once announced, the old addresses get a goodbye and the
    /// new set is announced again, so that browsers do not keep connecting to a dead address.
    pub fn set_addresses(&mut self, now: Instant, addrs: Vec<IpAddr>) {
        let mut new = Vec::new();
        for a in addrs {
            if !new.contains(&a) {
                new.push(a);
            }
        }
        if new == self.addrs {
            return;
        }
        let removed: Vec<Rec> = self
            .addrs
            .iter()
            .filter(|a| !new.contains(a))
            .map(|a| Rec::Addr(*a))
            .collect();
        log::info!("mdns: addresses changed to {new:?}");
        if self.is_announced() {
            if !removed.is_empty() {
                let goodbyes: Vec<_> = removed
                    .iter()
                    .map(|r| self.record(*r, Ttl::Zero, false))
                    .collect();
                self.queue_response(MDNS_GROUP_V4, None, 0, Vec::new(), goodbyes, Vec::new());
            }
            self.addrs = new;
            self.phase = Phase::Announcing { sent: 0 };
            self.next = Some(now);
        } else {
            // Not yet announced: the next probes simply carry the new set.
            self.addrs = new;
        }
    }

    /// Stop answering and queue the goodbye packet (every record with TTL 0), so browsers drop
    /// the speaker at once instead of when the TTL runs out. Drain
    /// [`poll_output`](Self::poll_output) afterwards.
    pub fn shutdown(&mut self) {
        if self.is_announced() {
            // The `_services._dns-sd._udp` PTR is left to expire: another service of the same
            // type on this host may still need it, and a cache drops the entry for the type by
            // itself once no instance is left.
            let recs: Vec<ResourceRecord<'static>> = self
                .all_recs()
                .into_iter()
                .filter(|r| *r != Rec::Meta)
                .map(|r| self.record(r, Ttl::Zero, false))
                .collect();
            log::info!("mdns: goodbye for {}", self.current_instance());
            self.queue_response(MDNS_GROUP_V4, None, 0, Vec::new(), recs, Vec::new());
        }
        self.phase = Phase::Stopped;
        self.next = None;
    }

    // ----- incoming -----

    fn handle_query(&mut self, now: Instant, iface: Option<u32>, src: SocketAddr, msg: &Packet) {
        match self.phase {
            Phase::Probing { .. } => {
                self.check_probe_tiebreak(now, msg);
                return;
            }
            Phase::Stopped => return,
            Phase::Announcing { .. } | Phase::Running => {}
        }
        let legacy = src.port() != MDNS_PORT;
        // A probe (a query with proposed records in the authority section) is defended by
        // multicast, and so is a QU query from this very host: unicast to port 5353 on the
        // same host reaches only one of the sockets sharing that port, maybe not the asker.
        let multicast_only = !msg.name_servers.is_empty() || self.is_local(src.ip());
        // Each of our (few) records is looked at once per packet, however many questions
        // ask for it: duplicates collapse here, and the known-answer check below runs per
        // distinct record, not per question. A multicast record remembers whether a probe
        // question (one whose name has proposed records in the authority section) asked.
        let mut multicast: Vec<(Rec, bool)> = Vec::new();
        let mut unicast = Vec::new();
        // Only our unique names are probed for: one pass over the authority section each.
        let probed: Vec<Name<'static>> = [&self.names.instance, &self.names.host]
            .into_iter()
            .filter(|n| msg.name_servers.iter().any(|ns| ns.name == **n))
            .cloned()
            .collect();
        for q in &msg.questions {
            let unicast_q = legacy || (q.unicast_response && !multicast_only);
            let probe = probed.contains(&q.qname);
            for rec in self.answers_for(q) {
                if unicast_q {
                    if !unicast.contains(&rec) {
                        unicast.push(rec);
                    }
                } else if let Some(m) = multicast.iter_mut().find(|(r, _)| *r == rec) {
                    m.1 |= probe;
                } else {
                    multicast.push((rec, probe));
                }
            }
        }
        multicast.retain(|(r, _)| !self.is_known_answer(msg, *r));
        unicast.retain(|r| !self.is_known_answer(msg, *r));
        if legacy {
            if !unicast.is_empty() {
                let (answers, additional) = self.build_answers(&unicast, msg, true, None);
                // The questions echoed once each (a legacy querier asks one).
                let mut questions: Vec<Question<'static>> = Vec::new();
                for q in &msg.questions {
                    if !questions
                        .iter()
                        .any(|e| e.qname == q.qname && e.qtype == q.qtype && e.qclass == q.qclass)
                    {
                        questions.push(q.clone().into_owned());
                    }
                }
                log::debug!("mdns: legacy unicast answer to {src}");
                self.queue_response(src, None, msg.id(), questions, answers, additional);
            }
            return;
        }
        // RFC 6762 section 6: not again on this interface within the second (a quarter of
        // it for a probe defence). Unicast answers go to the asker alone and are not limited.
        let before = multicast.len();
        multicast.retain(|(r, probe)| {
            let floor = if *probe {
                PROBE_DEFENCE_INTERVAL
            } else {
                MULTICAST_INTERVAL
            };
            !self.multicast_recently(*r, iface, now, floor)
        });
        if multicast.len() < before {
            log::trace!(
                "mdns: {} record(s) for {src} were multicast within the last second",
                before - multicast.len()
            );
        }
        let multicast: Vec<Rec> = multicast.into_iter().map(|(r, _)| r).collect();
        // What goes out by multicast reaches the asker anyway.
        unicast.retain(|r| !multicast.contains(r));
        if !multicast.is_empty() {
            let (answers, additional) =
                self.build_answers(&multicast, msg, false, Some((iface, now)));
            log::debug!("mdns: multicast answer to a query from {src}");
            self.queue_response(MDNS_GROUP_V4, iface, 0, Vec::new(), answers, additional);
        }
        if !unicast.is_empty() {
            let (answers, additional) = self.build_answers(&unicast, msg, false, None);
            log::debug!("mdns: unicast answer to {src}");
            self.queue_response(src, None, 0, Vec::new(), answers, additional);
        }
    }

    /// Whether `rec` was multicast on `iface` less than `floor` ago. An unknown interface
    /// (`None`) matches every interface, and an entry for all interfaces matches any.
    fn multicast_recently(
        &self,
        rec: Rec,
        iface: Option<u32>,
        now: Instant,
        floor: Duration,
    ) -> bool {
        self.multicast_log.iter().any(|(r, i, t)| {
            *r == rec
                && (i.is_none() || iface.is_none() || *i == iface)
                && now.saturating_duration_since(*t) < floor
        })
    }

    /// Notes that `recs` are being multicast on `iface` (`None`: all interfaces) at `now`.
    fn note_multicast(&mut self, recs: &[Rec], iface: Option<u32>, now: Instant) {
        self.multicast_log
            .retain(|(_, _, t)| now.saturating_duration_since(*t) < MULTICAST_INTERVAL);
        for &rec in recs {
            // A copy on every interface supersedes the per-interface entries.
            self.multicast_log
                .retain(|(r, i, _)| !(*r == rec && (iface.is_none() || *i == iface)));
            self.multicast_log.push((rec, iface, now));
        }
    }

    /// RFC 6762 section 8.2: two hosts probing for the same name at once compare their
    /// proposed records; the lexicographically later set wins and the other probes again later.
    fn check_probe_tiebreak(&mut self, now: Instant, msg: &Packet) {
        if msg.name_servers.is_empty() {
            return;
        }
        for owner in [Owner::Instance, Owner::Host] {
            let name = self.owner_name(owner);
            let mut theirs: Vec<_> = msg
                .name_servers
                .iter()
                .filter(|r| r.name == *name)
                .map(tiebreak_key)
                .collect();
            if theirs.is_empty() {
                continue;
            }
            let mut ours: Vec<_> = self
                .owner_recs(owner)
                .into_iter()
                .map(|r| tiebreak_key(&self.record(r, Ttl::Full, false)))
                .collect();
            if ours.is_empty() {
                continue;
            }
            theirs.sort();
            ours.sort();
            if theirs > ours {
                log::info!(
                    "mdns: lost simultaneous probe for {owner:?} name; probing again in 1 s"
                );
                self.phase = Phase::Probing { sent: 0 };
                self.next = Some(now + TIEBREAK_LOSS_DELAY);
                return;
            }
        }
    }

    fn handle_response(&mut self, now: Instant, msg: &Packet) {
        let conflict = msg
            .answers
            .iter()
            .chain(msg.additional_records.iter())
            .find_map(|rr| self.conflicting_owner(rr));
        if let Some(owner) = conflict {
            self.on_conflict(now, owner);
        }
    }

    /// A record from someone else that claims one of our unique names with data we do not
    /// publish (RFC 6762 section 9). Identical records are no conflict: another responder on
    /// the same host may legitimately publish the same address.
    fn conflicting_owner(&self, rr: &ResourceRecord) -> Option<Owner> {
        if rr.ttl == 0 {
            return None;
        }
        let owner = if rr.name == self.names.instance {
            Owner::Instance
        } else if rr.name == self.names.host {
            Owner::Host
        } else {
            return None;
        };
        let ours = self.owner_recs(owner);
        if ours.is_empty() {
            return None;
        }
        let same = ours
            .into_iter()
            .any(|r| self.record(r, Ttl::Full, false).rdata == rr.rdata);
        (!same).then_some(owner)
    }

    fn on_conflict(&mut self, now: Instant, owner: Owner) {
        while let Some(t) = self.recent_conflicts.front() {
            if now.saturating_duration_since(*t) > CONFLICT_WINDOW {
                self.recent_conflicts.pop_front();
            } else {
                break;
            }
        }
        self.recent_conflicts.push_back(now);
        let delay = if self.recent_conflicts.len() > CONFLICT_BURST {
            CONFLICT_BACKOFF
        } else {
            Duration::ZERO
        };
        match self.phase {
            Phase::Probing { .. } => {
                let old = match owner {
                    Owner::Instance => self.current_instance(),
                    Owner::Host => self.current_hostname(),
                };
                match owner {
                    Owner::Instance => self.name_number += 1,
                    Owner::Host => self.host_number += 1,
                }
                self.refresh_names();
                let new = match owner {
                    Owner::Instance => self.current_instance(),
                    Owner::Host => self.current_hostname(),
                };
                log::warn!("mdns: name conflict: {old} is taken, trying {new}");
            }
            Phase::Announcing { .. } | Phase::Running => {
                // RFC 6762 section 9: re-probe with the same name; if the other side defends it
                // during probing, the rename happens then.
                log::warn!("mdns: conflicting record seen for our {owner:?} name; probing again");
            }
            Phase::Stopped => return,
        }
        self.phase = Phase::Probing { sent: 0 };
        self.next = Some(now + delay);
    }

    // ----- records -----

    fn refresh_names(&mut self) {
        let label = self.current_instance();
        self.names.instance = Name::new_with_labels(&[
            Label::new_unchecked(label.into_bytes()),
            Label::new_unchecked(&b"_raop"[..]),
            Label::new_unchecked(&b"_tcp"[..]),
            Label::new_unchecked(&b"local"[..]),
        ]);
        self.names.host = dotted(&self.current_hostname());
        // The records under the old names are not the ones that will be multicast now.
        self.multicast_log.clear();
    }

    fn owner_name(&self, owner: Owner) -> &Name<'static> {
        match owner {
            Owner::Instance => &self.names.instance,
            Owner::Host => &self.names.host,
        }
    }

    fn owner_recs(&self, owner: Owner) -> Vec<Rec> {
        match owner {
            Owner::Instance => vec![Rec::Srv, Rec::Txt],
            Owner::Host => self.addrs.iter().map(|a| Rec::Addr(*a)).collect(),
        }
    }

    fn all_recs(&self) -> Vec<Rec> {
        let mut v = vec![Rec::Meta, Rec::Ptr, Rec::Srv, Rec::Txt];
        v.extend(self.addrs.iter().map(|a| Rec::Addr(*a)));
        v
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.addrs.contains(&ip)
    }

    fn answers_for(&self, q: &Question) -> Vec<Rec> {
        if !matches!(q.qclass, QCLASS::ANY | QCLASS::CLASS(CLASS::IN)) {
            return Vec::new();
        }
        let wants = |t: TYPE| matches!(q.qtype, QTYPE::ANY) || q.qtype == QTYPE::TYPE(t);
        let n = &q.qname;
        if *n == self.names.meta {
            if wants(TYPE::PTR) {
                return vec![Rec::Meta];
            }
        } else if *n == self.names.service_type {
            if wants(TYPE::PTR) {
                return vec![Rec::Ptr];
            }
        } else if *n == self.names.instance {
            let mut v = Vec::new();
            if wants(TYPE::SRV) {
                v.push(Rec::Srv);
            }
            if wants(TYPE::TXT) {
                v.push(Rec::Txt);
            }
            return v;
        } else if *n == self.names.host {
            return self
                .addrs
                .iter()
                .filter(|a| match a {
                    IpAddr::V4(_) => wants(TYPE::A),
                    IpAddr::V6(_) => wants(TYPE::AAAA),
                })
                .map(|a| Rec::Addr(*a))
                .collect();
        }
        Vec::new()
    }

    /// RFC 6762 section 7.1: a record that the querier lists as already known, with at least
    /// half of its TTL left, is not sent again.
    fn is_known_answer(&self, query: &Packet, rec: Rec) -> bool {
        let ours = self.record(rec, Ttl::Full, false);
        query
            .answers
            .iter()
            .any(|ka| ka.name == ours.name && ka.rdata == ours.rdata && ka.ttl >= ours.ttl / 2)
    }

    /// Answer records plus the additional records RFC 6763 section 12 recommends (SRV, TXT and
    /// addresses with a PTR; addresses with an SRV), minus what the querier already knows.
    ///
    /// `multicast`: the answer is multicast on that interface at that instant, so additional
    /// records multicast there within [`MULTICAST_INTERVAL`] are left out too, and everything
    /// sent is noted for the rate limit.
    fn build_answers(
        &mut self,
        recs: &[Rec],
        query: &Packet,
        legacy: bool,
        multicast: Option<(Option<u32>, Instant)>,
    ) -> (Vec<ResourceRecord<'static>>, Vec<ResourceRecord<'static>>) {
        let mut extra: Vec<Rec> = Vec::new();
        let addr_recs = || self.addrs.iter().map(|a| Rec::Addr(*a));
        for r in recs {
            let more: Vec<Rec> = match r {
                Rec::Ptr => [Rec::Srv, Rec::Txt]
                    .into_iter()
                    .chain(addr_recs())
                    .collect(),
                Rec::Srv => addr_recs().collect(),
                _ => Vec::new(),
            };
            for m in more {
                let recent = multicast.is_some_and(|(iface, now)| {
                    self.multicast_recently(m, iface, now, MULTICAST_INTERVAL)
                });
                if !recs.contains(&m)
                    && !extra.contains(&m)
                    && !recent
                    && !self.is_known_answer(query, m)
                {
                    extra.push(m);
                }
            }
        }
        if let Some((iface, now)) = multicast {
            self.note_multicast(recs, iface, now);
            self.note_multicast(&extra, iface, now);
        }
        let ttl = if legacy { Ttl::Legacy } else { Ttl::Full };
        // Legacy resolvers do not know the cache-flush bit (it would read as a class).
        let flush = !legacy;
        let answers = recs.iter().map(|r| self.record(*r, ttl, flush)).collect();
        let additional = extra.iter().map(|r| self.record(*r, ttl, flush)).collect();
        (answers, additional)
    }

    fn record(&self, rec: Rec, ttl: Ttl, flush: bool) -> ResourceRecord<'static> {
        let (name, full_ttl, rdata) = match rec {
            Rec::Meta => (
                self.names.meta.clone(),
                TTL_OTHER,
                RData::PTR(PTR(self.names.service_type.clone())),
            ),
            Rec::Ptr => (
                self.names.service_type.clone(),
                TTL_OTHER,
                RData::PTR(PTR(self.names.instance.clone())),
            ),
            Rec::Srv => (
                self.names.instance.clone(),
                TTL_HOST,
                RData::SRV(SRV {
                    priority: 0,
                    weight: 0,
                    port: self.port,
                    target: self.names.host.clone(),
                }),
            ),
            Rec::Txt => (
                self.names.instance.clone(),
                TTL_OTHER,
                RData::TXT(self.txt_rdata()),
            ),
            Rec::Addr(IpAddr::V4(a)) => (self.names.host.clone(), TTL_HOST, RData::A(A::from(a))),
            Rec::Addr(IpAddr::V6(a)) => (
                self.names.host.clone(),
                TTL_HOST,
                RData::AAAA(AAAA::from(a)),
            ),
        };
        let ttl = match ttl {
            Ttl::Full => full_ttl,
            Ttl::Legacy => full_ttl.min(LEGACY_TTL_CAP),
            Ttl::Zero => 0,
        };
        ResourceRecord::new(name, CLASS::IN, ttl, rdata).with_cache_flush(flush && rec.is_unique())
    }

    fn txt_rdata(&self) -> TXT<'static> {
        let mut txt = TXT::new();
        for (k, v) in &self.txt {
            match CharacterString::try_from(format!("{k}={v}")) {
                Ok(s) => txt.add_char_string(s),
                Err(_) => log::warn!("mdns: TXT entry {k} too long, left out"),
            }
        }
        if txt.iter_raw().next().is_none() {
            // RFC 6763 section 6.1: an empty TXT record is a single empty string.
            if let Ok(s) = CharacterString::new(&b""[..]) {
                txt.add_char_string(s.into_owned());
            }
        }
        txt
    }

    // ----- outgoing -----

    /// `first`: only the first probe asks for unicast replies (QU). A unicast reply to port
    /// 5353 reaches just one of the sockets sharing that port on a host that runs several
    /// mDNS stacks (RFC 6762 section 15.1), so a defence answered to a QU probe may never get
    /// here; the later probes are QM and their defences come by multicast.
    fn send_probe(&mut self, first: bool) {
        let mut p = Packet::new_query(0);
        let mut authority = Vec::new();
        for owner in [Owner::Instance, Owner::Host] {
            let recs = self.owner_recs(owner);
            if recs.is_empty() {
                continue;
            }
            p.questions.push(Question::new(
                self.owner_name(owner).clone(),
                QTYPE::ANY,
                QCLASS::CLASS(CLASS::IN),
                first,
            ));
            authority.extend(recs.into_iter().map(|r| self.record(r, Ttl::Full, false)));
        }
        p.name_servers = authority;
        log::debug!("mdns: probing for {}", self.current_instance());
        self.queue_packet(MDNS_GROUP_V4, None, &p);
    }

    /// Every record, multicast on every interface (RFC 6762 section 8.3). Announcements keep
    /// their own 1 s schedule and are not held back by the rate limit, but they count for it.
    fn send_announcement(&mut self, now: Instant) {
        let all = self.all_recs();
        let recs = all
            .iter()
            .map(|r| self.record(*r, Ttl::Full, true))
            .collect();
        self.note_multicast(&all, None, now);
        self.queue_response(MDNS_GROUP_V4, None, 0, Vec::new(), recs, Vec::new());
    }

    fn queue_response(
        &mut self,
        dst: SocketAddr,
        interface: Option<u32>,
        id: u16,
        questions: Vec<Question<'static>>,
        answers: Vec<ResourceRecord<'static>>,
        additional: Vec<ResourceRecord<'static>>,
    ) {
        let mut p = Packet::new_reply(id);
        p.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        p.questions = questions;
        p.answers = answers;
        p.additional_records = additional;
        self.queue_packet(dst, interface, &p);
    }

    fn queue_packet(&mut self, dst: SocketAddr, interface: Option<u32>, p: &Packet) {
        match p.build_bytes_vec_compressed() {
            Ok(payload) => self.out.push_back(Transmit {
                dst,
                interface,
                payload,
            }),
            Err(e) => log::warn!("mdns: cannot encode packet: {e}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ttl {
    Full,
    Legacy,
    Zero,
}

/// Sort key for the RFC 6762 section 8.2 tie-break: class, type, then the raw rdata bytes.
fn tiebreak_key(rr: &ResourceRecord) -> (u16, u16, Vec<u8>) {
    (
        rr.class as u16,
        u16::from(rr.rdata.type_code()),
        rdata_bytes(&rr.rdata),
    )
}

/// The uncompressed wire form of an rdata: encoded as the only record of a packet whose owner
/// name is the root, then cut out after the fixed-size parts.
fn rdata_bytes(rdata: &RData) -> Vec<u8> {
    let mut p = Packet::new_query(0);
    p.answers.push(ResourceRecord::new(
        Name::new_with_labels(&[]),
        CLASS::IN,
        0,
        rdata.clone(),
    ));
    // header (12) + root name (1) + type, class, ttl, rdlength (10)
    match p.build_bytes_vec() {
        Ok(b) => b.get(23..).map(<[u8]>::to_vec).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn dotted(s: &str) -> Name<'static> {
    let labels: Vec<Label<'static>> = s
        .split('.')
        .filter(|l| !l.is_empty())
        .map(|l| Label::new_unchecked(l.as_bytes().to_vec()))
        .collect();
    Name::new_with_labels(&labels)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut_to(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Trims the speaker name, drops control characters and cuts it to fit one DNS label.
fn clean_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    let out = out.trim_end().to_string();
    if out.is_empty() {
        "raopd".to_string()
    } else {
        out
    }
}

/// The host label without `.local`, defaulting to `raopd-<mac>`.
fn clean_host(host: &str, mac: [u8; 6]) -> String {
    let h = host.trim().trim_end_matches('.');
    let h = h
        .strip_suffix(".local")
        .or_else(|| h.strip_suffix(".LOCAL"))
        .unwrap_or(h);
    let valid = !h.is_empty()
        && h.len() <= 63 - 4
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        h.to_string()
    } else {
        let d = default_hostname(mac);
        d.trim_end_matches(".local").to_string()
    }
}

fn random_u64() -> u64 {
    use rand_core::RngCore;
    let mut b = [0u8; 8];
    if rand_core::OsRng.try_fill_bytes(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    // Only the start-up jitter depends on this; the clock is random enough for that.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
