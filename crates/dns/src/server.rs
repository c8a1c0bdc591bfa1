//! The DNS server: hickory-server's UDP and TCP listeners (which answer malformed packets
//! with FORMERR and truncate UDP answers to the client's buffer, so clients retry on TCP)
//! around a handler that answers cluster names from the current [`Zone`] and forwards the
//! rest to the host's resolvers through hickory-resolver (with its cache).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::Resolver;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use crate::records::{Answer, Zone};
use crate::DnsError as Error;

/// The zone the server answers from, replaced whole when the cluster changes.
#[derive(Clone)]
pub struct ZoneHandle(Arc<RwLock<Arc<Zone>>>);

impl ZoneHandle {
    pub fn new(zone: Zone) -> ZoneHandle {
        ZoneHandle(Arc::new(RwLock::new(Arc::new(zone))))
    }

    pub fn set(&self, zone: Zone) {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(zone);
    }

    pub fn get(&self) -> Arc<Zone> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The request handler: cluster names from the zone, everything else forwarded.
pub struct ClusterDns {
    zone: ZoneHandle,
    forwarder: Option<Resolver<TokioRuntimeProvider>>,
}

/// A resolver that forwards to `upstreams` (with a cache, as CoreDNS's `cache` plugin).
pub fn forwarder(upstreams: &[SocketAddr]) -> Result<Resolver<TokioRuntimeProvider>, Error> {
    let servers = upstreams
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            ns.connections = vec![udp, tcp];
            ns
        })
        .collect();
    let config = ResolverConfig::from_parts(None, vec![], servers);
    let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    let opts = builder.options_mut();
    // A forwarder passes CNAME chains on and never reads the server's own hosts file.
    opts.preserve_intermediates = true;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    opts.ndots = 0;
    builder
        .build()
        .map_err(|e| Error::Config(format!("upstream resolvers: {e}")))
}

impl ClusterDns {
    pub fn new(zone: ZoneHandle, forwarder: Option<Resolver<TokioRuntimeProvider>>) -> Self {
        ClusterDns { zone, forwarder }
    }

    /// What to answer for one query: records, authority records and the response code.
    async fn resolve(&self, name: &hickory_proto::rr::LowerName, rtype: RecordType) -> Reply {
        let zone = self.zone.get();
        match zone.answer(name, rtype) {
            Answer::Records(answers) => {
                Reply::authoritative(answers, vec![], ResponseCode::NoError)
            }
            Answer::NoData => {
                Reply::authoritative(vec![], vec![zone.soa().clone()], ResponseCode::NoError)
            }
            Answer::NxDomain => {
                Reply::authoritative(vec![], vec![zone.soa().clone()], ResponseCode::NXDomain)
            }
            Answer::NotOurs => self.forward(Name::from(name), rtype).await,
        }
    }

    async fn forward(&self, mut name: Name, rtype: RecordType) -> Reply {
        let Some(resolver) = &self.forwarder else {
            return Reply::code(ResponseCode::Refused);
        };
        name.set_fqdn(true);
        match resolver.lookup(name, rtype).await {
            Ok(lookup) => Reply {
                answers: lookup.answers().to_vec(),
                authorities: vec![],
                code: ResponseCode::NoError,
                authoritative: false,
            },
            Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => Reply {
                answers: vec![],
                authorities: nr
                    .soa
                    .map(|soa| vec![soa.into_record_of_rdata()])
                    .unwrap_or_default(),
                code: nr.response_code,
                authoritative: false,
            },
            Err(NetError::Dns(DnsError::ResponseCode(code))) => Reply::code(code),
            Err(e) => {
                tracing::debug!(error = %e, "forwarding failed");
                Reply::code(ResponseCode::ServFail)
            }
        }
    }
}

struct Reply {
    answers: Vec<Record>,
    authorities: Vec<Record>,
    code: ResponseCode,
    authoritative: bool,
}

impl Reply {
    fn authoritative(answers: Vec<Record>, authorities: Vec<Record>, code: ResponseCode) -> Self {
        Reply {
            answers,
            authorities,
            code,
            authoritative: true,
        }
    }

    fn code(code: ResponseCode) -> Self {
        Reply {
            answers: vec![],
            authorities: vec![],
            code,
            authoritative: false,
        }
    }
}

/// The UDP payload size the server offers EDNS clients (the DNS flag day's 1232 bytes).
const EDNS_PAYLOAD: u16 = 1232;

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|e| {
            let mut out = Edns::new();
            out.set_max_payload(e.max_payload().clamp(512, EDNS_PAYLOAD));
            out
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let reply = match request.request_info() {
            _ if request.metadata.op_code != OpCode::Query => Reply::code(ResponseCode::NotImp),
            Err(_) => Reply::code(ResponseCode::FormErr),
            Ok(info) => {
                self.resolve(info.query.name(), info.query.query_type())
                    .await
            }
        };
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        meta.authoritative = reply.authoritative;
        meta.response_code = reply.code;
        let message = builder.build(
            meta,
            reply.answers.iter(),
            std::iter::empty(),
            reply.authorities.iter(),
            std::iter::empty(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending a DNS response failed");
                let mut meta = Metadata::response_from_request(&request.metadata);
                meta.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_proto::op::Header {
                    metadata: meta,
                    counts: Default::default(),
                })
            }
        }
    }
}

/// A running DNS server on one address, UDP and TCP.
pub struct Listening {
    pub addr: SocketAddr,
    server: Server<ClusterDns>,
}

impl Listening {
    /// Stops the listeners and waits for them.
    pub async fn stop(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "DNS server stopped");
        }
    }
}

/// Binds `addr` (port 0: a free port, the same for UDP and TCP) and serves `handler`.
pub async fn listen(addr: SocketAddr, handler: ClusterDns) -> Result<Listening, Error> {
    let bind = |e: std::io::Error| Error::Bind { addr, source: e };
    // Bind TCP first when the port is free to choose, then UDP on the same port; retry a few
    // times in the rare case that the UDP port is taken.
    let mut tries = 0;
    let (udp, tcp) = loop {
        let tcp = TcpListener::bind(addr).await.map_err(bind)?;
        let local = tcp.local_addr().map_err(bind)?;
        match UdpSocket::bind(local).await {
            Ok(udp) => break (udp, tcp),
            Err(e) if addr.port() == 0 && tries < 10 => {
                tries += 1;
                tracing::debug!(error = %e, "UDP port taken; trying another");
            }
            Err(e) => return Err(bind(e)),
        }
    };
    let local = tcp.local_addr().map_err(bind)?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 16);
    Ok(Listening {
        addr: local,
        server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Service, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some([("kubernetes.io/service-name".to_string(), name.to_string())].into()),
            ..Default::default()
        }
    }

    fn service(name: &str, ip: &str) -> Service {
        Service {
            metadata: meta(name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A headless Service with `n` endpoints: too many addresses for one 512-byte UDP answer.
    fn big_headless(n: u8) -> (Service, EndpointSlice) {
        let slice = EndpointSlice {
            metadata: meta("big"),
            address_type: "IPv4".into(),
            endpoints: (1..=n)
                .map(|i| Endpoint {
                    addresses: vec![format!("10.42.1.{i}")],
                    ..Default::default()
                })
                .collect(),
            ports: None,
        };
        (service("big", "None"), slice)
    }

    async fn start(zone: Zone, upstreams: &[SocketAddr]) -> Listening {
        let forwarder = (!upstreams.is_empty()).then(|| forwarder(upstreams).expect("forwarder"));
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        listen(addr, ClusterDns::new(ZoneHandle::new(zone), forwarder))
            .await
            .expect("listen")
    }

    fn client(addr: SocketAddr) -> Resolver<TokioRuntimeProvider> {
        forwarder(&[addr]).expect("client")
    }

    async fn a(
        client: &Resolver<TokioRuntimeProvider>,
        name: &str,
    ) -> Result<Vec<String>, NetError> {
        let l = client.lookup(name, RecordType::A).await?;
        let mut out: Vec<String> = l.answers().iter().map(|r| r.data.to_string()).collect();
        out.sort();
        Ok(out)
    }

    #[tokio::test]
    async fn answers_cluster_names_forwards_the_rest_and_survives_garbage() {
        // The "host's resolver": another server, authoritative for its own domain.
        let outside = start(
            Zone::build("example.test", [&service("www", "192.0.2.80")], []).expect("zone"),
            &[],
        )
        .await;
        let (big, big_slice) = big_headless(100);
        let web = service("web", "10.43.0.20");
        let zone = Zone::build("cluster.local", [&web, &big], [&big_slice]).expect("zone");
        let dns = start(zone, &[outside.addr]).await;
        let c = client(dns.addr);

        assert_eq!(
            a(&c, "web.default.svc.cluster.local.").await.expect("web"),
            vec!["10.43.0.20"]
        );
        let big = a(&c, "big.default.svc.cluster.local.").await.expect("big");
        assert_eq!(
            big.len(),
            100,
            "a truncated UDP answer is fetched again over TCP"
        );
        assert_eq!(
            a(&c, "www.default.svc.example.test.")
                .await
                .expect("forwarded"),
            vec!["192.0.2.80"]
        );
        let nx = a(&c, "nope.default.svc.cluster.local.")
            .await
            .expect_err("nxdomain");
        assert!(
            matches!(&nx, NetError::Dns(DnsError::NoRecordsFound(nr)) if nr.response_code == ResponseCode::NXDomain && nr.soa.is_some()),
            "{nx:?}"
        );
        let forwarded_nx = a(&c, "nope.default.svc.example.test.")
            .await
            .expect_err("nxdomain");
        assert!(
            matches!(&forwarded_nx, NetError::Dns(DnsError::NoRecordsFound(nr)) if nr.response_code == ResponseCode::NXDomain),
            "{forwarded_nx:?}"
        );

        // Malformed packets: too short (dropped), a header with a broken question (FORMERR).
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        sock.send_to(b"\x01\x02", dns.addr).await.expect("send");
        let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        junk.extend_from_slice(&[0x3f, b'a', b'b']);
        sock.send_to(&junk, dns.addr).await.expect("send");
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .expect("an answer to the broken question")
            .expect("recv");
        assert!(n >= 12);
        assert_eq!(&buf[..2], &[0x12, 0x34], "the same id");
        assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
        // ... and it still answers.
        assert_eq!(
            a(&c, "web.default.svc.cluster.local.").await.expect("web"),
            vec!["10.43.0.20"]
        );
        dns.stop().await;
        outside.stop().await;
    }

    #[tokio::test]
    async fn without_upstreams_outside_names_are_refused() {
        let dns = start(Zone::empty("cluster.local").expect("zone"), &[]).await;
        let err = a(&client(dns.addr), "example.com.")
            .await
            .expect_err("refused");
        assert!(format!("{err:?}").contains("Refused"), "{err:?}");
        dns.stop().await;
    }
}
