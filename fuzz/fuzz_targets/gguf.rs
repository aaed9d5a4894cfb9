//! The GGUF validator on arbitrary bytes: it must answer (never panic, never
//! allocate from a declared size), and what it accepts must hold together.
#![no_main]

use kinko_parse::gguf::{validate, Refused};
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    match validate(Cursor::new(data), data.len() as u64) {
        Ok(checked) => {
            // Tensor data starts inside the file (or at its end when empty).
            assert!(checked.data_start <= data.len() as u64 || checked.tensors == 0);
        }
        Err(Refused::Invalid(reason)) => {
            // One line for the client.
            assert!(!reason.contains('\n'), "{reason}");
        }
        Err(Refused::NotGguf) => {}
    }
});
