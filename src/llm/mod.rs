//! The LLM layer of the synthesis stages: requests to any OpenAI-compatible endpoint, and the durable
//! cache of their responses that makes a synthesis run resumable without paying twice.

pub mod cache;
pub mod client;
pub mod pacer;
pub mod parse;
pub mod prompts;
pub mod transport;
