//! Building the functions' zips with cargo-lambda, and hashing them the way
//! Lambda reports `CodeSha256`, so unchanged code is never uploaded again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::settings::Arch;
use crate::stack::Function;
use crate::stack::desired::Code;

/// The one binary behind every function (handlers/chat-functions), which
/// serves the function its Handler setting names. cargo-lambda zips it to
/// `<lambda dir>/chat-functions/bootstrap.zip`, and every function deploys that zip.
pub const BINARY: &str = "chat-functions";

/// The repository root: the nearest directory up from `start` with handlers/chat-core.
pub fn find_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join("handlers/chat-core/Cargo.toml").exists())
        .map(Path::to_path_buf)
}

/// Where cargo writes the workspace's output: `CARGO_TARGET_DIR` when set
/// (relative to the root), else `root/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Where cargo-lambda's x86_64 build goes, under the target directory.
pub const LAMBDA_X86_64_TARGET: &str = "x86_64-unknown-linux-gnu";

/// What a build reports while cargo runs.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildProgress {
    /// cargo began compiling this crate.
    Compiling(String),
    /// The functions' binary is compiled anew (its zip follows).
    Built,
}

/// What a finished build did.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// Whether the functions' binary was compiled anew (else it was up to date).
    pub compiled: bool,
    pub elapsed: std::time::Duration,
}

/// The command `build` runs, as a user would type it.
pub fn build_command(arch: Arch) -> String {
    let arm = if arch == Arch::Arm64 { " --arm64" } else { "" };
    format!("cargo lambda build --release --output-format zip{arm}")
}

/// Runs `cargo lambda build --release --output-format zip` in `root`,
/// reporting each crate cargo compiles and when the functions' binary is done.
pub async fn build(root: &Path, arch: Arch, mut progress: impl FnMut(BuildProgress)) -> Result<Built> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let started = std::time::Instant::now();
    let mut command = tokio::process::Command::new("cargo");
    command.current_dir(root).args([
        "lambda",
        "build",
        "--release",
        "--output-format",
        "zip",
        // Artifacts as JSON on stdout; cargo's status and errors stay text on stderr.
        "--message-format",
        "json-render-diagnostics",
    ]);
    if arch == Arch::Arm64 {
        command.arg("--arm64");
    }
    // cargo-lambda installed by scripts/setup lives in the project's virtualenv.
    let venv = root.join(".venv/bin");
    if venv.exists() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![venv];
        paths.extend(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(paths)?);
    }
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run `cargo lambda`; install it with scripts/setup")?;
    let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let mut stderr = BufReader::new(child.stderr.take().context("no stderr")?).lines();
    let (mut stdout_open, mut stderr_open) = (true, true);
    let mut compiled = false;
    let mut errors = vec![];
    while stdout_open || stderr_open {
        tokio::select! {
            line = stdout.next_line(), if stdout_open => match line? {
                Some(line) => {
                    if is_binary_built(&line) {
                        progress(BuildProgress::Built);
                        compiled = true;
                    }
                }
                None => stdout_open = false,
            },
            line = stderr.next_line(), if stderr_open => match line? {
                Some(line) => match line.trim_start().strip_prefix("Compiling ") {
                    Some(unit) => progress(BuildProgress::Compiling(unit.split(' ').next().unwrap_or(unit).to_string())),
                    None => errors.push(line),
                },
                None => stderr_open = false,
            },
        }
    }
    let status = child.wait().await?;
    if !status.success() {
        let text = errors.join("\n");
        if text.contains("no such command") || text.contains("no such subcommand") {
            bail!("cargo-lambda is not installed; run scripts/setup (or pip install cargo-lambda)");
        }
        let tail: Vec<&str> = errors.iter().map(String::as_str).rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "building the functions failed:\n{}\nto see it again: (cd {} && {})",
            tail.join("\n"),
            root.display(),
            build_command(arch)
        );
    }
    Ok(Built {
        compiled,
        elapsed: started.elapsed(),
    })
}

/// Whether a cargo JSON message says the functions' binary was compiled anew.
fn is_binary_built(message: &str) -> bool {
    let Ok(message) = serde_json::from_str::<serde_json::Value>(message) else {
        return false;
    };
    let is_bin = message["target"]["kind"]
        .as_array()
        .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"));
    message["reason"] == "compiler-artifact"
        && message["fresh"] == false
        && is_bin
        && message["target"]["name"] == BINARY
}

/// Builds the functions for this machine (for `chatctl dev`): target/debug/chat-functions.
pub async fn build_host(root: &Path) -> Result<()> {
    // `--workspace`, so that features resolve as in every other build and no
    // dependency is compiled twice; `--bin`, so that only the functions'
    // binary is built, not chatctl (which depends on chat-core too), which
    // took `dev`'s rebuild after a chat-core edit from 9-10 s to 7 s.
    let mut command = tokio::process::Command::new("cargo");
    command
        .current_dir(root)
        .args(["build", "--quiet", "--workspace", "--bin", BINARY]);
    let output = command.output().await.context("cannot run cargo")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("building the functions failed:\n{}", stderr.trim_end());
    }
    Ok(())
}

/// The code `chatctl dev` uploads to the emulator, which never runs it: a
/// zip holding a `bootstrap` that says where the function really runs.
pub fn placeholder_zip(root: &Path) -> Result<Code> {
    let dir = target_dir(root).join("dev");
    std::fs::create_dir_all(&dir)?;
    let zip = dir.join("placeholder.zip");
    if !zip.exists() {
        use std::io::Write;
        let file = std::fs::File::create(&zip).with_context(|| format!("cannot write {}", zip.display()))?;
        let mut writer = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o755);
        writer.start_file("bootstrap", options)?;
        writer.write_all(b"#!/bin/sh\necho this function runs under chatctl dev\n")?;
        writer
            .finish()
            .with_context(|| format!("cannot write {}", zip.display()))?;
    }
    let bytes = std::fs::read(&zip)?;
    Ok(Code {
        zip,
        sha256: code_sha256(&bytes),
    })
}

/// Every function's code: the functions' binary, zipped at
/// `lambda_dir/chat-functions/bootstrap.zip`.
pub fn read_zips(lambda_dir: &Path) -> Result<BTreeMap<Function, Code>> {
    let zip = lambda_dir.join(BINARY).join("bootstrap.zip");
    let bytes = std::fs::read(&zip).with_context(|| {
        format!(
            "cannot read {}; build the functions (drop --no-build) or pass --lambda-dir",
            zip.display()
        )
    })?;
    Ok(for_every_function(Code {
        sha256: code_sha256(&bytes),
        zip,
    }))
}

/// `code` as the code of each of the seven functions, which share one binary.
pub fn for_every_function(code: Code) -> BTreeMap<Function, Code> {
    Function::ALL
        .into_iter()
        .map(|function| (function, code.clone()))
        .collect()
}

/// base64(SHA-256(zip)), as Lambda's `CodeSha256`.
pub fn code_sha256(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_lambda_format() {
        // SHA-256 of the empty input, base64.
        assert_eq!(code_sha256(b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }

    #[test]
    fn only_the_functions_binary_compiled_anew_counts_as_built() {
        let artifact = |name: &str, kind: &str, fresh: bool| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "target": {"name": name, "kind": [kind]},
                "fresh": fresh,
            })
            .to_string()
        };
        assert!(is_binary_built(&artifact("chat-functions", "bin", false)));
        assert!(!is_binary_built(&artifact("chat-functions", "bin", true)), "up to date");
        assert!(!is_binary_built(&artifact("chat_core", "lib", false)));
        assert!(
            !is_binary_built(&artifact("chatctl", "bin", false)),
            "not the functions"
        );
        assert!(!is_binary_built(r#"{"reason":"build-finished","success":true}"#));
        assert!(!is_binary_built("not json"));
        assert_eq!(
            build_command(Arch::Arm64),
            "cargo lambda build --release --output-format zip --arm64"
        );
    }

    #[test]
    fn missing_zips_name_the_file_and_the_fix() {
        let dir = std::env::temp_dir().join("chatctl-no-zips");
        let err = read_zips(&dir).unwrap_err();
        assert!(format!("{err:#}").contains("chat-functions/bootstrap.zip"));
        assert!(format!("{err:#}").contains("--lambda-dir"));
    }
}
