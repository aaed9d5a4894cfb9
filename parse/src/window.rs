//! The history window's arithmetic, apart from any tokenizer: which
//! messages of a conversation go to the model. Budget = context length −
//! `max_tokens` − margin. The oldest non-system messages go first; the
//! system prompts and the newest message always stay. A second, softer limit
//! (the prompt the model reads in time) drops more when it can, but never
//! refuses a conversation that fits the window. The server counts with the
//! model's tokenizer and chat template (`kinko::history`); the fuzz target
//! counts with a stand-in.

use std::future::Future;

/// The limits a conversation must fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The model's context length.
    pub context_length: usize,
    /// Tokens reserved for the answer.
    pub max_tokens: usize,
    /// Tokens kept free as a safety margin.
    pub margin: usize,
    /// Keep at most this many non-system messages, newest first.
    pub max_messages: Option<usize>,
    /// Drop earlier messages until the prompt is at most this long, if it
    /// can be (the prompt the model reads in time).
    pub soft_max_tokens: Option<usize>,
}

/// What goes to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Positions of the messages kept, in order.
    pub kept: Vec<usize>,
    /// How many earlier messages were left out.
    pub dropped: usize,
    /// Prompt tokens of the kept messages.
    pub prompt_tokens: usize,
    /// Whether the soft limit (time), not the window, decided what went.
    pub limited_by_time: bool,
}

/// Why a conversation cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError<E> {
    /// Even the newest message alone (with the system prompts) is too long.
    Overflow {
        /// Tokens of the smallest prompt possible.
        needed: usize,
        /// Tokens available for the prompt.
        budget: usize,
    },
    /// Counting failed.
    Count(E),
}

impl Window {
    /// Tokens available for the prompt.
    pub fn budget(&self) -> usize {
        self.context_length
            .saturating_sub(self.max_tokens)
            .saturating_sub(self.margin)
    }

    /// Cut a conversation to fit. `is_system[i]` says whether message `i`
    /// is a system prompt; `count` gives the prompt tokens of the messages
    /// at the positions it is given. Tokenizer calls stay logarithmic in the
    /// conversation's length (a binary search).
    pub async fn plan<E, F, Fut>(
        &self,
        is_system: &[bool],
        mut count: F,
    ) -> Result<Plan, PlanError<E>>
    where
        F: FnMut(Vec<usize>) -> Fut,
        Fut: Future<Output = Result<usize, E>>,
    {
        let hard = self.budget();
        let budget = self.soft_max_tokens.map_or(hard, |soft| soft.min(hard));
        // Positions of the messages that may be dropped: every non-system
        // message but the newest one.
        let last = is_system.len().saturating_sub(1);
        let droppable: Vec<usize> = (0..last).filter(|&i| !is_system[i]).collect();
        // Dropping `skip` means dropping the droppable messages up to and
        // including droppable[skip - 1] (they are in order).
        let keep_from = |skip: usize| -> Vec<usize> {
            let cut = skip.checked_sub(1).map(|k| droppable[k]);
            (0..is_system.len())
                .filter(|&i| !(cut.is_some_and(|c| i <= c) && i < last && !is_system[i]))
                .collect()
        };
        let mut count = |kept: Vec<usize>| {
            let counted = count(kept);
            async move { counted.await.map_err(PlanError::Count) }
        };
        // The message-count cap first: it needs no tokenizer.
        let non_system = droppable.len() + 1;
        let mut skip = match self.max_messages {
            Some(cap) if non_system > cap.max(1) => non_system - cap.max(1),
            _ => 0,
        };
        // Then the token budget: drop oldest until it fits.
        let tokens_now = count(keep_from(skip)).await?;
        if tokens_now <= budget {
            return Ok(Plan {
                kept: keep_from(skip),
                dropped: skip,
                prompt_tokens: tokens_now,
                limited_by_time: false,
            });
        }
        let by_time = tokens_now <= hard;
        let all_dropped = droppable.len();
        let min_tokens = count(keep_from(all_dropped)).await?;
        if min_tokens > hard {
            return Err(PlanError::Overflow {
                needed: min_tokens,
                budget: hard,
            });
        }
        if min_tokens > budget {
            // Over the soft limit even alone: send the smallest prompt.
            return Ok(Plan {
                kept: keep_from(all_dropped),
                dropped: all_dropped,
                prompt_tokens: min_tokens,
                limited_by_time: true,
            });
        }
        // Invariant: keep_from(lo) does not fit, keep_from(hi) fits.
        let (mut lo, mut hi, mut hi_tokens) = (skip, all_dropped, min_tokens);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let t = count(keep_from(mid)).await?;
            if t <= budget {
                hi = mid;
                hi_tokens = t;
            } else {
                lo = mid;
            }
        }
        skip = hi;
        // Whether the window alone would have kept more.
        let limited_by_time =
            budget < hard && (by_time || count(keep_from(skip - 1)).await? <= hard);
        Ok(Plan {
            kept: keep_from(skip),
            dropped: skip,
            prompt_tokens: hi_tokens,
            limited_by_time,
        })
    }
}
