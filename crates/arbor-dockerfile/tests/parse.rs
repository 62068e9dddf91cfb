//! The Dockerfile → build request translation, instruction by instruction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use arbor_dockerfile::{parse, Base, ParseOptions, Plan, RequestOptions, StepKind};
use serde_json::json;

fn plan(text: &str) -> Plan {
    parse(text, &ParseOptions::default()).unwrap()
}

fn with_args(text: &str, args: &[(&str, &str)]) -> Plan {
    let build_args = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    parse(text, &ParseOptions { build_args }).unwrap()
}

fn err(text: &str) -> String {
    parse(text, &ParseOptions::default()).unwrap_err().to_string()
}

/// `(type, args, line)` of each step.
fn steps(p: &Plan) -> Vec<(&'static str, Vec<String>, usize)> {
    p.steps.iter().map(|s| (s.kind.as_str(), s.args.clone(), s.line)).collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn a_typical_dockerfile_becomes_the_sdk_request() {
    let p = plan(
        "FROM base\n\
         # tools\n\
         RUN apt-get update && \\\n    apt-get install -y curl\n\
         ENV APP=/srv/app PORT=8080\n\
         WORKDIR $APP\n\
         COPY --chown=user:user --chmod=755 app/ ./\n\
         USER user\n\
         CMD [\"python3\", \"-m\", \"http.server\", \"8080\"]\n",
    );
    assert_eq!(p.base, Base::Template("base".into()));
    let body =
        p.build_request(&RequestOptions { ready_cmd: Some("curl -sf localhost:8080".into()), ..Default::default() });
    assert_eq!(
        body,
        json!({
            "fromTemplate": "base",
            "startCmd": "python3 -m http.server 8080",
            "readyCmd": "curl -sf localhost:8080",
            "steps": [
                {"type": "RUN", "args": ["apt-get update &&     apt-get install -y curl"], "line": 3},
                {"type": "ENV", "args": ["APP", "/srv/app", "PORT", "8080"], "line": 5},
                {"type": "WORKDIR", "args": ["/srv/app"], "line": 6},
                {"type": "COPY", "args": ["app/", "/srv/app/", "user:user", "755"], "line": 7},
                {"type": "USER", "args": ["user"], "line": 8},
            ]
        })
    );
    assert_eq!(p.line_of_step("1"), Some(3));
    assert_eq!(p.line_of_step("4"), Some(7));
    assert_eq!(p.line_of_step("base"), Some(1));
    assert_eq!(p.line_of_step("finalize"), Some(9));
    assert_eq!(p.line_of_step("9"), None);
    assert_eq!(p.line_of_step("0"), None);
    let forced =
        p.build_request(&RequestOptions { start_cmd: Some("sleep 1".into()), force: true, ..Default::default() });
    assert_eq!((forced["startCmd"].as_str(), forced["force"].as_bool()), (Some("sleep 1"), Some(true)));
}

#[test]
fn from_rule() {
    let base = |t: &str| plan(&format!("FROM {t}")).base;
    assert_eq!(base("base"), Base::Template("base".into()));
    assert_eq!(base("myapp"), Base::Template("myapp".into()));
    assert_eq!(base("myapp:3"), Base::Template("myapp:3".into()));
    assert_eq!(base("debian:bookworm"), Base::Image("debian:bookworm".into()));
    assert_eq!(base("python:3.12-slim"), Base::Image("python:3.12-slim".into()));
    assert_eq!(base("127.0.0.1:5000/team/app:v1"), Base::Image("127.0.0.1:5000/team/app:v1".into()));
    assert_eq!(base("library/alpine"), Base::Image("library/alpine".into()));
    assert_eq!(base("img@sha256:abc"), Base::Image("img@sha256:abc".into()));
    assert_eq!(base("--platform=linux/amd64 base AS build"), Base::Template("base".into()));
    let p = plan("FROM --platform=linux/arm64 base");
    assert!(p.warnings[0].to_string().starts_with("Dockerfile:1: warning: --platform=linux/arm64 is ignored"));
    let body = plan("FROM debian:bookworm").build_request(&RequestOptions::default());
    assert_eq!(body, json!({"fromImage": "debian:bookworm", "steps": []}));
    assert!(err("FROM scratch").starts_with("Dockerfile:1: FROM scratch is not supported"));
    assert!(err("FROM a b").starts_with("Dockerfile:1: FROM takes one image"));
}

#[test]
fn one_stage_only_and_from_first() {
    assert_eq!(
        err("FROM base AS a\nRUN true\n\nFROM a"),
        "Dockerfile:4: multi-stage builds are not supported: a second FROM (the first is on line 1)"
    );
    assert_eq!(
        err("\n\nRUN x\nFROM base"),
        "Dockerfile:3: RUN before FROM: only ARG may come before the FROM instruction"
    );
    assert_eq!(err("# only a comment\n"), "Dockerfile: no FROM instruction");
    assert!(err("FROM base\nCOPY --from=build /a /b").contains("COPY --from is not supported"));
}

#[test]
fn unknown_and_refused_instructions_name_their_line() {
    assert_eq!(err("FROM base\n\nFOO bar"), "Dockerfile:3: unknown instruction FOO");
    assert_eq!(err("FROM base\nfrobnicate"), "Dockerfile:2: unknown instruction FROBNICATE");
    for (kw, want) in [
        ("SHELL [\"/bin/zsh\", \"-c\"]", "SHELL is not supported"),
        ("HEALTHCHECK CMD curl -f localhost", "HEALTHCHECK is not supported: use --ready-cmd"),
        ("ONBUILD RUN x", "ONBUILD is not supported"),
        ("STOPSIGNAL SIGTERM", "STOPSIGNAL is not supported"),
        ("RUN --mount=type=cache,target=/root/.cache pip install x", "RUN --mount is not supported"),
        ("RUN --network=none true", "RUN --network is not supported"),
        ("ADD https://example.invalid/x.tgz /x", "ADD from a URL"),
        ("ADD git@example.invalid:a/b.git /x", "ADD from a URL"),
        ("ADD rootfs.tar.gz /", "ADD of a local archive (rootfs.tar.gz)"),
        ("COPY --chmod=u+x a /b", "only octal modes"),
        ("COPY --parents a /b", "COPY --parents is not supported"),
        ("COPY onlyone", "requires at least two arguments"),
        ("COPY a b c", "more than one source needs a destination directory ending in /"),
        ("ENV", "ENV requires at least one argument"),
        ("ENV a=1 b", "is not of the form name=value"),
        ("ENV =x", "ENV names can not be blank"),
        ("ENV lonely", "needs a value"),
        ("USER \"\"", "USER needs a user name"),
        ("WORKDIR", "WORKDIR requires at least one argument"),
        ("COPY \"a /b", "unterminated double quote"),
        ("WORKDIR ${X:?X is required}", "X: X is required"),
    ] {
        let e = err(&format!("FROM base\n{kw}"));
        assert!(e.starts_with("Dockerfile:2: ") && e.contains(want), "{kw}: {e}");
    }
}

#[test]
fn ignored_instructions_warn() {
    let p = plan("FROM base\nLABEL a=b\nEXPOSE 80\nVOLUME /data\nMAINTAINER me");
    assert!(p.steps.is_empty());
    let lines: Vec<Option<usize>> = p.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, [Some(2), Some(3), Some(4), Some(5)]);
    assert!(p.warnings[1].to_string().contains("EXPOSE is ignored"));
}

#[test]
fn run_forms() {
    let p = plan("FROM base\nRUN [\"echo\", \"a b\", \"it's\"]\nRUN [not json\nRUN echo $HOME \"$X\"\nrun   true  ");
    assert_eq!(
        steps(&p),
        [
            ("RUN", s(&["echo 'a b' 'it'\\''s'"]), 2),
            ("RUN", s(&["[not json"]), 3),
            ("RUN", s(&["echo $HOME \"$X\""]), 4),
            ("RUN", s(&["true"]), 5),
        ]
    );
    assert!(err("FROM base\nRUN []").contains("RUN [] has no command"));
}

#[test]
fn run_heredocs() {
    let p = plan(
        "FROM base\nRUN <<EOF\nset -e\necho \"$HOME\"\nEOF\nRUN python3 - <<'PY' > /out\nprint(1)\nPY\nRUN echo done",
    );
    assert_eq!(
        steps(&p),
        [
            ("RUN", s(&["set -e\necho \"$HOME\"\n"]), 2),
            ("RUN", s(&["python3 - <<'PY' > /out\nprint(1)\nPY"]), 6),
            ("RUN", s(&["echo done"]), 9),
        ]
    );
    let p = plan("FROM base\nRUN <<EOF\n#!/usr/bin/env python3\nprint('hi')\nEOF");
    let cmd = &p.steps[0].args[0];
    assert!(
        cmd.starts_with("f=$(mktemp) && cat > \"$f\" <<'ARBOR_SCRIPT' && chmod +x \"$f\"\n#!/usr/bin/env python3\n"),
        "{cmd}"
    );
    assert!(cmd.ends_with("ARBOR_SCRIPT\n\"$f\"; rc=$?; rm -f \"$f\"; exit $rc"));
    assert!(err("FROM base\nRUN <<A <<B\na\nA\nb\nB").contains("2 heredocs and no command"));
}

#[test]
fn copy_heredoc_writes_the_file_as_root() {
    let p = plan("FROM base\nARG NAME=world\nWORKDIR /etc\nCOPY --chmod=600 --chown=1000:1000 <<EOF app.conf\nhello $NAME\nEOF\nCOPY <<'RAW' <<X /opt/\n$NAME\nRAW\nx\nX");
    assert_eq!(
        steps(&p)[1],
        (
            "RUN",
            s(&["mkdir -p /etc && printf %s 'hello world\n' > /etc/app.conf && chmod 600 /etc/app.conf && chown 1000:1000 /etc/app.conf", "root"]),
            4
        )
    );
    assert_eq!(steps(&p)[2].1[0], "mkdir -p /opt && printf %s '$NAME\n' > /opt/RAW && chmod 644 /opt/RAW");
    assert_eq!(steps(&p)[3].1[0], "mkdir -p /opt && printf %s 'x\n' > /opt/X && chmod 644 /opt/X");
    assert!(err("FROM base\nCOPY <<EOF /a\nx\nEOF2\n").contains("heredoc EOF is not closed"));
}

#[test]
fn copy_and_add_sources_and_destinations() {
    let p = plan(
        "FROM base\nCOPY a.txt /abs\nCOPY [\"with space\", \"rel/\"]\nWORKDIR /w\nCOPY a b ./\nCOPY x .\nCOPY y ../up\nADD --chown=u dir /d/\nCOPY --link z /z",
    );
    assert_eq!(
        steps(&p),
        [
            ("COPY", s(&["a.txt", "/abs", "", ""]), 2),
            ("COPY", s(&["with space", "/rel/", "", ""]), 3),
            ("WORKDIR", s(&["/w"]), 4),
            ("COPY", s(&["a", "/w/", "", ""]), 5),
            ("COPY", s(&["b", "/w/", "", ""]), 5),
            ("COPY", s(&["x", "/w/", "", ""]), 6),
            ("COPY", s(&["y", "/up", "", ""]), 7),
            ("COPY", s(&["dir", "/d/", "u", ""]), 8),
            ("COPY", s(&["z", "/z", "", ""]), 9),
        ]
    );
}

#[test]
fn workdir_is_relative_to_the_previous_one() {
    let p = plan("FROM base\nWORKDIR a\nWORKDIR b/../c\nWORKDIR /x/./y/\nWORKDIR ..\nWORKDIR \"my dir\"");
    let dirs: Vec<String> = p.steps.iter().map(|s| s.args[0].clone()).collect();
    assert_eq!(dirs, ["/a", "/a/c", "/x/y", "/x", "/x/my dir"]);
    assert!(p.steps.iter().all(|s| s.kind == StepKind::Workdir));
}

#[test]
fn env_forms_and_substitution() {
    let p = plan(
        "FROM base\nENV A=1 B=\"two words\" C=${A}x\nENV A=2 D=$A\nENV LEGACY value with  spaces\nENV E='$A' F=\\$A G=${NOPE:-dflt} H=${A:+set}",
    );
    assert_eq!(
        steps(&p),
        [
            ("ENV", s(&["A", "1", "B", "two words", "C", "x"]), 2),
            // Within one ENV the old values are used, as in Docker.
            ("ENV", s(&["A", "2", "D", "1"]), 3),
            ("ENV", s(&["LEGACY", "value with  spaces"]), 4),
            ("ENV", s(&["E", "$A", "F", "$A", "G", "dflt", "H", "set"]), 5),
        ]
    );
}

#[test]
fn args_build_args_and_scope() {
    let text = "ARG TAG=3\nARG UNSET\nFROM myapp:${TAG}\nARG TAG\nARG USERNAME=user\nARG EMPTY=\nUSER $USERNAME\nRUN echo $TAG\nENV USERNAME=envwins\nRUN id\nWORKDIR /home/${USERNAME}";
    let p = plan(text);
    assert_eq!(p.base, Base::Template("myapp:3".into()));
    assert_eq!(
        steps(&p),
        [
            ("USER", s(&["user"]), 7),
            ("RUN", s(&["export EMPTY='' TAG=3 USERNAME=user; echo $TAG"]), 8),
            ("ENV", s(&["USERNAME", "envwins"]), 9),
            ("RUN", s(&["export EMPTY='' TAG=3; id"]), 10),
            ("WORKDIR", s(&["/home/envwins"]), 11),
        ]
    );
    let p = with_args(text, &[("TAG", "7"), ("USERNAME", "ann lee"), ("EXTRA", "x")]);
    assert_eq!(p.base, Base::Template("myapp:7".into()));
    assert_eq!(p.steps[0].args, ["ann lee"]);
    assert_eq!(p.steps[1].args, ["export EMPTY='' TAG=7 USERNAME='ann lee'; echo $TAG"]);
    assert_eq!(
        p.warnings.last().unwrap().to_string(),
        "Dockerfile: warning: build args not declared by any ARG: EXTRA"
    );
    // A global ARG is not visible after FROM unless declared again.
    let p = plan("ARG V=1\nFROM base\nWORKDIR /x$V");
    assert_eq!(p.steps[0].args, ["/x"]);
}

#[test]
fn start_command_from_cmd_and_entrypoint() {
    let start = |t: &str| plan(&format!("FROM base\n{t}")).start_cmd.map(|s| (s.command, s.line));
    assert_eq!(start("CMD sleep infinity"), Some(("sleep infinity".into(), 2)));
    assert_eq!(start("CMD [\"node\", \"server.js\"]"), Some(("node server.js".into(), 2)));
    assert_eq!(
        start("ENTRYPOINT [\"python3\", \"app.py\"]\nCMD [\"--port\", \"80 80\"]"),
        Some(("python3 app.py --port '80 80'".into(), 3))
    );
    assert_eq!(start("CMD --x\nENTRYPOINT [\"tini\", \"--\"]"), Some(("tini -- /bin/sh -c --x".into(), 3)));
    assert_eq!(start("ENTRYPOINT exec nginx\nCMD [\"ignored\"]"), Some(("exec nginx".into(), 3)));
    assert_eq!(start("CMD a\nCMD b"), Some(("b".into(), 3)));
    assert_eq!(start("CMD []"), None);
    assert_eq!(start("RUN true"), None);
}

#[test]
fn escape_directive_applies_to_words() {
    let p = plan("# escape=`\nFROM base\nWORKDIR C:\\dir `\n  \\sub\nENV A=`$HOME");
    assert_eq!(p.steps[0].args, ["/C:\\dir   \\sub"]);
    assert_eq!(p.steps[1].args, ["A", "$HOME"]);
}
