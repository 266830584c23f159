//! A moto server per test, killed when the test ends.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// Overrides the Python that runs the moto server (it must have `moto[server]`).
pub const PYTHON_VAR: &str = "CHATCTL_PYTHON";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
pub const REGION: &str = "us-east-1";
pub const ACCOUNT_ID: &str = "123456789012";

pub struct Moto {
    child: Child,
    endpoint: String,
}

/// `$CHATCTL_PYTHON`, else the project's virtualenv (made by `scripts/setup`),
/// else `python3` from the PATH.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os(PYTHON_VAR) {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

/// Our launcher, which closes moto's gaps before starting it (see the script).
fn launcher() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../emulator/moto_server.py")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("no free loopback port")
}

impl Moto {
    /// Starts a moto server and waits until it accepts connections.
    pub fn start() -> Moto {
        let python = python();
        let port = free_port();
        let child = Command::new(&python)
            .arg(launcher())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the moto server with {}: {e}; run scripts/setup, or set {PYTHON_VAR}",
                    python.display()
                )
            });
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto server exited at start: {status}");
            }
            assert!(started.elapsed() < STARTUP_TIMEOUT, "moto server did not start in time");
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An SDK configuration that talks to this server with test credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint).await
    }
}

pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(test_credentials())
        .endpoint_url(endpoint)
        .load()
        .await
}

/// The deployer's test credentials.
pub fn test_credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "chat-testkit")
}

/// A function role's session, as Lambda gives one.
pub fn role_credentials() -> Credentials {
    Credentials::new(
        "ASIATESTINGROLE",
        "testing",
        Some("role-session-token".into()),
        None,
        "chat-testkit-role",
    )
}

/// Like [`sdk_config_for`], signed as a Lambda function's role signs:
/// temporary credentials with a session token (Lambda gives a function
/// `AWS_SESSION_TOKEN`, docs "configuration-envvars"). The behaviour layer
/// takes such calls for the role's (`permission_propagation`).
pub async fn role_sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(role_credentials())
        .endpoint_url(endpoint)
        .load()
        .await
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
