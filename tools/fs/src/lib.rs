//! `fs_read`, `fs_write`, `fs_list`, `fs_find`, `fs_grep`: files inside the directories the agent
//! grants (e.g. `/data`). The host confines every path to those grants: `..` and symlinks cannot
//! leave them, and a read-only grant cannot be written.

use std::path::{Path, PathBuf};

use reagent_tool::ToolError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const MAX_ENTRIES: usize = 1_000;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    /// The file, e.g. /data/notes.txt
    path: String,
    /// The most bytes to return (default 262144).
    max_bytes: Option<usize>,
}

#[derive(Serialize, JsonSchema)]
struct FileText {
    text: String,
    /// The file is longer than what was returned.
    truncated: bool,
}

fn fs_read(args: ReadArgs) -> Result<FileText, ToolError> {
    let bytes = std::fs::read(&args.path).map_err(|e| io(&args.path, e))?;
    let max = args.max_bytes.unwrap_or(256 << 10);
    let truncated = bytes.len() > max;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    Ok(FileText { text, truncated })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    /// The file, e.g. /data/out.txt; its folder must exist.
    path: String,
    content: String,
    /// Add to the end of the file instead of replacing it.
    #[serde(default)]
    append: bool,
}

#[derive(Serialize, JsonSchema)]
struct Written {
    bytes: usize,
}

fn fs_write(args: WriteArgs) -> Result<Written, ToolError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(args.append)
        .truncate(!args.append)
        .open(&args.path)
        .map_err(|e| io(&args.path, e))?;
    file.write_all(args.content.as_bytes()).map_err(|e| io(&args.path, e))?;
    Ok(Written { bytes: args.content.len() })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    /// The folder, e.g. /data
    path: String,
}

#[derive(Serialize, JsonSchema)]
struct Entry {
    name: String,
    kind: Kind,
    /// Bytes, for files.
    size: Option<u64>,
}

#[derive(Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    File,
    Dir,
    Other,
}

fn fs_list(args: ListArgs) -> Result<Vec<Entry>, ToolError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(&args.path).map_err(|e| io(&args.path, e))?.take(MAX_ENTRIES) {
        let entry = entry.map_err(|e| io(&args.path, e))?;
        let metadata = entry.metadata().ok();
        let kind = match &metadata {
            Some(m) if m.is_dir() => Kind::Dir,
            Some(m) if m.is_file() => Kind::File,
            _ => Kind::Other,
        };
        let size = metadata.filter(|m| m.is_file()).map(|m| m.len());
        entries.push(Entry { name: entry.file_name().to_string_lossy().into_owned(), kind, size });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FindArgs {
    /// The folder to search, recursively, e.g. /data
    path: String,
    /// A part of the file name, e.g. ".csv"
    name_contains: String,
}

fn fs_find(args: FindArgs) -> Result<Vec<String>, ToolError> {
    let mut found = Vec::new();
    walk(Path::new(&args.path), &mut |file| {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.contains(&args.name_contains) {
            found.push(file.display().to_string());
        }
        found.len() < MAX_ENTRIES
    })?;
    found.sort();
    Ok(found)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GrepArgs {
    /// A file or a folder (searched recursively), e.g. /data
    path: String,
    /// A regular expression (Rust regex syntax), e.g. "error|warning"
    pattern: String,
    /// The most matches to return (default 100).
    max_matches: Option<usize>,
}

#[derive(Serialize, JsonSchema)]
struct Match {
    path: String,
    /// 1-based.
    line: usize,
    text: String,
}

fn fs_grep(args: GrepArgs) -> Result<Vec<Match>, ToolError> {
    let pattern = regex::Regex::new(&args.pattern)
        .map_err(|e| ToolError::invalid_arguments(format!("`pattern` is not a valid regex: {e}")))?;
    let max = args.max_matches.unwrap_or(100);
    let mut matches = Vec::new();
    let mut search = |file: &Path| {
        if let Ok(text) = std::fs::read_to_string(file) {
            for (index, line) in text.lines().enumerate() {
                if matches.len() >= max {
                    return false;
                }
                if pattern.is_match(line) {
                    matches.push(Match { path: file.display().to_string(), line: index + 1, text: line.to_string() });
                }
            }
        }
        matches.len() < max
    };
    let root = Path::new(&args.path);
    if root.is_file() {
        search(root);
    } else {
        walk(root, &mut search)?;
    }
    Ok(matches)
}

/// Visits the files under `dir` (not following symlinks) until `visit` returns false.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path) -> bool) -> Result<bool, ToolError> {
    let display = dir.display().to_string();
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(|e| io(&display, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else { continue };
        let keep_going = if metadata.is_dir() { walk(&path, visit)? } else { !metadata.is_file() || visit(&path) };
        if !keep_going {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Names the path in the error and the next step, so the model knows which one failed, why,
/// and what to call instead.
fn io(path: &str, error: std::io::Error) -> ToolError {
    use std::io::ErrorKind;
    let next = match error.kind() {
        ErrorKind::NotADirectory => " — it is a file: read it with fs_read",
        ErrorKind::IsADirectory => " — it is a folder: list it with fs_list, or search it with fs_find or fs_grep",
        ErrorKind::NotFound => " — list its folder with fs_list to see what is there, or search by name with fs_find",
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            " — only folders granted read-write (`mode: rw`) can be written, and nothing outside the granted folders is reachable"
        }
        _ => "",
    };
    let mut tool_error = ToolError::from(error);
    tool_error.message = format!("{path}: {}{next}", tool_error.message);
    tool_error
}

reagent_tool::export_tools! {
    fs_read: Idempotent => "Reads a text file inside the granted folders.",
    fs_write: SideEffect => "Writes (or appends to) a text file inside the granted read-write folders.",
    fs_list: Idempotent => "Lists a folder: names, kinds (file, dir) and sizes.",
    fs_find: Idempotent => "Finds files under a folder whose names contain a text.",
    fs_grep: Idempotent => "Searches files under a folder (or one file) for lines matching a regular expression.",
}
