//! Printing: progress on a terminal, plain lines when piped, and the shared
//! shapes of text and JSON output. Library code returns values; only this
//! module and `commands` print.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::stack::apply::Step;

/// Step-by-step progress: a spinner on a terminal, one line per step otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    /// `quiet` for JSON output, where only the final document is printed.
    pub fn start(message: &str, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(message.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress { bar, quiet }
    }

    pub fn step(&self, step: Step) {
        self.line(&format!("  {} {}: {}", step.kind, step.name, step.done));
    }

    /// A line above the spinner on a terminal; on stderr otherwise.
    pub fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    /// What the spinner says (on a terminal only).
    /// Runs `f` (a question on the terminal, say) with the spinner hidden.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    pub fn set_message(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The stack's endpoints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Outputs {
    pub api_id: String,
    pub websocket_url: String,
    pub connections_url: String,
}

impl Outputs {
    /// The endpoints of the stack's API `api_id`: on its `[domain]` when it
    /// has one (mapped at the root, so no stage in the path); `@connections`
    /// on the API's own endpoint unless that is turned off (aws-facts.md
    /// §11, "custom domain and `@connections`").
    pub fn of(names: &crate::stack::Names, api_id: &str, domain: Option<&crate::stack::domain::DomainSpec>) -> Outputs {
        let (websocket_url, connections_url) = match domain {
            None => (names.websocket_url(api_id), names.callback_url(api_id)),
            Some(domain) if domain.disable_execute_api => (
                format!("wss://{}", domain.name),
                format!("https://{}/@connections", domain.name),
            ),
            Some(domain) => (format!("wss://{}", domain.name), names.callback_url(api_id)),
        };
        Outputs {
            api_id: api_id.to_string(),
            websocket_url,
            connections_url,
        }
    }
}

impl std::fmt::Display for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "WebSocket URL:     {}", self.websocket_url)?;
        write!(f, "@connections URL:  {}", self.connections_url)
    }
}

/// One pretty JSON document on stdout. A closed stdout is the io::Error
/// it is (not serde_json's wrapper), so that `main` can tell it.
pub fn print_json(value: &impl Serialize) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value).map_err(std::io::Error::from)?;
    writeln!(stdout)?;
    Ok(())
}

/// One JSON document on one line of stdout (a stream of snapshots, events).
pub fn print_json_line(value: &impl Serialize) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value).map_err(std::io::Error::from)?;
    writeln!(stdout)?;
    Ok(())
}

/// Asks a yes/no question; refuses rather than hangs without a terminal.
pub fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "{question}\nrefusing to go on without confirmation because stdin is not a terminal; pass --yes to proceed"
        );
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
