//! The local full-text index that `cot_rag` retrieves from: tantivy (BM25) over the `id` and `text`
//! of a dataset, built once into a directory named by the dataset's files, and reused by later runs.
//!
//! Chinese has no spaces, and tantivy's default tokenizer would make a whole sentence one term, so the
//! index uses [`MixedTokenizer`]: lower-cased words for alphabetic scripts, overlapping character
//! bigrams for CJK runs (the usual choice of search engines without a Chinese dictionary), the same at
//! index and at query time.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer};
use tantivy::{Index, IndexReader, IndexWriter, TantivyDocument, Term};

const TOKENIZER: &str = "openseek_mixed";
/// Written last: an index directory without it is the leftover of an interrupted build.
const COMPLETE: &str = "openseek-complete.json";

/// One retrieved document.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieved {
    pub id: String,
    pub text: String,
    pub score: f32,
}

pub struct RagIndex {
    reader: IndexReader,
    id: Field,
    text: Field,
    pub dir: PathBuf,
    pub documents: u64,
}

fn schema() -> (Schema, Field, Field) {
    let mut b = Schema::builder();
    let id = b.add_text_field("id", STRING | STORED);
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(TOKENIZER)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let text = b.add_text_field(
        "text",
        TextOptions::default()
            .set_indexing_options(indexing)
            .set_stored(),
    );
    (b.build(), id, text)
}

fn register(index: &Index) {
    index
        .tokenizers()
        .register(TOKENIZER, TextAnalyzer::from(MixedTokenizer));
}

impl RagIndex {
    /// Whether `dir` holds a complete index.
    pub fn is_complete(dir: &Path) -> bool {
        dir.join(COMPLETE).exists()
    }

    /// The index in `dir` if a complete one is there; otherwise builds it from `docs` (id, text).
    pub fn open_or_build(
        dir: &Path,
        docs: impl Iterator<Item = Result<(String, String)>>,
    ) -> Result<Self> {
        let (schema, id, text) = schema();
        let complete = dir.join(COMPLETE);
        let (index, documents) = if complete.exists() {
            let index = Index::open_in_dir(dir)
                .with_context(|| format!("opening the index {}", dir.display()))?;
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&complete)?).context("the index's marker")?;
            (index, meta["documents"].as_u64().unwrap_or(0))
        } else {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .with_context(|| format!("removing the unfinished index {}", dir.display()))?;
            }
            std::fs::create_dir_all(dir)?;
            let index = Index::create_in_dir(dir, schema)
                .with_context(|| format!("creating the index {}", dir.display()))?;
            register(&index);
            let mut writer: IndexWriter = index.writer_with_num_threads(1, 128 << 20)?;
            let mut n = 0u64;
            for doc in docs {
                let (doc_id, doc_text) = doc?;
                let mut d = TantivyDocument::default();
                d.add_text(id, &doc_id);
                d.add_text(text, &doc_text);
                writer.add_document(d)?;
                n += 1;
            }
            writer.commit()?;
            writer.wait_merging_threads()?;
            let tmp = crate::io::writer::temp_name(&complete);
            std::fs::write(&tmp, serde_json::json!({ "documents": n }).to_string())?;
            std::fs::rename(&tmp, &complete)?;
            (index, n)
        };
        register(&index);
        let reader = index.reader().context("opening an index reader")?;
        Ok(Self {
            reader,
            id,
            text,
            dir: dir.to_path_buf(),
            documents,
        })
    }

    /// The `k` best documents for `query`. A model's query is prose, not query syntax: its terms
    /// (the index's tokenizer's) are OR'ed and BM25 ranks the documents. Not tantivy's query parser,
    /// which reads a run of Chinese as one phrase and punctuation as operators.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Retrieved>> {
        let mut terms: Vec<String> = Vec::new();
        let mut tokens = MixedTokenizer.token_stream(query);
        while tokens.advance() {
            let t = &tokens.token().text;
            if !terms.contains(t) {
                terms.push(t.clone());
            }
        }
        if terms.is_empty() {
            return Ok(vec![]);
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(self.text, t),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        // More than `k`, so that ties at the cut are broken by id, not by the order in which the
        // documents were indexed (which a rebuild may change).
        let top = searcher.search(&query, &TopDocs::with_limit(k + 16).order_by_score())?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let field = |f: Field| {
                doc.get_first(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            out.push(Retrieved {
                id: field(self.id),
                text: field(self.text),
                score,
            });
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        out.truncate(k);
        Ok(out)
    }
}

/// Words of alphabetic scripts, lower-cased; bigrams of CJK runs (a lone CJK character is a term).
#[derive(Clone)]
pub struct MixedTokenizer;

pub struct MixedTokenStream {
    tokens: Vec<Token>,
    at: usize,
}

impl Tokenizer for MixedTokenizer {
    type TokenStream<'a> = MixedTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> MixedTokenStream {
        let mut tokens = Vec::new();
        let mut push = |from: usize, to: usize, s: String| {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position: tokens.len(),
                text: s,
                position_length: 1,
            });
        };
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let end_of = |i: usize| chars.get(i).map_or(text.len(), |c| c.0);
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i].1;
            if openseek_udfs::is_cjk(c) {
                let start = i;
                while i < chars.len() && openseek_udfs::is_cjk(chars[i].1) {
                    i += 1;
                }
                if i - start == 1 {
                    push(chars[start].0, end_of(i), c.to_string());
                }
                for j in start..i.saturating_sub(1) {
                    push(
                        chars[j].0,
                        end_of(j + 2),
                        text[chars[j].0..end_of(j + 2)].to_string(),
                    );
                }
            } else if c.is_alphanumeric() {
                let start = i;
                while i < chars.len()
                    && chars[i].1.is_alphanumeric()
                    && !openseek_udfs::is_cjk(chars[i].1)
                {
                    i += 1;
                }
                let word = &text[chars[start].0..end_of(i)];
                // Very long "words" (base64, hashes) only bloat the index.
                if word.len() <= 40 {
                    push(chars[start].0, end_of(i), word.to_lowercase());
                }
            } else {
                i += 1;
            }
        }
        MixedTokenStream { tokens, at: 0 }
    }
}

impl TokenStream for MixedTokenStream {
    fn advance(&mut self) -> bool {
        self.at += 1;
        self.at <= self.tokens.len()
    }
    fn token(&self) -> &Token {
        &self.tokens[self.at - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.at - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str) -> Vec<String> {
        let mut t = MixedTokenizer;
        let mut s = t.token_stream(text);
        let mut out = vec![];
        while s.advance() {
            out.push(s.token().text.clone());
        }
        out
    }

    #[test]
    fn words_and_cjk_bigrams() {
        assert_eq!(
            terms("The Whale, 白鲸记。A 鲸"),
            vec!["the", "whale", "白鲸", "鲸记", "a", "鲸"]
        );
    }

    #[test]
    fn finds_english_and_chinese_documents_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let docs = vec![
            (
                "a".to_string(),
                "Photosynthesis turns light into chemical energy in plants.".to_string(),
            ),
            (
                "b".to_string(),
                "The harpooneer threw his iron at the white whale.".to_string(),
            ),
            (
                "c".to_string(),
                "光合作用是植物利用光能制造有机物的过程。".to_string(),
            ),
            (
                "d".to_string(),
                "人民日报报道了春节期间的铁路运输情况。".to_string(),
            ),
        ];
        let path = dir.path().join("idx");
        let index = RagIndex::open_or_build(&path, docs.clone().into_iter().map(Ok)).unwrap();
        assert_eq!(index.documents, 4);
        assert_eq!(
            index
                .search("how do plants make energy from light?", 2)
                .unwrap()[0]
                .id,
            "a"
        );
        assert_eq!(index.search("植物的光合作用", 2).unwrap()[0].id, "c");
        assert_eq!(
            index.search("whale (harpoon) AND \"iron", 1).unwrap()[0].id,
            "b"
        );
        drop(index);
        // Reopened without the documents.
        let again = RagIndex::open_or_build(&path, std::iter::empty()).unwrap();
        assert_eq!(
            (
                again.documents,
                again.search("铁路", 1).unwrap()[0].id.as_str()
            ),
            (4, "d")
        );
    }
}
