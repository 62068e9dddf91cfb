//! Docker's word processing of instruction arguments: quotes, the escape
//! character and `$VAR` / `${VAR}` / `${VAR:-default}` substitution, plus
//! POSIX shell quoting for the commands this crate writes.

use std::collections::BTreeMap;

/// Variables visible to an instruction: ARGs in scope overlaid by ENVs.
pub type Vars = BTreeMap<String, String>;

/// How far [`Processor`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Split on unquoted whitespace, remove quotes (COPY, ENV pairs...).
    Words,
    /// One word: whitespace kept, quotes removed (WORKDIR, USER...).
    Word,
    /// Only substitution; quotes are plain characters (heredoc bodies).
    VarsOnly,
}

struct Processor<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a Vars,
}

/// Splits `s` into words as Docker does for COPY, ENV, LABEL...
pub fn expand_words(s: &str, escape: char, vars: &Vars) -> Result<Vec<String>, String> {
    Processor::new(s, escape, vars).run(Mode::Words, false)
}

/// Processes `s` as a single word (WORKDIR, USER, FROM, legacy ENV value).
pub fn expand_word(s: &str, escape: char, vars: &Vars) -> Result<String, String> {
    Ok(Processor::new(s, escape, vars).run(Mode::Word, false)?.concat())
}

/// Substitutes variables only, as in an unquoted heredoc body.
pub fn expand_vars(s: &str, escape: char, vars: &Vars) -> Result<String, String> {
    Ok(Processor::new(s, escape, vars).run(Mode::VarsOnly, false)?.concat())
}

impl<'a> Processor<'a> {
    fn new(s: &str, escape: char, vars: &'a Vars) -> Self {
        Self { chars: s.chars().collect(), pos: 0, escape, vars }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// Processes up to the end (or, inside `${...}`, the closing brace).
    fn run(&mut self, mode: Mode, in_brace: bool) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        // A word exists once anything (even empty quotes) was seen.
        let mut started = false;
        while let Some(c) = self.peek() {
            if in_brace && c == '}' {
                break;
            }
            self.pos += 1;
            match c {
                c if c.is_whitespace() && mode == Mode::Words => {
                    if started {
                        words.push(std::mem::take(&mut cur));
                        started = false;
                    }
                }
                '\'' if mode != Mode::VarsOnly => {
                    started = true;
                    loop {
                        match self.peek() {
                            None => return Err("unterminated single quote".into()),
                            Some('\'') => {
                                self.pos += 1;
                                break;
                            }
                            Some(ch) => {
                                cur.push(ch);
                                self.pos += 1;
                            }
                        }
                    }
                }
                '"' if mode != Mode::VarsOnly => {
                    started = true;
                    self.double_quoted(&mut cur)?;
                }
                '$' => {
                    started = true;
                    cur.push_str(&self.variable()?);
                }
                c if c == self.escape => {
                    started = true;
                    match self.peek() {
                        // In a heredoc body the escape only protects `$`.
                        Some(next) if mode == Mode::VarsOnly && next != '$' => cur.push(c),
                        Some(next) => {
                            cur.push(next);
                            self.pos += 1;
                        }
                        None => cur.push(c),
                    }
                }
                c => {
                    started = true;
                    cur.push(c);
                }
            }
        }
        if started || (mode != Mode::Words && words.is_empty()) {
            words.push(cur);
        }
        Ok(words)
    }

    fn double_quoted(&mut self, cur: &mut String) -> Result<(), String> {
        loop {
            let Some(c) = self.peek() else { return Err("unterminated double quote".into()) };
            self.pos += 1;
            match c {
                '"' => return Ok(()),
                '$' => cur.push_str(&self.variable()?),
                c if c == self.escape => match self.peek() {
                    Some(next) if next == '"' || next == '$' || next == self.escape => {
                        cur.push(next);
                        self.pos += 1;
                    }
                    _ => cur.push(c),
                },
                c => cur.push(c),
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            let ok = c == '_' || c.is_ascii_alphabetic() || (!name.is_empty() && c.is_ascii_digit());
            if !ok {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// After a `$`: the value it stands for (a lone `$` stays itself).
    fn variable(&mut self) -> Result<String, String> {
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.vars.get(&name).cloned().unwrap_or_default());
        }
        self.pos += 1;
        let name = self.name();
        if name.is_empty() {
            return Err("bad substitution: a ${...} needs a variable name".into());
        }
        let value = self.vars.get(&name);
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        let op = match self.peek() {
            Some('}') if !colon => {
                self.pos += 1;
                return Ok(value.cloned().unwrap_or_default());
            }
            Some(op @ ('-' | '+' | '?')) => op,
            Some(other) => return Err(format!("unsupported modifier '{other}' in ${{{name}...}}")),
            None => return Err(format!("missing '}}' in ${{{name}")),
        };
        self.pos += 1;
        let word = self.run(Mode::Word, true)?.concat();
        if self.peek() != Some('}') {
            return Err(format!("missing '}}' in ${{{name}"));
        }
        self.pos += 1;
        // With ':' an empty value counts as unset, as in the shell.
        let set = value.is_some_and(|v| !colon || !v.is_empty());
        Ok(match op {
            '-' if set => value.cloned().unwrap_or_default(),
            '-' => word,
            '+' if set => word,
            '+' => String::new(),
            _ if set => value.cloned().unwrap_or_default(),
            _ if word.is_empty() => return Err(format!("{name}: parameter not set")),
            _ => return Err(format!("{name}: {word}")),
        })
    }
}

/// Quotes `word` for a POSIX shell: as is when it holds only safe
/// characters, else in single quotes.
pub fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Joins words into one shell command line, quoting each.
pub fn join<S: AsRef<str>>(words: &[S]) -> String {
    words.iter().map(|w| quote(w.as_ref())).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("A", "1"), ("EMPTY", ""), ("SP", "a b")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn words(s: &str) -> Vec<String> {
        expand_words(s, '\\', &vars()).unwrap()
    }

    #[test]
    fn splitting_and_quotes() {
        assert_eq!(words("  a  b\tc "), ["a", "b", "c"]);
        assert_eq!(words(r#"k="v 2" 'x y' "" a\ b"#), ["k=v 2", "x y", "", "a b"]);
        assert_eq!(words(r#""in \"q\" \$A \n""#), [r#"in "q" $A \n"#]);
        assert_eq!(words("'$A' \"$A\" $A"), ["$A", "1", "1"]);
        assert!(words("").is_empty());
        assert!(expand_words("'open", '\\', &vars()).is_err());
        assert!(expand_words("\"open", '\\', &vars()).is_err());
    }

    #[test]
    fn substitution_forms() {
        assert_eq!(words("$A ${A} x${A}y $NOPE. ${NOPE}"), ["1", "1", "x1y", ".", ""]);
        assert_eq!(words("${NOPE:-d} ${EMPTY:-d} ${EMPTY-d} ${A:-d}"), ["d", "d", "", "1"]);
        assert_eq!(words("${A:+alt} ${EMPTY:+alt} ${EMPTY+alt} ${NOPE+alt}."), ["alt", "", "alt", "."]);
        assert_eq!(words("${NOPE:-$A-x} ${NOPE:-a b}"), ["1-x", "a b"]);
        assert_eq!(words("$SP"), ["a b"]);
        assert_eq!(words("$ $1 \\$A"), ["$", "$1", "$A"]);
        assert_eq!(expand_words("${NOPE:?must be set}", '\\', &vars()).unwrap_err(), "NOPE: must be set");
        assert!(expand_words("${A", '\\', &vars()).is_err());
        assert!(expand_words("${}", '\\', &vars()).is_err());
        assert!(expand_words("${A/x/y}", '\\', &vars()).is_err());
    }

    #[test]
    fn single_word_and_escape_char() {
        assert_eq!(expand_word("/srv/\"my app\"/$A", '\\', &vars()).unwrap(), "/srv/my app/1");
        assert_eq!(expand_word("", '\\', &vars()).unwrap(), "");
        assert_eq!(expand_words("a` b c:\\x `$A", '`', &vars()).unwrap(), ["a b", "c:\\x", "$A"]);
    }

    #[test]
    fn heredoc_bodies_keep_quotes() {
        assert_eq!(expand_vars("echo '$A' \"${A}\" \\$A \\n", '\\', &vars()).unwrap(), "echo '1' \"1\" $A \\n");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("plain-1.2/x_y:z"), "plain-1.2/x_y:z");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(join(&["sh", "-c", "echo $HOME"]), "sh -c 'echo $HOME'");
    }
}
