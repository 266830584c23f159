//! Rebuilds the functions when their source changes and restarts them, so
//! `chatctl dev` always serves the code on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::runtime::LocalFunction;

/// How often the sources are checked.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The newest modification time among the handlers' sources and manifests.
pub fn newest_source(handlers: &Path) -> Option<SystemTime> {
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
    walk(handlers, &mut newest);
    newest
}

/// Watches `root/handlers`; on a change, rebuilds and restarts every function.
/// Build failures are reported and the running functions keep serving.
pub async fn watch(root: PathBuf, functions: Vec<Arc<LocalFunction>>, report: impl Fn(String)) {
    let handlers = root.join("handlers");
    let mut seen = newest_source(&handlers);
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let now = newest_source(&handlers);
        if now == seen {
            continue;
        }
        seen = now;
        report("source changed: rebuilding the functions".into());
        let started = std::time::Instant::now();
        match crate::build::build_host(&root).await {
            Ok(()) => {
                for function in &functions {
                    function.restart();
                }
                report(format!(
                    "rebuilt and restarted in {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
            }
            Err(err) => report(format!("build failed; still serving the previous build:\n{err:#}")),
        }
    }
}
