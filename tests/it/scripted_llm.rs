//! A scripted OpenAI-compatible server on 127.0.0.1, for the synthesis tests: it answers
//! `/v1/chat/completions` as each test's script says (good JSON, fenced, truncated, garbage, 429, 500,
//! a hang past the timeout, a connection broken mid-answer) and records every request it was sent.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    /// The last user message.
    pub prompt: String,
    pub authorization: Option<String>,
    /// How many times this prompt had been sent before (0 for the first), the note of a request
    /// asked again after an invalid answer aside (see [`base_prompt`]).
    pub nth: usize,
    /// The request's `response_format`, if any.
    pub response_format: Option<Value>,
    /// The request's `stop`, if any.
    pub stop: Option<Value>,
}

/// What the server answers.
pub enum Reply {
    /// A chat completion with this content; `length` sets finish_reason `length`.
    Content { content: String, length: bool },
    Status {
        code: u16,
        body: String,
        retry_after: Option<u32>,
    },
    /// No answer for this long (beyond the client's timeout).
    Hang(Duration),
    /// Headers and half a body, then the connection breaks.
    Reset,
}

type Script = dyn Fn(&Hit) -> Reply + Send + Sync;

struct Inner {
    hits: Mutex<Vec<Hit>>,
    seen: Mutex<HashMap<String, usize>>,
    script: Box<Script>,
    latency: Duration,
    /// Tokens reported for each answer: a quarter of the prompt's and of the content's characters.
    tokens: Mutex<(u64, u64)>,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: Mutex<(usize, usize)>,
}

/// Counts a request as in flight until it is dropped (answered, or the connection gone).
struct InFlight(Arc<Inner>);

impl InFlight {
    fn new(inner: &Arc<Inner>) -> Self {
        let mut f = inner.in_flight.lock().unwrap();
        f.0 += 1;
        f.1 = f.1.max(f.0);
        Self(Arc::clone(inner))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.lock().unwrap().0 -= 1;
    }
}

pub struct ScriptedServer {
    pub url: String,
    inner: Arc<Inner>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedServer {
    /// Starts the server on its own runtime thread (so that tests may block, or run the binary).
    pub fn start(
        latency: Duration,
        script: impl Fn(&Hit) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let inner = Arc::new(Inner {
            hits: Mutex::new(Vec::new()),
            seen: Mutex::new(HashMap::new()),
            script: Box::new(script),
            latency,
            tokens: Mutex::new((0, 0)),
            in_flight: Mutex::new((0, 0)),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let state = Arc::clone(&inner);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new()
                    .route("/v1/chat/completions", post(complete))
                    .with_state(state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Self {
            url: format!("http://{addr}/v1"),
            inner,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// A server that answers every request with [`good_answer`].
    pub fn answering_well(latency: Duration) -> Self {
        Self::start(latency, |hit: &Hit| Reply::Content {
            content: good_answer(&hit.prompt).to_string(),
            length: false,
        })
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.inner.hits.lock().unwrap().clone()
    }

    /// The most requests the server was answering at once.
    pub fn peak_in_flight(&self) -> usize {
        self.inner.in_flight.lock().unwrap().1
    }

    /// Prompt and completion tokens of every answer the server gave.
    pub fn tokens(&self) -> (u64, u64) {
        *self.inner.tokens.lock().unwrap()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Hanging handlers would hold a graceful shutdown: the runtime is dropped with the thread.
        if let Some(t) = self.thread.take() {
            drop(t);
        }
    }
}

async fn complete(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    let at = Instant::now();
    let _in_flight = InFlight::new(&inner);
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let prompt = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    let nth = {
        let mut seen = inner.seen.lock().unwrap();
        let n = seen.entry(base_prompt(&prompt).to_string()).or_insert(0);
        *n += 1;
        *n - 1
    };
    let hit = Hit {
        at,
        prompt,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        nth,
        response_format: request.get("response_format").cloned(),
        stop: request.get("stop").cloned(),
    };
    inner.hits.lock().unwrap().push(hit.clone());
    let reply = (inner.script)(&hit);
    tokio::time::sleep(inner.latency).await;
    match reply {
        Reply::Content { content, length } => {
            // Plain-text answers (cot_rag's) are given as JSON strings by `good_answer`.
            let content = match serde_json::from_str::<Value>(&content) {
                Ok(Value::String(text)) => text,
                _ => content,
            };
            let p = (hit.prompt.chars().count() / 4).max(1) as u64;
            let c = (content.chars().count() / 4).max(1) as u64;
            {
                let mut t = inner.tokens.lock().unwrap();
                t.0 += p;
                t.1 += c;
            }
            axum::Json(json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 1_700_000_000u32,
                "model": request["model"],
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": if length { "length" } else { "stop" },
                }],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
            }))
            .into_response()
        }
        Reply::Status {
            code,
            body,
            retry_after,
        } => {
            let mut r = (StatusCode::from_u16(code).unwrap(), body).into_response();
            if let Some(s) = retry_after {
                r.headers_mut()
                    .insert("retry-after", s.to_string().parse().unwrap());
            }
            r
        }
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::GATEWAY_TIMEOUT, "hung").into_response()
        }
        Reply::Reset => {
            let chunks: Vec<Result<&'static str, std::io::Error>> = vec![
                Ok("{\"id\": \"chatcmpl-test\", \"choi"),
                Err(std::io::Error::other("connection reset by the script")),
            ];
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap()
        }
    }
}

/// A prompt without the note that a stage adds when it asks again after an invalid answer.
pub fn base_prompt(prompt: &str) -> &str {
    [
        "\n\n(Your previous answer could not be read",
        "\n\n（上一次的回答无法读取",
    ]
    .iter()
    .find_map(|m| prompt.find(m))
    .map_or(prompt, |i| &prompt[..i])
}

/// The text between `<<<` and `>>>` of a prompt (the document).
pub fn document_of(prompt: &str) -> &str {
    match (prompt.find("<<<\n"), prompt.rfind("\n>>>")) {
        (Some(a), Some(b)) if a + 4 <= b => &prompt[a + 4..b],
        _ => "",
    }
}

/// A valid answer to any bundled template, made from the prompt itself so that tests can check the
/// rows: QA pairs quote the document's first line, scores are its length mod 6, segments halve the
/// numbered sentences, tags depend on its length. cot_rag's turns are plain text (a JSON string here).
pub fn good_answer(prompt: &str) -> Value {
    let doc = document_of(prompt);
    let first: String = doc.lines().next().unwrap_or("").chars().take(60).collect();
    if prompt.contains("question and answer pairs") || prompt.contains("问答") {
        json!({"pairs": [
            {"question": format!("What does this say: {first}?"), "answer": first},
            {"question": "How long is it?", "answer": format!("{} characters.", doc.chars().count())},
        ]})
    } else if prompt.contains("rating a web page") || prompt.contains("教学材料") {
        json!({"reason": "scripted", "score": doc.chars().count() % 6})
    } else if prompt.contains("numbered sentences") || prompt.contains("按句编号") {
        let n = prompt.lines().filter(|l| l.starts_with('[')).count();
        json!({"segments": [{"start": 1, "end": n / 2}, {"start": n / 2 + 1, "end": n}]})
    } else if prompt.contains("Work backwards") || prompt.contains("反推") {
        let segments = prompt.matches("Segment ").count() + prompt.matches("段落 ").count();
        json!({
            "summaries": (0..segments).map(|i| format!("summary {i}")).collect::<Vec<_>>(),
            "cot": ["1. premise", "2. conclusion"],
            "query": format!("the question of {segments} segments"),
        })
    } else if prompt.contains("draft chain of thought") || prompt.contains("思维链草稿") {
        json!({"cot": "1. checked\n2. refined", "answer": "the answer"})
    } else if prompt.contains("search tool") || prompt.contains("检索工具") {
        // The first turn of cot_rag (later turns are answered by `rag_turn`).
        json!("I need a fact first. <|begin_search_query|>whale ship captain")
    } else if prompt.contains("just searched a library") || prompt.contains("刚刚在文档库中")
    {
        let first_doc = prompt
            .lines()
            .find_map(|l| l.strip_prefix("[1] "))
            .unwrap_or("nothing")
            .chars()
            .take(40)
            .collect::<String>();
        json!(format!("Final information: the library says {first_doc}"))
    } else if prompt.starts_with("Go on reasoning") || prompt.starts_with("请从停下的地方继续推理")
    {
        json!("So the answer follows.\nFinal answer: Ahab")
    } else if prompt.contains("knowledge") || prompt.contains("知识") {
        let n = doc.chars().count();
        let domain = ["History", "history ", "Literature"][n % 3];
        json!({
            "domain": domain,
            "topics": ["Whaling", "whaling", "Poetry"],
            "key_points": ["k"],
            "difficulty": if n.is_multiple_of(2) { "Basic" } else { "advanced" },
        })
    } else {
        json!({"unknown": prompt.chars().take(40).collect::<String>()})
    }
}
