//! Each API's chat request decoding on arbitrary bytes: the first byte picks
//! the API (kinko's own, Ollama's chat or generate, OpenAI's), the rest is
//! the body. Decoding and checking must answer (never panic), refusals are
//! one line (JSON errors through `one_line`, as the server sends them; the
//! checks' own refusals as they are), and what is accepted is a request the server can run: a
//! conversation ending in a user message, options in range, and kinko's own
//! wire form reads back the same.
#![no_main]

use kinko_parse::api::ChatRequest;
use kinko_parse::requests::{check_messages, ollama, one_line, openai, validate_options};
use libfuzzer_sys::fuzz_target;

const DEFAULT_MAX_TOKENS: usize = 512;
const CAP: usize = 4096;

fn single(refusal: &str) {
    assert!(!refusal.contains('\n'), "{refusal:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&api, body)) = data.split_first() else {
        return;
    };
    let decoded: Result<ChatRequest, String> = match api % 4 {
        0 => serde_json::from_slice::<ChatRequest>(body).map_err(|e| one_line(&e.to_string())),
        1 => serde_json::from_slice::<ollama::ChatBody>(body)
            .map_err(|e| one_line(&e.to_string()))
            .and_then(|b| b.chat_request()),
        2 => serde_json::from_slice::<ollama::GenerateBody>(body)
            .map_err(|e| one_line(&e.to_string()))
            .and_then(|b| b.chat_request()),
        _ => serde_json::from_slice::<openai::CompletionBody>(body)
            .map_err(|e| one_line(&e.to_string()))
            .and_then(|b| b.chat_request()),
    };
    let req = match decoded {
        Ok(req) => req,
        Err(refusal) => return single(&refusal),
    };
    let wire = serde_json::to_vec(&req).expect("a request always encodes");
    let again: ChatRequest = serde_json::from_slice(&wire).expect("its own encoding decodes");
    assert_eq!(again, req, "kinko's wire form reads back the same");
    if let Err(refusal) = check_messages(&req.messages) {
        return single(&refusal);
    }
    match validate_options(&req.options, DEFAULT_MAX_TOKENS, CAP) {
        Ok(max_tokens) => {
            assert!((1..=CAP).contains(&max_tokens));
            let last = req.messages.last().expect("checked: not empty");
            assert!(!last.content.trim().is_empty());
            if let Some(t) = req.options.temperature {
                assert!((0.0..=2.0).contains(&t));
            }
        }
        Err(refusal) => single(&refusal),
    }
});
