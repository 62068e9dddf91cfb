//! Settings of the control plane.

use std::time::Duration;

/// How the API behaves; `arbor server` fills it from flags.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The `domain` returned to SDKs for public URLs.
    pub domain: String,
    /// Lifetime when create names none.
    pub default_timeout: Duration,
    /// The longest a sandbox may live from its start; timeouts cannot pass it.
    pub max_lifetime: Duration,
    /// How often metrics are sampled.
    pub metrics_interval: Duration,
    /// How long metrics are kept after they are taken.
    pub metrics_retention: Duration,
    /// Sandboxes that may run at once.
    pub max_sandboxes: u64,
    /// The node's id in the store.
    pub node_id: String,
    /// How long a paused sandbox stays resident (frozen, its memory held)
    /// after its checkpoint is written: a resume within it is a thaw.
    pub pause_grace: Duration,
    /// How long a paused sandbox is kept before it is deleted.
    pub paused_retention: Duration,
    /// The smallest `idle_timeout` metadata value create accepts.
    pub min_idle_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            domain: "localhost".into(),
            default_timeout: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(3600),
            metrics_interval: Duration::from_secs(2),
            metrics_retention: Duration::from_secs(24 * 3600),
            max_sandboxes: 1000,
            node_id: "local".into(),
            pause_grace: Duration::from_secs(10),
            paused_retention: Duration::from_secs(30 * 24 * 3600),
            min_idle_timeout: Duration::from_secs(60),
        }
    }
}
