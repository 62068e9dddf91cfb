//! The wire types of the REST API, named and shaped as the official SDKs
//! read and write them (protocol notes §3.2–§3.3): camelCase, except
//! `allow_internet_access`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `POST /sandboxes` (and `POST /v2/sandboxes`, the `e2b` SDK's form, whose
/// other fields are ignored).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    /// Template name or id (`base` when absent).
    #[serde(rename = "templateID", default)]
    pub template_id: Option<String>,
    /// Lifetime in seconds (default 300).
    pub timeout: Option<i64>,
    /// Free-form labels, filterable in list.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Environment variables of every process in the sandbox.
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Whether envd requires the access token (always issued here).
    pub secure: Option<bool>,
    /// Egress to the internet.
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    /// Pause instead of kill at the timeout.
    pub auto_pause: Option<bool>,
    /// Resume a paused sandbox on any request to it.
    pub auto_resume: Option<AutoResume>,
    /// The `e2b` SDK's auto-pause mode: `true` (or absent) keeps memory;
    /// `false` (files only) is refused.
    pub auto_pause_memory: Option<bool>,
    /// Egress allow/deny lists and public traffic.
    pub network: Option<NetworkConfig>,
    /// vCPU override (an Arbor extension; the template's default otherwise).
    pub cpu_count: Option<u32>,
    /// Memory override in MiB (an Arbor extension).
    #[serde(rename = "memoryMB")]
    pub memory_mb: Option<u64>,
}

/// `autoResume` of a new sandbox.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct AutoResume {
    /// On or off.
    #[serde(default)]
    pub enabled: bool,
}

/// A sandbox's network options.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    /// CIDRs reachable even without internet access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    /// CIDRs never reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// Whether the sandbox's ports are public without the traffic token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_public_traffic: Option<bool>,
    /// Host header rewrite for proxied traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
}

/// `POST /sandboxes/{id}/connect` (and `/v2/...`, `/resume`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectSandbox {
    /// Seconds from now the sandbox should live at least.
    pub timeout: Option<i64>,
    /// The `e2b` SDK's `on_resume`: `true` (or absent) restores memory;
    /// `false` (a cold boot) is refused.
    pub memory: Option<bool>,
}

/// `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SetTimeout {
    /// Seconds from now.
    pub timeout: i64,
}

/// The answer to create and connect.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    /// Sandbox id.
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// Template it started from.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Constant; legacy SDKs append it to ids.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// envd's version (unlocks SDK features).
    pub envd_version: String,
    /// Token for envd (`X-Access-Token`).
    pub envd_access_token: String,
    /// Token for public ports (`E2B-Traffic-Access-Token`).
    pub traffic_access_token: Option<String>,
    /// Domain of the sandbox's public URLs.
    pub domain: Option<String>,
    /// Template alias.
    pub alias: Option<String>,
}

/// `GET /sandboxes/{id}` and the items of the lists.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    /// Sandbox id.
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// Template it started from.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Constant.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// The team the sandbox belongs to.
    #[serde(rename = "teamID")]
    pub team_id: String,
    /// Template alias.
    pub alias: Option<String>,
    /// envd's version.
    pub envd_version: String,
    /// vCPUs.
    pub cpu_count: u32,
    /// Memory in MiB.
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    /// Disk in MiB.
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// Deadline (RFC 3339).
    pub end_at: String,
    /// `running` or `paused`.
    pub state: String,
    /// Labels.
    pub metadata: BTreeMap<String, String>,
    /// Token for envd (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    /// Domain of public URLs (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Egress to the internet (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    /// Network options (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
    /// What the timeout does (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// `lifecycle` of a sandbox detail.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// Whether requests resume it when paused.
    pub auto_resume: bool,
    /// `kill` or `pause`.
    pub on_timeout: String,
}

/// One metrics sample (both the SDKs' byte fields and the MiB ones of the docs).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMetric {
    /// vCPUs.
    pub cpu_count: u32,
    /// CPU use in percent of the sandbox's vCPUs.
    pub cpu_used_pct: f64,
    /// Memory limit in bytes.
    pub mem_total: u64,
    /// Memory in use in bytes.
    pub mem_used: u64,
    /// Memory limit in MiB.
    #[serde(rename = "memTotalMiB")]
    pub mem_total_mib: u64,
    /// Memory in use in MiB.
    #[serde(rename = "memUsedMiB")]
    pub mem_used_mib: u64,
    /// Disk limit in bytes.
    pub disk_total: u64,
    /// Disk in use in bytes.
    pub disk_used: u64,
    /// When (RFC 3339).
    pub timestamp: String,
    /// When (unix seconds).
    pub timestamp_unix: i64,
}

/// `GET /sandboxes/quota`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Quota {
    /// What may run at once.
    pub limit: QuotaLimit,
    /// What runs now.
    pub usage: QuotaUsage,
}

/// Limits of a quota.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaLimit {
    /// Sandboxes at once.
    pub concurrent_instances: u64,
    /// vCPUs at once.
    pub concurrent_vcpu: u64,
    /// Memory at once in MiB.
    pub concurrent_ram_mb: u64,
    /// Longest lifetime in hours.
    pub max_length_hours: u64,
    /// Disk per sandbox in MiB.
    pub disk_mb: u64,
    /// vCPUs per sandbox.
    pub max_vcpu: u64,
    /// Memory per sandbox in MiB.
    pub max_ram_mb: u64,
}

/// Usage of a quota.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    /// Sandboxes running.
    pub concurrent_instances: u64,
    /// vCPUs of running sandboxes.
    pub concurrent_vcpu: u64,
    /// Memory of running sandboxes in MiB.
    pub concurrent_ram_mb: u64,
}

/// Every error body: what the SDKs parse.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status.
    pub code: u16,
    /// What went wrong.
    pub message: String,
}

/// `POST /sandboxes/{id}/clone`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CloneRequest {
    /// How many clones (1 up to the free sandbox quota; default 1).
    pub count: Option<u64>,
    /// All or nothing.
    #[serde(default)]
    pub strict: bool,
    /// Lifetime of the clones in seconds (default: the origin's remaining
    /// time if it runs, 300 if it is paused).
    pub timeout: Option<i64>,
}

/// One clone in a clone answer. No `clientID`: the JS SDK would append it
/// to the id.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClonedSandbox {
    /// Sandbox id.
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// Template of the origin.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// envd's version.
    pub envd_version: String,
    /// Token for envd.
    pub envd_access_token: String,
    /// Token for public ports.
    pub traffic_access_token: Option<String>,
    /// Domain of public URLs.
    pub domain: Option<String>,
}

/// The answer to a clone.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneResponse {
    /// The new sandboxes, running.
    pub sandboxes: Vec<ClonedSandbox>,
    /// How many.
    pub count: usize,
    /// The snapshot they were made from; deletable once the origin and every
    /// clone are gone.
    pub snapshot_template_id: String,
}

/// `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct NewSnapshot {
    /// A name to list it by (default: its id).
    pub name: Option<String>,
    /// The `e2b` SDK's mode: `true` (or absent) keeps memory; `false`
    /// (files only) is refused.
    pub memory: Option<bool>,
}

/// `POST /sandboxes/{id}/fork` (the `e2b` SDK).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ForkRequest {
    /// How many (default 1).
    pub count: Option<u64>,
    /// Lifetime of the forks in seconds.
    pub timeout: Option<i64>,
}

/// One fork's outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ForkResult {
    /// The running fork.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// Why it did not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// A snapshot, as create and list answer it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SnapshotInfo {
    /// Usable as `templateID` of create.
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// Its names.
    pub names: Vec<String>,
}
