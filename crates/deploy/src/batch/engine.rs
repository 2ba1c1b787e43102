//! The Step Functions side of a batch run: the state machine made or brought up to date by
//! name (find before create), a run started, and its progress read from the map run's counts
//! until it ends.

#![warn(missing_docs)]

use std::time::Duration;

use aws_sdk_sfn::types::{ExecutionStatus, StateMachineType};
use serde::Serialize;

use super::definition::{self, Form};
use super::{grants, BatchSpec};
use crate::aws::{aws_err, Absent, AwsError};
use crate::iam;

/// What ensuring the state machine did.
#[derive(Debug, Clone, Serialize)]
pub struct Ensured {
    /// The state machine's ARN.
    pub state_machine_arn: String,
    /// Whether it was created now (else updated in place).
    pub created: bool,
    /// Whether its role was created now.
    pub role_created: bool,
}

/// How long a new role may take to be assumable by Step Functions (IAM is eventually
/// consistent: a role created a moment ago is refused by CreateStateMachine for a while).
const ROLE_PROPAGATION: Duration = Duration::from_secs(60);

/// Makes `spec`'s state machine exist with its definition and role (created, or updated in
/// place: a second identical run makes nothing new), and gives predict's execution role
/// `execution_role` the run's grants.
pub async fn ensure(
    sfn: &aws_sdk_sfn::Client,
    iam_client: &aws_sdk_iam::Client,
    spec: &BatchSpec,
    execution_role: &str,
) -> Result<Ensured, AwsError> {
    let definition = definition::definition(spec, spec.form);
    if spec.form == Form::Aws {
        let broken = definition::check_aws_rules(&definition);
        if !broken.is_empty() {
            return Err(AwsError::new(
                "writing the state machine",
                format!("the definition breaks AWS's rules: {}", broken.join("; ")),
            ));
        }
    }
    let role = iam::Role {
        name: &spec.role,
        description: "Role of the lambda-cnn batch state machine (created by deploy batch)",
        policy_name: grants::POLICY_NAME,
    };
    let (role_arn, role_created) = iam::ensure(
        iam_client,
        &role,
        &grants::trust_policy(spec).to_string(),
        &grants::state_machine_policy(spec).to_string(),
    )
    .await?;
    iam::put_policy(
        iam_client,
        execution_role,
        &grants::function_policy_name(&spec.state_machine),
        &grants::function_policy(spec).to_string(),
    )
    .await?;
    let arn = spec.state_machine_arn();
    let text = definition.to_string();
    let found = sfn
        .describe_state_machine()
        .state_machine_arn(&arn)
        .send()
        .await
        .map_err(aws_err(format!(
            "looking up state machine {}",
            spec.state_machine
        )))
        .absent_if("StateMachineDoesNotExist")?;
    if found.is_some() {
        sfn.update_state_machine()
            .state_machine_arn(&arn)
            .definition(&text)
            .role_arn(&role_arn)
            .send()
            .await
            .map_err(aws_err(format!(
                "updating state machine {}",
                spec.state_machine
            )))?;
        return Ok(Ensured {
            state_machine_arn: arn,
            created: false,
            role_created,
        });
    }
    let started = tokio::time::Instant::now();
    loop {
        let made = sfn
            .create_state_machine()
            .name(&spec.state_machine)
            .definition(&text)
            .role_arn(&role_arn)
            .r#type(StateMachineType::Standard)
            .send()
            .await
            .map_err(aws_err(format!(
                "creating state machine {}",
                spec.state_machine
            )));
        match made {
            Ok(out) => {
                return Ok(Ensured {
                    state_machine_arn: out.state_machine_arn().to_owned(),
                    created: true,
                    role_created,
                })
            }
            // "Neither the global service principal states.amazonaws.com, nor the regional
            // one is authorized to assume the provided role": a new role, not yet everywhere.
            Err(e)
                if role_created
                    && e.message.contains("assume")
                    && started.elapsed() < ROLE_PROPAGATION =>
            {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Starts a run of state machine `arn`; returns the execution's ARN.
pub async fn start(sfn: &aws_sdk_sfn::Client, arn: &str, name: &str) -> Result<String, AwsError> {
    let out = sfn
        .start_execution()
        .state_machine_arn(arn)
        .name(name)
        .input("{}")
        .send()
        .await
        .map_err(aws_err(format!("starting a run of {arn}")))?;
    Ok(out.execution_arn().to_owned())
}

/// Items of a map run by state (DescribeMapRun's `itemCounts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Items listed so far.
    pub total: i64,
    /// Not started.
    pub pending: i64,
    /// In a running child.
    pub running: i64,
    /// Done.
    pub succeeded: i64,
    /// In a failed child.
    pub failed: i64,
    /// In a child that timed out.
    pub timed_out: i64,
    /// In an aborted child.
    pub aborted: i64,
}

impl Counts {
    /// Items finished one way or another.
    pub fn finished(&self) -> i64 {
        self.succeeded + self.failed + self.timed_out + self.aborted
    }
}

/// Where a run is.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// The run's ARN.
    pub execution_arn: String,
    /// RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED.
    pub status: String,
    /// Items.
    pub items: Counts,
    /// Child executions (one per batch).
    pub children: Counts,
    /// The map run's ARN, once there is one.
    pub map_run_arn: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// When it started and stopped (ms since the epoch).
    pub start_ms: i64,
    /// Its stop, when it stopped.
    pub stop_ms: Option<i64>,
    /// Where the results go (from the state machine's definition).
    pub output: Option<String>,
    /// The definition's form (how the engine bills the children).
    pub form: Form,
}

impl Progress {
    /// Whether the run has ended.
    pub fn done(&self) -> bool {
        self.status != ExecutionStatus::Running.as_str()
    }
}

fn ms(t: &aws_sdk_sfn::primitives::DateTime) -> i64 {
    t.to_millis().unwrap_or_default()
}

/// Where run `execution_arn` is now.
pub async fn progress(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
) -> Result<Progress, AwsError> {
    let ex = sfn
        .describe_execution()
        .execution_arn(execution_arn)
        .send()
        .await
        .map_err(aws_err(format!("reading run {execution_arn}")))?;
    let runs = sfn
        .list_map_runs()
        .execution_arn(execution_arn)
        .send()
        .await
        .map_err(aws_err(format!("listing the map runs of {execution_arn}")))?;
    let map_run_arn = runs.map_runs().first().map(|r| r.map_run_arn().to_owned());
    let (mut items, mut children) = (Counts::default(), Counts::default());
    if let Some(m) = &map_run_arn {
        let d = sfn
            .describe_map_run()
            .map_run_arn(m)
            .send()
            .await
            .map_err(aws_err(format!("reading map run {m}")))?;
        // Two SDK types with the same fields: one conversion for both.
        macro_rules! counts {
            ($c:expr) => {
                Counts {
                    total: $c.total(),
                    pending: $c.pending(),
                    running: $c.running(),
                    succeeded: $c.succeeded(),
                    failed: $c.failed(),
                    timed_out: $c.timed_out(),
                    aborted: $c.aborted(),
                }
            };
        }
        if let Some(c) = d.item_counts() {
            items = counts!(c);
        }
        if let Some(c) = d.execution_counts() {
            children = counts!(c);
        }
    }
    let error = match (ex.error(), ex.cause()) {
        (None, None) => None,
        (e, c) => Some([e, c].into_iter().flatten().collect::<Vec<_>>().join(": ")),
    };
    let machine = sfn
        .describe_state_machine_for_execution()
        .execution_arn(execution_arn)
        .send()
        .await
        .map_err(aws_err(format!(
            "reading the state machine of {execution_arn}"
        )))?;
    let definition: serde_json::Value =
        serde_json::from_str(machine.definition()).unwrap_or_default();
    let output = definition::output_of(&definition);
    let form = definition::form_of(&definition);
    Ok(Progress {
        execution_arn: execution_arn.to_owned(),
        status: ex.status().as_str().to_owned(),
        items,
        children,
        map_run_arn,
        error: error.map(|e| crate::clip::clip_to(&e, crate::clip::MESSAGE_CHARS)),
        start_ms: ms(ex.start_date()),
        stop_ms: ex.stop_date().map(ms),
        output,
        form,
    })
}

/// Follows run `execution_arn` until it ends, calling `seen` with each reading (every
/// `every`); returns the last.
pub async fn follow(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
    every: Duration,
    mut seen: impl FnMut(&Progress),
) -> Result<Progress, AwsError> {
    loop {
        let p = progress(sfn, execution_arn).await?;
        seen(&p);
        if p.done() {
            return Ok(p);
        }
        tokio::time::sleep(every).await;
    }
}

/// Removes the state machine, its role and predict's grants; what is not there is skipped.
/// Returns what was removed.
pub async fn destroy(
    sfn: &aws_sdk_sfn::Client,
    iam_client: &aws_sdk_iam::Client,
    state_machine_arn: &str,
    role: &str,
    state_machine: &str,
    execution_role: &str,
) -> Result<Vec<String>, AwsError> {
    let mut removed = Vec::new();
    // Looked up first: DeleteStateMachine answers success for one that is not there, and a
    // second destroy must say it found nothing.
    let found = sfn
        .describe_state_machine()
        .state_machine_arn(state_machine_arn)
        .send()
        .await
        .map_err(aws_err(format!("looking up state machine {state_machine}")))
        .absent_if("StateMachineDoesNotExist")?;
    if found.is_some() {
        sfn.delete_state_machine()
            .state_machine_arn(state_machine_arn)
            .send()
            .await
            .map_err(aws_err(format!("deleting state machine {state_machine}")))?;
        removed.push(format!("state machine {state_machine}"));
    }
    if iam::delete_role_with(iam_client, role, grants::POLICY_NAME).await? {
        removed.push(format!("IAM role {role}"));
    }
    if iam::delete_policy(
        iam_client,
        execution_role,
        &grants::function_policy_name(state_machine),
    )
    .await?
    {
        removed.push(format!(
            "policy {} of {execution_role}",
            grants::function_policy_name(state_machine)
        ));
    }
    Ok(removed)
}
