//! Every source of the standard credential chain signs the deploy in, as real teams sign in:
//! IAM Identity Center (an `sso_session` profile and a legacy one), `aws login`, a `role_arn`
//! profile, web identity (CI systems), `credential_process` (aws-vault, granted, 1Password)
//! and static keys. Each goes through a stand-in (the AWS emulator's STS, a stand-in of the
//! SSO portal, a real process), and `deploy doctor` must print the identity it got and where
//! the credentials and the region came from. Failures say what to do next.

use common::moto::Moto;
use common::sign_in::{assume_role, create_role, AwsHome, Keys, SsoPortal};
use common::*;
use lambda_cnn_test_kit as common;
use std::process::Output;

const ACCOUNT: &str = "123456789012";

/// `deploy ARGS` with `HOME` at `home` and no AWS variable of this process's environment, only
/// the emulator's endpoint and `env`.
fn deploy_as(home: &AwsHome, moto: &Moto, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut all = vec![
        ("HOME", home.path().display().to_string()),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    all.extend(env.iter().map(|(k, v)| (*k, v.clone())));
    deploy_with_clean_aws_env(args, &all)
}

/// The identity row of `deploy doctor`'s table.
fn identity_row(o: &Output) -> String {
    let out = stdout(o);
    out.lines()
        .find(|l| l.contains("identity"))
        .unwrap_or_else(|| panic!("no identity row:\n{out}\n{}", stderr(o)))
        .to_owned()
}

fn doctor(home: &AwsHome, moto: &Moto, env: &[(&str, String)]) -> Output {
    let o = deploy_as(home, moto, &["doctor"], env);
    assert!(
        o.status.success(),
        "deploy doctor failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

fn doctor_identity(home: &AwsHome, moto: &Moto, env: &[(&str, String)]) -> String {
    identity_row(&doctor(home, moto, env))
}

/// A role in the emulator's IAM and credentials of it.
fn role_keys(moto: &Moto, name: &str, path: &str) -> Keys {
    let arn = create_role(&moto.endpoint(), name, path);
    assume_role(&moto.endpoint(), &arn, "deployer-session")
}

const SSO_ROLE: &str = "AWSReservedSSO_Deployers_0123456789abcdef";
const SSO_PATH: &str = "/aws-reserved/sso.amazonaws.com/";
const START_URL: &str = "https://corp.awsapps.com/start";

fn sso_portal(moto: &Moto, token: &str) -> SsoPortal {
    let keys = role_keys(moto, SSO_ROLE, SSO_PATH);
    SsoPortal::start(token, ACCOUNT, "Deployers", keys)
}

#[test]
fn an_sso_session_profile_signs_in_through_the_identity_center_portal() {
    let moto = Moto::start();
    let portal = sso_portal(&moto, "portal-token-1");
    let home = AwsHome::new(&format!(
        "[profile corp-dev]\nsso_session = corp\nsso_account_id = {ACCOUNT}\nsso_role_name = Deployers\nregion = eu-west-1\n\n\
         [sso-session corp]\nsso_start_url = {START_URL}\nsso_region = us-east-1\nsso_registration_scopes = sso:account:access\n"
    ));
    home.cache_sso_token("corp", "portal-token-1", 3600, START_URL);
    let o = doctor(
        &home,
        &moto,
        &[
            ("AWS_PROFILE", "corp-dev".into()),
            ("AWS_ENDPOINT_URL_SSO", portal.endpoint()),
        ],
    );
    let row = identity_row(&o);
    // The permissions are those of the role with its path, which the session ARN leaves out
    // (rebuilt with iam:GetRole; issue 23, item 2).
    let permissions = stdout(&o)
        .lines()
        .find(|l| l.contains("permissions"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        permissions.contains(&format!(
            "arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/{SSO_ROLE}"
        )),
        "{permissions}"
    );
    assert!(
        row.contains(&format!("assumed-role/{SSO_ROLE}/")),
        "the portal's role signs the calls: {row}"
    );
    assert!(
        row.contains("IAM Identity Center (SSO), profile corp-dev"),
        "{row}"
    );
    assert!(
        row.contains("region eu-west-1 (from profile corp-dev)"),
        "{row}"
    );
    assert!(portal.served.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[test]
fn a_legacy_sso_profile_signs_in_with_the_token_of_its_start_url() {
    let moto = Moto::start();
    let portal = sso_portal(&moto, "portal-token-2");
    let home = AwsHome::new(&format!(
        "[profile legacy]\nsso_start_url = {START_URL}\nsso_region = us-east-1\nsso_account_id = {ACCOUNT}\nsso_role_name = Deployers\n"
    ));
    home.cache_sso_token(START_URL, "portal-token-2", 3600, START_URL);
    // No AWS_PROFILE: the flag picks the profile.
    let o = deploy_as(
        &home,
        &moto,
        &["--profile", "legacy", "doctor"],
        &[
            ("AWS_ENDPOINT_URL_SSO", portal.endpoint()),
            ("AWS_REGION", "us-west-2".into()),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let row = identity_row(&o);
    assert!(row.contains(&format!("assumed-role/{SSO_ROLE}/")), "{row}");
    assert!(
        row.contains("IAM Identity Center (SSO), profile legacy"),
        "{row}"
    );
    assert!(row.contains("region us-west-2 (from AWS_REGION)"), "{row}");
}

#[test]
fn an_expired_sso_session_says_to_run_aws_sso_login_for_that_profile() {
    let moto = Moto::start();
    let portal = sso_portal(&moto, "portal-token-3");
    let home = AwsHome::new(&format!(
        "[profile corp-dev]\nsso_session = corp\nsso_account_id = {ACCOUNT}\nsso_role_name = Deployers\nregion = eu-west-1\n\n\
         [sso-session corp]\nsso_start_url = {START_URL}\nsso_region = us-east-1\n"
    ));
    home.cache_sso_token("corp", "portal-token-3", -60, START_URL);
    let o = deploy_as(
        &home,
        &moto,
        &["push"],
        &[
            ("AWS_PROFILE", "corp-dev".into()),
            ("AWS_ENDPOINT_URL_SSO", portal.endpoint()),
        ],
    );
    assert_clean_failure(&o, "aws sso login --profile corp-dev");
    assert_eq!(
        portal.served.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "an expired token is not sent"
    );
}

#[test]
fn a_role_arn_profile_assumes_the_role_with_its_source_profiles_keys() {
    let moto = Moto::start();
    let arn = create_role(&moto.endpoint(), "deployer", "/");
    let home = AwsHome::new(&format!(
        "[profile base]\naws_access_key_id = testing\naws_secret_access_key = testing\n\n\
         [profile deployer]\nrole_arn = {arn}\nsource_profile = base\nrole_session_name = alice\nregion = us-east-2\n"
    ));
    let row = doctor_identity(&home, &moto, &[("AWS_PROFILE", "deployer".into())]);
    assert!(row.contains("assumed-role/deployer/alice"), "{row}");
    assert!(
        row.contains("assumed role (role_arn, sts:AssumeRole), profile deployer"),
        "{row}"
    );
    assert!(
        row.contains("region us-east-2 (from profile deployer)"),
        "{row}"
    );
}

#[test]
fn web_identity_from_a_ci_systems_token_file_assumes_the_role() {
    let moto = Moto::start();
    let arn = create_role(&moto.endpoint(), "ci-deployer", "/");
    let home = AwsHome::new("");
    let token = home.web_identity_token();
    let row = doctor_identity(
        &home,
        &moto,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
            ("AWS_ROLE_ARN", arn),
            ("AWS_ROLE_SESSION_NAME", "pipeline-42".into()),
            ("AWS_REGION", "us-east-1".into()),
        ],
    );
    assert!(
        row.contains("assumed-role/ci-deployer/pipeline-42"),
        "{row}"
    );
    assert!(row.contains("web identity"), "{row}");
}

#[test]
fn credential_process_output_signs_the_calls() {
    let moto = Moto::start();
    let keys = role_keys(&moto, "vault-deployer", "/");
    let home = AwsHome::new("");
    let program = home.credential_process(&keys);
    std::fs::write(
        home.path().join(".aws/config"),
        format!(
            "[profile vault]\ncredential_process = {}\nregion = us-east-1\n",
            program.display()
        ),
    )
    .unwrap();
    let row = doctor_identity(&home, &moto, &[("AWS_PROFILE", "vault".into())]);
    assert!(row.contains("assumed-role/vault-deployer/"), "{row}");
    assert!(row.contains("credential_process, profile vault"), "{row}");
}

#[test]
fn a_failing_credential_process_says_so_and_what_to_run() {
    let moto = Moto::start();
    let home =
        AwsHome::new("[profile vault]\ncredential_process = /bin/false\nregion = us-east-1\n");
    let o = deploy_as(&home, &moto, &["push"], &[("AWS_PROFILE", "vault".into())]);
    assert_clean_failure(&o, "credential_process");
}

#[test]
fn an_aws_login_session_signs_in_from_its_cache() {
    let moto = Moto::start();
    let keys = role_keys(&moto, "console-user", "/");
    let session = format!("arn:aws:iam::{ACCOUNT}:user/Admin");
    let home = AwsHome::new(&format!(
        "[profile console]\nlogin_session = {session}\nregion = us-east-1\n"
    ));
    home.cache_login_session(&session, ACCOUNT, &keys);
    let row = doctor_identity(&home, &moto, &[("AWS_PROFILE", "console".into())]);
    assert!(row.contains("assumed-role/console-user/"), "{row}");
    assert!(row.contains("aws login"), "{row}");
}

#[test]
fn static_keys_and_flags_say_where_each_came_from() {
    let moto = Moto::start();
    let home = AwsHome::new("");
    let o = deploy_as(
        &home,
        &moto,
        &["--region", "eu-central-1", "doctor"],
        &[
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-west-2".into()),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let row = identity_row(&o);
    assert!(row.contains(&format!("account {ACCOUNT} (aws)")), "{row}");
    assert!(row.contains("region eu-central-1 (from --region)"), "{row}");
    assert!(row.contains("environment (AWS_ACCESS_KEY_ID)"), "{row}");

    // No region anywhere: the config's fallback is used, and said to be one.
    let o = deploy_as(
        &home,
        &moto,
        &["doctor"],
        &[
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let row = identity_row(&o);
    assert!(
        row.contains("region us-east-1 (from the deploy config's fallback"),
        "{row}"
    );

    // Every command that acts on AWS says where first.
    let o = deploy_as(
        &home,
        &moto,
        &["monitor"],
        &[
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-west-2".into()),
        ],
    );
    let first = stderr(&o).lines().next().unwrap_or_default().to_owned();
    assert!(
        first.starts_with(&format!(
            "deploying to account {ACCOUNT} (aws), region us-west-2"
        )),
        "{first}"
    );
}

#[test]
fn an_unknown_profile_is_named_with_what_to_do() {
    let moto = Moto::start();
    let home = AwsHome::new("[profile real]\nregion = us-east-1\n");
    let o = deploy_as(&home, &moto, &["--profile", "prdo", "push"], &[]);
    assert_clean_failure(&o, "profile prdo");
    assert!(
        stderr(&o).contains("aws configure list-profiles"),
        "{}",
        stderr(&o)
    );
}
