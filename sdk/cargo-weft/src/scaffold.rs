//! `cargo weft new`: a standalone plugin crate that builds with
//! `cargo weft build` and loads in weft as it is.
//!
//! The files come from the templates under `templates/`, with `{{key}}`
//! placeholders filled in.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The role of a new plugin: the world its manifest names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Bridges a network: one instance per login, polling on a timer.
    #[default]
    Connector,
    /// Runs login flows and token functions for connectors.
    LoginProvider,
    /// Serves HTTP routes and issues credentials.
    CredentialProvider,
}

impl Role {
    /// The manifest's `world`.
    pub fn world(self) -> &'static str {
        match self {
            Self::Connector => "connector",
            Self::LoginProvider => "login-provider",
            Self::CredentialProvider => "credential-provider",
        }
    }

    /// The role in words: `login provider`.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Connector => "connector",
            Self::LoginProvider => "login provider",
            Self::CredentialProvider => "credential provider",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.world())
    }
}

/// Where the new crate gets `weft-sdk` from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SdkSource {
    /// The SDK beside the `cargo-weft` that runs, if its source is still
    /// there; else the registry version matching this `cargo-weft`.
    #[default]
    Auto,
    /// A path dependency on this directory (the SDK's, or a weft
    /// checkout's, whose `sdk/` is used).
    Path(PathBuf),
    /// A registry version requirement.
    Version(String),
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewOptions {
    /// The crate's directory: created, or empty.
    pub dir: PathBuf,
    /// The plugin id (default: the directory's name).
    pub id: Option<String>,
    /// The plugin's role.
    pub role: Role,
    /// Where `weft-sdk` comes from.
    pub sdk: SdkSource,
}

/// A crate that was created.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// Its directory.
    pub dir: PathBuf,
    /// The plugin id.
    pub id: String,
    /// The package name (`cargo weft build` writes
    /// `target/plugins/<package>.wasm`).
    pub package: String,
    /// The files written, relative to `dir`.
    pub files: Vec<PathBuf>,
    /// The `weft-sdk` dependency's value in `Cargo.toml`.
    pub sdk: String,
}

impl NewPlugin {
    /// Where `cargo weft build` puts the component, relative to `dir`.
    pub fn component(&self) -> PathBuf {
        Path::new("target/plugins").join(format!("{}.wasm", self.package))
    }
}

/// The templates of one role.
struct RoleTemplates {
    manifest: &'static str,
    lib: &'static str,
    example_config: &'static str,
    run: &'static str,
    /// A story test on the weft-testing harness, for the roles it serves.
    story: Option<&'static str>,
}

const CARGO_TOML: &str = include_str!("../templates/Cargo.toml.in");
const README: &str = include_str!("../templates/README.md.in");
const GITIGNORE: &str = include_str!("../templates/gitignore.in");

fn templates(role: Role) -> RoleTemplates {
    match role {
        Role::Connector => RoleTemplates {
            manifest: include_str!("../templates/connector/weft.toml.in"),
            lib: include_str!("../templates/connector/lib.rs.in"),
            example_config: include_str!("../templates/connector/weft.example.toml.in"),
            run: include_str!("../templates/connector/run.md.in"),
            story: Some(include_str!("../templates/connector/story.rs.in")),
        },
        Role::LoginProvider => RoleTemplates {
            manifest: include_str!("../templates/login-provider/weft.toml.in"),
            lib: include_str!("../templates/login-provider/lib.rs.in"),
            example_config: include_str!("../templates/login-provider/weft.example.toml.in"),
            run: include_str!("../templates/login-provider/run.md.in"),
            story: None,
        },
        Role::CredentialProvider => RoleTemplates {
            manifest: include_str!("../templates/credential-provider/weft.toml.in"),
            lib: include_str!("../templates/credential-provider/lib.rs.in"),
            example_config: include_str!("../templates/credential-provider/weft.example.toml.in"),
            run: include_str!("../templates/credential-provider/run.md.in"),
            story: None,
        },
    }
}

/// Creates the plugin crate `options` describes. Refuses a directory that
/// exists and is not empty, and an id the host would refuse; writes
/// nothing then.
pub fn new_plugin(options: &NewOptions) -> Result<NewPlugin> {
    let dir = &options.dir;
    if dir.exists() {
        if !dir.is_dir() {
            bail!("{} exists and is not a directory", dir.display());
        }
        let not_empty = std::fs::read_dir(dir)
            .with_context(|| format!("failed to read {}", dir.display()))?
            .next()
            .is_some();
        if not_empty {
            bail!(
                "{} is not empty: `cargo weft new` only writes into a new or empty directory",
                dir.display()
            );
        }
    }
    let id = match &options.id {
        Some(id) if weft_manifest::is_plugin_id(id) => id.clone(),
        Some(id) => bail!("`{id}` is not a valid plugin id: {ID_RULES}"),
        None => {
            let name = dir_name(dir)?;
            if !weft_manifest::is_plugin_id(&name) {
                bail!(
                    "`{name}`, the directory's name, is not a valid plugin id: {ID_RULES}; pass one with --name <id>"
                );
            }
            name
        }
    };
    let package = package_name(&id);
    let sdk = sdk_dependency(&options.sdk)?;
    let testing = testing_dependency(&options.sdk)?;
    let templates = templates(options.role);
    let vars = Vars {
        id: &id,
        package: &package,
        type_name: &type_name(&package, templates.lib),
        name: &human_name(&id),
        role: options.role,
        sdk: &sdk,
        testing: &testing,
    };

    let mut files: Vec<(&str, &str)> = vec![
        ("Cargo.toml", CARGO_TOML),
        ("weft.toml", templates.manifest),
        ("src/lib.rs", templates.lib),
        ("weft.example.toml", templates.example_config),
        ("README.md", README),
        (".gitignore", GITIGNORE),
    ];
    if let Some(story) = templates.story {
        files.push(("tests/story.rs", story));
    }
    let run = vars.render(templates.run);
    for sub in ["src", "tests"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("failed to create {}", dir.display()))?;
    }
    let mut written = Vec::new();
    for (path, template) in files {
        let text = vars.render(template).replace("{{run}}", run.trim_end());
        let target = dir.join(path);
        std::fs::write(&target, text)
            .with_context(|| format!("failed to write {}", target.display()))?;
        written.push(PathBuf::from(path));
    }
    Ok(NewPlugin {
        dir: dir.clone(),
        id,
        package,
        files: written,
        sdk,
    })
}

/// The values of the templates' placeholders.
struct Vars<'a> {
    id: &'a str,
    package: &'a str,
    type_name: &'a str,
    name: &'a str,
    role: Role,
    sdk: &'a str,
    testing: &'a str,
}

impl Vars<'_> {
    fn render(&self, template: &str) -> String {
        let name = self.name;
        let description = match self.role {
            Role::Connector => format!("Bridges {name} to Matrix."),
            Role::LoginProvider => {
                format!("Signs in {name} accounts for the connectors that use it.")
            }
            Role::CredentialProvider => format!("Serves the HTTP routes of {name}."),
        };
        template
            .replace("{{id}}", self.id)
            .replace("{{package}}", self.package)
            .replace("{{type}}", self.type_name)
            .replace("{{name}}", self.name)
            .replace("{{role}}", self.role.noun())
            .replace("{{description}}", &description)
            .replace("{{sdk}}", self.sdk)
            .replace("{{testing}}", self.testing)
    }
}

/// The last component of `dir`, resolved first (for `.`).
fn dir_name(dir: &Path) -> Result<String> {
    let resolved = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .with_context(|| format!("failed to resolve {}", dir.display()))?;
    match resolved.components().next_back() {
        Some(std::path::Component::Normal(name)) => name
            .to_str()
            .map(str::to_owned)
            .with_context(|| format!("{} is not UTF-8", dir.display())),
        _ => bail!("{} has no name to use as the plugin id", dir.display()),
    }
}

/// What the host accepts as a plugin id (`weft_manifest::is_plugin_id`).
const ID_RULES: &str =
    "use 1-32 lowercase letters, digits, `-` or `_`, starting with a letter or digit";

/// Rust's keywords, and names Cargo or the crate's dependencies take.
const TAKEN_NAMES: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "serde",
    "serde_json",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "weft_sdk",
    "where",
    "while",
    "yield",
];

/// The package name for plugin `id`: the id itself, unless Cargo would
/// refuse it (a leading digit, a keyword, a dependency's name).
fn package_name(id: &str) -> String {
    let lib = id.replace('-', "_");
    if id.starts_with(|c: char| c.is_ascii_digit()) || TAKEN_NAMES.contains(&lib.as_str()) {
        format!("weft-{id}")
    } else {
        id.to_owned()
    }
}

/// The plugin type's name: the package name in CamelCase, with `Plugin`
/// after it if the template uses that name already.
fn type_name(package: &str, template: &str) -> String {
    let camel: String = package
        .split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            first.into_iter().chain(chars).collect::<String>()
        })
        .collect();
    let taken = |name: &str| {
        template
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| word == name)
            || PRELUDE.contains(&name)
    };
    if taken(&camel) {
        format!("{camel}Plugin")
    } else {
        camel
    }
}

/// Names in Rust's prelude a type must not take.
const PRELUDE: &[&str] = &[
    "AsMut",
    "AsRef",
    "Box",
    "Clone",
    "Copy",
    "Default",
    "Drop",
    "Eq",
    "Err",
    "Extend",
    "Fn",
    "FnMut",
    "FnOnce",
    "From",
    "Into",
    "Iterator",
    "None",
    "Ok",
    "Option",
    "Ord",
    "PartialEq",
    "PartialOrd",
    "Result",
    "Send",
    "Sized",
    "Some",
    "String",
    "Sync",
    "ToOwned",
    "ToString",
    "Unpin",
    "Vec",
];

/// `my-feed` becomes `My feed`.
fn human_name(id: &str) -> String {
    let spaced = id
        .split(['-', '_'])
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// The `weft-sdk = ...` dependency's value, as TOML.
fn sdk_dependency(source: &SdkSource) -> Result<String> {
    dependency(source, None)
}

/// The `weft-testing = ...` dependency's value, as TOML: the harness
/// beside the SDK (`sdk/testing`), or the same version.
fn testing_dependency(source: &SdkSource) -> Result<String> {
    dependency(source, Some("testing"))
}

/// The value of a dependency on the SDK, or on crate `within` it.
fn dependency(source: &SdkSource, within: Option<&str>) -> Result<String> {
    let path = match source {
        SdkSource::Version(version) => return Ok(toml::Value::from(version.as_str()).to_string()),
        SdkSource::Path(path) => find_sdk(path).with_context(|| {
            format!(
                "{} is neither weft-sdk's directory nor a weft checkout (with sdk/)",
                path.display()
            )
        })?,
        SdkSource::Auto => match built_from_sdk() {
            Some(path) => path,
            None => {
                return Ok(toml::Value::from(env!("CARGO_PKG_VERSION")).to_string());
            }
        },
    };
    let path = match within {
        Some(dir) => path.join(dir),
        None => path,
    };
    let path = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(format!("{{ path = {} }}", toml::Value::from(path)))
}

/// The absolute path of the `weft-sdk` package at `path` or at
/// `path/sdk`.
fn find_sdk(path: &Path) -> Option<PathBuf> {
    [path.to_owned(), path.join("sdk")]
        .into_iter()
        .find(|dir| is_weft_sdk(dir))
        .and_then(|dir| std::fs::canonicalize(dir).ok())
}

/// The SDK this `cargo-weft` was built beside, if its source is still
/// there (an install from a weft checkout; not one from a registry).
fn built_from_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    find_sdk(sdk)
}

/// Whether `dir` holds the `weft-sdk` package.
fn is_weft_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| {
            table
                .get("package")?
                .get("name")?
                .as_str()
                .map(|name| name == "weft-sdk")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cargo-weft-new-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn options(dir: &Path, role: Role) -> NewOptions {
        NewOptions {
            dir: dir.to_owned(),
            id: None,
            role,
            sdk: SdkSource::Version("0.1.0".into()),
        }
    }

    fn has_placeholder(text: &str) -> bool {
        text.match_indices("{{").any(|(at, _)| {
            text[at + 2..].split("}}").next().is_some_and(|key| {
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
            })
        })
    }

    #[test]
    fn each_role_gets_a_manifest_the_host_accepts_and_a_config_that_grants_it() {
        for role in [
            Role::Connector,
            Role::LoginProvider,
            Role::CredentialProvider,
        ] {
            let dir = tempdir(&format!("roles-{role}")).join("my-plugin");
            let created = new_plugin(&options(&dir, role)).unwrap();
            assert_eq!(created.id, "my-plugin");
            for file in &created.files {
                let text = std::fs::read_to_string(dir.join(file)).unwrap();
                assert!(
                    !has_placeholder(&text),
                    "{role}: {}:\n{text}",
                    file.display()
                );
            }
            let manifest =
                crate::componentize::read_manifest(&dir.join("weft.toml"), "0.1.0").unwrap();
            assert_eq!(manifest["world"].as_str(), Some(role.world()));
            assert_eq!(
                manifest["capabilities"]["http"][0].as_str(),
                Some("${base-url}")
            );
            let flows = manifest.get("login-flows").and_then(|f| f.as_array());
            match role {
                Role::Connector | Role::LoginProvider => assert_eq!(flows.unwrap().len(), 1),
                Role::CredentialProvider => assert!(flows.is_none()),
            }
            let config: toml::Table = std::fs::read_to_string(dir.join("weft.example.toml"))
                .unwrap()
                .parse()
                .unwrap();
            let grant = &config["plugin"]["my-plugin"];
            assert!(grant["settings"]["base-url"].is_str());
            assert_eq!(config["plugins"]["dir"].as_str(), Some("target/plugins"));
            let cargo: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(cargo["package"]["name"].as_str(), Some("my-plugin"));
            assert_eq!(cargo["dependencies"]["weft-sdk"].as_str(), Some("0.1.0"));
            assert!(cargo["workspace"].is_table());
            assert!(cargo.get("profile").is_none());
            std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
        }
    }

    #[test]
    fn the_skeletons_are_as_rustfmt_formats_them_whatever_the_id_length() {
        let rustfmt = std::env::var("RUSTFMT").unwrap_or_else(|_| "rustfmt".into());
        if std::process::Command::new(&rustfmt)
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("no rustfmt: skipped");
            return;
        }
        let long_id = "a-plugin-id-of-thirty-two-chars_";
        assert_eq!(long_id.len(), 32);
        for role in [
            Role::Connector,
            Role::LoginProvider,
            Role::CredentialProvider,
        ] {
            for id in ["a", long_id] {
                let dir = tempdir(&format!("fmt-{role}-{}", id.len()));
                new_plugin(&NewOptions {
                    id: Some(id.into()),
                    ..options(&dir, role)
                })
                .unwrap();
                let output = std::process::Command::new(&rustfmt)
                    .args(["--check", "--edition", "2024"])
                    .arg(dir.join("src/lib.rs"))
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "{role} `{id}`:\n{}",
                    String::from_utf8_lossy(&output.stdout)
                );
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    }

    #[test]
    fn a_directory_that_is_not_empty_is_refused_and_left_alone() {
        let dir = tempdir("not-empty");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let error = new_plugin(&options(&dir, Role::Connector)).unwrap_err();
        assert!(error.to_string().contains("is not empty"), "{error}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_directory_is_filled_and_named_by_the_id_given() {
        let dir = tempdir("empty");
        std::fs::create_dir_all(&dir).unwrap();
        let created = new_plugin(&NewOptions {
            id: Some("feed".into()),
            ..options(&dir, Role::Connector)
        })
        .unwrap();
        assert_eq!(created.id, "feed");
        // `cargo weft new .` names the plugin after the directory.
        assert_eq!(
            dir_name(&dir.join(".")).unwrap(),
            dir.file_name().unwrap().to_str().unwrap()
        );
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("register_connector!(Feed)"), "{lib}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_id_the_host_would_refuse_is_refused_before_anything_is_written() {
        let dir = tempdir("bad-id").join("My Feed");
        let error = format!(
            "{:#}",
            new_plugin(&options(&dir, Role::Connector)).unwrap_err()
        );
        assert!(
            error.contains("`My Feed`") && error.contains("--name"),
            "{error}"
        );
        let error = new_plugin(&NewOptions {
            id: Some("a".repeat(33)),
            ..options(&dir, Role::Connector)
        })
        .unwrap_err();
        assert!(error.to_string().contains("lowercase letters"), "{error}");
        assert!(!dir.exists());
    }

    #[test]
    fn names_cargo_or_rust_would_refuse_get_a_package_and_type_name_that_work() {
        assert_eq!(package_name("my-feed"), "my-feed");
        assert_eq!(package_name("9gag"), "weft-9gag");
        assert_eq!(package_name("self"), "weft-self");
        assert_eq!(package_name("weft-sdk"), "weft-weft-sdk");
        let connector = templates(Role::Connector).lib;
        assert_eq!(type_name("my-feed", connector), "MyFeed");
        assert_eq!(type_name("weft-9gag", connector), "Weft9gag");
        // The template imports `Login` and `Session` is its own type.
        assert_eq!(type_name("login", connector), "LoginPlugin");
        assert_eq!(type_name("session", connector), "SessionPlugin");
        assert_eq!(type_name("option", connector), "OptionPlugin");
        assert_eq!(human_name("my_feed-2"), "My feed 2");
        assert_eq!(human_name("feed__x_"), "Feed x");
    }

    #[test]
    fn the_sdk_is_a_path_to_a_weft_checkout_or_its_sdk_or_a_version() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let checkout = sdk.parent().unwrap();
        let expected = format!(
            "{{ path = {} }}",
            toml::Value::from(std::fs::canonicalize(sdk).unwrap().to_str().unwrap())
        );
        assert_eq!(
            sdk_dependency(&SdkSource::Path(sdk.into())).unwrap(),
            expected
        );
        assert_eq!(
            sdk_dependency(&SdkSource::Path(checkout.into())).unwrap(),
            expected
        );
        // Built from a checkout, it finds its own SDK.
        assert_eq!(sdk_dependency(&SdkSource::Auto).unwrap(), expected);
        assert_eq!(
            sdk_dependency(&SdkSource::Version("0.2".into())).unwrap(),
            "\"0.2\""
        );
        let error = sdk_dependency(&SdkSource::Path(checkout.join("host"))).unwrap_err();
        assert!(error.to_string().contains("weft-sdk"), "{error}");
    }
}
