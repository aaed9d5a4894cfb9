//! The engine's compute threads.
//!
//! mistral.rs computes on rayon's global pool, driven from its own engine
//! thread, and runs CPU attention on a second rayon pool. By default each
//! pool starts one thread per core, so on a small machine more threads are
//! busy than there are cores and much of the time goes to the scheduler
//! (`sched_yield`, futex wake-ups). kinko therefore builds the global pool
//! itself before any model loads: one thread per core it may use, each pinned
//! to its own core, and gives the attention pool a single thread. On the
//! 2-core reference machine this cut the time to first token by about a
//! fifth and raised decode speed by about 8% (figures in the README).
//! `RAYON_NUM_THREADS`, when set, still decides the attention pool's size.

use std::fmt;

/// What [`configure`] set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeThreads {
    /// Threads in the global compute pool.
    pub threads: usize,
    /// Whether each is pinned to one core.
    pub pinned: bool,
}

impl fmt::Display for ComputeThreads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} compute thread{}{}",
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            if self.pinned { ", pinned" } else { "" }
        )
    }
}

/// Builds rayon's global pool: `threads` threads (default: one per core this
/// process may run on), pinned one per core unless `pin` is false or there
/// are more threads than cores. Call once, at start-up, before any model
/// loads.
pub fn configure(threads: Option<usize>, pin: bool) -> anyhow::Result<ComputeThreads> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.unwrap_or(if cores.is_empty() {
        available
    } else {
        cores.len()
    });
    anyhow::ensure!(threads > 0, "--threads must be at least 1");
    let pinned = pin && !cores.is_empty() && threads <= cores.len();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("kinko-compute-{i}"))
        .start_handler(move |i| {
            if pinned {
                // Best effort: a refused pin leaves the thread floating.
                core_affinity::set_for_current(cores[i]);
            }
        })
        .build_global()
        .map_err(|e| anyhow::anyhow!("could not start the compute threads: {e}"))?;
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Read when mistral.rs builds its attention pool (on first use).
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    Ok(ComputeThreads { threads, pinned })
}
