//! Reading the JSON a prompt asks for out of what a model actually returns: bare JSON, JSON in a
//! fenced code block, or JSON between a preamble and trailing talk. Small and base models do all
//! three; a response that holds no complete JSON value is an error the stage retries, then rejects
//! as `synthesis:<stage>:unparseable`.

use serde_json::Value;

/// Why a response holds no usable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unparseable {
    #[error("the response is empty")]
    Empty,
    #[error("the JSON ends before it is complete (a truncated response?)")]
    Truncated,
    #[error("no JSON value in the response")]
    NoJson,
}

/// The first complete JSON object or array in `text`, in the order: the whole text, the first
/// ```` ```json ```` (or bare ```` ``` ````) block that parses, the first `{` or `[` from which a value
/// parses (text after the value is ignored).
pub fn extract_json(text: &str) -> Result<Value, Unparseable> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Unparseable::Empty);
    }
    if let Some(v) = std::iter::once(trimmed)
        .chain(fenced_blocks(trimmed))
        .find_map(structured)
    {
        return Ok(v);
    }
    let mut truncated = false;
    for (at, _) in trimmed.match_indices(['{', '[']) {
        let mut values = serde_json::Deserializer::from_str(&trimmed[at..]).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) => return Ok(v),
            Some(Err(e)) if e.is_eof() => truncated = true,
            _ => {}
        }
    }
    Err(if truncated {
        Unparseable::Truncated
    } else {
        Unparseable::NoJson
    })
}

/// `text` as a JSON object or array, if it is one.
fn structured(text: &str) -> Option<Value> {
    serde_json::from_str::<Value>(text.trim())
        .ok()
        .filter(|v| v.is_object() || v.is_array())
}

/// The contents of each fenced code block (```` ``` ```` with an optional language tag), in order; an
/// unclosed last block runs to the end of the text.
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        // The language tag, if any, runs to the end of the opening line.
        let body_start = after.find('\n').map_or(after.len(), |n| n + 1);
        let body = &after[body_start..];
        match body.find("```") {
            Some(close) => {
                blocks.push(&body[..close]);
                rest = &body[close + 3..];
            }
            None => {
                blocks.push(body);
                break;
            }
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bare_json() {
        let v = extract_json(r#" {"questions": [{"q": "Why?", "a": "Because."}]} "#).unwrap();
        assert_eq!(v["questions"][0]["a"], "Because.");
        assert_eq!(extract_json("[1, 2]").unwrap(), json!([1, 2]));
    }

    #[test]
    fn fenced_json_with_talk_around_it() {
        let text = "Sure! Here are the pairs:\n```json\n{\"score\": 3}\n```\nLet me know if you need more.";
        assert_eq!(extract_json(text).unwrap(), json!({"score": 3}));
        // A first block that is not JSON (code the document quoted) is passed over.
        let text = "```python\nprint('x')\n```\nand\n```\n{\"score\": 4}\n```";
        assert_eq!(extract_json(text).unwrap(), json!({"score": 4}));
    }

    #[test]
    fn json_between_a_preamble_and_trailing_text() {
        let text = "The answer is {\"score\": 5, \"reason\": \"uses {braces} and [brackets]\"} — done. {\"x\": 1}";
        assert_eq!(
            extract_json(text).unwrap(),
            json!({"score": 5, "reason": "uses {braces} and [brackets]"})
        );
        // Chinese around and inside.
        let text = "结果如下：{\"知识点\": [\"勾股定理\"]}。";
        assert_eq!(extract_json(text).unwrap()["知识点"][0], "勾股定理");
    }

    #[test]
    fn truncated_and_garbage_responses_are_errors() {
        assert_eq!(
            extract_json("```json\n{\"questions\": [{\"q\": \"Wh"),
            Err(Unparseable::Truncated)
        );
        assert_eq!(
            extract_json("I cannot help with that."),
            Err(Unparseable::NoJson)
        );
        assert_eq!(extract_json("  \n"), Err(Unparseable::Empty));
        // Braces that never make JSON.
        assert_eq!(extract_json("a {b} c [1, 2"), Err(Unparseable::Truncated));
        assert_eq!(extract_json("a {b} c"), Err(Unparseable::NoJson));
        // A bare scalar is not what a template asks for.
        assert_eq!(extract_json("42"), Err(Unparseable::NoJson));
    }
}
