//! The local AWS endpoint: a moto server started through the project's
//! launcher (emulator/moto_server.py, which closes the gaps in moto that
//! `up` would hit), stopped when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Emulator {
    child: Child,
    endpoint: String,
}

impl Emulator {
    pub fn start(root: &Path) -> Result<Emulator> {
        let python = root.join(".venv/bin/python");
        if !python.exists() {
            bail!("the local AWS emulator is not installed: run scripts/setup (or scripts/dev)");
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        use std::os::unix::process::CommandExt;
        let child = Command::new(&python)
            // Its own process group: a Ctrl-C in the terminal reaches only
            // chatctl, which stops the emulator after the last `$disconnect`.
            // The launcher exits by itself when chatctl is gone.
            .process_group(0)
            .arg(root.join("emulator/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the moto server")?;
        let mut emulator = Emulator {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = emulator.child.try_wait() {
                bail!("the moto server exited at start ({status})");
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!("the moto server did not start within {STARTUP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(emulator)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
