//! One running process: its identity, its input, and the listeners its
//! output fans out to.

use super::pty::PtyMaster;
use crate::error::{Error, Result};
use arbor_proto::process::{
    process_event::{data_event::Output, DataEvent, EndEvent, Event},
    ProcessConfig, ProcessEvent, ProcessInfo,
};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use tokio::{io::AsyncWriteExt, net::unix::pipe, sync::mpsc};

/// Events buffered per listener before the process's output waits for it,
/// as a pipe would.
pub const LISTENER_BUFFER: usize = 64;

/// Where input for the process goes.
#[derive(Debug)]
enum Input {
    Pipe(pipe::Sender),
    Pty(Arc<PtyMaster>),
}

#[derive(Debug, Default)]
struct Listeners {
    senders: Vec<mpsc::Sender<ProcessEvent>>,
    ended: bool,
}

/// A process started through the process service.
#[derive(Debug)]
pub struct Handle {
    /// Its pid (and process-group id).
    pub pid: u32,
    /// The tag it was started with.
    pub tag: Option<String>,
    /// What was started.
    pub config: ProcessConfig,
    /// Its terminal, if it has one.
    pub pty: Option<Arc<PtyMaster>>,
    input: tokio::sync::Mutex<Option<Input>>,
    listeners: Mutex<Listeners>,
}

impl Handle {
    /// A handle with envd's ends of the child's input.
    pub fn new(
        pid: u32,
        tag: Option<String>,
        config: ProcessConfig,
        stdin: Option<pipe::Sender>,
        pty: Option<Arc<PtyMaster>>,
    ) -> Self {
        let input = match (&pty, stdin) {
            (Some(p), _) => Some(Input::Pty(p.clone())),
            (None, Some(s)) => Some(Input::Pipe(s)),
            (None, None) => None,
        };
        Self { pid, tag, config, pty, input: tokio::sync::Mutex::new(input), listeners: Mutex::default() }
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, Listeners> {
        self.listeners.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The process as `List` reports it.
    pub fn info(&self) -> ProcessInfo {
        ProcessInfo { config: Some(self.config.clone()), pid: self.pid, tag: self.tag.clone() }
    }

    /// Adds a listener for the events from now on; `None` once it ended.
    pub fn subscribe(&self) -> Option<mpsc::Receiver<ProcessEvent>> {
        let mut l = self.listeners();
        if l.ended {
            return None;
        }
        let (tx, rx) = mpsc::channel(LISTENER_BUFFER);
        l.senders.push(tx);
        Some(rx)
    }

    /// Sends output to every listener, waiting for slow ones; listeners
    /// that went away are dropped.
    pub async fn publish(&self, output: Output) {
        let event = ProcessEvent { event: Some(Event::Data(DataEvent { output: Some(output) })) };
        let senders = self.listeners().senders.clone();
        let mut gone = Vec::new();
        for tx in senders {
            if tx.send(event.clone()).await.is_err() {
                gone.push(tx);
            }
        }
        if !gone.is_empty() {
            self.listeners().senders.retain(|s| !gone.iter().any(|g| g.same_channel(s)));
        }
    }

    /// Sends the end event and closes every listener.
    pub async fn finish(&self, end: EndEvent) {
        let senders = {
            let mut l = self.listeners();
            l.ended = true;
            std::mem::take(&mut l.senders)
        };
        let event = ProcessEvent { event: Some(Event::End(end)) };
        for tx in senders {
            let _ = tx.send(event.clone()).await;
        }
        *self.input.lock().await = None;
    }

    /// Writes to the process's stdin (`pty = false`) or terminal.
    pub async fn write_input(&self, data: Bytes, pty: bool) -> Result<()> {
        let mut input = self.input.lock().await;
        let res = match (input.as_mut(), pty) {
            (Some(Input::Pty(p)), true) => p.write_all(&data).await,
            (Some(Input::Pipe(s)), false) => s.write_all(&data).await,
            (Some(Input::Pty(_)), false) => {
                return Err(Error::InvalidArgument(format!(
                    "process {} has a pty: send input as `pty`, not `stdin`",
                    self.pid
                )))
            }
            (Some(Input::Pipe(_)), true) => {
                return Err(Error::InvalidArgument(format!("process {} has no pty: send input as `stdin`", self.pid)))
            }
            (None, _) => {
                return Err(Error::FailedPrecondition(format!(
                    "process {} does not accept input: it was started with stdin disabled, or stdin was closed",
                    self.pid
                )))
            }
        };
        res.map_err(|e| Error::io(format!("writing input to process {}", self.pid), e))
    }

    /// Closes stdin, so the process reads end-of-file.
    pub async fn close_stdin(&self) -> Result<()> {
        let mut input = self.input.lock().await;
        match input.as_ref() {
            Some(Input::Pipe(_)) => {
                *input = None;
                Ok(())
            }
            Some(Input::Pty(_)) => Err(Error::InvalidArgument(format!(
                "process {} has a pty; send EOT (ctrl-d) as pty input instead",
                self.pid
            ))),
            None => Err(Error::FailedPrecondition(format!("stdin of process {} is not open", self.pid))),
        }
    }
}

/// Shorthand used by the output readers.
pub fn bytes_of(buf: &[u8]) -> Bytes {
    Bytes::copy_from_slice(buf)
}
