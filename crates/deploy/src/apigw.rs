//! The public HTTPS endpoint: an API Gateway HTTP API with the routes of [`crate::routes`]
//! routed to predict's `live` alias, guarded by stage throttling, CORS, optional IAM or JWT
//! authorization, and the invoke permission scoped to this API. Every step finds what exists
//! before creating, so running it again changes nothing.

#![warn(missing_docs)]

use aws_sdk_apigatewayv2::types::{
    AuthorizationType, AuthorizerType, Cors, IntegrationType, JwtConfiguration, ProtocolType,
    RouteSettings,
};

use super::aws::{aws_err, AwsError};

const AUTHORIZER_NAME: &str = "lambda-cnn-jwt";

/// How long API Gateway waits for the function, seconds, at most: 30 for an HTTP API
/// ("Integration timeout", <https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html>)
/// and 29 by default for a REST API (<https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html>):
/// the stricter of the two, since `deploy api --rest` fronts the same function.
pub const INTEGRATION_TIMEOUT_S: i32 = 29;

/// Who may call the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Auth {
    /// Anyone (throttled, and capped by predict's reserved concurrency).
    None,
    /// Callers signing with SigV4 and allowed `execute-api:Invoke`.
    Iam,
    /// Bearer tokens of the configured issuer and audience.
    Jwt,
}

impl Auth {
    /// The name the config and `--auth` use.
    pub fn name(self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Iam => "iam",
            Auth::Jwt => "jwt",
        }
    }
}

impl std::str::FromStr for Auth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Auth::None),
            "iam" => Ok(Auth::Iam),
            "jwt" => Ok(Auth::Jwt),
            other => Err(format!("unknown authorization {other:?}: none, iam or jwt")),
        }
    }
}

/// The API to make.
#[derive(Debug, Clone)]
pub struct ApiSpec {
    /// The API's name.
    pub name: String,
    /// The stage (`$default` for an HTTP API).
    pub stage: String,
    /// Steady requests per second allowed.
    pub throttle_rate: f64,
    /// Burst allowed.
    pub throttle_burst: i32,
    /// Origins CORS allows.
    pub cors_origins: Vec<String>,
    /// Who may call it.
    pub auth: Auth,
    /// The JWT issuer (auth = jwt).
    pub jwt_issuer: String,
    /// The JWT audiences (auth = jwt).
    pub jwt_audience: Vec<String>,
    /// The function behind it (predict).
    pub function_name: String,
    /// Its alias the integrations call.
    pub alias: String,
    /// The region.
    pub region: String,
    /// The account id.
    pub account: String,
    /// The partition every ARN is written in (`aws`, `aws-cn`, `aws-us-gov`).
    pub partition: String,
    /// The partition's endpoint domain, for the API's URL.
    pub dns_suffix: String,
}

impl ApiSpec {
    pub(crate) fn alias_arn(&self) -> String {
        format!(
            "arn:{}:lambda:{}:{}:function:{}:{}",
            self.partition, self.region, self.account, self.function_name, self.alias
        )
    }

    /// Calls from every stage, method and route of API `api_id` (`routes` path segments).
    pub(crate) fn execute_api_arn(&self, api_id: &str, segments: &str) -> String {
        format!(
            "arn:{}:execute-api:{}:{}:{api_id}/{segments}",
            self.partition, self.region, self.account
        )
    }
}

/// The page's address first: it is what a person wants to open.
impl std::fmt::Display for ApiOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "digit page: {}", self.page)?;
        write!(
            f,
            "{} {} API {} ({}): GET {}/, POST {}/predict, GET {}/health",
            if self.created { "created" } else { "updated" },
            self.kind,
            self.name,
            self.api_id,
            self.url,
            self.url,
            self.url
        )
    }
}

/// What `deploy api` made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiOutcome {
    /// `HTTP` or `REST`.
    pub kind: &'static str,
    /// The API's name.
    pub name: String,
    /// Its id.
    pub api_id: String,
    /// Its invoke URL (the stage's).
    pub url: String,
    /// The digit page: open it in a browser.
    pub page: String,
    /// Whether it was created (else updated).
    pub created: bool,
}

/// The invoke URL of an HTTP API's `stage` (`$default` is served at the endpoint's root).
pub fn stage_url(endpoint: &str, stage: &str) -> String {
    if stage == "$default" {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/{stage}")
    }
}

/// The digit page of an API whose invoke URL is `url`: its root, `GET /`.
pub fn page_url(url: &str) -> String {
    format!("{}/", url.trim_end_matches('/'))
}

/// Every HTTP API named `name` (API Gateway does not keep names unique): (id, endpoint).
async fn named(
    apigw: &aws_sdk_apigatewayv2::Client,
    name: &str,
) -> Result<Vec<(String, String)>, AwsError> {
    let mut found = Vec::new();
    let mut token = None;
    loop {
        let page = apigw
            .get_apis()
            .set_next_token(token)
            .send()
            .await
            .map_err(aws_err("listing HTTP APIs"))?;
        found.extend(
            page.items()
                .iter()
                .filter(|a| a.name() == Some(name))
                .map(|api| {
                    (
                        api.api_id().unwrap_or_default().to_owned(),
                        api.api_endpoint().unwrap_or_default().to_owned(),
                    )
                }),
        );
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(found);
        }
    }
}

/// The API named `name`, if any: the first listed.
pub async fn find_api(
    apigw: &aws_sdk_apigatewayv2::Client,
    name: &str,
) -> Result<Option<(String, String)>, AwsError> {
    Ok(named(apigw, name).await?.into_iter().next())
}

/// The ids of every HTTP API named `name`.
pub async fn apis_named(
    apigw: &aws_sdk_apigatewayv2::Client,
    name: &str,
) -> Result<Vec<String>, AwsError> {
    Ok(named(apigw, name)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// Creates or updates the HTTP API of `spec` (routes, integration, stage, authorizer,
/// permission); returns what it made.
pub async fn ensure_http_api(
    apigw: &aws_sdk_apigatewayv2::Client,
    lambda: &aws_sdk_lambda::Client,
    spec: &ApiSpec,
) -> Result<ApiOutcome, AwsError> {
    let cors = Cors::builder()
        .set_allow_origins(Some(spec.cors_origins.clone()))
        .set_allow_methods(Some(
            crate::routes::methods()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        ))
        .allow_headers("content-type")
        .allow_headers("authorization")
        // What a SigV4-signing browser client sends with --auth iam.
        .allow_headers("x-amz-date")
        .allow_headers("x-amz-security-token")
        .allow_headers("x-amz-content-sha256")
        .max_age(3600)
        .build();
    let (api_id, endpoint, created) = match find_api(apigw, &spec.name).await? {
        Some((id, endpoint)) => {
            apigw
                .update_api()
                .api_id(&id)
                .cors_configuration(cors)
                .send()
                .await
                .map_err(aws_err(format!("updating CORS of API {}", spec.name)))?;
            (id, endpoint, false)
        }
        None => {
            let out = apigw
                .create_api()
                .name(&spec.name)
                .protocol_type(ProtocolType::Http)
                .cors_configuration(cors)
                .description("lambda-cnn predictions (created by deploy api)")
                .send()
                .await
                .map_err(aws_err(format!("creating HTTP API {}", spec.name)))?;
            (
                out.api_id().unwrap_or_default().to_owned(),
                out.api_endpoint().unwrap_or_default().to_owned(),
                true,
            )
        }
    };

    let target = spec.alias_arn();
    let integrations = apigw
        .get_integrations()
        .api_id(&api_id)
        .send()
        .await
        .map_err(aws_err(format!("listing the integrations of API {api_id}")))?;
    let integration_id = match integrations
        .items()
        .iter()
        .find(|i| i.integration_uri() == Some(target.as_str()))
    {
        Some(i) => i.integration_id().unwrap_or_default().to_owned(),
        None => apigw
            .create_integration()
            .api_id(&api_id)
            .integration_type(IntegrationType::AwsProxy)
            .integration_uri(&target)
            .payload_format_version("2.0")
            .send()
            .await
            .map_err(aws_err(format!("connecting API {api_id} to {target}")))?
            .integration_id()
            .unwrap_or_default()
            .to_owned(),
    };

    let (authorization, authorizer_id) = match spec.auth {
        Auth::None => (AuthorizationType::None, None),
        Auth::Iam => (AuthorizationType::AwsIam, None),
        Auth::Jwt => (
            AuthorizationType::Jwt,
            Some(ensure_jwt_authorizer(apigw, &api_id, spec).await?),
        ),
    };
    let routes = apigw
        .get_routes()
        .api_id(&api_id)
        .send()
        .await
        .map_err(aws_err(format!("listing the routes of API {api_id}")))?;
    for route in &crate::routes::ROUTES {
        let key = route.key();
        let key = key.as_str();
        let target = format!("integrations/{integration_id}");
        match routes.items().iter().find(|r| r.route_key() == Some(key)) {
            Some(r) => {
                apigw
                    .update_route()
                    .api_id(&api_id)
                    .route_id(r.route_id().unwrap_or_default())
                    .target(&target)
                    .authorization_type(authorization.clone())
                    .set_authorizer_id(authorizer_id.clone())
                    .send()
                    .await
                    .map_err(aws_err(format!("updating route {key}")))?;
            }
            None => {
                apigw
                    .create_route()
                    .api_id(&api_id)
                    .route_key(key)
                    .target(&target)
                    .authorization_type(authorization.clone())
                    .set_authorizer_id(authorizer_id.clone())
                    .send()
                    .await
                    .map_err(aws_err(format!("creating route {key}")))?;
            }
        }
    }

    let throttle = RouteSettings::builder()
        .throttling_rate_limit(spec.throttle_rate)
        .throttling_burst_limit(spec.throttle_burst)
        .build();
    let stage = apigw
        .get_stage()
        .api_id(&api_id)
        .stage_name(&spec.stage)
        .send()
        .await
        .map_err(aws_err(format!("reading stage {}", spec.stage)));
    match stage {
        Ok(current) => {
            let same = current.auto_deploy() == Some(true)
                && current.default_route_settings().is_some_and(|r| {
                    r.throttling_rate_limit() == Some(spec.throttle_rate)
                        && r.throttling_burst_limit() == Some(spec.throttle_burst)
                });
            if same {
                // Nothing to change (and one call fewer that could fail).
            } else {
                apigw
                    .update_stage()
                    .api_id(&api_id)
                    .stage_name(&spec.stage)
                    .auto_deploy(true)
                    .default_route_settings(throttle)
                    .send()
                    .await
                    .map_err(aws_err(format!("updating stage {}", spec.stage)))?;
            }
        }
        Err(e) if e.is("NotFoundException") => {
            apigw
                .create_stage()
                .api_id(&api_id)
                .stage_name(&spec.stage)
                .auto_deploy(true)
                .default_route_settings(throttle)
                .send()
                .await
                .map_err(aws_err(format!("creating stage {}", spec.stage)))?;
        }
        Err(e) => return Err(e),
    }

    grant_invoke(
        lambda,
        spec,
        &format!("lambda-cnn-apigw-{api_id}"),
        &spec.execute_api_arn(&api_id, "*/*"),
    )
    .await?;
    let url = stage_url(&endpoint, &spec.stage);
    Ok(ApiOutcome {
        kind: "HTTP",
        name: spec.name.clone(),
        api_id,
        page: page_url(&url),
        url,
        created,
    })
}

/// Lets API Gateway (calls from `source_arn`) invoke predict's alias; a grant made before is
/// left as it is. Lambda answers `ResourceConflictException` both when the statement exists and
/// when the function is being updated; only the first means done, the second is retried.
pub(crate) async fn grant_invoke(
    lambda: &aws_sdk_lambda::Client,
    spec: &ApiSpec,
    statement_id: &str,
    source_arn: &str,
) -> Result<(), AwsError> {
    let mut wait = std::time::Duration::from_secs(1);
    for attempt in 1.. {
        let permission = lambda
            .add_permission()
            .function_name(&spec.function_name)
            .qualifier(&spec.alias)
            .statement_id(statement_id)
            .action("lambda:InvokeFunction")
            .principal("apigateway.amazonaws.com")
            .source_arn(source_arn)
            .send()
            .await
            .map_err(aws_err(format!(
                "allowing {source_arn} to invoke {}:{}",
                spec.function_name, spec.alias
            )));
        match permission {
            Ok(_) => return Ok(()),
            Err(e) if e.is("ResourceConflictException") => match conflict(&e.message) {
                Conflict::Exists => return Ok(()),
                Conflict::Busy if attempt < 8 => {
                    tracing::info!(attempt, "the function is being updated; retrying the grant");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(15));
                }
                Conflict::Busy => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

#[derive(Debug, PartialEq)]
enum Conflict {
    /// "The statement id (…) provided already exists."
    Exists,
    /// "The operation cannot be performed at this time. An update is in progress …"
    Busy,
}

fn conflict(message: &str) -> Conflict {
    if message.contains("already exists") {
        Conflict::Exists
    } else {
        Conflict::Busy
    }
}

async fn ensure_jwt_authorizer(
    apigw: &aws_sdk_apigatewayv2::Client,
    api_id: &str,
    spec: &ApiSpec,
) -> Result<String, AwsError> {
    let existing = apigw
        .get_authorizers()
        .api_id(api_id)
        .send()
        .await
        .map_err(aws_err(format!("listing the authorizers of API {api_id}")))?;
    if let Some(a) = existing
        .items()
        .iter()
        .find(|a| a.name() == Some(AUTHORIZER_NAME))
    {
        return Ok(a.authorizer_id().unwrap_or_default().to_owned());
    }
    let out = apigw
        .create_authorizer()
        .api_id(api_id)
        .name(AUTHORIZER_NAME)
        .authorizer_type(AuthorizerType::Jwt)
        .identity_source("$request.header.Authorization")
        .jwt_configuration(
            JwtConfiguration::builder()
                .issuer(&spec.jwt_issuer)
                .set_audience(Some(spec.jwt_audience.clone()))
                .build(),
        )
        .send()
        .await
        .map_err(aws_err(format!(
            "creating the JWT authorizer of API {api_id}"
        )))?;
    Ok(out.authorizer_id().unwrap_or_default().to_owned())
}

/// Deletes the API named `name`; false when there was none.
pub async fn delete_api(
    apigw: &aws_sdk_apigatewayv2::Client,
    name: &str,
) -> Result<bool, AwsError> {
    let Some((id, _)) = find_api(apigw, name).await? else {
        return Ok(false);
    };
    apigw
        .delete_api()
        .api_id(&id)
        .send()
        .await
        .map_err(aws_err(format!("deleting API {name} ({id})")))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_names_the_page_first_for_people_and_all_of_it_in_json() {
        let o = ApiOutcome {
            kind: "HTTP",
            name: "lambda-cnn".into(),
            api_id: "abc123".into(),
            url: "https://abc123.execute-api.us-east-1.amazonaws.com".into(),
            page: "https://abc123.execute-api.us-east-1.amazonaws.com/".into(),
            created: true,
        };
        let text = o.to_string();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("digit page: https://abc123.execute-api.us-east-1.amazonaws.com/")
        );
        assert!(lines
            .next()
            .unwrap()
            .starts_with("created HTTP API lambda-cnn (abc123): GET "));
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["page"].as_str()),
            (Some("HTTP"), Some(o.page.as_str()))
        );
    }

    #[test]
    fn a_conflict_is_done_only_when_the_statement_exists() {
        assert_eq!(
            conflict("The statement id (lambda-cnn-apigw-x) provided already exists. Please provide a new statement id, or remove the existing statement."),
            Conflict::Exists
        );
        assert_eq!(
            conflict("The operation cannot be performed at this time. An update is in progress for resource: arn:aws:lambda:us-east-1:123456789012:function:lambda-cnn-predict"),
            Conflict::Busy
        );
    }
}
