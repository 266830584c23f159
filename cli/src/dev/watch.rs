//! Rebuilds the functions when their source changes and restarts them, so
//! `chatctl dev` always serves the code on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::runtime::LocalFunction;

/// How often the sources are checked.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The newest modification time of the `.rs` and `.toml` files below `dir`.
fn newest_source(dir: &Path) -> Option<SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "toml")
                && let Ok(modified) = entry.metadata().and_then(|m| m.modified())
            {
                *newest = Some(newest.map_or(modified, |n: SystemTime| n.max(modified)));
            }
        }
    }
    let mut newest = None;
    walk(dir, &mut newest);
    newest
}

/// Each crate in handlers/ and the newest time of its sources.
pub fn snapshot(handlers: &Path) -> BTreeMap<String, Option<SystemTime>> {
    let Ok(entries) = std::fs::read_dir(handlers) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), newest_source(&e.path())))
        .collect()
}

/// The crates whose sources changed between two snapshots.
pub fn changed(
    before: &BTreeMap<String, Option<SystemTime>>,
    after: &BTreeMap<String, Option<SystemTime>>,
) -> Vec<String> {
    after
        .iter()
        .filter(|(name, time)| before.get(*name) != Some(*time))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Watches `root/handlers`; on a change, rebuilds the functions' binary and
/// restarts every function (they all run that binary). A failed build is
/// reported and the running functions keep serving.
pub async fn watch(root: PathBuf, functions: Vec<Arc<LocalFunction>>, report: impl Fn(String)) {
    let handlers = root.join("handlers");
    let mut seen = snapshot(&handlers);
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let now = snapshot(&handlers);
        let crates = changed(&seen, &now);
        seen = now;
        if crates.is_empty() {
            continue;
        }
        report(format!("{} changed: rebuilding", crates.join(", ")));
        let started = std::time::Instant::now();
        match crate::build::build_host(&root).await {
            Ok(()) => {
                for function in &functions {
                    function.restart();
                }
                report(format!(
                    "rebuilt and restarted the {} functions in {:.1} s",
                    functions.len(),
                    started.elapsed().as_secs_f64()
                ));
            }
            Err(err) => report(format!("build failed; still serving the previous build:\n{err:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touched_crate_is_named_and_only_it() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["chat-core", "join", "connect"] {
            std::fs::create_dir_all(dir.path().join(name).join("src")).unwrap();
            std::fs::write(dir.path().join(name).join("src/main.rs"), "fn main() {}").unwrap();
        }
        let before = snapshot(dir.path());
        assert_eq!(before.len(), 3);
        assert!(changed(&before, &snapshot(dir.path())).is_empty());
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("join/src/main.rs"))
            .unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(changed(&before, &snapshot(dir.path())), ["join"]);
    }
}
