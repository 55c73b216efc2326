//! The modules connected through the gateway right now, so that the hub can close a module's
//! connection when its token is rotated or it is removed from the registry.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use mc_protocol::ModuleId;
use tokio_util::sync::CancellationToken;

/// Live gateway connections by module; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LiveConnections {
    inner: Arc<Mutex<HashMap<ModuleId, (u64, CancellationToken)>>>,
}

impl LiveConnections {
    /// Registers connection `session` of `module`; the token is cancelled to close it.
    pub fn insert(&self, module: &ModuleId, session: u64) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut map) = self.inner.lock() {
            map.insert(module.clone(), (session, token.clone()));
        }
        token
    }

    /// Forgets connection `session` (only if it is still the registered one).
    pub fn remove(&self, module: &ModuleId, session: u64) {
        if let Ok(mut map) = self.inner.lock()
            && map.get(module).is_some_and(|(s, _)| *s == session)
        {
            map.remove(module);
        }
    }

    /// Closes the module's connection, if it has one; true if it had.
    pub fn close(&self, module: &ModuleId) -> bool {
        let entry = self.inner.lock().ok().and_then(|mut m| m.remove(module));
        match entry {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}
