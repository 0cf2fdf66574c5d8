//! The Teams connector's acceptance tests: real Synapse, weft with the
//! Teams and MSAL components built from source, and the fake Teams
//! (`examples/fake-teams`), which follows the documented wire formats.

use std::time::Duration;

use fake_teams::{FakeTeams, TeamsAccount};
use reqwest::Method;
use serde_json::{Value, json};
use weft_host::logins::{LoginKey, LoginRecord, StateEvent};
use weft_tests::bridge::{BridgeEnv, BridgeOptions, step_path};
use weft_tests::fault_proxy::FaultProxy;
use weft_tests::matrix::MatrixUser;
use weft_tests::ms_identity::{Call, TokenKind};
use weft_tests::msal_cache::MsalCache;
use weft_tests::{eventually, now_secs, web_session};

struct Teams {
    env: BridgeEnv,
    fake: FakeTeams,
}

impl Teams {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the bridge's options changed by `change`.
    async fn start_with(change: impl FnOnce(&mut BridgeOptions)) -> Self {
        Self::start_on(FakeTeams::start().await, change).await
    }

    /// Starts a bridge to `fake`, with its options changed by `change`.
    async fn start_on(fake: FakeTeams, change: impl FnOnce(&mut BridgeOptions)) -> Self {
        let base = fake.base_url();
        let mut options = BridgeOptions {
            plugins: vec!["msal", "teams"],
            config: vec![
                "[plugin.msal]".into(),
                "http = [\"http://127.0.0.1:*\"]".into(),
                "private-networks = true".into(),
                "[plugin.msal.settings]".into(),
                format!("authority-url = \"{base}\""),
                "[plugin.teams]".into(),
                "http = [\"http://127.0.0.1:*\"]".into(),
                "private-networks = true".into(),
                "[plugin.teams.settings]".into(),
                format!("auth-url = \"{base}/api/auth\""),
                format!("chat-service-url = \"{base}\""),
                format!("media-url = \"{base}\""),
                "poll-interval-ms = 1000".into(),
                "discovery-interval-ms = 2000".into(),
            ],
            ..BridgeOptions::default()
        };
        change(&mut options);
        let env = BridgeEnv::start_with(options).await;
        Self { env, fake }
    }

    /// Logs `user` in to Teams as `account` with a browser session pasted
    /// into the `msal-paste` flow; `cache` shapes the session.
    async fn login_with(&self, user: &MatrixUser, cache: MsalCache) -> LoginKey {
        let (status, step) = self
            .env
            .provision(user, Method::POST, "/login/start/teams:msal-paste", None)
            .await;
        assert_eq!(status, 200, "{step}");
        let (status, done) = self
            .env
            .provision(
                user,
                Method::POST,
                &step_path(&step, "user_input"),
                Some(json!({ "capture": cache.capture() })),
            )
            .await;
        assert_eq!(status, 200, "{done}");
        LoginKey::parse(done["complete"]["user_login_id"].as_str().unwrap()).unwrap()
    }

    async fn login(&self, user: &MatrixUser, account: &TeamsAccount) -> LoginKey {
        let tokens = self.fake.identity().issue_spa_tokens(&account.account);
        self.login_with(user, MsalCache::signed_in(&tokens)).await
    }

    /// The portal room of `chat` for `login`, joined by `user`.
    async fn room(&self, user: &MatrixUser, login: &LoginKey, chat: &str) -> String {
        let room = self.env.portal_room(login, chat).await;
        for _ in 0..200 {
            user.accept_invites().await;
            if user.joined_rooms().await.contains(&room) {
                return room;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} never joined {room}", user.user_id);
    }

    /// Alice and Bob on the fake Teams, and their one-to-one chat.
    fn alice_and_bob(&self) -> (TeamsAccount, TeamsAccount, String) {
        let alice = self.fake.add_account("alice", "Alice Example");
        let bob = self.fake.add_account("bob", "Bob Example");
        let dm = self.fake.dm(&alice, &bob);
        (alice, bob, dm)
    }

    /// The host's record of login `key`.
    fn record(&self, key: &LoginKey) -> LoginRecord {
        self.env.host().logins().store.get(key).unwrap().unwrap()
    }

    async fn wait_for_state(&self, key: &LoginKey, state: StateEvent) {
        eventually(
            Duration::from_secs(60),
            &format!("login {key} reports {state:?}"),
            || {
                let record = self.env.host().logins().store.get(key).ok()??;
                (record.state.state_event == state).then_some(())
            },
        )
        .await;
    }
}

fn count(bodies: &[String], body: &str) -> usize {
    bodies.iter().filter(|b| *b == body).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_teams_accounts_of_one_user_are_two_logins_each_with_its_own_rooms() {
    let teams = Teams::start().await;
    let fake = &teams.fake;
    let alice = fake.add_account("alice", "Alice Example");
    let bob = fake.add_account("bob", "Bob Example");
    let carol = fake.add_account("carol", "Carol Example");
    let shared = fake.group("Shared", &[&alice, &bob, &carol]);
    let alice_only = fake.dm(&alice, &carol);
    fake.post(&shared, &carol, "hello both of you");
    fake.post(&alice_only, &carol, "just for alice");

    let user = teams.env.user("twoaccounts").await;
    let alice_login = teams.login(&user, &alice).await;
    let bob_login = teams.login(&user, &bob).await;
    // Ids are the normalized Teams user ids.
    assert_eq!(alice_login, LoginKey::new("teams", alice.mri.clone()));
    assert_eq!(bob_login, LoginKey::new("teams", bob.mri.clone()));
    assert!(alice.mri.starts_with("8:live:") && !alice.mri.starts_with("8:8:"));
    let (_, logins) = teams
        .env
        .provision(&user, Method::GET, "/logins", None)
        .await;
    assert_eq!(logins["login_ids"].as_array().unwrap().len(), 2, "{logins}");

    // The shared chat gets a room per login; the DM only alice's.
    let shared_alice = teams.room(&user, &alice_login, &shared).await;
    let shared_bob = teams.room(&user, &bob_login, &shared).await;
    assert_ne!(shared_alice, shared_bob);
    let dm = teams.room(&user, &alice_login, &alice_only).await;
    // New portals start with their history (backfill); a message sent now
    // arrives in each login's room once.
    fake.post(&shared, &carol, "a new one for both");
    user.wait_for_body(&shared_alice, "a new one for both")
        .await;
    user.wait_for_body(&shared_bob, "a new one for both").await;
    fake.post(&alice_only, &carol, "alice again");
    user.wait_for_body(&dm, "alice again").await;
    assert_eq!(
        count(&user.bodies(&shared_alice).await, "a new one for both"),
        1
    );
    assert_eq!(
        count(&user.bodies(&shared_bob).await, "a new one for both"),
        1
    );
    // Bob's login has no room for alice's DM.
    let bridge = teams.env.host().bridge().unwrap().clone();
    let bob_dm = weft_host::bridge::store::PortalKey {
        plugin: "teams".into(),
        chat_id: alice_only.clone(),
        receiver: bob_login.id.clone(),
    };
    assert!(bridge.store.portal(&bob_dm).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_matrix_arrives_in_teams_once_is_not_echoed_back_and_shows_who_read_it() {
    let teams = Teams::start().await;
    let fake = &teams.fake;
    let (alice, bob, dm) = teams.alice_and_bob();
    fake.post(&dm, &bob, "hi alice");
    let user = teams.env.user("sender").await;
    let login = teams.login(&user, &alice).await;
    let room = teams.room(&user, &login, &dm).await;
    user.wait_for_body(&room, "hi alice").await;

    let sent = user.send_text(&room, "hello from matrix").await;
    eventually(Duration::from_secs(20), "the message reaches Teams", || {
        fake.messages(&dm)
            .iter()
            .any(|m| m.text() == "hello from matrix")
            .then_some(())
    })
    .await;
    // Bob answers; once his answer is bridged, the poll that saw our own
    // message has run too.
    fake.post(&dm, &bob, "got it");
    user.wait_for_body(&room, "got it").await;
    let in_teams: Vec<_> = fake
        .messages(&dm)
        .into_iter()
        .filter(|m| m.text() == "hello from matrix")
        .collect();
    assert_eq!(in_teams.len(), 1);
    assert_eq!(in_teams[0].sender, alice.mri);
    assert_eq!(count(&user.bodies(&room).await, "hello from matrix"), 1);

    // Bob reads it in Teams: his ghost's read receipt lands on it.
    fake.mark_read(&dm, &bob, &in_teams[0].id);
    weft_tests::until(Duration::from_secs(30), "Bob's read receipt", || async {
        let synced = user.synced_room(&room).await;
        let receipts = synced["ephemeral"]["events"]
            .as_array()?
            .iter()
            .find(|e| e["type"] == "m.receipt")?
            .clone();
        let readers = receipts["content"][&sent]["m.read"].as_object()?.clone();
        readers
            .keys()
            .any(|reader| reader.starts_with("@teams_") && *reader != user.user_id)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_renewed_refresh_then_skypetoken_and_syncing_goes_on() {
    let teams = Teams::start().await;
    let fake = &teams.fake;
    let (alice, bob, dm) = teams.alice_and_bob();
    let identity = fake.identity();
    // A session whose access token MSAL reports as good for 20 more
    // seconds (its five-minute margin), and short-lived skypetokens.
    fake.set_skypetoken_lifetime(20);
    let tokens = identity.issue_spa_tokens(&alice.account);
    let cache = web_session(&tokens, now_secs() + 320);
    let user = teams.env.user("renewer").await;
    let login = teams.login_with(&user, cache).await;
    let room = teams.room(&user, &login, &dm).await;
    fake.post(&dm, &bob, "before expiry");
    user.wait_for_body(&room, "before expiry").await;

    // The access token runs out: the connector refreshes it through MSAL
    // (the web session's refresh, with its Origin), then gets a new
    // skypetoken, without a relogin.
    eventually(
        Duration::from_secs(90),
        "the access token is refreshed",
        || {
            identity
                .calls_where(Call::is_spa_refresh)
                .iter()
                .any(|c| c.outcome == "ok")
                .then_some(())
        },
    )
    .await;
    // And skypetokens that the fake expires are re-acquired.
    fake.expire_skypetokens();
    fake.post(&dm, &bob, "after expiry");
    user.wait_for_body(&room, "after expiry").await;
    let record = teams.record(&login);
    assert_eq!(record.state.state_event, StateEvent::Connected);
    let refresh = &identity.calls_where(Call::is_spa_refresh)[0];
    assert_eq!(refresh.origin.as_deref(), Some("https://teams.live.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_outage_is_a_transient_disconnect_and_the_rotated_token_is_kept_after_it() {
    // MSAL reaches Microsoft's sign-in service through a proxy that can
    // drop every connection; Teams itself stays up.
    let fake = FakeTeams::start().await;
    let sign_in = FaultProxy::start(&fake.base_url()).await;
    let teams = Teams::start_on(fake, |options| {
        for line in &mut options.config {
            if line.starts_with("authority-url") {
                *line = format!("authority-url = \"{}\"", sign_in.url());
            }
        }
    })
    .await;
    let fake = &teams.fake;
    let (alice, bob, dm) = teams.alice_and_bob();
    let identity = fake.identity();
    // MSAL reports the access token good for 15 more seconds (its
    // five-minute margin), and skypetokens last 20: the connector renews
    // both soon after the login.
    fake.set_skypetoken_lifetime(20);
    let tokens = identity.issue_spa_tokens(&alice.account);
    let user = teams.env.user("outage").await;
    let login = teams
        .login_with(&user, web_session(&tokens, now_secs() + 315))
        .await;
    // Down before the renewal is due; Teams itself stays up.
    sign_in.set_down(true);
    let room = teams.room(&user, &login, &dm).await;
    fake.post(&dm, &bob, "before the renewal");
    user.wait_for_body(&room, "before the renewal").await;

    // The renewal cannot connect: a network failure is transient, not a
    // reason to log in again.
    teams
        .wait_for_state(&login, StateEvent::TransientDisconnect)
        .await;
    let record = teams.record(&login);
    assert!(
        record
            .state
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("unreachable"),
        "{:?}",
        record.state
    );
    assert!(identity.calls_where(Call::is_spa_refresh).is_empty());
    fake.post(&dm, &bob, "during the outage");

    // Back up: the login renews its token, reconnects, and catches up.
    sign_in.set_down(false);
    teams.wait_for_state(&login, StateEvent::Connected).await;
    user.wait_for_body(&room, "during the outage").await;
    let refreshes = identity.calls_where(Call::is_spa_refresh);
    assert_eq!(refreshes.len(), 1, "{refreshes:?}");
    assert_eq!(refreshes[0].outcome, "ok");
    // The login keeps the refresh token the renewal rotated in, so the
    // next renewal does not spend a used one.
    let record = teams.record(&login);
    let session: Value = serde_json::from_str(&record.metadata).unwrap();
    let latest = identity
        .latest_refresh_token(&alice.account, TokenKind::Spa)
        .unwrap();
    assert_ne!(latest, tokens.refresh_token);
    assert_eq!(session["tokens"]["refresh_token"], format!("spa:{latest}"));
    // What came after it is in too, and it came once.
    fake.post(&dm, &bob, "after the outage");
    user.wait_for_body(&room, "after the outage").await;
    assert_eq!(count(&user.bodies(&room).await, "during the outage"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_refresh_token_gives_bad_credentials_and_asks_for_a_relogin() {
    let teams = Teams::start().await;
    let fake = &teams.fake;
    let alice = fake.add_account("alice", "Alice Example");
    let identity = fake.identity();
    // Both the skypetoken and the access token are due soon; the refresh
    // token is past its 24 hours.
    fake.set_skypetoken_lifetime(10);
    let tokens = identity.issue_spa_tokens(&alice.account);
    identity.expire_refresh_token(&tokens.refresh_token);
    let cache = web_session(&tokens, now_secs() + 305);
    let user = teams.env.user("stale").await;
    let login = teams.login_with(&user, cache).await;
    teams
        .wait_for_state(&login, StateEvent::BadCredentials)
        .await;
    let refused = identity.calls_where(Call::is_spa_refresh);
    assert!(
        refused.iter().all(|c| c.outcome == "invalid_grant"),
        "{refused:?}"
    );
    // The management room is told to log in again.
    let (_, whoami) = teams
        .env
        .provision(&user, Method::GET, "/whoami", None)
        .await;
    assert!(whoami.to_string().contains("BAD_CREDENTIALS"), "{whoami}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_again_to_a_connected_account_ends_connected_again() {
    let teams = Teams::start().await;
    let (alice, bob, dm) = teams.alice_and_bob();
    let user = teams.env.user("again").await;
    let login = teams.login(&user, &alice).await;
    teams.wait_for_state(&login, StateEvent::Connected).await;

    // The same account again: the host renews the login, shows it as
    // connecting, and the connector's fresh instance says it is connected.
    let renewed = teams.login(&user, &alice).await;
    assert_eq!(renewed, login);
    teams.wait_for_state(&login, StateEvent::Connected).await;
    let room = teams.room(&user, &login, &dm).await;
    teams.fake.post(&dm, &bob, "after the relogin");
    user.wait_for_body(&room, "after the relogin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_of_two_users_do_not_cross() {
    let teams = Teams::start().await;
    let fake = &teams.fake;
    let alice = fake.add_account("alice", "Alice Example");
    let bob = fake.add_account("bob", "Bob Example");
    let first = teams.env.user("first").await;
    let second = teams.env.user("second").await;
    let (a, b) = tokio::join!(teams.login(&first, &alice), teams.login(&second, &bob));
    assert_eq!(a.id, alice.mri);
    assert_eq!(b.id, bob.mri);
    let owner = |key: &LoginKey| {
        teams
            .env
            .host()
            .logins()
            .store
            .get(key)
            .unwrap()
            .unwrap()
            .owner
    };
    assert_eq!(owner(&a), first.user_id);
    assert_eq!(owner(&b), second.user_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_restart_and_a_plugin_upgrade_mid_conversation_lose_and_duplicate_nothing() {
    let mut teams = Teams::start().await;
    let alice = teams.fake.add_account("alice", "Alice Example");
    let bob = teams.fake.add_account("bob", "Bob Example");
    let dm = teams.fake.dm(&alice, &bob);
    let user = teams.env.user("survivor").await;
    let login = teams.login(&user, &alice).await;
    let room = teams.room(&user, &login, &dm).await;
    teams.fake.post(&dm, &bob, "one");
    user.wait_for_body(&room, "one").await;

    // Messages both ways while the host is down.
    teams.env.stop_host().await;
    teams.fake.post(&dm, &bob, "two");
    teams.fake.post(&dm, &bob, "three");
    user.send_text(&room, "sent while down").await;
    teams.env.start_host().await;
    user.wait_for_body(&room, "three").await;
    eventually(
        Duration::from_secs(30),
        "the Matrix message reaches Teams",
        || {
            teams
                .fake
                .messages(&dm)
                .iter()
                .any(|m| m.text() == "sent while down")
                .then_some(())
        },
    )
    .await;

    // An upgrade while Teams keeps talking.
    let dir = tempfile::tempdir().unwrap();
    let next = weft_tests::host::relabelled(dir.path(), "teams", "teams", "0.1.1");
    teams.fake.post(&dm, &bob, "four");
    let outcome = teams.env.host().registry().load_file(&next).await.unwrap();
    assert!(format!("{outcome:?}").contains("Upgraded"), "{outcome:?}");
    teams.fake.post(&dm, &bob, "five");
    user.wait_for_body(&room, "five").await;
    // Bob's next message shows that every poll before it has run.
    teams.fake.post(&dm, &bob, "six");
    user.wait_for_body(&room, "six").await;

    let bodies = user.bodies(&room).await;
    for body in ["one", "two", "three", "four", "five", "six"] {
        assert_eq!(count(&bodies, body), 1, "{body} in {bodies:?}");
    }
    let order: Vec<&String> = bodies
        .iter()
        .filter(|b| ["one", "two", "three", "four", "five", "six"].contains(&b.as_str()))
        .collect();
    assert_eq!(order, ["one", "two", "three", "four", "five", "six"]);
    let sent: Vec<Value> = teams
        .fake
        .messages(&dm)
        .iter()
        .filter(|m| m.text() == "sent while down")
        .map(|m| json!(m.text()))
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(count(&bodies, "sent while down"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_thread_backs_off_alone_and_a_rate_limit_is_waited_out() {
    let teams = Teams::start().await;
    let fake = &teams.fake;
    let alice = fake.add_account("alice", "Alice Example");
    let bob = fake.add_account("bob", "Bob Example");
    let carol = fake.add_account("carol", "Carol Example");
    let broken = fake.dm(&alice, &bob);
    let healthy = fake.dm(&alice, &carol);
    let user = teams.env.user("patient").await;
    let login = teams.login(&user, &alice).await;
    let broken_room = teams.room(&user, &login, &broken).await;
    let healthy_room = teams.room(&user, &login, &healthy).await;

    // One thread answers 500; the other keeps syncing meanwhile.
    fake.fail_thread(&broken, 500);
    fake.post(&broken, &bob, "stuck for now");
    fake.post(&healthy, &carol, "still flowing");
    user.wait_for_body(&healthy_room, "still flowing").await;
    fake.heal_thread(&broken);
    user.wait_for_body(&broken_room, "stuck for now").await;

    // A 429 with Retry-After pauses the login, which then goes on.
    fake.rate_limit_next(2, Duration::from_secs(2));
    fake.post(&healthy, &carol, "after the pause");
    user.wait_for_body(&healthy_room, "after the pause").await;
    let bodies = user.bodies(&broken_room).await;
    assert_eq!(count(&bodies, "stuck for now"), 1, "{bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletions_reactions_and_files_go_both_ways() {
    let teams = Teams::start().await;
    let fake = &teams.fake;
    let (alice, bob, dm) = teams.alice_and_bob();
    let user = teams.env.user("relations").await;
    let login = teams.login(&user, &alice).await;
    let room = teams.room(&user, &login, &dm).await;
    let wait = Duration::from_secs(30);
    let event = |what: &'static str, matches: Box<dyn Fn(&Value) -> bool + Send + Sync>| {
        let user = &user;
        let room = &room;
        async move {
            weft_tests::until(wait, what, || async {
                user.events(room).await.into_iter().find(|e| matches(e))
            })
            .await
        }
    };

    // Teams → Matrix.
    let remote = fake.post(&dm, &bob, "original");
    let original = user.wait_for_body(&room, "original").await;
    let original_id = original["event_id"].as_str().unwrap().to_owned();
    fake.edit(&dm, &remote, "edited in teams");
    let id = original_id.clone();
    event(
        "the edit",
        Box::new(move |e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.relates_to"]["event_id"] == id.as_str()
                && e["content"]["m.new_content"]["body"] == "edited in teams"
        }),
    )
    .await;
    fake.react(&dm, &remote, &bob, "like");
    let id = original_id.clone();
    event(
        "the reaction",
        Box::new(move |e| {
            e["type"] == "m.reaction" && e["content"]["m.relates_to"]["event_id"] == id.as_str()
        }),
    )
    .await;
    fake.post_file(&dm, &bob, "notes.txt", b"a file from teams".to_vec());
    let file = event(
        "the file",
        Box::new(|e| e["content"]["msgtype"] == "m.file" && e["content"]["body"] == "notes.txt"),
    )
    .await;
    let mxc = file["content"]["url"].as_str().unwrap();
    assert_eq!(user.download(mxc).await, b"a file from teams");
    fake.delete(&dm, &remote);
    let id = original_id.clone();
    event(
        "the deletion",
        Box::new(move |e| {
            e["event_id"] == id.as_str() && e["unsigned"].get("redacted_because").is_some()
        }),
    )
    .await;

    // Matrix → Teams.
    let sent = user.send_text(&room, "from matrix").await;
    let sent_id = eventually(wait, "the message in Teams", || {
        fake.messages(&dm)
            .into_iter()
            .find(|m| m.text() == "from matrix")
            .map(|m| m.id)
    })
    .await;
    // What became of that one message in Teams.
    let in_teams = |check: &dyn Fn(&fake_teams::Message) -> bool| {
        fake.messages(&dm)
            .into_iter()
            .find(|m| m.id == sent_id && check(m))
    };
    user.edit(&room, &sent, "from matrix, edited").await;
    eventually(wait, "the edit in Teams", || {
        in_teams(&|m| m.edited && m.text() == "from matrix, edited")
    })
    .await;
    user.react(&room, &sent, "👍").await;
    eventually(wait, "the reaction in Teams", || {
        in_teams(&|m| {
            m.reactions
                .get("like")
                .is_some_and(|who| who.contains(&alice.mri))
        })
    })
    .await;
    user.redact(&room, &sent).await;
    eventually(wait, "the deletion in Teams", || in_teams(&|m| m.deleted)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_of_a_whole_teams_login_and_sync_reaches_the_host_log_at_debug_level() {
    let teams = Teams::start_with(|options| {
        options.process = true;
        options.log_filter = Some("debug".into());
    })
    .await;
    let fake = &teams.fake;
    let alice = fake.add_account("alice", "Alice Example");
    let carol = fake.add_account("carol", "Carol Example");
    let dm = fake.dm(&alice, &carol);
    fake.post(&dm, &carol, "hello from teams");

    // Log in through MSAL, sync, and send both ways.
    let user = teams.env.user("careful").await;
    let captured = fake.identity().issue_spa_tokens(&alice.account);
    teams
        .login_with(&user, MsalCache::signed_in(&captured))
        .await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);
    user.wait_for_body(&room, "hello from teams").await;
    user.send_text(&room, "hello from matrix").await;
    eventually(Duration::from_secs(60), "the message in Teams", || {
        fake.messages(&dm)
            .iter()
            .any(|m| m.text() == "hello from matrix")
            .then_some(())
    })
    .await;

    let log = teams.env.host_log();
    // Debug logging was really on.
    assert!(log.contains("DEBUG"), "{}", &log[..log.len().min(2000)]);
    let registration = weft_host::matrix::registration::read(&teams.env.registration()).unwrap();
    let mut secrets = fake.identity().issued_tokens();
    secrets.extend(fake.skypetokens());
    secrets.extend([
        captured.id_token.clone(),
        user.token.clone(),
        registration.as_token.clone(),
        registration.hs_token.clone(),
    ]);
    assert!(secrets.len() >= 7, "{}", secrets.len());
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a token starting {} is in the host's log",
            &secret[..8.min(secret.len())]
        );
    }
}
