//! Pages for a person running the demo, standing in for what real
//! Microsoft serves elsewhere: the device-code approval page
//! (microsoft.com/devicelogin), a signed-in teams.live.com tab, whose
//! console capture the web login asks for, and the Teams app itself: a
//! form that posts in a chat as one of its members. Plain HTML, no
//! scripts.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::App;
use crate::msal_cache::{CONSOLE_SNIPPET, KeySchema, MsalCache};
use crate::wire::escape;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/fake", get(index))
        .route("/fake/devicelogin", get(device_login).post(approve))
        .route("/fake/session/{username}", get(session))
        .route("/fake/post", axum::routing::post(post_as))
        .layer(DefaultBodyLimit::max(16 << 10))
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · fake Teams</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.4}}\
textarea{{width:100%;height:16rem;font-family:monospace;font-size:.8rem}}code{{background:#eee;padding:0 .2em}}\
label{{display:block;margin:.6rem 0}}input,select,button{{font-size:1rem}}</style></head>\
<body><h1>{title}</h1>{body}<hr><p><small>fake-teams: a stand-in for teams.live.com and login.microsoftonline.com. <a href=\"/fake\">Index</a></small></p></body></html>",
        title = escape(title),
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// # `GET /fake`
///
/// The accounts, with links to their web sessions, and the device login.
async fn index(State(app): State<App>) -> Response {
    let state = app.lock();
    let mut profiles: Vec<_> = state.profiles.values().collect();
    profiles.sort_by_key(|p| p.index);
    let rows: String = profiles
        .iter()
        .map(|p| {
            format!(
                "<li><b>{}</b> ({}), <code>{}</code>, signs in as {}: <a href=\"/fake/session/{}\">web session</a></li>",
                escape(&p.handle),
                escape(&p.account.name),
                escape(&p.mri()),
                escape(&p.account.username),
                escape(&p.handle),
            )
        })
        .collect();
    let mut chats: Vec<_> = state.chats.values().collect();
    chats.sort_by_key(|c| c.index);
    let chats: String = chats
        .iter()
        .map(|chat| {
            let names: Vec<String> = chat
                .members
                .iter()
                .map(|m| state.display_name(&m.mri))
                .collect();
            let options: String = chat
                .members
                .iter()
                .filter_map(|m| state.profiles.get(&m.mri))
                .map(|p| {
                    format!(
                        "<option value=\"{}\">{}</option>",
                        escape(&p.handle),
                        escape(&p.account.name)
                    )
                })
                .collect();
            format!(
                "<li><b>{}</b> ({}, {} messages)<form method=\"post\" action=\"/fake/post\">\
<input type=\"hidden\" name=\"chat\" value=\"{}\"><select name=\"account\" aria-label=\"as\">{options}</select> \
<input name=\"text\" required aria-label=\"message\" placeholder=\"a message\"> <button>Post</button></form></li>",
                escape(chat.topic.as_deref().unwrap_or("direct chat")),
                escape(&names.join(", ")),
                chat.messages.len(),
                escape(&chat.key),
            )
        })
        .collect();
    page(
        StatusCode::OK,
        "Fake Teams",
        &format!(
            "<h2>Accounts</h2><ul>{rows}</ul><h2>Logging in</h2><ul>\
<li>Device code: the bridge shows a code; enter it at <a href=\"/fake/devicelogin\">/fake/devicelogin</a>.</li>\
<li>Web session: open an account's web session page and paste its capture into the bridge.</li></ul>\
<h2 id=\"chats\">Chats</h2><p>Post in a chat as one of its members, as from the Teams app.</p><ul>{chats}</ul>"
        ),
    )
}

/// # `POST /fake/post`
///
/// Posts `text` in `chat` as member `account` (a handle or sign-in name),
/// as the Teams app would, then goes back to the index.
async fn post_as(State(app): State<App>, body: Bytes) -> Response {
    let (mut chat, mut handle, mut text) = (String::new(), String::new(), String::new());
    for (name, value) in url::form_urlencoded::parse(&body) {
        match name.as_ref() {
            "chat" => chat = value.into_owned(),
            "account" => handle = value.into_owned(),
            "text" => text = value.into_owned(),
            _ => {}
        }
    }
    let refused = |status, title: &str, why: &str| {
        page(
            status,
            title,
            &format!("<p>{}. <a href=\"/fake#chats\">Back</a>.</p>", escape(why)),
        )
    };
    let mut state = app.lock();
    let Some(key) = state.resolve(&chat) else {
        return refused(
            StatusCode::NOT_FOUND,
            "Unknown chat",
            "There is no such chat",
        );
    };
    let Some(mri) = state.profile_by_handle(&handle).map(|p| p.mri()) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "Unknown account",
            "Pick an account",
        );
    };
    if !state.chats[&key].is_member(&mri) {
        return refused(
            StatusCode::BAD_REQUEST,
            "Not a member",
            "That account is not in this chat",
        );
    }
    if text.trim().is_empty() {
        return refused(
            StatusCode::BAD_REQUEST,
            "Nothing to post",
            "Write a message",
        );
    }
    let draft = state.typed(&text);
    state.post(&key, &mri, draft);
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/fake#chats")]).into_response()
}

/// # `GET /fake/devicelogin?code=`
///
/// Where the device-code answer sends the user: a form for the code and
/// the account to approve it as.
async fn device_login(State(app): State<App>, RawQuery(raw): RawQuery) -> Response {
    let code = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "code" || k == "otc")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let state = app.lock();
    let mut profiles: Vec<_> = state.profiles.values().collect();
    profiles.sort_by_key(|p| p.index);
    let options: String = profiles
        .iter()
        .filter(|p| !state.echo_bots.contains(&p.mri()))
        .map(|p| {
            format!(
                "<option value=\"{}\">{} ({})</option>",
                escape(&p.handle),
                escape(&p.account.name),
                escape(&p.account.username)
            )
        })
        .collect();
    page(
        StatusCode::OK,
        "Enter code",
        &format!(
            "<p>Enter the code the bridge shows to let it sign in to your Teams account.</p>\
<form method=\"post\" action=\"/fake/devicelogin\">\
<label>Code <input name=\"code\" value=\"{}\" autocomplete=\"off\" autofocus required></label>\
<label>Sign in as <select name=\"account\">{options}</select></label>\
<button type=\"submit\">Allow</button></form>",
            escape(&code)
        ),
    )
}

/// # `POST /fake/devicelogin`
///
/// Approves the code (form fields `code` and `account`) as that account.
async fn approve(State(app): State<App>, body: Bytes) -> Response {
    let mut code = String::new();
    let mut handle = String::new();
    for (name, value) in url::form_urlencoded::parse(&body) {
        match name.as_ref() {
            "code" => code = value.into_owned(),
            "account" => handle = value.into_owned(),
            _ => {}
        }
    }
    let account = app
        .lock()
        .profile_by_handle(&handle)
        .map(|p| p.account.clone());
    let Some(account) = account else {
        return page(
            StatusCode::BAD_REQUEST,
            "Unknown account",
            "<p>Pick an account. <a href=\"/fake/devicelogin\">Try again</a>.</p>",
        );
    };
    match app.identity.try_approve(&code, &account) {
        Ok(()) => page(
            StatusCode::OK,
            "You're signed in",
            &format!(
                "<p>The bridge is signed in as <b>{}</b> ({}). You can close this page.</p>",
                escape(&account.name),
                escape(&account.username)
            ),
        ),
        Err(why) => page(
            StatusCode::BAD_REQUEST,
            "That code didn't work",
            &format!(
                "<p>{}. Check the code and <a href=\"/fake/devicelogin?code={}\">try again</a>.</p>",
                escape(why),
                escape(&url::form_urlencoded::byte_serialize(code.as_bytes()).collect::<String>())
            ),
        ),
    }
}

/// # `GET /fake/session/{username}`
///
/// A fresh web session for the account: what the console snippet copies
/// on a signed-in teams.live.com tab (an encrypted msal-browser 5 cache
/// and its cookie, with freshly issued SPA tokens), in a text area to
/// copy.
async fn session(State(app): State<App>, Path(username): Path<String>) -> Response {
    let account = app
        .lock()
        .profile_by_handle(&username)
        .map(|p| p.account.clone());
    let Some(account) = account else {
        return page(
            StatusCode::NOT_FOUND,
            "No such account",
            &format!(
                "<p>There is no account {}. See the <a href=\"/fake\">index</a>.</p>",
                escape(&username)
            ),
        );
    };
    let tokens = app.identity.issue_spa_tokens(&account);
    let capture = MsalCache::signed_in(&tokens)
        .schema(KeySchema::V2)
        .encrypted()
        .capture();
    page(
        StatusCode::OK,
        &format!("Web session of {}", account.name),
        &format!(
            "<p>On real Teams you would sign in at teams.live.com, open the browser console and run:</p>\
<p><code>{}</code></p><p>That copies the text below (this one is freshly signed in as {}). \
Copy it and paste it where the bridge asks for it. Its refresh token works for 24 hours.</p>\
<textarea readonly>{}</textarea>",
            escape(CONSOLE_SNIPPET),
            escape(&account.username),
            escape(&capture)
        ),
    )
}
