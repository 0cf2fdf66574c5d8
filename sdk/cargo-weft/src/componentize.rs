//! Turning a built core module into a weft plugin component.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wasm_encoder::{ComponentSection, CustomSection};

use crate::toolchain::Target;

/// The custom section that carries the plugin manifest inside a component.
/// The host reads it when no manifest file sits beside the `.wasm`.
pub(crate) const MANIFEST_SECTION: &str = "weft-manifest";

/// Builds `<out_dir>/<package>.wasm` from the module at `module_path` and
/// the manifest at `manifest_path`; returns the path written. (Named after
/// the package, not the plugin id: two versions of one plugin can be built
/// side by side.)
pub(crate) fn componentize(
    module_path: &Path,
    manifest_path: &Path,
    package: &str,
    package_version: &str,
    target: Target,
    out_dir: &Path,
) -> Result<PathBuf> {
    let manifest = read_manifest(manifest_path, package_version)?;

    let bytes = std::fs::read(module_path)
        .with_context(|| format!("failed to read {}", module_path.display()))?;
    let mut component = match target {
        Target::WasiP2 => {
            if !wasmparser::Parser::is_component(&bytes) {
                bail!("{} is not a component", module_path.display());
            }
            bytes
        }
        Target::UnknownUnknown | Target::WasiP1 => {
            let mut encoder = wit_component::ComponentEncoder::default()
                .module(&bytes)
                .context("the module carries no usable component type (is weft-sdk linked in?)")?
                .validate(true);
            if target == Target::WasiP1 {
                encoder = encoder.adapter(
                    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                    WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
                )?;
            }
            encoder.encode().context("failed to encode the component")?
        }
    };

    let manifest_text = toml::to_string(&manifest)?;
    CustomSection {
        name: Cow::Borrowed(MANIFEST_SECTION),
        data: Cow::Borrowed(manifest_text.as_bytes()),
    }
    .append_to_component(&mut component);

    let mut features = wasmparser::WasmFeatures::default();
    features.set(wasmparser::WasmFeatures::COMPONENT_MODEL, true);
    wasmparser::Validator::new_with_features(features)
        .validate_all(&component)
        .context("the finished component does not validate")?;

    let out = out_dir.join(format!("{package}.wasm"));
    std::fs::write(&out, &component)
        .with_context(|| format!("failed to write {}", out.display()))?;
    Ok(out)
}

/// Reads the manifest, fills in `version` from `Cargo.toml` when it is
/// absent, refuses a version that disagrees with it, and checks the rest
/// with the host's own parser, so a manifest the host would refuse fails
/// the build, not the load.
pub(crate) fn read_manifest(path: &Path, package_version: &str) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let mut manifest: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    for key in ["id", "api", "world"] {
        if !manifest.contains_key(key) {
            bail!("{} has no `{key}`", path.display());
        }
    }
    match manifest.get("version").and_then(|v| v.as_str()) {
        None => {
            manifest.insert("version".into(), package_version.into());
        }
        Some(version) if version != package_version => bail!(
            "{} says version {version} but Cargo.toml says {package_version}; drop `version` from the manifest to use Cargo's",
            path.display()
        ),
        Some(_) => {}
    }
    weft_manifest::Manifest::parse(&toml::to_string(&manifest)?)
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_version_defaults_to_the_cargo_version() {
        let dir = tempdir();
        let path = dir.join("weft.toml");
        std::fs::write(&path, "id = \"x\"\napi = \"0.1\"\nworld = \"connector\"\n").unwrap();
        let manifest = read_manifest(&path, "1.2.3").unwrap();
        // The package version is written into the embedded manifest.
        assert_eq!(manifest["version"].as_str(), Some("1.2.3"));
    }

    #[test]
    fn a_manifest_the_host_would_refuse_fails_the_build() {
        let dir = tempdir();
        let path = dir.join("weft.toml");
        std::fs::write(
            &path,
            "id = \"feed\"\napi = \"0.1\"\nworld = \"connector\"\npoll-secs = 5\n",
        )
        .unwrap();
        let error = format!("{:#}", read_manifest(&path, "1.2.3").unwrap_err());
        assert!(error.contains("poll-secs"), "{error}");
    }

    #[test]
    fn manifest_version_that_disagrees_with_cargo_is_refused() {
        let dir = tempdir();
        let path = dir.join("weft.toml");
        std::fs::write(
            &path,
            "id = \"x\"\napi = \"0.1\"\nworld = \"connector\"\nversion = \"9.9.9\"\n",
        )
        .unwrap();
        let error = read_manifest(&path, "1.2.3").unwrap_err().to_string();
        // The error names both versions so the author sees which to fix.
        assert!(
            error.contains("9.9.9") && error.contains("1.2.3"),
            "{error}"
        );
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cargo-weft-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
