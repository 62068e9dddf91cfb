//! From text to raw instructions: parser directives, comments, line
//! continuations and heredoc bodies, each instruction with the line it
//! starts on. Nothing is interpreted here beyond what Docker's own front end
//! does before it looks at an instruction's arguments.

use crate::error::{Error, Result};

/// A heredoc body attached to an instruction (`RUN <<EOF ... EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, e.g. `EOF` (also the file name in `COPY <<EOF /dir/`).
    pub name: String,
    /// The lines between the marker and the delimiter, each ending in `\n`
    /// (leading tabs already removed for `<<-`).
    pub body: String,
    /// Whether `$VAR` in the body is expanded: only when the delimiter was unquoted.
    pub expand: bool,
}

/// One instruction before interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawInstruction {
    /// 1-based line the instruction starts on.
    pub line: usize,
    /// The instruction word in upper case, e.g. `RUN`.
    pub keyword: String,
    /// Everything after the keyword, continuations joined, trimmed.
    pub rest: String,
    /// Heredoc bodies in the order their markers appear in `rest`.
    pub heredocs: Vec<Heredoc>,
}

/// A lexed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexed {
    /// The escape character (`\` unless `# escape=` says `` ` ``).
    pub escape: char,
    /// The instructions in order.
    pub instructions: Vec<RawInstruction>,
}

/// Instructions whose arguments may hold heredoc markers (as in BuildKit).
const HEREDOC_INSTRUCTIONS: [&str; 3] = ["RUN", "COPY", "ADD"];

/// Splits a Dockerfile into instructions.
pub fn lex(text: &str) -> Result<Lexed> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let (escape, mut i) = directives(&lines)?;
    let mut instructions = Vec::new();
    while i < lines.len() {
        let first = lines[i].trim_start();
        if first.is_empty() || first.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut joined = String::new();
        let mut continuing = false;
        while i < lines.len() {
            let line = lines[i];
            i += 1;
            let t = line.trim_start();
            // Docker drops comment lines (and, with a warning, empty lines)
            // inside a continued instruction.
            if continuing && (t.is_empty() || t.starts_with('#')) {
                continue;
            }
            let end = line.trim_end_matches([' ', '\t']);
            match end.strip_suffix(escape) {
                Some(head) => {
                    joined.push_str(head);
                    continuing = true;
                }
                None => {
                    joined.push_str(line);
                    break;
                }
            }
        }
        let joined = joined.trim();
        let (word, rest) = match joined.find(char::is_whitespace) {
            Some(at) => (&joined[..at], joined[at..].trim()),
            None => (joined, ""),
        };
        let keyword = word.to_ascii_uppercase();
        let mut heredocs = Vec::new();
        if HEREDOC_INSTRUCTIONS.contains(&keyword.as_str()) {
            for marker in heredoc_markers(rest) {
                let (body, next) = read_heredoc(&lines, i, &marker).ok_or_else(|| {
                    Error::line(start, format!("heredoc {} is not closed by a line '{}'", marker.name, marker.name))
                })?;
                i = next;
                heredocs.push(Heredoc { name: marker.name, body, expand: !marker.quoted });
            }
        }
        instructions.push(RawInstruction { line: start, keyword, rest: rest.to_string(), heredocs });
    }
    Ok(Lexed { escape, instructions })
}

/// Reads the parser directives at the top of the file; returns the escape
/// character and the index of the first line after them. Like Docker, the
/// first line that is not a directive ends them.
fn directives(lines: &[&str]) -> Result<(char, usize)> {
    let mut escape = '\\';
    let mut seen = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(body) = line.trim().strip_prefix('#') else { return Ok((escape, i)) };
        let Some((key, value)) = body.split_once('=') else { return Ok((escape, i)) };
        let key = key.trim().to_ascii_lowercase();
        if !matches!(key.as_str(), "escape" | "syntax" | "check") || key.contains(char::is_whitespace) {
            return Ok((escape, i));
        }
        if seen.contains(&key) {
            return Err(Error::line(i + 1, format!("only one {key} parser directive can be used")));
        }
        if key == "escape" {
            escape = match value.trim() {
                "\\" => '\\',
                "`" => '`',
                other => return Err(Error::line(i + 1, format!("invalid escape character {other:?}: use \\ or `"))),
            };
        }
        seen.push(key);
    }
    Ok((escape, lines.len()))
}

#[derive(Debug)]
struct Marker {
    name: String,
    quoted: bool,
    strip_tabs: bool,
}

/// The heredoc markers of an instruction's arguments, outside quotes:
/// `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'`, also after a file descriptor
/// (`3<<EOF`). A here-string (`<<<`) is not a marker.
fn heredoc_markers(rest: &str) -> Vec<Marker> {
    let chars: Vec<char> = rest.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut quote) = (0, None::<char>);
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            // A here-string (`<<<`) is not a heredoc: skip all its `<`.
            None if c == '<' && chars.get(i + 1) == Some(&'<') && chars.get(i + 2) == Some(&'<') => {
                while chars.get(i) == Some(&'<') {
                    i += 1;
                }
                continue;
            }
            None if c == '<' && chars.get(i + 1) == Some(&'<') && chars.get(i + 2) != Some(&'<') => {
                let mut j = i + 2;
                let strip_tabs = chars.get(j) == Some(&'-');
                if strip_tabs {
                    j += 1;
                }
                let open = chars.get(j).copied().filter(|c| *c == '"' || *c == '\'');
                if open.is_some() {
                    j += 1;
                }
                let start = j;
                while j < chars.len()
                    && (chars[j].is_ascii_alphanumeric() || chars[j] == '_' || chars[j] == '-' || chars[j] == '.')
                {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                let closed = match open {
                    Some(q) if chars.get(j) == Some(&q) => {
                        j += 1;
                        true
                    }
                    Some(_) => false,
                    None => true,
                };
                if !name.is_empty() && closed {
                    out.push(Marker { name, quoted: open.is_some(), strip_tabs });
                }
                i = j;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    out
}

/// The body of a heredoc starting at line index `from`, and the index after
/// its delimiter line; `None` when the file ends first.
fn read_heredoc(lines: &[&str], from: usize, marker: &Marker) -> Option<(String, usize)> {
    let mut body = String::new();
    for (i, line) in lines.iter().enumerate().skip(from) {
        let line = if marker.strip_tabs { line.trim_start_matches('\t') } else { line };
        if line == marker.name {
            return Some((body, i + 1));
        }
        body.push_str(line);
        body.push('\n');
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw(l: &Lexed) -> Vec<(usize, &str, &str)> {
        l.instructions.iter().map(|i| (i.line, i.keyword.as_str(), i.rest.as_str())).collect()
    }

    #[test]
    fn comments_blank_lines_and_case() {
        let l = lex("# a comment\n\nfrom base\n  # indented comment\nrun echo hi   \n").unwrap();
        assert_eq!(kw(&l), [(3, "FROM", "base"), (5, "RUN", "echo hi")]);
        assert_eq!(l.escape, '\\');
    }

    #[test]
    fn continuations_join_without_newlines_and_skip_comments() {
        let text = "FROM base\nRUN apt-get update && \\\n    # why curl\n\n    apt-get install -y curl \\  \n  && echo done\nENV A=1";
        let l = lex(text).unwrap();
        assert_eq!(
            kw(&l),
            [
                (1, "FROM", "base"),
                (2, "RUN", "apt-get update &&     apt-get install -y curl   && echo done"),
                (7, "ENV", "A=1")
            ]
        );
    }

    #[test]
    fn continuation_at_end_of_file() {
        let l = lex("FROM base\nRUN echo a \\").unwrap();
        assert_eq!(kw(&l)[1], (2, "RUN", "echo a"));
    }

    #[test]
    fn escape_directive_changes_continuation() {
        let l = lex("# escape=`\n# syntax=docker/dockerfile:1\nFROM base\nRUN dir c:\\ `\n  && echo x\n").unwrap();
        assert_eq!(l.escape, '`');
        assert_eq!(kw(&l)[1], (4, "RUN", "dir c:\\   && echo x"));
    }

    #[test]
    fn directives_only_at_the_top() {
        let l = lex("FROM base\n# escape=`\nRUN a \\\n b").unwrap();
        assert_eq!(l.escape, '\\');
        assert_eq!(kw(&l)[1], (3, "RUN", "a  b"));
        let l = lex("# hello\n# escape=`\nFROM base").unwrap();
        assert_eq!(l.escape, '\\');
        assert!(lex("# escape=x\nFROM base").unwrap_err().to_string().starts_with("Dockerfile:1: invalid escape"));
        assert!(lex("# escape=`\n# escape=\\\nFROM base").is_err());
    }

    #[test]
    fn crlf_and_bom() {
        let l = lex("\u{feff}FROM base\r\nRUN a \\\r\n b\r\n").unwrap();
        assert_eq!(kw(&l), [(1, "FROM", "base"), (2, "RUN", "a  b")]);
    }

    #[test]
    fn heredocs_are_read_after_the_instruction() {
        let text =
            "FROM base\nRUN <<EOF\necho $HOME\n  indented\nEOF\nCOPY <<-\"END\" /etc/x\n\tkeep\n\tEND\nRUN echo after";
        let l = lex(text).unwrap();
        assert_eq!(
            kw(&l),
            [(1, "FROM", "base"), (2, "RUN", "<<EOF"), (6, "COPY", "<<-\"END\" /etc/x"), (9, "RUN", "echo after")]
        );
        assert_eq!(
            l.instructions[1].heredocs,
            [Heredoc { name: "EOF".into(), body: "echo $HOME\n  indented\n".into(), expand: true }]
        );
        assert_eq!(l.instructions[2].heredocs, [Heredoc { name: "END".into(), body: "keep\n".into(), expand: false }]);
    }

    #[test]
    fn two_heredocs_and_non_markers() {
        let text = "FROM base\nRUN cat <<A 3<<'B' > f\na\nA\nb\nB\nRUN echo '<<NOT' && cat <<<word\n";
        let l = lex(text).unwrap();
        let names: Vec<&str> = l.instructions[1].heredocs.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
        assert!(l.instructions[2].heredocs.is_empty());
        assert_eq!(l.instructions[2].line, 7);
        // ENV does not take heredocs.
        assert!(lex("FROM base\nENV A=<<EOF\n").unwrap().instructions[1].heredocs.is_empty());
    }

    #[test]
    fn unclosed_heredoc_names_the_line() {
        let e = lex("FROM base\n\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(e.to_string(), "Dockerfile:3: heredoc EOF is not closed by a line 'EOF'");
    }
}
