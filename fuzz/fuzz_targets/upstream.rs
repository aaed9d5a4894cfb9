//! What an upstream engine sends back, on arbitrary bytes: its model lists
//! (both kinds), `/api/show`, stream lines split anywhere, and error bodies.
//! Each must answer (never panic) and stay within its bounds.
#![no_main]

use kinko_parse::upstream::{
    error_message, parse_models, parse_ollama_line, parse_openai_event, parse_show_context,
    sse_data, Lines, UpstreamKind, LINE_MAX,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kind in [UpstreamKind::OpenAi, UpstreamKind::Ollama] {
        if let Ok(models) = parse_models(kind, data) {
            for m in models {
                assert!(!m.name.is_empty() && m.name.len() <= 200);
                assert!(!m.name.chars().any(char::is_control));
                assert!(m.quantization.len() <= 64 && m.family.len() <= 64);
            }
        }
    }
    let _ = parse_show_context(data);
    let shown = error_message(data);
    assert!(!shown.contains('\n') && shown.len() <= 303, "{shown:?}");
    // The body split at every byte the first one names.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut lines = Lines::default();
    for chunk in data.chunks(step) {
        match lines.push(chunk) {
            Ok(done) => {
                for line in done {
                    assert!(!line.contains('\n'));
                    if let Some(payload) = sse_data(&line) {
                        if let Err(e) = parse_openai_event(payload) {
                            assert!(!e.contains('\n'), "{e:?}");
                        }
                    }
                    let _ = parse_ollama_line(line.as_bytes());
                }
            }
            Err(_) => return,
        }
    }
    if let Some(rest) = lines.finish() {
        assert!(rest.len() <= LINE_MAX + step);
    }
});
