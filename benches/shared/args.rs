//! The benchmarks' command-line numbers: `--name N`.

/// The whole number after `name` on the command line, or `default`.
pub fn number(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{name} takes a whole number")))
        .unwrap_or(default)
}
