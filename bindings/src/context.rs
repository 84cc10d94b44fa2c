//! How native functions reach the run's [`Session`]: the engine carries it as its default tag,
//! so every registered function sees the same device, seed, sandbox and run directory.

use std::sync::Arc;

use medbridge_runtime::run::Session;
use rhai::{Dynamic, NativeCallContext};

use crate::error::{script_msg, ScriptResult};

/// The session, stored in the engine's tag.
#[derive(Clone)]
pub struct SessionHandle(pub Arc<Session>);

impl SessionHandle {
    pub fn into_tag(self) -> Dynamic {
        Dynamic::from(self)
    }
}

/// The session of the engine running this call.
pub fn session(ctx: &NativeCallContext) -> ScriptResult<Arc<Session>> {
    ctx.tag()
        .and_then(|tag| tag.read_lock::<SessionHandle>().map(|h| h.0.clone()))
        .ok_or_else(|| script_msg("internal: this engine has no medbridge session"))
}

/// The seed option if given, else the next seed of the session's stream.
pub fn seed_or_next(ctx: &NativeCallContext, seed: Option<i64>) -> ScriptResult<u64> {
    match seed {
        Some(s) if s < 0 => Err(script_msg(format!("seed must be non-negative, got {s}"))),
        Some(s) => Ok(s as u64),
        None => Ok(session(ctx)?.next_seed()),
    }
}
