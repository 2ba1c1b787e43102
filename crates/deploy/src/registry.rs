//! Upload: an image's blobs and manifest to an OCI registry (ECR, or a local one), through
//! `oci-client`. Blobs the registry already has are skipped; the manifest is pushed as the
//! exact bytes we built, so its digest is the one we computed (and the one Lambda is given).

#![warn(missing_docs)]

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::image::{BlobSource, Image};

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Attempts per registry call; transient failures (5xx, dropped connections) are retried.
const ATTEMPTS: u32 = 4;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum RegistryError {
    #[error("{action} on {registry}: {source}")]
    Call {
        action: String,
        registry: String,
        source: OciDistributionError,
    },
    #[error("cannot read blob {digest} from {path}: {source}")]
    ReadBlob {
        digest: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{registry} stored the manifest as {theirs}, not {ours}: Lambda would be given a digest the registry does not serve")]
    DigestMismatch {
        registry: String,
        ours: String,
        theirs: String,
    },
}

/// Where to push.
#[derive(Debug, Clone)]
pub struct Destination {
    /// `host[:port]`
    pub registry: String,
    /// The repository's path in it.
    pub repository: String,
    /// Plain HTTP (a registry on 127.0.0.1); HTTPS otherwise.
    pub plain_http: bool,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PushOutcome {
    /// `registry/repository`.
    pub repository: String,
    /// The manifest digest the registry serves.
    pub digest: String,
    /// Blob bytes uploaded.
    pub bytes_pushed: u64,
    /// Blob bytes the registry already had.
    pub bytes_skipped: u64,
    /// Blobs uploaded.
    pub blobs_pushed: usize,
    /// Blobs the registry already had.
    pub blobs_skipped: usize,
    /// The tags put on the manifest.
    pub tags: Vec<String>,
}

/// What `deploy push` reports for one function: the push, named by its function.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    /// predict or train.
    pub function: String,
    /// The push.
    #[serde(flatten)]
    pub outcome: PushOutcome,
}

impl std::fmt::Display for PushReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.outcome;
        write!(
            f,
            "{}: pushed {}@{} — {} bytes sent ({} blobs), \
             {} bytes skipped ({} blobs already there); tags {}",
            self.function,
            o.repository,
            o.digest,
            o.bytes_pushed,
            o.blobs_pushed,
            o.bytes_skipped,
            o.blobs_skipped,
            o.tags.join(", ")
        )
    }
}

fn retryable(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// Runs `call` up to ATTEMPTS times while it fails transiently, waiting 0.5 s, 1 s, 2 s.
async fn with_retries<T, F, Fut>(
    action: &str,
    dest: &Destination,
    mut call: F,
) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
{
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                tracing::warn!(%action, attempt, error = %e, "registry call failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(source) => {
                return Err(RegistryError::Call {
                    action: action.to_owned(),
                    registry: dest.registry.clone(),
                    source,
                })
            }
        }
    }
    unreachable!("the last attempt returns")
}

fn client(dest: &Destination) -> Client {
    Client::new(ClientConfig {
        // One POST and one PUT per blob. Chunked uploads (PATCH) are unsafe against ECR: it
        // answers a PATCH with 201 where the spec says 202, which oci-client takes for a spec
        // violation and answers by sending the whole blob again, and its upload Range stops
        // advancing after the first chunk (aws/containers-roadmap#2831).
        use_monolithic_push: true,
        protocol: if dest.plain_http {
            // The string must equal the reference's registry exactly.
            ClientProtocol::HttpsExcept(vec![dest.registry.clone()])
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    })
}

/// Pushes `image` to `dest` under every tag in `tags`; `progress` counts bytes.
pub async fn push(
    image: &Image,
    dest: &Destination,
    auth: &RegistryAuth,
    tags: &[String],
    progress: &indicatif::ProgressBar,
) -> Result<PushOutcome, RegistryError> {
    let client = client(dest);
    let by_digest = Reference::with_digest(
        dest.registry.clone(),
        dest.repository.clone(),
        image.manifest_digest.clone(),
    );
    with_retries("logging in", dest, || {
        client.auth(&by_digest, auth, RegistryOperation::Push)
    })
    .await?;
    let blobs = image.blobs();
    let total: u64 = image.compressed_size();
    progress.set_length(total);
    let mut outcome = PushOutcome {
        repository: dest.repository.clone(),
        digest: image.manifest_digest.clone(),
        bytes_pushed: 0,
        bytes_skipped: 0,
        blobs_pushed: 0,
        blobs_skipped: 0,
        tags: tags.to_vec(),
    };
    for (digest, source) in blobs {
        let exists = with_retries(&format!("checking blob {digest}"), dest, || {
            client.blob_exists(&by_digest, &digest)
        })
        .await?;
        let bytes: Vec<u8> = match source {
            BlobSource::Bytes(b) => b.to_vec(),
            BlobSource::File(path) => {
                std::fs::read(path).map_err(|source| RegistryError::ReadBlob {
                    digest: digest.clone(),
                    path: path.to_owned(),
                    source,
                })?
            }
        };
        let size = bytes.len() as u64;
        if exists {
            outcome.bytes_skipped += size;
            outcome.blobs_skipped += 1;
        } else {
            let bytes = bytes::Bytes::from(bytes);
            with_retries(&format!("pushing blob {digest}"), dest, || {
                client.push_blob(&by_digest, bytes.clone(), &digest)
            })
            .await?;
            outcome.bytes_pushed += size;
            outcome.blobs_pushed += 1;
        }
        progress.inc(size);
    }
    let manifest = bytes::Bytes::from(image.manifest.clone());
    for tag in tags {
        let by_tag =
            Reference::with_tag(dest.registry.clone(), dest.repository.clone(), tag.clone());
        with_retries(&format!("pushing the manifest as {tag}"), dest, || {
            client.push_manifest_raw(
                &by_tag,
                manifest.clone(),
                http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
            )
        })
        .await?;
    }
    progress.inc(image.manifest.len() as u64);
    // What the registry now serves under the first tag must be our digest.
    if let Some(tag) = tags.first() {
        let by_tag =
            Reference::with_tag(dest.registry.clone(), dest.repository.clone(), tag.clone());
        let theirs = with_retries("reading back the manifest digest", dest, || {
            client.fetch_manifest_digest(&by_tag, auth)
        })
        .await?;
        if theirs != image.manifest_digest {
            return Err(RegistryError::DigestMismatch {
                registry: dest.registry.clone(),
                ours: image.manifest_digest.clone(),
                theirs,
            });
        }
    }
    Ok(outcome)
}
