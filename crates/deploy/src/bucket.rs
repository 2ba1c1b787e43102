//! The models bucket: whose it is, creating it through S3's documented delays, emptying and
//! deleting it. Bucket names are global, so every call names the account that must own the
//! bucket (`ExpectedBucketOwner`): a bucket another account created under our name, even one
//! that lets us in, answers 403 instead of passing as ours
//! (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-owner-condition.html>).

#![warn(missing_docs)]

use std::time::Duration;

use super::aws::{aws_err, AwsError};

/// Whose a bucket name is, as this account sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketState {
    /// No bucket has the name: deploy can create it.
    Free,
    /// The bucket exists and this account owns it.
    Ours,
    /// The bucket exists and another account owns it (or this one may not look at it).
    Foreign,
    /// S3 could not say (why).
    Unknown(String),
}

/// What S3 says of `bucket` to `account_id` (HeadBucket with `ExpectedBucketOwner`).
pub async fn state(s3: &aws_sdk_s3::Client, bucket: &str, account_id: &str) -> BucketState {
    match s3
        .head_bucket()
        .bucket(bucket)
        .expected_bucket_owner(account_id)
        .send()
        .await
    {
        Ok(_) => BucketState::Ours,
        Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
            Some(404) => BucketState::Free,
            Some(403) => BucketState::Foreign,
            _ => BucketState::Unknown(aws_err(format!("looking up bucket {bucket}"))(e).message),
        },
    }
}

/// How long deploy waits for S3 to let a recently deleted name be used again
/// (`409 OperationAborted`: "A conflicting conditional operation is currently in progress
/// against this resource. Try again."; S3 may keep a deleted bucket's name for a while —
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>), and for a bucket
/// just created to be seen by the next call (`NoSuchBucket` for a moment after creation).
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// The total time to keep trying CreateBucket.
    pub create: Duration,
    /// The total time to wait for a new bucket to be seen.
    pub settle: Duration,
    /// The first pause; each next one doubles, up to 30 s.
    pub first_pause: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            create: Duration::from_secs(300),
            settle: Duration::from_secs(60),
            first_pause: Duration::from_secs(2),
        }
    }
}

/// The pauses between tries within `total`: doubling from `first`, at most 30 s each, their
/// sum never over `total`.
pub fn pauses(first: Duration, total: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut next = first;
    let mut sum = Duration::ZERO;
    while !next.is_zero() && sum + next <= total {
        out.push(next);
        sum += next;
        next = (next * 2).min(Duration::from_secs(30));
    }
    out
}

/// Creates the models bucket when it is free: private, encrypted at rest. `Ok(false)` when it
/// is already this account's; an error (before anything is created) when another account has
/// the name. A recently deleted name is retried within `patience`, saying so.
pub async fn ensure(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    region: &str,
    account_id: &str,
    patience: Patience,
    say: &(dyn Fn(String) + Sync),
) -> Result<bool, AwsError> {
    match state(s3, bucket, account_id).await {
        BucketState::Ours => return Ok(false),
        BucketState::Foreign => {
            return Err(AwsError::new(
                format!("using bucket {bucket}"),
                format!("it exists and is not account {account_id}'s (bucket names are global): set [bucket] name in infra/deploy.toml to another name"),
            ))
        }
        BucketState::Free | BucketState::Unknown(_) => {}
    }
    let mut waits = pauses(patience.first_pause, patience.create).into_iter();
    loop {
        let mut create = s3.create_bucket().bucket(bucket);
        if region != "us-east-1" {
            create = create.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match create
            .send()
            .await
            .map_err(aws_err(format!("creating bucket {bucket}")))
        {
            Ok(_) => break,
            Err(e) if e.is("BucketAlreadyOwnedByYou") => break,
            Err(e) if e.is("OperationAborted") => match waits.next() {
                Some(pause) => {
                    say(format!(
                        "bucket {bucket}: S3 does not let the name be used again yet (it was deleted recently: OperationAborted); trying again in {} s",
                        pause.as_secs()
                    ));
                    tokio::time::sleep(pause).await;
                }
                None => {
                    return Err(AwsError {
                        message: format!(
                            "{}; S3 has kept the recently deleted name for over {} s (it can take hours): run again later, or set [bucket] name in infra/deploy.toml to a new name",
                            e.message,
                            patience.create.as_secs()
                        ),
                        ..e
                    })
                }
            },
            Err(e) if e.is("BucketAlreadyExists") => {
                return Err(AwsError {
                    message: format!(
                        "{}: another account took the name; set [bucket] name in infra/deploy.toml to another name",
                        e.message
                    ),
                    ..e
                })
            }
            Err(e) => return Err(e),
        }
    }
    // A bucket just created may not be seen by the next call for a moment (NoSuchBucket).
    let mut settle_waits = pauses(patience.first_pause, patience.settle).into_iter();
    loop {
        match block_public_access(s3, bucket, account_id).await {
            Err(e) if e.is("NoSuchBucket") => match settle_waits.next() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(e),
            },
            other => break other?,
        }
    }
    encrypt(s3, bucket, account_id).await?;
    Ok(true)
}

async fn block_public_access(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    account_id: &str,
) -> Result<(), AwsError> {
    s3.put_public_access_block()
        .bucket(bucket)
        .expected_bucket_owner(account_id)
        .public_access_block_configuration(
            aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(aws_err(format!(
            "blocking public access to bucket {bucket}"
        )))?;
    Ok(())
}

async fn encrypt(s3: &aws_sdk_s3::Client, bucket: &str, account_id: &str) -> Result<(), AwsError> {
    let building = |e: aws_sdk_s3::error::BuildError| {
        AwsError::new("building the bucket encryption setting", e.to_string())
    };
    let sse = aws_sdk_s3::types::ServerSideEncryptionByDefault::builder()
        .sse_algorithm(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        .build()
        .map_err(building)?;
    let rule = aws_sdk_s3::types::ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(sse)
        .build();
    s3.put_bucket_encryption()
        .bucket(bucket)
        .expected_bucket_owner(account_id)
        .server_side_encryption_configuration(
            aws_sdk_s3::types::ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(building)?,
        )
        .send()
        .await
        .map_err(aws_err(format!("encrypting bucket {bucket}")))?;
    Ok(())
}

/// Deletes one object of a bucket of this account.
pub async fn delete_object(
    s3: &aws_sdk_s3::Client,
    uri: &crate::store::S3Uri,
    account_id: &str,
) -> Result<(), AwsError> {
    s3.delete_object()
        .bucket(&uri.bucket)
        .key(&uri.key)
        .expected_bucket_owner(account_id)
        .send()
        .await
        .map_err(aws_err(format!("deleting {uri}")))?;
    Ok(())
}

/// Empties and deletes `bucket` when this account owns it; `false` when there is none (or it
/// is another account's: never touched).
pub async fn delete(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    account_id: &str,
) -> Result<bool, AwsError> {
    if state(s3, bucket, account_id).await != BucketState::Ours {
        return Ok(false);
    }
    // Every page: ListObjectsV2 answers at most 1000 keys at a time, and a bucket that is not
    // empty cannot be deleted.
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .expected_bucket_owner(account_id)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws_err(format!("listing bucket {bucket}")))?;
        for key in page.contents().iter().filter_map(|o| o.key()) {
            let uri = crate::store::S3Uri {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            };
            delete_object(s3, &uri, account_id).await?;
        }
    }
    s3.delete_bucket()
        .bucket(bucket)
        .expected_bucket_owner(account_id)
        .send()
        .await
        .map_err(aws_err(format!("deleting bucket {bucket}")))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_half_a_minute_and_stay_within_the_bound() {
        let p = pauses(Duration::from_secs(2), Duration::from_secs(300));
        assert_eq!(p[..5], [2, 4, 8, 16, 30].map(Duration::from_secs));
        assert!(p[4..].iter().all(|d| *d == Duration::from_secs(30)));
        assert!(p.iter().sum::<Duration>() <= Duration::from_secs(300));
        assert!(p.iter().sum::<Duration>() > Duration::from_secs(270));
        assert!(pauses(Duration::from_secs(2), Duration::from_secs(1)).is_empty());
        assert!(pauses(Duration::ZERO, Duration::from_secs(10)).is_empty());
    }
}
