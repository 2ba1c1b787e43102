//! The tar `docker load` reads: the OCI layout plus Docker's `manifest.json`.

use std::path::Path;

use super::oci_layout::{index_json, OCI_LAYOUT, REF_NAME};
use super::*;

/// Writes a tar that `docker load` reads: the OCI layout plus Docker's `manifest.json`
/// (older engines read only that), naming the image `repo_tag` (`name:tag`). Deterministic
/// like the layers.
pub fn write_docker_archive(
    image: &Image,
    file: &Path,
    repo_tag: &str,
    mtime: u64,
) -> Result<(), ImageError> {
    let werr = |source| ImageError::Write {
        path: file.to_owned(),
        source,
    };
    let tag = repo_tag.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = index_json(
        image,
        &[(REF_NAME, tag), ("io.containerd.image.name", repo_tag)],
    )?;
    let layers: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("blobs/sha256/{}", hex_of(&l.digest)))
        .collect();
    let docker_manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", hex_of(&image.config_digest)),
        "RepoTags": [repo_tag],
        "Layers": layers,
    }]);
    let docker_manifest = serde_json::to_vec(&docker_manifest).unwrap_or_default();

    let tmp = file.with_extension("tar.part");
    let out = std::fs::File::create(&tmp).map_err(|source| ImageError::Write {
        path: tmp.clone(),
        source,
    })?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
    let header = |size: u64, dir: bool| {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(size);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h
    };
    for d in ["blobs/", "blobs/sha256/"] {
        tar.append_data(&mut header(0, true), d, std::io::empty())
            .map_err(werr)?;
    }
    let mut blobs = image.blobs();
    blobs.push((
        image.manifest_digest.clone(),
        BlobSource::Bytes(&image.manifest),
    ));
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    blobs.dedup_by(|a, b| a.0 == b.0);
    for (digest, source) in blobs {
        let path = format!("blobs/sha256/{}", hex_of(&digest));
        match source {
            BlobSource::Bytes(b) => tar
                .append_data(&mut header(b.len() as u64, false), path, b)
                .map_err(werr)?,
            BlobSource::File(f) => {
                let fh = std::fs::File::open(f).map_err(|source| ImageError::Write {
                    path: f.to_owned(),
                    source,
                })?;
                let size = fh.metadata().map_err(werr)?.len();
                tar.append_data(&mut header(size, false), path, fh)
                    .map_err(werr)?;
            }
        }
    }
    for (name, bytes) in [
        ("index.json", index.as_slice()),
        ("manifest.json", docker_manifest.as_slice()),
        ("oci-layout", OCI_LAYOUT),
    ] {
        tar.append_data(&mut header(bytes.len() as u64, false), name, bytes)
            .map_err(werr)?;
    }
    let mut w = tar.into_inner().map_err(werr)?;
    std::io::Write::flush(&mut w).map_err(werr)?;
    drop(w);
    std::fs::rename(&tmp, file).map_err(werr)?;
    Ok(())
}
