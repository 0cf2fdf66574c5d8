//! Outgoing HTTP under the operator's grants.

use weft_tests::host::{TestHost, ask};
use weft_tests::servers::fixture_server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_host_answers() {
    let server = fixture_server().await;
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "http").await;
    let answer = ask(&login, &format!("http GET http://{server}/ok")).await;
    assert_eq!(answer, "status=200 len=26 body=hello from the test server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_outside_the_grant_is_denied_with_the_typed_error() {
    let server = fixture_server().await;
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "http").await;
    // `localhost` names the same server, but only 127.0.0.1 is granted.
    let answer = ask(
        &login,
        &format!("http GET http://localhost:{}/ok", server.port()),
    )
    .await;
    assert!(answer.starts_with("error=Denied("), "{answer}");
    assert!(answer.contains("not granted to plugin probe"), "{answer}");
    // So is https on the granted host.
    let answer = ask(&login, &format!("http GET https://{server}/ok")).await;
    assert!(answer.starts_with("error=Denied("), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_address_is_denied_without_the_private_networks_grant() {
    let server = fixture_server().await;
    let test = TestHost::builder()
        .plugin("probe")
        .grant("probe", "http = [\"http://127.0.0.1:*\"]")
        .start()
        .await;
    let login = test.login("probe", "http").await;
    let answer = ask(&login, &format!("http GET http://{server}/ok")).await;
    // Granted by pattern, but loopback needs the operator's explicit grant.
    assert!(answer.starts_with("error=Denied("), "{answer}");
    assert!(answer.contains("private"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_is_cut_with_the_typed_error() {
    let server = fixture_server().await;
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "http").await;
    // /big is 2 MiB; the grant caps responses at 1 MiB.
    let answer = ask(&login, &format!("http GET http://{server}/big")).await;
    assert_eq!(answer, "error=TooLarge(1048576)");
    // The instance is fine afterwards.
    assert_eq!(ask(&login, "version").await, "0.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_times_out_within_the_call_deadline() {
    let server = fixture_server().await;
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "http").await;
    // /slow takes 30 s; the request's timeout is clamped to what is left
    // of the probe's 2 s call deadline, so the plugin gets a typed timeout
    // instead of being killed.
    let answer = ask(&login, &format!("http GET http://{server}/slow")).await;
    assert_eq!(answer, "error=Timeout");
    assert_eq!(login.status().instances_started, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_asking_for_an_ungranted_host_is_refused_naming_the_capability() {
    // No [plugin.probe] grant: the probe's request for http://127.0.0.1:*
    // cannot be met.
    let test = TestHost::builder().grant("probe", "").start().await;
    let error = test
        .host
        .registry()
        .load_file(&weft_tests::component("probe"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("asks for capability `http: http://127.0.0.1:*`"),
        "{error}"
    );
    assert!(error.contains("[plugin.probe]"), "{error}");
    assert!(test.host.registry().plugin("probe").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let server = fixture_server().await;
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "http").await;
    // The plugin sees the 302 and decides; the host never follows it to a
    // destination the grant was not checked against.
    let answer = ask(&login, &format!("http GET http://{server}/redirect")).await;
    assert!(answer.starts_with("status=302 "), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_name_that_resolves_to_loopback_is_refused_without_the_private_networks_grant() {
    let server = fixture_server().await;
    let test = TestHost::builder()
        .grant("probe", "http = [\"http://localhost:*\"]")
        .start()
        .await;
    // The probe, relabelled to ask for `localhost`, which the operator
    // grants; but `localhost` resolves to a loopback address.
    let bytes = std::fs::read(weft_tests::component("probe")).unwrap();
    let manifest = weft_runtime::plugin::embedded_manifest(&bytes).unwrap();
    let manifest = manifest.replace("http://127.0.0.1:*", "http://localhost:*");
    let path = test.plugins_dir().join("probe.wasm");
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(path.with_extension("toml"), manifest).unwrap();
    test.host
        .registry()
        .load_file(&path)
        .await
        .expect("the relabelled probe loads");
    let login = test.login("probe", "http").await;
    let answer = ask(
        &login,
        &format!("http GET http://localhost:{}/ok", server.port()),
    )
    .await;
    assert!(answer.starts_with("error=Denied("), "{answer}");
    assert!(answer.contains("private addresses"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_spelled_as_ipv6_forms_of_ipv4_is_denied_without_the_private_networks_grant() {
    let server = fixture_server().await;
    let port = server.port();
    let test = TestHost::builder()
        .plugin("probe")
        .grant("probe", "http = [\"http://*:*\"]")
        .start()
        .await;
    let login = test.login("probe", "http").await;
    for host in [
        "[::127.0.0.1]",
        "[::ffff:127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::]",
        "[::1]",
        "127.1",
        "0x7f.1",
        "2130706433",
        "0.0.0.0",
    ] {
        let answer = ask(&login, &format!("http GET http://{host}:{port}/ok")).await;
        // Each of these leads to this machine; none is tried.
        assert!(answer.starts_with("error=Denied("), "{host}: {answer}");
    }
}
