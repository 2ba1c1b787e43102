//! `deploy status`: what is deployed, read back from the account — per function the version
//! `live` serves, the image digest and model it runs, its memory and architecture, a canary
//! and how the last release ended; and the API in front with its URLs. Read-only: every call
//! is a Get or a List.

#![warn(missing_docs)]

use super::apigw;
use super::apigw_rest;
use super::aws::{Account, AwsError, Clients};
use super::config::DeployConfig;
use super::history::History;
use super::image::Function;
use super::lambda;

use crate::store::MODEL_S3_URI;

/// Everything `deploy status` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Where it was read.
    pub account: String,
    /// The region.
    pub region: String,
    /// One entry per function of the config.
    pub functions: Vec<FunctionStatus>,
    /// The API in front of predict, when there is one.
    pub api: Option<ApiStatus>,
}

/// One function's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunctionStatus {
    /// `predict` or `train`.
    pub function: &'static str,
    /// The Lambda function's name.
    pub name: String,
    /// Whether the function exists.
    pub deployed: bool,
    /// The alias callers use (`live`).
    pub alias: String,
    /// The version the alias sends traffic to, when the alias exists.
    pub live_version: Option<String>,
    /// The image digest that version runs.
    pub image_digest: Option<String>,
    /// The weights it serves: `image` (the image's own) or the `s3://` URI it loads.
    pub model: Option<String>,
    /// Its memory, MB.
    pub memory_mb: Option<i32>,
    /// `x86_64` or `arm64`.
    pub architecture: Option<String>,
    /// A canary: the other version and its share of traffic in percent.
    pub canary: Option<Canary>,
    /// How the newest release ended, in words.
    pub last_release: Option<String>,
    /// The release history kept on the alias (for plans: where a rollback goes).
    #[serde(skip)]
    pub history: History,
}

impl FunctionStatus {
    /// Function `f`, named `name`, as it is before its first release.
    pub fn not_deployed(f: Function, name: &str, alias: &str) -> Self {
        FunctionStatus {
            function: f.name(),
            name: name.to_owned(),
            deployed: false,
            alias: alias.to_owned(),
            live_version: None,
            image_digest: None,
            model: None,
            memory_mb: None,
            architecture: None,
            canary: None,
            last_release: None,
            history: History::default(),
        }
    }
}

/// A canary on the alias.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Canary {
    /// The version taking part of the traffic.
    pub version: String,
    /// Its share, percent.
    pub percent: f64,
}

/// The API in front of predict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiStatus {
    /// `HTTP` or `REST`.
    pub kind: &'static str,
    /// Its id.
    pub api_id: String,
    /// The invoke URL (POST …/predict, GET …/health).
    pub url: String,
    /// The digit page.
    pub page: String,
}

/// Reads the state of `functions` and the API.
pub async fn status(
    clients: &Clients,
    config: &DeployConfig,
    account: &Account,
    functions: &[Function],
) -> Result<Status, AwsError> {
    let mut out = Vec::new();
    for f in functions {
        out.push(function_status(&clients.lambda, config, *f).await?);
    }
    Ok(Status {
        account: account.id.clone(),
        region: account.region.clone(),
        functions: out,
        api: api_status(clients, config, account).await?,
    })
}

async fn function_status(
    client: &aws_sdk_lambda::Client,
    config: &DeployConfig,
    f: Function,
) -> Result<FunctionStatus, AwsError> {
    let name = config.function(f).name.clone();
    let alias = config.release.alias.clone();
    let mut s = FunctionStatus::not_deployed(f, &name, &alias);
    if lambda::function_arch(client, &name).await?.is_none() {
        return Ok(s);
    }
    s.deployed = true;
    let versions = lambda::versions(client, &name).await?;
    let Some(live) = lambda::read_alias(client, &name, &alias).await? else {
        s.last_release = Some(match versions.last() {
            Some(v) => format!("version {v} was published but never went live"),
            None => "never released".to_owned(),
        });
        return Ok(s);
    };
    let version = lambda::get_version(client, &name, &live.version).await?;
    s.image_digest = lambda::image_digest(&version);
    if let Some(conf) = version.configuration() {
        s.memory_mb = conf.memory_size();
        s.architecture = Some(
            lambda::arch_of(conf.architectures())
                .lambda_name()
                .to_owned(),
        );
        let model = conf
            .environment()
            .and_then(|e| e.variables())
            .and_then(|v| v.get(MODEL_S3_URI))
            .cloned();
        if f == Function::Predict {
            s.model = Some(model.unwrap_or_else(|| "image".to_owned()));
        }
    }
    s.canary = live.canary.as_ref().map(|(v, w)| Canary {
        version: v.clone(),
        percent: (w * 1000.0).round() / 10.0,
    });
    s.history = History::parse(&live.description);
    s.last_release = Some(last_release(
        &s.history,
        &live.version,
        live.canary.as_ref().map(|(v, _)| v.as_str()),
        versions.last().copied(),
    ));
    s.live_version = Some(live.version);
    Ok(s)
}

/// How the newest release ended, from the versions published and the release history.
fn last_release(
    history: &History,
    live: &str,
    canary: Option<&str>,
    newest: Option<u64>,
) -> String {
    let newest = newest.map(|v| v.to_string());
    match newest.as_deref() {
        Some(v) if Some(v) == canary => format!("version {v} is a canary beside version {live}"),
        Some(v) if v == live => format!("version {v} passed its smoke test and is live"),
        Some(v) if history.rolled_back.iter().any(|r| r == v) => {
            format!("rolled back from version {v} to version {live}")
        }
        Some(v) => format!(
            "version {v} did not go live (a failed smoke test, or an interrupted release): \
             {live} serves"
        ),
        None => format!("version {live} is live"),
    }
}

async fn api_status(
    clients: &Clients,
    config: &DeployConfig,
    account: &Account,
) -> Result<Option<ApiStatus>, AwsError> {
    if let Some((api_id, endpoint)) = apigw::find_api(&clients.http_apis, &config.api.name).await? {
        let url = apigw::stage_url(&endpoint, &config.api.stage);
        return Ok(Some(ApiStatus {
            kind: "HTTP",
            api_id,
            page: apigw::page_url(&url),
            url,
        }));
    }
    if let Some(id) = apigw_rest::find_rest_api(&clients.rest_apis, &config.api.name).await? {
        let url = apigw_rest::stage_url(&id, &account.region, account.dns_suffix());
        return Ok(Some(ApiStatus {
            kind: "REST",
            page: apigw::page_url(&url),
            api_id: id,
            url,
        }));
    }
    Ok(None)
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.functions {
            writeln!(f, "{s}")?;
        }
        match &self.api {
            Some(a) => write!(
                f,
                "api       {} API {}: {}\ndigit page {}",
                a.kind, a.api_id, a.url, a.page
            ),
            None => write!(f, "api       none (deploy api creates it)"),
        }
    }
}

impl std::fmt::Display for FunctionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<10}{}", self.function, self.name)?;
        if !self.deployed {
            return write!(f, ": not deployed (deploy release creates it)");
        }
        match &self.live_version {
            Some(v) => write!(f, ": {} → version {v}", self.alias)?,
            None => write!(f, ": no {} alias", self.alias)?,
        }
        if let Some(c) = &self.canary {
            write!(f, " ({}% to version {})", c.percent, c.version)?;
        }
        if let Some(d) = &self.image_digest {
            write!(f, "\n          image {d}")?;
        }
        if let (Some(m), Some(a)) = (self.memory_mb, &self.architecture) {
            write!(f, "\n          {m} MB, {a}")?;
        }
        if let Some(m) = &self.model {
            write!(f, ", model {m}")?;
        }
        if let Some(r) = &self.last_release {
            write!(f, "\n          last release: {r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_release_is_told_from_the_versions_and_the_history() {
        let h = History::parse("lambda-cnn live=3,2,1 rolled-back=4");
        assert_eq!(
            last_release(&h, "3", None, Some(3)),
            "version 3 passed its smoke test and is live"
        );
        assert!(last_release(&h, "3", None, Some(4)).starts_with("rolled back from version 4"));
        assert!(last_release(&h, "3", None, Some(5)).starts_with("version 5 did not go live"));
        assert!(last_release(&h, "3", Some("5"), Some(5)).contains("canary"));
    }

    #[test]
    fn a_function_not_deployed_says_how_to_deploy_it() {
        let s = FunctionStatus::not_deployed(Function::Predict, "lambda-cnn-predict", "live");
        assert!(s.to_string().contains("not deployed (deploy release"));
    }
}
