//! `deploy destroy`: removes what the stages made, each only when it is there, so that a
//! second run (or one after a partial failure) finishes the job. Without `all`: the APIs, the
//! batch state machine and its role, the functions (their versions and aliases go with them) and log groups, the role. With `all`,
//! also the ECR repository with its images and the models bucket with every object in it.

#![warn(missing_docs)]

use super::aws::{aws_err, Absent, Account, AwsError, Clients};
use super::config::DeployConfig;
use super::image::Function;
use super::{apigw, apigw_rest, iam, logs};

/// Deletes what `config` names in this account; `deleted` hears of each thing as it goes.
pub async fn destroy(
    clients: &Clients,
    config: &DeployConfig,
    account: &Account,
    all: bool,
    deleted: &mut dyn FnMut(String),
) -> Result<(), AwsError> {
    let c = clients;
    if apigw::delete_api(&clients.http_apis, &config.api.name).await? {
        deleted(format!("API {}", config.api.name));
    }
    if apigw_rest::delete_rest_api(&clients.rest_apis, &config.api.name).await? {
        deleted(format!("REST API {}", config.api.name));
    }
    // Before the functions it invokes, and before the execution role, which holds its grants.
    let machine = &config.batch.state_machine;
    let machine_arn = format!(
        "arn:{}:states:{}:{}:stateMachine:{machine}",
        account.partition, account.region, account.id
    );
    for what in super::batch::engine::destroy(
        &c.states,
        &c.iam,
        &machine_arn,
        &config.batch.role,
        machine,
        &config.role.name,
    )
    .await?
    {
        deleted(what);
    }
    for f in [Function::Predict, Function::Train] {
        let name = &config.function(f).name;
        if c.lambda
            .delete_function()
            .function_name(name)
            .send()
            .await
            .map_err(aws_err(format!("deleting function {name}")))
            .absent_if("ResourceNotFoundException")?
            .is_some()
        {
            deleted(format!(
                "function {name} (its versions and aliases with it)"
            ));
        }
        if logs::delete_log_group(&c.logs, &logs::log_group(name)).await? {
            deleted(format!("log group {}", logs::log_group(name)));
        }
    }
    if iam::delete_role(&c.iam, &config.role.name).await? {
        deleted(format!("role {}", config.role.name));
    }
    if !all {
        return Ok(());
    }
    let repository = &config.repository.name;
    if c.ecr
        .delete_repository()
        .repository_name(repository)
        .force(true)
        .send()
        .await
        .map_err(aws_err(format!("deleting ECR repository {repository}")))
        .absent_if("RepositoryNotFoundException")?
        .is_some()
    {
        deleted(format!("ECR repository {repository}"));
    }
    let bucket = config.bucket_name(&account.id, &account.region);
    if super::bucket::delete(&c.s3, &bucket, &account.id).await? {
        deleted(format!("bucket {bucket}"));
    }
    Ok(())
}
