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
use kinko_parse::window::PlanError;

/// The limits a conversation must fit in (the arithmetic lives in
/// `kinko_parse::window`, apart from any tokenizer).
pub use kinko_parse::window::Window as HistoryWindow;

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

/// The history window over a model's own tokenizer.
#[allow(async_fn_in_trait)]
pub trait Fit {
    /// Cut `messages` to fit, counting with `engine`'s tokenizer for `model`.
    async fn fit(
        &self,
        engine: &dyn ChatEngine,
        model: &str,
        messages: &[ChatMessage],
    ) -> Result<Trimmed, TrimError>;
}

impl Fit for HistoryWindow {
    async fn fit(
        &self,
        engine: &dyn ChatEngine,
        model: &str,
        messages: &[ChatMessage],
    ) -> Result<Trimmed, TrimError> {
        let is_system: Vec<bool> = messages.iter().map(|m| m.role == Role::System).collect();
        let pick = |kept: &[usize]| -> Vec<ChatMessage> {
            kept.iter().map(|&i| messages[i].clone()).collect()
        };
        let plan = self
            .plan(&is_system, |kept| {
                let kept = pick(&kept);
                async move { engine.count_tokens(model, &kept).await }
            })
            .await
            .map_err(|e| match e {
                PlanError::Overflow { needed, budget } => TrimError::Overflow {
                    needed,
                    budget,
                    context_length: self.context_length,
                    max_tokens: self.max_tokens,
                    margin: self.margin,
                },
                PlanError::Count(e) => TrimError::Engine(e),
            })?;
        Ok(Trimmed {
            messages: pick(&plan.kept),
            dropped: plan.dropped,
            prompt_tokens: plan.prompt_tokens,
            limited_by_time: plan.limited_by_time,
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
