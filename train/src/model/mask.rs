//! The attention mask of a batch of packed sequences: causal, and, when documents are masked, each
//! token sees only the earlier tokens of its own document (OpenSeek trains with both).

use candle_core::{DType, Device, Result, Tensor};

/// An additive mask (batch, 1, seq, seq): 0 where token i may attend to token j, −∞ elsewhere.
/// `doc_ids` (batch, seq) numbers each token's document within its sequence; `None` gives plain causal
/// attention.
pub fn attention_mask(
    doc_ids: Option<&[Vec<u32>]>,
    batch: usize,
    seq: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut m = vec![f32::NEG_INFINITY; batch * seq * seq];
    for b in 0..batch {
        for i in 0..seq {
            for j in 0..=i {
                let same = doc_ids.is_none_or(|d| d[b][i] == d[b][j]);
                if same {
                    m[(b * seq + i) * seq + j] = 0.0;
                }
            }
        }
    }
    Tensor::from_vec(m, (batch, 1, seq, seq), device)?.to_dtype(dtype)
}

/// Positions that restart at 0 at each document (`doc_ids`), or run 0..seq.
pub fn positions(
    doc_ids: Option<&[Vec<u32>]>,
    batch: usize,
    seq: usize,
    device: &Device,
) -> Result<Tensor> {
    let mut p = Vec::with_capacity(batch * seq);
    for b in 0..batch {
        let mut at = 0u32;
        for i in 0..seq {
            if let Some(d) = doc_ids
                && i > 0
                && d[b][i] != d[b][i - 1]
            {
                at = 0;
            }
            p.push(at);
            at += 1;
        }
    }
    Tensor::from_vec(p, (batch, seq), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_see_only_themselves_and_positions_restart() -> Result<()> {
        let dev = Device::Cpu;
        let docs = vec![vec![0u32, 0, 1, 1, 1]];
        let m = attention_mask(Some(&docs), 1, 5, DType::F32, &dev)?;
        let row3: Vec<f32> = m.get(0)?.get(0)?.get(3)?.to_vec1()?;
        assert_eq!(
            row3,
            vec![
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
                0.,
                0.,
                f32::NEG_INFINITY
            ]
        );
        let p: Vec<u32> = positions(Some(&docs), 1, 5, &dev)?
            .flatten_all()?
            .to_vec1()?;
        assert_eq!(p, vec![0, 1, 0, 1, 2]);
        let causal: Vec<f32> = attention_mask(None, 1, 5, DType::F32, &dev)?
            .get(0)?
            .get(0)?
            .get(3)?
            .to_vec1()?;
        assert_eq!(causal, vec![0., 0., 0., 0., f32::NEG_INFINITY]);
        Ok(())
    }
}
