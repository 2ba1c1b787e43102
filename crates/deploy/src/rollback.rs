//! `deploy rollback` for one function: during a canary, drop the canary (the version that was
//! live stays); otherwise move `live` back to the last version that passed its smoke test and
//! went live before the current one ([`History`]), after smoke-testing it again. The version
//! left is remembered, so that re-running an unchanged release does not undo the rollback.

#![warn(missing_docs)]

use super::aws::Clients;
use super::aws::{Account, AwsError};
use super::config::DeployConfig;
use super::history::History;
use super::image::Function;
use super::lambda;
use super::release::smoke_test;

/// Why a rollback did not happen.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum RollbackError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Model(#[from] super::release::ReleaseError),
    #[error("{function} has no {alias} alias: nothing to roll back (release it first)")]
    NoAlias { function: String, alias: String },
    #[error("{function}: no version went live before version {current} in the release history this deploy keeps (on the {alias} alias): give one with --to VERSION")]
    NoEarlier {
        function: String,
        alias: String,
        current: String,
    },
    #[error("{function}: version {version} failed its smoke test ({reason}); {alias} stays on version {current}")]
    SmokeFailed {
        function: String,
        alias: String,
        version: String,
        current: String,
        reason: String,
    },
}

/// What a rollback did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RollbackOutcome {
    /// A canary was removed; the version that had the rest of the traffic keeps all of it.
    CanaryDropped {
        /// The function.
        function: String,
        /// The alias.
        alias: String,
        /// The version that keeps the traffic.
        live: String,
        /// The canary version dropped.
        canary: String,
    },
    /// The alias moved back.
    Moved {
        /// The function.
        function: String,
        /// The alias.
        alias: String,
        /// The version it pointed at.
        from: String,
        /// The version it points at now.
        to: String,
        /// What that version's smoke test saw.
        smoke: String,
    },
}

impl std::fmt::Display for RollbackOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RollbackOutcome::CanaryDropped {
                function,
                alias,
                live,
                canary,
            } => write!(
                f,
                "{function}: dropped the canary of version {canary}; {alias} stays on version {live}"
            ),
            RollbackOutcome::Moved {
                function,
                alias,
                from,
                to,
                smoke,
            } => write!(
                f,
                "{function}: {alias} → version {to} (was {from}; smoke test: {smoke})"
            ),
        }
    }
}

/// Rolls `f` back: drops a canary, else moves the alias to `to` (or the last good version
/// before the current one) once that version passes its smoke test.
pub async fn rollback(
    clients: &Clients,
    config: &DeployConfig,
    account: &Account,
    f: Function,
    to: Option<&str>,
    say: &(dyn Fn(String) + Sync),
) -> Result<RollbackOutcome, RollbackError> {
    let name = config.function(f).name.clone();
    let alias = config.release.alias.clone();
    let state = lambda::read_alias(&clients.lambda, &name, &alias)
        .await?
        .ok_or_else(|| RollbackError::NoAlias {
            function: name.clone(),
            alias: alias.clone(),
        })?;
    let mut history = History::parse(&state.description);
    let current = state.version.clone();
    if let (Some((canary, _)), None) = (&state.canary, to) {
        history.canary_dropped(canary);
        let kept = history.render();
        lambda::point_alias(&clients.lambda, &name, &alias, &current, None, Some(&kept)).await?;
        return Ok(RollbackOutcome::CanaryDropped {
            function: name,
            alias,
            live: current,
            canary: canary.clone(),
        });
    }
    let target = match to {
        Some(v) => v.to_owned(),
        None => history
            .rollback_target(&current)
            .map(str::to_owned)
            .ok_or_else(|| RollbackError::NoEarlier {
                function: name.clone(),
                alias: alias.clone(),
                current: current.clone(),
            })?,
    };
    let case = super::release::smoke_case(clients, f, &name, &target, &account.id).await?;
    let smoke = smoke_test(clients, f, &case, &name, &target, &account.id, say)
        .await?
        .map_err(|reason| RollbackError::SmokeFailed {
            function: name.clone(),
            alias: alias.clone(),
            version: target.clone(),
            current: current.clone(),
            reason,
        })?;
    history.rolled_back_to(&current, &target);
    let h = history.render();
    lambda::point_alias(&clients.lambda, &name, &alias, &target, None, Some(&h)).await?;
    Ok(RollbackOutcome::Moved {
        function: name,
        alias,
        from: current,
        to: target,
        smoke,
    })
}
