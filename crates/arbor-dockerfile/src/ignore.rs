//! `.dockerignore` with Docker's rules: one pattern a line, `#` comments,
//! paths cleaned and a leading `/` dropped, `*`/`?`/`[...]` within one path
//! element, `**` across any number of them, `!` for exceptions, and the last
//! matching pattern wins. A pattern that matches a directory also matches
//! everything below it.

use crate::error::{Error, Result};
use globset::{GlobBuilder, GlobMatcher};
use std::path::Path;

/// The patterns of one `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    matcher: GlobMatcher,
    exception: bool,
}

impl IgnoreRules {
    /// Parses the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, raw) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean(raw);
            if cleaned.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(&cleaned)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Ignore { pattern: line.to_string(), reason: e.kind().to_string() })?;
            patterns.push(Pattern { matcher: glob.compile_matcher(), exception });
        }
        Ok(Self { patterns })
    }

    /// Reads `<context>/.dockerignore`; no file means no rules.
    pub fn read(context: &Path) -> Result<Self> {
        let path = context.join(".dockerignore");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    /// Whether `rel` (a `/`-separated path relative to the context) is left out.
    pub fn is_excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for p in &self.patterns {
            if matches_or_parent(&p.matcher, rel) {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Whether some `!` pattern may bring back a path below an excluded
    /// directory (so the directory must still be walked).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

fn matches_or_parent(m: &GlobMatcher, rel: &str) -> bool {
    if m.is_match(rel) {
        return true;
    }
    rel.char_indices().filter(|(_, c)| *c == '/').any(|(i, _)| m.is_match(&rel[..i]))
}

/// Lexically cleans a `/`-separated path like Go's `filepath.Clean`, and
/// drops a leading `/` (`.dockerignore` paths are relative to the context).
/// `..` above the top is dropped too: it cannot leave the context.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> IgnoreRules {
        IgnoreRules::parse(text).unwrap()
    }

    #[test]
    fn plain_names_and_directories() {
        let r = rules("# comment\n\nnode_modules\n/build\n  .git  \n");
        assert!(r.is_excluded("node_modules"));
        assert!(r.is_excluded("node_modules/x/y.js"));
        assert!(r.is_excluded("build/out.o"));
        assert!(r.is_excluded(".git/HEAD"));
        assert!(!r.is_excluded("src/node_modules"), "a plain name is anchored at the context root");
        assert!(!r.is_excluded("buildx"));
        assert!(!r.is_excluded("# comment"));
    }

    #[test]
    fn stars_and_double_stars() {
        let r = rules("*.log\n**/*.tmp\ndocs/**/draft*\nfile?.txt\n[ab].md");
        assert!(r.is_excluded("x.log"));
        assert!(!r.is_excluded("sub/x.log"), "* does not cross /");
        assert!(r.is_excluded("a.tmp") && r.is_excluded("a/b/c.tmp"));
        assert!(r.is_excluded("docs/draft1") && r.is_excluded("docs/x/y/draft2.md"));
        assert!(r.is_excluded("file1.txt") && !r.is_excluded("file10.txt"));
        assert!(r.is_excluded("a.md") && !r.is_excluded("c.md"));
        assert!(rules("**").is_excluded("any/thing"));
    }

    #[test]
    fn exceptions_and_last_match_wins() {
        let r = rules("*.md\n!README.md\nREADME*.md");
        assert!(r.is_excluded("CHANGES.md"));
        assert!(r.is_excluded("README.md"), "the later pattern wins again");
        let r = rules("*.md\n!README.md");
        assert!(!r.is_excluded("README.md"));
        assert!(r.has_exceptions());
        let r = rules("data\n!data/keep.csv");
        assert!(r.is_excluded("data/other.csv"));
        assert!(!r.is_excluded("data/keep.csv"));
        assert!(!rules("x").has_exceptions());
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean("./a//b/./c/"), "a/b/c");
        assert_eq!(clean("/a/../b"), "b");
        assert_eq!(clean("../../x"), "x");
        assert_eq!(clean("."), "");
        let r = rules("./tmp/\n/abs/path");
        assert!(r.is_excluded("tmp/x") && r.is_excluded("abs/path"));
        assert!(IgnoreRules::parse("[").is_err());
        assert!(rules("").is_empty());
    }
}
