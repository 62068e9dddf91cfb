//! Certificates made in a tempdir, and a real TLS listener on loopback
//! requested with reqwest over HTTP/1.1 and HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use arbor_tls::{Certs, Error};
use std::{os::unix::fs::PermissionsExt, path::Path};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn creates_then_reuses_then_reissues_on_domain_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = Certs::load_or_create(d, "arbor.test:3443").unwrap();
    assert_eq!(certs.ca_path(), Some(d.join("ca.pem").as_path()));
    for f in ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"] {
        assert!(d.join(f).exists(), "{f}");
    }
    for f in ["ca-key.pem", "server-key.pem"] {
        let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert_eq!(certs.server_config().alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    let (ca, leaf) = (read(&d.join("ca.pem")), read(&d.join("server.pem")));

    // Same domain (the port does not matter): the same files.
    Certs::load_or_create(d, "ARBOR.test").unwrap();
    assert_eq!(read(&d.join("ca.pem")), ca);
    assert_eq!(read(&d.join("server.pem")), leaf);

    // Another domain: the CA stays, the leaf is issued anew.
    Certs::load_or_create(d, "other.test").unwrap();
    assert_eq!(read(&d.join("ca.pem")), ca);
    assert_ne!(read(&d.join("server.pem")), leaf);

    // The CA removed: a new CA, and a leaf signed by it.
    let leaf = read(&d.join("server.pem"));
    std::fs::remove_file(d.join("ca.pem")).unwrap();
    Certs::load_or_create(d, "other.test").unwrap();
    assert_ne!(read(&d.join("ca.pem")), ca);
    assert_ne!(read(&d.join("server.pem")), leaf);
}

#[test]
fn operator_certificates_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    Certs::load_or_create(&d.join("a"), "arbor.test").unwrap();
    Certs::load_or_create(&d.join("b"), "arbor.test").unwrap();
    let (cert, key) = (d.join("a/server.pem"), d.join("a/server-key.pem"));

    let certs = Certs::from_files(&cert, &key).unwrap();
    assert!(certs.ca_path().is_none());

    let missing = d.join("nope.pem");
    let e = Certs::from_files(&missing, &key).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("nope.pem"), "{e}");

    let junk = d.join("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    let e = Certs::from_files(&junk, &key).unwrap_err();
    assert!(matches!(e, Error::NotPem { what: "certificate", .. }), "{e}");
    let e = Certs::from_files(&cert, &junk).unwrap_err();
    assert!(matches!(e, Error::NotPem { what: "private key", .. }), "{e}");
    // A certificate file given as the key: no key in it.
    let e = Certs::from_files(&cert, &cert).unwrap_err();
    assert!(matches!(e, Error::NotPem { what: "private key", .. }), "{e}");

    let e = Certs::from_files(&cert, &d.join("b/server-key.pem")).unwrap_err();
    assert!(matches!(e, Error::KeyMismatch { .. }), "{e}");
    assert!(e.to_string().contains("does not match"), "{e}");
}

async fn hello(headers: axum::http::HeaderMap) -> String {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("-").to_string();
    format!("hello {host}")
}

#[tokio::test]
async fn serves_http1_and_http2_with_the_generated_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::load_or_create(dir.path(), "arbor.test").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/", axum::routing::get(hello));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let timeouts = arbor_tls::Timeouts::default();
    let server = tokio::spawn(arbor_tls::serve(listener, certs.server_config(), router, timeouts, async {
        let _ = stopped.await;
    }));

    let ca = reqwest::Certificate::from_pem(read(certs.ca_path().unwrap()).as_bytes()).unwrap();
    let client = |http2: bool| {
        let b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .resolve("x-1.arbor.test", addr)
            .resolve("arbor.test", addr);
        if http2 { b.http2_prior_knowledge() } else { b.http1_only() }.build().unwrap()
    };
    let url = format!("https://x-1.arbor.test:{}/", addr.port());

    let resp = client(false).get(&url).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.text().await.unwrap(), format!("hello x-1.arbor.test:{}", addr.port()));

    // ALPN picks h2 for a client that offers it; `http2_prior_knowledge`
    // over TLS still negotiates by ALPN, and the server must agree.
    let resp = client(true).get(&url).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    // The `:authority` of HTTP/2 reaches the router as `Host`.
    assert_eq!(resp.text().await.unwrap(), format!("hello x-1.arbor.test:{}", addr.port()));

    // The bare domain is in the certificate too.
    let resp = client(false).get(format!("https://arbor.test:{}/", addr.port())).send().await.unwrap();
    assert!(resp.status().is_success());

    // A client without the CA fails the handshake; the server carries on.
    let untrusted = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .resolve("x-1.arbor.test", addr)
        .build()
        .unwrap();
    assert!(untrusted.get(&url).send().await.is_err());
    assert!(client(false).get(&url).send().await.unwrap().status().is_success());

    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    let gone = tokio::net::TcpStream::connect(addr).await;
    assert!(gone.is_err(), "the listener is closed after shutdown");
}
