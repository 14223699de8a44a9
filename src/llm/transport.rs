//! The HTTP transport under async-openai: one request, one attempt, and a failure that keeps what the
//! retry decision needs.
//!
//! async-openai's own transport retries 429s and 5xx by itself, out of sight of our rate limits and
//! counters, and when an error body is not OpenAI's exact shape (llama-server's `"code"` is a number)
//! its error loses the HTTP status altogether. Installed with `Client::with_http_service`, this service
//! replaces it: every non-2xx answer becomes an [`HttpFailure`] with the status, `Retry-After` and the
//! start of the body, and every transport error a [`HttpFailure`] saying whether it timed out or the
//! connection failed. The client above decides what to retry.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub enum FailureKind {
    /// The endpoint answered with a non-2xx status.
    Status(u16),
    /// No answer within the timeout.
    Timeout,
    /// Connecting failed, or the connection broke before the answer was complete.
    Connection,
    /// Anything else reqwest reports (a malformed URL, a redirect loop).
    Other,
}

#[derive(Debug, Clone)]
pub struct HttpFailure {
    pub kind: FailureKind,
    /// `Retry-After`, in seconds, when the endpoint sent one.
    pub retry_after: Option<Duration>,
    /// The error body (up to 2 KB) or reqwest's message.
    pub message: String,
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            FailureKind::Status(s) => write!(f, "HTTP {s}: {}", self.message),
            FailureKind::Timeout => write!(f, "timed out: {}", self.message),
            FailureKind::Connection => write!(f, "connection failed: {}", self.message),
            FailureKind::Other => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for HttpFailure {}

impl HttpFailure {
    /// Whether another attempt may succeed: rate limits, server errors, timeouts and broken
    /// connections. 408 (request timeout) and 409 (conflict, which some gateways send under load) too.
    /// A `Retry-After` given as an HTTP date is not read (APIs send seconds); the backoff applies.
    pub fn retryable(&self) -> bool {
        match self.kind {
            // 501 (not implemented) and 505 (HTTP version) will not change on another attempt.
            FailureKind::Status(s) => {
                matches!(s, 408 | 409 | 425 | 429) || (s >= 500 && !matches!(s, 501 | 505))
            }
            FailureKind::Timeout | FailureKind::Connection => true,
            FailureKind::Other => false,
        }
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            FailureKind::Timeout
        } else if e.is_connect() || e.is_request() || e.is_body() || e.is_decode() {
            // A reset while sending or reading the body shows as a request/body error.
            FailureKind::Connection
        } else {
            FailureKind::Other
        };
        // Without the URL: it is ours, and the message is clearer without it.
        Self {
            kind,
            retry_after: None,
            message: error_chain(&e.without_url()),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The transport: sends the request once with a reqwest client (whose timeout bounds the attempt).
#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
}

impl Transport {
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

type Fut = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

impl tower::Service<HttpRequestFactory> for Transport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let request = factory.build().await?;
            let fail = |f: HttpFailure| OpenAIError::Boxed(Box::new(f));
            let response = client
                .execute(request)
                .await
                .map_err(|e| fail(HttpFailure::from_reqwest(e)))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(3600.0)));
            let body = response.bytes().await.unwrap_or_default();
            let mut message = String::from_utf8_lossy(&body[..body.len().min(2048)]).into_owned();
            if message.trim().is_empty() {
                message = status.canonical_reason().unwrap_or("no body").to_string();
            }
            Err(fail(HttpFailure {
                kind: FailureKind::Status(status.as_u16()),
                retry_after,
                message,
            }))
        })
    }
}

/// The [`HttpFailure`] inside an async-openai error, if our transport raised it.
pub fn failure_of(e: &OpenAIError) -> Option<&HttpFailure> {
    match e {
        OpenAIError::Boxed(b) => b.downcast_ref::<HttpFailure>(),
        _ => None,
    }
}
