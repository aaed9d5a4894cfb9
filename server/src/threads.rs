//! The engine's compute threads.
//!
//! mistral.rs computes on rayon's global pool, and drives it from its own
//! engine thread, which sits outside every pool: each of the 200-odd parallel
//! loops of one decode step (and about fifty times as many for a prompt) is
//! handed to the pool while the engine thread sleeps until the loop ends. On
//! a small machine the hand-offs, not the arithmetic, took most of the time
//! (`sched_yield`, futex waits and wake-ups in `perf`).
//!
//! kinko does two things about it, through rayon's public API:
//! - [`configure`] builds the global pool before any model loads: one thread
//!   per core this process may use, each pinned to its own core.
//! - [`join_compute_pool`], called on the engine thread itself, makes that
//!   thread worker 0 of a pool of the same size, so the model's loops run
//!   there with the engine thread taking part, and most hand-offs go.
//!
//! The before/after figures are in the README's benchmark section.

use std::cell::OnceCell;
use std::sync::OnceLock;

/// The settings [`configure`] chose, for [`join_compute_pool`].
static SETTINGS: OnceLock<(usize, Option<Vec<core_affinity::CoreId>>)> = OnceLock::new();

thread_local! {
    /// The pool this thread was made a worker of by [`join_compute_pool`].
    static JOINED: OnceCell<rayon::ThreadPool> = const { OnceCell::new() };
}

/// Builds rayon's global pool: `threads` threads (default: one per core this
/// process may run on), pinned one per core unless `pin` is false or there
/// are more threads than cores. Call once, at start-up, before any model
/// loads.
pub fn configure(threads: Option<usize>, pin: bool) -> anyhow::Result<()> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let threads = threads.unwrap_or_else(|| match cores.len() {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    });
    anyhow::ensure!(threads > 0, "--threads must be at least 1");
    let pinned = pin && !cores.is_empty() && threads <= cores.len();
    let _ = SETTINGS.set((threads, pinned.then(|| cores.clone())));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("kinko-compute-{i}"))
        .start_handler(move |i| {
            // Best effort: a refused pin leaves the thread floating.
            if let Some(core) = cores.get(i).filter(|_| pinned) {
                core_affinity::set_for_current(*core);
            }
        })
        .build_global()
        .map_err(|e| anyhow::anyhow!("could not start the compute threads: {e}"))?;
    tracing::debug!(threads, pinned, "compute threads");
    Ok(())
}

/// Makes the calling thread worker 0 of a new compute pool (the other
/// workers are new threads), unless it already is a rayon worker or there is
/// only one compute thread. Idempotent and cheap after the first call.
///
/// mistral.rs runs the model on its engine thread, outside every rayon pool:
/// each of the 200-odd parallel loops of one decode step (and ~50 times as many
/// in a prompt) is handed to the pool while the engine thread sleeps, and
/// woken again when it ends. Once the engine thread is a worker itself, those
/// loops run in its own pool with the engine thread taking part, and the
/// hand-offs go. kinko calls this from the engine thread through a logits
/// processor (see `engine::mistral`).
pub fn join_compute_pool() {
    if rayon::current_thread_index().is_some() {
        return;
    }
    let Some((threads, cores)) = SETTINGS.get().cloned() else {
        return;
    };
    if threads < 2 {
        // A pool of one would be the engine thread alone: jobs it spawns
        // and awaits would never run.
        return;
    }
    JOINED.with(|joined| {
        if joined.get().is_some() {
            return;
        }
        if let Some(core) = cores.as_ref().and_then(|c| c.first()) {
            core_affinity::set_for_current(*core);
        }
        let pin = cores.clone();
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .use_current_thread()
            .thread_name(|i| format!("kinko-engine-{i}"))
            .start_handler(move |i| {
                if let Some(core) = pin.as_ref().and_then(|c| c.get(i)) {
                    core_affinity::set_for_current(*core);
                }
            })
            .build();
        match built {
            Ok(pool) => {
                let _ = joined.set(pool);
            }
            Err(e) => tracing::warn!("the engine thread stays outside the compute pool: {e}"),
        }
    });
}
