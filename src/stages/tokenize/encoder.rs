//! The tokenizer that encodes the documents: the loaded one with a pre-tokenizer on `regex-automata`
//! ([`FastPreTokenizer`]) and an NFC normalizer that skips text already in NFC; the same ids.

use anyhow::Result;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::{
    DecoderWrapper, ModelWrapper, NormalizedString, Normalizer, PostProcessorWrapper,
    Result as TkResult, Tokenizer, TokenizerBuilder, TokenizerImpl,
};
use unicode_normalization_alignments::{IsNormalized, is_nfc_quick};

use super::fast_split::FastPreTokenizer;

pub type Encoder = TokenizerImpl<
    ModelWrapper,
    FastNormalizer,
    FastPreTokenizer,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Words whose merges a BPE model remembers, per thread. Hugging Face's 10,000 leave about a tenth of
/// the CPU time of `tokenize` in merging on `corpus/en` (perf); 100,000 words take ~10 MB a thread.
const BPE_CACHE_WORDS: usize = 100_000;

/// `tokenizer`'s encoder, sharing nothing with it. Document text is text: a special token's string
/// inside a document (`<|endoftext|>` quoted in a web page) is encoded as the characters it is made
/// of, never as the special id, as Hugging Face `tokenizers` does with `encode_special_tokens`
/// (transformers' `split_special_tokens=True`). Added tokens that are not special (Qwen3's `<think>`)
/// still match, as there. Only the template's own special tokens become special ids.
pub fn encoder(tokenizer: &Tokenizer) -> Result<Encoder> {
    if tokenizer.get_truncation().is_some() || tokenizer.get_padding().is_some() {
        tracing::warn!(
            "the tokenizer's truncation and padding are ignored: shards hold whole documents"
        );
    }
    let pre_tokenizer = tokenizer.get_pre_tokenizer().map(|pt| {
        let (fast, n) = FastPreTokenizer::new(pt);
        tracing::debug!("{n} pre-tokenizer regex(es) on regex-automata");
        fast
    });
    let mut model = tokenizer.get_model().clone();
    if let ModelWrapper::BPE(bpe) = &mut model {
        bpe.resize_cache(BPE_CACHE_WORDS);
    }
    let mut encoder = TokenizerBuilder::new()
        .with_model(model)
        .with_normalizer(tokenizer.get_normalizer().map(FastNormalizer::new))
        .with_pre_tokenizer(pre_tokenizer)
        .with_post_processor(tokenizer.get_post_processor().cloned())
        .with_decoder(tokenizer.get_decoder().cloned())
        .with_added_vocabulary(tokenizer.get_added_vocabulary().clone())
        // A shard holds whole documents: a `tokenizer.json` saved with truncation or padding (for a
        // classifier, say) must not cut or pad them.
        .with_truncation(None)
        .with_padding(None)
        .build()
        .map_err(|e| anyhow::anyhow!("building the encoder: {e}"))?;
    encoder.set_encode_special_tokens(true);
    Ok(encoder)
}

/// A normalizer whose NFC steps skip text that the quick check (Unicode's NFC_Quick_Check, the
/// tables of Hugging Face's own normalizer) proves to be in NFC already. Why: Hugging Face's NFC
/// decomposes and recomposes every document and rebuilds its alignments, ~9% of the CPU time of
/// `tokenize` on `corpus/en` (perf), to give back the same text for nearly every web document.
#[derive(Debug)]
pub enum FastNormalizer {
    Nfc,
    Sequence(Vec<FastNormalizer>),
    Other(NormalizerWrapper),
}

impl FastNormalizer {
    fn new(n: &NormalizerWrapper) -> Self {
        match n {
            NormalizerWrapper::NFC(_) => Self::Nfc,
            NormalizerWrapper::Sequence(seq) => {
                Self::Sequence(seq.as_ref().iter().map(Self::new).collect())
            }
            other => Self::Other(other.clone()),
        }
    }
}

impl Normalizer for FastNormalizer {
    fn normalize(&self, normalized: &mut NormalizedString) -> TkResult<()> {
        match self {
            Self::Nfc => {
                if is_nfc_quick(normalized.get().chars()) != IsNormalized::Yes {
                    normalized.nfc();
                }
                Ok(())
            }
            Self::Sequence(inner) => inner.iter().try_for_each(|n| n.normalize(normalized)),
            Self::Other(n) => n.normalize(normalized),
        }
    }
}
