//! What the control plane (the AWS emulator) records, read as Lambda's data plane reads it: the
//! version an invocation runs (an alias's, with its canary weights), that version's image and
//! configuration; and where its log lines go (CloudWatch Logs).

use super::request::InvokeError;
use super::{log, Settings};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// The configuration one invocation runs: equal specs share warm environments; any change (a
/// new version, memory, environment) is a cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub function: String,
    pub version: String,
    /// The image as released: pinned by digest.
    pub image_uri: String,
    pub memory: u32,
    pub timeout: u32,
    /// /tmp, MB.
    pub ephemeral: u32,
    pub arch: String,
    pub env: BTreeMap<String, String>,
}

/// The AWS emulator's Lambda and CloudWatch Logs.
pub struct ControlPlane {
    lambda: aws_sdk_lambda::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    streams: Mutex<HashSet<(String, String)>>,
}

impl ControlPlane {
    pub async fn connect(settings: &Settings) -> Self {
        let creds = aws_sdk_lambda::config::Credentials::new("local", "local", None, None, "local");
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(settings.region.clone()))
            .credentials_provider(creds)
            .endpoint_url(&settings.lambda_endpoint)
            .load()
            .await;
        let logs = aws_sdk_cloudwatchlogs::config::Builder::from(&sdk)
            .endpoint_url(
                settings
                    .logs_endpoint
                    .as_deref()
                    .unwrap_or(&settings.lambda_endpoint),
            )
            .build();
        ControlPlane {
            lambda: aws_sdk_lambda::Client::new(&sdk),
            logs: aws_sdk_cloudwatchlogs::Client::from_conf(logs),
            streams: Mutex::default(),
        }
    }

    /// The configuration an invocation of `function` at `qualifier` runs: an alias resolves to
    /// its version, or — with the weight its routing gives — to the additional one.
    pub async fn resolve(
        &self,
        function: &str,
        qualifier: Option<&str>,
    ) -> Result<Spec, InvokeError> {
        let mut version = qualifier.unwrap_or("$LATEST").to_owned();
        if version != "$LATEST" && !version.bytes().all(|b| b.is_ascii_digit()) {
            let alias = self
                .lambda
                .get_alias()
                .function_name(function)
                .name(&version)
                .send()
                .await
                .map_err(from_sdk)?;
            version = alias.function_version().unwrap_or("$LATEST").to_owned();
            let weights = alias
                .routing_config()
                .and_then(|r| r.additional_version_weights())
                .cloned()
                .unwrap_or_default();
            if let Some(v) = pick(&weights, fastrand::f64()) {
                version = v;
            }
        }
        let out = self
            .lambda
            .get_function()
            .function_name(function)
            .qualifier(&version)
            .send()
            .await
            .map_err(from_sdk)?;
        let conf = out.configuration();
        let is_image = conf
            .and_then(|c| c.package_type())
            .is_some_and(|p| p.as_str() == "Image");
        let code = out.code();
        let uri = code.and_then(|c| c.image_uri()).unwrap_or_default();
        // ImageUri as released (by digest); moto's ResolvedImageUri repeats the "@sha256".
        let image_uri = if uri.contains("@sha256:") {
            uri
        } else {
            code.and_then(|c| c.resolved_image_uri())
                .unwrap_or_default()
        };
        if !is_image || uri.is_empty() {
            return Err(InvokeError::invalid(format!(
                "{function} is not an image function; this data plane runs images only"
            )));
        }
        let number =
            |n: Option<i32>, default: u32| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(default);
        Ok(Spec {
            function: function.to_owned(),
            version: conf
                .and_then(|c| c.version())
                .unwrap_or(&version)
                .to_owned(),
            image_uri: image_uri.to_owned(),
            memory: number(conf.and_then(|c| c.memory_size()), 128),
            timeout: number(conf.and_then(|c| c.timeout()), 3),
            ephemeral: number(
                conf.and_then(|c| c.ephemeral_storage()).map(|e| e.size()),
                512,
            ),
            arch: conf
                .and_then(|c| c.architectures().first())
                .map_or("x86_64", |a| a.as_str())
                .to_owned(),
            env: conf
                .and_then(|c| c.environment())
                .and_then(|e| e.variables())
                .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        })
    }

    /// Makes the log group and the environment's stream; logging must not fail an invocation.
    pub async fn ensure_stream(&self, function: &str, stream: &str) {
        let group = format!("/aws/lambda/{function}");
        let made = async {
            match self
                .logs
                .create_log_group()
                .log_group_name(&group)
                .send()
                .await
            {
                Err(e) if e.code() != Some("ResourceAlreadyExistsException") => {
                    return Err(message(&e))
                }
                _ => {}
            }
            self.logs
                .create_log_stream()
                .log_group_name(&group)
                .log_stream_name(stream)
                .send()
                .await
                .map_err(|e| message(&e))
        };
        match made.await {
            Ok(_) => {
                super::environment::lock(&self.streams).insert((group, stream.to_owned()));
            }
            Err(e) => log(&format!("cannot create log stream {group} {stream}: {e}")),
        }
    }

    /// The invocation's lines, into its environment's stream.
    pub async fn put_logs(&self, function: &str, stream: &str, lines: &[String]) {
        let group = format!("/aws/lambda/{function}");
        let known =
            super::environment::lock(&self.streams).contains(&(group.clone(), stream.to_owned()));
        if !known || lines.is_empty() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let events: Vec<InputLogEvent> = lines
            .iter()
            .filter_map(|l| {
                InputLogEvent::builder()
                    .timestamp(now)
                    .message(l)
                    .build()
                    .ok()
            })
            .collect();
        if let Err(e) = self
            .logs
            .put_log_events()
            .log_group_name(&group)
            .log_stream_name(stream)
            .set_log_events(Some(events))
            .send()
            .await
        {
            log(&format!(
                "cannot write to {group} {stream}: {}",
                message(&e)
            ));
        }
    }
}

/// The version a canary's weights send this invocation to, for a uniform `roll` in [0, 1):
/// each additional version takes its weight's share; `None` leaves it on the alias's own.
pub fn pick(weights: &std::collections::HashMap<String, f64>, roll: f64) -> Option<String> {
    // Sorted, so that the same roll picks the same version whatever the map's order.
    let mut weights: Vec<(&String, &f64)> = weights.iter().collect();
    weights.sort_by(|a, b| a.0.cmp(b.0));
    let mut roll = roll;
    for (version, weight) in weights {
        if roll < *weight {
            return Some(version.clone());
        }
        roll -= weight;
    }
    None
}

/// The emulator's answer as the Invoke API's own error: its status, code and message.
fn from_sdk<E: ProvideErrorMetadata + std::fmt::Debug>(
    e: SdkError<E, aws_sdk_lambda::config::http::HttpResponse>,
) -> InvokeError {
    let status = e.raw_response().map_or(502, |r| r.status().as_u16());
    let kind = e.code().unwrap_or("ServiceException").to_owned();
    InvokeError {
        status,
        kind,
        message: message(&e),
    }
}

fn message<E: ProvideErrorMetadata + std::fmt::Debug>(e: &E) -> String {
    e.message()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_sends_its_weights_share_to_the_new_version() {
        let weights = std::collections::HashMap::from([("7".to_owned(), 0.1)]);
        assert_eq!(pick(&weights, 0.05).as_deref(), Some("7"));
        assert_eq!(pick(&weights, 0.1), None);
        assert_eq!(pick(&weights, 0.99), None);
        assert_eq!(pick(&Default::default(), 0.0), None);
        let n = (0..1000)
            .filter(|i| pick(&weights, f64::from(*i) / 1000.0).is_some())
            .count();
        assert_eq!(n, 100);
    }
}
