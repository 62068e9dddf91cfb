//! Where the CLI finds the server and its key.
//!
//! Precedence, highest first: `--api-url`/`--api-key` flags, the
//! `ARBOR_API_URL`/`ARBOR_API_KEY` environment variables, the config file
//! (`$XDG_CONFIG_HOME/arbor/config.toml`, else `~/.config/arbor/config.toml`,
//! or `--config FILE` / `ARBOR_CONFIG`), then the default URL.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The API URL used when nothing else is configured: `arbor server`'s default listen address.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:3000";

/// Contents of `config.toml`. Unknown keys are rejected so a typo is noticed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Base URL of the Arbor REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// API key sent as `X-API-KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// Values given on the command line; `None` when the flag is absent.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--api-url`.
    pub api_url: Option<String>,
    /// `--api-key`.
    pub api_key: Option<String>,
}

/// Where a setting's value came from, for `arbor config show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An `ARBOR_*` environment variable.
    Env,
    /// The config file.
    File,
    /// The built-in default.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "config file",
            Source::Default => "default",
        })
    }
}

/// The effective connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Base URL of the REST API (and of the envd proxy), without a trailing slash.
    pub api_url: String,
    /// Where `api_url` came from.
    pub api_url_source: Source,
    /// API key, if any.
    pub api_key: Option<String>,
    /// Where `api_key` came from (`Default` = none set).
    pub api_key_source: Source,
}

/// Applies the precedence rules. `env` looks up an environment variable;
/// empty values count as unset, so `ARBOR_API_KEY= arbor ...` falls back.
pub fn resolve(file: &FileConfig, env: &dyn Fn(&str) -> Option<String>, flags: &Overrides) -> Settings {
    let pick = |flag: &Option<String>, var: &str, from_file: &Option<String>| -> Option<(String, Source)> {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        set(flag)
            .map(|v| (v, Source::Flag))
            .or_else(|| set(&env(var)).map(|v| (v, Source::Env)))
            .or_else(|| set(from_file).map(|v| (v, Source::File)))
    };
    let (api_url, api_url_source) = pick(&flags.api_url, "ARBOR_API_URL", &file.api_url)
        .unwrap_or_else(|| (DEFAULT_API_URL.to_string(), Source::Default));
    let (api_key, api_key_source) = match pick(&flags.api_key, "ARBOR_API_KEY", &file.api_key) {
        Some((k, s)) => (Some(k), s),
        None => (None, Source::Default),
    };
    Settings { api_url: api_url.trim_end_matches('/').to_string(), api_url_source, api_key, api_key_source }
}

/// The config file path: `explicit` if given, else under `$XDG_CONFIG_HOME`
/// or `$HOME/.config`. `None` when neither variable is set.
pub fn config_path(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let base = env("XDG_CONFIG_HOME")
        .filter(|s| s.starts_with('/'))
        .map(PathBuf::from)
        .or_else(|| env("HOME").filter(|s| !s.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("arbor").join("config.toml"))
}

/// Reads the config file; a missing file is an empty config.
pub fn load(path: &Path) -> Result<FileConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(e) => return Err(Error::Config { path: path.to_path_buf(), reason: e.to_string() }),
    };
    toml::from_str(&text).map_err(|e| Error::Config { path: path.to_path_buf(), reason: e.message().to_string() })
}

/// Writes the config file with mode 0600 (it holds a secret), creating its directory.
pub fn save(path: &Path, config: &FileConfig) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| Error::Config { path: path.to_path_buf(), reason: e.to_string() };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let text =
        toml::to_string(config).map_err(|e| Error::Config { path: path.to_path_buf(), reason: e.to_string() })?;
    // Write a sibling and rename, so a crash never leaves half a file.
    let tmp = path.with_extension("toml.tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Shows the first and last 4 characters of a key, or only stars when it is short.
pub fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 12 {
        return "*".repeat(chars.len().max(4));
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn flags_beat_env_beat_file_beat_default() {
        let file = FileConfig { api_url: Some("http://file:1/".into()), api_key: Some("file-key".into()) };
        let env = env_of(&[("ARBOR_API_URL", "http://env:2"), ("ARBOR_API_KEY", "env-key")]);
        let flags = Overrides { api_url: Some("http://flag:3".into()), api_key: Some("flag-key".into()) };

        let s = resolve(&file, &env, &flags);
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://flag:3", Some("flag-key")));
        assert_eq!((s.api_url_source, s.api_key_source), (Source::Flag, Source::Flag));

        let s = resolve(&file, &env, &Overrides::default());
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://env:2", Some("env-key")));
        assert_eq!(s.api_url_source, Source::Env);

        let s = resolve(&file, &env_of(&[("ARBOR_API_KEY", "")]), &Overrides::default());
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://file:1", Some("file-key")));
        assert_eq!(s.api_key_source, Source::File);

        let s = resolve(&FileConfig::default(), &env_of(&[]), &Overrides::default());
        assert_eq!((s.api_url.as_str(), s.api_key), (DEFAULT_API_URL, None));
        assert_eq!((s.api_url_source, s.api_key_source), (Source::Default, Source::Default));
    }

    #[test]
    fn path_prefers_explicit_then_xdg_then_home() {
        let explicit = Path::new("/tmp/x.toml");
        assert_eq!(config_path(Some(explicit), &env_of(&[])), Some(explicit.to_path_buf()));
        let env = env_of(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/home/u")]);
        assert_eq!(config_path(None, &env), Some(PathBuf::from("/xdg/arbor/config.toml")));
        let env = env_of(&[("XDG_CONFIG_HOME", "relative"), ("HOME", "/home/u")]);
        assert_eq!(config_path(None, &env), Some(PathBuf::from("/home/u/.config/arbor/config.toml")));
        assert_eq!(config_path(None, &env_of(&[])), None);
    }

    #[test]
    fn save_then_load_round_trips_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/config.toml");
        assert_eq!(load(&path).unwrap(), FileConfig::default());
        let cfg = FileConfig { api_url: Some("http://127.0.0.1:9".into()), api_key: Some("k".into()) };
        save(&path, &cfg).unwrap();
        assert_eq!(load(&path).unwrap(), cfg);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, "api_kee = \"x\"\n").unwrap();
        assert!(matches!(load(&path), Err(Error::Config { .. })));
    }

    #[test]
    fn masks_keys() {
        assert_eq!(mask("arbor_0123456789abcdef"), "arbo…cdef");
        assert_eq!(mask("short"), "*****");
        assert_eq!(mask(""), "****");
    }
}
