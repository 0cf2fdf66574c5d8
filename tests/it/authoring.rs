//! A plugin author's path: a crate of their own, outside this repository,
//! built with `cargo weft build` and checked by the host, as the README's
//! "A plugin crate of your own" says, and the crates `cargo weft new`
//! makes, which build and load as they are.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use cargo_weft::{NewOptions, NewPlugin, Role, SdkSource};
use weft_host::capture::{CaptureSessions, SESSION_TTL};
use weft_host::login_process::{LoginProcesses, Progress, StepInput};
use weft_host::logins::LoginKey;
use weft_runtime::events::{RemoteEvent, StateKind};
use weft_runtime::manifest::World;
use weft_tests::host::{OWNER, TestHost, ask};

const CARGO_TOML: &str = r#"[package]
name = "my-feed"
version = "0.1.0"
edition = "2024"

[dependencies]
weft-sdk = { path = "SDK" }

[package.metadata.weft]
manifest = "weft.toml"

[workspace]
"#;

const MANIFEST: &str = r#"id = "my-feed"
api = "0.1"
world = "connector"

[connector]
network-name = "My feed"
ghost-prefix = "myfeed_"
"#;

const LIB_RS: &str = r#"#[derive(Default)]
struct MyFeed;

impl weft_sdk::Login for MyFeed {}

impl weft_sdk::Connector for MyFeed {
    fn start(&mut self) -> weft_sdk::Result<()> {
        weft_sdk::timers::set_interval("poll", std::time::Duration::from_secs(5))?;
        Ok(())
    }
}

weft_sdk::register_connector!(MyFeed);
"#;

fn write_crate(dir: &std::path::Path, manifest: &str) {
    let sdk = weft_tests::workspace().join("sdk");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        CARGO_TOML.replace("SDK", sdk.to_str().unwrap()),
    )
    .unwrap();
    std::fs::write(dir.join("weft.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/lib.rs"), LIB_RS).unwrap();
}

fn build(dir: &std::path::Path) -> anyhow::Result<Vec<cargo_weft::BuiltPlugin>> {
    cargo_weft::build(&cargo_weft::BuildOptions {
        manifest_path: Some(dir.join("Cargo.toml")),
        out_dir: Some(dir.join("out")),
        // Its own wasm build directory (this test's cargo holds the
        // workspace's), kept between runs.
        wasm_target_dir: Some(weft_tests::workspace().join("target/standalone-wasm")),
        ..Default::default()
    })
}

#[test]
fn a_plugin_crate_outside_the_repository_builds_without_a_profile_of_its_own_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    write_crate(dir.path(), MANIFEST);
    let built = build(dir.path()).expect("the standalone crate builds");
    assert_eq!(built.len(), 1);
    let component = &built[0].path;
    let output = Command::new(env!("CARGO_BIN_EXE_weft-test-host"))
        .current_dir(dir.path())
        .args(["--config", "none.toml", "check-plugin"])
        .arg(component)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("my-feed 0.1.0 (connector) loads"), "{text}");
}

#[test]
fn a_manifest_the_host_would_refuse_fails_the_build_before_compiling() {
    let dir = tempfile::tempdir().unwrap();
    // An unknown key, and a connector without its [connector] table.
    write_crate(
        dir.path(),
        "id = \"my-feed\"\napi = \"0.1\"\nworld = \"connector\"\npoll-secs = 5\n",
    );
    let error = format!("{:#}", build(dir.path()).unwrap_err());
    assert!(error.contains("poll-secs"), "{error}");
    // Nothing was compiled for it.
    assert!(!dir.path().join("out").exists());
}

/// A plugin crate made by `cargo weft new` in a temporary directory (its
/// `weft-sdk` this repository's), and the component built from it as it
/// is.
struct Scaffolded {
    _parent: tempfile::TempDir,
    plugin: NewPlugin,
    component: PathBuf,
}

impl Scaffolded {
    fn new(role: Role, dir_name: &str) -> Self {
        let parent = tempfile::tempdir().unwrap();
        let plugin = cargo_weft::new_plugin(&NewOptions {
            dir: parent.path().join(dir_name),
            id: None,
            role,
            sdk: SdkSource::Path(weft_tests::workspace().join("sdk")),
        })
        .expect("`cargo weft new` writes the crate");
        let built = build(&plugin.dir).expect("the new crate builds as it is");
        assert_eq!(built.len(), 1);
        assert_eq!(built[0].package, plugin.package);
        let component = built[0].path.clone();
        Self {
            _parent: parent,
            plugin,
            component,
        }
    }

    /// `weft --config weft.example.toml check-plugin <component>`, run in
    /// the crate's directory as its README says; returns what it printed.
    fn check_with_the_example_config(&self) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_weft-test-host"))
            .current_dir(&self.plugin.dir)
            .args(["--config", "weft.example.toml", "check-plugin"])
            .arg(&self.component)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        text
    }

    /// A test host with the component in its plugins directory and the
    /// example config's `[plugin.<id>]` grants and settings, its
    /// `base-url` pointed at `base_url`, with `settings` on top.
    async fn host(&self, base_url: &str, settings: &[(&str, toml::Value)]) -> TestHost {
        let id = &self.plugin.id;
        let example = std::fs::read_to_string(self.plugin.dir.join("weft.example.toml"))
            .unwrap()
            .replace("http://127.0.0.1:8080", base_url);
        let example: toml::Table = example.parse().unwrap();
        let mut grant = example["plugin"][id.as_str()].as_table().unwrap().clone();
        let mut granted_settings = grant
            .remove("settings")
            .unwrap()
            .as_table()
            .unwrap()
            .clone();
        for (name, value) in settings {
            granted_settings.insert((*name).to_owned(), value.clone());
        }
        let body = format!(
            "{}\n[plugin.{id}.settings]\n{}",
            toml::to_string(&grant).unwrap(),
            toml::to_string(&granted_settings).unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::copy(&self.component, plugins.join(format!("{id}.wasm"))).unwrap();
        let test = TestHost::builder()
            .reuse(dir)
            .grant(id, &body)
            .start()
            .await;
        let errors = test.host.load_errors().lock().unwrap().clone();
        assert!(errors.is_empty(), "{errors:?}");
        test
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_made_by_cargo_weft_new_builds_and_logs_in_polls_and_answers_in_a_host() {
    let scaffolded =
        tokio::task::spawn_blocking(|| Scaffolded::new(Role::Connector, "my-connector"))
            .await
            .unwrap();
    let text = scaffolded.check_with_the_example_config();
    assert!(
        text.contains("my-connector 0.1.0 (connector) loads"),
        "{text}"
    );
    // Its harness stories come with it. (Running them compiles the
    // runtime into the crate's own target directory, minutes of CI; the
    // tutorial's steps run them.)
    let story = std::fs::read_to_string(scaffolded.plugin.dir.join("tests/story.rs")).unwrap();
    assert!(story.contains("weft_testing::plugin!()"), "{story}");
    let manifest = std::fs::read_to_string(scaffolded.plugin.dir.join("Cargo.toml")).unwrap();
    let testing = weft_tests::workspace().join("sdk/testing");
    let testing = std::fs::canonicalize(testing).unwrap();
    assert!(
        manifest.contains(&format!(
            "weft-testing = {{ path = \"{}\" }}",
            testing.display()
        )),
        "{manifest}"
    );

    // The service it polls: it records the tokens it is shown.
    let tokens = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = Router::new().route(
        "/",
        get({
            let tokens = tokens.clone();
            move |headers: HeaderMap| async move {
                let token = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                tokens.lock().unwrap().push(token);
                "[]"
            }
        }),
    );
    let addr = weft_tests::servers::serve(app).await;
    let test = scaffolded
        .host(
            &format!("http://{addr}"),
            &[("poll-interval-ms", toml::Value::Integer(50))],
        )
        .await;

    // Its login flow is offered, and logs in.
    let processes = LoginProcesses::new(
        test.host.registry().clone(),
        test.host.logins().clone(),
        test.host.config().clone(),
        CaptureSessions::new(None, SESSION_TTL),
    );
    let flows = processes.flows();
    assert!(
        flows.iter().any(|f| f.id == "my-connector:token"),
        "{flows:?}"
    );
    let (process, step) = processes
        .start(OWNER, "my-connector:token", None)
        .await
        .unwrap();
    let input = StepInput::UserInput(vec![
        ("username".into(), "alice".into()),
        ("token".into(), "secret".into()),
    ]);
    let Progress::Completed(done) = processes
        .submit(&process, OWNER, &step.step_id, input)
        .await
        .unwrap()
    else {
        panic!("the login did not complete")
    };
    assert_eq!(done.key, LoginKey::new("my-connector", "alice"));

    // The login polls base-url with its token and says it is connected.
    weft_tests::eventually(Duration::from_secs(20), "a poll with the token", || {
        tokens
            .lock()
            .unwrap()
            .iter()
            .any(|t| t == "Bearer secret")
            .then_some(())
    })
    .await;
    test.events
        .wait_for("the connected state", |events| {
            events.iter().any(|(key, event)| {
                key == &done.key
                    && matches!(event, RemoteEvent::BridgeState(s) if s.state == StateKind::Connected)
            })
        })
        .await;

    // A Matrix message is answered by the skeleton's "echo".
    let login = test.host.registry().login(&done.key).unwrap();
    let id = ask(&login, "hello").await;
    test.events
        .wait_for("the echo", |events| {
            events.iter().any(|(_, event)| {
                matches!(event, RemoteEvent::Message(m)
                    if m.text == "hello" && m.reply_to.as_deref() == Some(id.as_str()))
            })
        })
        .await;
    test.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_provider_made_by_cargo_weft_new_builds_and_loads_in_a_host() {
    let scaffolded =
        tokio::task::spawn_blocking(|| Scaffolded::new(Role::LoginProvider, "my-provider"))
            .await
            .unwrap();
    let text = scaffolded.check_with_the_example_config();
    assert!(
        text.contains("my-provider 0.1.0 (login-provider) loads"),
        "{text}"
    );
    let test = scaffolded.host("http://127.0.0.1:9", &[]).await;
    let provider = test.host.registry().login_provider("my-provider").unwrap();
    let flows: Vec<&str> = provider
        .manifest
        .login_flows
        .iter()
        .map(|f| f.id.as_str())
        .collect();
    assert_eq!(flows, ["token"]);
    test.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_provider_made_by_cargo_weft_new_builds_and_loads_in_a_host() {
    let scaffolded =
        tokio::task::spawn_blocking(|| Scaffolded::new(Role::CredentialProvider, "my-credentials"))
            .await
            .unwrap();
    let text = scaffolded.check_with_the_example_config();
    assert!(
        text.contains("my-credentials 0.1.0 (credential-provider) loads"),
        "{text}"
    );
    let test = scaffolded.host("http://127.0.0.1:9", &[]).await;
    let plugin = test.host.registry().plugin("my-credentials").unwrap();
    assert_eq!(plugin.manifest.world, World::CredentialProvider);
    test.host.shutdown().await;
}
