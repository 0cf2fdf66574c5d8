//! The four login flows. Each ends in a `complete` step whose login id is
//! the account's id, whose remote name is its sign-in or display name, and
//! whose metadata is the [`Material`] a connector passes to
//! `tokens.from-captured`.
//!
//! - `device-code`: a code the user enters on Microsoft's page; the host
//!   polls the step and each poll asks the token endpoint once.
//! - `msal-helper`: a one-time capture page (served by the host) where the
//!   user pastes what the console snippet copied at teams.live.com.
//! - `msal-paste`: the same paste, straight into the client.
//! - `webview-localstorage`: the client's built-in browser opens
//!   teams.live.com and extracts the same object by itself.
//!
//! The instance lives for the login process, so each flow keeps its state
//! in [`Flow`]. The step builders are pure and unit-tested; the glue calls
//! the host (capture pages, HTTP, clock).

use weft_sdk::capture::{self, Page, Session};
use weft_sdk::{
    CookieField, CookieSource, CookieSourceKind, CookiesStep, DisplayKind, DisplayStep, Error,
    FieldKind, InputField, LoginStep, Result, StepInput, StepParams,
};

use crate::grant::{self, DeviceCode, GrantError, TokenResponse};
use crate::material::{self, Material, short_hash};
use crate::now_secs;
use crate::settings::Settings;

/// What the user runs in the browser console at teams.live.com: it copies
/// `localStorage` and the cache's key cookie as one JSON object.
pub(crate) const SNIPPET: &str = "copy(JSON.stringify({localStorage: Object.fromEntries(Object.entries(localStorage)), cookies: Object.fromEntries(document.cookie.split(/; */).map(c => c.split('=')).filter(([k]) => k === 'msal.cache.encryption').map(([k, ...v]) => [k, decodeURIComponent(v.join('='))]))}))";

/// What the built-in browser runs: once MSAL has stored tokens (checked
/// every second, then a second more so the refresh token and account are
/// written too), the snippet's object as the `capture` field. Cookies are
/// decoded one by one, so a malformed unrelated cookie cannot break it.
pub(crate) const EXTRACT_JS: &str = r#"new Promise((resolve) => {
  const hasTokens = () => Object.keys(localStorage).some((key) => {
    if (key.toLowerCase().includes('accesstoken')) return true;
    if (!/^msal\.(\d+\.)?token\.keys\./.test(key)) return false;
    try {
      const index = JSON.parse(localStorage.getItem(key));
      return Array.isArray(index.accessToken) && index.accessToken.length > 0;
    } catch (e) {
      return false;
    }
  });
  const cookies = () => Object.fromEntries(document.cookie.split('; ').filter(Boolean)
    .map((c) => [c.slice(0, c.indexOf('=')), c.slice(c.indexOf('=') + 1)])
    .filter(([k]) => k === 'msal.cache.encryption')
    .map(([k, v]) => { try { return [k, decodeURIComponent(v)]; } catch (e) { return [k, v]; } }));
  const capture = () => resolve({
    capture: JSON.stringify({ localStorage: Object.fromEntries(Object.entries(localStorage)), cookies: cookies() }),
  });
  const poll = () => (hasTokens() ? setTimeout(capture, 1000) : setTimeout(poll, 1000));
  poll();
})"#;

/// The field (and cookie-step value) that carries the capture.
pub(crate) const CAPTURE_FIELD: &str = "capture";

const DEVICE_CODE_STEP: &str = "msal.device-code.wait";
const HELPER_STEP: &str = "msal.helper.wait";
const PASTE_STEP: &str = "msal.paste";
const WEBVIEW_STEP: &str = "msal.webview";
const COMPLETE_STEP: &str = "msal.complete";

/// How often the host asks whether the helper page got a paste.
const HELPER_POLL_MS: u32 = 2000;

/// Pastes refused in a row before the helper flow gives up (each opens a
/// new page; the host allows a process only a few at once).
const MAX_HELPER_ATTEMPTS: u32 = 5;

/// How much slower to poll after `slow_down`, seconds (RFC 8628 §3.5).
const SLOW_DOWN_SECS: u64 = 5;

/// A running flow's state.
pub(crate) enum Flow {
    /// Waiting for the user to enter the code.
    DeviceCode(DeviceCodeFlow),
    /// Waiting for a paste on the capture page.
    Helper(HelperFlow),
    /// Waiting for the pasted field.
    Paste,
    /// Waiting for the built-in browser's extraction.
    Webview,
}

/// The device-code flow's state.
pub(crate) struct DeviceCodeFlow {
    code: DeviceCode,
    /// When the code expires, Unix seconds.
    expires_at: u64,
    interval: u64,
    step: LoginStep,
}

/// The helper flow's state.
pub(crate) struct HelperFlow {
    session: Session,
    attempt: u32,
    step: LoginStep,
}

/// Starts flow `flow_id`.
pub(crate) fn start(flow_id: &str, settings: &Settings) -> Result<(Flow, LoginStep)> {
    match flow_id {
        "device-code" => start_device_code(settings),
        "msal-helper" => {
            let session = capture::open(&helper_page(&settings.web_url))?;
            let step = helper_step(&session.url, &settings.web_url, None, 1);
            let flow = HelperFlow {
                session,
                attempt: 1,
                step: step.clone(),
            };
            Ok((Flow::Helper(flow), step))
        }
        "msal-paste" => Ok((Flow::Paste, paste_step(&settings.web_url))),
        "webview-localstorage" => Ok((Flow::Webview, webview_step(&settings.web_url))),
        other => Err(Error::invalid_input(format!(
            "there is no MSAL login flow `{other}`"
        ))),
    }
}

impl Flow {
    /// Takes the input for step `step_id`; the next step.
    pub(crate) fn submit(
        &mut self,
        step_id: &str,
        input: &StepInput,
        settings: &Settings,
    ) -> Result<LoginStep> {
        match self {
            Self::DeviceCode(flow) => {
                expect_step(step_id, &flow.step.step_id)?;
                flow.poll(settings)
            }
            Self::Helper(flow) => {
                expect_step(step_id, &flow.step.step_id)?;
                flow.poll(settings)
            }
            Self::Paste => {
                expect_step(step_id, PASTE_STEP)?;
                complete_paste(input, settings, "That paste")
            }
            Self::Webview => {
                expect_step(step_id, WEBVIEW_STEP)?;
                complete_paste(input, settings, "The browser session")
            }
        }
    }

    /// Releases what the flow holds (its capture page).
    pub(crate) fn cancel(&self) {
        if let Self::Helper(flow) = self {
            capture::close(&flow.session.id);
        }
    }
}

fn expect_step(got: &str, expected: &str) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "step `{got}` is not the current step (`{expected}`)"
        )))
    }
}

fn start_device_code(settings: &Settings) -> Result<(Flow, LoginStep)> {
    let (status, body) = grant::send(&grant::device_code_request(settings)).map_err(flow_error)?;
    let code = grant::parse_device_code(status, &body).map_err(flow_error)?;
    weft_sdk::info!(
        "device-code login started (code lives {}s, poll every {}s)",
        code.expires_in,
        code.interval
    );
    let step = device_code_step(&code, code.interval);
    let flow = DeviceCodeFlow {
        expires_at: now_secs().saturating_add(code.expires_in),
        interval: code.interval,
        step: step.clone(),
        code,
    };
    Ok((Flow::DeviceCode(flow), step))
}

impl DeviceCodeFlow {
    /// Asks the token endpoint once whether the user entered the code.
    fn poll(&mut self, settings: &Settings) -> Result<LoginStep> {
        if now_secs() >= self.expires_at {
            // Over for good: the host ends the login process.
            return Err(Error::bad_credentials(GrantError::CodeExpired.to_string()));
        }
        let request = grant::device_token_request(settings, &self.code.device_code);
        let answer =
            grant::send(&request).and_then(|(status, body)| grant::classify(status, &body));
        match answer {
            Ok(json) => {
                let received_at = now_secs();
                let response = TokenResponse::from_json(&json)
                    .ok_or_else(|| Error::transient("the token answer has no access token"))?;
                let (account_id, name) = device_code_account(&response);
                weft_sdk::info!(
                    "device-code login completed (refresh token: {})",
                    response.refresh_token.is_some()
                );
                let material = Material::DeviceCode {
                    token_response: json,
                    received_at,
                };
                LoginStep::complete(COMPLETE_STEP, account_id, name, &material.to_json())
            }
            Err(GrantError::Pending) => Ok(self.step.clone()),
            Err(GrantError::SlowDown) => {
                self.interval = self.interval.saturating_add(SLOW_DOWN_SECS);
                self.step = device_code_step(&self.code, self.interval);
                Ok(self.step.clone())
            }
            // A lost poll is not a failed login: wait for the next one.
            Err(GrantError::Transient(message)) => {
                weft_sdk::warn!("device-code poll failed; waiting on: {message}");
                Ok(self.step.clone())
            }
            Err(
                error @ (GrantError::Declined
                | GrantError::CodeExpired
                | GrantError::InvalidGrant(_)
                | GrantError::Refused(_)),
            ) => Err(Error::bad_credentials(error.to_string())),
        }
    }
}

impl HelperFlow {
    /// Takes the page's paste, if any: accepts it, or opens a new page
    /// that says what was wrong.
    fn poll(&mut self, settings: &Settings) -> Result<LoginStep> {
        let Some(text) = capture::take(&self.session.id)? else {
            return Ok(self.step.clone());
        };
        capture::close(&self.session.id);
        match material::validate_capture(&text, &settings.web_client_id, now_secs()) {
            Ok(valid) => {
                weft_sdk::info!("helper page capture accepted ({} bytes)", text.len());
                complete(valid)
            }
            Err(problem) => {
                weft_sdk::info!(
                    "helper page capture refused ({} bytes, attempt {})",
                    text.len(),
                    self.attempt
                );
                if self.attempt >= MAX_HELPER_ATTEMPTS {
                    // Gives up: the host ends the login process.
                    return Err(Error::bad_credentials(format!(
                        "That paste had no usable Teams tokens: {problem}. Start the login again to retry."
                    )));
                }
                self.session = capture::open(&helper_page(&settings.web_url))?;
                self.attempt += 1;
                let problem = problem.to_string();
                self.step = helper_step(
                    &self.session.url,
                    &settings.web_url,
                    Some(&problem),
                    self.attempt,
                );
                Ok(self.step.clone())
            }
        }
    }
}

/// The provider's last step: the account and the material the connector
/// makes its login of.
fn complete(valid: material::Validated) -> Result<LoginStep> {
    LoginStep::complete(
        COMPLETE_STEP,
        valid.account_id,
        valid.name,
        &valid.material.to_json(),
    )
}

/// Completes the paste and webview flows with the submitted capture.
fn complete_paste(input: &StepInput, settings: &Settings, what: &str) -> Result<LoginStep> {
    let text = input
        .field(CAPTURE_FIELD)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::invalid_input(format!(
                "Paste what the snippet copied into the `{CAPTURE_FIELD}` field."
            ))
        })?;
    match material::validate_capture(text, &settings.web_client_id, now_secs()) {
        Ok(valid) => {
            weft_sdk::info!("browser session accepted ({} bytes)", text.len());
            complete(valid)
        }
        Err(problem) => {
            weft_sdk::info!("browser session refused ({} bytes)", text.len());
            Err(Error::invalid_input(format!(
                "{what} had no usable Teams tokens: {problem}."
            )))
        }
    }
}

/// The flow error of a failed device-code start.
fn flow_error(error: GrantError) -> Error {
    match error {
        GrantError::Transient(m) => Error::Transient(m),
        other => Error::InvalidInput(other.to_string()),
    }
}

/// The account of a device-code answer: from its id token, else a hash of
/// its refresh (or access) token; its display name, else sign-in name.
fn device_code_account(response: &TokenResponse) -> (String, String) {
    let claims = response.claims.as_ref();
    let account_id = claims.and_then(|c| c.account_id()).unwrap_or_else(|| {
        let secret = response
            .refresh_token
            .as_deref()
            .unwrap_or(&response.access_token);
        format!("dc-{}", short_hash(secret))
    });
    let name = claims
        .and_then(|c| c.display_name())
        .unwrap_or("Microsoft account")
        .to_owned();
    (account_id, name)
}

/// The device-code step: the code, where to enter it, and a poll no
/// faster than the endpoint asked (and at least a second).
fn device_code_step(code: &DeviceCode, interval_secs: u64) -> LoginStep {
    let minutes = code.expires_in.div_ceil(60).max(1);
    let poll_after_ms =
        u32::try_from(interval_secs.max(1).saturating_mul(1000)).unwrap_or(u32::MAX);
    LoginStep::display_and_wait(
        DEVICE_CODE_STEP,
        format!(
            "Open {} in any browser, sign in with your Microsoft account and enter the code {}. The code works for {minutes} minutes.",
            code.verification_uri, code.user_code
        ),
        DisplayStep {
            kind: DisplayKind::Code,
            data: code.user_code.clone(),
            image_url: None,
            poll_after_ms,
        },
    )
}

/// The capture page's text.
fn helper_page(web_url: &str) -> Page {
    Page {
        title: "Log in to Microsoft Teams".into(),
        steps: vec![
            format!(
                "Open {web_url} in a desktop browser (Chrome, Edge or Firefox) and sign in with your Microsoft account. Wait until your chats appear."
            ),
            "Open the browser's developer console: press F12 (on a Mac, Cmd+Option+J) and choose the Console tab.".into(),
            "Paste the snippet below into the console and press Enter. It copies your session, that is your Teams sign-in tokens, to the clipboard. (If the browser asks, type \"allow pasting\" first.) Anyone with this text can use your account: paste it only here.".into(),
            "Paste it into the box below and press Send, then go back to your Matrix client.".into(),
        ],
        snippet: Some(SNIPPET.into()),
        field_label: "Copied session".into(),
    }
}

/// The helper flow's waiting step; after a refused paste, `problem` says
/// what was wrong, first, and the step id changes so the client shows the
/// new link at once.
fn helper_step(page_url: &str, web_url: &str, problem: Option<&str>, attempt: u32) -> LoginStep {
    let step_id = if attempt <= 1 {
        HELPER_STEP.to_owned()
    } else {
        format!("{HELPER_STEP}.{attempt}")
    };
    let opening = match problem {
        Some(problem) => format!(
            "That paste had no usable Teams tokens: {problem}. Try again at the new link: {page_url}"
        ),
        None => format!(
            "Open {page_url} in the browser where you use Teams (the QR code holds the same link) and follow the steps on the page."
        ),
    };
    LoginStep::display_and_wait(
        step_id,
        format!(
            "{opening}\n\nIn short: sign in at {web_url}, open the browser console (F12), run this snippet, and paste what it copies into the page:\n\n{SNIPPET}"
        ),
        DisplayStep {
            kind: DisplayKind::Qr,
            data: page_url.to_owned(),
            image_url: None,
            poll_after_ms: HELPER_POLL_MS,
        },
    )
}

/// The paste flow's step: one field for the copied session.
fn paste_step(web_url: &str) -> LoginStep {
    LoginStep::user_input(
        PASTE_STEP,
        format!(
            "Sign in at {web_url} in a desktop browser, open the developer console (F12), run this snippet and paste what it copies below:\n\n{SNIPPET}"
        ),
        vec![InputField::new(
            FieldKind::Token,
            CAPTURE_FIELD,
            "Copied session",
            // The instructions carry the snippet; a chat shows both.
            "what the snippet above copies, pasted whole",
        )],
    )
}

/// The built-in browser's step.
fn webview_step(web_url: &str) -> LoginStep {
    LoginStep {
        step_id: WEBVIEW_STEP.into(),
        instructions: "Sign in to Microsoft Teams with your Microsoft account in the window that opens; the login finishes by itself once Teams has loaded.".into(),
        params: StepParams::Cookies(CookiesStep {
            url: web_url.to_owned(),
            user_agent: None,
            fields: vec![CookieField {
                id: CAPTURE_FIELD.into(),
                required: true,
                sources: vec![CookieSource {
                    kind: CookieSourceKind::Special,
                    name: CAPTURE_FIELD.into(),
                    request_url_regex: None,
                    cookie_domain: None,
                }],
                pattern: None,
            }],
            extract_js: Some(EXTRACT_JS.into()),
            wait_for_url_pattern: Some(url_pattern(web_url)),
        }),
    }
}

/// A regular expression for URLs that start with `url`.
fn url_pattern(url: &str) -> String {
    let mut pattern = String::from("^");
    for c in url.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jwt::token_for_test;

    fn code() -> DeviceCode {
        DeviceCode {
            device_code: "secret".into(),
            user_code: "ABCD-1234".into(),
            verification_uri: "https://microsoft.com/devicelogin".into(),
            expires_in: 900,
            interval: 5,
        }
    }

    #[test]
    fn the_snippet_is_the_documented_one() {
        assert!(SNIPPET.starts_with("copy(JSON.stringify({localStorage:"));
        assert!(SNIPPET.contains("k === 'msal.cache.encryption'"));
        assert!(SNIPPET.ends_with("]))}))"));
    }

    #[test]
    fn the_device_code_step_shows_the_code_and_where_to_enter_it() {
        let step = device_code_step(&code(), 5);
        assert!(
            step.instructions
                .contains("https://microsoft.com/devicelogin")
        );
        assert!(step.instructions.contains("ABCD-1234"));
        assert!(step.instructions.contains("15 minutes"));
        let StepParams::DisplayAndWait(display) = step.params else {
            panic!("expected a display step")
        };
        assert_eq!(display.kind, DisplayKind::Code);
        assert_eq!(display.data, "ABCD-1234");
        assert_eq!(display.poll_after_ms, 5000);
        // Never faster than once a second.
        let StepParams::DisplayAndWait(display) = device_code_step(&code(), 0).params else {
            panic!("expected a display step")
        };
        assert_eq!(display.poll_after_ms, 1000);
    }

    #[test]
    fn the_helper_step_links_the_page_and_says_first_what_was_wrong() {
        let first = helper_step(
            "https://bridge/login/abc",
            "https://teams.live.com/v2",
            None,
            1,
        );
        assert_eq!(first.step_id, HELPER_STEP);
        assert!(first.instructions.contains("https://bridge/login/abc"));
        assert!(first.instructions.contains(SNIPPET));
        let StepParams::DisplayAndWait(display) = &first.params else {
            panic!("expected a display step")
        };
        assert_eq!(display.kind, DisplayKind::Qr);
        assert_eq!(display.data, "https://bridge/login/abc");
        // A retry names the problem first, on a new step id.
        let retry = helper_step(
            "https://bridge/login/def",
            "https://teams.live.com/v2",
            Some("no cookie"),
            2,
        );
        assert!(
            retry
                .instructions
                .starts_with("That paste had no usable Teams tokens: no cookie.")
        );
        assert!(retry.instructions.contains("https://bridge/login/def"));
        assert_ne!(retry.step_id, first.step_id);
    }

    #[test]
    fn the_helper_page_shows_the_snippet_and_numbered_plain_steps() {
        let page = helper_page("https://teams.live.com/v2");
        assert_eq!(page.snippet.as_deref(), Some(SNIPPET));
        assert_eq!(page.steps.len(), 4);
        assert!(page.steps[0].contains("https://teams.live.com/v2"));
        assert!(page.steps[1].contains("F12"));
    }

    #[test]
    fn the_paste_step_has_one_token_field_that_shows_the_snippet() {
        let step = paste_step("https://teams.live.com/v2");
        let StepParams::UserInput(fields) = step.params else {
            panic!("expected a user-input step")
        };
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].kind, FieldKind::Token);
        assert_eq!(fields[0].id, CAPTURE_FIELD);
        assert_eq!(fields[0].name, "Copied session");
        assert!(step.instructions.contains(SNIPPET));
        assert!(!fields[0].description.contains(SNIPPET));
    }

    #[test]
    fn the_webview_step_extracts_the_capture_once_teams_is_loaded() {
        let step = webview_step("https://teams.live.com/v2");
        let StepParams::Cookies(cookies) = step.params else {
            panic!("expected a cookies step")
        };
        assert_eq!(cookies.url, "https://teams.live.com/v2");
        assert_eq!(
            cookies.wait_for_url_pattern.as_deref(),
            Some(r"^https://teams\.live\.com/v2")
        );
        let field = &cookies.fields[0];
        assert!(field.required);
        assert_eq!(field.id, CAPTURE_FIELD);
        assert_eq!(field.sources[0].kind, CookieSourceKind::Special);
        let js = cookies.extract_js.unwrap();
        // It resolves to the field, with the key cookie, polling each second.
        assert!(js.contains("capture: JSON.stringify"));
        assert!(js.contains("msal.cache.encryption"));
        assert!(js.contains("setTimeout(poll, 1000)"));
    }

    #[test]
    fn device_code_accounts_come_from_the_id_token_else_a_hash() {
        let id_token = token_for_test(
            &json!({"oid": "o", "tid": "t", "preferred_username": "ada@example.com"}),
        );
        let with = TokenResponse::from_json(
            &json!({"access_token": "a", "refresh_token": "r", "id_token": id_token}),
        )
        .unwrap();
        assert_eq!(
            device_code_account(&with),
            ("o.t".into(), "ada@example.com".into())
        );
        let without =
            TokenResponse::from_json(&json!({"access_token": "a", "refresh_token": "r"})).unwrap();
        let (id, name) = device_code_account(&without);
        assert_eq!(id, format!("dc-{}", short_hash("r")));
        assert_eq!(name, "Microsoft account");
    }

    #[test]
    fn url_patterns_escape_regex_characters() {
        assert_eq!(
            url_pattern("http://127.0.0.1:9/a?b"),
            r"^http://127\.0\.0\.1:9/a\?b"
        );
    }
}
