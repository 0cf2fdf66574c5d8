//! A real Mumble server on loopback: Debian's murmurd 1.3.4
//! (`scripts/setup.sh` installs `mumble-server`), one per test, with its
//! own ini, database and log in a temporary directory.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where Debian's `mumble-server` installs the server.
pub const MURMURD: &str = "/usr/sbin/murmurd";

/// The user murmurd switches to when started as root.
const MUMBLE_USER: &str = "mumble-server";

/// How long murmurd may take to listen. It is usually about a second (a
/// PBKDF2 benchmark and a new server certificate on first start); a busy
/// 2-core machine running tests in parallel needs more.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running murmurd; stopped when dropped.
pub struct Murmur {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Murmur {
    /// Starts murmurd on a free loopback port with `welcome_text` as its
    /// welcome message (HTML, sent to every client in `ServerSync`), and
    /// waits until it accepts connections.
    pub async fn start(welcome_text: &str) -> Self {
        Self::start_on(crate::synapse::free_port(), welcome_text).await
    }

    /// Starts murmurd on loopback port `port`, for a test that must name
    /// the port before the server's welcome text is known.
    pub async fn start_on(port: u16, welcome_text: &str) -> Self {
        assert!(
            Path::new(MURMURD).exists(),
            "{MURMURD} is missing: run scripts/setup.sh (it installs Debian's mumble-server)"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let as_root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        if as_root {
            // murmurd started as root drops to mumble-server before it
            // opens its database, so the directory must be that user's.
            let (uid, gid) = system_user(MUMBLE_USER).unwrap_or_else(|| {
                panic!(
                    "no {MUMBLE_USER} user: run scripts/setup.sh (Debian's mumble-server adds it)"
                )
            });
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the murmur directory");
        }
        let mut ini = vec![
            format!("database={}", dir.path().join("murmur.sqlite").display()),
            "host=127.0.0.1".to_owned(),
            format!("port={port}"),
            // Empty: log to standard error, which goes to murmur.log.
            "logfile=".to_owned(),
            "pidfile=".to_owned(),
            // Nothing on the network but the loopback port.
            "bonjour=false".to_owned(),
            // Tests connect many times from 127.0.0.1; autoban would lock
            // them out after 10 connections in 2 minutes.
            "autobanAttempts=0".to_owned(),
            format!("welcometext={}", ini_string(welcome_text)),
        ];
        if as_root {
            ini.push(format!("uname={MUMBLE_USER}"));
        }
        let ini = ini.join("\n") + "\n";
        std::fs::write(dir.path().join("murmur.ini"), ini).expect("write murmur.ini");
        let log = std::fs::File::create(dir.path().join("murmur.log")).expect("create murmur.log");
        let child = Command::new(MURMURD)
            .arg("-ini")
            .arg(dir.path().join("murmur.ini"))
            .arg("-fg")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .expect("murmurd starts");
        let mut murmur = Self {
            child: Some(child),
            port,
            dir,
        };
        murmur.wait_listening().await;
        murmur
    }

    /// The address it listens on.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP (and UDP) port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("murmur.log")
    }

    async fn wait_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect((self.host(), self.port))
                .await
                .is_ok()
            {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "murmurd exited ({status}) before listening on port {}; its log ({}):\n{}",
                    self.port,
                    self.log_path().display(),
                    self.log()
                );
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "murmurd did not listen on port {} within {START_TIMEOUT:?}; its log ({}):\n{}",
                    self.port,
                    self.log_path().display(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Murmur {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM lets it close its database; then make sure it is gone.
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        for _ in 0..50 {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `text` as a quoted value of a Qt ini file (murmurd reads its ini with
/// QSettings): backslashes, quotes and line breaks escaped, and a leading
/// `@` doubled, which QSettings would otherwise take for a type tag.
pub fn ini_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    if text.starts_with('@') {
        out.push('@');
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The uid and gid of system user `name`, from /etc/passwd.
fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let (uid, gid) = (fields.nth(1)?, fields.next()?);
        Some((uid.parse().ok()?, gid.parse().ok()?))
    })
}
