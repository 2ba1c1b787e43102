//! The S3 model store: weights and cards by `s3://bucket/key` URI.

use std::fmt;
use std::str::FromStr;

/// The environment variable that points predict at weights in S3 (`s3://bucket/key`); unset,
/// it serves the image's own. Set by `deploy release --model`, read by the function.
pub const MODEL_S3_URI: &str = "MODEL_S3_URI";

/// `s3://bucket/key`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Uri {
    /// The bucket.
    pub bucket: String,
    /// The object's key.
    pub key: String,
}

/// A string that is not an S3 object URI.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{uri:?} is not an S3 object URI ({why}); expected s3://bucket/key")]
pub struct BadS3Uri {
    /// What was given.
    pub uri: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for S3Uri {
    type Err = BadS3Uri;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| BadS3Uri {
            uri: s.to_owned(),
            why,
        };
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it does not start with s3://"))?;
        let (bucket, key) = rest.split_once('/').ok_or_else(|| bad("it has no key"))?;
        if bucket.is_empty() {
            return Err(bad("the bucket is empty"));
        }
        if key.is_empty() || key.ends_with('/') {
            return Err(bad("the key is empty or a folder"));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl S3Uri {
    /// `s3://bucket/prefix/name`, with the prefix's slashes tidied.
    pub fn join(bucket: &str, prefix: &str, name: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let key = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        Self {
            bucket: bucket.to_owned(),
            key,
        }
    }
}

#[cfg(feature = "s3")]
pub use client::{Store, StoreError};

/// The environment variable `deploy release` sets on both functions to the deploying account's
/// id: the store then sends it as `ExpectedBucketOwner` on every call.
pub const BUCKET_OWNER_VAR: &str = "MODEL_BUCKET_OWNER";

#[cfg(feature = "s3")]
mod client {
    use super::{S3Uri, BUCKET_OWNER_VAR};
    use aws_sdk_s3::primitives::ByteStream;

    /// Why an object could not be read or written.
    #[derive(Debug, thiserror::Error)]
    #[allow(missing_docs)] // documented by their messages
    pub enum StoreError {
        #[error("cannot read {uri}: {message}")]
        Get { uri: String, message: String },
        #[error("cannot write {uri}: {message}")]
        Put { uri: String, message: String },
        #[error("{uri} is over {max} bytes: not read")]
        TooLarge { uri: String, max: u64 },
    }

    /// An S3 client from the standard AWS configuration chain (environment, profiles, the
    /// Lambda role), honouring `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_S3` for local emulators.
    #[derive(Clone)]
    pub struct Store {
        client: aws_sdk_s3::Client,
        /// The account that must own the buckets read and written (`ExpectedBucketOwner`):
        /// bucket names are global, and a bucket of another account under our name must
        /// answer 403, not take our models.
        expected_owner: Option<String>,
    }

    impl Store {
        /// From the standard configuration chain.
        pub async fn from_env() -> Self {
            let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let mut config = aws_sdk_s3::config::Builder::from(&shared);
            // Emulators on 127.0.0.1 cannot serve bucket.127.0.0.1 (virtual-host style).
            if std::env::var_os("AWS_ENDPOINT_URL").is_some()
                || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
            {
                config = config.force_path_style(true);
            }
            Self {
                client: aws_sdk_s3::Client::from_conf(config.build()),
                expected_owner: std::env::var(BUCKET_OWNER_VAR)
                    .ok()
                    .filter(|a| !a.is_empty()),
            }
        }

        /// A client for an explicit endpoint with static credentials: local emulators.
        pub async fn with_endpoint(
            endpoint: &str,
            region: &str,
            access_key_id: &str,
            secret: &str,
        ) -> Self {
            let creds =
                aws_sdk_s3::config::Credentials::new(access_key_id, secret, None, None, "static");
            let config = aws_sdk_s3::config::Builder::new()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new(region.to_owned()))
                .endpoint_url(endpoint)
                .credentials_provider(creds)
                .force_path_style(true)
                .build();
            Self {
                client: aws_sdk_s3::Client::from_conf(config),
                expected_owner: None,
            }
        }

        /// The object's bytes.
        pub async fn get(&self, uri: &S3Uri) -> Result<Vec<u8>, StoreError> {
            self.get_capped(uri, u64::MAX).await
        }

        /// [`Store::get`], refusing an object over `max` bytes by its length before reading
        /// it, and stopping a body that runs past `max` anyway.
        pub async fn get_capped(&self, uri: &S3Uri, max: u64) -> Result<Vec<u8>, StoreError> {
            let err = |message: String| StoreError::Get {
                uri: uri.to_string(),
                message,
            };
            let too_large = || StoreError::TooLarge {
                uri: uri.to_string(),
                max,
            };
            let mut out = self
                .client
                .get_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .set_expected_bucket_owner(self.expected_owner.clone())
                .send()
                .await
                .map_err(|e| err(crate::errors::chain(&e)))?;
            if out.content_length.is_some_and(|n| n < 0 || n as u64 > max) {
                return Err(too_large());
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = out.body.try_next().await.map_err(|e| err(e.to_string()))? {
                if (bytes.len() + chunk.len()) as u64 > max {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(bytes)
        }

        /// Writes `bytes` as the object, with its content type.
        pub async fn put(
            &self,
            uri: &S3Uri,
            bytes: Vec<u8>,
            content_type: &str,
        ) -> Result<(), StoreError> {
            self.client
                .put_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .set_expected_bucket_owner(self.expected_owner.clone())
                .content_type(content_type)
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map_err(|e| StoreError::Put {
                    uri: uri.to_string(),
                    message: crate::errors::chain(&e),
                })?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_object_uris_and_refuses_the_rest() {
        let u: S3Uri = "s3://models/mnist/abc.safetensors".parse().unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.key.as_str()),
            ("models", "mnist/abc.safetensors")
        );
        assert_eq!(u.to_string(), "s3://models/mnist/abc.safetensors");
        for bad in [
            "https://x/y",
            "s3://bucket",
            "s3://bucket/",
            "s3:///key",
            "s3://b/dir/",
        ] {
            assert!(bad.parse::<S3Uri>().is_err(), "{bad}");
        }
    }

    #[test]
    fn join_tidies_the_prefix() {
        assert_eq!(
            S3Uri::join("b", "/models/", "w").to_string(),
            "s3://b/models/w"
        );
        assert_eq!(S3Uri::join("b", "", "w").to_string(), "s3://b/w");
    }
}
