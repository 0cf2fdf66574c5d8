//! A real Synapse on loopback, from the project's venv (`scripts/setup.sh`
//! installs it), one per test. It runs on SQLite, like a small
//! deployment, and can be restarted on the same database.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The server name of test homeservers.
pub const DOMAIN: &str = "localhost";

/// Open registration without verification (and a registration shared
/// secret): how ordinary test users get their accounts and tokens.
pub const OPEN_REGISTRATION: &str = "registration_shared_secret: \"test-registration-secret\"
enable_registration: true
enable_registration_without_verification: true";

/// A running Synapse; stopped when dropped.
pub struct Synapse {
    child: Option<Child>,
    /// Its client-server API base URL.
    pub url: String,
    dir: tempfile::TempDir,
}

/// A free loopback port for a server a test starts.
///
/// Taken below the kernel's ephemeral range (32768 and up on Linux), where
/// `bind(0)` and outgoing connections take their ports: a port found free
/// there can be taken by any client connection before the server binds
/// it. And never the same port twice in one test binary; each binary
/// starts at its own offset, so two running at once rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const PORTS: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % PORTS,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..PORTS {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % PORTS;
        let port = u16::try_from(FIRST + offset).expect("below 32000");
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!(
        "no free loopback port between {FIRST} and {}",
        FIRST + PORTS
    );
}

fn venv() -> PathBuf {
    let venv = crate::workspace().join(".venv-synapse");
    assert!(
        venv.join("bin/python").exists(),
        "Synapse is not installed: run scripts/setup.sh (the README's test command does)"
    );
    venv
}

impl Synapse {
    /// Starts Synapse on `port` with the appservice `registration`, and
    /// waits until it answers.
    pub async fn start(port: u16, registration: &Path) -> Self {
        Self::start_with(port, &[registration]).await
    }

    /// Starts Synapse on `port` with several appservice registrations.
    pub async fn start_with(port: u16, registrations: &[&Path]) -> Self {
        Self::start_with_auth(port, registrations, OPEN_REGISTRATION).await
    }

    /// Starts Synapse on `port` with several appservice registrations and
    /// `auth` (homeserver.yaml lines) saying how users get their tokens:
    /// [`OPEN_REGISTRATION`], or delegated auth (`crate::mas`).
    pub(crate) async fn start_with_auth(port: u16, registrations: &[&Path], auth: &str) -> Self {
        let venv = venv();
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let status = Command::new(venv.join("bin/generate_signing_key"))
            .args(["-o", &path("signing.key")])
            .status()
            .expect("generate_signing_key runs");
        assert!(status.success());
        std::fs::write(
            dir.path().join("log.yaml"),
            format!(
                "version: 1\nformatters:\n  precise:\n    format: '%(asctime)s %(name)s %(levelname)s %(message)s'\n\
                 handlers:\n  file:\n    class: logging.FileHandler\n    formatter: precise\n    filename: {}\n\
                 root:\n  level: INFO\n  handlers: [file]\ndisable_existing_loggers: false\n",
                path("homeserver.log")
            ),
        )
        .unwrap();
        let limit = "{per_second: 1000, burst_count: 1000}";
        let config = format!(
            r#"server_name: "{DOMAIN}"
public_baseurl: "http://127.0.0.1:{port}/"
pid_file: "{pid}"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "{db}"
log_config: "{log}"
media_store_path: "{media}"
signing_key_path: "{key}"
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
macaroon_secret_key: "test-macaroon-secret"
form_secret: "test-form-secret"
{auth}
presence:
  enabled: false
# Tests poll /sync for invites; Synapse would serve the same answer for
# two minutes.
caches:
  sync_response_cache_duration: 0
app_service_config_files: [{registrations}]
rc_message: {limit}
rc_registration: {limit}
rc_login:
  address: {limit}
  account: {limit}
  failed_attempts: {limit}
rc_joins:
  local: {limit}
  remote: {limit}
rc_invites:
  per_room: {limit}
  per_user: {limit}
  per_issuer: {limit}
rc_room_creation: {limit}
"#,
            pid = path("homeserver.pid"),
            db = path("homeserver.db"),
            log = path("log.yaml"),
            media = path("media"),
            key = path("signing.key"),
            registrations = registrations
                .iter()
                .map(|r| format!("\"{}\"", r.display()))
                .collect::<Vec<_>>()
                .join(", "),
        );
        std::fs::write(dir.path().join("homeserver.yaml"), config).unwrap();
        let mut synapse = Self {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        synapse.spawn();
        synapse.wait_ready().await;
        synapse
    }

    fn spawn(&mut self) {
        let child = Command::new(venv().join("bin/python"))
            .args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(self.dir.path().join("homeserver.yaml"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("stderr.log"))
                    .unwrap(),
            )
            .spawn()
            .expect("Synapse starts");
        self.child = Some(child);
    }

    /// Stops Synapse cleanly and starts it again on the same database (its
    /// appservice transaction ids start again at 1).
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready().await;
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM lets it stop cleanly; then make sure it is gone.
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        for _ in 0..100 {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            let ready = client
                .get(format!("{}/_matrix/client/versions", self.url))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        panic!("Synapse did not start within 30 s:\n{log}");
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.stop();
    }
}
