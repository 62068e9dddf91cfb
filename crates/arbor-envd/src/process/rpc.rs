//! Connect handlers of `process.Process`.

use super::Handle;
use crate::{
    auth,
    connect::{self, Call},
    error::{Error, Result},
    state::Envd,
};
use arbor_proto::{
    connect::{Code, ConnectError},
    process::{
        process_event::{Event, KeepAlive, StartEvent},
        process_input::Input,
        stream_input_request, CloseStdinRequest, CloseStdinResponse, ConnectRequest, ConnectResponse, ListRequest,
        ListResponse, ProcessEvent, ProcessInput, SendInputRequest, SendInputResponse, SendSignalRequest,
        SendSignalResponse, Signal, StartRequest, StartResponse, StreamInputRequest, StreamInputResponse,
        UpdateRequest, UpdateResponse,
    },
};
use axum::{
    extract::{Path, State},
    response::Response,
};
use futures::{Stream, StreamExt};
use http::HeaderMap;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;

/// `POST /process.Process/{method}`.
pub async fn serve(
    State(envd): State<Arc<Envd>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    call: Call,
) -> Response {
    let e = envd.clone();
    match method.as_str() {
        "Start" => {
            connect::server_stream(
                call,
                || start_response(Event::Keepalive(KeepAlive {})),
                |req: StartRequest, ctx| async move {
                    let name = auth::basic_user(&headers)?;
                    let user = e.user(name.as_deref())?;
                    let (handle, events) = e.processes.start(req, &user, &e.defaults(), ctx.timeout)?;
                    Ok(events_stream(&handle, events).map(|ev| ev.map(|event| StartResponse { event: Some(event) })))
                },
            )
            .await
        }
        "Connect" => {
            connect::server_stream(
                call,
                || connect_response(Event::Keepalive(KeepAlive {})),
                |req: ConnectRequest, _| async move {
                    let handle = e.processes.find(req.process.as_ref())?;
                    let events = handle
                        .subscribe()
                        .ok_or_else(|| Error::NotFound(format!("process with pid {} has already ended", handle.pid)))?;
                    Ok(events_stream(&handle, events).map(|ev| ev.map(|event| ConnectResponse { event: Some(event) })))
                },
            )
            .await
        }
        "List" => {
            connect::unary(call, |_: ListRequest| async move { Ok(ListResponse { processes: e.processes.list() }) })
                .await
        }
        "SendInput" => {
            connect::unary(call, |req: SendInputRequest| async move {
                let handle = e.processes.find(req.process.as_ref())?;
                send_input(&handle, req.input).await?;
                Ok(SendInputResponse {})
            })
            .await
        }
        "SendSignal" => {
            connect::unary(call, |req: SendSignalRequest| async move {
                let handle = e.processes.find(req.process.as_ref())?;
                let sig = match Signal::try_from(req.signal) {
                    Ok(Signal::Sigkill) => nix::sys::signal::Signal::SIGKILL,
                    Ok(Signal::Sigterm) => nix::sys::signal::Signal::SIGTERM,
                    _ => return Err(Error::InvalidArgument(format!("unsupported signal {}", req.signal))),
                };
                e.processes.signal(&handle, sig);
                Ok(SendSignalResponse {})
            })
            .await
        }
        "Update" => {
            connect::unary(call, |req: UpdateRequest| async move {
                let handle = e.processes.find(req.process.as_ref())?;
                if let Some(size) = req.pty.and_then(|p| p.size) {
                    let pty = handle.pty.as_ref().ok_or_else(|| {
                        Error::InvalidArgument(format!("process {} has no pty to resize", handle.pid))
                    })?;
                    let dim = |v: u32, what: &str| {
                        u16::try_from(v)
                            .ok()
                            .filter(|v| *v > 0)
                            .ok_or_else(|| Error::InvalidArgument(format!("pty {what} must be 1..=65535, got {v}")))
                    };
                    pty.resize(dim(size.cols, "cols")?, dim(size.rows, "rows")?)
                        .map_err(|err| Error::io("resizing the pty", err))?;
                }
                Ok(UpdateResponse {})
            })
            .await
        }
        "CloseStdin" => {
            connect::unary(call, |req: CloseStdinRequest| async move {
                e.processes.find(req.process.as_ref())?.close_stdin().await?;
                Ok(CloseStdinResponse {})
            })
            .await
        }
        "StreamInput" => stream_input(e, call).await,
        other => connect::no_such_method("process.Process", other),
    }
}

fn start_response(event: Event) -> StartResponse {
    StartResponse { event: Some(ProcessEvent { event: Some(event) }) }
}

fn connect_response(event: Event) -> ConnectResponse {
    ConnectResponse { event: Some(ProcessEvent { event: Some(event) }) }
}

/// The start event the SDKs wait for, then the process's events.
fn events_stream(
    handle: &Handle,
    events: tokio::sync::mpsc::Receiver<ProcessEvent>,
) -> impl Stream<Item = Result<ProcessEvent>> + Send + 'static {
    let start = ProcessEvent { event: Some(Event::Start(StartEvent { pid: handle.pid })) };
    futures::stream::once(async move { start }).chain(ReceiverStream::new(events)).map(Ok)
}

async fn send_input(handle: &Handle, input: Option<ProcessInput>) -> Result<()> {
    match input.and_then(|i| i.input) {
        Some(Input::Stdin(data)) => handle.write_input(data, false).await,
        Some(Input::Pty(data)) => handle.write_input(data, true).await,
        None => Err(Error::InvalidArgument("input (stdin or pty) is required".into())),
    }
}

/// Client streaming: a start message naming the process, then input.
async fn stream_input(envd: Arc<Envd>, call: Call) -> Response {
    let codec = call.codec;
    let mut messages = std::pin::pin!(call.messages::<StreamInputRequest>());
    let mut target: Option<Arc<Handle>> = None;
    let result: Result<(), ConnectError> = async {
        while let Some(msg) = messages.next().await {
            match msg?.event {
                Some(stream_input_request::Event::Start(start)) => {
                    target = Some(envd.processes.find(start.process.as_ref())?);
                }
                Some(stream_input_request::Event::Data(data)) => {
                    let handle = target.as_ref().ok_or_else(|| {
                        ConnectError::new(Code::FailedPrecondition, "send a start event naming the process first")
                    })?;
                    send_input(handle, data.input).await?;
                }
                Some(stream_input_request::Event::Keepalive(_)) | None => {}
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => connect::stream_response(
            codec,
            None,
            None,
            || StreamInputResponse {},
            futures::stream::once(async { Ok(StreamInputResponse {}) }),
        ),
        Err(err) => connect::stream_error(codec, err),
    }
}
