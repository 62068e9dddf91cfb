//! The little of envd's API a build needs: run a command with its output
//! streamed (`process.Process/Start`, Connect server streaming) and upload
//! a file (`POST /files`), on a build sandbox's address.

use crate::error::{Error, Result};
use arbor_proto::connect::{envelope, EnvelopeDecoder};
use arbor_proto::process::{ProcessConfig, StartRequest};
use arbor_proto::stream::{parse_frame, Frame};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::{collections::BTreeMap, net::Ipv4Addr};

/// A build sandbox's envd.
#[derive(Debug, Clone)]
pub struct Envd {
    addr: Ipv4Addr,
    token: String,
}

/// A command to run.
#[derive(Debug, Clone)]
pub struct Command<'a> {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// OS user.
    pub user: &'a str,
    /// Working directory.
    pub cwd: &'a str,
    /// Environment variables.
    pub env: &'a BTreeMap<String, String>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code (-1 when killed by a signal).
    pub code: i32,
    /// envd's status text (`exit status 1`, `signal: killed`).
    pub status: String,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Envd {
    /// The envd of the sandbox at `addr`, authenticated with `token`.
    pub fn new(addr: Ipv4Addr, token: &str) -> Envd {
        Envd { addr, token: token.to_string() }
    }

    /// The access token.
    pub fn token(&self) -> &str {
        &self.token
    }

    async fn connect(&self) -> Result<Sender> {
        let stream = tokio::net::TcpStream::connect((self.addr, arbor_proto::ENVD_PORT))
            .await
            .map_err(|e| Error::Envd(format!("connecting to {}: {e}", self.addr)))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| Error::Envd(e.to_string()))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    fn request(&self, uri: &str, content_type: &str) -> http::request::Builder {
        http::Request::post(uri)
            .header(http::header::HOST, "envd")
            .header(http::header::CONTENT_TYPE, content_type)
            .header("X-Access-Token", &self.token)
    }

    /// Runs `cmd`, passing each chunk of its output (stdout and stderr
    /// alike) to `output`, and returns how it ended.
    pub async fn run(&self, cmd: &Command<'_>, mut output: impl FnMut(&[u8])) -> Result<Exit> {
        let (program, args) = cmd.argv.split_first().ok_or_else(|| Error::Envd("an empty command".into()))?;
        let start = StartRequest {
            process: Some(ProcessConfig {
                cmd: program.clone(),
                args: args.to_vec(),
                envs: cmd.env.clone().into_iter().collect(),
                cwd: Some(cmd.cwd.to_string()),
            }),
            ..Default::default()
        };
        let json = serde_json::to_vec(&start).map_err(|e| Error::Envd(e.to_string()))?;
        let user = base64::engine::general_purpose::STANDARD.encode(format!("{}:", cmd.user));
        let req = self
            .request("/process.Process/Start", "application/connect+json")
            .header(http::header::AUTHORIZATION, format!("Basic {user}"))
            .body(Full::new(envelope(0, &json)))
            .map_err(|e| Error::Envd(e.to_string()))?;
        let mut sender = self.connect().await?;
        let resp = sender.send_request(req).await.map_err(|e| Error::Envd(e.to_string()))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let text = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(Error::Envd(format!("{status}: {}", String::from_utf8_lossy(&text))));
        }
        let mut decoder = EnvelopeDecoder::default();
        let mut exit = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Error::Envd(format!("reading the output: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            decoder.push(&data);
            while let Some(env) = decoder.next_envelope().map_err(|e| Error::Envd(e.to_string()))? {
                match parse_frame(&env).map_err(Error::Envd)? {
                    Frame::Stdout(b) | Frame::Stderr(b) => output(&b),
                    Frame::Ended { exit_code, status, .. } => exit = Some(Exit { code: exit_code, status }),
                    Frame::StreamEnd(Some((code, message))) => {
                        return Err(Error::Envd(format!("{code}: {message}")));
                    }
                    Frame::Started(_) | Frame::Other | Frame::StreamEnd(None) => {}
                }
            }
        }
        exit.ok_or_else(|| Error::Envd("the output ended before the process did".into()))
    }

    /// Writes `data` to `path` in the sandbox, as root.
    pub async fn upload(&self, path: &str, data: Vec<u8>) -> Result<()> {
        let query = format!("/files?path={}&username=root", percent_encode(path));
        let req = self
            .request(&query, "application/octet-stream")
            .body(Full::new(Bytes::from(data)))
            .map_err(|e| Error::Envd(e.to_string()))?;
        let mut sender = self.connect().await?;
        let resp = sender.send_request(req).await.map_err(|e| Error::Envd(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(Error::Envd(format!("uploading {path}: {status}: {}", String::from_utf8_lossy(&text))));
        }
        Ok(())
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_encoded() {
        assert_eq!(super::percent_encode("/tmp/a b&c.tar"), "/tmp/a%20b%26c.tar");
    }
}
