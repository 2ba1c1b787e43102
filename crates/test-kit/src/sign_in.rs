//! The ways a real team signs in to AWS, each reproduced offline: a home directory with
//! `~/.aws/config` as `aws configure sso`, `aws login` or a hand-written profile leaves it, the
//! caches `aws sso login` and `aws login` write, and a stand-in of the IAM Identity Center
//! portal. Every credential these hand out was minted by the AWS emulator's STS (AssumeRole),
//! so `sts:GetCallerIdentity` names the role each source stands for.

use super::faulty_proxy::read_message;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Temporary credentials: what AssumeRole, the SSO portal and credential_process hand out.
#[derive(Debug, Clone)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

fn query_call(endpoint: &str, service: &str, form: &[(&str, &str)]) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let mut r = agent
        .post(&format!("{endpoint}/"))
        .header("Authorization", auth)
        .content_type("application/x-www-form-urlencoded")
        .send(body)
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    assert!(status < 300, "{service} {form:?}: {status} {text}");
    text
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn xml_field(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("{name} in {xml}")) + open.len();
    let end = xml[start..].find(&format!("</{name}>")).unwrap() + start;
    xml[start..end].to_owned()
}

/// Creates role `name` under `path` in the emulator's IAM (trusting anyone in the account);
/// returns its ARN.
pub fn create_role(endpoint: &str, name: &str, path: &str) -> String {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#;
    let xml = query_call(
        endpoint,
        "iam",
        &[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", name),
            ("Path", path),
            ("AssumeRolePolicyDocument", trust),
        ],
    );
    xml_field(&xml, "Arn")
}

/// Credentials of `role_arn`, minted by the emulator's STS.
pub fn assume_role(endpoint: &str, role_arn: &str, session: &str) -> Keys {
    let xml = query_call(
        endpoint,
        "sts",
        &[
            ("Action", "AssumeRole"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn),
            ("RoleSessionName", session),
        ],
    );
    Keys {
        access_key_id: xml_field(&xml, "AccessKeyId"),
        secret_access_key: xml_field(&xml, "SecretAccessKey"),
        session_token: xml_field(&xml, "SessionToken"),
    }
}

/// A home directory for one test: `~/.aws/config` and the sign-in caches.
pub struct AwsHome {
    pub dir: tempfile::TempDir,
}

impl AwsHome {
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".aws")).unwrap();
        std::fs::write(dir.path().join(".aws/config"), config).unwrap();
        AwsHome { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// What `aws sso login` leaves for a session named `key` (an `sso_session` name, or the
    /// start URL of a legacy profile): `~/.aws/sso/cache/<sha1 of key>.json`.
    pub fn cache_sso_token(&self, key: &str, token: &str, expires_in_s: i64, start_url: &str) {
        use sha1::Digest;
        let dir = self.path().join(".aws/sso/cache");
        std::fs::create_dir_all(&dir).unwrap();
        let doc = serde_json::json!({
            "accessToken": token,
            "expiresAt": rfc3339_in(expires_in_s),
            "region": "us-east-1",
            "startUrl": start_url,
        });
        std::fs::write(
            dir.join(format!(
                "{}.json",
                hex::encode(sha1::Sha1::digest(key.as_bytes()))
            )),
            doc.to_string(),
        )
        .unwrap();
    }

    /// What `aws login` leaves for `session_arn`: `~/.aws/login/cache/<sha256 of it>.json`,
    /// holding unexpired credentials (the SDK refreshes them with AWS Sign-In only when they
    /// are about to expire).
    pub fn cache_login_session(&self, session_arn: &str, account: &str, keys: &Keys) {
        use sha2::Digest;
        let dir = self.path().join(".aws/login/cache");
        std::fs::create_dir_all(&dir).unwrap();
        let name = hex::encode(sha2::Sha256::digest(session_arn.trim().as_bytes()));
        let doc = serde_json::json!({
            "accessToken": {
                "accessKeyId": keys.access_key_id,
                "secretAccessKey": keys.secret_access_key,
                "sessionToken": keys.session_token,
                "accountId": account,
                "expiresAt": rfc3339_in(3600),
            },
            "tokenType": "aws_sigv4",
            "refreshToken": "refresh-token-of-the-test",
            "idToken": "id-token-of-the-test",
            "clientId": "arn:aws:signin:::devtools/same-device",
            "dpopKey": "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIFDZHUzOG1Pzq+6F0mjMlOSp1syN9LRPBuHMoCFXTcXhoAoGCCqGSM49\nAwEHoUQDQgAE9qhj+KtcdHj1kVgwxWWWw++tqoh7H7UHs7oXh8jBbgF47rrYGC+t\ndjiIaHK3dBvvdE7MGj5HsepzLm3Kj91bqA==\n-----END EC PRIVATE KEY-----\n",
        });
        std::fs::write(dir.join(format!("{name}.json")), doc.to_string()).unwrap();
    }

    /// A `credential_process` program that prints `keys` as the process protocol (Version 1)
    /// says; returns its path.
    pub fn credential_process(&self, keys: &Keys) -> PathBuf {
        let path = self.path().join("print-credentials");
        let doc = serde_json::json!({
            "Version": 1,
            "AccessKeyId": keys.access_key_id,
            "SecretAccessKey": keys.secret_access_key,
            "SessionToken": keys.session_token,
        });
        std::fs::write(&path, format!("#!/bin/sh\ncat <<'EOF'\n{doc}\nEOF\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A web identity token file (as a CI system's OIDC provider writes it).
    pub fn web_identity_token(&self) -> PathBuf {
        let path = self.path().join("web-identity-token");
        std::fs::write(&path, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2lnbmF0dXJl").unwrap();
        path
    }
}

/// RFC 3339 UTC, `seconds` from now.
fn rfc3339_in(seconds: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = now + seconds;
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A stand-in of the IAM Identity Center portal's one call the SDK makes, GetRoleCredentials
/// (`GET /federation/credentials?account_id=…&role_name=…`, the access token in the
/// `x-amz-sso_bearer_token` header; https://docs.aws.amazon.com/singlesignon/latest/PortalAPIReference/API_GetRoleCredentials.html).
/// As the portal does, it answers 401 UnauthorizedException to a token it did not issue and
/// 403 ForbiddenException for an account or role the user was not assigned. The SDK reaches it
/// through `AWS_ENDPOINT_URL_SSO`.
pub struct SsoPortal {
    pub port: u16,
    /// GetRoleCredentials calls answered with credentials.
    pub served: Arc<AtomicUsize>,
}

impl SsoPortal {
    /// A portal that knows one access token, assigned `account` / `role`, handing out `keys`.
    pub fn start(token: &str, account: &str, role: &str, keys: Keys) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let (token, account, role) = (token.to_owned(), account.to_owned(), role.to_owned());
        let counter = served.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Ok(read) = conn.try_clone() else { continue };
                let mut reader = BufReader::new(read);
                while let Some(req) = read_message(&mut reader, false) {
                    let head = String::from_utf8_lossy(&req.head).to_ascii_lowercase();
                    let bearer = head.lines().find_map(|l| {
                        l.strip_prefix("x-amz-sso_bearer_token:")
                            .map(|v| v.trim().to_owned())
                    });
                    let path = req.first_line.split_whitespace().nth(1).unwrap_or_default();
                    let (status, body) = if !path.starts_with("/federation/credentials?") {
                        (404, r#"{"message":"not found"}"#.to_owned())
                    } else if bearer.as_deref() != Some(token.to_ascii_lowercase().as_str()) {
                        (
                            401,
                            r#"{"message":"Session token not found or invalid"}"#.to_owned(),
                        )
                    } else if !path.contains(&format!("account_id={account}"))
                        || !path.contains(&format!("role_name={role}"))
                    {
                        (403, r#"{"message":"No access"}"#.to_owned())
                    } else {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let expiration = (std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_millis()
                            + 3_600_000) as u64;
                        let body = serde_json::json!({"roleCredentials": {
                            "accessKeyId": keys.access_key_id,
                            "secretAccessKey": keys.secret_access_key,
                            "sessionToken": keys.session_token,
                            "expiration": expiration,
                        }});
                        (200, body.to_string())
                    };
                    let kind = match status {
                        401 => "UnauthorizedException",
                        403 => "ForbiddenException",
                        _ => "",
                    };
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nx-amzn-errortype: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        });
        SsoPortal { port, served }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
