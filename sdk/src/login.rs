//! Login processes, step by step, as in bridgev2.
//!
//! The host runs each login process in a fresh instance, calls
//! [`Login::login_start`] with the flow the user chose, then
//! [`Login::login_submit`] with each step's input, until a step is
//! [`StepParams::Complete`]. The flows themselves are declared in the
//! plugin's manifest (`[[login-flows]]`).
//!
//! A `DisplayAndWait` step is polled by the host: it calls `login_submit`
//! with [`StepInput::Wait`] every `poll_after_ms` until the plugin returns a
//! different step. The plugin never blocks waiting.

/// The kind of a user-input field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A user name.
    Username,
    /// A password (clients hide it; the bot redacts the reply).
    Password,
    /// A phone number in international format.
    PhoneNumber,
    /// An email address.
    Email,
    /// A second-factor code.
    TwoFactorCode,
    /// An opaque token.
    Token,
    /// A URL.
    Url,
    /// A domain name.
    Domain,
    /// A choice among the field's options.
    Select,
    /// A captcha answer.
    CaptchaCode,
}

/// One field the user fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputField {
    /// The kind of value.
    pub kind: FieldKind,
    /// The key under which the value is submitted.
    pub id: String,
    /// A short label.
    pub name: String,
    /// A longer explanation.
    pub description: String,
    /// A value to prefill.
    pub default_value: Option<String>,
    /// A regular expression the value must match.
    pub pattern: Option<String>,
    /// The choices, for [`FieldKind::Select`].
    pub options: Vec<String>,
}

impl InputField {
    /// A field with no default, pattern or options.
    pub fn new(
        kind: FieldKind,
        id: impl Into<String>,
        name: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            id: id.into(),
            name: name.into(),
            description: description.into(),
            default_value: None,
            pattern: None,
            options: Vec::new(),
        }
    }
}

/// Where a client finds a cookie-step value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieSourceKind {
    /// A cookie.
    Cookie,
    /// A `localStorage` entry.
    LocalStorage,
    /// A request header.
    RequestHeader,
    /// A request body.
    RequestBody,
    /// Something the client knows how to find.
    Special,
}

/// One place to look for a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSource {
    /// What kind of place.
    pub kind: CookieSourceKind,
    /// The cookie, key or header name.
    pub name: String,
    /// For request sources: which request URLs to watch.
    pub request_url_regex: Option<String>,
    /// For cookies: the cookie's domain.
    pub cookie_domain: Option<String>,
}

/// One value the client extracts from a web page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieField {
    /// The key under which the value is submitted.
    pub id: String,
    /// Whether the step can complete without it.
    pub required: bool,
    /// Where to look.
    pub sources: Vec<CookieSource>,
    /// A regular expression the value must match.
    pub pattern: Option<String>,
}

/// A step where the client opens a page and extracts values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookiesStep {
    /// The page to open.
    pub url: String,
    /// The user agent to use.
    pub user_agent: Option<String>,
    /// The values to extract.
    pub fields: Vec<CookieField>,
    /// JavaScript evaluating to a promise of the field values.
    pub extract_js: Option<String>,
    /// Extract only once the page URL matches this.
    pub wait_for_url_pattern: Option<String>,
}

/// What a display-and-wait step shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayKind {
    /// A QR code.
    Qr,
    /// Emoji to compare.
    Emoji,
    /// A code to type elsewhere.
    Code,
    /// Nothing; only wait.
    Nothing,
}

/// A step where the user acts elsewhere while the host waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayStep {
    /// What to show.
    pub kind: DisplayKind,
    /// The data to show.
    pub data: String,
    /// An image of the data.
    pub image_url: Option<String>,
    /// How long the host waits before asking again, in milliseconds.
    pub poll_after_ms: u32,
}

/// The end of a successful login process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteStep {
    /// The login id, stable for the remote account.
    pub login_id: String,
    /// The remote account's display name.
    pub remote_name: String,
    /// The connector's metadata for the login (JSON text).
    pub metadata: String,
}

/// What a step asks of the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepParams {
    /// Fill in fields.
    UserInput(Vec<InputField>),
    /// Open a page and extract values.
    Cookies(CookiesStep),
    /// Look at something and wait.
    DisplayAndWait(DisplayStep),
    /// Done.
    Complete(CompleteStep),
}

/// One step of a login process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStep {
    /// A stable id for this step of this flow.
    pub step_id: String,
    /// What the user should do.
    pub instructions: String,
    /// The step's parameters.
    pub params: StepParams,
}

impl LoginStep {
    /// A user-input step.
    pub fn user_input(
        step_id: impl Into<String>,
        instructions: impl Into<String>,
        fields: Vec<InputField>,
    ) -> Self {
        Self {
            step_id: step_id.into(),
            instructions: instructions.into(),
            params: StepParams::UserInput(fields),
        }
    }

    /// A display-and-wait step.
    pub fn display_and_wait(
        step_id: impl Into<String>,
        instructions: impl Into<String>,
        display: DisplayStep,
    ) -> Self {
        Self {
            step_id: step_id.into(),
            instructions: instructions.into(),
            params: StepParams::DisplayAndWait(display),
        }
    }

    /// The final step; `metadata` is serialized to JSON.
    pub fn complete<M: serde::Serialize>(
        step_id: impl Into<String>,
        login_id: impl Into<String>,
        remote_name: impl Into<String>,
        metadata: &M,
    ) -> crate::Result<Self> {
        let remote_name = remote_name.into();
        Ok(Self {
            step_id: step_id.into(),
            instructions: format!("Logged in as {remote_name}"),
            params: StepParams::Complete(CompleteStep {
                login_id: login_id.into(),
                remote_name,
                metadata: serde_json::to_string(metadata)?,
            }),
        })
    }
}

/// What the client submits for a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepInput {
    /// Field ids and values for a user-input step.
    UserInput(Vec<(String, String)>),
    /// Field ids and values for a cookies step.
    Cookies(Vec<(String, String)>),
    /// Whether a display-and-wait step is over; return the same step to
    /// keep waiting.
    Wait,
}

impl StepInput {
    /// The submitted value of field `id`, for user-input and cookies steps.
    pub fn field(&self, id: &str) -> Option<&str> {
        match self {
            Self::UserInput(fields) | Self::Cookies(fields) => fields
                .iter()
                .find(|(k, _)| k == id)
                .map(|(_, v)| v.as_str()),
            Self::Wait => None,
        }
    }
}

/// What a login provider's flow produced, for a connector to finish
/// ([`Login::finish_provider_login`]). `account_id` and `account_name` may
/// come from what the user pasted: take the login id from an
/// authenticated call instead. Its `Debug` leaves the material out.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderGrant {
    /// The provider plugin's id.
    pub provider: String,
    /// The account, in the provider's terms.
    pub account_id: String,
    /// The account's display name, as the provider knows it.
    pub account_name: String,
    /// The captured material: pass it to [`crate::tokens::from_captured`].
    pub material: String,
}

impl std::fmt::Debug for ProviderGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderGrant")
            .field("provider", &self.provider)
            .field("account_id", &self.account_id)
            .field("material", &format_args!("<{} bytes>", self.material.len()))
            .finish_non_exhaustive()
    }
}

/// The login a connector makes of a provider's grant. Its `Debug` leaves
/// the metadata (tokens) out.
#[derive(Clone, PartialEq, Eq)]
pub struct Completion {
    /// The login id, stable for the remote account.
    pub login_id: String,
    /// The remote account's display name.
    pub remote_name: String,
    /// The connector's metadata for the login (JSON text).
    pub metadata: String,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("login_id", &self.login_id)
            .field("remote_name", &self.remote_name)
            .field("metadata", &format_args!("<{} bytes>", self.metadata.len()))
            .finish()
    }
}

impl Completion {
    /// A completion; `metadata` is serialized to JSON.
    pub fn new<M: serde::Serialize>(
        login_id: impl Into<String>,
        remote_name: impl Into<String>,
        metadata: &M,
    ) -> crate::Result<Self> {
        Ok(Self {
            login_id: login_id.into(),
            remote_name: remote_name.into(),
            metadata: serde_json::to_string(metadata)?,
        })
    }
}

/// Login flows. Every method defaults to "unsupported".
pub trait Login {
    /// Starts flow `flow_id`. `relogin` is the id of the login being
    /// replaced, if any.
    fn login_start(&mut self, flow_id: &str, relogin: Option<&str>) -> crate::Result<LoginStep> {
        let _ = (flow_id, relogin);
        Err(crate::Error::unsupported("login"))
    }

    /// Takes the input for step `step_id` and returns the next step.
    fn login_submit(&mut self, step_id: &str, input: StepInput) -> crate::Result<LoginStep> {
        let _ = (step_id, input);
        Err(crate::Error::unsupported("login"))
    }

    /// The user gave up or the process timed out.
    fn login_cancel(&mut self) {}

    /// For a connector: the login provider completed flow `flow_id`, one
    /// the manifest declares `from-provider = true`. Make the login of
    /// `grant`, usually with [`crate::tokens::from_captured`].
    fn finish_provider_login(
        &mut self,
        flow_id: &str,
        grant: ProviderGrant,
        relogin: Option<&str>,
    ) -> crate::Result<Completion> {
        let _ = (flow_id, grant, relogin);
        Err(crate::Error::unsupported("logins from a login provider"))
    }
}

/// Conversions between the SDK's login types and the generated
/// `login-flow` types (one set, whatever the plugin's role).
mod convert {
    use crate::login::{
        CookieSourceKind, DisplayKind, FieldKind, LoginStep, StepInput, StepParams,
    };
    use crate::wit::login_flow_export as w;

    impl From<FieldKind> for w::FieldKind {
        fn from(kind: FieldKind) -> Self {
            match kind {
                FieldKind::Username => Self::Username,
                FieldKind::Password => Self::Password,
                FieldKind::PhoneNumber => Self::PhoneNumber,
                FieldKind::Email => Self::Email,
                FieldKind::TwoFactorCode => Self::TwoFactorCode,
                FieldKind::Token => Self::Token,
                FieldKind::Url => Self::Url,
                FieldKind::Domain => Self::Domain,
                FieldKind::Select => Self::Select,
                FieldKind::CaptchaCode => Self::CaptchaCode,
            }
        }
    }

    impl From<CookieSourceKind> for w::CookieSourceKind {
        fn from(kind: CookieSourceKind) -> Self {
            match kind {
                CookieSourceKind::Cookie => Self::Cookie,
                CookieSourceKind::LocalStorage => Self::LocalStorage,
                CookieSourceKind::RequestHeader => Self::RequestHeader,
                CookieSourceKind::RequestBody => Self::RequestBody,
                CookieSourceKind::Special => Self::Special,
            }
        }
    }

    impl From<DisplayKind> for w::DisplayKind {
        fn from(kind: DisplayKind) -> Self {
            match kind {
                DisplayKind::Qr => Self::Qr,
                DisplayKind::Emoji => Self::Emoji,
                DisplayKind::Code => Self::Code,
                DisplayKind::Nothing => Self::Nothing,
            }
        }
    }

    impl From<LoginStep> for w::LoginStep {
        fn from(step: LoginStep) -> Self {
            let params = match step.params {
                StepParams::UserInput(fields) => w::StepParams::UserInput(
                    fields
                        .into_iter()
                        .map(|f| w::InputField {
                            kind: f.kind.into(),
                            id: f.id,
                            name: f.name,
                            description: f.description,
                            default_value: f.default_value,
                            pattern: f.pattern,
                            options: f.options,
                        })
                        .collect(),
                ),
                StepParams::Cookies(c) => w::StepParams::Cookies(w::CookiesStep {
                    url: c.url,
                    user_agent: c.user_agent,
                    fields: c
                        .fields
                        .into_iter()
                        .map(|f| w::CookieField {
                            id: f.id,
                            required: f.required,
                            sources: f
                                .sources
                                .into_iter()
                                .map(|s| w::CookieSource {
                                    kind: s.kind.into(),
                                    name: s.name,
                                    request_url_regex: s.request_url_regex,
                                    cookie_domain: s.cookie_domain,
                                })
                                .collect(),
                            pattern: f.pattern,
                        })
                        .collect(),
                    extract_js: c.extract_js,
                    wait_for_url_pattern: c.wait_for_url_pattern,
                }),
                StepParams::DisplayAndWait(d) => w::StepParams::DisplayAndWait(w::DisplayStep {
                    kind: d.kind.into(),
                    data: d.data,
                    image_url: d.image_url,
                    poll_after_ms: d.poll_after_ms,
                }),
                StepParams::Complete(c) => w::StepParams::Complete(w::CompleteStep {
                    login_id: c.login_id,
                    remote_name: c.remote_name,
                    metadata: c.metadata,
                }),
            };
            Self {
                step_id: step.step_id,
                instructions: step.instructions,
                params,
            }
        }
    }

    impl From<w::StepInput> for StepInput {
        fn from(input: w::StepInput) -> Self {
            match input {
                w::StepInput::UserInput(fields) => Self::UserInput(fields),
                w::StepInput::Cookies(fields) => Self::Cookies(fields),
                w::StepInput::Wait => Self::Wait,
            }
        }
    }
}
