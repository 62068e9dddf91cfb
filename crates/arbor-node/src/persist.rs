//! Pause, resume, snapshots and clones on this node: checkpoints through
//! the runtime driver, and the envd hand-over a restored sandbox needs.

use crate::{
    error::{Error, Result},
    node::{started, Node, StartSpec, Started},
};
use arbor_runtime::{After, Checkpoint, Driver};
use http_body_util::{BodyExt, Full};
use std::{net::Ipv4Addr, time::Duration};

/// How long a restored envd gets to take its new settings.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

impl Node {
    /// Freezes sandbox `id` where it is: the first, instant half of a pause.
    pub async fn freeze(&self, id: &str) -> Result<()> {
        Ok(self.driver.freeze(id).await?)
    }

    /// Lets a frozen sandbox run on: a resume before its memory was released.
    pub async fn thaw(&self, id: &str) -> Result<()> {
        Ok(self.driver.thaw(id).await?)
    }

    /// Saves frozen sandbox `id` as checkpoint `name` and leaves it frozen
    /// and resident: the second half of a pause, after which
    /// [`Node::stop`] releases it and [`Node::restore`] brings it back.
    pub async fn checkpoint_frozen(&self, id: &str, name: &str) -> Result<Checkpoint> {
        Ok(self.driver.checkpoint(id, name, After::Frozen).await?)
    }

    /// Saves running sandbox `id` as checkpoint `name`; it runs on.
    pub async fn snapshot(&self, id: &str, name: &str) -> Result<Checkpoint> {
        Ok(self.driver.checkpoint(id, name, After::Continue).await?)
    }

    /// Copies checkpoint `from` as `to` (a snapshot of a paused sandbox).
    pub async fn copy_checkpoint(&self, from: &str, to: &str) -> Result<Checkpoint> {
        Ok(self.driver.copy_checkpoint(from, to).await?)
    }

    /// Checkpoint `name`, if complete.
    pub async fn checkpoint_info(&self, name: &str) -> Result<Checkpoint> {
        Ok(self.driver.checkpoint_info(name).await?)
    }

    /// Deletes checkpoint `name`.
    pub async fn remove_checkpoint(&self, name: &str) -> Result<()> {
        Ok(self.driver.remove_checkpoint(name).await?)
    }

    /// Copies the files saved in checkpoint `name` (what its sandbox had
    /// changed, in overlayfs upper-dir form) to `dst`, which must not exist,
    /// and returns the layers they lie on, bottom first: a template build
    /// `FROM` a snapshot starts there.
    pub async fn checkpoint_changes(&self, name: &str, dst: &std::path::Path) -> Result<Vec<arbor_layers::LayerId>> {
        let checkpoint = self.driver.checkpoint_info(name).await?;
        let mut layers = Vec::with_capacity(checkpoint.layers.len());
        for path in checkpoint.layers.iter().rev() {
            let id = path
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::Invalid(format!("checkpoint {name} lies on {}, not a layer", path.display())))?;
            layers.push(id);
        }
        self.driver.export_checkpoint_changes(name, dst).await?;
        Ok(layers)
    }

    /// Names of the checkpoints on this node.
    pub async fn checkpoints(&self) -> Result<Vec<String>> {
        Ok(self.driver.checkpoints().await?)
    }

    /// Starts sandbox `spec.id` from checkpoint `name` with its processes
    /// as saved. A sandbox restored under a new id or token (a clone, or one
    /// made from a snapshot) gets its own hostname, and envd gets the new
    /// token from `saved_token`, the one the processes were saved with.
    pub async fn restore(&self, name: &str, spec: StartSpec, saved_token: &str) -> Result<Started> {
        let checkpoint = self.driver.checkpoint_info(name).await?;
        let token = spec.access_token.clone();
        let env_vars = spec.env_vars.clone();
        let sandbox = self.sandbox_spec(spec, checkpoint.layers);
        let claim = self.claim(&sandbox)?;
        let restored = started(self.driver.restore(&sandbox, name).await?)?;
        let host_addr = restored.host_addr;
        if token != saved_token || !env_vars.is_empty() {
            let body = serde_json::json!({ "accessToken": token, "envVars": env_vars }).to_string();
            if let Err(e) = init_envd(host_addr, saved_token, body).await {
                let _ = self.driver.destroy(&sandbox.id).await;
                return Err(e);
            }
        }
        claim.keep();
        Ok(restored)
    }
}

/// `POST /init` to the envd at `addr`, authenticated with `token`.
pub(crate) async fn init_envd(addr: Ipv4Addr, token: &str, body: String) -> Result<()> {
    let fail = |e: String| Error::Invalid(format!("handing the restored envd its settings: {e}"));
    let call = async {
        let stream =
            tokio::net::TcpStream::connect((addr, arbor_proto::ENVD_PORT)).await.map_err(|e| fail(e.to_string()))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let req = http::Request::post("/init")
            .header(http::header::HOST, "envd")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("X-Access-Token", token)
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| fail(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(fail(format!("{status}: {}", String::from_utf8_lossy(&text))));
        }
        Ok(())
    };
    tokio::time::timeout(INIT_TIMEOUT, call).await.map_err(|_| fail("timed out".into()))?
}
