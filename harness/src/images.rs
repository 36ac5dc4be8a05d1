//! `pgssl images build`: server builds as Docker images, made offline from Debian's packages
//! by the recipe script `ci/images/build-image` (debootstrap + docker import). The list of
//! builds is data (`ci/images/images.toml`); an image that exists is not rebuilt.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecipe {
    /// Server build name; the image is `pgssl/<name>`.
    pub name: String,
    /// Debian suite to debootstrap.
    pub suite: String,
    /// Packages installed on top of the minimal base.
    pub packages: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesFile {
    image: Vec<ImageRecipe>,
}

pub fn load(dir: &Path) -> Result<Vec<ImageRecipe>> {
    let path = dir.join("images.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: ImagesFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(file.image)
}

/// One debootstrap is 1-3 minutes here; past this something hangs (a mirror, a prompt).
const BUILD_LIMIT_SECS: u32 = 1200;

/// Builds the named images (all when `names` is empty) that do not exist yet.
pub fn build(dir: &Path, names: &[String]) -> Result<()> {
    let recipes = load(dir)?;
    for n in names {
        if !recipes.iter().any(|r| &r.name == n) {
            bail!(
                "no image recipe {n:?} in {}; known: {}",
                dir.join("images.toml").display(),
                recipes
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    for r in recipes
        .iter()
        .filter(|r| names.is_empty() || names.contains(&r.name))
    {
        let image = format!("{}/{}", crate::runtime::docker::IMAGE_REPO, r.name);
        // Two runs building the same image at once would both debootstrap; the second waits
        // here and then finds the image.
        let root = crate::pki::cache_root();
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating the cache directory {}", root.display()))?;
        let _lock = crate::cache::lock(&root, &format!("image-{}", r.name))?;
        if crate::runtime::docker::image_exists(&image) {
            eprintln!("pgssl: image {image} exists");
            continue;
        }
        eprintln!(
            "pgssl: building {image} from Debian {} ({})",
            r.suite,
            r.packages.join(", ")
        );
        let start = Instant::now();
        let status = Command::new("timeout")
            .arg(BUILD_LIMIT_SECS.to_string())
            .arg(dir.join("build-image"))
            .arg(&r.name)
            .arg(&r.suite)
            .args(&r.packages)
            .status()
            .with_context(|| format!("running {}", dir.join("build-image").display()))?;
        if !status.success() {
            bail!("building {image} failed ({status})");
        }
        eprintln!(
            "pgssl: built {image} in {:.0} s",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
