//! A stand-in of IAM's policy simulator (`iam:SimulatePrincipalPolicy`, which moto does not
//! serve) in front of the AWS emulator's IAM: the principal holds the identity-based policies
//! the test gives, evaluated as AWS documents it
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html>,
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html>):
//! an explicit Deny wins; else an Allow whose Action (or NotAction), Resource (or NotResource)
//! and every Condition match; else an implicit deny. `*` and `?` are wildcards in actions
//! (case-insensitive) and resources (case-sensitive). Condition operators: String(Not)Equals,
//! String(Not)Like, Arn(Not)Equals, Arn(Not)Like, Bool, each also `…IfExists`; a key missing
//! from the request context fails a positive operator, passes a negated one, and passes any
//! `…IfExists`. Every other request passes through to the emulator.

use super::faulty_proxy::{relay, Message};
use serde_json::Value;
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// What a simulation decided for one action on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    ImplicitDeny,
    ExplicitDeny,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::ImplicitDeny => "implicitDeny",
            Decision::ExplicitDeny => "explicitDeny",
        }
    }
}

/// `*` (any run) and `?` (any one character) against `text`.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Value::Bool(b) => vec![b.to_string()],
        _ => vec![],
    }
}

fn condition_holds(op: &str, key_values: &Value, context: &HashMap<String, Vec<String>>) -> bool {
    let (op, if_exists) = match op.strip_suffix("IfExists") {
        Some(o) => (o, true),
        None => (op, false),
    };
    let Some(keys) = key_values.as_object() else {
        return false;
    };
    keys.iter().all(|(key, wanted)| {
        let wanted = list(wanted);
        // Condition keys are case-insensitive.
        let found = context
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v);
        let negated = op.contains("Not");
        let Some(found) = found else {
            return if_exists || negated;
        };
        let matches = |value: &str, w: &str| match op {
            "StringEquals" | "StringNotEquals" | "ArnEquals" | "ArnNotEquals" => value == w,
            "StringEqualsIgnoreCase" | "StringNotEqualsIgnoreCase" => value.eq_ignore_ascii_case(w),
            "StringLike" | "StringNotLike" | "ArnLike" | "ArnNotLike" => wildcard(w, value),
            "Bool" => value.eq_ignore_ascii_case(w),
            _ => false,
        };
        let any = found
            .iter()
            .any(|value| wanted.iter().any(|w| matches(value, w)));
        if negated {
            !any
        } else {
            any
        }
    })
}

fn statement_applies(
    s: &Value,
    action: &str,
    resource: &str,
    context: &HashMap<String, Vec<String>>,
) -> bool {
    let action_lc = action.to_ascii_lowercase();
    let action_matches = |v: &Value| {
        list(v)
            .iter()
            .any(|a| wildcard(&a.to_ascii_lowercase(), &action_lc))
    };
    let acts = if s.get("Action").is_some() {
        action_matches(&s["Action"])
    } else {
        s.get("NotAction").is_some() && !action_matches(&s["NotAction"])
    };
    let resource_matches = |v: &Value| list(v).iter().any(|r| wildcard(r, resource));
    let on = if s.get("Resource").is_some() {
        resource_matches(&s["Resource"])
    } else {
        s.get("NotResource").is_some() && !resource_matches(&s["NotResource"])
    };
    let conditions = s["Condition"]
        .as_object()
        .is_none_or(|ops| ops.iter().all(|(op, kv)| condition_holds(op, kv, context)));
    acts && on && conditions
}

/// What `policies` (policy documents) decide for `action` on `resource` in `context`.
pub fn evaluate(
    policies: &[Value],
    action: &str,
    resource: &str,
    context: &HashMap<String, Vec<String>>,
) -> Decision {
    let statements: Vec<&Value> = policies
        .iter()
        .flat_map(|p| match &p["Statement"] {
            Value::Array(a) => a.iter().collect::<Vec<_>>(),
            o @ Value::Object(_) => vec![o],
            _ => vec![],
        })
        .collect();
    let applies = |effect: &str| {
        statements
            .iter()
            .any(|s| s["Effect"] == effect && statement_applies(s, action, resource, context))
    };
    if applies("Deny") {
        Decision::ExplicitDeny
    } else if applies("Allow") {
        Decision::Allowed
    } else {
        Decision::ImplicitDeny
    }
}

/// A form value, percent-decoded (`+` is a space).
pub fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A form-encoded body (AWS's query protocol), decoded.
pub fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (url_decode(k), url_decode(v)))
        .collect()
}

/// `Prefix.member.1`, `Prefix.member.2`, … in order.
fn members(f: &HashMap<String, String>, prefix: &str) -> Vec<String> {
    (1..)
        .map_while(|i| f.get(&format!("{prefix}.member.{i}")).cloned())
        .collect()
}

/// One simulation the stand-in answered: the principal, the actions and the resources asked
/// about, and the request context given.
#[derive(Debug, Clone)]
pub struct Simulation {
    pub principal: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub context: HashMap<String, Vec<String>>,
}

pub struct IamSimulator {
    pub port: u16,
    pub simulations: Arc<Mutex<Vec<Simulation>>>,
}

impl IamSimulator {
    /// In front of the IAM API at `upstream` (`http://127.0.0.1:PORT`); every principal holds
    /// `policies`.
    pub fn start(upstream: &str, policies: Vec<Value>) -> Self {
        let upstream_port: u16 = upstream.rsplit(':').next().unwrap().parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let simulations = Arc::new(Mutex::new(Vec::new()));
        let seen = simulations.clone();
        let policies = Arc::new(policies);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (seen, policies) = (seen.clone(), policies.clone());
                std::thread::spawn(move || {
                    let on_request = |req: &Message| {
                        let f = form(&req.body);
                        if f.get("Action").map(String::as_str) != Some("SimulatePrincipalPolicy") {
                            return None;
                        }
                        Some(simulate(&f, &policies, &seen))
                    };
                    relay(conn, upstream_port, on_request, |_, resp| resp);
                });
            }
        });
        IamSimulator { port, simulations }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn simulate(
    f: &HashMap<String, String>,
    policies: &[Value],
    seen: &Mutex<Vec<Simulation>>,
) -> Vec<u8> {
    let actions = members(f, "ActionNames");
    let mut resources = members(f, "ResourceArns");
    if resources.is_empty() {
        resources.push("*".into());
    }
    let mut context: HashMap<String, Vec<String>> = HashMap::new();
    for i in 1.. {
        let Some(key) = f.get(&format!("ContextEntries.member.{i}.ContextKeyName")) else {
            break;
        };
        context.insert(
            key.clone(),
            members(f, &format!("ContextEntries.member.{i}.ContextKeyValues")),
        );
    }
    seen.lock().unwrap().push(Simulation {
        principal: f.get("PolicySourceArn").cloned().unwrap_or_default(),
        actions: actions.clone(),
        resources: resources.clone(),
        context: context.clone(),
    });
    let mut results = String::new();
    for action in &actions {
        for resource in &resources {
            let d = evaluate(policies, action, resource, &context);
            results.push_str(&format!(
                "<member><EvalActionName>{}</EvalActionName><EvalResourceName>{}</EvalResourceName><EvalDecision>{}</EvalDecision><MatchedStatements/><MissingContextValues/></member>",
                xml_escape(action),
                xml_escape(resource),
                d.as_str()
            ));
        }
    }
    let body = format!(
        "<SimulatePrincipalPolicyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated><EvaluationResults>{results}</EvaluationResults></SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>simulated</RequestId></ResponseMetadata></SimulatePrincipalPolicyResponse>"
    );
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
