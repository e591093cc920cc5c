//! `text_find`, `text_replace`, `text_split`, `text_count`, `text_diff`: the text chores models do
//! badly in their heads.

use reagent_tool::ToolError;
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const MAX_MATCHES: usize = 1_000;

fn compile(pattern: &str) -> Result<Regex, ToolError> {
    Regex::new(pattern).map_err(|e| ToolError::invalid_arguments(format!("`pattern` is not a valid regex: {e}")))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FindArgs {
    text: String,
    /// A regular expression (Rust regex syntax).
    pattern: String,
}

#[derive(Serialize, JsonSchema, Debug, PartialEq)]
struct Found {
    /// The matched text.
    text: String,
    /// Character offset of the match in `text`, from 0.
    start: usize,
    /// Capture groups, in order; null where a group did not take part.
    groups: Vec<Option<String>>,
}

fn text_find(args: FindArgs) -> Result<Vec<Found>, ToolError> {
    let pattern = compile(&args.pattern)?;
    Ok(pattern
        .captures_iter(&args.text)
        .take(MAX_MATCHES)
        .filter_map(|captures| {
            let whole = captures.get(0)?;
            Some(Found {
                text: whole.as_str().to_string(),
                start: args.text[..whole.start()].chars().count(),
                groups: captures.iter().skip(1).map(|g| g.map(|g| g.as_str().to_string())).collect(),
            })
        })
        .collect())
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReplaceArgs {
    text: String,
    /// A regular expression (Rust regex syntax).
    pattern: String,
    /// The replacement; $1 or ${name} refer to capture groups.
    replacement: String,
}

#[derive(Serialize, JsonSchema, Debug, PartialEq)]
struct Replaced {
    text: String,
    replacements: usize,
}

fn text_replace(args: ReplaceArgs) -> Result<Replaced, ToolError> {
    let pattern = compile(&args.pattern)?;
    let replacements = pattern.find_iter(&args.text).count();
    let text = pattern.replace_all(&args.text, args.replacement.as_str()).into_owned();
    Ok(Replaced { text, replacements })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SplitArgs {
    text: String,
    /// The separator, taken literally (default: any whitespace).
    separator: Option<String>,
}

fn text_split(args: SplitArgs) -> Result<Vec<String>, ToolError> {
    Ok(match args.separator.as_deref() {
        None => args.text.split_whitespace().map(str::to_string).collect(),
        Some("") => return Err(ToolError::invalid_arguments("`separator` must not be empty")),
        Some(separator) => args.text.split(separator).map(str::to_string).collect(),
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CountArgs {
    text: String,
}

#[derive(Serialize, JsonSchema, Debug, PartialEq)]
struct Counts {
    characters: usize,
    words: usize,
    lines: usize,
    bytes: usize,
}

fn text_count(args: CountArgs) -> Result<Counts, ToolError> {
    let text = args.text;
    Ok(Counts {
        characters: text.chars().count(),
        words: text.split_whitespace().count(),
        lines: text.lines().count(),
        bytes: text.len(),
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DiffArgs {
    /// The old text.
    before: String,
    /// The new text.
    after: String,
}

#[derive(Serialize, JsonSchema, Debug, PartialEq)]
struct Diff {
    /// A unified diff (lines starting with -, + or a space).
    unified: String,
    added: usize,
    removed: usize,
}

fn text_diff(args: DiffArgs) -> Result<Diff, ToolError> {
    let diff = similar::TextDiff::from_lines(&args.before, &args.after);
    let (mut added, mut removed) = (0, 0);
    for change in diff.iter_all_changes() {
        match change.tag() {
            similar::ChangeTag::Insert => added += 1,
            similar::ChangeTag::Delete => removed += 1,
            similar::ChangeTag::Equal => {}
        }
    }
    let unified = diff.unified_diff().header("before", "after").to_string();
    Ok(Diff { unified, added, removed })
}

reagent_tool::export_tools! {
    text_find: Pure => "Finds the matches of a regular expression in a text, with positions and capture groups.",
    text_replace: Pure => "Replaces every match of a regular expression in a text.",
    text_split: Pure => "Splits a text on a separator, or on whitespace.",
    text_count: Pure => "Counts the characters, words, lines and bytes of a text.",
    text_diff: Pure => "Compares two texts line by line and returns a unified diff.",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_and_replace() {
        let found = text_find(FindArgs { text: "é a1 b22".into(), pattern: r"([a-z])(\d+)".into() }).unwrap();
        assert_eq!(found[0], Found { text: "a1".into(), start: 2, groups: vec![Some("a".into()), Some("1".into())] });
        assert_eq!(found.len(), 2);
        let replaced =
            text_replace(ReplaceArgs { text: "a1 b22".into(), pattern: r"(\d+)".into(), replacement: "<$1>".into() })
                .unwrap();
        assert_eq!(replaced, Replaced { text: "a<1> b<22>".into(), replacements: 2 });
        assert!(text_find(FindArgs { text: "".into(), pattern: "(".into() }).unwrap_err().message.contains("regex"));
    }

    #[test]
    fn split_count_diff() {
        assert_eq!(text_split(SplitArgs { text: " a  b\nc ".into(), separator: None }).unwrap(), ["a", "b", "c"]);
        assert_eq!(text_split(SplitArgs { text: "a,b".into(), separator: Some(",".into()) }).unwrap(), ["a", "b"]);
        assert_eq!(
            text_count(CountArgs { text: "héllo world\nbye".into() }).unwrap(),
            Counts { characters: 15, words: 3, lines: 2, bytes: 16 }
        );
        let diff = text_diff(DiffArgs { before: "a\nb\nc\n".into(), after: "a\nB\nc\nd\n".into() }).unwrap();
        assert_eq!((diff.added, diff.removed), (2, 1));
        assert!(diff.unified.contains("-b\n+B\n"), "{}", diff.unified);
    }
}
