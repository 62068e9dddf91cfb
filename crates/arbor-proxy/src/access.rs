//! What a request carries to show it may use a sandbox, so that the control
//! plane can decide whether it may wake a paused one.
//!
//! A running sandbox checks its own credentials: envd its access token, the
//! proxy the traffic token of public ports. A paused sandbox has no envd to
//! ask, so before the resolver resumes it, or says it is paused at all, it
//! checks [`Access::allows`] against the sandbox's record. A request that
//! fails gets the answer of an unknown id: otherwise anyone who knows an id
//! could resume a paused sandbox (and keep it running) or learn whether an
//! id exists.

use crate::{
    host::TRAFFIC_TOKEN_HEADER,
    proxy::{header_text, ACCESS_TOKEN_HEADER},
};
pub use arbor_proto::signature::unix_now;
use arbor_proto::signature::{self, Operation};
use http::{HeaderMap, Method, Uri};
use subtle::ConstantTimeEq;

/// Which of a sandbox's services a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// envd (routed by header, or `49983-<id>.<domain>`).
    Envd,
    /// Any other port, reached by its public URL.
    Port(u16),
}

/// The credentials a request carries, as the SDKs send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access<'a> {
    service: Service,
    /// `X-Access-Token` (non-empty).
    access_token: Option<&'a str>,
    /// `E2B-Traffic-Access-Token` (non-empty).
    traffic_token: Option<&'a str>,
    /// A signed `/files` URL (`download_url()`/`upload_url()`).
    signed: Option<SignedFiles>,
}

/// The signature-related query values of a signed `/files` request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignedFiles {
    op: Operation,
    path: String,
    username: String,
    signature: String,
    expiration: Option<i64>,
}

impl<'a> Access<'a> {
    /// The credentials of a request for `service`.
    pub fn of(service: Service, method: &Method, uri: &Uri, headers: &'a HeaderMap) -> Self {
        let text = |name| header_text(headers, name).ok().flatten();
        let signed = (service == Service::Envd && uri.path() == "/files")
            .then(|| SignedFiles::parse(method, uri.query()?))
            .flatten();
        Self { service, access_token: text(ACCESS_TOKEN_HEADER), traffic_token: text(TRAFFIC_TOKEN_HEADER), signed }
    }

    /// No credentials at all (tests, internal callers).
    pub fn none(service: Service) -> Self {
        Self { service, access_token: None, traffic_token: None, signed: None }
    }

    /// Which service the request is for.
    pub fn service(&self) -> Service {
        self.service
    }

    /// Whether the request would pass the sandbox's own checks, given its
    /// envd access token and its traffic token (`None`: public traffic
    /// allowed), at Unix time `now`:
    ///
    /// * envd: `X-Access-Token` equal to the envd token or, without that
    ///   header, a valid unexpired signed `/files` URL (as envd decides);
    /// * another port: anything when the sandbox allows public traffic,
    ///   else `E2B-Traffic-Access-Token` equal to its traffic token.
    pub fn allows(&self, envd_token: &str, traffic_token: Option<&str>, now: i64) -> bool {
        let same = |given: Option<&str>, expected: &str| {
            given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())))
        };
        match self.service {
            Service::Envd if self.access_token.is_some() => same(self.access_token, envd_token),
            Service::Envd => self.signed.as_ref().is_some_and(|s| s.valid(envd_token, now)),
            Service::Port(_) => traffic_token.is_none_or(|expected| same(self.traffic_token, expected)),
        }
    }
}

impl SignedFiles {
    fn parse(method: &Method, query: &str) -> Option<Self> {
        let op = match *method {
            Method::GET | Method::HEAD => Operation::Read,
            Method::POST => Operation::Write,
            _ => return None,
        };
        let (mut path, mut username, mut signature, mut expiration) = (String::new(), String::new(), None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "path" => path = value.into_owned(),
                "username" => username = value.into_owned(),
                "signature" => signature = Some(value.into_owned()),
                "signature_expiration" => expiration = Some(value.parse::<i64>().ok()?),
                _ => {}
            }
        }
        Some(Self { op, path, username, signature: signature?, expiration })
    }

    fn valid(&self, token: &str, now: i64) -> bool {
        let expected = signature::sign(&self.path, self.op, &self.username, token, self.expiration);
        bool::from(expected.as_bytes().ct_eq(self.signature.as_bytes())) && self.expiration.is_none_or(|e| e >= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn envd_needs_its_token() {
        let none = HeaderMap::new();
        let get = Method::GET;
        assert!(!Access::of(Service::Envd, &get, &uri("/health"), &none).allows("tok", None, 0));
        let good = headers(&[("x-access-token", "tok")]);
        assert!(Access::of(Service::Envd, &get, &uri("/health"), &good).allows("tok", None, 0));
        let bad = headers(&[("x-access-token", "other")]);
        assert!(!Access::of(Service::Envd, &get, &uri("/health"), &bad).allows("tok", None, 0));
        // An empty header counts as none, as in envd.
        let empty = headers(&[("x-access-token", "")]);
        assert!(!Access::of(Service::Envd, &get, &uri("/health"), &empty).allows("tok", None, 0));
        // The traffic token is not envd's credential.
        let traffic = headers(&[("e2b-traffic-access-token", "tok")]);
        assert!(!Access::of(Service::Envd, &get, &uri("/health"), &traffic).allows("tok", Some("tok"), 0));
    }

    #[test]
    fn signed_files_urls() {
        let none = HeaderMap::new();
        let sig = signature::sign("/home/user/a b.txt", Operation::Read, "", "tok", Some(100));
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("path", "/home/user/a b.txt")
            .append_pair("signature", &sig)
            .append_pair("signature_expiration", "100")
            .finish();
        let signed = uri(&format!("/files?{q}"));
        assert!(Access::of(Service::Envd, &Method::GET, &signed, &none).allows("tok", None, 100));
        // Expired, another token, signed for reading but used to write.
        assert!(!Access::of(Service::Envd, &Method::GET, &signed, &none).allows("tok", None, 101));
        assert!(!Access::of(Service::Envd, &Method::GET, &signed, &none).allows("other", None, 0));
        assert!(!Access::of(Service::Envd, &Method::POST, &signed, &none).allows("tok", None, 0));
        // A wrong header is not rescued by a valid signature, as in envd.
        let bad = headers(&[("x-access-token", "other")]);
        assert!(!Access::of(Service::Envd, &Method::GET, &signed, &bad).allows("tok", None, 0));
        // Only /files takes signatures, and only for envd.
        let elsewhere = uri(&format!("/health?{q}"));
        assert!(!Access::of(Service::Envd, &Method::GET, &elsewhere, &none).allows("tok", None, 0));
        assert!(Access::of(Service::Port(8000), &Method::GET, &signed, &none).allows("tok", None, 0));
        assert!(!Access::of(Service::Port(8000), &Method::GET, &signed, &none).allows("tok", Some("t"), 0));
    }

    #[test]
    fn ports_are_public_unless_the_sandbox_has_a_traffic_token() {
        let none = HeaderMap::new();
        let get = Method::GET;
        assert!(Access::of(Service::Port(8000), &get, &uri("/"), &none).allows("tok", None, 0));
        assert!(!Access::of(Service::Port(8000), &get, &uri("/"), &none).allows("tok", Some("tt"), 0));
        let good = headers(&[("e2b-traffic-access-token", "tt")]);
        assert!(Access::of(Service::Port(8000), &get, &uri("/"), &good).allows("tok", Some("tt"), 0));
        // The envd token does not open a port that needs the traffic token.
        let envd = headers(&[("x-access-token", "tok")]);
        assert!(!Access::of(Service::Port(8000), &get, &uri("/"), &envd).allows("tok", Some("tt"), 0));
    }
}
