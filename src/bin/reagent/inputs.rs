//! `--input key=value` and `--inputs FILE.json`: the values an agent's `inputs:` ask for.

use std::path::PathBuf;

use clap::Args;
use reagent::spec::GivenInputs;

#[derive(Args)]
pub struct InputArgs {
    /// A value for one of the agent's `inputs:`, typed as it declares (repeatable):
    /// --input city=Seoul --input days=3
    #[arg(long = "input", value_name = "KEY=VALUE")]
    input: Vec<String>,
    /// Values for the agent's `inputs:` from a JSON object file; --input overrides them
    #[arg(long = "inputs", value_name = "FILE.json")]
    file: Option<PathBuf>,
}

impl InputArgs {
    pub fn given(&self) -> Result<GivenInputs, String> {
        let from_file = match &self.file {
            None => serde_json::Map::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read --inputs {}: {e}", path.display()))?;
                match serde_json::from_str(&text) {
                    Ok(serde_json::Value::Object(map)) => map,
                    Ok(_) => return Err(format!("--inputs {}: expected a JSON object of inputs", path.display())),
                    Err(e) => return Err(format!("--inputs {}:{}:{}: {e}", path.display(), e.line(), e.column())),
                }
            }
        };
        let from_flags = self
            .input
            .iter()
            .map(|pair| {
                pair.split_once('=')
                    .map(|(key, value)| (key.trim().to_string(), value.to_string()))
                    .ok_or_else(|| format!("--input {pair}: write KEY=VALUE, e.g. --input city=Seoul"))
            })
            .collect::<Result<_, _>>()?;
        Ok(GivenInputs { from_file, from_flags })
    }
}
