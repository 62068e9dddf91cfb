//! Templates as a node sees them: layers on its disk plus start defaults.

use crate::error::{Error, Result};
use arbor_layers::{LayerStore, RefManifest};
use std::{collections::BTreeMap, path::PathBuf};

/// vCPUs when a template names none.
pub const DEFAULT_CPU_COUNT: u32 = 2;
/// Memory when a template names none.
pub const DEFAULT_MEMORY_MB: u64 = 512;
/// Disk when a template names none.
pub const DEFAULT_DISK_MB: u64 = 10 * 1024;

/// The label holding a template's environment variables (a JSON object).
pub const ENV_LABEL: &str = "env";
/// The label holding a built-in template's start command: its sandboxes
/// start from a memory snapshot with the command already running.
pub const START_LABEL: &str = "start_cmd";
/// The label holding the command that exits 0 once the start command is ready.
pub const READY_LABEL: &str = "ready_cmd";
/// The working directory envd uses when a template names none.
const DEFAULT_WORKDIR: &str = "/home/user";

/// A template ready to start sandboxes from.
#[derive(Debug, Clone)]
pub struct Template {
    /// Its name (`base`, ...).
    pub name: String,
    /// Its layers, top first (overlayfs `lowerdir` order).
    pub layers: Vec<PathBuf>,
    /// The user commands run as by default.
    pub default_user: String,
    /// The working directory of commands that name none (`None`: the
    /// user's home, envd's own default).
    pub default_workdir: Option<String>,
    /// Environment variables every process gets (a create's own override them).
    pub env: BTreeMap<String, String>,
    /// Default vCPUs.
    pub cpu_count: u32,
    /// Default memory in MiB.
    pub memory_mb: u64,
    /// Default disk in MiB.
    pub disk_mb: u64,
    /// A command its sandboxes start with already running (see [`START_LABEL`]).
    pub start_cmd: Option<String>,
    /// Exits 0 once `start_cmd` is ready (see [`READY_LABEL`]).
    pub ready_cmd: Option<String>,
}

/// The layer-store reference naming template `name`.
pub(crate) fn reference(name: &str) -> String {
    format!("templates/{name}")
}

/// The stored reference of template `name` (`templates/<name>`).
pub fn manifest(store: &LayerStore, name: &str) -> Result<RefManifest> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if !valid {
        return Err(Error::TemplateNotFound(name.to_string()));
    }
    match store.get_ref(&reference(name)) {
        Ok(m) => Ok(m),
        Err(arbor_layers::Error::RefNotFound(_)) => Err(Error::TemplateNotFound(name.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Reads template `name` from the store's `templates/<name>` reference.
pub fn load(store: &LayerStore, name: &str) -> Result<Template> {
    from_manifest(store, name, &manifest(store, name)?)
}

/// The environment template `name` (with reference `m`) gives its sandboxes.
pub fn env(name: &str, m: &RefManifest) -> Result<BTreeMap<String, String>> {
    match m.labels.get(ENV_LABEL) {
        None => Ok(BTreeMap::new()),
        Some(v) => serde_json::from_str(v).map_err(|e| Error::BadTemplate {
            name: name.to_string(),
            reason: format!("label {ENV_LABEL} is not a JSON object of strings: {e}"),
        }),
    }
}

fn from_manifest(store: &LayerStore, name: &str, m: &RefManifest) -> Result<Template> {
    let layers = store.lower_dirs(&m.layers)?;
    let label = |key: &str, default: u64| -> Result<u64> {
        match m.labels.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Error::BadTemplate {
                name: name.to_string(),
                reason: format!("label {key}={v:?} is not a number"),
            }),
        }
    };
    let cpu_count = u32::try_from(label("cpu_count", u64::from(DEFAULT_CPU_COUNT))?)
        .map_err(|_| Error::BadTemplate { name: name.to_string(), reason: "cpu_count out of range".into() })?;
    let env = env(name, m)?;
    let workdir = &m.envd.default_workdir;
    Ok(Template {
        name: name.to_string(),
        layers,
        default_user: m.envd.default_user.clone(),
        default_workdir: (!workdir.is_empty() && workdir != DEFAULT_WORKDIR).then(|| workdir.clone()),
        env,
        cpu_count,
        memory_mb: label("memory_mb", DEFAULT_MEMORY_MB)?,
        disk_mb: label("disk_mb", DEFAULT_DISK_MB)?,
        start_cmd: m.labels.get(START_LABEL).filter(|c| !c.trim().is_empty()).cloned(),
        ready_cmd: m.labels.get(READY_LABEL).filter(|c| !c.trim().is_empty()).cloned(),
    })
}
