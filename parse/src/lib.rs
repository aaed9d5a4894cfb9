//! The parsers kinko runs on what strangers send, kept free of the engine
//! and the web stack so that they can be fuzzed on their own (`fuzz/`):
//! the GGUF validator, the Modelfile parser and the history window.

pub mod gguf;
pub mod modelfile;
pub mod window;
