//! What each synthesis method asks, how it checks the answer, and the rows it makes of it.
//!
//! A response is JSON where the template asks for JSON ([`extract_json`] also finds it in fenced
//! code or between talk); one that holds none, or whose JSON lacks what the method needs, is asked for
//! again as a new request up to `parse_retries` times, then the document is rejected as
//! `synthesis:<stage>:unparseable` with the last raw text kept for inspection.

use std::sync::atomic::Ordering;

use arrow::datatypes::{DataType, Field};
use serde_json::{Value, json};

use super::options::{Method, SynthOptions};
use super::rag_index::RagIndex;
use crate::llm::client::{Ask, LlmClient, LlmError, Message};
use crate::llm::parse::{Unparseable, extract_json};
use crate::llm::prompts::Prompts;

/// Refusals (400, 413, 422) before any answer that stop a run as misconfigured.
const REFUSALS_BEFORE_ANY_ANSWER: u64 = 8;

const BEGIN_QUERY: &str = "<|begin_search_query|>";
const END_QUERY: &str = "<|end_search_query|>";
const BEGIN_RESULT: &str = "<|begin_search_result|>";
const END_RESULT: &str = "<|end_search_result|>";

/// One value of a method's column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Str(String),
    Int(i64),
    Strs(Vec<String>),
}

/// A row a method made: its id, its training text, and its values of the method's columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Produced {
    pub id: String,
    pub text: String,
    pub cells: Vec<Cell>,
}

/// What became of one input row.
#[derive(Debug)]
pub enum Outcome {
    Rows(Vec<Produced>),
    Reject { reason: String, detail: String },
}

/// One input row, as a method sees it.
#[derive(Debug, Clone)]
pub struct Doc {
    pub id: String,
    pub text: String,
    pub lang: &'static str,
    /// `cot_forward`: the draft's query and chain of thought.
    pub query: Option<String>,
    pub cot: Option<String>,
    /// `cot_rag`: the instruction to answer.
    pub instruction: Option<String>,
}

/// What a stage needs to ask.
pub struct Ctx {
    pub client: LlmClient,
    pub prompts: Prompts,
    pub opts: SynthOptions,
    pub label: String,
    /// Responses that failed validation (each then asked for again or rejected).
    pub invalid: std::sync::atomic::AtomicU64,
    /// `cot_rag`: the index, built (or opened) before the first row.
    pub index: std::sync::OnceLock<RagIndex>,
    /// `cot_rag`: searches made.
    pub searches: std::sync::atomic::AtomicU64,
    /// Requests the endpoint refused (400, 413, 422).
    pub refused: std::sync::atomic::AtomicU64,
}

/// The columns a method adds.
pub fn columns(opts: &SynthOptions) -> Vec<Field> {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let list = |n: &str| {
        Field::new(
            n,
            DataType::List(std::sync::Arc::new(Field::new(
                "item",
                DataType::Utf8,
                true,
            ))),
            true,
        )
    };
    match opts.method {
        Method::QualityAnnotate => vec![
            Field::new(&opts.column, DataType::Int64, true),
            s(&format!("{}_reason", opts.column)),
        ],
        Method::KnowledgeTags => vec![
            s("kp_domain"),
            list("kp_topics"),
            list("kp_key_points"),
            s("kp_difficulty"),
        ],
        Method::QaSimple => vec![s("question"), s("answer")],
        Method::CotBackward => vec![s("query"), s("cot"), list("summaries")],
        Method::CotForward => vec![s("query"), s("cot"), s("answer"), s("draft_cot")],
        Method::CotRag => vec![s("instruction"), s("trace"), s("answer"), list("documents")],
    }
}

/// The JSON schema of the answer `template` asks for, for endpoints that enforce it
/// (`response_format: json_schema`); the stage still checks what it needs of the answer.
/// Lists are bounded (`maxItems`) so that constrained decoding cannot run on to `max_tokens`.
fn schema_of(template: &str, opts: &SynthOptions) -> Value {
    let object = |properties: Value| {
        let required: Vec<&String> = properties.as_object().expect("an object").keys().collect();
        json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
    };
    let string = json!({"type": "string"});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    match template {
        "quality_annotate" => object(json!({"reason": string, "score": {"type": "integer"}})),
        "knowledge_tags" => object(json!({
            "domain": string,
            "topics": strings,
            "key_points": strings,
            "difficulty": {"type": "string", "enum": ["basic", "intermediate", "advanced"]},
        })),
        "qa_simple" => object(json!({
            "pairs": {
                "type": "array",
                "minItems": 1,
                "maxItems": opts.pairs,
                "items": object(json!({"question": string, "answer": string})),
            },
        })),
        "cot_segment" => object(json!({
            "segments": {
                "type": "array",
                "minItems": 1,
                "maxItems": opts.max_segments,
                "items": object(json!({"start": {"type": "integer"}, "end": {"type": "integer"}})),
            },
        })),
        "cot_backward" => object(json!({"summaries": strings, "cot": string, "query": string})),
        "cot_forward" => object(json!({"cot": string, "answer": string})),
        _ => json!({"type": "object"}),
    }
}

/// A failure that stops the run (the endpoint is misconfigured or down), as opposed to a reject.
pub type Fatal = anyhow::Error;

impl Ctx {
    fn unparseable(&self) -> String {
        format!("synthesis:{}:unparseable", self.label)
    }

    /// Asks `template` and returns what `check` makes of the response's JSON, asking again (as a
    /// new request) while it fails. `Ok(Err(raw))` when every attempt failed validation.
    async fn ask_json<T>(
        &self,
        template: &str,
        lang: &str,
        vars: Value,
        check: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<Result<T, (String, String)>, AskError> {
        let prompt = self
            .prompts
            .render(template, lang, &vars)
            .map_err(AskError::Fatal)?;
        let schema = schema_of(template, &self.opts);
        let ask = Ask {
            stop: &[],
            schema: Some((template, &schema)),
        };
        let mut last = (String::new(), String::new());
        for attempt in 0..=self.opts.parse_retries {
            // Asked again, the prompt says what was wrong: at temperature 0 the same request would
            // most likely get the same answer.
            let prompt = if attempt == 0 {
                prompt.clone()
            } else if lang == "zh" {
                format!(
                    "{prompt}\n\n（上一次的回答无法读取：{}。请只输出所要求的 JSON。）",
                    last.0
                )
            } else {
                format!(
                    "{prompt}\n\n(Your previous answer could not be read: {}. Answer with the JSON only.)",
                    last.0
                )
            };
            let answer = self
                .client
                .ask(&[Message::user(prompt)], ask, attempt)
                .await?;
            let raw = &answer.response.content;
            let why = match extract_json(after_thinking(raw)) {
                Ok(v) => match check(&v) {
                    Ok(t) => return Ok(Ok(t)),
                    Err(why) => why,
                },
                Err(Unparseable::NoJson) if answer.response.truncated => {
                    Unparseable::Truncated.to_string()
                }
                Err(e) => e.to_string(),
            };
            self.invalid
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            last = (why, self.client.redact(raw));
        }
        Ok(Err(last))
    }

    /// The outcome of one input row.
    pub async fn run(&self, doc: &Doc) -> Result<Outcome, Fatal> {
        let result = match self.opts.method {
            Method::QualityAnnotate => self.quality(doc).await,
            Method::KnowledgeTags => self.tags(doc).await,
            Method::QaSimple => self.qa(doc).await,
            Method::CotBackward => self.cot_backward(doc).await,
            Method::CotForward => self.cot_forward(doc).await,
            Method::CotRag => self.cot_rag(doc).await,
        };
        match result {
            Ok(Ok(rows)) => Ok(Outcome::Rows(rows)),
            Ok(Err((why, raw))) => Ok(Outcome::Reject {
                reason: self.unparseable(),
                detail: format!("{why}; response: {raw}"),
            }),
            Err(AskError::Llm(e)) if e.is_per_request() => {
                // A 400 may be this document's (too long for the context) or the stage's (an
                // option the endpoint does not take): the latter refuses every request, so
                // refusals before any answer stop the run instead of rejecting the whole input.
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                if refused >= REFUSALS_BEFORE_ANY_ANSWER && self.client.answered() == 0 {
                    return Err(anyhow::anyhow!(
                        "{}: the endpoint refused the first {refused} requests and answered none; \
                         check the stage's options (the last: {e})",
                        self.label
                    ));
                }
                Ok(Outcome::Reject {
                    reason: format!("synthesis:{}:refused", self.label),
                    detail: e.to_string(),
                })
            }
            Err(AskError::Llm(e)) => {
                Err(anyhow::anyhow!("{}: document {}: {e}", self.label, doc.id))
            }
            Err(AskError::Fatal(e)) => {
                Err(e.context(format!("{}: document {}", self.label, doc.id)))
            }
        }
    }

    fn input(&self, doc: &Doc) -> String {
        truncate(&doc.text, self.opts.max_input_chars).to_string()
    }

    async fn quality(&self, doc: &Doc) -> Asked {
        let vars = json!({ "text": self.input(doc) });
        let checked = self
            .ask_json("quality_annotate", doc.lang, vars, |v| {
                let score = score_of(v.get("score").ok_or("no \"score\"")?)?;
                let reason = v.get("reason").and_then(Value::as_str).unwrap_or("");
                Ok((score, reason.to_string()))
            })
            .await?;
        Ok(checked.map(|(score, reason)| {
            vec![Produced {
                id: doc.id.clone(),
                text: doc.text.clone(),
                cells: vec![Cell::Int(score), Cell::Str(reason)],
            }]
        }))
    }

    async fn tags(&self, doc: &Doc) -> Asked {
        let vars = json!({ "text": self.input(doc) });
        let checked = self
            .ask_json("knowledge_tags", doc.lang, vars, |v| {
                let domain = nonempty_str(v, "domain")?;
                let topics = strings(v, "topics")?;
                let points = strings(v, "key_points")?;
                let difficulty = nonempty_str(v, "difficulty")?.to_lowercase();
                if !["basic", "intermediate", "advanced"].contains(&difficulty.as_str()) {
                    return Err(format!(
                        "difficulty '{difficulty}' is not basic, intermediate or advanced"
                    ));
                }
                Ok(vec![
                    Cell::Str(domain),
                    Cell::Strs(topics),
                    Cell::Strs(points),
                    Cell::Str(difficulty),
                ])
            })
            .await?;
        Ok(checked.map(|cells| {
            vec![Produced {
                id: doc.id.clone(),
                text: doc.text.clone(),
                cells,
            }]
        }))
    }

    async fn qa(&self, doc: &Doc) -> Asked {
        let vars = json!({ "text": self.input(doc), "pairs": self.opts.pairs });
        let checked = self
            .ask_json("qa_simple", doc.lang, vars, |v| {
                let pairs = v
                    .get("pairs")
                    .or(Some(v).filter(|v| v.is_array()))
                    .and_then(Value::as_array)
                    .ok_or("no \"pairs\" list")?;
                let good: Vec<(String, String)> = pairs
                    .iter()
                    .filter_map(|p| {
                        let q = p.get("question")?.as_str()?.trim();
                        let a = p.get("answer")?.as_str()?.trim();
                        (says_something(q) && says_something(a))
                            .then(|| (q.to_string(), a.to_string()))
                    })
                    .collect();
                if good.is_empty() {
                    return Err("no pair with a question and an answer".into());
                }
                Ok(good
                    .into_iter()
                    .take(self.opts.pairs as usize)
                    .collect::<Vec<_>>())
            })
            .await?;
        let (q_label, a_label) = labels(doc.lang);
        Ok(checked.map(|pairs| {
            pairs
                .into_iter()
                .enumerate()
                .map(|(k, (q, a))| Produced {
                    id: format!("{}/qa/{k}", doc.id),
                    text: format!("{q_label}{q}\n{a_label}{a}"),
                    cells: vec![Cell::Str(q), Cell::Str(a)],
                })
                .collect()
        }))
    }

    async fn cot_backward(&self, doc: &Doc) -> Asked {
        let sentences = sentences(&self.input(doc));
        if sentences.is_empty() {
            return Ok(Err(("the document has no text".into(), String::new())));
        }
        // Short documents are their own segments: nothing to save by asking.
        let segments: Vec<String> = if sentences.len() <= 3 {
            sentences.clone()
        } else {
            let n = sentences.len();
            let vars = json!({ "sentences": sentences, "max_segments": self.opts.max_segments });
            let ranges = self
                .ask_json("cot_segment", doc.lang, vars, |v| segment_ranges(v, n))
                .await?;
            match ranges {
                Ok(r) => r
                    .into_iter()
                    .map(|(a, b)| sentences[a - 1..b].join(" "))
                    .collect(),
                Err(e) => return Ok(Err(e)),
            }
        };
        let vars = json!({ "segments": segments });
        let checked = self
            .ask_json("cot_backward", doc.lang, vars, |v| {
                let query = nonempty_str(v, "query")?;
                let cot = text_or_steps(v, "cot")?;
                let summaries = strings(v, "summaries").unwrap_or_default();
                Ok((query, cot, summaries))
            })
            .await?;
        Ok(checked.map(|(query, cot, summaries)| {
            vec![Produced {
                id: format!("{}/cot", doc.id),
                text: format!("{query}\n\n{cot}"),
                cells: vec![Cell::Str(query), Cell::Str(cot), Cell::Strs(summaries)],
            }]
        }))
    }

    async fn cot_forward(&self, doc: &Doc) -> Asked {
        let (Some(query), Some(draft)) = (&doc.query, &doc.cot) else {
            return Ok(Err((
                "the row has no query or draft chain of thought".into(),
                String::new(),
            )));
        };
        let vars = json!({ "query": query, "cot": truncate(draft, self.opts.max_input_chars) });
        let checked = self
            .ask_json("cot_forward", doc.lang, vars, |v| {
                Ok((text_or_steps(v, "cot")?, nonempty_str(v, "answer")?))
            })
            .await?;
        let (q_label, a_label) = labels(doc.lang);
        Ok(checked.map(|(cot, answer)| {
            vec![Produced {
                id: format!("{}/fwd", doc.id),
                text: format!("{q_label}{query}\n\n{cot}\n\n{a_label}{answer}"),
                cells: vec![
                    Cell::Str(query.clone()),
                    Cell::Str(cot),
                    Cell::Str(answer),
                    Cell::Str(draft.clone()),
                ],
            }]
        }))
    }
}

impl Ctx {
    /// The Search-o1 loop: the model reasons and asks for searches between markers (generation stops
    /// at the end marker); each query is run against the index, the hits are condensed by a
    /// reason-in-documents call to what helps the query, and the result is injected for the model to
    /// go on, until it writes its final answer or the turn limit is reached.
    async fn cot_rag(&self, doc: &Doc) -> Asked {
        let index = self
            .index
            .get()
            .expect("the index is built before the rows");
        let Some(instruction) = doc
            .instruction
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(Err(("the row has no instruction".into(), String::new())));
        };
        let instruction = truncate(instruction, self.opts.max_input_chars);
        let vars = json!({ "instruction": instruction, "max_searches": self.opts.max_searches });
        let prompt = self
            .prompts
            .render("cot_rag", doc.lang, &vars)
            .map_err(AskError::Fatal)?;
        let stop = [END_QUERY.to_string()];
        let (mut trace, mut searches, mut used) = (String::new(), 0u32, Vec::<String>::new());
        for _turn in 0..self.opts.max_turns {
            let mut messages = vec![Message::user(prompt.clone())];
            if !trace.is_empty() {
                messages.push(Message::assistant(trace.clone()));
                messages.push(Message::user(if doc.lang == "zh" {
                    "请从停下的地方继续推理：需要时再检索，或者写出“最终答案：”。"
                } else {
                    "Go on reasoning from where you stopped: search again if you need to, or write the \"Final answer:\" line."
                }));
            }
            let ask = Ask {
                stop: &stop,
                schema: None,
            };
            let answer = self.client.ask(&messages, ask, 0).await?.response;
            let mut said = answer.content.as_str();
            // An endpoint that ignores `stop` goes on past the query (and may invent results):
            // what follows the end marker is not the model's to say.
            if let Some(q) = said.find(BEGIN_QUERY)
                && let Some(end) = said[q..].find(END_QUERY)
            {
                said = &said[..q + end];
            } else if answer.truncated && said.contains(BEGIN_QUERY) {
                // Cut off by max_tokens inside a query: not a query to search.
                said = &said[..said.rfind(BEGIN_QUERY).expect("contains")];
            }
            let said = said.trim_end();
            let before = trace.len();
            trace.push_str(said);
            let query_at = said.rfind(BEGIN_QUERY);
            if let Some((at, answer)) = final_answer(said)
                && query_at.is_none_or(|q| q < at)
            {
                return Ok(Ok(vec![Produced {
                    id: format!("{}/rag", doc.id),
                    text: format!("{instruction}\n\n{trace}"),
                    cells: vec![
                        Cell::Str(instruction.to_string()),
                        Cell::Str(trace),
                        Cell::Str(answer),
                        Cell::Strs(used),
                    ],
                }]));
            }
            let Some(q) = query_at
                .map(|i| said[i + BEGIN_QUERY.len()..].trim())
                .filter(|q| !q.is_empty())
            else {
                trace.push('\n');
                continue;
            };
            trace.push_str(END_QUERY);
            let result = if searches < self.opts.max_searches {
                searches += 1;
                self.searches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let hits = index.search(q, self.opts.top_k).map_err(AskError::Fatal)?;
                for h in &hits {
                    if !used.contains(&h.id) {
                        used.push(h.id.clone());
                    }
                }
                let documents: Vec<&str> = hits
                    .iter()
                    .map(|h| truncate(&h.text, self.opts.doc_chars))
                    .collect();
                let vars = json!({
                    "instruction": instruction,
                    // Everything before this query, this turn's reasoning included.
                    "reasoning": &trace[..before + query_at.expect("a query")],
                    "query": q,
                    "documents": documents,
                });
                let p = self
                    .prompts
                    .render("rag_condense", doc.lang, &vars)
                    .map_err(AskError::Fatal)?;
                let condensed = self
                    .client
                    .ask(&[Message::user(p)], Ask::default(), 0)
                    .await?
                    .response
                    .content;
                information(&condensed).to_string()
            } else if doc.lang == "zh" {
                "检索次数已用完，请根据已有信息作答。".to_string()
            } else {
                "No more searches are allowed; answer with what you have.".to_string()
            };
            trace.push_str(&format!("\n{BEGIN_RESULT}{result}{END_RESULT}\n"));
        }
        Ok(Err((
            format!("no final answer after {} turns", self.opts.max_turns),
            self.client.redact(&trace),
        )))
    }
}

/// Where the final answer starts in `said`, and the answer.
fn final_answer(said: &str) -> Option<(usize, String)> {
    [
        "Final answer:",
        "Final Answer:",
        "FINAL ANSWER:",
        "最终答案：",
        "最终答案:",
    ]
    .iter()
    .filter_map(|m| {
        said.rfind(m)
            .map(|i| (i, said[i + m.len()..].trim().to_string()))
    })
    .filter(|(_, a)| !a.is_empty())
    .max_by_key(|(i, _)| *i)
}

/// A condensing answer without its "Final information:" label.
fn information(said: &str) -> &str {
    let said = after_thinking(said).trim();
    for m in [
        "Final information:",
        "Final Information:",
        "最终信息：",
        "最终信息:",
    ] {
        if let Some(i) = said.rfind(m) {
            return said[i + m.len()..].trim();
        }
    }
    said
}

type Asked = Result<Result<Vec<Produced>, (String, String)>, AskError>;

#[derive(Debug)]
enum AskError {
    Llm(LlmError),
    Fatal(anyhow::Error),
}

impl From<LlmError> for AskError {
    fn from(e: LlmError) -> Self {
        AskError::Llm(e)
    }
}

/// The labels of a question and its answer in a made row's text.
fn labels(lang: &str) -> (&'static str, &'static str) {
    if lang == "zh" {
        ("问题：", "答案：")
    } else {
        ("Question: ", "Answer: ")
    }
}

/// An integer score 0–5, from a number or a numeric string ("4", "4/5").
fn score_of(v: &Value) -> Result<i64, String> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s
            .split('/')
            .next()
            .and_then(|s| s.trim().parse::<f64>().ok()),
        _ => None,
    }
    .ok_or_else(|| format!("score {v} is not a number"))?;
    if !(0.0..=5.0).contains(&n) || n.fract() != 0.0 {
        return Err(format!("score {n} is not an integer from 0 to 5"));
    }
    Ok(n as i64)
}

/// Whether `s` says something: a letter or digit, not only the template's placeholder ("...").
fn says_something(s: &str) -> bool {
    s.chars().any(char::is_alphanumeric)
}

fn nonempty_str(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| says_something(s))
        .map(str::to_string)
        .ok_or_else(|| format!("no \"{key}\" text"))
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = v
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no \"{key}\" list"))?
        .iter()
        .filter_map(|s| s.as_str().map(str::trim).filter(|s| says_something(s)))
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return Err(format!("\"{key}\" is empty"));
    }
    Ok(list)
}

/// A text field, or a list of steps joined one per line (models give either for a chain of thought).
fn text_or_steps(v: &Value, key: &str) -> Result<String, String> {
    match v.get(key) {
        Some(Value::Array(_)) => Ok(strings(v, key)?.join("\n")),
        _ => nonempty_str(v, key),
    }
}

/// Segment boundaries as 1-based inclusive sentence ranges, in order and not overlapping, within
/// `1..=n`; ranges the model got wrong are errors (asked again), gaps between them are allowed.
fn segment_ranges(v: &Value, n: usize) -> Result<Vec<(usize, usize)>, String> {
    let list = v
        .get("segments")
        .or(Some(v).filter(|v| v.is_array()))
        .and_then(Value::as_array)
        .ok_or("no \"segments\" list")?;
    let mut out = Vec::new();
    let mut after = 0usize;
    for s in list {
        let (a, b) = match s {
            Value::Object(_) => (s.get("start"), s.get("end")),
            Value::Array(p) if p.len() == 2 => (p.first(), p.get(1)),
            _ => (None, None),
        };
        let as_n = |x: Option<&Value>| x.and_then(Value::as_u64).map(|x| x as usize);
        let (Some(a), Some(b)) = (as_n(a), as_n(b)) else {
            return Err(format!("segment {s} has no start and end"));
        };
        if a == 0 || a > b || b > n || a <= after {
            return Err(format!(
                "segment {a}-{b} is outside 1-{n}, reversed or overlaps the one before"
            ));
        }
        out.push((a, b));
        after = b;
    }
    if out.is_empty() {
        return Err("no segments".into());
    }
    Ok(out)
}

/// What a reasoning model says after its `<think>…</think>` block (the whole text when it has none):
/// the answer is asked for after the thinking, and the thinking may hold drafts of it.
fn after_thinking(text: &str) -> &str {
    match text.rfind("</think>") {
        Some(i) => &text[i + "</think>".len()..],
        None => text,
    }
}

/// At most `max` characters of `text`, cut after the last line end in the final fifth if there is one.
pub fn truncate(text: &str, max: usize) -> &str {
    let Some((cut, _)) = text.char_indices().nth(max) else {
        return text;
    };
    let head = &text[..cut];
    match head.rfind('\n') {
        Some(nl) if nl >= cut / 5 * 4 => &head[..nl],
        _ => head,
    }
}

/// The sentences of `text`: split after `.`, `!`, `?` followed by a space, after `。！？`, and at
/// line ends; empty pieces dropped. At most 200, so that a prompt stays bounded.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_space = chars.peek().is_none_or(|(_, n)| n.is_whitespace());
        let end = match c {
            '\n' | '。' | '！' | '？' => true,
            '.' | '!' | '?' => next_space,
            _ => false,
        };
        if end {
            let piece = text[start..i + c.len_utf8()].trim();
            if !piece.is_empty() {
                out.push(piece.to_string());
            }
            start = i + c.len_utf8();
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out.truncate(200);
    out
}

/// `en` or `zh` for a row: from its language value when it has one, else Chinese when at least a
/// fifth of its first 2,000 characters are CJK.
pub fn detect_lang(language: Option<&str>, text: &str) -> &'static str {
    if let Some(l) = language.map(str::trim).filter(|l| !l.is_empty()) {
        return if l.to_lowercase().starts_with("zh") {
            "zh"
        } else {
            "en"
        };
    }
    let (mut cjk, mut all) = (0usize, 0usize);
    for c in text.chars().filter(|c| !c.is_whitespace()).take(2000) {
        all += 1;
        cjk += openseek_udfs::is_cjk(c) as usize;
    }
    if all > 0 && cjk * 5 >= all {
        "zh"
    } else {
        "en"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_read_after_the_thinking() {
        let raw = "<think>maybe {\"answer\": \"draft\"}</think>\n{\"cot\": \"1. x\", \"answer\": \"final\"}";
        let v = extract_json(after_thinking(raw)).unwrap();
        assert_eq!(v["answer"], "final");
        assert_eq!(after_thinking("no thinking"), "no thinking");
    }

    #[test]
    fn final_answers_and_condensed_information_are_found_in_both_languages() {
        assert_eq!(final_answer("think\nFinal answer: 42").unwrap().1, "42");
        assert_eq!(final_answer("推理……\n最终答案：长安").unwrap().1, "长安");
        assert!(final_answer("Final answer:").is_none());
        assert_eq!(
            information("Final information: whales are mammals."),
            "whales are mammals."
        );
        assert_eq!(information("just text"), "just text");
    }

    #[test]
    fn placeholders_are_not_answers() {
        let v =
            json!({"pairs": [{"question": "...", "answer": "..."}], "query": "……", "cot": "1. x"});
        assert!(!says_something("..."));
        assert!(says_something("光"));
        assert!(nonempty_str(&v, "query").is_err());
        assert!(nonempty_str(&v, "cot").is_ok());
    }

    #[test]
    fn scores_accept_numbers_and_numeric_strings_only_in_range() {
        assert_eq!(score_of(&json!(3)), Ok(3));
        assert_eq!(score_of(&json!("4/5")), Ok(4));
        assert_eq!(score_of(&json!(5.0)), Ok(5));
        assert!(score_of(&json!(6)).is_err());
        assert!(score_of(&json!(2.5)).is_err());
        assert!(score_of(&json!("high")).is_err());
    }

    #[test]
    fn segments_must_be_ordered_and_within_the_document() {
        assert_eq!(
            segment_ranges(
                &json!({"segments": [{"start": 1, "end": 3}, {"start": 5, "end": 6}]}),
                6
            ),
            Ok(vec![(1, 3), (5, 6)])
        );
        assert_eq!(
            segment_ranges(&json!([[1, 2], [3, 4]]), 4),
            Ok(vec![(1, 2), (3, 4)])
        );
        assert!(segment_ranges(&json!({"segments": [{"start": 1, "end": 7}]}), 6).is_err());
        assert!(segment_ranges(&json!({"segments": [[2, 3], [3, 4]]}), 6).is_err());
        assert!(segment_ranges(&json!({"segments": []}), 6).is_err());
    }

    #[test]
    fn sentences_split_in_both_languages_and_truncation_keeps_characters_whole() {
        assert_eq!(
            sentences("Dr. Smith came. He left!\n中文句子。第二句？ end"),
            vec![
                "Dr.",
                "Smith came.",
                "He left!",
                "中文句子。",
                "第二句？",
                "end"
            ]
        );
        let t = "光合作用".repeat(10);
        assert_eq!(truncate(&t, 5), "光合作用光");
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(
            truncate("line one\nline two is long", 20),
            "line one\nline two is"
        );
        assert_eq!(detect_lang(None, "光合作用把光能转化为化学能 energy"), "zh");
        assert_eq!(detect_lang(Some("zh-Hans"), "text"), "zh");
        assert_eq!(detect_lang(None, "plain English text"), "en");
    }
}
