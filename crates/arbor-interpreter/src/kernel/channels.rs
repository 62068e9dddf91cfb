//! The client side of a kernel's ZeroMQ channels: shell, control and iopub,
//! with iopub messages routed to the execution that caused them.

use crate::error::{Error, Result};
use jupyter_protocol::{ConnectionInfo, JupyterMessage, KernelInfoRequest};
use jupyter_zmq_client::{ClientControlConnection, ClientIoPubConnection, ClientShellConnection, RuntimeError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Mutex};

/// iopub messages routed by the `msg_id` of the request that caused them.
pub type Routes = Arc<StdMutex<HashMap<String, mpsc::UnboundedSender<JupyterMessage>>>>;

/// One set of client connections to a kernel.
pub struct Channels {
    /// Held for a whole execution: one context runs one cell at a time, in order.
    pub shell: Mutex<ClientShellConnection>,
    /// For `interrupt_request`.
    pub control: Mutex<ClientControlConnection>,
    /// Where the iopub reader delivers messages.
    pub routes: Routes,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The zeromq connections have no Debug.
        f.debug_struct("Channels").finish_non_exhaustive()
    }
}

impl Drop for Channels {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Channels {
    /// Connects shell, control and iopub, and waits until the iopub
    /// subscription is live (a kernel_info round-trip shows up on iopub).
    pub async fn connect(info: &ConnectionInfo) -> Result<Self> {
        let session = uuid::Uuid::new_v4().to_string();
        let mut iopub = jupyter_zmq_client::create_client_iopub_connection(info, "", &session).await?;
        let identity = jupyter_zmq_client::peer_identity_for_session(&session)?;
        let mut shell =
            jupyter_zmq_client::create_client_shell_connection_with_identity(info, &session, identity).await?;
        let control = jupyter_zmq_client::create_client_control_connection(info, &session).await?;

        // ZeroMQ's slow-joiner problem: the SUB side may miss messages published
        // before its subscription reaches the kernel. Ask for kernel_info until an
        // iopub message arrives, as Jupyter clients do.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if Instant::now() > deadline {
                return Err(Error::Timeout("no iopub traffic after kernel_info".into()));
            }
            let request: JupyterMessage = KernelInfoRequest {}.into();
            let id = request.header.msg_id.clone();
            shell.send(request).await?;
            tokio::time::timeout(Duration::from_secs(10), read_kernel_info_reply(&mut shell, &id))
                .await
                .map_err(|_| Error::Timeout("kernel_info_reply".into()))??;
            if let Ok(msg) = tokio::time::timeout(Duration::from_millis(100), iopub.read()).await {
                msg?;
                break;
            }
        }
        let routes: Routes = Arc::default();
        let reader = tokio::spawn(read_iopub(iopub, routes.clone()));
        Ok(Channels { shell: Mutex::new(shell), control: Mutex::new(control), routes, reader })
    }

    /// Whether the iopub reader has stopped (its socket died).
    pub fn reader_stopped(&self) -> bool {
        self.reader.is_finished()
    }
}

/// Reads shell messages until the reply to the request `msg_id`, skipping
/// late replies to earlier requests.
pub async fn read_reply(shell: &mut ClientShellConnection, msg_id: &str) -> Result<JupyterMessage> {
    loop {
        let msg = shell.read().await?;
        if msg.parent_header.as_ref().is_some_and(|h| h.msg_id == msg_id) {
            return Ok(msg);
        }
        tracing::debug!("skipping shell message {} for another request", msg.header.msg_type);
    }
}

/// Waits for the reply to kernel_info request `msg_id`. A reply that does
/// not decode counts: bash_kernel's lacks `language_info.version`, and only
/// its arrival matters here.
async fn read_kernel_info_reply(shell: &mut ClientShellConnection, msg_id: &str) -> Result<()> {
    loop {
        match shell.read().await {
            Ok(msg) if msg.parent_header.as_ref().is_some_and(|h| h.msg_id == msg_id) => return Ok(()),
            Ok(_) => {}
            Err(RuntimeError::ParseError { msg_type, .. }) if msg_type == "kernel_info_reply" => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads iopub forever and hands each message to the execution that caused it.
async fn read_iopub(mut iopub: ClientIoPubConnection, routes: Routes) {
    loop {
        let msg = match iopub.read().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("iopub read: {e}");
                // A malformed message is skipped; a dead socket ends the reader
                // (the senders drop, and running executions end unexpectedly).
                if matches!(e, RuntimeError::ZmqError(_)) {
                    return;
                }
                continue;
            }
        };
        let Some(parent) = msg.parent_header.as_ref().map(|h| h.msg_id.clone()) else {
            continue;
        };
        let route = routes.lock().ok().and_then(|r| r.get(&parent).cloned());
        if let Some(route) = route {
            let _ = route.send(msg);
        }
    }
}
