//! The Modelfile parser on arbitrary text: it must answer (never panic), and
//! whatever it accepts must come back the same from its own rendering.
#![no_main]

use kinko_parse::modelfile::{parse, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = parse(text) {
        let again = parse(&render(&parsed))
            .unwrap_or_else(|e| panic!("its own rendering does not parse: {e}"));
        assert_eq!(again, parsed, "rendering and parsing again changed it");
    }
});
