//! The optional DNS responder of `arbor server` (`--dns ADDR`).
//!
//! Sandbox URLs are `<port>-<sandboxID>.<domain>`; on a machine without a
//! wildcard record for the domain, a resolver pointed at this responder finds
//! them. It answers `A` for `<domain>` and every name under it with one
//! address, and refuses every other name: it is authoritative for one zone,
//! not a recursive resolver.
#![warn(missing_docs)]

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{rdata::A, DNSClass, Name, RData, Record, RecordType},
};
use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};

/// TTL of the answers: short, so a changed `--dns-answer` is seen soon.
const TTL: u32 = 60;
/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The largest UDP answer we promise in EDNS (the DNS flag day value).
const EDNS_PAYLOAD: u16 = 1232;

/// Errors of the DNS responder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The domain is not a DNS name.
    #[error("domain {0:?} is not a DNS name")]
    BadDomain(String),
    /// The UDP or TCP socket could not be bound.
    #[error("DNS responder: binding {addr}: {err}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed (shown in the message, so not a `source`).
        err: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A bound responder: UDP and TCP on the same address.
#[derive(Debug)]
pub struct Responder {
    udp: UdpSocket,
    tcp: TcpListener,
    zone: Arc<Zone>,
}

/// The one zone we answer for.
#[derive(Debug)]
struct Zone {
    name: Name,
    answer: Ipv4Addr,
}

/// Binds `addr` (UDP and TCP) and answers until `shutdown` completes.
pub async fn serve<F>(addr: SocketAddr, domain: &str, answer: Ipv4Addr, shutdown: F) -> Result<()>
where
    F: Future<Output = ()> + Send,
{
    Responder::bind(addr, domain, answer).await?.run(shutdown).await;
    Ok(())
}

impl Responder {
    /// Binds UDP and TCP on `addr` for `domain` (a port on it, as in
    /// `arbor.test:3443`, is ignored), answering with `answer`. With port 0,
    /// both sockets get the same free port.
    pub async fn bind(addr: SocketAddr, domain: &str, answer: Ipv4Addr) -> Result<Responder> {
        let zone = Arc::new(Zone { name: zone_name(domain)?, answer });
        let mut tries = 0;
        loop {
            let udp = UdpSocket::bind(addr).await.map_err(|err| Error::Bind { addr, err })?;
            let udp_addr = udp.local_addr().map_err(|err| Error::Bind { addr, err })?;
            match TcpListener::bind(udp_addr).await {
                Ok(tcp) => return Ok(Responder { udp, tcp, zone }),
                // The port UDP got may be taken for TCP; pick another.
                Err(e) if addr.port() == 0 && tries < 10 => {
                    tries += 1;
                    tracing::debug!("DNS responder: TCP {udp_addr}: {e}; trying another port");
                }
                Err(err) => return Err(Error::Bind { addr: udp_addr, err }),
            }
        }
    }

    /// The bound address (the same port for UDP and TCP).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Answers queries until `shutdown` completes.
    pub async fn run<F: Future<Output = ()> + Send>(self, shutdown: F) {
        let Responder { udp, tcp, zone } = self;
        tokio::select! {
            () = serve_udp(udp, Arc::clone(&zone)) => {}
            () = serve_tcp(tcp, zone) => {}
            () = shutdown => {}
        }
    }
}

fn zone_name(domain: &str) -> Result<Name> {
    let host = match domain.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => domain,
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return Err(Error::BadDomain(domain.to_string()));
    }
    Name::from_ascii(format!("{host}.")).map(|n| n.to_lowercase()).map_err(|_| Error::BadDomain(domain.to_string()))
}

async fn serve_udp(udp: UdpSocket, zone: Arc<Zone>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = match udp.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // ICMP errors of earlier replies surface here on Linux; the socket is fine.
                tracing::debug!("DNS responder: UDP receive: {e}");
                continue;
            }
        };
        if let Some(reply) = zone.respond(&buf[..len]) {
            if let Err(e) = udp.send_to(&reply, peer).await {
                tracing::debug!("DNS responder: UDP reply to {peer}: {e}");
            }
        }
    }
}

async fn serve_tcp(tcp: TcpListener, zone: Arc<Zone>) {
    loop {
        match tcp.accept().await {
            Ok((stream, peer)) => {
                let zone = Arc::clone(&zone);
                tokio::spawn(async move {
                    if let Err(e) = serve_tcp_conn(stream, &zone).await {
                        tracing::debug!("DNS responder: TCP {peer}: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::debug!("DNS responder: TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// DNS over TCP: each message prefixed by its length (two bytes, big endian);
/// a client may send several on one connection.
async fn serve_tcp_conn(mut stream: TcpStream, zone: &Zone) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut msg).await?;
        let Some(reply) = zone.respond(&msg) else { return Ok(()) };
        let Ok(reply_len) = u16::try_from(reply.len()) else { return Ok(()) };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&reply_len.to_be_bytes());
        out.extend_from_slice(&reply);
        stream.write_all(&out).await?;
    }
}

impl Zone {
    /// The reply to one wire message, or `None` for something that is not a
    /// query at all (too short to even echo its id).
    fn respond(&self, wire: &[u8]) -> Option<Vec<u8>> {
        let reply = match Message::from_vec(wire) {
            Ok(req) if req.message_type() == MessageType::Query => self.answer(&req),
            Ok(_) => return None,
            Err(_) => {
                let id = u16::from_be_bytes([*wire.first()?, *wire.get(1)?]);
                Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
            }
        };
        match reply.to_vec() {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::debug!("DNS responder: encoding a reply: {e}");
                None
            }
        }
    }

    fn answer(&self, req: &Message) -> Message {
        let mut reply = Message::new();
        reply
            .set_id(req.id())
            .set_message_type(MessageType::Response)
            .set_op_code(req.op_code())
            .set_recursion_desired(req.recursion_desired())
            .set_recursion_available(false)
            .add_queries(req.queries().iter().cloned());
        if req.extensions().is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            reply.set_edns(edns);
        }
        if req.op_code() != OpCode::Query {
            reply.set_response_code(ResponseCode::NotImp);
            return reply;
        }
        // Resolvers send exactly one question; anything else is malformed.
        let [query] = req.queries() else {
            reply.set_response_code(ResponseCode::FormErr);
            return reply;
        };
        if !self.name.zone_of(query.name()) || query.query_class() != DNSClass::IN {
            reply.set_response_code(ResponseCode::Refused);
            return reply;
        }
        reply.set_authoritative(true).set_response_code(ResponseCode::NoError);
        // Names in the zone exist for every type; only A has data (NODATA for AAAA
        // and the rest, so clients fall back to IPv4 at once).
        if query.query_type() == RecordType::A {
            reply.add_answer(Record::from_rdata(query.name().clone(), TTL, RData::A(A(self.answer))));
        }
        reply
    }
}
