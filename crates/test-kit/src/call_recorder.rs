//! A recorder in front of the AWS emulator(s): every request the deploy sends passes through
//! unchanged, and is written down as the IAM action it needs and the resource ARN it acts on
//! (the service from the request's SigV4 scope; the action and resource from the operation, as
//! AWS's service authorization reference names them). A call that passes a role to Lambda
//! (CreateFunction or UpdateFunctionConfiguration with a `Role`) is also recorded as the
//! `iam:PassRole` AWS checks for it, with `iam:PassedToService = lambda.amazonaws.com`. A test
//! then checks each recorded call against a policy with [`super::iam_simulator::evaluate`].

use super::faulty_proxy::{relay, Message};
use super::iam_simulator::{form, url_decode as decode};
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One call: the action, the resource, and the request context AWS evaluates it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub action: String,
    pub resource: String,
    pub context: Vec<(String, String)>,
}

pub type Calls = Arc<Mutex<Vec<Call>>>;

/// Where the recorded requests go, and the names their ARNs use.
#[derive(Clone)]
struct Scope {
    account: String,
    region: String,
}

/// Starts a recorder in front of `upstream` (`http://127.0.0.1:PORT`) writing to `calls`;
/// returns its endpoint.
pub fn record(upstream: &str, account: &str, region: &str, calls: Calls) -> String {
    let upstream_port: u16 = upstream
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let scope = Scope {
        account: account.to_owned(),
        region: region.to_owned(),
    };
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (calls, scope) = (calls.clone(), scope.clone());
            std::thread::spawn(move || {
                let on_request = |req: &Message| {
                    let mut found = classify(req, &scope);
                    calls.lock().unwrap().append(&mut found);
                    None
                };
                relay(conn, upstream_port, on_request, |_, resp| resp);
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn header(req: &Message, name: &str) -> Option<String> {
    String::from_utf8_lossy(&req.head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// What the request needs: usually one call, two for a role passed to Lambda.
fn classify(req: &Message, scope: &Scope) -> Vec<Call> {
    let call = |action: String, resource: String| Call {
        action,
        resource,
        context: vec![],
    };
    let Some(auth) = header(req, "authorization") else {
        return vec![];
    };
    // Credential=AKID/DATE/REGION/SERVICE/aws4_request
    let service = auth
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or_default()
        .to_owned();
    let mut parts = req.first_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = form(query.as_bytes());
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let json: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let (acct, region) = (&scope.account, &scope.region);
    match service.as_str() {
        "sts" => {
            let f = form(&req.body);
            vec![call(
                format!("sts:{}", f.get("Action").cloned().unwrap_or_default()),
                "*".into(),
            )]
        }
        "iam" => {
            let f = form(&req.body);
            let action = f.get("Action").cloned().unwrap_or_default();
            let resource = match (f.get("RoleName"), f.get("PolicySourceArn")) {
                (Some(role), _) => format!("arn:aws:iam::{acct}:role/{role}"),
                (None, Some(arn)) => arn.clone(),
                _ => "*".into(),
            };
            vec![call(format!("iam:{action}"), resource)]
        }
        "ecr" | "logs" => {
            let op = header(req, "x-amz-target")
                .and_then(|t| t.split('.').nth(1).map(str::to_owned))
                .unwrap_or_default();
            let resource = if service == "ecr" {
                json["repositoryName"]
                    .as_str()
                    .or_else(|| json["repositoryNames"][0].as_str())
                    .map(|r| format!("arn:aws:ecr:{region}:{acct}:repository/{r}"))
            } else {
                json["logGroupName"]
                    .as_str()
                    .map(|g| format!("arn:aws:logs:{region}:{acct}:log-group:{g}"))
            };
            vec![call(
                format!("{service}:{op}"),
                resource.unwrap_or_else(|| "*".into()),
            )]
        }
        "lambda" => lambda_calls(&method, &segs, &query, &json, scope),
        "states" => {
            let op = header(req, "x-amz-target")
                .and_then(|t| t.split('.').nth(1).map(str::to_owned))
                .unwrap_or_default();
            let resource = ["stateMachineArn", "executionArn", "mapRunArn"]
                .iter()
                .find_map(|k| json[*k].as_str().map(str::to_owned))
                .or_else(|| {
                    json["name"]
                        .as_str()
                        .map(|n| format!("arn:aws:states:{region}:{acct}:stateMachine:{n}"))
                })
                .unwrap_or_else(|| "*".into());
            let mut out = vec![call(format!("states:{op}"), resource)];
            if let Some(role) = json["roleArn"].as_str() {
                let role = role.split_once(":role/").map_or(role, |(_, r)| r);
                out.push(Call {
                    action: "iam:PassRole".into(),
                    resource: format!("arn:aws:iam::{acct}:role/{role}"),
                    context: vec![("iam:PassedToService".into(), "states.amazonaws.com".into())],
                });
            }
            out
        }
        "s3" => {
            let bucket = segs.first().cloned().unwrap_or_default();
            let key = segs.get(1..).map(|k| k.join("/")).unwrap_or_default();
            let bucket_arn = format!("arn:aws:s3:::{bucket}");
            let object_arn = format!("arn:aws:s3:::{bucket}/{key}");
            let has = |q: &str| query.contains_key(q);
            let (action, resource) = match (method.as_str(), key.is_empty()) {
                ("HEAD", true) | ("GET", true) => ("ListBucket", bucket_arn),
                ("PUT", true) if has("publicAccessBlock") => {
                    ("PutBucketPublicAccessBlock", bucket_arn)
                }
                ("PUT", true) if has("encryption") => ("PutEncryptionConfiguration", bucket_arn),
                ("PUT", true) => ("CreateBucket", bucket_arn),
                ("DELETE", true) => ("DeleteBucket", bucket_arn),
                ("POST", true) if has("delete") => ("DeleteObject", format!("{bucket_arn}/*")),
                ("HEAD", false) | ("GET", false) => ("GetObject", object_arn),
                ("PUT", false) => ("PutObject", object_arn),
                ("DELETE", false) => ("DeleteObject", object_arn),
                _ => ("Unknown", bucket_arn),
            };
            vec![call(format!("s3:{action}"), resource)]
        }
        "apigateway" => {
            let p = path.strip_prefix("/v2").unwrap_or(path);
            vec![call(
                format!("apigateway:{method}"),
                format!("arn:aws:apigateway:{region}::{p}"),
            )]
        }
        other => vec![call(format!("{other}:{method} {path}"), "*".into())],
    }
}

fn lambda_calls(
    method: &str,
    segs: &[String],
    query: &HashMap<String, String>,
    json: &serde_json::Value,
    scope: &Scope,
) -> Vec<Call> {
    let (acct, region) = (&scope.account, &scope.region);
    // /<date>/functions/<name>/<sub...>
    let name_of = |n: &str| n.rsplit(':').next().unwrap_or(n).to_owned();
    let fname = match segs.get(1).map(String::as_str) {
        Some("functions") => segs
            .get(2)
            .map(|n| name_of(n))
            .or_else(|| json["FunctionName"].as_str().map(name_of)),
        _ => None,
    };
    let sub: Vec<&str> = segs.iter().skip(3).map(String::as_str).collect();
    let action = match (method, segs.get(1).map(String::as_str), sub.as_slice()) {
        ("GET", Some("account-settings"), _) => "GetAccountSettings",
        ("POST", Some("functions"), []) if segs.len() == 2 => "CreateFunction",
        ("GET", Some("functions"), []) => "GetFunction",
        ("DELETE", Some("functions"), []) => "DeleteFunction",
        ("GET", _, ["configuration"]) => "GetFunctionConfiguration",
        ("PUT", _, ["configuration"]) => "UpdateFunctionConfiguration",
        ("PUT", _, ["code"]) => "UpdateFunctionCode",
        ("POST", _, ["versions"]) => "PublishVersion",
        ("GET", _, ["versions"]) => "ListVersionsByFunction",
        ("POST", _, ["invocations"]) => "InvokeFunction",
        ("POST", _, ["aliases"]) => "CreateAlias",
        ("GET", _, ["aliases"]) => "ListAliases",
        ("GET", _, ["aliases", _]) => "GetAlias",
        ("PUT", _, ["aliases", _]) => "UpdateAlias",
        ("DELETE", _, ["aliases", _]) => "DeleteAlias",
        ("GET", _, ["concurrency"]) => "GetFunctionConcurrency",
        ("PUT", _, ["concurrency"]) => "PutFunctionConcurrency",
        ("DELETE", _, ["concurrency"]) => "DeleteFunctionConcurrency",
        ("GET", _, ["policy"]) => "GetPolicy",
        ("POST", _, ["policy"]) => "AddPermission",
        ("DELETE", _, ["policy", _]) => "RemovePermission",
        _ => "Unknown",
    };
    let qualifier = match sub.as_slice() {
        ["aliases", a] => Some(a.to_string()),
        _ => query.get("Qualifier").cloned(),
    };
    let resource = match (&fname, action) {
        (_, "GetAccountSettings") => "*".to_owned(),
        (Some(f), _) => match qualifier {
            Some(q) => format!("arn:aws:lambda:{region}:{acct}:function:{f}:{q}"),
            None => format!("arn:aws:lambda:{region}:{acct}:function:{f}"),
        },
        (None, _) => "*".to_owned(),
    };
    let mut out = vec![Call {
        action: format!("lambda:{action}"),
        resource,
        context: vec![],
    }];
    if let Some(role) = json["Role"].as_str() {
        // In the recorder's account, as every other ARN here: with AWS_EMULATOR=localstack the
        // role comes from moto's IAM, whose account is not LocalStack's.
        let role = role.split_once(":role/").map_or(role, |(_, r)| r);
        out.push(Call {
            action: "iam:PassRole".into(),
            resource: format!("arn:aws:iam::{acct}:role/{role}"),
            context: vec![("iam:PassedToService".into(), "lambda.amazonaws.com".into())],
        });
    }
    out
}

/// The calls in `calls` that `policy` does not allow, each as `action on resource`.
pub fn denied(policy: &serde_json::Value, calls: &[Call]) -> Vec<String> {
    let mut out: Vec<String> = calls
        .iter()
        .filter(|c| {
            let context: HashMap<String, Vec<String>> = c
                .context
                .iter()
                .map(|(k, v)| (k.clone(), vec![v.clone()]))
                .collect();
            super::iam_simulator::evaluate(
                std::slice::from_ref(policy),
                &c.action,
                &c.resource,
                &context,
            ) != super::iam_simulator::Decision::Allowed
        })
        .map(|c| format!("{} on {}", c.action, c.resource))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The emulators' environment with each endpoint behind one recorder, what it recorded, and
/// the deployer policy `deploy policy` prints for the account that environment signs in to.
pub struct Recorded {
    pub env: Vec<(&'static str, String)>,
    pub calls: Calls,
    pub policy: serde_json::Value,
}

impl Recorded {
    /// Records every call made with the returned [`Recorded::env`] instead of `env`.
    pub fn start(env: Vec<(&'static str, String)>) -> Self {
        let out = super::deploy_with_env(&["policy"], &env);
        assert!(
            out.status.success(),
            "deploy policy: {}",
            super::stderr(&out)
        );
        let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let text = policy.to_string();
        let account = text
            .split("arn:aws:iam::")
            .nth(1)
            .map(|rest| rest[..12].to_owned())
            .unwrap();
        let region = env
            .iter()
            .find(|(k, _)| *k == "AWS_REGION")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "us-east-1".into());
        let calls = Calls::default();
        let env = env
            .into_iter()
            .map(|(k, v)| {
                if k.starts_with("AWS_ENDPOINT_URL") {
                    (k, record(&v, &account, &region, calls.clone()))
                } else {
                    (k, v)
                }
            })
            .collect();
        Recorded { env, calls, policy }
    }

    /// Regression (issue 23, item 3): every AWS call made so far is one the generated
    /// deployer policy allows, under AWS's evaluation rules; and the check can fail: without
    /// an action the deploy used, its calls are named.
    pub fn assert_within_the_deployer_policy(&self, used: &[&str]) {
        let calls = self.calls.lock().unwrap().clone();
        assert!(calls.len() > 10, "{calls:?}");
        let refused = denied(&self.policy, &calls);
        assert!(
            refused.is_empty(),
            "the deployer policy does not allow: {refused:#?}"
        );
        let mut weaker = self.policy.clone();
        for st in weaker["Statement"].as_array_mut().unwrap() {
            if let Some(actions) = st["Action"].as_array_mut() {
                actions.retain(|a| !used.contains(&a.as_str().unwrap_or_default()));
            }
        }
        let refused = denied(&weaker, &calls);
        for action in used {
            assert!(
                refused
                    .iter()
                    .any(|d| d.starts_with(&format!("{action} on "))),
                "{action}: {refused:#?}"
            );
        }
    }
}
