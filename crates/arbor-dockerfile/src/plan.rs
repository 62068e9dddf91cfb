//! From raw instructions to a build plan: the base, the steps of
//! template-api.md §3 (each with its line), the start command, warnings.
//! ARG and ENV scoping and substitution follow Docker.

use crate::copy::CopyArgs;
use crate::error::{Error, Result};
use crate::lexer::{lex, RawInstruction};
use crate::words::{expand_word, expand_words, join, quote, Vars};
use std::collections::{BTreeMap, BTreeSet};

/// What a template starts from (see docs/dockerfile.md for the rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `base`, an Arbor template (`name`, `name:version`, an id) or a snapshot id.
    Template(String),
    /// An OCI image (`debian:bookworm` is Arbor's own Debian image).
    Image(String),
}

/// The kind of a build step, as the server's API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Run a command (`[command]` or `[command, user]`).
    Run,
    /// Copy files from the context (`[src, dest, owner, mode]`).
    Copy,
    /// Set environment variables (`[k1, v1, ...]`).
    Env,
    /// Set the working directory (`[path]`).
    Workdir,
    /// Set the user (`[user]`).
    User,
}

impl StepKind {
    /// The `type` of the step in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run => "RUN",
            Self::Copy => "COPY",
            Self::Env => "ENV",
            Self::Workdir => "WORKDIR",
            Self::User => "USER",
        }
    }
}

/// One build step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub kind: StepKind,
    /// Its arguments (template-api.md §3).
    pub args: Vec<String>,
    /// The Dockerfile line it comes from.
    pub line: usize,
    /// For COPY: the hash of the copied files, once computed.
    pub files_hash: Option<String>,
}

/// The command a sandbox of the template starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartCmd {
    /// A shell command line.
    pub command: String,
    /// The line of the CMD or ENTRYPOINT it comes from (the later one).
    pub line: usize,
}

/// Something accepted but worth telling the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The line it is about, if any.
    pub line: Option<usize>,
    /// What.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "Dockerfile:{line}: warning: {}", self.message),
            None => write!(f, "Dockerfile: warning: {}", self.message),
        }
    }
}

/// A parsed Dockerfile, ready to become a build request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What it starts from.
    pub base: Base,
    /// The FROM line.
    pub base_line: usize,
    /// The steps in order.
    pub steps: Vec<Step>,
    /// From CMD/ENTRYPOINT, if there is one.
    pub start_cmd: Option<StartCmd>,
    /// Ignored instructions, unused build args...
    pub warnings: Vec<Warning>,
}

/// Inputs besides the text.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// `--build-arg NAME=VALUE` values.
    pub build_args: BTreeMap<String, String>,
}

/// The shell or exec (JSON array) form of RUN, CMD and ENTRYPOINT.
#[derive(Debug, Clone)]
pub(crate) enum Form {
    Shell(String),
    Exec(Vec<String>),
}

impl Form {
    pub(crate) fn of(rest: &str) -> Self {
        if rest.starts_with('[') {
            if let Ok(words) = serde_json::from_str::<Vec<String>>(rest) {
                return Self::Exec(words);
            }
        }
        Self::Shell(rest.to_string())
    }
}

/// Parses a Dockerfile into a [`Plan`].
pub fn parse(text: &str, opts: &ParseOptions) -> Result<Plan> {
    let lexed = lex(text)?;
    let mut ev = Eval::new(lexed.escape, &opts.build_args);
    for ins in &lexed.instructions {
        ev.instruction(ins)?;
    }
    ev.finish()
}

/// The state while walking the instructions.
pub(crate) struct Eval<'a> {
    pub(crate) escape: char,
    build_args: &'a BTreeMap<String, String>,
    used_args: BTreeSet<String>,
    /// ARGs declared before FROM (usable in FROM and as defaults after it).
    global_args: BTreeMap<String, Option<String>>,
    /// ARGs declared after FROM; `None` = declared without a value.
    args: BTreeMap<String, Option<String>>,
    env: BTreeMap<String, String>,
    pub(crate) workdir: String,
    base: Option<(Base, usize)>,
    pub(crate) steps: Vec<Step>,
    cmd: Option<(Form, usize)>,
    entrypoint: Option<(Form, usize)>,
    pub(crate) warnings: Vec<Warning>,
}

impl<'a> Eval<'a> {
    fn new(escape: char, build_args: &'a BTreeMap<String, String>) -> Self {
        Self {
            escape,
            build_args,
            used_args: BTreeSet::new(),
            global_args: BTreeMap::new(),
            args: BTreeMap::new(),
            env: BTreeMap::new(),
            workdir: "/".into(),
            base: None,
            steps: Vec::new(),
            cmd: None,
            entrypoint: None,
            warnings: Vec::new(),
        }
    }

    /// The variables substitution sees: ARGs with values, then ENVs over them.
    pub(crate) fn vars(&self) -> Vars {
        let args = if self.base.is_some() { &self.args } else { &self.global_args };
        let mut vars: Vars = args.iter().filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v))).collect();
        vars.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars
    }

    pub(crate) fn word(&self, line: usize, s: &str) -> Result<String> {
        expand_word(s, self.escape, &self.vars()).map_err(|e| Error::line(line, e))
    }

    pub(crate) fn words(&self, line: usize, s: &str) -> Result<Vec<String>> {
        expand_words(s, self.escape, &self.vars()).map_err(|e| Error::line(line, e))
    }

    pub(crate) fn step(&mut self, kind: StepKind, args: Vec<String>, line: usize) {
        self.steps.push(Step { kind, args, line, files_hash: None });
    }

    fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.warnings.push(Warning { line: Some(line), message: message.into() });
    }

    fn instruction(&mut self, ins: &RawInstruction) -> Result<()> {
        let (line, rest) = (ins.line, ins.rest.as_str());
        let kw = ins.keyword.as_str();
        if self.base.is_none() && !matches!(kw, "FROM" | "ARG") {
            return Err(Error::line(line, format!("{kw} before FROM: only ARG may come before the FROM instruction")));
        }
        if !matches!(kw, "RUN" | "COPY" | "ADD") && !ins.heredocs.is_empty() {
            return Err(Error::line(line, format!("{kw} does not take a heredoc")));
        }
        let needs_args = !matches!(kw, "CMD" | "ENTRYPOINT" | "HEALTHCHECK" | "ONBUILD" | "SHELL" | "STOPSIGNAL");
        if rest.is_empty() && needs_args && is_known(kw) {
            return Err(Error::line(line, format!("{kw} requires at least one argument")));
        }
        match kw {
            "FROM" => self.from(line, rest),
            "ARG" => self.arg(line, rest),
            "ENV" => self.env(line, rest),
            "RUN" => self.run(ins),
            "COPY" | "ADD" => CopyArgs::parse(self, ins)?.apply(self, ins),
            "WORKDIR" => {
                let dir = self.word(line, rest)?;
                self.workdir = resolve_path(&self.workdir, &dir);
                let dir = self.workdir.clone();
                self.step(StepKind::Workdir, vec![dir], line);
                Ok(())
            }
            "USER" => {
                let user = self.word(line, rest)?;
                if user.is_empty() {
                    return Err(Error::line(line, "USER needs a user name"));
                }
                self.step(StepKind::User, vec![user], line);
                Ok(())
            }
            "CMD" => {
                self.cmd = Some((Form::of(rest), line));
                Ok(())
            }
            "ENTRYPOINT" => {
                self.entrypoint = Some((Form::of(rest), line));
                Ok(())
            }
            "LABEL" | "EXPOSE" | "VOLUME" | "MAINTAINER" => {
                self.warn(line, format!("{kw} is ignored: Arbor templates have no image metadata, ports or volumes"));
                Ok(())
            }
            "SHELL" => Err(Error::line(
                line,
                "SHELL is not supported: RUN uses /bin/bash -c (or /bin/sh -c); call another shell inside RUN",
            )),
            "HEALTHCHECK" => {
                Err(Error::line(line, "HEALTHCHECK is not supported: use --ready-cmd to wait for a started service"))
            }
            "ONBUILD" => {
                Err(Error::line(line, "ONBUILD is not supported: templates do not run triggers of their base"))
            }
            "STOPSIGNAL" => Err(Error::line(line, "STOPSIGNAL is not supported: Arbor stops sandboxes as a whole")),
            _ => Err(Error::line(line, format!("unknown instruction {kw}"))),
        }
    }

    fn from(&mut self, line: usize, rest: &str) -> Result<()> {
        if let Some((_, first)) = &self.base {
            let msg = format!("multi-stage builds are not supported: a second FROM (the first is on line {first})");
            return Err(Error::line(line, msg));
        }
        let mut words = self.words(line, rest)?;
        while words.first().is_some_and(|w| w.starts_with("--")) {
            let flag = words.remove(0);
            match flag.strip_prefix("--platform=") {
                Some("linux/amd64" | "linux/x86_64" | "") => {}
                Some(p) => {
                    self.warn(line, format!("--platform={p} is ignored: the sandbox runs this machine's platform"))
                }
                None => return Err(Error::line(line, format!("FROM {flag} is not supported"))),
            }
        }
        let image = match words.as_slice() {
            [image] => image,
            [image, as_, _name] if as_.eq_ignore_ascii_case("as") => image,
            _ => return Err(Error::line(line, "FROM takes one image or template, optionally with AS <name>")),
        };
        let base = classify_from(image).map_err(|e| Error::line(line, e))?;
        self.base = Some((base, line));
        Ok(())
    }

    fn arg(&mut self, line: usize, rest: &str) -> Result<()> {
        for word in self.words(line, rest)? {
            let (name, default) = match word.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (word.clone(), None),
            };
            if name.is_empty() {
                return Err(Error::line(line, "ARG needs a name"));
            }
            let given = self.build_args.get(&name).cloned();
            if given.is_some() {
                self.used_args.insert(name.clone());
            }
            if self.base.is_none() {
                self.global_args.insert(name, given.or(default));
            } else {
                let global = self.global_args.get(&name).cloned().flatten();
                self.args.insert(name, given.or(default).or(global));
            }
        }
        Ok(())
    }

    fn env(&mut self, line: usize, rest: &str) -> Result<()> {
        let first = rest.split_whitespace().next().unwrap_or_default();
        let mut pairs = Vec::new();
        if first.contains('=') {
            for word in self.words(line, rest)? {
                let Some((k, v)) = word.split_once('=') else {
                    return Err(Error::line(line, format!("ENV {word:?} is not of the form name=value")));
                };
                pairs.push((k.to_string(), v.to_string()));
            }
        } else {
            // Legacy `ENV name value with spaces`.
            let value = rest[first.len()..].trim();
            if value.is_empty() {
                return Err(Error::line(line, format!("ENV {first} needs a value (ENV name=value)")));
            }
            pairs.push((first.to_string(), self.word(line, value)?));
        }
        if pairs.iter().any(|(k, _)| k.is_empty()) {
            return Err(Error::line(line, "ENV names can not be blank"));
        }
        let mut args = Vec::new();
        for (k, v) in pairs {
            args.push(k.clone());
            args.push(v.clone());
            self.env.insert(k, v);
        }
        self.step(StepKind::Env, args, line);
        Ok(())
    }

    fn run(&mut self, ins: &RawInstruction) -> Result<()> {
        let (line, rest) = (ins.line, ins.rest.as_str());
        if let Some(flag) = rest.split_whitespace().next().filter(|w| w.starts_with("--")) {
            let name = flag.split('=').next().unwrap_or(flag);
            return Err(Error::line(line, format!("RUN {name} is not supported")));
        }
        // `RUN <<EOF` with no command: the heredoc is the script.
        let only_markers = rest.split_whitespace().all(|w| w.starts_with("<<"));
        let command = match (ins.heredocs.as_slice(), Form::of(rest)) {
            ([], Form::Exec(words)) if words.is_empty() => return Err(Error::line(line, "RUN [] has no command")),
            ([], Form::Exec(words)) => join(&words),
            ([], Form::Shell(cmd)) => cmd,
            ([doc], _) if only_markers => script(&doc.body),
            (docs, _) if only_markers => {
                let msg = format!("RUN with {} heredocs and no command is not supported: give a command", docs.len());
                return Err(Error::line(line, msg));
            }
            // A command reading heredocs: the shell itself understands them.
            (docs, _) => {
                let mut text = rest.to_string();
                for doc in docs {
                    text.push('\n');
                    text.push_str(&doc.body);
                    text.push_str(&doc.name);
                }
                text
            }
        };
        let command = format!("{}{command}", self.arg_exports());
        self.step(StepKind::Run, vec![command], line);
        Ok(())
    }

    /// `export A='1' B='2'; ` for the ARGs in scope (not overridden by an
    /// ENV): Docker gives RUN its build args as environment variables.
    fn arg_exports(&self) -> String {
        let exports: Vec<String> = self
            .args
            .iter()
            .filter(|(k, _)| !self.env.contains_key(*k) && is_identifier(k))
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", quote(v))))
            .collect();
        if exports.is_empty() {
            String::new()
        } else {
            format!("export {}; ", exports.join(" "))
        }
    }

    fn finish(self) -> Result<Plan> {
        let Some((base, base_line)) = self.base else {
            return Err(Error::File("no FROM instruction".into()));
        };
        let mut warnings = self.warnings;
        let unused: Vec<&str> =
            self.build_args.keys().filter(|k| !self.used_args.contains(*k)).map(String::as_str).collect();
        if !unused.is_empty() {
            let message = format!("build args not declared by any ARG: {}", unused.join(", "));
            warnings.push(Warning { line: None, message });
        }
        let start_cmd = start_cmd(self.entrypoint, self.cmd);
        Ok(Plan { base, base_line, steps: self.steps, start_cmd, warnings })
    }
}

fn is_known(kw: &str) -> bool {
    matches!(
        kw,
        "FROM"
            | "ARG"
            | "ENV"
            | "RUN"
            | "COPY"
            | "ADD"
            | "WORKDIR"
            | "USER"
            | "LABEL"
            | "EXPOSE"
            | "VOLUME"
            | "MAINTAINER"
    )
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// A `RUN <<EOF` script: run by the shell, or by its own interpreter when it
/// starts with `#!` (as BuildKit does).
fn script(body: &str) -> String {
    if !body.starts_with("#!") {
        return body.to_string();
    }
    let mut delim = "ARBOR_SCRIPT".to_string();
    while body.lines().any(|l| l == delim) {
        delim.push('_');
    }
    format!("f=$(mktemp) && cat > \"$f\" <<'{delim}' && chmod +x \"$f\"\n{body}{delim}\n\"$f\"; rc=$?; rm -f \"$f\"; exit $rc")
}

/// Docker's rule for the container command: an exec-form ENTRYPOINT takes
/// CMD as arguments, a shell-form one ignores CMD; CMD alone is the command.
fn start_cmd(entrypoint: Option<(Form, usize)>, cmd: Option<(Form, usize)>) -> Option<StartCmd> {
    let line = entrypoint.iter().chain(cmd.iter()).map(|(_, l)| *l).max().unwrap_or(0);
    let command = match (entrypoint.map(|e| e.0), cmd.map(|c| c.0)) {
        (Some(Form::Shell(e)), _) => e,
        (Some(Form::Exec(mut e)), c) => {
            match c {
                Some(Form::Exec(c)) => e.extend(c),
                Some(Form::Shell(c)) => e.extend(["/bin/sh".to_string(), "-c".to_string(), c]),
                None => {}
            }
            join(&e)
        }
        (None, Some(Form::Exec(c))) => join(&c),
        (None, Some(Form::Shell(c))) => c,
        (None, None) => return None,
    };
    let line = if command.trim().is_empty() { return None } else { line };
    Some(StartCmd { command, line })
}

/// The FROM rule: a value with `/` or `@`, or a `name:tag` whose tag is not
/// a number, is an image; `scratch` is refused; anything else (`base`,
/// `name`, `name:3`, an id) is an Arbor template or snapshot.
pub fn classify_from(image: &str) -> std::result::Result<Base, String> {
    if image.is_empty() {
        return Err("FROM needs an image or template".into());
    }
    if image == "scratch" {
        return Err("FROM scratch is not supported: start from base, debian:bookworm or an image".into());
    }
    if image.contains(['/', '@']) {
        return Ok(Base::Image(image.into()));
    }
    match image.split_once(':') {
        Some((_, tag)) if !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Base::Template(image.into()))
        }
        Some(_) => Ok(Base::Image(image.into())),
        None => Ok(Base::Template(image.into())),
    }
}

/// `dir` made absolute against `cwd` and cleaned lexically (`..` stops at
/// `/`), as Docker resolves `WORKDIR` and a relative `COPY` destination.
pub fn resolve_path(cwd: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') { dir.to_string() } else { format!("{cwd}/{dir}") };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}
