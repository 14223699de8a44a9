//! Exact-substring removal on real text: boilerplate planted in documents of `corpus/en` and
//! `corpus/zh` is removed and unique text kept, the 100-byte threshold is exact, parts give what one
//! suffix array gives, corpus order decides which copy stays, tokens work as bytes do, and no character
//! is ever cut.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::UInt32Type;
use openseek::context::Engine;
use openseek::pipeline::{RunOptions, run_pipeline};
use openseek::progress::Progress;
use openseek::stages::substring_dedup::find::{Corpus, FindOptions, Policy, find_repeats};
use openseek::stages::substring_dedup::options::Snap;
use openseek::stages::substring_dedup::snap::snap_span;

use crate::common::*;

/// Boilerplate of our own wording (so the corpus cannot hold it already), in both languages: a
/// licence paragraph, a cookie banner, a navigation menu.
const BOILERPLATE: [&str; 6] = [
    "All material on the Northwind Reading Room pages is released under the Northwind Open Text \
     Licence 3.1: you may copy, adapt and redistribute it for any purpose, provided that you credit \
     the Northwind Reading Room, link to the licence, and state whether you changed anything. No \
     warranty of any kind is given.",
    "We use cookies to remember your settings, measure how the Northwind Reading Room is used and \
     improve it. Click \"Accept all\" to agree, or \"Manage preferences\" to choose which cookies we may set.",
    "Home | Catalogue | Reading Rooms | Events | Membership | Donate | Contact | Privacy | Terms of Use | Sitemap",
    "北风阅览室网站所有内容均依照北风开放文本许可协议第三版发布：您可以为任何目的复制、改编和再发布，\
     但须注明来源为北风阅览室，附上许可协议链接，并说明是否作了修改。本站不提供任何形式的担保。",
    "本网站使用Cookie记住您的设置、统计访问情况并改进服务。点击“全部接受”表示同意，或点击“管理偏好”选择允许的Cookie类型。",
    "首页 | 馆藏目录 | 阅览室 | 活动预告 | 会员服务 | 捐赠 | 联系我们 | 隐私政策 | 使用条款 | 网站地图",
];

/// Copies of each boilerplate planted.
const COPIES: usize = 60;

/// One planted copy: boilerplate `which` at bytes `[start, end)` of its document.
#[derive(Debug, Clone, Copy)]
struct Plant {
    which: usize,
    start: usize,
    end: usize,
}

/// Real documents with and without the boilerplate, in corpus order.
struct Planted {
    ids: Vec<String>,
    original: Vec<String>,
    planted: Vec<String>,
    /// Per document, its copies in the planted text, in order.
    plants: Vec<Vec<Plant>>,
}

/// `en` English and `zh` Chinese documents of the corpus, interleaved, with each boilerplate planted
/// at random character boundaries of `COPIES` random documents of its language (and a few of the other).
fn planted_corpus(corpus: &Path, en: usize, zh: usize, seed: u64) -> Planted {
    let mut rng = Rng(seed);
    let en_docs = corpus_en(corpus);
    let zh_docs = corpus_zh(corpus);
    let mut docs: Vec<(String, String, bool)> = Vec::new();
    let (mut e, mut z) = (0, 0);
    while e < en || z < zh {
        if e < en && (z >= zh || rng.below(en + zh) < en) {
            docs.push((en_docs[e].0.clone(), en_docs[e].1.clone(), false));
            e += 1;
        } else {
            docs.push((zh_docs[z].0.clone(), zh_docs[z].1.clone(), true));
            z += 1;
        }
    }
    // Where each copy goes: (document, byte offset in the original, boilerplate).
    let mut inserts: Vec<(usize, usize, usize)> = Vec::new();
    for (which, _) in BOILERPLATE.iter().enumerate() {
        let chinese = which >= 3;
        for copy in 0..COPIES {
            let other = copy % 10 == 9;
            let d = loop {
                let d = rng.below(docs.len());
                if docs[d].2 == (chinese != other) {
                    break d;
                }
            };
            let text = &docs[d].1;
            let mut at = rng.below(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            inserts.push((d, at, which));
        }
    }
    inserts.sort();
    let mut planted = Planted {
        ids: Vec::new(),
        original: Vec::new(),
        planted: Vec::new(),
        plants: Vec::new(),
    };
    for (d, (id, text, _)) in docs.into_iter().enumerate() {
        let mut out = String::new();
        let mut plants = Vec::new();
        let mut from = 0;
        for &(_, at, which) in inserts.iter().filter(|i| i.0 == d) {
            out.push_str(&text[from..at]);
            plants.push(Plant {
                which,
                start: out.len(),
                end: out.len() + BOILERPLATE[which].len(),
            });
            out.push_str(BOILERPLATE[which]);
            from = at;
        }
        out.push_str(&text[from..]);
        planted.ids.push(id);
        planted.original.push(text);
        planted.planted.push(out);
        planted.plants.push(plants);
    }
    planted
}

fn write_jsonl(path: &Path, ids: &[String], texts: &[String]) {
    let mut s = String::new();
    for (id, text) in ids.iter().zip(texts) {
        s.push_str(&serde_json::json!({"id": id, "text": text}).to_string());
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

async fn run(dir: &Path, name: &str, input: &str, stage: &str) -> openseek::report::Report {
    run_with(dir, name, input, stage, 2).await
}

async fn run_with(
    dir: &Path,
    name: &str,
    input: &str,
    stage: &str,
    partitions: usize,
) -> openseek::report::Report {
    let engine = Engine::new(Some(partitions));
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\ninput: {input}\noutput: {{path: {}, format: parquet}}\nstages:\n  - substring_dedup: {stage}\n",
            dir.join(name).display()
        ),
    )
    .unwrap();
    let opts = RunOptions {
        print_summary: false,
        ..Default::default()
    };
    run_pipeline(&engine, &p, &opts).await.unwrap();
    report(&dir.join(name))
}

/// A run's output rows: id → (text, removed spans).
type Output = HashMap<String, (String, Vec<(usize, usize)>)>;

/// The output rows of run `name`.
fn output(dir: &Path, name: &str) -> Output {
    let batches = read_parquet_dir(&dir.join(name).join("data"));
    let mut out = HashMap::new();
    for b in &batches {
        let ids = strings(std::slice::from_ref(b), "id");
        let texts = strings(std::slice::from_ref(b), "text");
        let spans = spans_of(b);
        for ((id, text), spans) in ids.into_iter().zip(texts).zip(spans) {
            out.insert(id.unwrap(), (text.unwrap(), spans));
        }
    }
    out
}

fn spans_of(b: &RecordBatch) -> Vec<Vec<(usize, usize)>> {
    let list = b
        .column_by_name("substring_spans")
        .unwrap()
        .as_list::<i32>();
    (0..list.len())
        .map(|i| {
            let v = list.value(i);
            let s = v.as_struct();
            let (a, e) = (
                s.column(0).as_primitive::<UInt32Type>(),
                s.column(1).as_primitive::<UInt32Type>(),
            );
            (0..s.len())
                .map(|j| (a.value(j) as usize, e.value(j) as usize))
                .collect()
        })
        .collect()
}

fn mask(len: usize, spans: &[(usize, usize)]) -> Vec<bool> {
    let mut m = vec![false; len];
    for &(a, b) in spans {
        m[a..b].iter_mut().for_each(|x| *x = true);
    }
    m
}

fn cut(text: &str, spans: &[(usize, usize)]) -> String {
    let mut out = String::new();
    let mut at = 0;
    for &(a, b) in spans {
        out.push_str(&text[at..a]);
        at = b;
    }
    out.push_str(&text[at..]);
    out
}

/// Recall of the planted copies that are not the first of their kind, and the share of unique bytes
/// removed: bytes outside every copy that the same stage does not remove from the corpus without them.
struct Scores {
    planted_bytes: usize,
    planted_removed: usize,
    first_copies_removed: usize,
    unique_bytes: usize,
    unique_removed: usize,
}

/// Copies of boilerplates not in `scored` count neither way.
fn score(
    p: &Planted,
    natural: &Output,
    run: &Output,
    keep_first: bool,
    scored: &[usize],
) -> Scores {
    let mut s = Scores {
        planted_bytes: 0,
        planted_removed: 0,
        first_copies_removed: 0,
        unique_bytes: 0,
        unique_removed: 0,
    };
    let mut seen = [false; BOILERPLATE.len()];
    for (d, id) in p.ids.iter().enumerate() {
        let text = &p.planted[d];
        let removed = mask(text.len(), &run[id].1);
        let natural_removed = mask(p.original[d].len(), &natural[id].1);
        let mut in_plant = vec![false; text.len()];
        for plant in &p.plants[d] {
            in_plant[plant.start..plant.end]
                .iter_mut()
                .for_each(|x| *x = true);
            if !scored.contains(&plant.which) {
                continue;
            }
            let gone = removed[plant.start..plant.end]
                .iter()
                .filter(|&&r| r)
                .count();
            if keep_first && !seen[plant.which] {
                s.first_copies_removed += gone;
            } else {
                s.planted_bytes += plant.end - plant.start;
                s.planted_removed += gone;
            }
            seen[plant.which] = true;
        }
        // Each byte outside the copies, at its place in the original.
        let mut original_at = 0;
        for i in 0..text.len() {
            if in_plant[i] {
                continue;
            }
            if !natural_removed[original_at] {
                s.unique_bytes += 1;
                s.unique_removed += usize::from(removed[i]);
            }
            original_at += 1;
        }
        assert_eq!(original_at, p.original[d].len());
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_boilerplate_goes_and_unique_text_stays() {
    let Some(corpus) = corpus("planted_boilerplate_goes_and_unique_text_stays") else {
        return;
    };
    let p = planted_corpus(&corpus, 1200, 3000, 6);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_jsonl(&d.join("original.jsonl"), &p.ids, &p.original);
    write_jsonl(&d.join("planted.jsonl"), &p.ids, &p.planted);
    let original = format!(
        "{{path: {}, format: jsonl, id: id}}",
        d.join("original.jsonl").display()
    );
    let planted = format!(
        "{{path: {}, format: jsonl, id: id}}",
        d.join("planted.jsonl").display()
    );

    for (policy, keep_first) in [("keep_first", true), ("remove_all", false)] {
        let stage = format!("{{min_bytes: 100, policy: {policy}, annotate: true}}");
        run(d, &format!("natural-{policy}"), &original, &stage).await;
        let r = run(d, &format!("planted-{policy}"), &planted, &stage).await;
        let natural = output(d, &format!("natural-{policy}"));
        let found = output(d, &format!("planted-{policy}"));
        let s = score(&p, &natural, &found, keep_first, &[0, 1, 2, 3, 4, 5]);
        let recall = s.planted_removed as f64 / s.planted_bytes as f64;
        let wrong = s.unique_removed as f64 / s.unique_bytes as f64;
        eprintln!(
            "{policy}: {} of {} planted bytes removed ({:.4}); {} of {} unique bytes removed ({:.5}); \
             {} bytes of first copies removed; report: {:?}",
            s.planted_removed,
            s.planted_bytes,
            recall,
            s.unique_removed,
            s.unique_bytes,
            wrong,
            s.first_copies_removed,
            r.stages[1].substring
        );
        assert!(recall >= 0.99, "{policy}: recall {recall}");
        assert!(wrong <= 0.001, "{policy}: unique bytes removed {wrong}");
        assert_eq!(
            s.first_copies_removed, 0,
            "{policy}: a first copy lost bytes"
        );
        // What annotate reports is what the stage counts.
        let summary = r.stages[1].substring.clone().unwrap();
        let spans: usize = found.values().map(|(_, s)| s.len()).sum();
        let bytes: usize = found
            .values()
            .flat_map(|(_, s)| s.iter().map(|(a, b)| b - a))
            .sum();
        assert_eq!(summary.duplicate_spans as usize, spans);
        assert_eq!(summary.bytes_removed as usize, bytes);
        // Annotated documents keep their text.
        for (id, (text, _)) in &found {
            let d = p.ids.iter().position(|i| i == id).unwrap();
            assert_eq!(text, &p.planted[d]);
        }
    }

    // Removing: each text is the planted one without its spans, documents left short are rejected,
    // and the counts add up.
    let r = run(
        d,
        "removed",
        &planted,
        "{min_bytes: 100, min_words_after: 35}",
    )
    .await;
    let annotated = output(d, "planted-keep_first");
    let removed = output(d, "removed");
    let stage = stage(&r, "substring_dedup");
    assert_eq!(stage.rows_out as usize, removed.len());
    assert_eq!(stage.rows_in as usize, p.ids.len());
    for (id, (text, spans)) in &removed {
        let (original, expected) = &annotated[id];
        assert_eq!(spans, expected, "{id}");
        assert_eq!(text, &cut(original, spans), "{id}");
    }
    let too_short = stage
        .rejects_by_reason
        .get("substring_dedup:too_short")
        .copied()
        .unwrap_or(0);
    assert_eq!(too_short as usize + removed.len(), p.ids.len());
    for (id, (original, spans)) in &annotated {
        if !removed.contains_key(id) {
            assert!(!spans.is_empty(), "{id} was rejected without losing text");
            assert!(openseek_udfs::word_count::word_count(&cut(original, spans)) < 35);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_find_what_one_suffix_array_finds() {
    let Some(corpus) = corpus("parts_find_what_one_suffix_array_finds") else {
        return;
    };
    let p = planted_corpus(&corpus, 600, 1500, 7);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_jsonl(&d.join("planted.jsonl"), &p.ids, &p.planted);
    let input = format!(
        "{{path: {}, format: jsonl, id: id}}",
        d.join("planted.jsonl").display()
    );
    for policy in ["keep_first", "remove_all"] {
        let one = run(
            d,
            &format!("one-{policy}"),
            &input,
            &format!("{{policy: {policy}, annotate: true}}"),
        )
        .await;
        // 16 MiB of memory: parts of under 3 MB.
        let many = run(
            d,
            &format!("many-{policy}"),
            &input,
            &format!("{{policy: {policy}, annotate: true, memory_mb: 16}}"),
        )
        .await;
        let (one_s, many_s) = (
            one.stages[1].substring.clone().unwrap(),
            many.stages[1].substring.clone().unwrap(),
        );
        assert_eq!(one_s.parts, 1);
        assert!(many_s.parts >= 4, "{} parts", many_s.parts);
        assert!(one_s.duplicate_spans > 100);
        assert_eq!(
            output(d, &format!("one-{policy}")),
            output(d, &format!("many-{policy}")),
            "{policy}"
        );
        eprintln!(
            "{policy}: {} spans, {} bytes, in 1 part and in {} parts",
            one_s.duplicate_spans, one_s.bytes_removed, many_s.parts
        );
    }
}

/// Real English text around a repeat of exactly `n` bytes, in two documents, with different bytes on
/// each side of each copy so that the repeat cannot grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_99_byte_repeat_stays_and_a_100_byte_one_goes() {
    let Some(corpus) = corpus("a_99_byte_repeat_stays_and_a_100_byte_one_goes") else {
        return;
    };
    let en = corpus_en(&corpus);
    let moby: Vec<&(String, String)> = en
        .iter()
        .filter(|(id, _)| id.starts_with("moby-dick/"))
        .take(9)
        .collect();
    let source = &moby[8].1;
    let ascii_at = |len: usize| -> String {
        // A stretch of plain ASCII text of `len` bytes from the ninth chapter.
        let b = source.as_bytes();
        let start = (1000..b.len() - len)
            .find(|&i| {
                b[i..i + len]
                    .iter()
                    .all(|c| c.is_ascii_graphic() || *c == b' ')
            })
            .unwrap();
        source[start..start + len].to_string()
    };
    let chinese: String = corpus_zh(&corpus)
        .into_iter()
        .map(|(_, t, _)| {
            t.chars()
                .filter(|c| openseek_udfs::words::is_cjk(*c))
                .collect::<String>()
        })
        .find(|t| t.chars().count() > 200)
        .unwrap();
    let repeats = [
        ascii_at(99),
        ascii_at(100).chars().rev().collect::<String>(),
        chinese.chars().skip(50).take(33).collect::<String>(), // 99 bytes
        chinese.chars().skip(120).take(34).collect::<String>(), // 102 bytes
    ];
    assert_eq!(
        repeats.iter().map(String::len).collect::<Vec<_>>(),
        vec![99, 100, 99, 102]
    );
    // Document 2r and 2r + 1 hold repeat r, each copy between its own digit pairs.
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    for (r, rep) in repeats.iter().enumerate() {
        for copy in 0..2 {
            let base = &moby[2 * r + copy].1;
            let mut at = base.len() / 2;
            while !base.is_char_boundary(at) {
                at += 1;
            }
            let tag = 2 * r + copy;
            texts.push(format!("{} {tag}{rep}{tag} {}", &base[..at], &base[at..]));
            ids.push(format!("doc{tag}"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_jsonl(&d.join("in.jsonl"), &ids, &texts);
    let input = format!(
        "{{path: {}, format: jsonl, id: id}}",
        d.join("in.jsonl").display()
    );
    for (policy, removed_from) in [
        ("keep_first", vec!["doc3", "doc7"]),
        ("remove_all", vec!["doc2", "doc3", "doc6", "doc7"]),
    ] {
        run(
            d,
            policy,
            &input,
            &format!("{{min_bytes: 100, policy: {policy}, min_words_after: 0}}"),
        )
        .await;
        let out = output(d, policy);
        for (i, id) in ids.iter().enumerate() {
            let (text, spans) = &out[id];
            if removed_from.contains(&id.as_str()) {
                let rep = &repeats[i / 2];
                let at = texts[i].find(rep.as_str()).unwrap();
                assert_eq!(spans, &vec![(at, at + rep.len())], "{policy}: {id}");
                assert_eq!(
                    text,
                    &texts[i].replacen(rep.as_str(), "", 1),
                    "{policy}: {id}"
                );
            } else {
                assert!(spans.is_empty(), "{policy}: {id} lost {spans:?}");
                assert_eq!(text, &texts[i]);
            }
        }
    }
}

/// Files read out of name order (the larger first) still give corpus order: the copy in the first file
/// by name is the one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_first_follows_the_input_order() {
    let Some(corpus) = corpus("keep_first_follows_the_input_order") else {
        return;
    };
    let en = corpus_en(&corpus);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("in")).unwrap();
    // a.jsonl: 3 documents; b.jsonl: 40. The boilerplate ends one document in each.
    let mut ids = Vec::new();
    for (name, range) in [("a", 0..3), ("b", 3..43)] {
        let docs: Vec<(String, String)> = range
            .map(|i| {
                let mut t = en[i].1.clone();
                if i == 1 || i == 20 {
                    t.push_str(BOILERPLATE[0]);
                }
                (en[i].0.clone(), t)
            })
            .collect();
        ids.extend(docs.iter().map(|x| x.0.clone()));
        let (i, t): (Vec<String>, Vec<String>) = docs.into_iter().unzip();
        write_jsonl(&d.join("in").join(format!("{name}.jsonl")), &i, &t);
    }
    let input = format!(
        "{{path: \"{}/*.jsonl\", format: jsonl, id: id}}",
        d.join("in").display()
    );
    run_with(d, "order", &input, "{min_bytes: 100, annotate: true}", 2).await;
    let out = output(d, "order");
    let lost = |id: &str| out[id].1.iter().map(|(a, b)| b - a).sum::<usize>();
    assert_eq!(lost(&en[1].0), 0);
    assert!(lost(&en[20].0) >= BOILERPLATE[0].len());
}

/// `unit: tokens` with Qwen3's tokenizer: repeats of 50 tokens or more go, as bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_removes_repeats_of_50_tokens() {
    let Some(corpus) = corpus("token_mode_removes_repeats_of_50_tokens") else {
        return;
    };
    let mut p = planted_corpus(&corpus, 300, 700, 8);
    // Documents of emoji and rare CJK characters (4 bytes, several byte-level tokens each) sharing
    // passages, so that repeats begin and end inside characters.
    let mut rng = Rng(3);
    let rare: Vec<char> = "😀😃🙂🚀𠀀𠀁𠀂𠀃𪚥𫠠 ".chars().collect();
    let mut random = |n: usize| -> String { (0..n).map(|_| rare[rng.below(rare.len())]).collect() };
    let shared = random(90);
    for i in 0..6 {
        let text = format!("{}{}{}", random(30 + i), shared, random(40));
        p.ids.push(format!("rare-{i}"));
        p.original.push(text.clone());
        p.planted.push(text);
        p.plants.push(Vec::new());
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_jsonl(&d.join("original.jsonl"), &p.ids, &p.original);
    write_jsonl(&d.join("planted.jsonl"), &p.ids, &p.planted);
    let stage = "{unit: tokens, tokenizer: qwen3, min_tokens: 50, annotate: true}";
    let r = run(
        d,
        "natural",
        &format!(
            "{{path: {}, format: jsonl, id: id}}",
            d.join("original.jsonl").display()
        ),
        stage,
    )
    .await;
    assert_eq!(r.stages[1].substring.as_ref().unwrap().unit, "tokens");
    run(
        d,
        "planted",
        &format!(
            "{{path: {}, format: jsonl, id: id}}",
            d.join("planted.jsonl").display()
        ),
        stage,
    )
    .await;
    let (natural, found) = (output(d, "natural"), output(d, "planted"));
    // Score the boilerplates of 55 tokens or more: a copy's first and last tokens may merge with
    // the text around it.
    let tokenizer = openseek::stages::tokenize::tokenizer::load("qwen3", &root()).unwrap();
    let long: Vec<usize> = (0..BOILERPLATE.len())
        .filter(|&b| {
            let n = tokenizer
                .tokenizer
                .encode(BOILERPLATE[b], false)
                .unwrap()
                .len();
            eprintln!("boilerplate {b}: {n} tokens");
            n >= 55
        })
        .collect();
    assert!(long.len() >= 2, "{long:?}");
    for &b in &long {
        let s = score(&p, &natural, &found, true, &[b]);
        eprintln!(
            "boilerplate {b}: {} of {} bytes",
            s.planted_removed, s.planted_bytes
        );
    }
    let s = score(&p, &natural, &found, true, &long);
    let recall = s.planted_removed as f64 / s.planted_bytes as f64;
    let wrong = s.unique_removed as f64 / s.unique_bytes as f64;
    eprintln!("tokens: recall {recall:.4}, unique removed {wrong:.5}");
    // A copy's first and last tokens may merge with the text around it and not repeat.
    assert!(recall >= 0.99, "recall {recall}");
    assert!(wrong <= 0.001, "unique removed {wrong}");
    for (id, (text, spans)) in &found {
        for w in spans.windows(2) {
            assert!(w[0].1 < w[1].0, "{id}: spans overlap or touch: {spans:?}");
        }
        for &(a, b) in spans {
            assert!(text.is_char_boundary(a) && text.is_char_boundary(b), "{id}");
        }
    }
    // The shared passage goes from every copy but the first.
    for i in 1..6 {
        let (_, spans) = &found[&format!("rare-{i}")];
        let gone: usize = spans.iter().map(|(a, b)| b - a).sum();
        assert!(
            gone >= shared.len() - 16,
            "rare-{i}: {gone} bytes of {}",
            shared.len()
        );
    }
}

/// Random Chinese and mixed text (1- to 4-byte characters) with repeats copied between documents, so
/// that repeats often begin or end inside a character (CJK characters share their first bytes): every
/// span, snapped, starts and ends on a character boundary inside what was found, and what is left is
/// valid UTF-8. (That what goes is repeated, the brute-force tests of `find` check.)
#[test]
fn no_character_is_ever_cut() {
    let alphabets: [&[char]; 3] = [
        &[
            '数', '据', '引', '擎', '敏', '数', '的', '一', '是', '不', '了', '人',
        ],
        &[
            'a', 'é', 'ß', '数', '据', '😀', '😃', ' ', 'z', 'Ж', 'ж', '。',
        ],
        &[
            '\u{4e00}',
            '\u{4e01}',
            '\u{4e02}',
            '\u{20000}',
            '\u{20001}',
            'x',
        ],
    ];
    let dir = tempfile::tempdir().unwrap();
    // Spans found that began or ended inside a character: the case snapping is for.
    let mut cut_inside_a_char = 0;
    for seed in 0..300u64 {
        let mut rng = Rng(seed);
        let alphabet = alphabets[seed as usize % 3];
        let mut docs: Vec<String> = Vec::new();
        for _ in 0..1 + rng.below(12) {
            let mut t: String = (0..rng.below(80))
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            for _ in 0..rng.below(4) {
                let src = if docs.is_empty() {
                    t.clone()
                } else {
                    docs[rng.below(docs.len())].clone()
                };
                let chars: Vec<char> = src.chars().collect();
                if chars.is_empty() {
                    continue;
                }
                let a = rng.below(chars.len());
                let b = a + rng.below(chars.len() - a + 1);
                let piece: String = chars[a..b].iter().collect();
                let mut at = rng.below(t.len() + 1);
                while !t.is_char_boundary(at) {
                    at -= 1;
                }
                t.insert_str(at, &piece);
            }
            docs.push(t);
        }
        let (mut text, mut starts) = (Vec::new(), Vec::new());
        for d in &docs {
            starts.push(text.len() as u64);
            text.extend_from_slice(d.as_bytes());
            text.push(0xFF);
        }
        starts.push(text.len() as u64);
        let corpus = Corpus {
            text: &text,
            starts: &starts,
            sep: 0xFF,
            alphabet: 256,
        };
        let k = 1 + rng.below(12);
        for policy in [Policy::KeepFirst, Policy::RemoveAll] {
            let opts = FindOptions {
                min_len: k,
                policy,
                max_part_len: if seed % 2 == 0 { usize::MAX } else { 40 },
                threads: 2,
            };
            let found =
                find_repeats(&corpus, &opts, dir.path(), &Progress::default(), "test").unwrap();
            for snap in [Snap::Char, Snap::Word, Snap::Line] {
                for (d, doc) in docs.iter().enumerate() {
                    let mut kept: Vec<u8> = Vec::new();
                    let mut at = 0;
                    for s in found.spans.iter().filter(|s| s.doc as usize == d) {
                        let Some((a, b)) = snap_span(doc, s.start as usize, s.end as usize, snap)
                        else {
                            continue;
                        };
                        assert!(doc.is_char_boundary(a) && doc.is_char_boundary(b));
                        assert!(
                            s.start as usize <= a && b <= s.end as usize,
                            "spans only shrink"
                        );
                        cut_inside_a_char += usize::from(
                            !doc.is_char_boundary(s.start as usize)
                                || !doc.is_char_boundary(s.end as usize),
                        );
                        kept.extend_from_slice(&doc.as_bytes()[at..a]);
                        at = b;
                    }
                    kept.extend_from_slice(&doc.as_bytes()[at..]);
                    assert!(
                        String::from_utf8(kept).is_ok(),
                        "seed {seed}: invalid UTF-8 left"
                    );
                }
            }
        }
    }
    assert!(
        cut_inside_a_char > 100,
        "{cut_inside_a_char} spans inside a character"
    );
}

/// `repeated_spans` over a catalog dataset lists each planted boilerplate as one repeat, with every
/// copy counted and located.
#[test]
fn repeated_spans_lists_the_planted_boilerplate() {
    let Some(corpus) = corpus("repeated_spans_lists_the_planted_boilerplate") else {
        return;
    };
    let p = planted_corpus(&corpus, 200, 500, 9);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_jsonl(&d.join("planted.jsonl"), &p.ids, &p.planted);
    let catalog = d.join("datasets.yaml");
    std::fs::write(
        &catalog,
        "datasets:\n  planted:\n    description: test\n    language: mixed\n    format: jsonl\n    root: .\n    path: planted.jsonl\n    id: id\n",
    )
    .unwrap();
    let (ok, out, err) = openseek(&[
        "--catalog",
        catalog.to_str().unwrap(),
        "sql",
        "--format",
        "json",
        "SELECT span, bytes, occurrences, documents, at FROM repeated_spans('planted', 100)",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (b, text) in BOILERPLATE.iter().enumerate() {
        if text.len() < 100 {
            continue;
        }
        let copies: Vec<(usize, &Plant)> = p
            .plants
            .iter()
            .enumerate()
            .flat_map(|(d, ps)| ps.iter().filter(|x| x.which == b).map(move |x| (d, x)))
            .collect();
        let row = rows
            .iter()
            .find(|r| r["span"] == *text)
            .unwrap_or_else(|| panic!("boilerplate {b} not listed"));
        assert_eq!(row["bytes"], text.len());
        assert_eq!(row["occurrences"], copies.len(), "boilerplate {b}");
        let docs: std::collections::BTreeSet<usize> = copies.iter().map(|c| c.0).collect();
        assert_eq!(row["documents"], docs.len());
        // The first locations are the first copies, as `id:start-end` of the document's bytes.
        let at: Vec<String> = row["at"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(at.len(), copies.len().min(10), "boilerplate {b}");
        let expected: Vec<String> = copies
            .iter()
            .take(at.len())
            .map(|(d, x)| format!("{}:{}-{}", p.ids[*d], x.start, x.end))
            .collect();
        assert_eq!(at, expected);
    }
}
