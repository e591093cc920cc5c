//! How an MCP server's tool is named for the model: `SERVER__tool`, in the characters and length
//! every provider's function names allow, so that two servers' `search` never collide.

use sha2::{Digest, Sha256};

/// OpenAI's, Anthropic's and MCP's common limit on a function's name.
pub const MAX_NAME: usize = 64;

pub fn exposed_name(server: &str, tool: &str) -> String {
    let name: String = format!("{server}__{tool}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    if name.len() <= MAX_NAME {
        return name;
    }
    // Cut, with a hash of the whole so that two long names sharing a prefix stay apart.
    let hash = Sha256::digest(tool.as_bytes());
    let suffix: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}_{suffix}", &name[..MAX_NAME - suffix.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_sanitised_and_capped() {
        assert_eq!(exposed_name("fs", "read_file"), "fs__read_file");
        assert_eq!(exposed_name("web", "search.v2"), "web__search_v2");
        let long = exposed_name("server", &"x".repeat(100));
        assert_eq!(long.len(), MAX_NAME);
        assert_ne!(long, exposed_name("server", &format!("{}y", "x".repeat(99))));
    }
}
