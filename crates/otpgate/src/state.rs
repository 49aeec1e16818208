//! What every handler and worker shares.

use std::sync::Arc;

use crate::auth::{KeyCache, LastUsed};
use crate::config::Config;
use crate::delivery::Driver;
use crate::delivery::voice::Prompter;
use crate::metrics::Metrics;
use crate::throttle::{ListSlots, VerifyLimiter};
use crate::users::UserAuth;
use otp_domain::channel::Channel;
use otp_store::SharedStore;

/// What every handler and worker shares, behind one reference count.
///
/// axum clones the state for every request, several times (the router, each
/// middleware layer, the handler): one count to raise and drop each time,
/// rather than one per field. With a count per field, two worker threads
/// serving requests at once kept moving the same cache lines between cores
/// (BENCHMARKS.md, issue 15, thirteenth session).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`]; each is shared on its own too, with the
/// workers that need only it.
pub struct Shared {
    pub store: SharedStore,
    pub config: Arc<Config>,
    pub tz: chrono_tz::Tz,
    /// The delivery driver of each channel (a router when routes are configured).
    pub drivers: Arc<Vec<(Channel, Arc<dyn Driver>)>>,
    pub metrics: Arc<Metrics>,
    pub last_used: Arc<LastUsed>,
    /// Keys that verified before, for the send route (see `crate::auth`).
    pub key_cache: Arc<KeyCache>,
    /// Woken after each accepted send so delivery starts without waiting for a poll.
    pub new_jobs: Arc<NewJobs>,
    /// Renders voice prompts (calls, the `log` driver's WAVs, previews).
    pub voice: Arc<Prompter>,
    /// Users' passwords and tokens, and the admin token.
    pub users: Arc<UserAuth>,
    /// Verifications per account and per number (`[verify]` limits).
    pub verify_limits: Arc<VerifyLimiter>,
    /// List queries running at once per account (`api.max_concurrent_lists`).
    pub list_slots: Arc<ListSlots>,
    /// Routes and limits that change without a restart (see `crate::control`).
    pub runtime: Arc<crate::control::Runtime>,
    /// The SMS-pumping guard (see `crate::guard`).
    pub guard: Arc<crate::guard::Guard>,
}

impl AppState {
    /// `[limits]` now in force: a reload replaces what `config` started with.
    pub fn limits(&self) -> Arc<crate::config::LimitsConfig> {
        self.runtime.limits()
    }
}

pub use crate::delivery::NewJobs;
