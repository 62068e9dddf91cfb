//! `exec` against a real arbor-envd served on the fixture's port, as the
//! server's envd proxy serves it. The CLI code runs in-process here: envd's
//! reaper collects every child of this test process, so spawning the `arbor`
//! binary from it would race with that reaper.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_cli::config::{resolve, FileConfig, Overrides};
use arbor_cli::exec::{exec, ExecRequest};
use arbor_cli::{client::Client, Error};
use common::Api;
use std::io::Write;
use std::time::{Duration, Instant};

fn client(api: &Api) -> Client {
    let flags = Overrides { api_url: Some(api.url()), api_key: Some(common::KEY.into()) };
    Client::new(&resolve(&FileConfig::default(), &|_| None, &flags)).unwrap()
}

/// Collects output and when each piece arrived.
#[derive(Default)]
struct Sink {
    data: Vec<u8>,
    writes: Vec<(Instant, Vec<u8>)>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.data.extend_from_slice(buf);
        self.writes.push((Instant::now(), buf.to_vec()));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn run(api: &Api, id: &str, req: ExecRequest) -> (Result<i32, Error>, String, String) {
    let (mut out, mut err) = (Sink::default(), Sink::default());
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        exec(&client(api), id, &req, &mut out, &mut err, std::future::pending()),
    )
    .await
    .expect("exec timed out");
    (r, String::from_utf8(out.data).unwrap(), String::from_utf8(err.data).unwrap())
}

fn cmd(c: &str) -> ExecRequest {
    ExecRequest { command: c.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_commands_through_envd() {
    let api = Api::start(true).await;

    let (r, out, err) = run(&api, "sbx-a", cmd("echo out; echo err >&2; exit 7")).await;
    assert_eq!((r.unwrap(), out.as_str(), err.as_str()), (7, "out\n", "err\n"));

    let mut req = cmd("echo $GREETING; pwd");
    req.envs.insert("GREETING".into(), "hi there".into());
    req.cwd = Some("/".into());
    let (r, out, _) = run(&api, "sbx-a", req).await;
    assert_eq!((r.unwrap(), out.as_str()), (0, "hi there\n/\n"));

    let (r, _, _) = run(&api, "sbx-a", cmd("kill -9 $$")).await;
    assert_eq!(r.unwrap(), 137);

    // An unknown user is refused by envd; the stream's error is reported.
    let mut req = cmd("true");
    req.user = Some("nobody-here".into());
    let (r, _, _) = run(&api, "sbx-a", req).await;
    assert!(matches!(r, Err(Error::Rpc { .. })), "{r:?}");

    let (r, _, _) = run(&api, "gone", cmd("true")).await;
    assert_eq!(r.unwrap_err().to_string(), "sandbox gone not found (404)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_arrives_while_the_command_runs() {
    let api = Api::start(true).await;
    let (mut out, mut err) = (Sink::default(), Sink::default());
    let code = exec(
        &client(&api),
        "sbx-a",
        &cmd("echo first; sleep 2; echo second"),
        &mut out,
        &mut err,
        std::future::pending(),
    )
    .await
    .unwrap();
    let done = Instant::now();
    assert_eq!((code, out.data.as_slice()), (0, b"first\nsecond\n".as_slice()));
    let (first_at, first) = &out.writes[0];
    assert_eq!(first, b"first\n");
    assert!(done.duration_since(*first_at) > Duration::from_millis(1500), "output was buffered until the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_kills_the_process_in_the_sandbox() {
    let api = Api::start(true).await;
    let marker = api.dir.path().join("home/survived");
    let command = format!("echo started; sleep 1.5; touch {}", marker.display());
    let (mut out, mut err) = (Sink::default(), Sink::default());
    let cancel = tokio::time::sleep(Duration::from_millis(500));
    let code = exec(&client(&api), "sbx-a", &cmd(&command), &mut out, &mut err, cancel).await.unwrap();
    assert_eq!((code, out.data.as_slice(), err.data.as_slice()), (130, b"started\n".as_slice(), b"".as_slice()));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!marker.exists(), "the command kept running after the CLI stopped");
}
