//! kinko's own GGUF validator, run on every model file before any other
//! reader (candle's, mistral.rs's) sees it. It walks the header the way the
//! GGUF format lays it out and checks every count, length, shape and offset
//! against the bytes the file really has: nothing is allocated from a size
//! the file declares, every product is overflow-checked, only tensor types
//! the engine knows pass, and every tensor lies, aligned, inside the file.
//! A file that fails gets one line saying what is wrong.

use std::collections::HashSet;
use std::io::{BufReader, Read, Seek, SeekFrom};

/// `GGUF` read as a little-endian u32.
const MAGIC: u32 = 0x4655_4747;
/// Metadata entries a file may declare.
const MAX_KEYS: u64 = 1 << 16;
/// Tensors a file may declare.
const MAX_TENSORS: u64 = 1 << 20;
/// Longest key or tensor name, in bytes.
const MAX_NAME: u64 = 1 << 16;
/// Longest string value, in bytes (chat templates are the big ones).
const MAX_STRING: u64 = 16 << 20;
/// Most elements in one metadata array (vocabularies, merges).
const MAX_ARRAY: u64 = 1 << 24;
/// Dimensions a tensor may have (ggml's limit).
const MAX_DIMS: u32 = 4;
/// Alignment when the file names none, and the largest it may name.
const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_ALIGNMENT: u64 = 1 << 16;

/// What a valid file declares, for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Number of tensors.
    pub tensors: usize,
    /// Where tensor data begins.
    pub data_start: u64,
}

/// Why a file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not a GGUF file at all (wrong magic, or shorter than a header).
    NotGguf,
    /// A GGUF file that is broken or hostile: one line saying how.
    Invalid(String),
}

/// A tensor type the engine knows: elements per block and bytes per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorType {
    /// Elements in one block.
    pub block_size: usize,
    /// Bytes of one block.
    pub type_size: usize,
}

/// The tensor type for a GGML type id, if the engine (candle, under
/// mistral.rs) knows it. The server's tests check this table against
/// candle's own.
pub fn known_type(id: u32) -> Option<TensorType> {
    let (block_size, type_size) = match id {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        30 => (1, 2),     // BF16
        _ => return None,
    };
    Some(TensorType {
        block_size,
        type_size,
    })
}

struct Walker<R> {
    r: R,
    len: u64,
    pos: u64,
}

fn invalid(msg: impl Into<String>) -> Refused {
    Refused::Invalid(msg.into())
}

impl<R: Read + Seek> Walker<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn need(&self, n: u64, what: &str) -> Result<(), Refused> {
        if n > self.left() {
            Err(invalid(format!("{what} runs past the end of the file")))
        } else {
            Ok(())
        }
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Refused> {
        self.need(N as u64, what)?;
        let mut buf = [0u8; N];
        self.r
            .read_exact(&mut buf)
            .map_err(|_| invalid(format!("{what} could not be read")))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, Refused> {
        self.bytes::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, Refused> {
        self.bytes::<8>(what).map(u64::from_le_bytes)
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), Refused> {
        self.need(n, what)?;
        let step = i64::try_from(n).map_err(|_| invalid(format!("{what} is too long")))?;
        self.r
            .seek(SeekFrom::Current(step))
            .map_err(|_| invalid(format!("{what} could not be read")))?;
        self.pos += n;
        Ok(())
    }

    /// A string's length, checked against `cap` and the bytes left.
    fn string_len(&mut self, cap: u64, what: &str) -> Result<u64, Refused> {
        let n = self.u64(what)?;
        if n > cap {
            return Err(invalid(format!(
                "{what} declares {n} bytes (at most {cap})"
            )));
        }
        self.need(n, what)?;
        Ok(n)
    }

    /// A name (key or tensor name): checked, then read as UTF-8.
    fn name(&mut self, what: &str) -> Result<String, Refused> {
        let n = self.string_len(MAX_NAME, what)?;
        // The length was checked against the file and the cap first.
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|_| invalid(format!("{what} could not be read")))?;
        self.pos += n;
        let name = String::from_utf8(buf).map_err(|_| invalid(format!("{what} is not UTF-8")))?;
        // Names are echoed in messages, which are one line.
        if name.chars().any(char::is_control) {
            return Err(invalid(format!("{what} contains a control character")));
        }
        Ok(name)
    }

    fn skip_string(&mut self, what: &str) -> Result<(), Refused> {
        let n = self.string_len(MAX_STRING, what)?;
        self.skip(n, what)
    }

    /// Skip one metadata value of type `ty`; returns it when it is a small
    /// unsigned integer (for `general.alignment`).
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Option<u64>, Refused> {
        let fixed = |ty: u32| match ty {
            0 | 1 | 7 => Some(1u64),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match ty {
            4 => return self.u32(key).map(|v| Some(u64::from(v))),
            8 => self.skip_string(&format!("the value of {key}"))?,
            9 => {
                if depth >= 2 {
                    return Err(invalid(format!("{key} nests arrays too deeply")));
                }
                let elem = self.u32(key)?;
                let count = self.u64(key)?;
                if count > MAX_ARRAY {
                    return Err(invalid(format!(
                        "{key} declares {count} elements (at most {MAX_ARRAY})"
                    )));
                }
                match fixed(elem) {
                    Some(size) => {
                        let total = size
                            .checked_mul(count)
                            .ok_or_else(|| invalid(format!("{key} is too large")))?;
                        self.skip(total, key)?;
                    }
                    None if elem == 8 || elem == 9 => {
                        // Every element takes at least 8 bytes (its length).
                        self.need(count.saturating_mul(8), key)?;
                        for _ in 0..count {
                            self.value(elem, key, depth + 1)?;
                        }
                    }
                    None => {
                        return Err(invalid(format!("{key} has an unknown element type {elem}")))
                    }
                }
            }
            0 => return self.bytes::<1>(key).map(|b| Some(u64::from(b[0]))),
            2 => {
                return self
                    .bytes::<2>(key)
                    .map(|b| Some(u64::from(u16::from_le_bytes(b))))
            }
            _ => match fixed(ty) {
                Some(size) => self.skip(size, key)?,
                None => return Err(invalid(format!("{key} has an unknown value type {ty}"))),
            },
        }
        Ok(None)
    }
}

/// Validate the GGUF file read by `r`, which holds `len` bytes.
pub fn validate<R: Read + Seek>(r: R, len: u64) -> Result<Checked, Refused> {
    let mut w = Walker {
        r: BufReader::with_capacity(64 * 1024, r),
        len,
        pos: 0,
    };
    if len < 4 || w.u32("the magic").ok() != Some(MAGIC) {
        return Err(Refused::NotGguf);
    }
    let version = w.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(invalid(format!(
            "GGUF version {version} is not supported (2 and 3 are)"
        )));
    }
    let tensors = w.u64("the tensor count")?;
    let keys = w.u64("the metadata count")?;
    if tensors > MAX_TENSORS {
        return Err(invalid(format!(
            "the file declares {tensors} tensors (at most {MAX_TENSORS})"
        )));
    }
    if keys > MAX_KEYS {
        return Err(invalid(format!(
            "the file declares {keys} metadata entries (at most {MAX_KEYS})"
        )));
    }
    // Each entry takes at least 12 bytes, each tensor at least 24.
    w.need(keys.saturating_mul(12), "the metadata")?;
    w.need(tensors.saturating_mul(24), "the tensor table")?;

    let mut alignment = DEFAULT_ALIGNMENT;
    let mut seen = HashSet::new();
    for i in 0..keys {
        let key = w.name(&format!("metadata key {i}"))?;
        if !seen.insert(key.clone()) {
            return Err(invalid(format!("metadata key {key} appears twice")));
        }
        let ty = w.u32(&key)?;
        let small = w.value(ty, &key, 0)?;
        if key == "general.alignment" {
            alignment = small.ok_or_else(|| {
                invalid("general.alignment is not an unsigned integer of at most 32 bits")
            })?;
            if alignment == 0 || !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
                return Err(invalid(format!(
                    "general.alignment {alignment} is not a power of two up to {MAX_ALIGNMENT}"
                )));
            }
        }
    }

    let mut names = HashSet::new();
    let mut spans = Vec::with_capacity(tensors.min(4096) as usize);
    for i in 0..tensors {
        let name = w.name(&format!("the name of tensor {i}"))?;
        if !names.insert(name.clone()) {
            return Err(invalid(format!("tensor {name} appears twice")));
        }
        let dims = w.u32(&format!("tensor {name}"))?;
        if dims == 0 || dims > MAX_DIMS {
            return Err(invalid(format!(
                "tensor {name} declares {dims} dimensions (1 to {MAX_DIMS})"
            )));
        }
        let mut shape = Vec::with_capacity(dims as usize);
        for _ in 0..dims {
            shape.push(w.u64(&format!("tensor {name}"))?);
        }
        let ty = w.u32(&format!("tensor {name}"))?;
        let offset = w.u64(&format!("tensor {name}"))?;
        let dtype = known_type(ty)
            .ok_or_else(|| invalid(format!("tensor {name} has unknown type {ty}")))?;
        if shape.contains(&0) {
            return Err(invalid(format!("tensor {name} has an empty dimension")));
        }
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| invalid(format!("tensor {name}'s dimensions overflow 64 bits")))?;
        let block = dtype.block_size as u64;
        if shape[0] % block != 0 {
            return Err(invalid(format!(
                "tensor {name}'s first dimension {} is not a multiple of its block size {block}",
                shape[0]
            )));
        }
        let bytes = (elements / block)
            .checked_mul(dtype.type_size as u64)
            .ok_or_else(|| invalid(format!("tensor {name}'s size overflows 64 bits")))?;
        if offset % alignment != 0 {
            return Err(invalid(format!(
                "tensor {name}'s offset {offset} is not aligned to {alignment}"
            )));
        }
        spans.push((name, offset, bytes));
    }
    let data_start = w.pos.div_ceil(alignment).saturating_mul(alignment);
    for (name, offset, bytes) in &spans {
        let end = data_start
            .checked_add(*offset)
            .and_then(|s| s.checked_add(*bytes));
        match end {
            Some(end) if end <= len => {}
            _ => {
                return Err(invalid(format!(
                    "tensor {name} ends past the end of the file"
                )))
            }
        }
    }
    Ok(Checked {
        tensors: spans.len(),
        data_start,
    })
}

/// Hand-made GGUF files, well-formed or hostile, for tests (kinko's own
/// and the integration tests).
pub mod craft {
    /// A GGUF builder for tests: metadata and tensor entries as raw parts.
    #[derive(Default)]
    pub struct Crafted {
        /// GGUF version written.
        pub version: u32,
        /// Metadata entries, raw.
        pub kv: Vec<u8>,
        /// Metadata count written (may lie).
        pub kv_count: u64,
        /// Tensor entries, raw.
        pub tensors: Vec<u8>,
        /// Tensor count written (may lie).
        pub tensor_count: u64,
        /// Tensor data.
        pub data: Vec<u8>,
    }

    /// Append a GGUF string.
    pub fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    impl Crafted {
        /// A version-3 file with nothing in it.
        pub fn new() -> Self {
            Self {
                version: 3,
                ..Default::default()
            }
        }
        /// Add a string entry.
        pub fn kv_str(mut self, key: &str, value: &str) -> Self {
            string(&mut self.kv, key);
            self.kv.extend(8u32.to_le_bytes());
            string(&mut self.kv, value);
            self.kv_count += 1;
            self
        }
        /// Add a u32 entry.
        pub fn kv_u32(mut self, key: &str, value: u32) -> Self {
            string(&mut self.kv, key);
            self.kv.extend(4u32.to_le_bytes());
            self.kv.extend(value.to_le_bytes());
            self.kv_count += 1;
            self
        }
        /// Add a raw metadata entry (counted).
        pub fn kv_raw(mut self, raw: &[u8]) -> Self {
            self.kv.extend(raw);
            self.kv_count += 1;
            self
        }
        /// Add a tensor entry.
        pub fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
            string(&mut self.tensors, name);
            self.tensors.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                self.tensors.extend(d.to_le_bytes());
            }
            self.tensors.extend(ty.to_le_bytes());
            self.tensors.extend(offset.to_le_bytes());
            self.tensor_count += 1;
            self
        }
        /// Add `n` bytes of tensor data.
        pub fn data(mut self, n: usize) -> Self {
            self.data = vec![0u8; n];
            self
        }
        /// The file.
        pub fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend(b"GGUF");
            out.extend(self.version.to_le_bytes());
            out.extend(self.tensor_count.to_le_bytes());
            out.extend(self.kv_count.to_le_bytes());
            out.extend(&self.kv);
            out.extend(&self.tensors);
            while out.len() % 32 != 0 {
                out.push(0);
            }
            out.extend(&self.data);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::craft::{string, Crafted};
    use super::*;
    use std::io::Cursor;

    fn check(c: &Crafted) -> Result<Checked, Refused> {
        let bytes = c.bytes();
        let len = bytes.len() as u64;
        validate(Cursor::new(bytes), len)
    }

    /// Found by the fuzzer (fuzz/corpus/gguf/regression-newline-in-key): a
    /// key with a newline made the refusal two lines.
    #[test]
    fn a_name_with_a_control_character_is_refused_on_one_line() {
        let c = Crafted::new()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama:u:/:o\n.context_length", 128)
            .tensor("w", &[4], 7, 0);
        match check(&c) {
            Err(Refused::Invalid(reason)) => {
                assert!(!reason.contains('\n'), "{reason}");
                assert!(reason.contains("contains a control character"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let c = Crafted::new().tensor("blk\r0", &[32], 0, 0).data(128);
        assert!(matches!(check(&c), Err(Refused::Invalid(r)) if r.contains("control character")));
    }

    fn refused(c: &Crafted) -> String {
        match check(c) {
            Err(Refused::Invalid(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn good() -> Crafted {
        Crafted::new()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.context_length", 2048)
            .tensor("a", &[32, 4], 0, 0)
            .tensor("b", &[64], 8, 512)
            .data(512 + 68)
    }

    #[test]
    fn a_well_formed_file_passes() {
        let ok = check(&good()).unwrap();
        assert_eq!(ok.tensors, 2);
    }

    #[test]
    fn not_gguf_at_all_says_nothing_of_the_bytes() {
        for bytes in [&b"root:x:0:0"[..], b"", b"GGU"] {
            let got = validate(Cursor::new(bytes.to_vec()), bytes.len() as u64);
            assert_eq!(got, Err(Refused::NotGguf));
        }
    }

    #[test]
    fn a_huge_string_length_is_refused_before_any_allocation() {
        let mut raw = Vec::new();
        string(&mut raw, "general.name");
        raw.extend(8u32.to_le_bytes());
        raw.extend((1u64 << 60).to_le_bytes());
        let c = Crafted::new().kv_raw(&raw);
        assert!(
            refused(&c).contains("declares 1152921504606846976 bytes"),
            "{}",
            refused(&c)
        );
        // A key length past the file's end.
        let mut raw = Vec::new();
        raw.extend(1000u64.to_le_bytes());
        assert!(refused(&Crafted::new().kv_raw(&raw)).contains("past the end"));
    }

    #[test]
    fn counts_are_checked_against_the_file() {
        let mut c = good();
        c.kv_count = 1 << 40;
        assert!(refused(&c).contains("metadata entries"));
        let mut c = good();
        c.tensor_count = 5000;
        assert!(refused(&c).contains("past the end"));
        let mut raw = Vec::new();
        string(&mut raw, "tokenizer.ggml.tokens");
        raw.extend(9u32.to_le_bytes());
        raw.extend(8u32.to_le_bytes());
        raw.extend((1u64 << 23).to_le_bytes());
        assert!(refused(&Crafted::new().kv_raw(&raw)).contains("past the end"));
    }

    #[test]
    fn tensors_past_the_end_overflowing_or_with_too_many_dims_are_refused() {
        let past = good().tensor("blk.0.attn_q.weight", &[32, 32], 0, 4096);
        assert_eq!(
            refused(&past),
            "tensor blk.0.attn_q.weight ends past the end of the file"
        );
        let overflow = good().tensor("big", &[1 << 32, 1 << 32, 1 << 8], 0, 0);
        assert!(refused(&overflow).contains("overflow 64 bits"));
        let dims = Crafted::new().tensor("many", &[1; 64], 0, 0);
        assert!(refused(&dims).contains("64 dimensions"));
        let unknown = Crafted::new().tensor("iq", &[256], 19, 0);
        assert_eq!(refused(&unknown), "tensor iq has unknown type 19");
        let misaligned = good().tensor("c", &[32], 0, 3);
        assert!(refused(&misaligned).contains("not aligned"));
        let blocks = Crafted::new().tensor("q", &[33], 8, 0).data(64);
        assert!(refused(&blocks).contains("block size 32"));
        let twice = good().tensor("a", &[32], 0, 0);
        assert!(refused(&twice).contains("appears twice"));
        let mut old = good();
        old.version = 1;
        assert!(refused(&old).contains("version 1"));
    }

    #[test]
    fn alignment_must_be_a_sane_power_of_two() {
        let c = good().kv_u32("general.alignment", 48);
        assert!(refused(&c).contains("power of two"));
        let c = good().kv_u32("general.alignment", 0);
        assert!(refused(&c).contains("power of two"));
    }

    #[test]
    fn truncations_anywhere_are_refused_never_a_panic() {
        let bytes = good().bytes();
        for cut in 0..bytes.len() {
            let got = validate(Cursor::new(bytes[..cut].to_vec()), cut as u64);
            assert!(got.is_err(), "cut at {cut} passed");
        }
    }
}
