//! Finds the Debian mirrors this machine's apt already uses, so that a template is built from the
//! same place as the host's own packages (and no mirror host is written into the repository).
//!
//! Reads one-line `*.list` files and deb822 `*.sources` files, as apt does (other names in
//! `sources.list.d`, like `*.disabled`, are ignored by apt and so here).

use std::fs;
use std::path::Path;

/// A `deb` source line, whichever format it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
}

/// The Debian archive and its security archive, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    pub archive: String,
    pub security: Option<String>,
}

/// Debian release names and aliases: the entries from which a Debian mirror can be learnt.
const DEBIAN_SUITES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

/// Reads every source apt would read under `apt_dir` (normally `/etc/apt`).
pub fn read_sources(apt_dir: &Path) -> std::io::Result<Vec<Source>> {
    let mut out = Vec::new();
    let main = apt_dir.join("sources.list");
    if main.is_file() {
        out.extend(parse_one_line(&fs::read_to_string(&main)?));
    }
    let dir = apt_dir.join("sources.list.d");
    if dir.is_dir() {
        let mut files: Vec<_> = fs::read_dir(&dir)?.collect::<Result<Vec<_>, _>>()?;
        files.sort_by_key(|e| e.file_name());
        for entry in files {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".list") {
                out.extend(parse_one_line(&fs::read_to_string(entry.path())?));
            } else if name.ends_with(".sources") {
                out.extend(parse_deb822(&fs::read_to_string(entry.path())?));
            }
        }
    }
    Ok(out)
}

/// `deb [options] URI SUITE COMPONENT...` lines; `deb-src` and comments skipped.
fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ").or_else(|| line.strip_prefix("deb\t")) else { continue };
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            let Some(end) = rest.find(']') else { continue };
            rest = &rest[end + 1..];
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            let components = words.map(str::to_owned).collect();
            out.push(Source { uri: uri.to_owned(), suite: suite.to_owned(), components });
        }
    }
    out
}

/// deb822 stanzas: `Types`, `URIs`, `Suites` and `Enabled` matter here; continuation lines (which
/// start with white space, e.g. an inline `Signed-By` key) belong to the field before them.
fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in stanzas(text) {
        let field = |name: &str| {
            stanza.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).unwrap_or("")
        };
        if field("Enabled").trim().eq_ignore_ascii_case("no") {
            continue;
        }
        if !field("Types").split_whitespace().any(|t| t == "deb") {
            continue;
        }
        let components: Vec<String> = field("Components").split_whitespace().map(str::to_owned).collect();
        for uri in field("URIs").split_whitespace() {
            for suite in field("Suites").split_whitespace() {
                out.push(Source { uri: uri.to_owned(), suite: suite.to_owned(), components: components.clone() });
            }
        }
    }
    out
}

fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut all = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !cur.is_empty() {
                all.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    if !cur.is_empty() {
        all.push(cur);
    }
    all
}

/// Suffixes of Debian's own suites (`bookworm-updates`, ...); the security archive's are last.
const ARCHIVE_SUFFIXES: &[&str] = &["", "-updates", "-backports", "-proposed-updates"];
const SECURITY_SUFFIXES: &[&str] = &["-security", "/updates"];

/// Whether a suite is one of Debian's, and if so whether it is a security suite.
fn classify(suite: &str) -> Option<bool> {
    let split = suite.find(['-', '/']).unwrap_or(suite.len());
    let (base, suffix) = suite.split_at(split);
    if !DEBIAN_SUITES.contains(&base) {
        return None;
    }
    if ARCHIVE_SUFFIXES.contains(&suffix) {
        Some(false)
    } else if SECURITY_SUFFIXES.contains(&suffix) {
        Some(true)
    } else {
        None
    }
}

/// Picks the first Debian archive and the first Debian security archive among `sources`: a source
/// with a Debian suite name and a `main` component (third-party repositories that reuse the suite
/// name, as some vendors do, name their components otherwise).
pub fn debian_mirrors(sources: &[Source]) -> Option<Mirrors> {
    let mut archive = None;
    let mut security = None;
    for s in sources {
        if !(s.uri.starts_with("http://") || s.uri.starts_with("https://") || s.uri.starts_with("file:")) {
            continue;
        }
        if !s.components.iter().any(|c| c == "main") {
            continue;
        }
        let Some(is_security) = classify(&s.suite) else { continue };
        let slot = if is_security { &mut security } else { &mut archive };
        slot.get_or_insert_with(|| s.uri.trim_end_matches('/').to_owned());
    }
    Some(Mirrors { archive: archive?, security })
}

/// The sources.list a `suite` root filesystem is built from (and keeps, for `apt-get update`).
pub fn render(m: &Mirrors, suite: &str) -> String {
    let mut out = format!("deb {0} {suite} main\ndeb {0} {suite}-updates main\n", m.archive);
    if let Some(sec) = &m.security {
        out.push_str(&format!("deb {sec} {suite}-security main\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "\
Types: deb deb-src
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
URIs: http://mirror.example/debian-security/
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://other.example/debian
Suites: bookworm
";

    #[test]
    fn deb822_stanzas_and_disabled_ones() {
        let got = parse_deb822(DEB822);
        let uris: Vec<_> = got.iter().map(|s| (s.uri.as_str(), s.suite.as_str())).collect();
        assert_eq!(
            uris,
            [
                ("http://mirror.example/debian", "bookworm"),
                ("http://mirror.example/debian", "bookworm-updates"),
                ("http://mirror.example/debian-security/", "bookworm-security"),
            ]
        );
        let m = debian_mirrors(&got).unwrap();
        assert_eq!(m.archive, "http://mirror.example/debian");
        assert_eq!(m.security.as_deref(), Some("http://mirror.example/debian-security"));
        assert_eq!(
            render(&m, "bookworm"),
            "deb http://mirror.example/debian bookworm main\n\
             deb http://mirror.example/debian bookworm-updates main\n\
             deb http://mirror.example/debian-security bookworm-security main\n"
        );
    }

    #[test]
    fn one_line_format_with_options_and_foreign_repos() {
        let text = "\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] https://vendor.example/apt stable-vendor main
deb https://repo.example/ubuntu jammy main
deb https://vendor2.example/linux/debian bookworm stable
deb http://m.example/debian/ bullseye main contrib
deb http://s.example/debian-security bullseye/updates main
";
        let got = parse_one_line(text);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].uri, "https://vendor.example/apt");
        assert_eq!(got[0].suite, "stable-vendor");
        assert_eq!(got[0].components, ["main"]);
        let m = debian_mirrors(&got).unwrap();
        assert_eq!(m.archive, "http://m.example/debian");
        assert_eq!(m.security.as_deref(), Some("http://s.example/debian-security"));
    }

    #[test]
    fn no_debian_source_is_none() {
        let got = parse_one_line("deb http://repo.example/ubuntu jammy main\n");
        assert_eq!(debian_mirrors(&got), None);
    }

    #[test]
    fn reads_apt_dir_like_apt() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("sources.list.d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("debian.sources"), DEB822).unwrap();
        fs::write(d.join("x.list.disabled"), "deb http://no.example/debian bookworm main\n").unwrap();
        let got = read_sources(dir.path()).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|s| s.uri.contains("mirror.example")));
    }
}
