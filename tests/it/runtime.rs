//! The runtime on its own, with its in-memory host: what the
//! imports and the actors ask of the host, and what the runtime does when
//! the host has no room for an instance. No weft-host code runs here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weft_runtime::connector::MatrixMessage;
use weft_runtime::events::{RemoteEvent, StateKind, StateReport};
use weft_runtime::memory_host::MemoryHost;
use weft_runtime::plugin::PluginSource;
use weft_runtime::{
    HostServices, LoginHandle, LoginInfo, LoginKey, Phase, PluginGrants, Registry, RegistryError,
    RuntimeConfig, RuntimeOptions,
};
use weft_storage::{MemoryStorage, Storage};

/// Stores login `key` of `@owner:test` with connector `metadata`.
fn add(host: &MemoryHost, key: &LoginKey, metadata: &str) {
    let info = LoginInfo {
        id: key.id.clone(),
        owner: "@owner:test".into(),
        remote_name: key.id.clone(),
        awaiting_relogin: false,
    };
    host.add_login(key.clone(), info, metadata.into());
}

/// The states login `key` reported, in order.
fn states(host: &MemoryHost, key: &LoginKey) -> Vec<StateReport> {
    host.events_of(key)
        .into_iter()
        .filter_map(|e| match e {
            RemoteEvent::BridgeState(state) => Some(state),
            _ => None,
        })
        .collect()
}

fn runtime(host: Arc<MemoryHost>, configure: impl FnOnce(&mut RuntimeConfig)) -> Arc<Registry> {
    weft_tests::init_logging();
    let mut config = RuntimeConfig {
        compile_cache: false,
        min_timer_ms: 10,
        restart_backoff_ms: 20,
        max_restart_backoff_ms: 100,
        max_restarts: 3,
        ..RuntimeConfig::default()
    };
    configure(&mut config);
    let grants = BTreeMap::from([(
        "probe".to_owned(),
        PluginGrants {
            http: vec!["http://127.0.0.1:*".into()],
            private_networks: true,
            ..PluginGrants::default()
        },
    )]);
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    Registry::new(
        RuntimeOptions {
            runtime: config,
            http: Default::default(),
            grants,
            compile_cache: Some(weft_tests::workspace().join("target/test-compile-cache")),
            transport: None,
            manual_timers: false,
        },
        storage,
        host,
    )
    .expect("the runtime starts")
}

async fn load_probe(registry: &Registry) -> Result<(), RegistryError> {
    let source = PluginSource::read(&weft_tests::component("probe")).unwrap();
    registry.load_source(source, None).await.map(drop)
}

async fn ask(login: &LoginHandle, text: &str) -> String {
    login
        .matrix_message(MatrixMessage {
            chat_id: "chat".into(),
            event_id: "$event".into(),
            sender: "@owner:test".into(),
            text: text.into(),
            html: None,
            reply_to: None,
            timestamp_ms: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("`{text}` failed: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_events_states_and_metadata_reach_the_host_only_through_its_services() {
    let host = Arc::new(MemoryHost::default());
    let key = LoginKey::new("probe", "alice");
    add(&host, &key, r#"{"token":"t1"}"#);
    let registry = runtime(host.clone(), |_| {});
    load_probe(&registry).await.unwrap();
    // The stored login started with the plugin.
    let login = registry.login(&key).expect("the login runs");

    // `session` reads and writes the host's record.
    assert_eq!(ask(&login, "whoami").await, "alice");
    assert_eq!(ask(&login, "metadata").await, r#"{"token":"t1"}"#);
    assert_eq!(ask(&login, r#"set-metadata {"token":"t2"}"#).await, "ok");
    assert_eq!(host.metadata(&key).unwrap().unwrap(), r#"{"token":"t2"}"#);
    // `matrix.queue-event` hands the host the runtime's own event type.
    ask(&login, "event c1 m1 hi there").await;
    let events = host.events();
    let RemoteEvent::Message(message) = &events.last().unwrap().1 else {
        panic!("{events:?}")
    };
    assert_eq!(
        (message.chat_id.as_str(), message.text.as_str()),
        ("c1", "hi there")
    );
    // A plugin's bad-credentials state reaches the host, and its timers
    // pause.
    ask(&login, "bad-credentials").await;
    assert_eq!(
        states(&host, &key).last().unwrap().state,
        StateKind::BadCredentials
    );
    assert!(login.status().timers_paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_may_refuse_a_plugin_at_load_and_the_error_carries_its_reason() {
    let host = Arc::new(MemoryHost::default());
    host.refuse_plugins("namespace taken");
    let registry = runtime(host, |_| {});
    let error = load_probe(&registry).await.unwrap_err();
    assert!(
        matches!(&error, RegistryError::Refused(m) if m == "probe: namespace taken"),
        "{error}"
    );
    assert!(registry.plugin("probe").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_reported_to_the_host_as_the_logins_state() {
    let host = Arc::new(MemoryHost::default());
    let key = LoginKey::new("probe", "fragile");
    add(&host, &key, "{}");
    let registry = runtime(host.clone(), |_| {});
    load_probe(&registry).await.unwrap();
    let login = registry.login(&key).unwrap();
    ask(&login, "kv-set trap-on-start-version 0.1.0").await;
    let _ = login
        .matrix_message(MatrixMessage {
            chat_id: "chat".into(),
            event_id: "$e".into(),
            sender: "@owner:test".into(),
            text: "trap".into(),
            html: None,
            reply_to: None,
            timestamp_ms: 0,
        })
        .await;
    login
        .wait_for(Duration::from_secs(20), |s| s.phase == Phase::Failed)
        .await
        .expect("the login gives up");
    let state = states(&host, &key).pop().expect("a state was reported");
    assert_eq!(state.state, StateKind::UnknownError);
    assert_eq!(state.error_code.as_deref(), Some("plugin-crash-loop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_room_for_another_instance_a_login_waits_says_why_and_starts_once_there_is() {
    let host = Arc::new(MemoryHost::default());
    let registry = runtime(host.clone(), |c| {
        c.max_instances = 2;
        c.hibernate = false;
    });
    if registry.allocator() != weft_runtime::Allocator::Pooling {
        // Without a pool there is no instance limit to reach; the host said
        // why at start.
        eprintln!("the pooling allocator is unavailable here");
        return;
    }
    load_probe(&registry).await.unwrap();
    let keys: Vec<LoginKey> = (0..3)
        .map(|n| LoginKey::new("probe", format!("u{n}")))
        .collect();
    let mut logins = Vec::new();
    for key in &keys {
        add(&host, key, "{}");
        logins.push(registry.start_login(key).await.unwrap().unwrap());
    }
    // Two fit; the third (whichever asked last) waits, not as a crash: no
    // strikes, and a state that names the limit.
    let waiting = weft_tests::eventually(Duration::from_secs(10), "one login waiting", || {
        let waiting: Vec<usize> = (0..3)
            .filter(|&n| logins[n].status().phase == Phase::Waiting)
            .collect();
        let running = (0..3)
            .filter(|&n| logins[n].status().phase == Phase::Running)
            .count();
        (waiting.len() == 1 && running == 2).then(|| waiting[0])
    })
    .await;
    assert_eq!(logins[waiting].status().strikes, 0);
    let state = states(&host, &keys[waiting])
        .pop()
        .expect("a state was reported");
    assert_eq!(state.error_code.as_deref(), Some("host-no-room"));
    assert!(
        state.message.as_deref().unwrap().contains("max-instances"),
        "{state:?}"
    );
    // Once another login goes, the waiting one gets its instance.
    let gone = (waiting + 1) % 3;
    registry.delete_login(&keys[gone], false).await.unwrap();
    logins[waiting]
        .wait_for(Duration::from_secs(10), |s| s.phase == Phase::Running)
        .await
        .expect("the waiting login runs");
    assert_eq!(ask(&logins[waiting], "whoami").await, format!("u{waiting}"));
}
