//! Loading a plugin version: manifest, grants, compilation, linking.
//!
//! A plugin version is compiled once into a `Component` and pre-linked
//! into an `InstancePre`; every instance of it (one per login) starts from
//! that, which takes microseconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as JsonValue;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::capabilities::{self, Capabilities, GrantError};
use crate::config::{HttpConfig, PluginGrants, RuntimeConfig};
use crate::engine::Engine;
use crate::instance::Linked;
use crate::manifest::{MANIFEST_SECTION, Manifest, ManifestError};

/// Why a plugin did not load. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// No manifest beside the component and none embedded.
    #[error(
        "no manifest: put one beside the component ({sibling}) or build it with `cargo weft build`"
    )]
    NoManifest {
        /// Where a manifest file would be.
        sibling: PathBuf,
    },
    /// The manifest was refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The plugin asks for more than the operator granted, or its
    /// settings do not fit.
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// Not a valid component, or not one this engine can compile.
    #[error("not a valid wasm component: {0}")]
    Compile(String),
    /// The component's imports or exports do not fit its world.
    #[error("the component does not fit the `{world}` world of weft:plugin {api}: {message}")]
    Link {
        /// The world the manifest declares.
        world: &'static str,
        /// The manifest's API version.
        api: String,
        /// What did not fit.
        message: String,
    },
}

/// One loaded plugin version.
pub struct LoadedPlugin {
    /// Its manifest.
    pub manifest: Manifest,
    /// What it may do.
    pub capabilities: Capabilities,
    /// Its settings, resolved against the schema.
    pub settings: BTreeMap<String, JsonValue>,
    /// The pre-linked component.
    pub(crate) linked: Linked,
    /// SHA-256 of the component and manifest: the same file loaded twice
    /// is not an upgrade.
    pub digest: String,
    /// Where it was loaded from, if from a file.
    pub source: Option<PathBuf>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("id", &self.manifest.id)
            .field("version", &self.manifest.version.to_string())
            .field("digest", &self.digest)
            .finish()
    }
}

impl LoadedPlugin {
    /// The plugin id.
    pub fn id(&self) -> &str {
        &self.manifest.id
    }

    /// The version.
    pub fn version(&self) -> &semver::Version {
        &self.manifest.version
    }
}

/// A plugin file read from disk: the component and its manifest text.
pub struct PluginSource {
    /// The component's bytes.
    pub bytes: Vec<u8>,
    /// The manifest's text.
    pub manifest: String,
    /// Where it came from.
    pub path: Option<PathBuf>,
}

impl PluginSource {
    /// Reads `path` and its manifest: `<stem>.toml` beside it, else the
    /// embedded `weft-manifest` section.
    pub fn read(path: &Path) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let sibling = path.with_extension("toml");
        let manifest = match std::fs::read_to_string(&sibling) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                embedded_manifest(&bytes).ok_or(LoadError::NoManifest { sibling })?
            }
            Err(e) => {
                return Err(LoadError::Read {
                    path: sibling,
                    message: e.to_string(),
                });
            }
        };
        Ok(Self {
            bytes,
            manifest,
            path: Some(path.to_owned()),
        })
    }

    /// The manifest and the digest of component plus manifest.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(&self.bytes);
        hash.update(self.manifest.as_bytes());
        hex::encode(hash.finalize())
    }
}

/// The manifest embedded in a component, if any.
pub fn embedded_manifest(bytes: &[u8]) -> Option<String> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let Ok(wasmparser::Payload::CustomSection(section)) = payload
            && section.name() == MANIFEST_SECTION
        {
            return String::from_utf8(section.data().to_vec()).ok();
        }
    }
    None
}

/// The components in `dir` (`*.wasm`), in name order.
pub fn components_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    paths.sort();
    Ok(paths)
}

/// Checks a manifest against the operator's grants, offline: what
/// `check-plugin` and loading both do first. Returns the capabilities and
/// resolved settings.
pub fn check_grants(
    manifest: &Manifest,
    grants: &PluginGrants,
    runtime: &RuntimeConfig,
    http: &HttpConfig,
) -> Result<(Capabilities, BTreeMap<String, JsonValue>), LoadError> {
    let settings = capabilities::resolve_settings(manifest, &grants.settings)?;
    let capabilities = capabilities::resolve(manifest, &settings, grants, runtime, http)?;
    Ok((capabilities, settings))
}

/// Checks a plugin file without a running host: manifest, grants,
/// compilation and linking (`weft check-plugin`, and `cargo weft build`'s
/// manifest check).
pub async fn check_offline(
    source: PluginSource,
    grants: &PluginGrants,
    runtime: &RuntimeConfig,
    http: &HttpConfig,
) -> Result<LoadedPlugin, LoadError> {
    let mut config = runtime.clone();
    // A throwaway engine: no pool to reserve, nothing to cache.
    config.allocator = crate::config::Allocator::OnDemand;
    let engine = Engine::new(&config, None).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    load(&engine, source, grants, runtime, http).await
}

/// Checks, compiles and links a plugin with the operator's `grants`.
pub(crate) async fn load(
    engine: &Engine,
    source: PluginSource,
    grants: &PluginGrants,
    runtime: &RuntimeConfig,
    http: &HttpConfig,
) -> Result<LoadedPlugin, LoadError> {
    let manifest = Manifest::parse(&source.manifest)?;
    let (capabilities, settings) = check_grants(&manifest, grants, runtime, http)?;
    let digest = source.digest();

    if !wasmparser::Parser::is_component(&source.bytes) {
        return Err(LoadError::Compile(
            "this is a core module or not wasm at all; build plugins with `cargo weft build`"
                .into(),
        ));
    }
    let component = engine
        .compile(source.bytes)
        .await
        .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    let linked = link(engine, &manifest, &component)?;
    Ok(LoadedPlugin {
        manifest,
        capabilities,
        settings,
        linked,
        digest,
        source: source.path,
    })
}

fn link(engine: &Engine, manifest: &Manifest, component: &Component) -> Result<Linked, LoadError> {
    let link_error = |message: String| LoadError::Link {
        world: manifest.world.wit_name(),
        api: manifest.api.clone(),
        message,
    };
    let instance_pre = engine
        .linker()
        .instantiate_pre(component)
        .map_err(|e| link_error(format!("{e:#}")))?;
    let linked = Linked::new(instance_pre);
    check_exports(engine, manifest, component, &linked).map_err(link_error)?;
    Ok(linked)
}

/// Names the world's exports the component lacks, so a plugin built for
/// another role gets a clear error instead of a missing-export message
/// about one function.
fn check_exports(
    engine: &Engine,
    manifest: &Manifest,
    component: &Component,
    linked: &Linked,
) -> Result<(), String> {
    let missing: Vec<&str> = manifest
        .world
        .required_exports()
        .iter()
        .copied()
        .filter(|interface| !linked.exports(interface))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let exports: Vec<String> = component
        .component_type()
        .exports(engine.engine())
        .map(|(name, _)| name.to_owned())
        .collect();
    Err(format!(
        "it does not export {} (it exports: {}); is the manifest's `world` right?",
        missing.join(", "),
        if exports.is_empty() {
            "nothing".into()
        } else {
            exports.join(", ")
        }
    ))
}
