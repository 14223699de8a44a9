//! The response cache: every LLM response stored durably as it arrives, so that a rerun after a crash
//! or a kill sends only the requests that have no stored response, and never pays twice.
//!
//! One append-only JSON Lines file. Each record is written with a single `write_all` of the whole
//! line, so a kill leaves at most one partial line at the end; opening the cache drops that tail (and
//! says so) before appending. In memory the cache keeps only each key's place in the file (~56 bytes a
//! response), not the responses: a synthesis run over millions of documents must not hold them all.
//! Why by hand and not a database: the records are written once and never updated, and a line-per-
//! record file is what users inspect and `grep` when a response looks wrong.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A request's identity: the sha256 of its model, messages and sampling parameters, as canonical
/// JSON. The endpoint's address is not part of it: the same model behind another server (a local
/// vLLM instead of a hosted API) answers the same request, and the key must not change with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey([u8; 32]);

impl RequestKey {
    /// The key of `request`, any serialisable value; `serde_json` writes struct fields in declaration
    /// order and maps sorted (no `preserve_order`), so equal requests give equal bytes.
    pub fn of(request: &impl Serialize) -> Result<Self> {
        let bytes = serde_json::to_vec(request).context("serialising a request for its key")?;
        Ok(Self(Sha256::digest(&bytes).into()))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    fn from_hex(s: &str) -> Option<Self> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(s, &mut key).ok()?;
        Some(Self(key))
    }
}

/// One stored response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedResponse {
    /// The text the model returned.
    pub content: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The endpoint stopped at `max_tokens` (finish reason `length`).
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Serialize, Deserialize)]
struct Record<'a> {
    key: String,
    #[serde(borrow)]
    response: std::borrow::Cow<'a, str>,
    prompt_tokens: u64,
    completion_tokens: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// Where a record's line lies in the file.
#[derive(Clone, Copy)]
struct Span {
    offset: u64,
    len: u32,
}

pub struct ResponseCache {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    end: u64,
    index: HashMap<RequestKey, Span>,
}

impl ResponseCache {
    /// Opens (or creates) the cache file at `path`, indexing the records it holds.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("opening the response cache {}", path.display()))?;
        // One writer at a time: two processes appending would each index the other's lines at the
        // wrong offsets. A shared `cache:` is shared between runs one after the other.
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => anyhow::anyhow!(
                "the response cache {} is in use by another openseek run",
                path.display()
            ),
            std::fs::TryLockError::Error(e) => {
                anyhow::Error::new(e).context(format!("locking {}", path.display()))
            }
        })?;
        let mut index = HashMap::new();
        let mut end = 0u64;
        let mut reader = BufReader::new(&mut file);
        let mut line = Vec::new();
        let mut line_no = 0u64;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if line.last() != Some(&b'\n') {
                // The partial record of a killed run: its request is sent again.
                tracing::warn!(
                    "{}: line {line_no} is incomplete (an interrupted write); dropping its {n} bytes",
                    path.display()
                );
                break;
            }
            let record: Record = serde_json::from_slice(&line).with_context(|| {
                format!("{}: line {line_no} is not a cache record", path.display())
            })?;
            let key = RequestKey::from_hex(&record.key).with_context(|| {
                format!(
                    "{}: line {line_no}: bad key {:?}",
                    path.display(),
                    record.key
                )
            })?;
            let len = u32::try_from(n)
                .with_context(|| format!("{}: line {line_no} is over 4 GB", path.display()))?;
            index.insert(key, Span { offset: end, len });
            end += n as u64;
        }
        drop(reader);
        if file.metadata()?.len() != end {
            file.set_len(end)
                .with_context(|| format!("truncating {}", path.display()))?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok(Self {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner { file, end, index }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Responses stored.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("cache lock").index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored response to `key`, if any.
    pub fn get(&self, key: &RequestKey) -> Result<Option<CachedResponse>> {
        let inner = self.inner.lock().expect("cache lock");
        let Some(span) = inner.index.get(key).copied() else {
            return Ok(None);
        };
        let mut buf = vec![0u8; span.len as usize];
        inner
            .file
            .read_exact_at(&mut buf, span.offset)
            .with_context(|| format!("reading {}", self.path.display()))?;
        drop(inner);
        let record: Record = serde_json::from_slice(&buf).with_context(|| {
            format!("{}: a record at byte {}", self.path.display(), span.offset)
        })?;
        anyhow::ensure!(
            record.key == key.hex(),
            "{}: the record at byte {} is not the one indexed there (was the file changed?)",
            self.path.display(),
            span.offset
        );
        Ok(Some(CachedResponse {
            content: record.response.into_owned(),
            prompt_tokens: record.prompt_tokens,
            completion_tokens: record.completion_tokens,
            truncated: record.truncated,
        }))
    }

    /// Stores `response` under `key`, durably before returning: the line is appended whole and synced
    /// (`fdatasync`), so a response that was paid for is never lost to a crash after this returns.
    /// The sync runs outside the lock, so that concurrent stores share the disk's flushes instead of
    /// queueing for them. Blocking: call it from a blocking thread in async code.
    pub fn put(&self, key: &RequestKey, response: &CachedResponse) -> Result<()> {
        let record = Record {
            key: key.hex(),
            response: std::borrow::Cow::Borrowed(&response.content),
            prompt_tokens: response.prompt_tokens,
            completion_tokens: response.completion_tokens,
            truncated: response.truncated,
        };
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        let len = u32::try_from(line.len()).context("a response over 4 GB")?;
        let file = {
            let mut inner = self.inner.lock().expect("cache lock");
            if inner.index.contains_key(key) {
                return Ok(());
            }
            inner
                .file
                .write_all(&line)
                .with_context(|| format!("appending to {}", self.path.display()))?;
            let offset = inner.end;
            inner.end += line.len() as u64;
            inner.index.insert(*key, Span { offset, len });
            inner.file.try_clone()?
        };
        file.sync_data()
            .with_context(|| format!("syncing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(i: usize) -> CachedResponse {
        CachedResponse {
            content: format!("answer {i}: 「中文」 and \"quotes\"\nand a newline"),
            prompt_tokens: 10 + i as u64,
            completion_tokens: i as u64,
            truncated: i.is_multiple_of(2),
        }
    }

    fn key(i: usize) -> RequestKey {
        RequestKey::of(&serde_json::json!({"model": "m", "prompt": i})).unwrap()
    }

    #[test]
    fn responses_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache/responses.jsonl");
        let cache = ResponseCache::open(&path).unwrap();
        for i in 0..100 {
            cache.put(&key(i), &response(i)).unwrap();
        }
        // A second put of a stored key writes nothing.
        cache.put(&key(3), &response(4)).unwrap();
        drop(cache);
        let cache = ResponseCache::open(&path).unwrap();
        assert_eq!(cache.len(), 100);
        for i in 0..100 {
            assert_eq!(cache.get(&key(i)).unwrap(), Some(response(i)));
        }
        assert_eq!(cache.get(&key(100)).unwrap(), None);
    }

    /// A kill in the middle of a write leaves a partial last line: it is dropped, the records before
    /// it are kept, and appending goes on from a clean end.
    #[test]
    fn a_partial_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.jsonl");
        let cache = ResponseCache::open(&path).unwrap();
        for i in 0..3 {
            cache.put(&key(i), &response(i)).unwrap();
        }
        drop(cache);
        let whole = std::fs::read(&path).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"key":"abc","response":"cut o"#).unwrap();
        drop(f);
        let cache = ResponseCache::open(&path).unwrap();
        assert_eq!(cache.len(), 3);
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        cache.put(&key(3), &response(3)).unwrap();
        drop(cache);
        let cache = ResponseCache::open(&path).unwrap();
        assert_eq!(cache.len(), 4);
        assert_eq!(cache.get(&key(3)).unwrap(), Some(response(3)));
    }

    #[test]
    fn a_corrupt_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.jsonl");
        std::fs::write(&path, "not json\n").unwrap();
        let e = format!("{:#}", ResponseCache::open(&path).err().unwrap());
        assert!(e.contains("line 1 is not a cache record"), "{e}");
    }

    #[test]
    fn equal_requests_have_equal_keys() {
        let a = serde_json::json!({"model": "m", "temperature": 0.2, "messages": ["x"]});
        let b = serde_json::json!({"messages": ["x"], "temperature": 0.2, "model": "m"});
        assert_eq!(RequestKey::of(&a).unwrap(), RequestKey::of(&b).unwrap());
        let c = serde_json::json!({"messages": ["x"], "temperature": 0.3, "model": "m"});
        assert_ne!(RequestKey::of(&a).unwrap(), RequestKey::of(&c).unwrap());
    }

    /// Writers on several threads: every record lands whole.
    #[test]
    fn concurrent_puts_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.jsonl");
        let cache = ResponseCache::open(&path).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let cache = &cache;
                s.spawn(move || {
                    for i in (t..200).step_by(4) {
                        cache.put(&key(i), &response(i)).unwrap();
                    }
                });
            }
        });
        drop(cache);
        let cache = ResponseCache::open(&path).unwrap();
        assert_eq!(cache.len(), 200);
        assert_eq!(cache.get(&key(123)).unwrap(), Some(response(123)));
    }
}
