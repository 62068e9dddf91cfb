//! The responder on loopback, asked over real UDP and TCP sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use arbor_dns::Responder;
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{rdata::A, Name, RData, RecordType},
};
use std::net::{Ipv4Addr, SocketAddr};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

const ANSWER: Ipv4Addr = Ipv4Addr::new(10, 11, 12, 13);

fn query(id: u16, name: &str, ty: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
    m.to_vec().unwrap()
}

async fn udp(server: SocketAddr, name: &str, ty: RecordType) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&query(4242, name, ty), server).await.unwrap();
    let mut buf = [0u8; 1500];
    let len = tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv(&mut buf)).await.unwrap().unwrap();
    let reply = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(reply.id(), 4242);
    assert_eq!(reply.message_type(), MessageType::Response);
    reply
}

fn addresses(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers()
        .iter()
        .map(|r| {
            assert_eq!(r.ttl(), 60);
            match r.data() {
                RData::A(A(ip)) => *ip,
                other => panic!("not an A record: {other:?}"),
            }
        })
        .collect()
}

async fn start(domain: &str) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let responder = Responder::bind("127.0.0.1:0".parse().unwrap(), domain, ANSWER).await.unwrap();
    let addr = responder.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(responder.run(async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

#[tokio::test]
async fn answers_the_zone_and_refuses_the_rest_over_udp() {
    // The port in the domain is not part of the names.
    let (addr, stop, task) = start("arbor.test:3443").await;

    let reply = udp(addr, "8000-abc.arbor.test.", RecordType::A).await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(reply.authoritative());
    assert_eq!(addresses(&reply), vec![ANSWER]);
    assert_eq!(reply.answers()[0].name().to_ascii(), "8000-abc.arbor.test.");

    let reply = udp(addr, "ARBOR.TEST.", RecordType::A).await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert_eq!(addresses(&reply), vec![ANSWER]);

    let reply = udp(addr, "49983-x.Arbor.Test", RecordType::A).await;
    assert_eq!(addresses(&reply), vec![ANSWER]);

    // AAAA: the name exists, with no IPv6 address.
    let reply = udp(addr, "8000-abc.arbor.test.", RecordType::AAAA).await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(reply.answers().is_empty());

    for name in ["example.com.", "notarbor.test.", "arbor.test.example.com.", "test."] {
        let reply = udp(addr, name, RecordType::A).await;
        assert_eq!(reply.response_code(), ResponseCode::Refused, "{name}");
        assert!(reply.answers().is_empty(), "{name}");
    }

    // Garbage with an id gets FORMERR, and the responder carries on.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&[0x12, 0x34, 0xff], addr).await.unwrap();
    let mut buf = [0u8; 512];
    let len = sock.recv(&mut buf).await.unwrap();
    let reply = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!((reply.id(), reply.response_code()), (0x1234, ResponseCode::FormErr));
    assert_eq!(addresses(&udp(addr, "a.arbor.test.", RecordType::A).await), vec![ANSWER]);

    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn answers_over_tcp_several_queries_on_one_connection() {
    let (addr, stop, task) = start("arbor.test").await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    for (id, name, code) in
        [(1, "8000-abc.arbor.test.", ResponseCode::NoError), (2, "example.com.", ResponseCode::Refused)]
    {
        let q = query(id, name, RecordType::A);
        let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        tcp.write_all(&framed).await.unwrap();
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).await.unwrap();
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tcp.read_exact(&mut msg).await.unwrap();
        let reply = Message::from_vec(&msg).unwrap();
        assert_eq!((reply.id(), reply.response_code()), (id, code));
        if code == ResponseCode::NoError {
            assert_eq!(addresses(&reply), vec![ANSWER]);
        }
    }
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_bad_domain_is_an_error() {
    let err = Responder::bind("127.0.0.1:0".parse().unwrap(), "", ANSWER).await.unwrap_err();
    assert!(err.to_string().contains("not a DNS name"), "{err}");
}
