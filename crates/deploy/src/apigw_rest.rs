//! The same endpoint as a REST API (API Gateway v1), for accounts and tools that still use
//! them: resources `/predict` (POST) and `/health` (GET) with Lambda proxy integrations to
//! predict's `live` alias, a deployment to a stage with throttling, and the invoke permission.
//! CORS and JWT authorizers are HTTP-API features here (`deploy api` without `--rest`).

#![warn(missing_docs)]

use aws_sdk_apigateway::types::{
    EndpointConfiguration, EndpointType, IntegrationType, Op, PatchOperation,
};

use super::apigw::{ApiOutcome, ApiSpec, Auth};
use super::aws::{aws_err, AwsError};

const STAGE: &str = "prod";
/// Bodies of these types reach the function base64-encoded, byte for byte. Without them a REST
/// API passes every body as UTF-8 text, and a raw PNG or JPEG arrives corrupted.
pub const BINARY_MEDIA_TYPES: [&str; 2] = ["image/png", "image/jpeg"];

/// The invoke URL of REST API `id`'s stage.
pub fn stage_url(id: &str, region: &str, dns_suffix: &str) -> String {
    format!("https://{id}.execute-api.{region}.{dns_suffix}/{STAGE}")
}

/// The REST API named `name`, if any: the first listed.
pub async fn find_rest_api(
    apigw: &aws_sdk_apigateway::Client,
    name: &str,
) -> Result<Option<String>, AwsError> {
    Ok(rest_apis_named(apigw, name).await?.into_iter().next())
}

/// The ids of every REST API named `name` (API Gateway does not keep names unique).
pub async fn rest_apis_named(
    apigw: &aws_sdk_apigateway::Client,
    name: &str,
) -> Result<Vec<String>, AwsError> {
    let mut found = Vec::new();
    let mut position = None;
    loop {
        let page = apigw
            .get_rest_apis()
            .set_position(position)
            .send()
            .await
            .map_err(aws_err("listing REST APIs"))?;
        found.extend(
            page.items()
                .iter()
                .filter(|a| a.name() == Some(name))
                .filter_map(|a| a.id().map(str::to_owned)),
        );
        position = page.position().map(str::to_owned);
        if position.is_none() || page.items().is_empty() {
            return Ok(found);
        }
    }
}

/// Creates or updates the REST API of `spec` (routes, integrations, stage, throttling,
/// permission); returns its URL and id.
pub async fn ensure_rest_api(
    apigw: &aws_sdk_apigateway::Client,
    lambda: &aws_sdk_lambda::Client,
    spec: &ApiSpec,
) -> Result<ApiOutcome, AwsError> {
    let authorization = match spec.auth {
        Auth::None => "NONE",
        Auth::Iam => "AWS_IAM",
        Auth::Jwt => {
            return Err(AwsError::new(
                "setting up the REST API",
                "JWT authorization is an HTTP API feature: use `deploy api --auth jwt` without --rest, or --auth iam",
            ))
        }
    };
    let (id, created) = match find_rest_api(apigw, &spec.name).await? {
        Some(id) => (id, false),
        None => {
            let out = apigw
                .create_rest_api()
                .name(&spec.name)
                .description("lambda-cnn predictions (created by deploy api --rest)")
                .set_binary_media_types(Some(BINARY_MEDIA_TYPES.map(str::to_owned).to_vec()))
                .endpoint_configuration(
                    EndpointConfiguration::builder()
                        .types(EndpointType::Regional)
                        .build(),
                )
                .send()
                .await
                .map_err(aws_err(format!("creating REST API {}", spec.name)))?;
            (out.id().unwrap_or_default().to_owned(), true)
        }
    };
    if !created {
        ensure_binary_media_types(apigw, &id).await?;
    }
    let resources = apigw
        .get_resources()
        .rest_api_id(&id)
        .send()
        .await
        .map_err(aws_err(format!("listing the resources of REST API {id}")))?;
    let root = resources
        .items()
        .iter()
        .find(|r| r.path() == Some("/"))
        .and_then(|r| r.id())
        .ok_or_else(|| AwsError::new(format!("REST API {id}"), "it has no root resource"))?
        .to_owned();
    let function_arn = spec.alias_arn();
    let uri = format!(
        "arn:{}:apigateway:{}:lambda:path/2015-03-31/functions/{function_arn}/invocations",
        spec.partition, spec.region
    );
    for route in &crate::routes::ROUTES {
        // "" is the root itself, which serves the digit page.
        let (part, method) = (route.path_part(), route.method);
        let path = format!("/{part}");
        let resource_id = match resources
            .items()
            .iter()
            .find(|r| r.path() == Some(path.as_str()))
        {
            Some(r) => r.id().unwrap_or_default().to_owned(),
            None if part.is_empty() => root.clone(),
            None => apigw
                .create_resource()
                .rest_api_id(&id)
                .parent_id(&root)
                .path_part(part)
                .send()
                .await
                .map_err(aws_err(format!("creating resource {path}")))?
                .id()
                .unwrap_or_default()
                .to_owned(),
        };
        let existing = apigw
            .get_method()
            .rest_api_id(&id)
            .resource_id(&resource_id)
            .http_method(method)
            .send()
            .await
            .map_err(aws_err(format!("reading {method} {path}")));
        match existing {
            Ok(m) if m.authorization_type() == Some(authorization) => {}
            Ok(_) => {
                apigw
                    .update_method()
                    .rest_api_id(&id)
                    .resource_id(&resource_id)
                    .http_method(method)
                    .patch_operations(
                        PatchOperation::builder()
                            .op(Op::Replace)
                            .path("/authorizationType")
                            .value(authorization)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(aws_err(format!("updating {method} {path}")))?;
            }
            Err(e) if e.is("NotFoundException") => {
                apigw
                    .put_method()
                    .rest_api_id(&id)
                    .resource_id(&resource_id)
                    .http_method(method)
                    .authorization_type(authorization)
                    .send()
                    .await
                    .map_err(aws_err(format!("creating {method} {path}")))?;
            }
            Err(e) => return Err(e),
        }
        // Replaces any previous integration: the same call every time.
        apigw
            .put_integration()
            .rest_api_id(&id)
            .resource_id(&resource_id)
            .http_method(method)
            .r#type(IntegrationType::AwsProxy)
            .integration_http_method("POST")
            .uri(&uri)
            .send()
            .await
            .map_err(aws_err(format!(
                "connecting {method} {path} to {function_arn}"
            )))?;
    }
    apigw
        .create_deployment()
        .rest_api_id(&id)
        .stage_name(STAGE)
        .description("deploy api --rest")
        .send()
        .await
        .map_err(aws_err(format!("deploying REST API {id} to stage {STAGE}")))?;
    let throttle = |path: &str, value: String| {
        PatchOperation::builder()
            .op(Op::Replace)
            .path(path)
            .value(value)
            .build()
    };
    apigw
        .update_stage()
        .rest_api_id(&id)
        .stage_name(STAGE)
        .patch_operations(throttle(
            "/*/*/throttling/rateLimit",
            spec.throttle_rate.to_string(),
        ))
        .patch_operations(throttle(
            "/*/*/throttling/burstLimit",
            spec.throttle_burst.to_string(),
        ))
        .send()
        .await
        .map_err(aws_err(format!(
            "throttling stage {STAGE} of REST API {id}"
        )))?;
    super::apigw::grant_invoke(
        lambda,
        spec,
        &format!("lambda-cnn-apigw-rest-{id}"),
        &spec.execute_api_arn(&id, "*/*/*"),
    )
    .await?;
    let url = stage_url(&id, &spec.region, &spec.dns_suffix);
    Ok(ApiOutcome {
        kind: "REST",
        name: spec.name.clone(),
        page: super::apigw::page_url(&url),
        url,
        api_id: id,
        created,
    })
}

/// Adds what [`BINARY_MEDIA_TYPES`] an API made before lacks.
async fn ensure_binary_media_types(
    apigw: &aws_sdk_apigateway::Client,
    id: &str,
) -> Result<(), AwsError> {
    let api = apigw
        .get_rest_api()
        .rest_api_id(id)
        .send()
        .await
        .map_err(aws_err(format!("reading REST API {id}")))?;
    let have = api.binary_media_types();
    let missing: Vec<PatchOperation> = BINARY_MEDIA_TYPES
        .iter()
        .filter(|t| !have.iter().any(|h| h == *t))
        .map(|t| {
            PatchOperation::builder()
                .op(Op::Add)
                // JSON Pointer: "/" in a value is written "~1".
                .path(format!("/binaryMediaTypes/{}", t.replace('/', "~1")))
                .build()
        })
        .collect();
    if !missing.is_empty() {
        apigw
            .update_rest_api()
            .rest_api_id(id)
            .set_patch_operations(Some(missing))
            .send()
            .await
            .map_err(aws_err(format!(
                "letting REST API {id} pass images as binary"
            )))?;
    }
    Ok(())
}

/// Deletes the REST API named `name`; false when there was none.
pub async fn delete_rest_api(
    apigw: &aws_sdk_apigateway::Client,
    name: &str,
) -> Result<bool, AwsError> {
    let Some(id) = find_rest_api(apigw, name).await? else {
        return Ok(false);
    };
    apigw
        .delete_rest_api()
        .rest_api_id(&id)
        .send()
        .await
        .map_err(aws_err(format!("deleting REST API {name} ({id})")))?;
    Ok(true)
}
