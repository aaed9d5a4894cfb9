//! The parsers kinko runs on what strangers send, kept free of the engine
//! and the web stack so that they can be fuzzed on their own (`fuzz/`):
//! the wire types and the decoding of each API's chat request, the GGUF
//! validator, the Modelfile parser, the history window, and the upstream
//! engines' specs and model lists.

pub mod api;
pub mod gguf;
pub mod modelfile;
pub mod requests;
pub mod upstream;
pub mod window;
