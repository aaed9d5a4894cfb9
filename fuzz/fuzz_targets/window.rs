//! The history window on arbitrary conversations and limits, counted with a
//! stand-in tokenizer (each message its own size plus a template overhead).
//! Whatever it answers must be right: the system prompts and the newest
//! message always stay, only the oldest others go, the prompt fits, no more
//! is dropped than needed, and a refusal is a real overflow.
#![no_main]

use kinko_parse::window::{PlanError, Window};
use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// The plan's futures never wait: poll once.
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the stand-in tokenizer never waits"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<8>() else {
        return;
    };
    // Conversations of up to 2,048 messages: the checks below are quadratic.
    if body.len() > 2048 {
        return;
    }
    let window = Window {
        context_length: usize::from(u16::from_le_bytes([head[0], head[1]])),
        max_tokens: usize::from(head[2]),
        margin: usize::from(head[3] % 16),
        max_messages: (head[4] != 0).then_some(usize::from(head[4] % 16)),
        soft_max_tokens: (head[5] & 1 == 1)
            .then_some(usize::from(u16::from_le_bytes([head[6], head[7]])) % 2048),
    };
    // Each byte is a message: the top bit says system, the rest its size.
    let is_system: Vec<bool> = body.iter().map(|b| b & 0x80 != 0).collect();
    let size: Vec<usize> = body.iter().map(|b| usize::from(b & 0x7f)).collect();
    let tokens = |kept: &[usize]| 1 + kept.iter().map(|&i| 3 + size[i]).sum::<usize>();
    let mut calls = 0usize;
    let result = now(window.plan(&is_system, |kept| {
        calls += 1;
        std::future::ready(Ok::<usize, ()>(tokens(&kept)))
    }));
    let n = is_system.len();
    let droppable: Vec<usize> = (0..n.saturating_sub(1))
        .filter(|&i| !is_system[i])
        .collect();
    let keep_from =
        |skip: usize| -> Vec<usize> { (0..n).filter(|i| !droppable[..skip].contains(i)).collect() };
    let hard = window.budget();
    let budget = window.soft_max_tokens.map_or(hard, |s| s.min(hard));
    assert!(
        calls <= 3 + 2 * (usize::BITS - n.leading_zeros()) as usize,
        "{calls} tokenizer calls for {n} messages"
    );
    match result {
        Ok(plan) => {
            assert_eq!(
                plan.kept,
                keep_from(plan.dropped),
                "only the oldest droppable messages go"
            );
            assert!(plan.dropped <= droppable.len());
            assert_eq!(plan.prompt_tokens, tokens(&plan.kept));
            assert!(plan.prompt_tokens <= hard, "the prompt fits the window");
            if let Some(cap) = window.max_messages {
                let others = plan.kept.iter().filter(|&&i| !is_system[i]).count();
                assert!(
                    others <= cap.max(1),
                    "{others} messages kept over the cap {cap}"
                );
            }
            let by_cap = match window.max_messages {
                Some(cap) if droppable.len() + 1 > cap.max(1) => droppable.len() + 1 - cap.max(1),
                _ => 0,
            };
            let smallest_over_soft = plan.dropped == droppable.len() && plan.prompt_tokens > budget;
            if plan.dropped > by_cap && !smallest_over_soft {
                assert!(
                    tokens(&keep_from(plan.dropped - 1)) > budget,
                    "dropped one more than needed"
                );
                assert!(plan.prompt_tokens <= budget);
            }
        }
        Err(PlanError::Overflow { needed, budget: b }) => {
            assert_eq!(b, hard);
            assert_eq!(needed, tokens(&keep_from(droppable.len())));
            assert!(needed > hard, "refused a conversation that fits");
        }
        Err(PlanError::Count(())) => unreachable!("the stand-in never fails"),
    }
});
