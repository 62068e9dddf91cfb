//! The languages a context can run, their names on the wire, and the code each
//! kernel runs silently around a cell to apply per-execution environment
//! variables. Pure: no I/O, every rule is unit-tested here.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// A language the interpreter knows how to start a kernel for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Language {
    /// ipykernel.
    Python,
    /// Deno's Jupyter kernel.
    JavaScript,
    /// Deno's Jupyter kernel (Deno runs TypeScript natively).
    TypeScript,
    /// bash_kernel.
    Bash,
    /// IRkernel (Debian's r-cran-irkernel).
    R,
}

/// Every language, in the order they are listed to users.
pub const ALL: [Language; 5] =
    [Language::Python, Language::JavaScript, Language::TypeScript, Language::Bash, Language::R];

/// The family of kernel a language runs on; decides how env vars are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFamily {
    /// ipykernel: Python code.
    IPython,
    /// Deno: JavaScript/TypeScript code.
    Deno,
    /// bash_kernel: shell code.
    Bash,
    /// IRkernel: R code.
    R,
}

impl Language {
    /// The name the SDK uses and contexts report.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Bash => "bash",
            Language::R => "r",
        }
    }

    /// Which kernel family runs this language.
    pub fn family(self) -> KernelFamily {
        match self {
            Language::Python => KernelFamily::IPython,
            Language::JavaScript | Language::TypeScript => KernelFamily::Deno,
            Language::Bash => KernelFamily::Bash,
            Language::R => KernelFamily::R,
        }
    }

    /// Parses a language as the SDK sends it, after upstream's normalisation:
    /// `js`→javascript, `ts`→typescript, empty or absent→python. `deno` (used
    /// by the SDK's own Deno tests) is javascript. `Err` carries the
    /// normalised name of a language this interpreter has no kernel for.
    pub fn parse(lang: Option<&str>) -> Result<Language, String> {
        let lang = lang.map(str::trim).map(str::to_ascii_lowercase).unwrap_or_default();
        match lang.as_str() {
            "" | "python" | "python3" => Ok(Language::Python),
            "js" | "javascript" | "deno" => Ok(Language::JavaScript),
            "ts" | "typescript" => Ok(Language::TypeScript),
            "bash" | "sh" => Ok(Language::Bash),
            "r" => Ok(Language::R),
            _ => Err(lang),
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Environment variables to apply around one execution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvPlan {
    /// Sandbox-wide variables (envd's `/envs`) the kernel has not seen yet;
    /// set persistently.
    pub globals: BTreeMap<String, String>,
    /// The call's `env_vars`; set before the cell and restored after it.
    pub call: BTreeMap<String, String>,
}

impl EnvPlan {
    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.globals.is_empty() && self.call.is_empty()
    }
}

/// Checks that `key` is a usable environment variable name. Shells need an
/// identifier, so every language is held to that, which also keeps the
/// generated code free of quoting issues in names.
pub fn valid_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// A JSON object literal of `vars`: valid Python and JavaScript.
fn json_object(vars: &BTreeMap<String, String>) -> String {
    let map: serde_json::Map<String, Value> = vars.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    Value::Object(map).to_string()
}

/// An R `list(NAME = "value", ...)` of `vars` (names are identifiers, see
/// [`valid_env_key`]; JSON string literals are valid R string literals).
fn r_list(vars: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = vars.iter().map(|(k, v)| format!("{k} = {}", Value::String(v.clone()))).collect();
    format!("list({})", items.join(", "))
}

/// Single-quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Code run silently before the cell: sets the globals for good and the
/// call's variables after saving their previous values. `None` if there is
/// nothing to do.
pub fn env_before(family: KernelFamily, plan: &EnvPlan) -> Option<String> {
    if plan.is_empty() {
        return None;
    }
    let globals = json_object(&plan.globals);
    let call = json_object(&plan.call);
    Some(match family {
        // No names are bound in the user's namespace: the saved values live on
        // the os module.
        KernelFamily::IPython => format!(
            "(lambda o, g, c: (o.environ.update(g), setattr(o, '_arbor_saved', \
             {{k: o.environ.get(k) for k in c}}), o.environ.update(c)))(__import__('os'), {globals}, {call})"
        ),
        KernelFamily::Deno => format!(
            "void ((g, c) => {{ for (const [k, v] of Object.entries(g)) Deno.env.set(k, v); \
             globalThis.__arborSaved = Object.fromEntries(Object.keys(c).map((k) => [k, Deno.env.get(k)])); \
             for (const [k, v] of Object.entries(c)) Deno.env.set(k, v); }})({globals}, {call})"
        ),
        KernelFamily::Bash => {
            let mut out = String::new();
            for (k, v) in &plan.globals {
                out.push_str(&format!("export {k}={}\n", shell_quote(v)));
            }
            for (k, v) in &plan.call {
                out.push_str(&format!(
                    "if [ -n \"${{{k}+x}}\" ]; then __arbor_had_{k}=1; __arbor_old_{k}=\"${k}\"; \
                     else __arbor_had_{k}=0; fi; export {k}={}\n",
                    shell_quote(v)
                ));
            }
            out
        }
        // Saved values live in a hidden variable of the global environment;
        // `invisible` keeps Sys.setenv's TRUE from being displayed.
        KernelFamily::R => format!(
            "invisible(local({{ g <- {}; c <- {}; if (length(g)) do.call(Sys.setenv, g); \
             assign('.arbor_saved', Sys.getenv(names(c), unset = NA, names = TRUE), envir = globalenv()); \
             if (length(c)) do.call(Sys.setenv, c) }}))",
            r_list(&plan.globals),
            r_list(&plan.call)
        ),
    })
}

/// Code run silently after the cell: restores the call's variables. `None` if
/// the call set none.
pub fn env_after(family: KernelFamily, plan: &EnvPlan) -> Option<String> {
    if plan.call.is_empty() {
        return None;
    }
    Some(match family {
        KernelFamily::IPython => "(lambda o: [o.environ.pop(k, None) if v is None else o.environ.__setitem__(k, v) \
                                   for k, v in o.__dict__.pop('_arbor_saved', {}).items()])(__import__('os'))"
            .to_string(),
        KernelFamily::Deno => "void (() => { for (const [k, v] of Object.entries(globalThis.__arborSaved ?? {})) \
                               { if (v === undefined) Deno.env.delete(k); else Deno.env.set(k, v); } \
                               delete globalThis.__arborSaved; })()"
            .to_string(),
        KernelFamily::Bash => {
            let mut out = String::new();
            for k in plan.call.keys() {
                out.push_str(&format!(
                    "if [ \"$__arbor_had_{k}\" = 1 ]; then export {k}=\"$__arbor_old_{k}\"; else unset {k}; fi; \
                     unset __arbor_had_{k} __arbor_old_{k}\n"
                ));
            }
            out
        }
        KernelFamily::R => "invisible(local({ s <- get0('.arbor_saved', envir = globalenv()); \
                            for (k in names(s)) if (is.na(s[[k]])) Sys.unsetenv(k) \
                            else do.call(Sys.setenv, stats::setNames(list(s[[k]]), k)); \
                            if (!is.null(s)) rm('.arbor_saved', envir = globalenv()) }))"
            .to_string(),
    })
}

/// Code run silently once a kernel has started (and after each restart).
pub fn init_code(family: KernelFamily) -> Option<&'static str> {
    match family {
        // A DataFrame as a cell's value also carries its columns as
        // `e2b/data` (the SDK's `result.data`), a matplotlib figure its plotted
        // data as `e2b/chart` (`result.chart`). Registered by type name, so
        // pandas and matplotlib are only imported when the user imports them.
        KernelFamily::IPython => Some(concat!(include_str!("init/python.py"), include_str!("init/charts.py"))),
        KernelFamily::Deno | KernelFamily::Bash | KernelFamily::R => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_normalised() {
        assert_eq!(Language::parse(None), Ok(Language::Python));
        assert_eq!(Language::parse(Some("")), Ok(Language::Python));
        assert_eq!(Language::parse(Some("js")), Ok(Language::JavaScript));
        assert_eq!(Language::parse(Some("TS")), Ok(Language::TypeScript));
        assert_eq!(Language::parse(Some("deno")), Ok(Language::JavaScript));
        assert_eq!(Language::parse(Some("bash")), Ok(Language::Bash));
        assert_eq!(Language::parse(Some(" R ")), Ok(Language::R));
        assert_eq!(Language::parse(Some("java")), Err("java".to_string()));
    }

    #[test]
    fn env_keys_must_be_identifiers() {
        assert!(valid_env_key("FOO_1"));
        assert!(valid_env_key("_x"));
        assert!(!valid_env_key(""));
        assert!(!valid_env_key("1A"));
        assert!(!valid_env_key("A-B"));
        assert!(!valid_env_key("A=B"));
    }

    fn plan(globals: &[(&str, &str)], call: &[(&str, &str)]) -> EnvPlan {
        let m = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        EnvPlan { globals: m(globals), call: m(call) }
    }

    #[test]
    fn nothing_to_apply_gives_no_code() {
        for family in [KernelFamily::IPython, KernelFamily::Deno, KernelFamily::Bash, KernelFamily::R] {
            assert_eq!(env_before(family, &EnvPlan::default()), None);
            assert_eq!(env_after(family, &plan(&[("A", "1")], &[])), None);
        }
    }

    #[test]
    fn python_code_quotes_values_as_json() {
        let code = env_before(KernelFamily::IPython, &plan(&[], &[("FOO", "it's \"x\"\n")])).unwrap_or_default();
        assert!(code.contains(r#"{"FOO":"it's \"x\"\n"}"#), "{code}");
        assert!(env_after(KernelFamily::IPython, &plan(&[], &[("FOO", "1")])).is_some());
    }

    #[test]
    fn r_code_sets_and_restores_with_string_literals() {
        let code = env_before(KernelFamily::R, &plan(&[("G", "1")], &[("FOO", "a\"b")])).unwrap_or_default();
        assert!(code.contains(r#"g <- list(G = "1"); c <- list(FOO = "a\"b")"#), "{code}");
        let after = env_after(KernelFamily::R, &plan(&[], &[("FOO", "x")])).unwrap_or_default();
        assert!(after.contains("Sys.unsetenv(k)"), "{after}");
    }

    #[test]
    fn bash_code_single_quotes_values() {
        let code = env_before(KernelFamily::Bash, &plan(&[("G", "a b")], &[("FOO", "it's")])).unwrap_or_default();
        assert!(code.contains("export G='a b'\n"), "{code}");
        assert!(code.contains(r"export FOO='it'\''s'"), "{code}");
        let after = env_after(KernelFamily::Bash, &plan(&[], &[("FOO", "x")])).unwrap_or_default();
        assert!(after.contains("unset FOO"), "{after}");
    }
}
