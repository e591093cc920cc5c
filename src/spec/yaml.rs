//! YAML with positions: every error names `file:line:col`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::Sources;

/// A place in a file, 1-based as editors count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
}

impl Position {
    pub fn new(file: &Path, location: serde_saphyr::Location) -> Self {
        Position { file: file.to_path_buf(), line: location.line().max(1), column: location.column().max(1) }
    }

    pub fn start_of(file: &Path) -> Self {
        Position { file: file.to_path_buf(), line: 1, column: 1 }
    }

    /// For a value built in code, not read from a file: errors about it name no place.
    pub fn in_code() -> Self {
        Position { file: PathBuf::new(), line: 0, column: 0 }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => f.write_str("(built in code)"),
            _ => write!(f, "{}:{}:{}", self.file.display(), self.line, self.column),
        }
    }
}

/// A problem with an agent file, or with a file it names, at a known place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct SpecError {
    pub at: Position,
    pub message: String,
}

impl SpecError {
    pub fn new(at: Position, message: impl Into<String>) -> Self {
        SpecError { at, message: message.into() }
    }
}

/// Reads and deserialises a YAML file. Only plain data comes out of YAML: no tags that construct
/// objects, no includes, no code.
pub fn read_from<T: DeserializeOwned>(sources: &Sources, path: &Path) -> Result<T, SpecError> {
    let bytes = sources
        .read(path)
        .map_err(|e| SpecError::new(Position::start_of(path), format!("cannot read the file: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        // Point at the first byte that is not UTF-8: the character an editor saved otherwise.
        let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned();
        let line = valid.matches('\n').count() as u64 + 1;
        let column = valid.rsplit('\n').next().unwrap_or_default().chars().count() as u64 + 1;
        let at = Position { file: path.to_path_buf(), line, column };
        SpecError::new(at, "this character is not UTF-8: save the file as UTF-8")
    })?;
    parse(path, text)
}

pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, SpecError> {
    if holds_no_yaml(text) {
        return Err(SpecError::new(
            Position::start_of(path),
            "the file is empty (only blank lines or comments): an agent file needs at least `name:` and `model:`, a replay script `turns:` (see README)",
        ));
    }
    let options = serde_saphyr::options! {
        // Some loaders build objects from tags such as `!!python/object`; here any tag beyond the
        // plain types is refused, so that such a file fails loudly instead of being half-read.
        reject_unsupported_tags: true,
        reject_tagged_field_names: true,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|error| {
        let error = error.without_snippet();
        let at = error.location().map_or_else(|| Position::start_of(path), |l| Position::new(path, l));
        let (message, kind) = explain(error);
        let (at, message) = match kind {
            Kind::MissingField => (start_of_block_map(at, text), message),
            Kind::Syntax => match unclosed_flow_bracket(text, &at) {
                // The parser gives up lines later, where the file goes on as if it were closed.
                Some((line, column, bracket)) => (Position { line, column, ..at }, never_closed(bracket)),
                None => refine_syntax_error(at, text, message),
            },
            Kind::Tag(tag) => (last_before(&tag, text, at), message),
            Kind::SecondDocument => (document_start_before(text, at), message),
            Kind::Value(value) => match run_on_line(text, &at, &value) {
                Some(line) => {
                    let message = format!(
                        "this line is indented further than the key above it, so it reads as more of that key's value (`{}`): line it up with the key above",
                        shorten(&value)
                    );
                    (line, message)
                }
                None => (at, message),
            },
            Kind::Other => (at, message),
        };
        SpecError::new(at, message)
    })
}

/// Blank lines and comments only: serde-saphyr would say "unexpected end of input".
fn holds_no_yaml(text: &str) -> bool {
    text.lines().map(str::trim).all(|line| line.is_empty() || line.starts_with('#'))
}

/// What an error is about, for placing it where the mistake is.
enum Kind {
    /// Reported at the last key of the map; the map's first key is where a field is added.
    MissingField,
    /// The parser's own words, placed where it gave up.
    Syntax,
    /// A wrong value, which may have run on from the next line: `backend: replay` over a key
    /// indented further reads as `replay script: …`, and it is that line that needs fixing.
    Value(String),
    /// Reported inside the second document; the `---` that starts it is the place.
    SecondDocument,
    /// Reported at the node the tag is on, which may be lines later; the tag is what to remove.
    Tag(String),
    Other,
}

/// serde-saphyr's messages speak of its parser and of Rust types ("invalid i64", "expected
/// mapping start"); these say what is wrong in the file's terms, and how to put it right.
fn explain(error: &serde_saphyr::Error) -> (String, Kind) {
    use serde_saphyr::Error as E;
    let message = match error {
        E::AliasError { error, .. } => return explain(error),
        E::SerdeMissingField { field, .. } => {
            return (format!("missing field `{field}`: add `{field}:` to this map"), Kind::MissingField);
        }
        E::Budget { breach: serde_saphyr::budget::BudgetBreach::Depth { .. }, .. } => {
            "the YAML nests too deeply here: an agent file needs a few levels of lists and maps".into()
        }
        E::Budget { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => {
            "the YAML is too large, or grows so through aliases (`*name` repeats what its anchor `&name` holds): write each value out once".into()
        }
        E::UnsupportedTag { tag, .. } | E::TaggedStructFieldName { tag, .. } => {
            let message = format!(
                "the YAML tag `{}` is not allowed: agent files hold plain data (text, numbers, lists, maps); remove the tag",
                shorten(tag)
            );
            return (message, Kind::Tag(tag.clone()));
        }
        E::DuplicateMappingKey { key: Some(key), .. } => {
            format!("`{}` is written twice in this map: keep one", shorten(key))
        }
        E::DuplicateMappingKey { key: None, .. } => "a key is written twice in this map: keep one".into(),
        E::SerdeUnknownField { field, expected, .. } if expected.is_empty() => {
            format!("unknown field `{}`: this map takes no fields", shorten(field))
        }
        E::SerdeUnknownField { field, expected, .. } => format!(
            "unknown field `{}`, expected one of {}{}",
            shorten(field),
            expected.join(", "),
            did_you_mean(field, expected)
        ),
        E::SerdeUnknownVariant { variant, expected, .. } => {
            let message = format!(
                "unknown variant `{}`, expected one of {}{}",
                shorten(variant),
                expected.join(", "),
                did_you_mean(variant, expected)
            );
            return (message, Kind::Value(variant.clone()));
        }
        E::InvalidScalar { ty, .. } => match *ty {
            "boolean" => "expected true or false".into(),
            "floating point" => "expected a number, e.g. 0.7".into(),
            "char" => "expected a single character".into(),
            unsigned if unsigned.starts_with('u') => {
                let max = match unsigned {
                    "u8" => u64::from(u8::MAX),
                    "u16" => u64::from(u16::MAX),
                    "u32" => u64::from(u32::MAX),
                    _ => u64::MAX,
                };
                format!("expected a whole number from 0 to {max}")
            }
            _ => "expected a whole number, e.g. 10".into(),
        },
        E::Unexpected { expected, .. } => match *expected {
            "mapping start" | "map" => "expected a map of `key: value` fields here".into(),
            "sequence start" | "seq" => "expected a list here: `[a, b]`, or one `- item` per line".into(),
            "string scalar" | "string" => {
                "expected text here (quote it if it holds `: `, or write a `|` block for several lines)".into()
            }
            other => format!("expected {other} here"),
        },
        E::NullIntoString { .. } => "expected text here, found nothing: write a value after the `:`".into(),
        E::UnknownAnchor { .. } => "this alias `*name` has no anchor `&name` written before it".into(),
        E::MultipleDocuments { .. } => {
            return ("the file holds several YAML documents (`---`); keep one".into(), Kind::SecondDocument);
        }
        E::Eof { .. } => "the file ends too early: something opened is never closed".into(),
        _ => return (shorten(&bare_message(error)), Kind::Syntax),
    };
    (message, Kind::Other)
}

/// The parser's words, with the fix (and a better place) where the mistake is a common one.
fn refine_syntax_error(at: Position, text: &str, message: String) -> (Position, String) {
    let line = text.lines().nth(at.line.saturating_sub(1) as usize).unwrap_or_default();
    let before: String = line.chars().take(at.column.saturating_sub(1) as usize).collect();
    let indentation = line.chars().take_while(|c| *c == ' ').count() as u64;
    if message.contains("untagged enum ScriptTurn") {
        let message = "expected text here: a turn is the model's raw output (quote it if it holds `: `, or write a `|` \
                       block); a recorded turn is a map of `reply:`, `stream:`, `thinking:`, `error:`";
        (at, message.into())
    } else if message.contains("tabs disallowed") {
        // Reported just after the tab; the tab itself is what to replace.
        let column = line.chars().position(|c| c == '\t').map_or(at.column, |index| index as u64 + 1);
        let message = "a tab indents this line: YAML indents with spaces only; replace the tab with spaces";
        (Position { column, ..at }, message.into())
    } else if message.contains("mapping values are not allowed") && before.contains(": ") {
        (at, "a value that holds `: ` must be quoted, e.g. \"a: b\"".into())
    } else if message.contains("mapping values are not allowed") || message.contains("did not find expected key") {
        let message = "this key is indented unlike the keys of its map: line it up with them";
        (Position { column: indentation + 1, ..at }, message.into())
    } else if message.contains("unclosed quote") {
        (at, format!("{message}: end the text with the same quote mark that opens it"))
    } else if message.contains("recursion limit") || message.contains("nesting limit") {
        (at, "the YAML nests too deeply here: an agent file needs a few levels of lists and maps".into())
    } else if message.contains("misplaced bracket") {
        (at, "this bracket closes nothing: remove it".into())
    } else if message.contains("unclosed bracket") {
        (at, format!("{message}: close it, or write the list one `- item` per line"))
    } else {
        (at, message)
    }
}

fn never_closed(bracket: char) -> String {
    match bracket {
        '[' => "this `[` is never closed: end the list with `]`".into(),
        _ => "this `{` is never closed: end the map with `}`".into(),
    }
}

/// The flow collection (`[…]` or `{…}`) still open where the parser failed, if it opened on an
/// earlier line and the failing line is back at (or left of) that line's indentation. A light
/// scan that knows quotes, comments and block scalars; not a YAML parser.
fn unclosed_flow_bracket(text: &str, at: &Position) -> Option<(u64, u64, char)> {
    let indentation = |line: &str| line.chars().take_while(|c| *c == ' ').count();
    let mut open: Vec<(u64, u64, char, usize)> = Vec::new();
    let mut quote: Option<char> = None;
    let mut block_scalar_under: Option<usize> = None;
    for (index, line) in text.lines().enumerate().take(at.line as usize) {
        let number = index as u64 + 1;
        if let Some(parent) = block_scalar_under {
            if line.trim().is_empty() || indentation(line) > parent {
                continue;
            }
            block_scalar_under = None;
        }
        let mut previous: Option<char> = None; // the last non-space character on this line
        let mut after_space = true;
        let mut chars = line.chars().enumerate().peekable();
        while let Some((position, c)) = chars.next() {
            if number == at.line && position as u64 + 1 >= at.column {
                break;
            }
            if let Some(q) = quote {
                match c {
                    '\\' if q == '"' => {
                        chars.next();
                    }
                    '\'' if q == '\'' && chars.peek().is_some_and(|(_, next)| *next == '\'') => {
                        chars.next();
                    }
                    _ if c == q => quote = None,
                    _ => {}
                }
                continue;
            }
            let starts_value = !open.is_empty() || matches!(previous, None | Some(':' | '-'));
            match c {
                '#' if after_space => break,
                '[' | '{' if starts_value => open.push((number, position as u64 + 1, c, indentation(line))),
                ']' | '}' if !open.is_empty() => {
                    open.pop();
                }
                '"' | '\'' if starts_value => quote = Some(c),
                '|' | '>' if open.is_empty() && matches!(previous, Some(':' | '-')) => {
                    block_scalar_under = Some(indentation(line));
                    break;
                }
                _ => {}
            }
            after_space = c.is_whitespace();
            if !after_space {
                previous = Some(c);
            }
        }
    }
    let failing_line = text.lines().nth(at.line.saturating_sub(1) as usize).unwrap_or_default();
    let (line, column, bracket, bracket_indentation) = *open.last()?;
    (line < at.line && indentation(failing_line) <= bracket_indentation).then_some((line, column, bracket))
}

/// A missing field is reported at the last key of its block map; the map starts at its first key
/// (for a list item, the key after `- `). A flow map's place is left as reported.
fn start_of_block_map(at: Position, text: &str) -> Position {
    let lines: Vec<&str> = text.lines().collect();
    let indentation = |line: &str| line.chars().take_while(|c| *c == ' ').count() as u64;
    let is_item = |line: &str| line.trim_start().starts_with("- ");
    let key_starts_line = |line: &str| indentation(line) + 1 == at.column && !is_item(line);
    let key_starts_item = |line: &str| indentation(line) + 3 == at.column && is_item(line);
    let Some(reported) = lines.get(at.line.saturating_sub(1) as usize) else { return at };
    if !key_starts_line(reported) {
        return at;
    }
    let mut first = at.line;
    for number in (1..at.line).rev() {
        let line = lines[number as usize - 1];
        let content = line.trim_start();
        let list_value = is_item(line) && indentation(line) + 1 == at.column; // `- x` under a key
        if content.is_empty() || content.starts_with('#') || indentation(line) + 1 > at.column || list_value {
            continue; // blank, a comment, or the value of a key of this map
        }
        if key_starts_item(line) {
            first = number;
            break;
        }
        if !key_starts_line(line) {
            break;
        }
        first = number;
    }
    Position { line: first, ..at }
}

/// The place of the last `needle` written before `at`, or `at` where there is none.
fn last_before(needle: &str, text: &str, at: Position) -> Position {
    let mut found = None;
    for (index, line) in text.lines().enumerate().take(at.line as usize) {
        let number = index as u64 + 1;
        for (byte, _) in line.match_indices(needle) {
            let column = line[..byte].chars().count() as u64 + 1;
            if number < at.line || column <= at.column {
                found = Some((number, column));
            }
        }
    }
    found.map_or(at.clone(), |(line, column)| Position { line, column, ..at })
}

/// Where a plain value reported at `at` goes on past its own line: the first line it runs on to.
fn run_on_line(text: &str, at: &Position, value: &str) -> Option<Position> {
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(at.line.checked_sub(1)? as usize)?;
    let written: String = line.chars().skip(at.column.saturating_sub(1) as usize).collect();
    let written = written.split(" #").next().unwrap_or_default().trim_end();
    let runs_on = !written.is_empty()
        && !written.starts_with(['"', '\'', '[', '{'])
        && value.len() > written.len()
        && value.starts_with(written);
    if !runs_on {
        return None;
    }
    let (index, next) = lines.iter().enumerate().skip(at.line as usize).find(|(_, l)| !l.trim().is_empty())?;
    let column = next.chars().take_while(|c| *c == ' ').count() as u64 + 1;
    Some(Position { line: index as u64 + 1, column, ..at.clone() })
}

/// The last `---` line at or before `at`, or `at` where there is none.
fn document_start_before(text: &str, at: Position) -> Position {
    let separator = text.lines().take(at.line as usize).enumerate().filter(|(_, line)| line.starts_with("---")).last();
    separator.map_or(at.clone(), |(index, _)| Position { line: index as u64 + 1, column: 1, ..at })
}

/// serde-saphyr renders a snippet and the position into its message; the position is already in
/// `file:line:col`, so keep one line of words.
fn bare_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    match first.rfind(" at line ") {
        Some(cut) => first[..cut].to_string(),
        None => first.to_string(),
    }
}

/// A value quoted back in a message: a 20,000-character line must not fill the terminal.
fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A likely typo of one of `expected`, as advice; empty when nothing is close.
fn did_you_mean(written: &str, expected: &[&str]) -> String {
    // No field or value name is this long, and the distance costs length × length.
    if written.chars().count() > 64 {
        return String::new();
    }
    let closest = expected.iter().map(|candidate| (edit_distance(written, candidate), candidate)).min();
    match closest {
        Some((distance, candidate)) if distance <= (written.chars().count() / 3).max(1) => {
            format!("; did you mean `{candidate}`?")
        }
        _ => String::new(),
    }
}

/// Edits (insert, delete, replace, swap two neighbours) from `a` to `b`, by characters: the
/// optimal string alignment distance, so that `modle` is one edit from `model`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion_and_other_words_none() {
        assert_eq!(did_you_mean("instruction", &["name", "instructions"]), "; did you mean `instructions`?");
        assert_eq!(did_you_mean("modle", &["name", "model"]), "; did you mean `model`?");
        assert_eq!(did_you_mean("network", &["dirs", "http", "env", "secrets"]), "");
        assert_eq!(did_you_mean("x", &[]), "");
        assert_eq!(edit_distance("modle", "model"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn long_values_are_shortened_on_a_character_boundary() {
        assert_eq!(shorten("short"), "short");
        assert_eq!(shorten(&"é".repeat(100)).chars().count(), 81);
    }
}
