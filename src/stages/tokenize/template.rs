//! Document framing: `"<|bos|>{text}<|eos|>"` and the like. Special tokens in a template are looked up
//! by name in the tokenizer's added tokens; a name it lacks is an error, never tokenized as text.

use anyhow::{Result, bail};
use tokenizers::Tokenizer;

/// A parsed template: the ids before and after a document's own.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
}

impl Template {
    pub fn parse(template: &str, tokenizer: &Tokenizer, tokenizer_name: &str) -> Result<Self> {
        let parts: Vec<&str> = template.split("{text}").collect();
        if parts.len() != 2 {
            bail!(
                "template '{template}': it must hold `{{text}}` exactly once (it holds it {} times)",
                parts.len() - 1
            );
        }
        // Longest names first, so that a name never matches a shorter one it starts with.
        let mut added: Vec<(String, u32)> = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (t.content, id))
            .collect();
        added.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let side = |s: &str| side_ids(s, tokenizer, &added, template, tokenizer_name);
        Ok(Self {
            prefix: side(parts[0])?,
            suffix: side(parts[1])?,
        })
    }

    /// The framed document: prefix, the text's ids, suffix.
    pub fn frame(&self, text_ids: &[u32], out: &mut Vec<u32>) {
        out.clear();
        out.reserve(self.prefix.len() + text_ids.len() + self.suffix.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(text_ids);
        out.extend_from_slice(&self.suffix);
    }
}

/// Openers and closers of special-token names: `<|…|>` (Qwen, GPT-2) and `<｜…｜>` (DeepSeek).
const MARKERS: &[(&str, &str)] = &[("<|", "|>"), ("<｜", "｜>")];

fn side_ids(
    s: &str,
    tokenizer: &Tokenizer,
    added: &[(String, u32)],
    template: &str,
    tokenizer_name: &str,
) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    let mut literal = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if let Some((name, id)) = added
            .iter()
            .find(|(n, _)| !n.is_empty() && rest.starts_with(n.as_str()))
        {
            encode_literal(&mut literal, tokenizer, &mut ids)?;
            ids.push(*id);
            rest = &rest[name.len()..];
            continue;
        }
        for (open, close) in MARKERS {
            if rest.starts_with(open)
                && let Some(end) = rest[open.len()..].find(close)
            {
                let name = &rest[..open.len() + end + close.len()];
                let known: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).take(12).collect();
                bail!(
                    "template '{template}' names the special token '{name}', which tokenizer \
                     '{tokenizer_name}' does not have; its special tokens include {}",
                    known.join(" ")
                );
            }
        }
        literal.push(c);
        rest = &rest[c.len_utf8()..];
    }
    encode_literal(&mut literal, tokenizer, &mut ids)?;
    Ok(ids)
}

/// Plain text of a template (a newline, a header) is tokenized on its own.
fn encode_literal(literal: &mut String, tokenizer: &Tokenizer, ids: &mut Vec<u32>) -> Result<()> {
    if !literal.is_empty() {
        let enc = tokenizer
            .encode_fast(literal.as_str(), false)
            .map_err(|e| anyhow::anyhow!("tokenizing the template's text {literal:?}: {e}"))?;
        ids.extend_from_slice(enc.get_ids());
        literal.clear();
    }
    Ok(())
}
