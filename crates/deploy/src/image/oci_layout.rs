//! The OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`): writing an image as
//! one, and reading one back.

use std::path::Path;
use std::str::FromStr;

use oci_spec::image::{Descriptor, Digest as OciDigest, ImageIndexBuilder, MediaType};

use super::*;

/// `index.json` naming the one manifest; `annotations` on its descriptor.
pub(super) fn index_json(
    image: &Image,
    annotations: &[(&str, &str)],
) -> Result<Vec<u8>, ImageError> {
    let digest = OciDigest::from_str(&image.manifest_digest).map_err(spec_err("digest"))?;
    let mut desc = Descriptor::new(
        MediaType::ImageManifest,
        image.manifest.len() as u64,
        digest,
    );
    desc.set_platform(Some(
        PlatformBuilder::default()
            .architecture(oci_arch(image.arch))
            .os(Os::Linux)
            .build()
            .map_err(spec_err("platform"))?,
    ));
    let map: HashMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    desc.set_annotations(Some(map));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![desc])
        .build()
        .map_err(spec_err("index"))?;
    // Through serde_json::Value, whose maps are sorted: the annotations map has a fixed order.
    let value = serde_json::to_value(&index).map_err(|e| ImageError::Spec {
        what: "index",
        message: e.to_string(),
    })?;
    Ok(serde_json::to_vec(&value).unwrap_or_default())
}

pub(super) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub(super) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Writes `image` as an OCI image layout in `dir` (created if missing), with `tag` as its ref
/// name. Rewriting a layout replaces its index and drops blobs no longer referenced, so `dir`
/// always holds exactly this image.
pub fn write_layout(image: &Image, dir: &Path, tag: &str) -> Result<(), ImageError> {
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| ImageError::Write { path, source }
    };
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(werr(dir))?.next().is_none();
        if !empty && !dir.join("oci-layout").is_file() {
            return Err(ImageError::NotALayout {
                dir: dir.to_owned(),
            });
        }
    }
    let blobs_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir).map_err(werr(&blobs_dir))?;
    let mut keep = BTreeSet::new();
    let mut all = image.blobs();
    all.push((
        image.manifest_digest.clone(),
        BlobSource::Bytes(&image.manifest),
    ));
    for (digest, source) in &all {
        let path = blobs_dir.join(hex_of(digest));
        keep.insert(hex_of(digest).to_owned());
        if path.is_file() {
            continue; // content-addressed: same name, same bytes
        }
        let tmp = blobs_dir.join(format!("{}.part", hex_of(digest)));
        match source {
            BlobSource::Bytes(b) => std::fs::write(&tmp, b).map_err(werr(&tmp))?,
            BlobSource::File(f) => {
                std::fs::copy(f, &tmp).map_err(werr(&tmp))?;
            }
        }
        std::fs::rename(&tmp, &path).map_err(werr(&path))?;
    }
    for entry in std::fs::read_dir(&blobs_dir).map_err(werr(&blobs_dir))? {
        let entry = entry.map_err(werr(&blobs_dir))?;
        if !keep.contains(entry.file_name().to_string_lossy().as_ref()) {
            std::fs::remove_file(entry.path()).map_err(werr(&entry.path()))?;
        }
    }
    let index = index_json(image, &[(REF_NAME, tag)])?;
    let index_path = dir.join("index.json");
    std::fs::write(&index_path, index).map_err(werr(&index_path))?;
    let layout = dir.join("oci-layout");
    std::fs::write(&layout, OCI_LAYOUT).map_err(werr(&layout))?;
    Ok(())
}

/// Reads back the image a layout directory holds (written by [`write_layout`]): what
/// `deploy push` uploads when run on its own.
pub fn read_layout(dir: &Path, function: Function) -> Result<Image, ImageError> {
    read_any_layout(
        dir,
        function,
        &format!("deploy image --function {function}"),
    )
}

/// The compressed size of the image a layout directory holds, whoever built it: its
/// manifest, config and layers, as a registry stores them.
pub fn layout_size(dir: &Path) -> Result<u64, ImageError> {
    Ok(read_any_layout(
        dir,
        Function::Predict,
        "deploy image --function F --out DIR (or, for the seed's, make seed-images)",
    )?
    .compressed_size())
}

fn read_any_layout(dir: &Path, function: Function, build: &str) -> Result<Image, ImageError> {
    let bad = |message: String| ImageError::Spec {
        what: "image layout",
        message: format!("{}: {message}", dir.display()),
    };
    let read = |path: PathBuf| {
        std::fs::read(&path).map_err(|e| {
            bad(format!(
                "cannot read {} ({e}); build the image first: {build}",
                path.display()
            ))
        })
    };
    let blob_path = |digest: &str| dir.join("blobs/sha256").join(hex_of(digest));
    let index: serde_json::Value = serde_json::from_slice(&read(dir.join("index.json"))?)
        .map_err(|e| bad(format!("index.json: {e}")))?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| bad("index.json names no manifest".into()))?
        .to_owned();
    let manifest = read(blob_path(&manifest_digest))?;
    if sha256_digest(&manifest) != manifest_digest {
        return Err(bad(format!(
            "the manifest blob does not match {manifest_digest}"
        )));
    }
    let m: serde_json::Value =
        serde_json::from_slice(&manifest).map_err(|e| bad(format!("manifest: {e}")))?;
    let config_digest = m["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let config = read(blob_path(&config_digest))?;
    let c: serde_json::Value =
        serde_json::from_slice(&config).map_err(|e| bad(format!("config: {e}")))?;
    let arch = c["architecture"]
        .as_str()
        .and_then(|a| a.parse::<Arch>().ok())
        .ok_or_else(|| bad("the config has no known architecture".into()))?;
    let diff_ids = c["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let layers = m["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let digest = l["digest"].as_str().unwrap_or_default().to_owned();
            Layer {
                name: format!("layer {}", i + 1),
                diff_id: diff_ids
                    .get(i)
                    .and_then(|d| d.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                size: l["size"].as_u64().unwrap_or(0),
                uncompressed_size: 0,
                blob: blob_path(&digest),
                digest,
                cached: true,
            }
        })
        .collect();
    Ok(Image {
        function,
        arch,
        layers,
        config,
        config_digest,
        manifest,
        manifest_digest,
    })
}
