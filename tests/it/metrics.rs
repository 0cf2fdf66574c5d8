//! Prometheus metrics on the admin API, per plugin and in total, from a
//! bridge that has done some work.

use std::collections::BTreeMap;

use weft_tests::bridge::BridgeEnv;

/// Parses the text format into `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.trim_end_matches("{}").to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_instances_requests_events_and_logins_per_plugin() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let alice = env.login(&user, "alice").await;
    let portal = env.portal_room(&alice, "c1").await;
    user.wait_for_rooms(1, &[]).await;
    user.send_text(&portal, "hello").await;
    user.wait_for_body(&portal, "echo: hello").await;

    let url = format!(
        "http://{}/_weft/admin/v1/metrics",
        env.host().admin_addr().unwrap()
    );
    let refused = reqwest::get(&url).await.unwrap();
    assert_eq!(refused.status(), 401, "metrics need the admin token");
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(weft_tests::host::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    let samples = samples(&text);
    let get = |name: &str| {
        *samples
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert!(get(r#"weft_plugin_calls_total{plugin="echo"}"#) >= 3.0);
    assert!(get(r#"weft_plugin_live_instances{plugin="echo"}"#) >= 1.0);
    assert!(get(r#"weft_plugin_call_duration_seconds_count{plugin="echo"}"#) >= 3.0);
    assert!(get(r#"weft_plugin_http_requests_total{plugin="echo",outcome="ok"}"#) >= 1.0);
    assert_eq!(
        get(r#"weft_plugin_http_requests_total{plugin="echo",outcome="denied"}"#),
        0.0
    );
    assert!(get(r#"weft_plugin_events_out_total{plugin="echo"}"#) >= 2.0);
    assert!(get(r#"weft_plugin_events_in_total{plugin="echo"}"#) >= 1.0);
    assert!(get(r#"weft_plugin_kv_written_bytes_total{plugin="echo"}"#) > 0.0);
    assert_eq!(get(r#"weft_logins{plugin="echo",state="CONNECTED"}"#), 1.0);
    assert!(get("weft_calls_total") >= get(r#"weft_plugin_calls_total{plugin="echo"}"#));
    assert!(samples.contains_key(r#"weft_queue_depth{queue="outbox"}"#));
    assert!(samples.contains_key(r#"weft_queue_depth{queue="inbound"}"#));
    assert_eq!(get(r#"weft_dead_letters{queue="outbox"}"#), 0.0);
    assert!(
        get(r#"weft_plugin_call_duration_seconds_bucket{le="+Inf",plugin="echo"}"#) >= 3.0
            || text
                .contains(r#"weft_plugin_call_duration_seconds_bucket{plugin="echo",le="+Inf"}"#)
    );
}
