//! A homeserver with OAuth-delegated auth (MSC3861, "MAS mode"): a real
//! Synapse whose users' tokens come from an OAuth 2.0 server, as they do
//! from the Matrix Authentication Service (MAS) in deployments. MAS is not
//! installable here; `oidc-provider` (npm, `tests/oidc/server.mjs`, installed
//! by `scripts/setup.sh`) stands in for it, as
//! `shared/reference/real-servers-for-tests.md` describes.
//!
//! In this mode Synapse has no registration and no password login: a user
//! exists once MAS provisions them (`/_synapse/mas/provision_user`), and a
//! token works once Synapse's introspection at MAS says it is active, for an
//! existing user (`username`) and an existing device (a
//! `urn:matrix:client:device:<ID>` scope). Application services keep their
//! as_token, but `/login` is gone and `/register` needs `inhibit_login`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::synapse::{Synapse, free_port};

/// The secret Synapse and MAS share: Synapse's introspection credential,
/// and MAS's credential on Synapse's `/_synapse/mas/*` API.
pub const SHARED_SECRET: &str = "test-mas-shared-secret-0123456789";
/// The client id Synapse introspects as (MAS's own id for Synapse).
pub const SYNAPSE_CLIENT_ID: &str = "0000000000000000000SYNAPSE";
/// The static client of weft itself (client credentials): for token
/// introspection, and for the bridge bot's own tokens (its tokens carry
/// the bot's localpart).
pub const WEFT_CLIENT_ID: &str = "weft";
/// The secret of [`WEFT_CLIENT_ID`].
pub const WEFT_CLIENT_SECRET: &str = "test-weft-client-secret-0123456789";
/// How long tokens of [`WEFT_CLIENT_ID`] (the bot's, when it is an OAuth
/// client) live.
pub const BOT_TOKEN_TTL_SECS: u64 = 8;
/// The scope granting the client-server API.
pub const API_SCOPE: &str = "urn:matrix:client:api:*";
/// The test rig's own client, allowed to revoke any token.
const RIG_CLIENT_ID: &str = "weft-test-rig";
const RIG_CLIENT_SECRET: &str = "test-rig-client-secret-0123456789";
/// The initial access token for dynamic client registration (one client
/// per test user).
const REGISTRATION_TOKEN: &str = "test-mas-registration-token";

/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The scope binding a token to `device`.
pub fn device_scope(device: &str) -> String {
    format!("urn:matrix:client:device:{device}")
}

/// A Synapse in MAS mode with its OAuth server; both stop when dropped.
pub struct DelegatedHomeserver {
    /// The homeserver (stops first: declared first).
    pub synapse: Synapse,
    /// The OAuth server standing in for MAS, and what MAS does to Synapse.
    pub mas: Mas,
}

impl DelegatedHomeserver {
    /// Starts both on free ports, Synapse with the appservice
    /// `registrations`.
    pub async fn start(registrations: &[&Path]) -> Self {
        Self::start_on(free_port(), registrations).await
    }

    /// Starts both, Synapse on `port` (for configs written before it runs).
    /// The two start side by side.
    pub async fn start_on(port: u16, registrations: &[&Path]) -> Self {
        crate::init_logging();
        let homeserver = format!("http://127.0.0.1:{port}");
        // The weft client's tokens are the bridge bot's.
        let bot = registrations.first().map(|path| {
            weft_host::matrix::registration::read(path)
                .expect("the first registration is readable")
                .sender_localpart
        });
        let (mas, ready) = Mas::spawn(&homeserver, bot.as_deref());
        let auth = format!(
            "enable_registration: false\n\
             matrix_authentication_service:\n  enabled: true\n  endpoint: \"{}\"\n  secret: \"{SHARED_SECRET}\"",
            mas.issuer
        );
        let (synapse, ready) = tokio::join!(
            Synapse::start_with_auth(port, registrations, &auth),
            tokio::task::spawn_blocking(ready),
        );
        if let Err(error) = ready {
            std::panic::resume_unwind(error.into_panic());
        }
        Self { synapse, mas }
    }

    /// Synapse's client-server API base URL.
    pub fn url(&self) -> &str {
        &self.synapse.url
    }
}

impl std::ops::Deref for DelegatedHomeserver {
    type Target = Mas;

    fn deref(&self) -> &Mas {
        &self.mas
    }
}

/// The OAuth server (oidc-provider) standing in for MAS; stopped when
/// dropped (and it stops by itself when this process dies: its stdin
/// closes).
pub struct Mas {
    child: Child,
    /// Held open: the server exits when it closes.
    _stdin: ChildStdin,
    issuer: String,
    homeserver: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

fn oidc_dir() -> PathBuf {
    let dir = crate::workspace().join("tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "oidc-provider is not installed in {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// A random device id, as MAS makes them.
fn new_device_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// An `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

impl Mas {
    /// Starts the server for `homeserver`; returns it and a blocking wait
    /// for its ready line. `bot` is the localpart weft's client acts as.
    fn spawn(homeserver: &str, bot: Option<&str>) -> (Self, impl FnOnce() + Send + 'static) {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}/");
        let config = json!({
            "port": port,
            "issuer": issuer,
            "homeserver": format!("{homeserver}/"),
            "account_management_uri": format!("{issuer}account"),
            "introspection": { "client_id": SYNAPSE_CLIENT_ID, "secret": SHARED_SECRET },
            "registration_token": REGISTRATION_TOKEN,
            "clients": [
                // Short-lived tokens, so a test sees the bot renew its own.
                { "client_id": WEFT_CLIENT_ID, "client_secret": WEFT_CLIENT_SECRET, "localpart": bot, "token_ttl": BOT_TOKEN_TTL_SECS },
                { "client_id": RIG_CLIENT_ID, "client_secret": RIG_CLIENT_SECRET, "admin": true },
            ],
        });
        let config_path = dir.path().join("oidc.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log_path = dir.path().join("oidc.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let oidc = oidc_dir();
        let mut child = Command::new("node")
            .arg(oidc.join("server.mjs"))
            .arg(&config_path)
            .current_dir(&oidc)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .expect("node runs (scripts/setup.sh installs it)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        // Copies its stdout into the log, and reports the ready line.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = log;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if line.starts_with("ready ") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let wait = move || match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(()) => {}
            Err(error) => panic!(
                "oidc-provider did not print its ready line within {START_TIMEOUT:?} ({error}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        };
        let mas = Self {
            child,
            _stdin: stdin,
            issuer,
            homeserver: homeserver.to_owned(),
            http: reqwest::Client::new(),
            dir,
        };
        (mas, wait)
    }

    /// The issuer (and MAS endpoint), with its trailing slash.
    pub fn issuer_url(&self) -> &str {
        &self.issuer
    }

    /// Weft's client id.
    pub fn weft_client_id(&self) -> &'static str {
        WEFT_CLIENT_ID
    }

    /// Weft's client secret.
    pub fn weft_client_secret(&self) -> &'static str {
        WEFT_CLIENT_SECRET
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("oidc.log")).unwrap_or_default()
    }

    /// Calls Synapse's `/_synapse/mas/<call>` as MAS does; returns the
    /// status.
    async fn synapse_mas(&self, call: &str, body: Value) -> u16 {
        let response = self
            .http
            .post(format!("{}/_synapse/mas/{call}", self.homeserver))
            .bearer_auth(SHARED_SECRET)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert!(
            (200..300).contains(&status),
            "/_synapse/mas/{call} {body} answered {status}: {text}"
        );
        status
    }

    /// Creates the Matrix user `localpart` (as MAS does when someone signs
    /// up).
    pub async fn provision_user(&self, localpart: &str) {
        self.synapse_mas("provision_user", json!({ "localpart": localpart }))
            .await;
    }

    /// Creates (or keeps) device `device_id` of `localpart`.
    pub async fn upsert_device(&self, localpart: &str, device_id: &str) {
        self.synapse_mas(
            "upsert_device",
            json!({ "localpart": localpart, "device_id": device_id }),
        )
        .await;
    }

    /// Deletes device `device_id` of `localpart` (as MAS does when a
    /// session ends): its tokens stop working at once.
    pub async fn delete_device(&self, localpart: &str, device_id: &str) {
        self.synapse_mas(
            "delete_device",
            json!({ "localpart": localpart, "device_id": device_id }),
        )
        .await;
    }

    /// An access token of the provisioned user `localpart` on a new device.
    pub async fn token_for(&self, localpart: &str) -> String {
        self.token_for_device(localpart, &new_device_id()).await
    }

    /// An access token of the provisioned user `localpart` on `device_id`
    /// (created if new): a client-credentials grant for a client of that
    /// user, with the API scope and the device's scope.
    pub async fn token_for_device(&self, localpart: &str, device_id: &str) -> String {
        self.upsert_device(localpart, device_id).await;
        let client: Value = self
            .http
            .post(format!("{}reg", self.issuer))
            .bearer_auth(REGISTRATION_TOKEN)
            .json(&json!({
                "client_name": format!("test session of {localpart}"),
                "grant_types": ["client_credentials"],
                "response_types": [],
                "redirect_uris": [],
                "token_endpoint_auth_method": "client_secret_basic",
                "matrix_localpart": localpart,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (Some(id), Some(secret)) = (
            client["client_id"].as_str(),
            client["client_secret"].as_str(),
        ) else {
            panic!("client registration failed: {client}");
        };
        self.client_credentials(id, secret, &[API_SCOPE, &device_scope(device_id)])
            .await
    }

    /// A client-credentials grant for client `id` with `scopes`; returns
    /// the access token.
    pub async fn client_credentials(&self, id: &str, secret: &str, scopes: &[&str]) -> String {
        let scope = scopes.join(" ");
        let response: Value = self
            .http
            .post(format!("{}oauth2/token", self.issuer))
            .basic_auth(id, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("grant_type", "client_credentials"),
                ("scope", &scope),
            ]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            response["scope"].as_str(),
            Some(scope.as_str()),
            "the token has every scope asked for: {response}"
        );
        response["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {response}"))
            .to_owned()
    }

    /// Revokes `token` at MAS. Synapse may go on accepting it for the two
    /// minutes it caches an introspection.
    pub async fn revoke(&self, token: &str) {
        let response = self
            .http
            .post(format!("{}oauth2/revoke", self.issuer))
            .basic_auth(RIG_CLIENT_ID, Some(RIG_CLIENT_SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("token", token)]))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "revocation failed with {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// What MAS says of `token` (RFC 7662 introspection, as weft's client).
    pub async fn introspect(&self, token: &str) -> Value {
        self.http
            .post(format!("{}oauth2/introspect", self.issuer))
            .basic_auth(WEFT_CLIENT_ID, Some(WEFT_CLIENT_SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("token", token)]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Mas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
