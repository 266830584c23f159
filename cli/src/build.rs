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

/// The repository root: the nearest directory up from `start` with handlers/chat-core.
pub fn find_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join("handlers/chat-core/Cargo.toml").exists())
        .map(Path::to_path_buf)
}

/// Runs `cargo lambda build --release --output-format zip` in `root`.
pub async fn build(root: &Path, arch: Arch) -> Result<()> {
    let mut command = tokio::process::Command::new("cargo");
    command
        .current_dir(root)
        .args(["lambda", "build", "--release", "--output-format", "zip"]);
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
    let output = command
        .output()
        .await
        .context("cannot run `cargo lambda`; install it with scripts/setup")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        if stderr.contains("no such command") || stderr.contains("no such subcommand") {
            bail!("cargo-lambda is not installed; run scripts/setup (or pip install cargo-lambda)");
        }
        bail!("building the functions failed:\n{}", tail.join("\n"));
    }
    Ok(())
}

/// Builds the functions for this machine (for `chatctl dev`): target/debug/<name>.
pub async fn build_host(root: &Path) -> Result<()> {
    // The whole workspace's binaries, so that features resolve as in every
    // other build and nothing is compiled twice.
    let mut command = tokio::process::Command::new("cargo");
    command
        .current_dir(root)
        .args(["build", "--quiet", "--workspace", "--bins"]);
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
    let dir = root.join("target/dev");
    std::fs::create_dir_all(&dir)?;
    let zip = dir.join("placeholder.zip");
    if !zip.exists() {
        let status = std::process::Command::new(root.join(".venv/bin/python"))
            .args([
                "-c",
                "import sys, zipfile\n\
                 info = zipfile.ZipInfo('bootstrap', (2026, 1, 1, 0, 0, 0))\n\
                 info.external_attr = 0o755 << 16\n\
                 zipfile.ZipFile(sys.argv[1], 'w').writestr(info, '#!/bin/sh\\necho this function runs under chatctl dev\\n')",
            ])
            .arg(&zip)
            .status()
            .context("cannot run the project's Python; run scripts/setup")?;
        anyhow::ensure!(status.success(), "cannot write {}", zip.display());
    }
    let bytes = std::fs::read(&zip)?;
    Ok(Code {
        zip,
        sha256: code_sha256(&bytes),
    })
}

/// Reads each function's zip from `lambda_dir/<name>/bootstrap.zip`.
pub fn read_zips(lambda_dir: &Path) -> Result<BTreeMap<Function, Code>> {
    let mut code = BTreeMap::new();
    for function in Function::ALL {
        let zip = lambda_dir.join(function.short_name()).join("bootstrap.zip");
        let bytes = std::fs::read(&zip).with_context(|| {
            format!(
                "cannot read {}; build the functions (drop --no-build) or pass --lambda-dir",
                zip.display()
            )
        })?;
        code.insert(
            function,
            Code {
                zip,
                sha256: code_sha256(&bytes),
            },
        );
    }
    Ok(code)
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
    fn missing_zips_name_the_file_and_the_fix() {
        let dir = std::env::temp_dir().join("chatctl-no-zips");
        let err = read_zips(&dir).unwrap_err();
        assert!(format!("{err:#}").contains("authorizer/bootstrap.zip"));
        assert!(format!("{err:#}").contains("--lambda-dir"));
    }
}
