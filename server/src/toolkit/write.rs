//! The one write path of the generic handlers: commands built in one place, and the optimistic
//! retry loop (decide on the current state, submit a command that expects exactly that state,
//! decide again if another writer got there first).

use std::sync::Arc;

use serde_json::Value;

use tidemark_engine::{Command, Context, EngineError, Event, Expect, Op};
use tidemark_protocol::ApiError;

use crate::error::{from_engine, RETRY_AFTER_SECONDS};
use crate::request::ApiRequest;
use crate::state::AppState;
use crate::toolkit::Address;

/// How often a write re-decides after losing a race before answering 409.
pub const MAX_ATTEMPTS: usize = 16;

/// The outcome of one attempt: done, or lost to a concurrent writer (decide again).
pub enum Attempt<T> {
    Done(T),
    Lost,
}

/// The answer when every attempt was lost: 409 with Retry-After.
pub fn conflict() -> ApiError {
    ApiError::conflict(RETRY_AFTER_SECONDS)
}

/// Evaluates `$attempt` (a `Result<Attempt<T>, ApiError>`, typically `async { … }.await`) until
/// it is done, at most [`MAX_ATTEMPTS`] times; then 409. A macro rather than a function taking
/// an async closure: the attempt borrows the handler's locals, and such closures' futures are
/// not provably `Send` for every lifetime.
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut result = Err($crate::toolkit::write::conflict());
        for _ in 0..$crate::toolkit::write::MAX_ATTEMPTS {
            match $attempt {
                Ok($crate::toolkit::write::Attempt::Lost) => continue,
                Ok($crate::toolkit::write::Attempt::Done(value)) => {
                    result = Ok(value);
                    break;
                }
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        result
    }};
}
pub(crate) use retrying;

/// The command that writes `op` on object `id` at `addr`, made by the request's caller.
pub fn command(
    req: &ApiRequest,
    addr: &Address,
    id: &str,
    op: Op,
    expect: Expect,
    last_modified: Option<u64>,
) -> Command {
    command_as(crate::state::context(req), addr, id, op, expect, last_modified)
}

/// [`command`] on behalf of `context`. A principal source's members are read from its declared
/// field.
pub fn command_as(
    context: Context,
    addr: &Address,
    id: &str,
    op: Op,
    expect: Expect,
    last_modified: Option<u64>,
) -> Command {
    let members = match (&addr.kind.members_field, &op) {
        (Some(field), Op::Put { data, .. }) => Some(
            data.get(field)
                .and_then(Value::as_array)
                .map(|members| members.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
        ),
        _ => None,
    };
    Command {
        resource: addr.kind.name.clone(),
        plural: addr.kind.plural.clone(),
        parent: addr.parent_uri().to_owned(),
        id: id.to_owned(),
        members,
        op,
        expect,
        last_modified,
        context,
    }
}

/// Commits `commands` atomically; `Lost` when an expectation no longer held.
pub async fn submit(state: &AppState, commands: Vec<Command>) -> Result<Attempt<Vec<Arc<Event>>>, ApiError> {
    settle(state, state.engine.submit(commands).await)
}

fn settle(
    state: &AppState,
    outcome: Result<Vec<Arc<Event>>, EngineError>,
) -> Result<Attempt<Vec<Arc<Event>>>, ApiError> {
    match outcome {
        Ok(events) => {
            crate::summary::written(&events);
            Ok(Attempt::Done(events))
        }
        Err(EngineError::PreconditionFailed { .. }) => Ok(Attempt::Lost),
        // The parent went away since the handler checked it: named as the registry names it.
        Err(EngineError::UnknownParent(uri)) => {
            match state.registry.chain_of(&uri).and_then(|chain| chain.last().cloned()) {
                Some(parent) => Err(ApiError::parent_not_found(&parent.kind.name, &parent.id)),
                None => Err(from_engine(EngineError::UnknownParent(uri))),
            }
        }
        Err(err) => Err(from_engine(err)),
    }
}

/// [`submit_one`] for a command creating an object under an id generated for it, which nobody
/// has seen: the engine checks its absence here rather than in the writer.
pub async fn submit_generated(state: &AppState, command: Command) -> Result<Attempt<Arc<Event>>, ApiError> {
    let (parent, plural, id) = (command.parent.clone(), command.plural.clone(), command.id.clone());
    let fresh = [(parent.as_str(), plural.as_str(), id.as_str())];
    one(settle(state, state.engine.submit_fresh(vec![command], &fresh).await)?)
}

/// [`submit`] for one command, answering its event.
pub async fn submit_one(state: &AppState, command: Command) -> Result<Attempt<Arc<Event>>, ApiError> {
    one(submit(state, vec![command]).await?)
}

fn one(attempt: Attempt<Vec<Arc<Event>>>) -> Result<Attempt<Arc<Event>>, ApiError> {
    Ok(match attempt {
        Attempt::Done(mut events) => match events.pop() {
            Some(event) => Attempt::Done(event),
            None => return Err(from_engine(EngineError::InvalidCommand("the writer returned no event".into()))),
        },
        Attempt::Lost => Attempt::Lost,
    })
}
