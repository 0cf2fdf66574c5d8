//! Login flows as the host drives them: the steps a plugin returns and the
//! input the user submits. Plain types, converted once from the WIT
//! `login-flow` interface whichever world exports it (a connector or a
//! login provider).

/// The kind of a user-input field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A user name.
    Username,
    /// A password.
    Password,
    /// A phone number.
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
    /// A choice among options.
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
    /// The choices, for `select`.
    pub options: Vec<String>,
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
    /// The name of the cookie, key or header.
    pub name: String,
    /// For request sources: which request URLs.
    pub request_url_regex: Option<String>,
    /// For cookies: the cookie's domain.
    pub cookie_domain: Option<String>,
}

/// One value the client extracts from a web page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieField {
    /// The key under which it is submitted.
    pub id: String,
    /// Whether the step needs it.
    pub required: bool,
    /// Where to look.
    pub sources: Vec<CookieSource>,
    /// A regular expression it must match.
    pub pattern: Option<String>,
}

/// A step where the client opens a page and extracts values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookiesStep {
    /// The page.
    pub url: String,
    /// The user agent.
    pub user_agent: Option<String>,
    /// The values to extract.
    pub fields: Vec<CookieField>,
    /// JavaScript that resolves with the values.
    pub extract_js: Option<String>,
    /// Extract only once the URL matches this.
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
    /// Nothing.
    Nothing,
}

/// A step where the user acts elsewhere while the host waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayStep {
    /// What to show.
    pub kind: DisplayKind,
    /// The data to show.
    pub data: String,
    /// An image of it.
    pub image_url: Option<String>,
    /// How long to wait before asking again, in milliseconds.
    pub poll_after_ms: u32,
}

/// The end of a login process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteStep {
    /// The login id, stable for the remote account.
    pub login_id: String,
    /// The remote account's display name.
    pub remote_name: String,
    /// The connector's metadata (JSON text).
    pub metadata: String,
}

/// What a step asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepParams {
    /// Fill in fields.
    UserInput(Vec<InputField>),
    /// Open a page and extract values.
    Cookies(CookiesStep),
    /// Look and wait.
    DisplayAndWait(DisplayStep),
    /// Done.
    Complete(CompleteStep),
}

/// One step of a login process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStep {
    /// A stable id for this step of the flow.
    pub step_id: String,
    /// What the user should do.
    pub instructions: String,
    /// The parameters.
    pub params: StepParams,
}

/// What the user submits for a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepInput {
    /// Values of a user-input step.
    UserInput(Vec<(String, String)>),
    /// Values of a cookies step.
    Cookies(Vec<(String, String)>),
    /// A display-and-wait poll.
    Wait,
}
