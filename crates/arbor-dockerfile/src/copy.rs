//! COPY and ADD: flags, sources (files of the context or heredocs) and the
//! destination resolved against WORKDIR.

use crate::error::{Error, Result};
use crate::lexer::{Heredoc, RawInstruction};
use crate::plan::{resolve_path, Eval, StepKind};
use crate::words::{expand_vars, quote};

/// A parsed COPY/ADD instruction.
#[derive(Debug)]
pub(crate) struct CopyArgs {
    chown: String,
    chmod: String,
    sources: Vec<String>,
    dest: String,
}

/// Archive suffixes that ADD would unpack.
const ARCHIVES: [&str; 11] =
    [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar.lz"];

impl CopyArgs {
    pub(crate) fn parse(ev: &Eval<'_>, ins: &RawInstruction) -> Result<Self> {
        let (line, kw) = (ins.line, ins.keyword.as_str());
        let mut words = if ins.rest.starts_with('[') {
            match serde_json::from_str::<Vec<String>>(&ins.rest) {
                Ok(items) => items
                    .iter()
                    .map(|w| expand_vars(w, ev.escape, &ev.vars()).map_err(|e| Error::line(line, e)))
                    .collect::<Result<Vec<_>>>()?,
                Err(_) => ev.words(line, &ins.rest)?,
            }
        } else {
            ev.words(line, &ins.rest)?
        };
        let (mut chown, mut chmod) = (String::new(), String::new());
        while words.first().is_some_and(|w| w.starts_with("--")) {
            let flag = words.remove(0);
            let (name, value) = flag.split_once('=').unwrap_or((flag.as_str(), ""));
            match name {
                "--chown" if !value.is_empty() => chown = value.to_string(),
                "--chmod" if is_octal_mode(value) => chmod = value.to_string(),
                "--chmod" => {
                    return Err(Error::line(
                        line,
                        format!("{kw} --chmod={value}: only octal modes (e.g. 755) are supported"),
                    ))
                }
                "--link" => {}
                "--from" => {
                    let msg = format!("{kw} --from is not supported: multi-stage builds are not supported");
                    return Err(Error::line(line, msg));
                }
                _ => return Err(Error::line(line, format!("{kw} {name} is not supported"))),
            }
        }
        if words.len() < 2 {
            return Err(Error::line(line, format!("{kw} requires at least two arguments: source(s) and destination")));
        }
        let dest = words.pop().unwrap_or_default();
        if words.len() > 1 && !dest.ends_with('/') {
            let msg = format!("{kw} with more than one source needs a destination directory ending in /");
            return Err(Error::line(line, msg));
        }
        Ok(Self { chown, chmod, sources: words, dest })
    }

    /// Adds the steps: one COPY per context source, one RUN (as root) per
    /// heredoc source that writes its file.
    pub(crate) fn apply(self, ev: &mut Eval<'_>, ins: &RawInstruction) -> Result<()> {
        let (line, kw) = (ins.line, ins.keyword.as_str());
        let dir_dest = self.dest.ends_with('/') || self.dest == "." || self.dest.ends_with("/.");
        let mut dest = resolve_path(&ev.workdir, &self.dest);
        if dir_dest && !dest.ends_with('/') {
            dest.push('/');
        }
        for src in &self.sources {
            if let Some(doc) = heredoc_source(src, &ins.heredocs) {
                let path = if dest.ends_with('/') { format!("{dest}{}", doc.name) } else { dest.clone() };
                let body = if doc.expand {
                    expand_vars(&doc.body, ev.escape, &ev.vars()).map_err(|e| Error::line(line, e))?
                } else {
                    doc.body.clone()
                };
                let cmd = self.write_file(&path, &body);
                ev.step(StepKind::Run, vec![cmd, "root".into()], line);
                continue;
            }
            if src.starts_with("<<") {
                return Err(Error::line(line, format!("{kw} source {src}: no such heredoc")));
            }
            if kw == "ADD" {
                check_add_source(src).map_err(|e| Error::line(line, e))?;
            }
            let args = vec![src.clone(), dest.clone(), self.chown.clone(), self.chmod.clone()];
            ev.step(StepKind::Copy, args, line);
        }
        Ok(())
    }

    /// A shell command that writes `body` to `path` with COPY's owner and mode.
    fn write_file(&self, path: &str, body: &str) -> String {
        let parent = match path.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &path[..i],
        };
        let mode = if self.chmod.is_empty() { "644" } else { &self.chmod };
        let mut cmd = format!(
            "mkdir -p {} && printf %s {} > {p} && chmod {mode} {p}",
            quote(parent),
            quote(body),
            p = quote(path)
        );
        if !self.chown.is_empty() {
            cmd.push_str(&format!(" && chown {} {}", quote(&self.chown), quote(path)));
        }
        cmd
    }
}

fn is_octal_mode(v: &str) -> bool {
    (3..=4).contains(&v.len()) && v.bytes().all(|b| (b'0'..=b'7').contains(&b))
}

/// The heredoc a source word such as `<<EOF` or `<<-"EOF"` names.
fn heredoc_source<'h>(src: &str, docs: &'h [Heredoc]) -> Option<&'h Heredoc> {
    let name = src.strip_prefix("<<")?;
    let name = name.strip_prefix('-').unwrap_or(name).trim_matches(['"', '\'']);
    docs.iter().find(|d| d.name == name)
}

/// ADD of a URL or an archive does more than COPY; Arbor refuses both
/// rather than copy such a file as it is.
fn check_add_source(src: &str) -> std::result::Result<(), String> {
    if src.contains("://") || src.starts_with("git@") {
        return Err(format!("ADD from a URL ({src}) is not supported: download it in a RUN step"));
    }
    let lower = src.to_ascii_lowercase();
    if let Some(ext) = ARCHIVES.iter().find(|ext| lower.ends_with(*ext)) {
        return Err(format!(
            "ADD of a local archive ({src}) would unpack it, which Arbor does not do: COPY it and unpack it with RUN tar (*{ext})"
        ));
    }
    Ok(())
}
