//! Step 5: predict behind API Gateway — an HTTP API (CORS, JWT) or, with `rest`, a REST API —
//! calling the `live` alias, never `$LATEST`.

use super::{Progress, StageError, Step};
use crate::apigw::{self, ApiOutcome, ApiSpec, Auth};
use crate::image::Function;
use crate::session::Session;

/// Makes or updates the API in front of predict's alias; `auth` overrides the config's.
pub async fn expose(
    s: &Session,
    auth: Option<Auth>,
    rest: bool,
    p: &dyn Progress,
) -> Result<ApiOutcome, StageError> {
    let cfg = &s.config;
    // An API in front of nothing would answer 500s: predict's alias must exist first.
    let predict = &cfg.function(Function::Predict).name;
    if crate::lambda::alias_version(&s.clients.lambda, predict, &cfg.release.alias)
        .await?
        .is_none()
    {
        return Err(StageError::Refused(format!(
            "{predict} has no {} alias yet, so the API would have nothing to call: run deploy \
             release first (nothing was created)",
            cfg.release.alias
        )));
    }
    let auth = match auth {
        Some(a) => a,
        None => cfg.api.auth.parse().map_err(StageError::Refused)?,
    };
    let spec = ApiSpec {
        name: cfg.api.name.clone(),
        stage: cfg.api.stage.clone(),
        throttle_rate: cfg.api.throttle_rate,
        throttle_burst: cfg.api.throttle_burst,
        cors_origins: cfg.api.cors_origins.clone(),
        auth,
        jwt_issuer: cfg.api.jwt_issuer.clone(),
        jwt_audience: cfg.api.jwt_audience.clone(),
        function_name: predict.clone(),
        alias: cfg.release.alias.clone(),
        region: s.account.region.clone(),
        account: s.account.id.clone(),
        partition: s.account.partition.clone(),
        dns_suffix: s.account.dns_suffix().to_owned(),
    };
    let out = if rest {
        crate::apigw_rest::ensure_rest_api(&s.clients.rest_apis, &s.clients.lambda, &spec).await?
    } else {
        apigw::ensure_http_api(&s.clients.http_apis, &s.clients.lambda, &spec).await?
    };
    p.done(Step::Exposed(out.clone()));
    Ok(out)
}
