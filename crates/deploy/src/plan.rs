//! `--dry-run`: what a command would do here and now. The plan is made from the account's
//! current state, read with Get/List/Head calls only ([`read_state`]), and the same request
//! the command runs with ([`Request`]), so it says "keep" where the run would change nothing
//! and names what it would create, update or delete — or why it would stop. Nothing is written.

#![warn(missing_docs)]

use super::apigw::Auth;
use super::aws::{Account, AwsError};
use super::bucket::BucketState;
use super::config::DeployConfig;
use super::image::Function;
use super::status::{self, FunctionStatus, Status};
use crate::arch::Arch;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Makes something new.
    Create,
    /// Changes something that exists.
    Update,
    /// Leaves something as it is (already what the command would make it).
    Keep,
    /// Removes something.
    Delete,
    /// Runs work that changes nothing in the account (a build, a smoke test, an invocation).
    Run,
    /// Only reads.
    Read,
    /// Would stop the command here (nothing after it happens).
    Stop,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Keep => "keep",
            Action::Delete => "delete",
            Action::Run => "run",
            Action::Read => "read",
            Action::Stop => "STOP",
        })
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    /// What it does.
    pub action: Action,
    /// To what, in words.
    pub what: String,
}

/// What a command would do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// The command (`release`, `all`, ...).
    pub command: String,
    /// Where.
    pub account: Account,
    /// In order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Whether the command would stop before its end.
    pub fn stops(&self) -> bool {
        self.steps.iter().any(|s| s.action == Action::Stop)
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "deploy {} would, in account {} region {}:",
            self.command, self.account.id, self.account.region
        )?;
        if self.steps.is_empty() {
            write!(f, "\n  nothing")?;
        }
        for s in &self.steps {
            write!(f, "\n  {:<7}{}", s.action, s.what)?;
        }
        Ok(())
    }
}

/// A function's image as `deploy image` left it: its digest, or why it cannot be read.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// The function.
    pub function: Function,
    /// `sha256:…`, or why there is none.
    pub digest: Result<String, String>,
}

/// The command to plan, with the options that change what it does.
#[derive(Debug, Clone)]
pub enum Request {
    /// `deploy push`.
    Push {
        /// The images to push.
        images: Vec<LocalImage>,
        /// `--registry`, else ECR's.
        registry: Option<String>,
    },
    /// `deploy release`.
    Release {
        /// The images to release.
        images: Vec<LocalImage>,
        /// `--canary` percent.
        canary: Option<f64>,
        /// `--model`.
        model: Option<String>,
    },
    /// `deploy api`.
    Api {
        /// `--rest`.
        rest: bool,
        /// The auth (flag, else config).
        auth: Auth,
    },
    /// `deploy role`.
    Role,
    /// `deploy rollback`.
    Rollback {
        /// The functions.
        functions: Vec<Function>,
        /// `--to`.
        to: Option<u64>,
    },
    /// `deploy destroy`.
    Destroy {
        /// `--all`.
        all: bool,
    },
    /// `deploy all`.
    All {
        /// The architecture to build for.
        arch: Arch,
        /// `--no-api`.
        no_api: bool,
        /// Where the images are written.
        images_dir: String,
    },
    /// `deploy tune`.
    Tune {
        /// The function.
        function: Function,
        /// The memory sizes to try, MB, ascending.
        sizes: Vec<u32>,
        /// Invocations per size.
        invocations: u32,
        /// How the pick is made.
        strategy: crate::judging::Strategy,
        /// `--apply`: release the pick.
        apply: bool,
    },
    /// `deploy invoke`.
    Invoke {
        /// The function.
        function: Function,
    },
    /// `deploy monitor`: the REPORT lines.
    Monitor {
        /// The functions.
        functions: Vec<Function>,
        /// How far back.
        since: std::time::Duration,
    },
    /// `deploy logs`.
    Logs {
        /// The functions.
        functions: Vec<Function>,
        /// How far back.
        since: std::time::Duration,
    },
    /// `deploy status`.
    Status,
    /// `deploy doctor`.
    Doctor,
    /// `deploy policy`.
    Policy,
}

impl Request {
    fn command(&self) -> &'static str {
        match self {
            Request::Push { .. } => "push",
            Request::Release { .. } => "release",
            Request::Api { .. } => "api",
            Request::Role => "role",
            Request::Rollback { .. } => "rollback",
            Request::Destroy { .. } => "destroy",
            Request::All { .. } => "all",
            Request::Tune { .. } => "tune",
            Request::Invoke { .. } => "invoke",
            Request::Monitor { .. } => "monitor",
            Request::Logs { .. } => "logs",
            Request::Status => "status",
            Request::Doctor => "doctor",
            Request::Policy => "policy",
        }
    }
}

/// What exists now.
#[derive(Debug, Clone)]
pub struct State {
    /// The functions, their aliases and the API.
    pub status: Status,
    /// Whether the ECR repository exists.
    pub repository: bool,
    /// Whether the execution role exists.
    pub role: bool,
    /// The models bucket.
    pub bucket: BucketState,
}

/// Reads the state a plan needs, with read-only calls.
pub async fn read_state(
    clients: &super::aws::Clients,
    config: &DeployConfig,
    account: &Account,
) -> Result<State, AwsError> {
    let status = status::status(
        clients,
        config,
        account,
        &[Function::Predict, Function::Train],
    )
    .await?;
    Ok(State {
        status,
        repository: super::ecr::find_repository(&clients.ecr, &config.repository.name)
            .await?
            .is_some(),
        role: super::iam::find_role(&clients.iam, &config.role.name)
            .await?
            .is_some(),
        bucket: super::bucket::state(
            &clients.s3,
            &config.bucket_name(&account.id, &account.region),
            &account.id,
        )
        .await,
    })
}

fn step(action: Action, what: impl Into<String>) -> Step {
    Step {
        action,
        what: what.into(),
    }
}

/// The first 12 hex digits of a `sha256:…` digest: what people read, and the image tags use.
pub fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// The plan of `request` in `account`, whose state is `state`.
pub fn plan(request: &Request, config: &DeployConfig, account: &Account, state: &State) -> Plan {
    let mut steps = Vec::new();
    match request {
        Request::Push { images, registry } => push(&mut steps, config, state, images, registry),
        Request::Release {
            images,
            canary,
            model,
        } => release(&mut steps, config, account, state, images, *canary, model),
        Request::Api { rest, auth } => api(&mut steps, config, state, *rest, *auth),
        Request::Role => role(&mut steps, config, state),
        Request::Rollback { functions, to } => {
            for f in functions {
                rollback(&mut steps, config, function(state, *f), *to);
            }
        }
        Request::Destroy { all } => destroy(&mut steps, config, account, state, *all),
        Request::All {
            arch,
            no_api,
            images_dir,
        } => {
            steps.push(step(
                Action::Read,
                "check the account (deploy doctor); any FAIL stops here",
            ));
            steps.push(step(
                Action::Run,
                format!(
                    "build both functions for {arch} (release) and their images into {images_dir}"
                ),
            ));
            let fresh: Vec<LocalImage> = [Function::Predict, Function::Train]
                .map(|function| LocalImage {
                    function,
                    digest: Ok("built".into()),
                })
                .to_vec();
            push(&mut steps, config, state, &fresh, &None);
            // The push just planned makes the repository the release needs.
            let pushed = State {
                repository: true,
                ..state.clone()
            };
            release(&mut steps, config, account, &pushed, &fresh, None, &None);
            if !no_api {
                let auth = config.api.auth.parse().unwrap_or(Auth::None);
                api(&mut steps, config, state, false, auth);
            }
        }
        Request::Tune {
            function: f,
            sizes,
            invocations,
            strategy,
            apply,
        } => tune(
            &mut steps,
            config,
            function(state, *f),
            sizes,
            *invocations,
            *strategy,
            *apply,
        ),
        Request::Invoke { function: f } => {
            let s = function(state, *f);
            let alias = &config.release.alias;
            steps.push(match s.live_version {
                Some(_) => step(Action::Run, format!("invoke {}:{alias} once", s.name)),
                None => not_released(s, alias, "invoke"),
            });
        }
        Request::Monitor { functions, since } | Request::Logs { functions, since } => {
            let what = match request {
                Request::Monitor { .. } => "the REPORT lines (duration, memory, cost)",
                _ => "the log lines",
            };
            for &f in functions {
                steps.push(step(
                    Action::Read,
                    format!(
                        "{what} of {} over the last {}",
                        function(state, f).name,
                        humantime::format_duration(*since)
                    ),
                ));
            }
        }
        Request::Status => steps.push(step(
            Action::Read,
            "the functions, their live versions and the API",
        )),
        Request::Doctor => steps.push(step(
            Action::Read,
            "the account's identity, permissions, Lambda limits and the names the deploy takes",
        )),
        Request::Policy => steps.push(step(
            Action::Read,
            "infra/iam/deployer-policy.json, printed with this config's names, the account and \
             region filled in",
        )),
    }
    Plan {
        command: request.command().to_owned(),
        account: account.clone(),
        steps,
    }
}

fn function(state: &State, f: Function) -> &FunctionStatus {
    // `status` lists both functions.
    state
        .status
        .functions
        .iter()
        .find(|s| s.function == f.name())
        .unwrap_or(&state.status.functions[0])
}

fn push(
    steps: &mut Vec<Step>,
    config: &DeployConfig,
    state: &State,
    images: &[LocalImage],
    registry: &Option<String>,
) {
    if let Some(stop) = missing_image(images) {
        steps.push(stop);
        return;
    }
    let repo = &config.repository.name;
    steps.push(if state.repository {
        step(
            Action::Keep,
            format!("ECR repository {repo} (its lifecycle and repository policies set again)"),
        )
    } else {
        step(
            Action::Create,
            format!(
                "ECR repository {repo} (scan on push, keep {} images)",
                config.repository.keep_images
            ),
        )
    });
    for i in images {
        let digest = i.digest.as_deref().unwrap_or_default();
        let what = if digest == "built" {
            format!("the {} image just built", i.function)
        } else {
            format!("the {} image {}", i.function, short_digest(digest))
        };
        steps.push(step(
            Action::Run,
            format!(
                "push {what} to {} (blobs already there are skipped)",
                registry.as_deref().unwrap_or(repo)
            ),
        ));
    }
}

fn missing_image(images: &[LocalImage]) -> Option<Step> {
    let missing: Vec<String> = images
        .iter()
        .filter_map(|i| {
            i.digest
                .as_ref()
                .err()
                .map(|why| format!("{}: {why}", i.function))
        })
        .collect();
    (!missing.is_empty()).then(|| {
        step(
            Action::Stop,
            format!(
                "no image to send ({}); nothing is created",
                missing.join("; ")
            ),
        )
    })
}

fn release(
    steps: &mut Vec<Step>,
    config: &DeployConfig,
    account: &Account,
    state: &State,
    images: &[LocalImage],
    canary: Option<f64>,
    model: &Option<String>,
) {
    if let Some(stop) = missing_image(images) {
        steps.push(stop);
        return;
    }
    if !state.repository {
        steps.push(step(
            Action::Stop,
            format!(
                "ECR repository {} does not exist, so no image was pushed: run deploy push \
                 first; nothing is created",
                config.repository.name
            ),
        ));
        return;
    }
    let bucket = config.bucket_name(&account.id, &account.region);
    match &state.bucket {
        BucketState::Ours => steps.push(step(Action::Keep, format!("bucket {bucket}"))),
        BucketState::Foreign => {
            steps.push(step(
                Action::Stop,
                format!(
                    "bucket {bucket} belongs to another account: set [bucket] name in the config"
                ),
            ));
            return;
        }
        _ => steps.push(step(
            Action::Create,
            format!("bucket {bucket} (private, encrypted)"),
        )),
    }
    steps.push(if state.role {
        step(
            Action::Update,
            format!(
                "role {}: trust and policies from infra/iam/",
                config.role.name
            ),
        )
    } else {
        step(
            Action::Create,
            format!(
                "role {} (trust and policies from infra/iam/)",
                config.role.name
            ),
        )
    });
    let alias = &config.release.alias;
    for i in images {
        let s = function(state, i.function);
        let fc = config.function(i.function);
        let digest = i.digest.as_deref().unwrap_or_default();
        let built = digest == "built";
        let image = if built {
            "the image just built".to_owned()
        } else {
            format!("image {}", short_digest(digest))
        };
        let model_changes = i.function == Function::Predict
            && model
                .as_deref()
                .is_some_and(|m| Some(m) != s.model.as_deref());
        let then = match canary {
            Some(c) => format!("send {c}% of {alias}'s traffic to it"),
            None => format!("point {alias} at it"),
        };
        if !s.deployed {
            steps.push(step(
                Action::Create,
                format!(
                    "function {} from {image}, {} MB, {} s",
                    s.name, fc.memory_mb, fc.timeout_s
                ),
            ));
            steps.push(step(
                Action::Run,
                format!("publish version 1, smoke-test it, then {then}"),
            ));
        } else if !built
            && s.image_digest.as_deref() == Some(digest)
            && !model_changes
            && s.canary.is_none()
        {
            steps.push(step(
                Action::Keep,
                format!(
                    "function {}: {alias} (version {}) already runs {image}",
                    s.name,
                    s.live_version.as_deref().unwrap_or("?")
                ),
            ));
        } else {
            let now = match (&s.live_version, &s.image_digest) {
                (Some(v), Some(d)) => format!("{alias} is version {v}, image {}", short_digest(d)),
                _ => format!("no {alias} alias yet"),
            };
            steps.push(step(
                Action::Update,
                format!("function {} to {image} ({now})", s.name),
            ));
            steps.push(step(
                Action::Run,
                format!("publish a new version, smoke-test it, then {then} (a failed smoke test leaves {alias} as it is)"),
            ));
        }
        if let (Function::Predict, Some(m)) = (i.function, model.as_deref()) {
            steps.push(step(
                Action::Read,
                format!("check that the model {m} exists"),
            ));
        }
    }
}

fn api(steps: &mut Vec<Step>, config: &DeployConfig, state: &State, rest: bool, auth: Auth) {
    let predict = function(state, Function::Predict);
    if predict.live_version.is_none() {
        steps.push(step(
            Action::Stop,
            format!(
                "{} has no {} alias: run deploy release first; nothing is created",
                predict.name, config.release.alias
            ),
        ));
        return;
    }
    let kind = if rest { "REST" } else { "HTTP" };
    let routes: Vec<String> = crate::routes::ROUTES.iter().map(|r| r.key()).collect();
    let routes = routes.join(", ");
    let what = format!(
        "{kind} API {} ({routes} → {}:{}), throttled {}/s burst {}, auth {}",
        config.api.name,
        predict.name,
        config.release.alias,
        config.api.throttle_rate,
        config.api.throttle_burst,
        auth.name()
    );
    match &state.status.api {
        Some(a) if a.kind == kind => steps.push(step(Action::Update, format!("{what}: {}", a.url))),
        _ => steps.push(step(Action::Create, what)),
    }
}

/// The step that stops a command needing `alias` on a function that has none.
fn not_released(s: &FunctionStatus, alias: &str, command: &str) -> Step {
    step(
        Action::Stop,
        format!(
            "{} has no {alias} alias, so there is nothing to {command}: release it first \
             (deploy release --function {})",
            s.name, s.function
        ),
    )
}

/// What `deploy tune` changes (and puts back): one version and alias per size, each removed
/// once measured, then `$LATEST` as it was; `--apply` then releases the pick as `deploy
/// release` would.
fn tune(
    steps: &mut Vec<Step>,
    config: &DeployConfig,
    s: &FunctionStatus,
    sizes: &[u32],
    invocations: u32,
    strategy: crate::judging::Strategy,
    apply: bool,
) {
    let alias = &config.release.alias;
    if !s.deployed {
        steps.push(step(
            Action::Stop,
            format!(
                "there is no {} to tune: release it first (deploy release --function {})",
                s.name, s.function
            ),
        ));
        return;
    }
    // What the real run measures (crate::tune::start): what the alias runs, $LATEST being
    // brought to it first where it differs; without the alias, $LATEST as it is.
    let what = match &s.live_version {
        Some(live) => format!("what {alias} runs (version {live})"),
        None => format!("$LATEST (there is no {alias} alias)"),
    };
    for &mb in sizes {
        let temporary = super::tune::alias_name(mb);
        steps.push(step(
            Action::Create,
            format!(
                "{}: {what} at {mb} MB, published behind alias {temporary}",
                s.name
            ),
        ));
        steps.push(step(
            Action::Run,
            format!("invoke {temporary} {invocations} times, reading the REPORT lines"),
        ));
        steps.push(step(
            Action::Delete,
            format!("alias {temporary} and the version it published"),
        ));
    }
    steps.push(step(
        Action::Update,
        format!(
            "{}: $LATEST back to the memory, image and settings it had",
            s.name
        ),
    ));
    steps.push(step(Action::Run, format!("recommend a size by {strategy}")));
    if apply {
        steps.push(match s.live_version {
            Some(_) => step(
                Action::Run,
                format!(
                    "release the recommended size: publish a version, smoke-test it, then point \
                     {alias} at it (a failed smoke test leaves {alias} as it is)"
                ),
            ),
            None => step(
                Action::Stop,
                format!(
                    "--apply: {} has no {alias} alias to release the pick behind: release it \
                     first (deploy release --function {})",
                    s.name, s.function
                ),
            ),
        });
    }
}

fn role(steps: &mut Vec<Step>, config: &DeployConfig, state: &State) {
    steps.push(step(
        if state.role {
            Action::Update
        } else {
            Action::Create
        },
        format!(
            "role {} (trust and policies from infra/iam/)",
            config.role.name
        ),
    ));
}

fn rollback(steps: &mut Vec<Step>, config: &DeployConfig, s: &FunctionStatus, to: Option<u64>) {
    let alias = &config.release.alias;
    let Some(live) = &s.live_version else {
        steps.push(step(
            Action::Stop,
            format!("{} has no {alias} alias: nothing to roll back", s.name),
        ));
        return;
    };
    let target = match (to, &s.canary) {
        (Some(v), _) => v.to_string(),
        (None, Some(c)) => {
            steps.push(step(
                Action::Update,
                format!(
                    "{}:{alias}: drop the canary (version {}); version {live} keeps all traffic",
                    s.name, c.version
                ),
            ));
            return;
        }
        (None, None) => match s.history.rollback_target(live) {
            Some(t) => t.to_owned(),
            None => {
                steps.push(step(
                    Action::Stop,
                    format!(
                        "{}: no version went live before version {live}: give one with --to VERSION",
                        s.name
                    ),
                ));
                return;
            }
        },
    };
    steps.push(step(
        Action::Run,
        format!("smoke-test version {target} of {}", s.name),
    ));
    steps.push(step(
        Action::Update,
        format!("{}:{alias}: version {live} → version {target}", s.name),
    ));
}

fn destroy(
    steps: &mut Vec<Step>,
    config: &DeployConfig,
    account: &Account,
    state: &State,
    all: bool,
) {
    if let Some(a) = &state.status.api {
        steps.push(step(
            Action::Delete,
            format!("{} API {} ({})", a.kind, config.api.name, a.api_id),
        ));
    }
    for s in state.status.functions.iter().filter(|s| s.deployed) {
        steps.push(step(
            Action::Delete,
            format!(
                "function {} (its versions and aliases) and log group {}",
                s.name,
                super::logs::log_group(&s.name)
            ),
        ));
    }
    if state.role {
        steps.push(step(Action::Delete, format!("role {}", config.role.name)));
    }
    let bucket = config.bucket_name(&account.id, &account.region);
    if all {
        if state.repository {
            steps.push(step(
                Action::Delete,
                format!("ECR repository {} and its images", config.repository.name),
            ));
        }
        if state.bucket == BucketState::Ours {
            steps.push(step(
                Action::Delete,
                format!("bucket {bucket} and every object in it"),
            ));
        }
    } else {
        let mut kept = Vec::new();
        if state.repository {
            kept.push(format!("ECR repository {}", config.repository.name));
        }
        if state.bucket == BucketState::Ours {
            kept.push(format!("bucket {bucket}"));
        }
        if !kept.is_empty() {
            steps.push(step(
                Action::Keep,
                format!("{} (--all deletes them too)", kept.join(" and ")),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use crate::status::Canary;

    fn config() -> DeployConfig {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/deploy.toml"),
        )
        .unwrap();
        DeployConfig::parse(&text).unwrap()
    }

    fn account() -> Account {
        Account {
            id: "123456789012".into(),
            region: "eu-west-1".into(),
            partition: "aws".into(),
            caller_arn: "arn:aws:iam::123456789012:user/a".into(),
            region_from: "--region".into(),
            credentials_from: "environment".into(),
        }
    }

    fn empty() -> State {
        State {
            status: Status {
                account: "123456789012".into(),
                region: "eu-west-1".into(),
                functions: vec![
                    FunctionStatus::not_deployed(Function::Predict, "lambda-cnn-predict", "live"),
                    FunctionStatus::not_deployed(Function::Train, "lambda-cnn-train", "live"),
                ],
                api: None,
            },
            repository: false,
            role: false,
            bucket: BucketState::Free,
        }
    }

    fn deployed(state: &mut State, digest: &str) {
        for (i, s) in state.status.functions.iter_mut().enumerate() {
            s.deployed = true;
            s.live_version = Some("2".into());
            s.image_digest = Some(format!("{digest}{i}"));
            s.history = History::parse("lambda-cnn live=2,1 rolled-back=");
        }
        state.repository = true;
        state.role = true;
        state.bucket = BucketState::Ours;
    }

    fn images(digest: &str) -> Vec<LocalImage> {
        [Function::Predict, Function::Train]
            .iter()
            .enumerate()
            .map(|(i, f)| LocalImage {
                function: *f,
                digest: Ok(format!("{digest}{i}")),
            })
            .collect()
    }

    fn actions(p: &Plan) -> Vec<Action> {
        p.steps.iter().map(|s| s.action).collect()
    }

    #[test]
    fn a_release_into_an_empty_account_creates_and_an_unchanged_one_keeps() {
        let c = config();
        let release = Request::Release {
            images: images("sha256:aa"),
            canary: None,
            model: None,
        };
        assert_eq!(
            actions(&plan(&release, &c, &account(), &empty())),
            [Action::Stop],
            "nothing pushed yet"
        );
        let pushed = State {
            repository: true,
            ..empty()
        };
        let first = plan(&release, &c, &account(), &pushed);
        use Action::*;
        assert_eq!(
            actions(&first),
            [Create, Create, Create, Run, Create, Run],
            "{first}"
        );
        assert!(first
            .to_string()
            .contains("in account 123456789012 region eu-west-1"));
        let mut state = empty();
        deployed(&mut state, "sha256:aa");
        let again = plan(&release, &c, &account(), &state);
        assert_eq!(actions(&again), [Keep, Update, Keep, Keep], "{again}");
        let new = Request::Release {
            images: images("sha256:bb"),
            canary: Some(10.0),
            model: None,
        };
        let p = plan(&new, &c, &account(), &state).to_string();
        assert!(p.contains("send 10% of live's traffic"), "{p}");
        assert!(p.contains("live is version 2, image aa0"), "{p}");
    }

    #[test]
    fn a_missing_image_stops_before_anything_is_created() {
        let mut imgs = images("sha256:aa");
        imgs[1].digest = Err("no layout".into());
        for r in [
            Request::Push {
                images: imgs.clone(),
                registry: None,
            },
            Request::Release {
                images: imgs.clone(),
                canary: None,
                model: None,
            },
        ] {
            let p = plan(&r, &config(), &account(), &empty());
            assert_eq!(actions(&p), [Action::Stop], "{p}");
            assert!(p.stops());
        }
    }

    #[test]
    fn api_plans_honour_their_flags_and_need_a_release() {
        let c = config();
        let r = Request::Api {
            rest: true,
            auth: Auth::Jwt,
        };
        assert_eq!(actions(&plan(&r, &c, &account(), &empty())), [Action::Stop]);
        let mut state = empty();
        deployed(&mut state, "sha256:aa");
        let p = plan(&r, &c, &account(), &state);
        assert_eq!(actions(&p), [Action::Create]);
        assert!(p.steps[0].what.starts_with("REST API"), "{p}");
        assert!(p.steps[0].what.ends_with("auth jwt"), "{p}");
    }

    #[test]
    fn rollback_names_the_version_it_goes_to() {
        let c = config();
        let mut state = empty();
        deployed(&mut state, "sha256:aa");
        let to = |to| Request::Rollback {
            functions: vec![Function::Predict],
            to,
        };
        let p = plan(&to(Some(3)), &c, &account(), &state).to_string();
        assert!(p.contains("version 2 → version 3"), "{p}");
        let p = plan(&to(None), &c, &account(), &state).to_string();
        assert!(p.contains("version 2 → version 1"), "{p}");
        state.status.functions[0].canary = Some(Canary {
            version: "3".into(),
            percent: 10.0,
        });
        let p = plan(&to(None), &c, &account(), &state).to_string();
        assert!(p.contains("drop the canary (version 3)"), "{p}");
    }

    #[test]
    fn destroy_lists_only_what_exists_and_says_what_all_would_add() {
        let c = config();
        let p = plan(&Request::Destroy { all: true }, &c, &account(), &empty());
        assert!(p.steps.is_empty());
        assert!(p.to_string().ends_with("nothing"));
        let mut state = empty();
        deployed(&mut state, "sha256:aa");
        let p = plan(&Request::Destroy { all: false }, &c, &account(), &state);
        assert_eq!(
            actions(&p),
            [Action::Delete, Action::Delete, Action::Delete, Action::Keep]
        );
        assert!(p.steps[3].what.contains("--all deletes them too"));
    }

    #[test]
    fn all_without_the_api_plans_no_api() {
        let r = Request::All {
            arch: Arch::X86_64,
            no_api: true,
            images_dir: ".local/images".into(),
        };
        let p = plan(&r, &config(), &account(), &empty());
        assert!(!p.to_string().contains("API"), "{p}");
        assert!(!p.stops(), "{p}");
    }

    fn tune_request(apply: bool) -> Request {
        Request::Tune {
            function: Function::Predict,
            sizes: vec![512, 1024],
            invocations: 10,
            strategy: crate::judging::Strategy::Cost,
            apply,
        }
    }

    #[test]
    fn tune_and_invoke_stop_where_nothing_is_released() {
        let c = config();
        for r in [
            tune_request(false),
            Request::Invoke {
                function: Function::Predict,
            },
        ] {
            let p = plan(&r, &c, &account(), &empty());
            assert_eq!(actions(&p), [Action::Stop], "{p}");
            assert!(
                p.to_string().contains("deploy release --function predict"),
                "{p}"
            );
        }
    }

    #[test]
    fn tune_plans_each_size_then_puts_latest_back() {
        let c = config();
        let mut state = empty();
        deployed(&mut state, "sha256:aa");
        let p = plan(&tune_request(false), &c, &account(), &state);
        use Action::*;
        assert_eq!(
            actions(&p),
            [Create, Run, Delete, Create, Run, Delete, Update, Run],
            "{p}"
        );
        let text = p.to_string();
        for expected in [
            "what live runs (version 2) at 512 MB",
            "alias tune-1024",
            "$LATEST back",
            "by cost",
        ] {
            assert!(text.contains(expected), "{expected}: {p}");
        }
        let applied = plan(&tune_request(true), &c, &account(), &state);
        assert_eq!(actions(&applied).last(), Some(&Run), "{applied}");
        assert_eq!(applied.steps.len(), p.steps.len() + 1);
        assert!(!applied.stops());
    }

    #[test]
    fn tune_without_the_alias_measures_latest_and_only_apply_stops() {
        // A function whose first release failed its smoke test: it exists, with no alias.
        let c = config();
        let mut state = empty();
        state.status.functions[0].deployed = true;
        let p = plan(&tune_request(false), &c, &account(), &state);
        assert!(!p.stops(), "{p}");
        assert!(
            p.to_string().contains("$LATEST (there is no live alias)"),
            "{p}"
        );
        let applied = plan(&tune_request(true), &c, &account(), &state);
        assert_eq!(actions(&applied).last(), Some(&Action::Stop), "{applied}");
    }

    #[test]
    fn read_only_commands_only_read() {
        let since = std::time::Duration::from_secs(3600);
        let both = vec![Function::Predict, Function::Train];
        for r in [
            Request::Monitor {
                functions: both.clone(),
                since,
            },
            Request::Logs {
                functions: both,
                since,
            },
            Request::Status,
            Request::Doctor,
            Request::Policy,
        ] {
            let p = plan(&r, &config(), &account(), &empty());
            assert!(!p.steps.is_empty(), "{p}");
            assert!(p.steps.iter().all(|s| s.action == Action::Read), "{p}");
        }
    }
}
