//! Authoritative DNS for the cluster's zone (`[dns]`; ARCHITECTURE §9), on UDP and TCP.
//!
//! Messages are parsed and written with hickory-proto; the answers come from the cluster's
//! shared state, so every center answers the same:
//! - the zone apex: SOA, NS (`ns.<zone>`), and A/AAAA of every online center;
//! - `ns.<zone>` and `<center>.<zone>`: A/AAAA of every online center / of that center;
//! - `<pod>.<http.pods_domain>`: the addresses of the center that owns the pod, or of the
//!   center(s) holding the edge that owns it — from the owner table, which the ownership change
//!   feed invalidates, so a migration changes the answer at once;
//! - `<node>.<tunnel.edge_domain>` and `*.<node>.<tunnel.edge_domain>`: the center(s) holding
//!   that edge's tunnel;
//! - `<port>-<sandbox>.<sandbox.domain>` (`*.<sandbox.domain>` in a transfer): every online
//!   center (each routes to the sandbox's node);
//! - `_acme-challenge.<name>` TXT: the records set through `POST /.cluster/dns/txt` (metadata
//!   table `dns_txt`, read on every query, TTL 0 so a resolver never keeps a stale challenge).
//!
//! A center's addresses are `dns.addresses`, published in its `nodes` row (capacity JSON
//! `dns.addresses`) so the others can answer for it; node rows are read at most once a second.
//! A name that exists without records of the asked type is NODATA (NOERROR, empty answer), an
//! unknown name NXDOMAIN — both with the SOA in the authority section for negative caching
//! (RFC 2308) and the AA bit. Names outside the zone are REFUSED; opcodes other than QUERY get
//! NOTIMP; a message that does not parse gets FORMERR (if its header can be read) or nothing.
//! UDP answers larger than the client's limit (512 bytes, or its EDNS payload size up to 1232)
//! are truncated with TC set, so the client retries over TCP. UDP answers are rate limited per
//! client network ([`rrl`]); at most 1024 UDP queries and 256 TCP connections are served at
//! once. Pod names go through the owner table, which remembers a missing pod briefly, so
//! random names do not each cost a database query.
//!
//! Modules: `listen` (the UDP and TCP listeners), [`rrl`] (response-rate limiting), [`tsig`],
//! [`xfr`] (AXFR/IXFR and NOTIFY), [`update`] (RFC 2136 pushes), `fuzz` (tests).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use xpod_routing::OwnerTable;
use xpod_storage::meta::{MetaStore, NodeRecord, NodeStatus, NodeType, PodRecord};

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
mod listen;
pub mod rrl;
pub mod tsig;
pub mod update;
pub mod xfr;

pub use listen::serve;

/// How long node rows are reused before they are read again.
const NODES_FRESH: Duration = Duration::from_secs(1);
/// The largest UDP answer sent to an EDNS client (the DNS flag day 2020 value).
const MAX_UDP: usize = 1232;
/// Room a TSIG record takes in a signed answer (key name, algorithm name, a 32-byte MAC).
const TSIG_ROOM: usize = 200;

/// The DNS server's view of the cluster.
pub struct Dns {
    meta: Arc<dyn MetaStore>,
    /// The pods' owners (the node's owner table, shared with routing).
    owners: Arc<OwnerTable<Arc<PodRecord>>>,
    zone: Name,
    ns: Name,
    pods: Option<Name>,
    edges: Option<Name>,
    /// `sandbox.domain` when inside the zone: `<port>-<id>.<it>` → every online center.
    sandboxes: Option<Name>,
    ttl: u32,
    nodes: Mutex<Option<(Instant, Arc<Vec<NodeRecord>>)>>,
    /// The TSIG key (`dns.tsig_key_name`), for transfers and signed queries.
    tsig: Option<hickory_proto::rr::TSigner>,
    /// Who may transfer the zone and gets NOTIFYs.
    secondaries: Vec<SocketAddr>,
    /// Response-rate limiting of UDP answers.
    pub rrl: rrl::Limiter,
}

/// What a name is.
enum Found {
    Apex,
    /// `_acme-challenge.*` with these TXT values.
    Txt(Vec<String>),
    /// A name with these addresses (possibly none of the asked family).
    Hosts(Vec<IpAddr>),
}

fn name(s: &str) -> anyhow::Result<Name> {
    let mut n = Name::from_ascii(s).with_context(|| format!("{s:?} is not a DNS name"))?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

impl Dns {
    /// From the node's configuration (`dns.zone` must be set).
    pub fn new(
        c: &xpod_config::Config,
        meta: Arc<dyn MetaStore>,
        owners: Arc<OwnerTable<Arc<PodRecord>>>,
    ) -> anyhow::Result<Dns> {
        let zone = name(c.dns.zone.as_deref().context("dns.zone is not set")?)?;
        let inside = |d: &Option<String>| -> anyhow::Result<Option<Name>> {
            match d {
                Some(d) => {
                    let n = name(d)?;
                    Ok(zone.zone_of(&n).then_some(n))
                }
                None => Ok(None),
            }
        };
        Ok(Dns {
            ns: name(&format!("ns.{}", zone.to_ascii()))?,
            pods: inside(&c.http.pods_domain)?,
            edges: inside(&c.tunnel.edge_domain)?,
            sandboxes: inside(&c.sandbox.domain)?,
            ttl: c.dns.ttl,
            zone,
            nodes: Mutex::new(None),
            tsig: tsig::signer(&c.dns)?,
            secondaries: c.dns.secondaries.clone(),
            rrl: Default::default(),
            meta,
            owners,
        })
    }

    async fn nodes(&self) -> anyhow::Result<Arc<Vec<NodeRecord>>> {
        if let Some((at, nodes)) = self.nodes.lock().expect("poisoned").as_ref() {
            if at.elapsed() < NODES_FRESH {
                return Ok(nodes.clone());
            }
        }
        let nodes = Arc::new(self.meta.list_nodes().await?);
        *self.nodes.lock().expect("poisoned") = Some((Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    /// The addresses of the online centers among `ids` (all online centers if `None`).
    fn centers(nodes: &[NodeRecord], ids: Option<&[String]>) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = nodes
            .iter()
            .filter(|n| n.node_type == NodeType::Center && n.status == NodeStatus::Online)
            .filter(|n| ids.is_none_or(|ids| ids.contains(&n.node_id)))
            .flat_map(addresses_of)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The addresses that serve node `id`: a center's own, an edge's holding centers'.
    fn serving(nodes: &[NodeRecord], id: &str) -> Option<Vec<IpAddr>> {
        let n = nodes.iter().find(|n| n.node_id == id)?;
        Some(match n.node_type {
            NodeType::Center => Self::centers(nodes, Some(std::slice::from_ref(&n.node_id))),
            NodeType::Edge => Self::centers(nodes, Some(&n.attached_centers)),
        })
    }

    /// What `q` (lowercase, inside the zone) is, or `None` for NXDOMAIN.
    async fn find(&self, q: &Name) -> anyhow::Result<Option<Found>> {
        if *q == self.zone {
            return Ok(Some(Found::Apex));
        }
        if q.iter()
            .next()
            .is_some_and(|l| l.eq_ignore_ascii_case(b"_acme-challenge"))
        {
            let key = q.to_ascii();
            let values = self.meta.list_txt(key.trim_end_matches('.')).await?;
            return Ok((!values.is_empty()).then_some(Found::Txt(values)));
        }
        let nodes = self.nodes().await?;
        if *q == self.ns {
            return Ok(Some(Found::Hosts(Self::centers(&nodes, None))));
        }
        if let Some(edges) = &self.edges {
            if edges.zone_of(q) && q != edges {
                // <node>.<edges> or anything below it: the label right under the edge domain.
                let node = label_below(q, edges);
                return Ok(Self::serving(&nodes, &node)
                    .filter(|_| {
                        nodes
                            .iter()
                            .any(|n| n.node_id == node && n.node_type == NodeType::Edge)
                    })
                    .map(Found::Hosts));
            }
        }
        if let Some(sb) = &self.sandboxes {
            if sb.zone_of(q) && q.num_labels() == sb.num_labels() + 1 {
                // Any center routes a sandbox's port to the node that runs it.
                let all = Self::centers(&nodes, None);
                return Ok((!all.is_empty()).then_some(Found::Hosts(all)));
            }
        }
        if let Some(pods) = &self.pods {
            if pods.zone_of(q) && q.num_labels() == pods.num_labels() + 1 {
                let pod = label_below(q, pods);
                if xpod_config::validate_pod_id(&pod).is_err() {
                    return Ok(None);
                }
                let owner = self
                    .owners
                    .owner(&pod)
                    .await
                    .map_err(|e| anyhow::anyhow!("looking up pod {pod}: {e}"))?;
                return Ok(owner
                    .and_then(|o| Self::serving(&nodes, &o.node_id))
                    .map(Found::Hosts));
            }
        }
        if q.num_labels() == self.zone.num_labels() + 1 {
            let node = label_below(q, &self.zone);
            if let Some(n) = nodes
                .iter()
                .find(|n| n.node_id == node && n.node_type == NodeType::Center)
            {
                return Ok(Some(Found::Hosts(Self::centers(
                    &nodes,
                    Some(std::slice::from_ref(&n.node_id)),
                ))));
            }
        }
        Ok(None)
    }

    /// The zone as served now, in zone-file order: apex SOA, NS, A/AAAA; `ns`; centers; pods;
    /// edges (with their wildcard). `_acme-challenge` TXT records are not listed.
    pub async fn records(&self) -> anyhow::Result<Vec<Record>> {
        let nodes = self.nodes().await?;
        let ttl = self.ttl;
        let hosts = |owner: &Name, ips: &[IpAddr]| -> Vec<Record> {
            ips.iter()
                .map(|ip| {
                    let rd = match ip {
                        IpAddr::V4(v4) => RData::A(A(*v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                    };
                    Record::from_rdata(owner.clone(), ttl, rd)
                })
                .collect()
        };
        let all = Self::centers(&nodes, None);
        let mut out = vec![
            self.soa(),
            Record::from_rdata(self.zone.clone(), ttl, RData::NS(NS(self.ns.clone()))),
        ];
        out.extend(hosts(&self.zone, &all));
        out.extend(hosts(&self.ns, &all));
        let under = |label: &str, parent: &Name| -> anyhow::Result<Name> {
            name(&format!("{label}.{}", parent.to_ascii()))
        };
        for n in nodes.iter().filter(|n| n.node_type == NodeType::Center) {
            let ips = Self::centers(&nodes, Some(std::slice::from_ref(&n.node_id)));
            out.extend(hosts(&under(&n.node_id, &self.zone)?, &ips));
        }
        if let Some(pods) = &self.pods {
            for p in self.meta.list_pods().await? {
                if let Some(ips) = Self::serving(&nodes, &p.node_id) {
                    out.extend(hosts(&under(&p.pod_id, pods)?, &ips));
                }
            }
        }
        if let Some(sb) = &self.sandboxes {
            out.extend(hosts(&under("*", sb)?, &all));
        }
        if let Some(edges) = &self.edges {
            for n in nodes.iter().filter(|n| n.node_type == NodeType::Edge) {
                let ips = Self::serving(&nodes, &n.node_id).unwrap_or_default();
                let base = under(&n.node_id, edges)?;
                out.extend(hosts(&base, &ips));
                out.extend(hosts(&under("*", &base)?, &ips));
            }
        }
        Ok(out)
    }

    fn soa(&self) -> Record {
        let serial = (xpod_storage::meta::now_millis() / 1000) as u32;
        let rname = Name::from_ascii(format!("hostmaster.{}", self.zone.to_ascii()))
            .unwrap_or_else(|_| self.zone.clone());
        Record::from_rdata(
            self.zone.clone(),
            self.ttl,
            RData::SOA(SOA::new(
                self.ns.clone(),
                rname,
                serial,
                3600,
                600,
                86_400,
                self.ttl,
            )),
        )
    }

    /// The answer to one request message.
    pub async fn answer(&self, req: &Message) -> Message {
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        if req.edns.is_some() {
            let mut e = Edns::new();
            e.set_max_payload(MAX_UDP as u16);
            resp.set_edns(e);
        }
        if req.metadata.op_code != OpCode::Query {
            resp.metadata.response_code = ResponseCode::NotImp;
            return resp;
        }
        let [q] = req.queries.as_slice() else {
            resp.metadata.response_code = ResponseCode::FormErr;
            return resp;
        };
        resp.add_query(q.clone());
        let qname = q.name().to_lowercase();
        if !self.zone.zone_of(&qname) {
            resp.metadata.response_code = ResponseCode::Refused;
            return resp;
        }
        resp.metadata.authoritative = true;
        let found = match self.find(&qname).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(name = %qname, error = %format!("{e:#}"), "DNS lookup failed");
                resp.metadata.authoritative = false;
                resp.metadata.response_code = ResponseCode::ServFail;
                return resp;
            }
        };
        let owner = q.name().clone();
        let ttl = self.ttl;
        let host = |ips: &[IpAddr], t: RecordType| -> Vec<Record> {
            ips.iter()
                .filter_map(|ip| match (ip, t) {
                    (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                    _ => None,
                })
                .map(|rd| Record::from_rdata(owner.clone(), ttl, rd))
                .collect()
        };
        let answers: Vec<Record> = match (&found, q.query_type()) {
            (None, _) => {
                resp.metadata.response_code = ResponseCode::NXDomain;
                Vec::new()
            }
            (Some(Found::Apex), RecordType::SOA) => vec![self.soa()],
            (Some(Found::Apex), RecordType::NS) => vec![Record::from_rdata(
                self.zone.clone(),
                ttl,
                RData::NS(NS(self.ns.clone())),
            )],
            (Some(Found::Apex), t @ (RecordType::A | RecordType::AAAA)) => {
                let nodes = self.nodes().await.map(|n| Self::centers(&n, None));
                host(&nodes.unwrap_or_default(), t)
            }
            (Some(Found::Hosts(ips)), t @ (RecordType::A | RecordType::AAAA)) => host(ips, t),
            (Some(Found::Txt(values)), RecordType::TXT) => values
                .iter()
                .map(|v| {
                    Record::from_rdata(owner.clone(), 0, RData::TXT(TXT::new(vec![v.clone()])))
                })
                .collect(),
            _ => Vec::new(),
        };
        if answers.is_empty() {
            // NXDOMAIN or NODATA: the SOA tells resolvers how long to cache the absence.
            resp.add_authority(self.soa());
        } else {
            resp.add_answers(answers);
        }
        resp
    }
}

/// The addresses a center published (`capacity.dns.addresses`).
fn addresses_of(n: &NodeRecord) -> Vec<IpAddr> {
    n.capacity
        .pointer("/dns/addresses")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// The label of `q` right below `parent` (`q` is inside `parent` and longer).
fn label_below(q: &Name, parent: &Name) -> String {
    let skip = (q.num_labels() - parent.num_labels() - 1) as usize;
    q.iter()
        .nth(skip)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .unwrap_or_default()
}

/// A reply to bytes that are not a DNS message: FORMERR with their id, if there is a header.
fn formerr(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

/// The reply to one message from `peer` (`limit`: UDP's size limit; `None` for TCP). A
/// TSIG-signed request is verified first (a bad signature gets NOTAUTH) and answered signed.
async fn reply(dns: &Dns, bytes: &[u8], limit: Option<usize>, peer: IpAddr) -> Option<Vec<u8>> {
    let req = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "malformed DNS message");
            return formerr(bytes);
        }
    };
    let verified = match (req.signature().is_some(), &dns.tsig) {
        (false, _) => None,
        (true, None) => {
            tracing::info!(%peer, "TSIG-signed request, but no dns.tsig_key_name: NOTAUTH");
            return Message::error_msg(
                req.metadata.id,
                req.metadata.op_code,
                ResponseCode::NotAuth,
            )
            .to_vec()
            .ok();
        }
        (true, Some(signer)) => match tsig::verify_request(signer, &req, bytes) {
            Ok(v) => Some(v),
            Err(why) => {
                tracing::warn!(%peer, %why, "TSIG verification failed: NOTAUTH");
                return Message::error_msg(
                    req.metadata.id,
                    req.metadata.op_code,
                    ResponseCode::NotAuth,
                )
                .to_vec()
                .ok();
            }
        },
    };
    let xfr = req.metadata.op_code == OpCode::Query
        && req
            .queries
            .first()
            .is_some_and(|q| matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR));
    let resp = if xfr {
        xfr::answer(dns, &req, peer, limit.is_none(), verified.is_some()).await
    } else {
        dns.answer(&req).await
    };
    // Over UDP an answer larger than the client takes is truncated (TC set: retry over TCP);
    // a TSIG is added after that, so room is left for it.
    let resp = match limit {
        Some(max) => {
            let max = match &req.edns {
                Some(e) => (e.max_payload() as usize).clamp(512, MAX_UDP),
                None => 512,
            }
            .min(max);
            let room = if verified.is_some() { TSIG_ROOM } else { 0 };
            if resp.to_vec().ok()?.len() + room > max {
                let mut t = resp.truncate();
                t.metadata.truncation = true;
                t
            } else {
                resp
            }
        }
        None => resp,
    };
    if let (Some(v), Some(signer)) = (&verified, &dns.tsig) {
        return match tsig::sign_response(signer, v, resp) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "signing a DNS response failed");
                None
            }
        };
    }
    resp.to_vec().ok()
}

/// Asks the DNS server at `server` (UDP) for the TXT records at `name`: what a validating CA
/// would see. Used by the ACME issuer to wait until a challenge is served.
pub async fn query_txt(server: SocketAddr, name: &str) -> anyhow::Result<Vec<String>> {
    use hickory_proto::op::{MessageType, Query};
    let server = crate::netio::reachable(server);
    let mut q = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    q.add_query(Query::query(self::name(name)?, RecordType::TXT));
    let bytes = q.to_vec().context("encoding the query")?;
    let sock = tokio::net::UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await?;
    sock.connect(server).await?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {server} within 2 s"))??;
    let answer = Message::from_vec(&buf[..n]).context("decoding the answer")?;
    if answer.metadata.id != q.metadata.id {
        anyhow::bail!("answer with another id");
    }
    Ok(answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}
