//! Load limits: a bounded number of generations per model, and a bounded
//! queue in front of them. Past the queue a request gets 503 at once rather
//! than an unbounded wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Admission control for every model.
#[derive(Debug)]
pub struct Admission {
    running_per_model: usize,
    queue_per_model: usize,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

#[derive(Debug)]
struct Gate {
    slots: Arc<Semaphore>,
    running: usize,
    queue: usize,
    waiting: AtomicUsize,
}

/// The queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// Generations running now.
    pub running: usize,
    /// Requests waiting now.
    pub waiting: usize,
}

/// A slot to generate in; free it by dropping it.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    /// `running` generations per model at once, `queue` more waiting.
    pub fn new(running: usize, queue: usize) -> Self {
        Self {
            running_per_model: running.max(1),
            queue_per_model: queue,
            gates: Mutex::new(HashMap::new()),
        }
    }

    fn gate(&self, key: &str, running: usize, queue: usize) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Gate {
                    slots: Arc::new(Semaphore::new(running.max(1))),
                    running: running.max(1),
                    queue,
                    waiting: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    /// A slot for `model`: at once if one is free, after a wait if the queue
    /// has room, or `Busy` at once. Dropping the future leaves the queue.
    pub async fn admit(&self, model: &str) -> Result<Slot, Busy> {
        self.admit_to(model, self.running_per_model, self.queue_per_model)
            .await
    }

    /// A slot behind the gate `key`, which lets `running` through at once
    /// with `queue` more waiting (the limits of the first call hold).
    pub async fn admit_to(&self, key: &str, running: usize, queue: usize) -> Result<Slot, Busy> {
        let gate = self.gate(key, running, queue);
        if let Ok(permit) = gate.slots.clone().try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        let busy = || Busy {
            running: gate.running - gate.slots.available_permits(),
            waiting: gate.waiting.load(Ordering::SeqCst),
        };
        // Take a place in the queue, if there is one.
        let mut current = gate.waiting.load(Ordering::SeqCst);
        loop {
            if current >= gate.queue {
                return Err(busy());
            }
            match gate.waiting.compare_exchange(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        let _waiting = Waiting(&gate.waiting);
        match gate.slots.clone().acquire_owned().await {
            Ok(permit) => Ok(Slot { _permit: permit }),
            Err(_) => Err(busy()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_runs_one_waits_the_next_is_busy() {
        let a = Arc::new(Admission::new(1, 1));
        let first = a.admit("m").await.unwrap();
        let a2 = a.clone();
        let queued = tokio::spawn(async move { a2.admit("m").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            a.admit("m").await.unwrap_err(),
            Busy {
                running: 1,
                waiting: 1
            }
        );
        // Another model has its own slots.
        let _other = a.admit("other").await.unwrap();
        drop(first);
        queued.await.unwrap().unwrap();
        let _again = a.admit("m").await.unwrap();
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_queue() {
        let a = Admission::new(1, 1);
        let _first = a.admit("m").await.unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(10), a.admit("m")).await;
        assert!(gave_up.is_err());
        // The queue place was freed: the next request may wait again.
        let again = tokio::time::timeout(Duration::from_millis(10), a.admit("m")).await;
        assert!(again.is_err(), "it waited (was not refused as busy)");
    }
}
