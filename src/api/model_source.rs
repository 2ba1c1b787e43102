//! Where the predict function's model comes from: `MODEL_S3_URI` when set, else `MODEL_PATH`
//! (default: the shipped weights), at most [`MAX_WEIGHTS_BYTES`] either way. Any model file
//! ([`crate::net::file`]: the seed's weights, or a model `lambda-cnn import` wrote) is
//! checked against its description and the limits; weights that are not all finite are
//! refused.

use crate::model::weights::{sha256_hex, MAX_WEIGHTS_BYTES};
use crate::model::ModelError;
use crate::net::Network;
use crate::store::{BadS3Uri, S3Uri, Store, StoreError};
use crate::SHIPPED_WEIGHTS;

/// Why the model could not be loaded; the function logs it and stops its init.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their sources' messages
pub enum LoadError {
    #[error(transparent)]
    Uri(#[from] BadS3Uri),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A loaded model and where it came from.
pub struct Loaded {
    /// The model.
    pub model: Network,
    /// The SHA-256 of the weights file: the model's identity in answers and on the page.
    pub id: String,
    /// The S3 URI or the path it was read from.
    pub source: String,
}

/// Loads the weights the environment names (see the module's documentation).
pub async fn from_env() -> Result<Loaded, LoadError> {
    if let Ok(uri) = std::env::var(crate::store::MODEL_S3_URI) {
        let uri: S3Uri = uri.parse()?;
        let store = Store::from_env().await;
        let bytes = store.get_capped(&uri, MAX_WEIGHTS_BYTES).await?;
        let (spec, tensors) = crate::net::file::from_bytes(&bytes)?;
        let model = Network::new(spec, &tensors)?;
        return Ok(Loaded {
            model,
            id: sha256_hex(&bytes),
            source: uri.to_string(),
        });
    }
    let path = std::env::var("MODEL_PATH").unwrap_or_else(|_| SHIPPED_WEIGHTS.into());
    let (model, id) = crate::net::file::load(std::path::Path::new(&path))?;
    Ok(Loaded {
        model,
        id,
        source: path,
    })
}
