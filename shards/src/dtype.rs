//! The token types of a Megatron indexed dataset, by their `.idx` codes.

use serde::{Deserialize, Serialize};

/// Megatron's `DType` codes (`megatron/core/datasets/indexed_dataset.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    U8,
    I8,
    I16,
    I32,
    I64,
    F64,
    F32,
    U16,
}

impl DType {
    /// Megatron's vocabulary bound for u16 tokens (`DType.optimal_dtype`): below it u16, else i32.
    pub const U16_VOCAB_LIMIT: usize = 65_500;

    /// The dtype Megatron chooses for a vocabulary of `vocab_size` tokens.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size < Self::U16_VOCAB_LIMIT {
            DType::U16
        } else {
            DType::I32
        }
    }

    pub fn code(self) -> u8 {
        match self {
            DType::U8 => 1,
            DType::I8 => 2,
            DType::I16 => 3,
            DType::I32 => 4,
            DType::I64 => 5,
            DType::F64 => 6,
            DType::F32 => 7,
            DType::U16 => 8,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => DType::U8,
            2 => DType::I8,
            3 => DType::I16,
            4 => DType::I32,
            5 => DType::I64,
            6 => DType::F64,
            7 => DType::F32,
            8 => DType::U16,
            _ => return None,
        })
    }

    /// Bytes per token.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// The largest token id this type holds; `None` for the float types, which hold no token ids.
    pub fn max_token(self) -> Option<u64> {
        match self {
            DType::U8 => Some(u8::MAX.into()),
            DType::I8 => Some(i8::MAX as u64),
            DType::I16 => Some(i16::MAX as u64),
            DType::U16 => Some(u16::MAX.into()),
            DType::I32 => Some(i32::MAX as u64),
            DType::I64 => Some(i64::MAX as u64),
            DType::F32 | DType::F64 => None,
        }
    }

    /// Appends `token` in this type, little-endian; the caller has checked it against `max_token`.
    pub(crate) fn put(self, token: u32, out: &mut Vec<u8>) {
        match self {
            DType::U8 | DType::I8 => out.push(token as u8),
            DType::I16 | DType::U16 => out.extend_from_slice(&(token as u16).to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(token as i32).to_le_bytes()),
            DType::I64 => out.extend_from_slice(&i64::from(token).to_le_bytes()),
            DType::F32 | DType::F64 => unreachable!("writers refuse float dtypes"),
        }
    }

    /// Reads the token at the start of `bytes` (at least `size()` long) as a signed 64-bit value.
    pub(crate) fn get(self, bytes: &[u8]) -> i64 {
        match self {
            DType::U8 => i64::from(bytes[0]),
            DType::I8 => i64::from(bytes[0] as i8),
            DType::I16 => i64::from(i16::from_le_bytes([bytes[0], bytes[1]])),
            DType::U16 => i64::from(u16::from_le_bytes([bytes[0], bytes[1]])),
            DType::I32 => i64::from(i32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"))),
            DType::I64 => i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            DType::F32 => f32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as i64,
            DType::F64 => f64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as i64,
        }
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "u8" | "uint8" => DType::U8,
            "i8" | "int8" => DType::I8,
            "i16" | "int16" => DType::I16,
            "i32" | "int32" => DType::I32,
            "i64" | "int64" => DType::I64,
            "u16" | "uint16" => DType::U16,
            other => return Err(format!("dtype '{other}': u8, u16, i16, i32 or i64")),
        })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::U16 => "uint16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn megatron_picks_u16_below_65500_tokens() {
        assert_eq!(DType::for_vocab(50_257), DType::U16); // GPT-2
        assert_eq!(DType::for_vocab(65_499), DType::U16);
        assert_eq!(DType::for_vocab(65_500), DType::I32);
        assert_eq!(DType::for_vocab(151_851), DType::I32); // Qwen
    }

    #[test]
    fn codes_round_trip_and_values_too() {
        for code in 1..=8 {
            let d = DType::from_code(code).unwrap();
            assert_eq!(d.code(), code);
        }
        assert_eq!(DType::from_code(0), None);
        assert_eq!(DType::from_code(9), None);
        for d in [DType::U8, DType::U16, DType::I16, DType::I32, DType::I64] {
            let mut out = Vec::new();
            d.put(100, &mut out);
            assert_eq!(out.len(), d.size());
            assert_eq!(d.get(&out), 100);
        }
    }
}
