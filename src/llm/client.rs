//! The client of one synthesis stage: chat completions from any OpenAI-compatible endpoint (OpenAI,
//! vLLM, SGLang, llama.cpp's `llama-server`) with bounded concurrency, requests- and tokens-per-minute
//! limits, timeouts and retries, and every response stored in the [`ResponseCache`] before it is used.
//!
//! The API key is read from the environment variable the stage names and handed to async-openai, which
//! keeps it as a secret; no message of ours holds it, and [`LlmClient::redact`] removes it from any text
//! an endpoint sends back (an error page that echoes the request's headers, say).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequest, FinishReason, StopConfiguration,
};
use async_openai::types::chat::{ResponseFormat, ResponseFormatJsonSchema};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::cache::{CachedResponse, RequestKey, ResponseCache};
use super::pacer::Pacer;
use super::transport::{FailureKind, HttpFailure, Transport, failure_of};

/// Where and how to ask: the options every synthesis stage takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// The API's base URL, up to and including `/v1`.
    pub endpoint: String,
    pub model: String,
    /// The environment variable that holds the API key; none for endpoints without one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Sent to endpoints that sample reproducibly with it (vLLM, llama-server).
    #[serde(default)]
    pub seed: Option<i64>,
    /// Requests in flight at most.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Requests per minute at most (0: no limit).
    #[serde(default)]
    pub rpm: u64,
    /// Prompt and completion tokens per minute at most (0: no limit); a request reserves its prompt's
    /// estimate plus `max_tokens`, corrected by the usage the endpoint reports.
    #[serde(default)]
    pub tpm: u64,
    /// Seconds one attempt may take, answer included.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Attempts after the first, on 429, 5xx, timeouts and broken connections.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// The first backoff, doubled at each retry up to `backoff_max_s`, with full jitter.
    #[serde(default = "default_backoff_s")]
    pub backoff_s: f64,
    #[serde(default = "default_backoff_max_s")]
    pub backoff_max_s: f64,
    /// How answers that must be JSON are asked for: `text` (the prompt asks; every endpoint),
    /// `json_object` (JSON mode), or `json_schema` (the stage's schema, enforced by the endpoint's
    /// constrained decoding: OpenAI's structured outputs, vLLM, SGLang, llama-server's grammars).
    #[serde(default)]
    pub response_format: ResponseFormatMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormatMode {
    #[default]
    Text,
    JsonObject,
    JsonSchema,
}

/// What one request asks for beyond its messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    /// Generation ends at any of these.
    pub stop: &'a [String],
    /// The answer's JSON schema and its name, when the answer must be JSON.
    pub schema: Option<(&'a str, &'a serde_json::Value)>,
}

fn default_max_tokens() -> u32 {
    1024
}
fn default_concurrency() -> usize {
    16
}
fn default_timeout() -> f64 {
    120.0
}
fn default_retries() -> u32 {
    6
}
fn default_backoff_s() -> f64 {
    1.0
}
fn default_backoff_max_s() -> f64 {
    60.0
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// What identifies a request in the cache: the model, the conversation, the sampling parameters, and
/// the attempt (a response that failed validation is asked for again under a new key).
#[derive(Serialize)]
struct Identity<'a> {
    model: &'a str,
    messages: &'a [Message],
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: u32,
    seed: Option<i64>,
    stop: &'a [String],
    /// The response format sent (absent for text, so earlier cache keys stay valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<(ResponseFormatMode, &'a serde_json::Value)>,
    attempt: u32,
}

/// A response, and whether it came from the cache.
#[derive(Debug, Clone)]
pub struct Answer {
    pub response: CachedResponse,
    pub cached: bool,
}

/// Why a request has no answer.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The endpoint refused this request (4xx other than rate limits): retrying cannot help. The
    /// document goes to the rejects if the status is about the request (400, 413, 422); the run
    /// stops if it is about the configuration (401, 403, 404).
    #[error("the endpoint refused the request: HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    /// Retries ran out on rate limits, server errors, timeouts or broken connections.
    #[error("no answer after {attempts} attempts; the last: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("{0}")]
    Other(String),
}

impl LlmError {
    /// Whether the failure is this request's alone (the rest of the run may go on).
    pub fn is_per_request(&self) -> bool {
        matches!(self, LlmError::Refused { status, .. } if matches!(status, 400 | 413 | 422))
    }
}

/// Counters of one stage's requests, for its report.
#[derive(Debug, Default)]
pub struct Usage {
    pub requests: AtomicU64,
    pub cached: AtomicU64,
    pub retries: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    pub cached_completion_tokens: AtomicU64,
}

pub struct LlmClient {
    client: Client<OpenAIConfig>,
    config: LlmConfig,
    key: Option<String>,
    slots: Semaphore,
    rpm: Option<Pacer>,
    tpm: Option<Pacer>,
    cache: Arc<ResponseCache>,
    /// Requests being sent, so that an identical one waits for that answer instead of paying again
    /// (duplicate documents are common before deduplication).
    inflight: std::sync::Mutex<HashMap<RequestKey, Arc<tokio::sync::OnceCell<CachedResponse>>>>,
    pub usage: Usage,
    /// The completion tokens a request is expected to use, for the tokens-per-minute reservation:
    /// a running mean of what the endpoint reported (`max_tokens / 2` before the first answer).
    expected_completion: AtomicU64,
    /// Prompt bytes a token (an f64's bits), a running mean of what the endpoint reported.
    bytes_per_token: AtomicU64,
    /// Requests the endpoint answered (2xx) in this run.
    answered: AtomicU64,
}

/// rustls needs a process-wide crypto provider before the first client is built.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl LlmClient {
    pub fn new(config: &LlmConfig, cache: Arc<ResponseCache>) -> Result<Self> {
        install_crypto_provider();
        if config.max_concurrency == 0 {
            bail!("max_concurrency must be at least 1");
        }
        if !(config.timeout_s > 0.0 && config.timeout_s.is_finite()) {
            bail!("timeout_s must be a positive number of seconds");
        }
        let key = match &config.api_key_env {
            Some(var) => {
                let value = std::env::var(var).map_err(|_| {
                    anyhow::anyhow!("api_key_env: the environment variable {var} is not set")
                })?;
                Some(value)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(config.timeout_s))
            .connect_timeout(Duration::from_secs_f64(config.timeout_s.min(30.0)))
            .pool_max_idle_per_host(config.max_concurrency)
            .build()
            .context("building the HTTP client")?;
        // An empty key sends no usable Authorization header; async-openai would otherwise read
        // OPENAI_API_KEY by itself, and we send only the key the pipeline names.
        let openai = OpenAIConfig::new()
            .with_api_base(config.endpoint.trim_end_matches('/'))
            .with_api_key(key.clone().unwrap_or_default());
        let client = Client::with_config(openai).with_http_service(Transport::new(http));
        Ok(Self {
            client,
            config: config.clone(),
            key: key.filter(|k| k.len() >= 4),
            slots: Semaphore::new(config.max_concurrency),
            rpm: Pacer::per_minute(config.rpm),
            tpm: Pacer::per_minute(config.tpm),
            cache,
            inflight: std::sync::Mutex::new(HashMap::new()),
            usage: Usage::default(),
            expected_completion: AtomicU64::new(u64::from(config.max_tokens / 2)),
            bytes_per_token: AtomicU64::new(3f64.to_bits()),
            answered: AtomicU64::new(0),
        })
    }

    /// Requests the endpoint answered in this run, or the cache did.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed) + self.usage.cached.load(Ordering::Relaxed)
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// `text` with the API key replaced, for anything that is logged, reported or stored.
    pub fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(k) if text.contains(k.as_str()) => text.replace(k.as_str(), "[api key]"),
            _ => text.to_string(),
        }
    }

    /// The answer to `messages`: from the cache when this exact request (`attempt` included) was
    /// answered before, otherwise from the endpoint, stored durably before it is returned.
    pub async fn ask(
        &self,
        messages: &[Message],
        ask: Ask<'_>,
        attempt: u32,
    ) -> Result<Answer, LlmError> {
        let stop = ask.stop;
        let format = self.format(ask);
        let identity = Identity {
            model: &self.config.model,
            messages,
            temperature: self.config.temperature,
            top_p: self.config.top_p,
            max_tokens: self.config.max_tokens,
            seed: self.config.seed,
            stop,
            format: format.map(|(mode, _, schema)| (mode, schema)),
            attempt,
        };
        let key = RequestKey::of(&identity).map_err(|e| LlmError::Other(format!("{e:#}")))?;
        let stored = self
            .cache
            .get(&key)
            .map_err(|e| LlmError::Other(format!("{e:#}")))?;
        if let Some(response) = stored {
            return Ok(self.answered_by_cache(response));
        }
        let cell = Arc::clone(
            self.inflight
                .lock()
                .expect("inflight lock")
                .entry(key)
                .or_default(),
        );
        let sent = std::sync::atomic::AtomicBool::new(false);
        let result = cell
            .get_or_try_init(|| async {
                // Stored meanwhile by an identical request that finished before this one began.
                if let Some(stored) = self
                    .cache
                    .get(&key)
                    .map_err(|e| LlmError::Other(format!("{e:#}")))?
                {
                    return Ok(stored);
                }
                sent.store(true, Ordering::Relaxed);
                let mut response = self.send(messages, stop, format).await?;
                // Never store the key, should an endpoint echo it back.
                response.content = self.redact(&response.content);
                let (cache, stored) = (Arc::clone(&self.cache), response.clone());
                tokio::task::spawn_blocking(move || cache.put(&key, &stored))
                    .await
                    .map_err(|e| LlmError::Other(format!("storing a response: {e}")))?
                    .map_err(|e| LlmError::Other(format!("storing a response: {e:#}")))?;
                Ok::<_, LlmError>(response)
            })
            .await
            .cloned();
        // Later identical requests find the answer in the cache (or ask again after a failure).
        self.inflight.lock().expect("inflight lock").remove(&key);
        let response = result?;
        if sent.load(Ordering::Relaxed) {
            Ok(Answer {
                response,
                cached: false,
            })
        } else {
            // An identical request in flight answered it.
            Ok(self.answered_by_cache(response))
        }
    }

    fn answered_by_cache(&self, response: CachedResponse) -> Answer {
        self.usage.cached.fetch_add(1, Ordering::Relaxed);
        self.usage
            .cached_prompt_tokens
            .fetch_add(response.prompt_tokens, Ordering::Relaxed);
        self.usage
            .cached_completion_tokens
            .fetch_add(response.completion_tokens, Ordering::Relaxed);
        Answer {
            response,
            cached: true,
        }
    }

    /// The response format to send for `ask`, if any: (mode, schema name, schema).
    fn format<'a>(
        &self,
        ask: Ask<'a>,
    ) -> Option<(ResponseFormatMode, &'a str, &'a serde_json::Value)> {
        match (self.config.response_format, ask.schema) {
            (ResponseFormatMode::Text, _) | (_, None) => None,
            (mode, Some((name, schema))) => Some((mode, name, schema)),
        }
    }

    /// Sends the request, retrying what may succeed on another attempt.
    async fn send(
        &self,
        messages: &[Message],
        stop: &[String],
        format: Option<(ResponseFormatMode, &str, &serde_json::Value)>,
    ) -> Result<CachedResponse, LlmError> {
        let _slot = self.slots.acquire().await.expect("never closed");
        let request = self.request(messages, stop, format);
        // The prompt's tokens at the bytes-a-token ratio the endpoint's usage has shown so far (3 to
        // start: ~4 in English, ~3 in Chinese), plus the mean completion; the reservation is
        // corrected by the usage reported. Reserving `max_tokens` for the completion would pace a
        // run far below its limit, since waiters cannot gain from corrections made after they were
        // scheduled.
        let prompt_bytes: u64 = messages.iter().map(|m| m.content.len() as u64 + 16).sum();
        let per_token = f64::from_bits(self.bytes_per_token.load(Ordering::Relaxed));
        let estimate = (prompt_bytes as f64 / per_token).ceil() as u64
            + self.expected_completion.load(Ordering::Relaxed);
        let mut attempt = 0u32;
        loop {
            if let Some(p) = &self.rpm {
                p.acquire(1).await;
            }
            if let Some(p) = &self.tpm {
                p.acquire(estimate).await;
            }
            self.usage.requests.fetch_add(1, Ordering::Relaxed);
            let result = self.client.chat().create(request.clone()).await;
            match result {
                Ok(r) => {
                    let usage = r
                        .usage
                        .as_ref()
                        .map(|u| (u64::from(u.prompt_tokens), u64::from(u.completion_tokens)));
                    // Without reported usage the reservation stands as it was estimated.
                    let (prompt, completion) = usage.unwrap_or((0, 0));
                    if usage.is_some() {
                        if let Some(p) = &self.tpm {
                            p.adjust((prompt + completion) as i64 - estimate as i64);
                        }
                        if prompt > 0 {
                            let seen = prompt_bytes as f64 / prompt as f64;
                            let mean = f64::from_bits(self.bytes_per_token.load(Ordering::Relaxed));
                            let mean = (mean * 7.0 + seen.clamp(0.5, 16.0)) / 8.0;
                            self.bytes_per_token
                                .store(mean.to_bits(), Ordering::Relaxed);
                        }
                        let mean = self.expected_completion.load(Ordering::Relaxed);
                        self.expected_completion
                            .store((mean * 7 + completion).div_ceil(8), Ordering::Relaxed);
                    }
                    self.answered.fetch_add(1, Ordering::Relaxed);
                    self.usage
                        .prompt_tokens
                        .fetch_add(prompt, Ordering::Relaxed);
                    self.usage
                        .completion_tokens
                        .fetch_add(completion, Ordering::Relaxed);
                    let choice = r.choices.into_iter().next();
                    let truncated = choice
                        .as_ref()
                        .is_some_and(|c| c.finish_reason == Some(FinishReason::Length));
                    let content = choice.and_then(|c| c.message.content).unwrap_or_default();
                    return Ok(CachedResponse {
                        content,
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                        truncated,
                    });
                }
                Err(e) => {
                    let failure = match failure_of(&e) {
                        Some(f) => f.clone(),
                        // A 2xx whose body is not a chat completion: a proxy's page, a cut body.
                        None => HttpFailure {
                            kind: FailureKind::Connection,
                            retry_after: None,
                            message: e.to_string(),
                        },
                    };
                    let message = self.redact(&failure.to_string());
                    if !failure.retryable() {
                        let FailureKind::Status(status) = failure.kind else {
                            return Err(LlmError::Other(message));
                        };
                        return Err(LlmError::Refused {
                            status,
                            message: self.redact(&failure.message),
                        });
                    }
                    if attempt >= self.config.max_retries {
                        return Err(LlmError::GaveUp {
                            attempts: attempt + 1,
                            last: message,
                        });
                    }
                    let wait = self.backoff(attempt, failure.retry_after);
                    tracing::debug!(
                        "retry {} in {:.2} s after: {message}",
                        attempt + 1,
                        wait.as_secs_f64()
                    );
                    self.usage.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Full jitter (a uniform wait up to the exponential bound), but never less than `Retry-After`.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let bound = (self.config.backoff_s * 2f64.powi(attempt.min(30) as i32))
            .min(self.config.backoff_max_s)
            .max(0.0);
        let jittered = Duration::from_secs_f64(rand::rng().random_range(0.0..=bound));
        jittered.max(retry_after.unwrap_or_default())
    }

    #[allow(deprecated)] // `max_tokens`: what llama-server, vLLM and SGLang read.
    fn request(
        &self,
        messages: &[Message],
        stop: &[String],
        format: Option<(ResponseFormatMode, &str, &serde_json::Value)>,
    ) -> CreateChatCompletionRequest {
        let messages = messages
            .iter()
            .map(|m| -> ChatCompletionRequestMessage {
                match m.role {
                    Role::System => {
                        ChatCompletionRequestSystemMessage::from(m.content.as_str()).into()
                    }
                    Role::User => ChatCompletionRequestUserMessage::from(m.content.as_str()).into(),
                    Role::Assistant => {
                        ChatCompletionRequestAssistantMessage::from(m.content.as_str()).into()
                    }
                }
            })
            .collect();
        CreateChatCompletionRequest {
            model: self.config.model.clone(),
            messages,
            temperature: self.config.temperature,
            top_p: self.config.top_p,
            max_tokens: Some(self.config.max_tokens),
            seed: self.config.seed,
            stop: (!stop.is_empty()).then(|| StopConfiguration::StringArray(stop.to_vec())),
            response_format: format.map(|(mode, name, schema)| match mode {
                ResponseFormatMode::JsonSchema => ResponseFormat::JsonSchema {
                    json_schema: ResponseFormatJsonSchema {
                        name: name.to_string(),
                        schema: schema.clone(),
                        strict: Some(true),
                        description: None,
                    },
                },
                _ => ResponseFormat::JsonObject,
            }),
            ..Default::default()
        }
    }
}
