//! The history window: which messages of a conversation go to the model.
//! Budget = context length − `max_tokens` − margin, counted in the model's
//! own tokens with its chat template. The oldest non-system messages go
//! first; the system prompt and the newest message always stay. What was
//! dropped is reported, never silent.
//!
//! A second, softer limit keeps the prompt to what the model reads within
//! the first-token timeout on this machine: earlier messages go to meet it,
//! but it never refuses a conversation that fits the window (the system
//! prompt and the newest message are sent however long they take).

use crate::engine::{ChatEngine, EngineError};
use app::api::{ChatMessage, Role};

/// The limits a conversation must fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryWindow {
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

/// A conversation cut to fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trimmed {
    /// What goes to the model.
    pub messages: Vec<ChatMessage>,
    /// How many earlier messages were left out.
    pub dropped: usize,
    /// Prompt tokens of `messages`.
    pub prompt_tokens: usize,
    /// Whether the soft limit (time), not the window, decided what went.
    pub limited_by_time: bool,
}

/// Why a conversation cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum TrimError {
    /// Even the newest message alone (with the system prompt) is too long.
    #[error("the newest message needs {needed} prompt tokens but only {budget} fit (context {context_length} − max_tokens {max_tokens} − margin {margin})")]
    Overflow {
        /// Tokens of the smallest prompt possible.
        needed: usize,
        /// Tokens available for the prompt.
        budget: usize,
        /// The model's context length.
        context_length: usize,
        /// Tokens reserved for the answer.
        max_tokens: usize,
        /// Safety margin.
        margin: usize,
    },
    /// Counting failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl HistoryWindow {
    /// Tokens available for the prompt.
    pub fn budget(&self) -> usize {
        self.context_length
            .saturating_sub(self.max_tokens)
            .saturating_sub(self.margin)
    }

    /// Cut `messages` to fit, counting with `engine`'s tokenizer for `model`.
    pub async fn fit(
        &self,
        engine: &dyn ChatEngine,
        model: &str,
        messages: &[ChatMessage],
    ) -> Result<Trimmed, TrimError> {
        let hard = self.budget();
        let budget = self.soft_max_tokens.map_or(hard, |soft| soft.min(hard));
        // Positions of the messages that may be dropped: every non-system
        // message but the newest one.
        let last = messages.len().saturating_sub(1);
        let droppable: Vec<usize> = (0..last)
            .filter(|&i| messages[i].role != Role::System)
            .collect();
        let keep_from = |skip: usize| -> Vec<ChatMessage> {
            let dropped: &[usize] = &droppable[..skip];
            messages
                .iter()
                .enumerate()
                .filter(|(i, _)| !dropped.contains(i))
                .map(|(_, m)| m.clone())
                .collect()
        };
        // The message-count cap first: it needs no tokenizer.
        let non_system = droppable.len() + 1;
        let mut skip = match self.max_messages {
            Some(cap) if non_system > cap.max(1) => non_system - cap.max(1),
            _ => 0,
        };
        // Then the token budget: drop oldest until it fits. A binary search
        // keeps the number of tokenizer calls logarithmic.
        let count = |kept: Vec<ChatMessage>| async move { engine.count_tokens(model, &kept).await };
        let tokens_now = count(keep_from(skip)).await?;
        if tokens_now <= budget {
            return Ok(Trimmed {
                messages: keep_from(skip),
                dropped: skip,
                prompt_tokens: tokens_now,
                limited_by_time: false,
            });
        }
        let by_time = tokens_now <= hard;
        let all_dropped = droppable.len();
        let min_tokens = count(keep_from(all_dropped)).await?;
        if min_tokens > hard {
            return Err(TrimError::Overflow {
                needed: min_tokens,
                budget: hard,
                context_length: self.context_length,
                max_tokens: self.max_tokens,
                margin: self.margin,
            });
        }
        if min_tokens > budget {
            // Over the soft limit even alone: send the smallest prompt.
            return Ok(Trimmed {
                messages: keep_from(all_dropped),
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
        Ok(Trimmed {
            messages: keep_from(skip),
            dropped: skip,
            prompt_tokens: hi_tokens,
            limited_by_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{FakeConfig, FakeEngine, FAKE_MODEL};
    use crate::metrics::Metrics;

    fn convo(n_turns: usize) -> Vec<ChatMessage> {
        let mut m = vec![ChatMessage::new(Role::System, "be brief")];
        for i in 0..n_turns {
            m.push(ChatMessage::new(
                Role::User,
                format!("question {i} a b c d e"),
            ));
            m.push(ChatMessage::new(
                Role::Assistant,
                format!("answer {i} a b c d e"),
            ));
        }
        m.push(ChatMessage::new(Role::User, "last question"));
        m
    }

    fn window(context_length: usize, max_messages: Option<usize>) -> HistoryWindow {
        HistoryWindow {
            context_length,
            max_tokens: 10,
            margin: 2,
            max_messages,
            soft_max_tokens: None,
        }
    }

    #[tokio::test]
    async fn everything_fits_nothing_dropped() {
        let e = FakeEngine::new(FakeConfig::default(), Metrics::new());
        let m = convo(2);
        let t = window(1000, None).fit(&e, FAKE_MODEL, &m).await.unwrap();
        assert_eq!(t.dropped, 0);
        assert_eq!(t.messages, m);
        assert_eq!(
            t.prompt_tokens,
            e.count_tokens(FAKE_MODEL, &m).await.unwrap()
        );
    }

    #[tokio::test]
    async fn oldest_go_first_system_and_newest_stay() {
        let e = FakeEngine::new(FakeConfig::default(), Metrics::new());
        let m = convo(5); // 1 system + 10 + 1 = 12 messages
                          // The fake counts words + 4 per message + 2: each turn message is 10.
                          // system 6, last 6, +2 => 14 minimum; a budget of 40 holds 2 more.
        let w = HistoryWindow {
            context_length: 52,
            ..window(0, None)
        };
        assert_eq!(w.budget(), 40);
        let t = w.fit(&e, FAKE_MODEL, &m).await.unwrap();
        assert_eq!(t.messages.first().unwrap().role, Role::System);
        assert_eq!(t.messages.last().unwrap().content, "last question");
        assert_eq!(t.messages.len(), 4);
        assert_eq!(t.dropped, 8);
        assert_eq!(t.messages[1].content, "question 4 a b c d e");
        assert!(t.prompt_tokens <= 40);
    }

    #[tokio::test]
    async fn message_cap_keeps_the_latest() {
        let e = FakeEngine::new(FakeConfig::default(), Metrics::new());
        let m = convo(3);
        let t = window(10_000, Some(3))
            .fit(&e, FAKE_MODEL, &m)
            .await
            .unwrap();
        assert_eq!(t.dropped, 4);
        let roles: Vec<_> = t.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            vec![Role::System, Role::User, Role::Assistant, Role::User]
        );
    }

    #[tokio::test]
    async fn the_time_limit_drops_more_but_never_refuses() {
        let e = FakeEngine::new(FakeConfig::default(), Metrics::new());
        let m = convo(5);
        // The window holds everything (142 tokens); the time limit 40.
        let all = window(1000, None).fit(&e, FAKE_MODEL, &m).await.unwrap();
        assert_eq!(all.dropped, 0);
        let w = HistoryWindow {
            soft_max_tokens: Some(40),
            ..window(1000, None)
        };
        let t = w.fit(&e, FAKE_MODEL, &m).await.unwrap();
        assert!(t.limited_by_time);
        assert_eq!(t.dropped, 8);
        assert!(t.prompt_tokens <= 40);
        // A soft limit below the smallest prompt sends the smallest prompt.
        let w = HistoryWindow {
            soft_max_tokens: Some(5),
            ..window(1000, None)
        };
        let t = w.fit(&e, FAKE_MODEL, &m).await.unwrap();
        assert!(t.limited_by_time);
        assert_eq!(t.messages.len(), 2, "system prompt and the newest message");
        // A soft limit the window already meets changes nothing.
        let w = HistoryWindow {
            soft_max_tokens: Some(100),
            context_length: 52,
            ..window(0, None)
        };
        let t = w.fit(&e, FAKE_MODEL, &m).await.unwrap();
        assert!(!t.limited_by_time);
        assert_eq!(t.dropped, 8);
    }

    #[tokio::test]
    async fn a_newest_message_too_long_alone_overflows() {
        let e = FakeEngine::new(FakeConfig::default(), Metrics::new());
        let mut m = convo(1);
        m.push(ChatMessage::new(Role::User, "w ".repeat(100)));
        let err = window(60, None).fit(&e, FAKE_MODEL, &m).await.unwrap_err();
        match err {
            TrimError::Overflow { needed, budget, .. } => {
                assert_eq!(budget, 48);
                assert!(needed > budget);
            }
            other => panic!("expected overflow, got {other:?}"),
        }
    }
}
