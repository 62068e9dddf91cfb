//! Waiting for a Deno cell's last output.
//!
//! Deno's kernel publishes `status: idle` itself, but a cell's output
//! (`stream`, `display_data`, and the `execute_result` of its value) travels
//! from the REPL thread through a channel to a drainer task that publishes
//! it later: in host runs 4–17 % of cells had output *after* their idle
//! (0.1–1.3 ms late). Ending the run at idle loses that output, and the
//! drainer stamps each message with the parent of the execution current when
//! it publishes, so late output can even be attributed to the next request.
//!
//! The channel is FIFO and the drainer publishes in order, so after the cell
//! a silent execution broadcasts a marker through the same channel: once the
//! marker is on iopub, everything the cell produced is too (stamped with the
//! cell's or the marker request's parent, both routed to the run).

use super::channels::{read_reply, Channels};
use super::Kernel;
use crate::error::{Error, Result};
use crate::ndjson::{map_iopub, OutputLine};
use jupyter_protocol::{JupyterMessage, JupyterMessageContent, MediaType};
use jupyter_zmq_client::ClientShellConnection;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

/// The marker's mime type; never shown to the user.
const MARKER_MIME: &str = "application/x.arbor-flush";
/// How long to wait for the marker. A kernel whose marker does not come
/// back in time (an older or changed Deno) is not flushed again.
const MARKER_LIMIT: Duration = Duration::from_secs(2);

impl Kernel {
    /// Forwards the cell's late output to `tx` until the marker shows up.
    /// `route` is the run's iopub route, `iopub` its receiving end.
    pub(super) async fn flush_deno(
        &self,
        ch: &Channels,
        shell: &mut ClientShellConnection,
        route: mpsc::UnboundedSender<JupyterMessage>,
        iopub: &mut mpsc::UnboundedReceiver<JupyterMessage>,
        tx: &mpsc::Sender<OutputLine>,
    ) -> Result<()> {
        if !self.flushable.load(Ordering::Relaxed) {
            return Ok(());
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let code = format!(
            "Deno.jupyter.broadcast(\"display_data\", {{ data: {{ \"{MARKER_MIME}\": \"{token}\" }}, metadata: {{}}, transient: {{}} }})"
        );
        let request: JupyterMessage = super::run::silent_request(code).into();
        let marker_id = request.header.msg_id.clone();
        let _unroute = super::run::Unroute::add(ch, &marker_id, route)?;
        shell.send(request).await?;

        let forward = async {
            while let Some(msg) = iopub.recv().await {
                match marker_token(&msg.content) {
                    Some(t) if t == token => return true,
                    // A marker of an earlier run that gave up waiting.
                    Some(_) => continue,
                    None => {}
                }
                let of_marker = msg.parent_header.as_ref().is_some_and(|h| h.msg_id == marker_id);
                // Of the marker request's own messages only late cell output
                // counts (not its execute_input, status or errors).
                if of_marker && !is_output(&msg.content) {
                    continue;
                }
                if let Some(line) = map_iopub(&msg.content, &msg.header.date.to_rfc3339(), true) {
                    if tx.send(line).await.is_err() {
                        return true;
                    }
                }
            }
            false
        };
        match tokio::time::timeout(MARKER_LIMIT, forward).await {
            Ok(true) => {}
            Ok(false) => return Err(Error::KernelDied("iopub reader stopped".into())),
            Err(_) => {
                tracing::warn!("Deno output marker did not arrive; not waiting for late output on this kernel");
                self.flushable.store(false, Ordering::Relaxed);
            }
        }
        tokio::time::timeout(MARKER_LIMIT, read_reply(shell, &marker_id))
            .await
            .map_err(|_| Error::Timeout("Deno output marker reply".into()))??;
        Ok(())
    }
}

/// The token of a marker message, if `content` is one.
fn marker_token(content: &JupyterMessageContent) -> Option<&str> {
    let JupyterMessageContent::DisplayData(display) = content else { return None };
    display.data.content.iter().find_map(|m| match m {
        MediaType::Other((mime, serde_json::Value::String(t))) if mime == MARKER_MIME => Some(t.as_str()),
        _ => None,
    })
}

/// Output that the REPL thread sends through the drainer (and so can be late).
fn is_output(content: &JupyterMessageContent) -> bool {
    matches!(
        content,
        JupyterMessageContent::StreamContent(_)
            | JupyterMessageContent::DisplayData(_)
            | JupyterMessageContent::ExecuteResult(_)
    )
}
