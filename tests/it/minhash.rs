//! MinHash-LSH on real text: variants of corpus documents at measured Jaccard levels, the S-curve, the
//! `minhash_dedup` stage's recall and false removals, and the corpus's natural duplicates.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use openseek::context::Engine;
use openseek::pipeline::{RunOptions, run_pipeline};
use openseek_udfs::minhash::{
    MinHasher, MinhashConfig, ShingleUnit, candidate_probability, shingle_jaccard,
    signature_similarity,
};

use crate::common::*;
use openseek_testkit::near_dup::{EDITS, Edit, split_units, variant};

/// One original, one variant, their true Jaccard similarity and whether LSH makes them a candidate.
struct Pair {
    original: usize,
    text: String,
    edit: Edit,
    jaccard: f64,
    candidate: bool,
}

struct Sample {
    originals: Vec<(String, String)>,
    pairs: Vec<Pair>,
}

/// Picks `n` real documents of 1 to 8 KB (cut at 8 KB) that are far from each other, and makes
/// `per_doc` variants of each.
fn sample(docs: &[(String, String)], cjk: bool, n: usize, per_doc: usize, seed: u64) -> Sample {
    let hasher = MinHasher::new(MinhashConfig {
        unit: if cjk {
            ShingleUnit::Char
        } else {
            ShingleUnit::Word
        },
        ..MinhashConfig::default()
    })
    .unwrap();
    let mut rng = Rng(seed);
    let mut taken: Vec<Vec<u64>> = Vec::new();
    let mut originals = Vec::new();
    let step = (docs.len() / (n * 3)).max(1);
    for (id, text) in docs.iter().step_by(step) {
        if originals.len() == n {
            break;
        }
        let mut t = text.as_str();
        if t.len() > 8000 {
            let mut cut = 8000;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            t = &t[..cut];
        }
        let units = split_units(t, cjk).len();
        if t.len() < 1000 || units < 100 {
            continue;
        }
        let Some(sig) = hasher.signature(t) else {
            continue;
        };
        // Far from every original taken (estimated Jaccard below 0.25), so that a variant can only be
        // close to its own original.
        if taken
            .iter()
            .any(|o: &Vec<u64>| signature_similarity(o, &sig).unwrap() >= 0.25)
        {
            continue;
        }
        taken.push(sig);
        originals.push((id.clone(), t.to_string()));
    }
    assert_eq!(originals.len(), n, "not enough distinct documents");
    let mut pairs = Vec::new();
    for i in 0..originals.len() {
        let text = &originals[i].1;
        let donor = &originals[(i + 1) % originals.len()].1;
        let a = hasher.shingles(text);
        let ka = hasher.band_keys(&hasher.signature(text).unwrap());
        for v in 0..per_doc {
            let edit = EDITS[(i + v) % EDITS.len()];
            let target = 0.05 + 0.95 * rng.unit();
            let vt = variant(text, donor, cjk, edit, target, &mut rng);
            let b = hasher.shingles(&vt);
            if b.is_empty() {
                continue;
            }
            let kb = hasher.band_keys(&hasher.signature(&vt).unwrap());
            pairs.push(Pair {
                original: i,
                jaccard: shingle_jaccard(&a, &b),
                candidate: ka.iter().zip(&kb).any(|(x, y)| x == y),
                text: vt,
                edit,
            });
        }
    }
    Sample { originals, pairs }
}

/// Detection by Jaccard bin against 1 − (1 − J^8)^14: observed, expected and its standard deviation.
fn s_curve(pairs: &[Pair]) -> Vec<(f64, usize, usize, f64, f64)> {
    let mut bins: BTreeMap<usize, Vec<&Pair>> = BTreeMap::new();
    for p in pairs {
        bins.entry(((p.jaccard * 20.0) as usize).min(19))
            .or_default()
            .push(p);
    }
    bins.into_iter()
        .map(|(b, ps)| {
            let probs: Vec<f64> = ps
                .iter()
                .map(|p| candidate_probability(p.jaccard, 14, 8))
                .collect();
            let expected: f64 = probs.iter().sum();
            let sd = probs.iter().map(|p| p * (1.0 - p)).sum::<f64>().sqrt();
            let observed = ps.iter().filter(|p| p.candidate).count();
            (b as f64 / 20.0, ps.len(), observed, expected, sd)
        })
        .collect()
}

fn check_lsh(lang: &str, s: &Sample) {
    eprintln!(
        "{lang}: {} pairs; J bin, pairs, detected, expected ± sd",
        s.pairs.len()
    );
    for (lo, n, obs, exp, sd) in s_curve(&s.pairs) {
        eprintln!(
            "  [{lo:.2}, {:.2}) {n:5} {obs:5} {exp:8.1} ± {sd:.1}",
            lo + 0.05
        );
        assert!(
            (obs as f64 - exp).abs() <= 4.0 * sd + 1.5,
            "{lang}: J in [{lo:.2}, {:.2}): {obs} of {n} detected, the S-curve expects {exp:.1} ± {sd:.1}",
            lo + 0.05
        );
    }
    let high: Vec<&Pair> = s.pairs.iter().filter(|p| p.jaccard >= 0.85).collect();
    let low: Vec<&Pair> = s.pairs.iter().filter(|p| p.jaccard < 0.5).collect();
    let recall = high.iter().filter(|p| p.candidate).count() as f64 / high.len() as f64;
    let false_rate = low.iter().filter(|p| p.candidate).count() as f64 / low.len() as f64;
    eprintln!(
        "{lang}: recall {recall:.3} over {} pairs with J >= 0.85; candidates {false_rate:.4} over {} pairs with J < 0.5",
        high.len(),
        low.len()
    );
    assert!(
        high.len() >= 100 && low.len() >= 100,
        "{lang}: too few pairs at the ends"
    );
    for edit in EDITS {
        let n = s.pairs.iter().filter(|p| matches!((p.edit, edit), (a, b) if std::mem::discriminant(&a) == std::mem::discriminant(&b))).count();
        assert!(n > 0, "{lang}: no {edit:?} variants");
    }
    assert!(recall >= 0.95, "{lang}: recall {recall}");
    // Below 0.5, LSH alone does what the S-curve allows (about 0.9% for these pairs); false removals
    // by the stage, with and without `verify`, are checked through the stage.
    let probs: Vec<f64> = low
        .iter()
        .map(|p| candidate_probability(p.jaccard, 14, 8))
        .collect();
    let expected: f64 = probs.iter().sum();
    let sd = probs.iter().map(|p| p * (1.0 - p)).sum::<f64>().sqrt();
    let observed = low.iter().filter(|p| p.candidate).count() as f64;
    assert!(
        observed <= expected + 3.0 * sd + 1.0,
        "{lang}: {observed} ({false_rate:.4}) pairs below 0.5 are candidates, the S-curve expects {expected:.1} ± {sd:.1}"
    );
}

#[test]
fn lsh_detection_on_real_variants_follows_the_s_curve() {
    let Some(corpus) = corpus("lsh_detection_on_real_variants_follows_the_s_curve") else {
        return;
    };
    let en = corpus_en(&corpus);
    check_lsh("en", &sample(&en, false, 400, 5, 1));
    let zh: Vec<(String, String)> = corpus_zh(&corpus)
        .into_iter()
        .map(|(i, t, _)| (i, t))
        .collect();
    check_lsh("zh", &sample(&zh, true, 400, 5, 2));
}

/// Writes documents as Parquet, with `original` = 1 for the originals and 0 for their variants.
fn write_docs(path: &Path, docs: &[(String, String)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("original", DataType::Float64, false),
    ]));
    let original = docs.iter().map(|d| {
        if d.0.starts_with("variant-") {
            0.0
        } else {
            1.0
        }
    });
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                docs.iter().map(|d| d.0.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                docs.iter().map(|d| d.1.as_str()),
            )),
            Arc::new(arrow::array::Float64Array::from_iter_values(original)),
        ],
    )
    .unwrap();
    write_batch(path, &batch);
}

fn write_batch(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

async fn run(dir: &Path, yaml: &str) -> openseek::report::Report {
    let engine = Engine::new(Some(2));
    let p = pipeline(dir, yaml);
    let opts = RunOptions {
        output: Some(dir.join("out")),
        print_summary: false,
        ..Default::default()
    };
    run_pipeline(&engine, &p, &opts).await.unwrap()
}

/// The rejects of a run: id → (reason, detail).
fn rejects(dir: &Path) -> HashMap<String, (String, String)> {
    let rej = read_parquet_dir(&dir.join("out/rejects"));
    strings(&rej, "id")
        .into_iter()
        .zip(strings(&rej, "reason"))
        .zip(strings(&rej, "detail"))
        .map(|((i, r), d)| (i.unwrap(), (r.unwrap(), d.unwrap_or_default())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minhash_dedup_removes_close_variants_and_keeps_distant_ones() {
    let Some(corpus) = corpus("minhash_dedup_removes_close_variants_and_keeps_distant_ones") else {
        return;
    };
    let zh: Vec<(String, String)> = corpus_zh(&corpus)
        .into_iter()
        .map(|(i, t, _)| (i, t))
        .collect();
    for (lang, s) in [
        ("en", sample(&corpus_en(&corpus), false, 600, 1, 3)),
        ("zh", sample(&zh, true, 600, 1, 4)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // `keep: max:original` keeps the originals whatever the order the stage reads them in.
        let mut docs = s.originals.clone();
        docs.extend(
            s.pairs
                .iter()
                .enumerate()
                .map(|(k, p)| (format!("variant-{k}"), p.text.clone())),
        );
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
        write_docs(&dir.path().join("in/docs.parquet"), &docs);
        for verify in [false, true] {
            let yaml = format!(
                "name: mh\ninput: {{path: {}, id: id}}\nstages:\n  - minhash_dedup: {{verify: {verify}, threshold: 0.7, keep: \"max:original\"}}\n",
                dir.path().join("in").display()
            );
            let _ = std::fs::remove_dir_all(dir.path().join("out"));
            let report = run(dir.path(), &yaml).await;
            report.check().unwrap();
            let rej = rejects(dir.path());
            let removed = |k: usize, p: &Pair| {
                rej.get(&format!("variant-{k}"))
                    .is_some_and(|(reason, detail)| {
                        reason == "near_duplicate" && *detail == s.originals[p.original].0
                    })
            };
            let (mut high, mut high_removed, mut low, mut low_removed) = (0, 0, 0, 0);
            for (k, p) in s.pairs.iter().enumerate() {
                if p.jaccard >= 0.85 {
                    high += 1;
                    high_removed += usize::from(removed(k, p));
                } else if p.jaccard < 0.5 {
                    low += 1;
                    low_removed += usize::from(rej.contains_key(&format!("variant-{k}")));
                }
            }
            // Originals are pairwise distinct: one removed is a false positive against another's variant.
            let originals_removed = s
                .originals
                .iter()
                .filter(|(id, _)| rej.contains_key(id))
                .count();
            eprintln!(
                "{lang} verify={verify}: {originals_removed} of {} originals removed",
                s.originals.len()
            );
            assert!(originals_removed as f64 <= 0.01 * s.originals.len() as f64);
            if verify {
                assert_eq!(
                    originals_removed, 0,
                    "{lang}: verify let a false positive through"
                );
            }
            let recall = high_removed as f64 / high as f64;
            let false_removal = low_removed as f64 / low as f64;
            eprintln!(
                "{lang} verify={verify}: removed {high_removed}/{high} variants with J >= 0.85 ({recall:.3}), \
                 {low_removed}/{low} with J < 0.5 ({false_removal:.4})"
            );
            assert!(high >= 30 && low >= 30);
            assert!(recall >= 0.95, "{lang} verify={verify}: recall {recall}");
            assert!(
                false_removal <= 0.01,
                "{lang} verify={verify}: false removal {false_removal}"
            );
        }
    }
}

/// Checks that every group of byte-identical documents (long enough to hash) was found: all members but
/// one removed as `near_duplicate` of a member that stayed. Returns the number of groups.
fn identical_groups_found(lang: &str, docs: &[(String, String)], dir: &Path) -> usize {
    // The unit `auto` decides for a whole corpus of this language.
    let hasher = MinHasher::new(MinhashConfig {
        unit: if lang == "zh" {
            ShingleUnit::Char
        } else {
            ShingleUnit::Word
        },
        ..MinhashConfig::default()
    })
    .unwrap();
    let mut by_text: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, text) in docs {
        by_text.entry(text.as_str()).or_default().push(id.as_str());
    }
    let kept: HashSet<String> = strings(&read_parquet_dir(&dir.join("out/data")), "id")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let rej = rejects(dir);
    let mut groups = 0;
    for (text, ids) in by_text.iter().filter(|(_, ids)| ids.len() > 1) {
        if hasher.signature(text).is_none() {
            // Too short to hash: kept, every copy.
            assert!(ids.iter().all(|i| kept.contains(*i)), "{lang}: {ids:?}");
            continue;
        }
        groups += 1;
        // One cluster: at most one copy stays, and every other copy names the same kept document
        // (the copy that stayed, or a near-duplicate outside the group that its cluster kept).
        let stayed: Vec<&&str> = ids.iter().filter(|i| kept.contains(**i)).collect();
        assert!(
            stayed.len() <= 1,
            "{lang}: identical documents {ids:?}: {stayed:?} stayed"
        );
        let targets: HashSet<&str> = ids
            .iter()
            .filter(|i| !kept.contains(**i))
            .map(|id| {
                let (reason, detail) = &rej[*id];
                assert_eq!(reason, "near_duplicate", "{lang}: {id}");
                detail.as_str()
            })
            .collect();
        assert_eq!(targets.len(), 1, "{lang}: {ids:?} point to {targets:?}");
        let target = *targets.iter().next().unwrap();
        assert!(
            kept.contains(target),
            "{lang}: {ids:?} point to {target}, which was not kept"
        );
        if let Some(s) = stayed.first() {
            assert_eq!(**s, target, "{lang}: {ids:?}");
        }
    }
    groups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natural_duplicates_of_the_corpus_are_found() {
    let Some(corpus) = corpus("natural_duplicates_of_the_corpus_are_found") else {
        return;
    };
    // English: Debian copyright files and changelogs shared between packages of one source.
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: mh-en\ninput: {{path: {}, id: id}}\nstages:\n  - minhash_dedup: {{}}\n",
        corpus.join("en").display()
    );
    let report = run(dir.path(), &yaml).await;
    report.check().unwrap();
    let en = corpus_en(&corpus);
    let groups = identical_groups_found("en", &en, dir.path());
    let debian: HashSet<&str> = en
        .iter()
        .filter(|(id, _)| id.starts_with("debian-"))
        .map(|(id, _)| id.as_str())
        .collect();
    let removed_debian = rejects(dir.path())
        .keys()
        .filter(|id| debian.contains(id.as_str()))
        .count();
    let dedup = report.stages[1].dedup.clone().unwrap();
    assert_eq!(dedup.unit, "word", "auto over an English corpus");
    eprintln!(
        "en: {groups} groups of identical documents found; {} removed ({removed_debian} Debian files), {} clusters, sizes {:?}",
        report.stages[1].rows_rejected, dedup.clusters, dedup.cluster_sizes
    );
    assert!(groups >= 150, "{groups}");
    assert!(removed_debian >= 554 - 177, "{removed_debian}");

    // Chinese: LibreOffice help pages, fortunes and reviews that occur twice.
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: mh-zh\ninput: {{path: {}, id: id}}\nstages:\n  - minhash_dedup: {{}}\n",
        corpus.join("zh").display()
    );
    let report = run(dir.path(), &yaml).await;
    report.check().unwrap();
    let zh: Vec<(String, String)> = corpus_zh(&corpus)
        .into_iter()
        .map(|(i, t, _)| (i, t))
        .collect();
    assert_eq!(
        report.stages[1].dedup.as_ref().unwrap().unit,
        "char",
        "auto over a Chinese corpus"
    );
    let groups = identical_groups_found("zh", &zh, dir.path());
    let rej = rejects(dir.path());
    let libreoffice = rej.keys().filter(|id| id.contains("libreoffice")).count();
    eprintln!(
        "zh: {groups} groups of identical documents found; {} removed, {libreoffice} LibreOffice pages",
        report.stages[1].rows_rejected
    );
    assert!(libreoffice >= 165, "{libreoffice}");

    // Shakespeare in modern and First Folio spelling: character 7-grams with loose bands and a true
    // Jaccard check pair each play with its Folio edition, and with nothing else.
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: mh-folio\ninput: {{path: {}, id: id}}\nstages:\n  - sql: \"SELECT * FROM input WHERE source = 'shakespeare'\"\n  \
         - minhash_dedup: {{unit: char, ngram: 7, bands: 37, rows: 3, verify: true, threshold: 0.35, annotate: true}}\n",
        corpus.join("en").display()
    );
    run(dir.path(), &yaml).await;
    let out = read_parquet_dir(&dir.path().join("out/data"));
    let mut clusters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, cluster) in strings(&out, "id")
        .into_iter()
        .zip(strings(&out, "minhash_cluster"))
    {
        clusters
            .entry(cluster.unwrap())
            .or_default()
            .push(id.unwrap());
    }
    let folio = out
        .iter()
        .flat_map(|b| strings(std::slice::from_ref(b), "id"))
        .filter(|id| id.as_ref().unwrap().ends_with("_gut_f"))
        .count();
    let pairs: Vec<&Vec<String>> = clusters.values().filter(|m| m.len() > 1).collect();
    eprintln!(
        "shakespeare: {} Folio texts, {} clusters of two or more",
        folio,
        pairs.len()
    );
    assert_eq!(pairs.len(), folio, "{pairs:?}");
    for members in pairs {
        assert_eq!(members.len(), 2, "{members:?}");
        assert_eq!(
            members.iter().filter(|m| m.ends_with("_gut_f")).count(),
            1,
            "{members:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_chooses_the_longest_or_the_best_scored_copy() {
    let Some(corpus) = corpus("keep_chooses_the_longest_or_the_best_scored_copy") else {
        return;
    };
    let en = corpus_en(&corpus);
    let originals = sample(&en, false, 20, 0, 5).originals;
    let dir = tempfile::tempdir().unwrap();
    // Each original, then a longer copy (a line added) with a lower score.
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    let mut scores = Vec::new();
    for (id, text) in &originals {
        ids.push(id.clone());
        texts.push(text.clone());
        scores.push(Some(3.0));
        ids.push(format!("{id}#long"));
        texts.push(format!(
            "{text}\nOne more line, at the end of the document."
        ));
        scores.push(None);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("score", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(StringArray::from(texts)),
            Arc::new(arrow::array::Float64Array::from(scores)),
        ],
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    write_batch(&dir.path().join("in/docs.parquet"), &batch);
    for (keep, survivor) in [("longest", "#long"), ("\"max:score\"", ""), ("first", "")] {
        let yaml = format!(
            "name: keep\ninput: {{path: {}, id: id}}\nstages:\n  - minhash_dedup: {{keep: {keep}, memory_mb: 64}}\n",
            dir.path().join("in").display()
        );
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        run(dir.path(), &yaml).await.check().unwrap();
        let rej = rejects(dir.path());
        assert_eq!(rej.len(), originals.len(), "keep {keep}");
        for (id, _) in &originals {
            let (kept, removed) = if survivor.is_empty() {
                (id.clone(), format!("{id}#long"))
            } else {
                (format!("{id}#long"), id.clone())
            };
            assert_eq!(
                rej[&removed],
                ("near_duplicate".to_string(), kept),
                "keep {keep}"
            );
        }
    }
}

/// `keep: first` keeps the copy that comes first in the input (file name, then row), although the two
/// readers interleave the files and a row stage's checkpoint lies between the input and the stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_first_follows_the_input_order() {
    let Some(corpus) = corpus("keep_first_follows_the_input_order") else {
        return;
    };
    let en = corpus_en(&corpus);
    let mut rng = Rng(11);
    let originals = sample(&en, false, 40, 0, 6).originals;
    let fillers = sample(&en, false, 400, 0, 7).originals;
    // Four files, the first with the fewest rows, so that the readers (largest file first) do not
    // read them in name order. Each original is copied into two or three random slots; a file's other
    // rows are distinct documents.
    let sizes = [30usize, 60, 90, 120];
    let mut slots: Vec<Vec<Option<(String, String)>>> =
        sizes.iter().map(|&n| vec![None; n]).collect();
    let mut expected_kept: HashMap<String, String> = HashMap::new();
    for (id, text) in &originals {
        let copies = 2 + rng.below(2);
        let mut placed: Vec<(usize, usize)> = Vec::new();
        while placed.len() < copies {
            let f = rng.below(sizes.len());
            let r = rng.below(sizes[f]);
            if slots[f][r].is_none() {
                slots[f][r] = Some((format!("{id}@{f}-{r}"), text.clone()));
                placed.push((f, r));
            }
        }
        let first = placed.iter().min().unwrap();
        expected_kept.insert(id.clone(), format!("{id}@{}-{}", first.0, first.1));
    }
    let mut fill = fillers
        .iter()
        .filter(|(id, _)| !originals.iter().any(|o| &o.0 == id));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    for (f, rows) in slots.into_iter().enumerate() {
        let docs: Vec<(String, String)> = rows
            .into_iter()
            .map(|slot| slot.unwrap_or_else(|| fill.next().expect("enough fillers").clone()))
            .collect();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("text", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(StringArray::from_iter_values(
                    docs.iter().map(|d| d.0.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    docs.iter().map(|d| d.1.as_str()),
                )),
            ],
        )
        .unwrap();
        write_batch(
            &dir.path()
                .join(format!("in/{}.parquet", ["a", "b", "c", "d"][f])),
            &batch,
        );
    }
    let yaml = format!(
        "name: first\ninput: {{path: {}, id: id}}\nstages:\n  - text_length: {{min_chars: 1}}\n  - minhash_dedup: {{keep: first}}\n",
        dir.path().join("in").display()
    );
    run(dir.path(), &yaml).await.check().unwrap();
    let rej = rejects(dir.path());
    let out = read_parquet_dir(&dir.path().join("out/data"));
    assert!(
        out.iter().all(|b| b
            .schema()
            .fields()
            .iter()
            .all(|f| !f.name().starts_with("__os_"))),
        "bookkeeping columns stay out of the output"
    );
    let kept: HashSet<String> = strings(&out, "id").into_iter().flatten().collect();
    for (id, first) in &expected_kept {
        assert!(
            kept.contains(first),
            "{first} is the first copy of {id} and must stay"
        );
        for (removed, (reason, detail)) in
            rej.iter().filter(|(r, _)| r.starts_with(&format!("{id}@")))
        {
            assert_eq!(
                (reason.as_str(), detail),
                ("near_duplicate", first),
                "{removed}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_built_on_one_corpus_removes_its_duplicates_from_another() {
    let Some(corpus) = corpus("an_index_built_on_one_corpus_removes_its_duplicates_from_another")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index");
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    for (d, files) in [
        (&old, ["web-en-000", "web-en-001"]),
        (&new, ["web-en-002", "web-en-003"]),
    ] {
        std::fs::create_dir_all(d).unwrap();
        for f in files {
            std::fs::copy(
                corpus.join(format!("en/{f}.parquet")),
                d.join(format!("{f}.parquet")),
            )
            .unwrap();
        }
    }
    let stage = |dir: &Path, index_opt: &str| {
        format!(
            "name: idx\ninput: {{path: {}, id: id}}\nstages:\n  - minhash_dedup: {{index: {{{index_opt}: {}}}}}\n",
            dir.display(),
            index.display()
        )
    };
    let built = tempfile::tempdir().unwrap();
    run(built.path(), &stage(&old, "build"))
        .await
        .check()
        .unwrap();
    let kept_old: HashSet<String> =
        strings(&read_parquet_dir(&built.path().join("out/data")), "id")
            .into_iter()
            .map(Option::unwrap)
            .collect();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(index.join("index.json")).unwrap()).unwrap();
    let indexed = kept_old.len() as u64 - built_too_short(&built);
    assert_eq!(manifest["documents"].as_u64().unwrap(), indexed);

    let against = tempfile::tempdir().unwrap();
    let report = run(against.path(), &stage(&new, "against")).await;
    report.check().unwrap();
    let rej = rejects(against.path());
    let by_index: Vec<(&String, &String)> = rej
        .iter()
        .filter(|(_, (r, _))| r == "near_duplicate_of_index")
        .map(|(id, (_, d))| (id, d))
        .collect();
    eprintln!(
        "index: {indexed} documents indexed; {} of the new corpus removed as duplicates of it, {} among themselves",
        by_index.len(),
        rej.len() - by_index.len()
    );
    assert!(by_index.len() >= 50, "{}", by_index.len());
    for (id, matched) in &by_index {
        assert!(
            kept_old.contains(*matched),
            "{id} matched {matched}, which is not in the index"
        );
    }
    // Identical texts across the two halves: the new copy goes, naming an indexed document.
    let en = corpus_en(&corpus);
    let old_texts: HashSet<&str> = en
        .iter()
        .filter(|(id, _)| kept_old.contains(id))
        .map(|(_, t)| t.as_str())
        .collect();
    let hasher = MinHasher::new(MinhashConfig::default()).unwrap(); // words: auto over English
    let new_ids: HashSet<String> = strings(&read_parquet_dir(&new), "id")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let mut identical = 0;
    for (id, text) in en.iter().filter(|(id, _)| new_ids.contains(id)) {
        if old_texts.contains(text.as_str()) && hasher.signature(text).is_some() {
            assert_eq!(rej[id].0, "near_duplicate_of_index", "{id}");
            identical += 1;
        }
    }
    assert!(
        identical >= 20,
        "identical texts across the halves: {identical}"
    );
}

/// Documents of a run that were too short to hash (kept, but not indexed).
fn built_too_short(dir: &tempfile::TempDir) -> u64 {
    let report = openseek::report::Report::read(&dir.path().join("out/report.json")).unwrap();
    report.stages[1].dedup.as_ref().unwrap().too_short
}

#[test]
fn shipped_pipelines_parse_with_their_dedup_stages() {
    let dir = root().join("pipelines");
    let mut dedup = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let spec = openseek::pipeline::PipelineSpec::load(&path).unwrap();
        let stages = openseek::pipeline::stage::parse_stages(&spec.stages, &dir)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        dedup += stages.iter().filter(|s| s.label == "minhash_dedup").count();
    }
    assert!(dedup >= 2, "cc-en and cc-zh end with minhash_dedup");
}

/// Documents as (id, text).
type Docs = Vec<(String, String)>;

/// The bundled sample's documents: English (Parquet), then Chinese (JSONL.gz).
fn sample_docs() -> (Docs, Docs) {
    let docs = openseek_testkit::docs::parquet_docs(&root().join("data/sample/en"));
    let zh = openseek_testkit::docs::jsonl_gz_docs(&root().join("data/sample/zh"));
    (docs, zh.into_iter().map(|(i, t, _)| (i, t)).collect())
}

fn script_count(text: &str) -> openseek_udfs::minhash::ScriptCount {
    let mut c = openseek_udfs::minhash::ScriptCount::default();
    c.add(text);
    c
}

/// `unit: auto` is decided once for the stage's whole input, never per document: two near-copies of a
/// mixed Chinese and English text on either side of the 50% CJK line (real text from the bundled
/// sample) are shingled alike and clustered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minhash_unit_auto_is_decided_per_stage_not_per_document() {
    let (en, zh) = sample_docs();
    let chinese: String = zh
        .iter()
        .map(|(_, t)| t.as_str())
        .collect::<String>()
        .chars()
        .filter(|c| openseek_udfs::words::is_cjk(*c))
        .take(600)
        .collect();
    let english: Vec<&str> = en[5].1.split_whitespace().collect();
    // A: the Chinese, then English words while CJK letters stay the majority.
    let mut a = chinese.clone();
    let mut used = 0;
    while used < english.len() {
        let next = format!("{a} {}", english[used]);
        if script_count(&next).unit() != ShingleUnit::Char {
            break;
        }
        a = next;
        used += 1;
    }
    // B: A with a few more English words, which tips it to Latin letters.
    let mut b = a.clone();
    for w in &english[used..used + 12] {
        b = format!("{b} {w}");
    }
    assert_eq!(script_count(&a).unit(), ShingleUnit::Char, "precondition");
    assert_eq!(script_count(&b).unit(), ShingleUnit::Word, "precondition");
    let dir = tempfile::tempdir().unwrap();
    let mut docs: Vec<(String, String)> = vec![("a".into(), a), ("b".into(), b)];
    docs.extend(en.iter().take(20).cloned());
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    write_docs(&dir.path().join("in/docs.parquet"), &docs);
    let yaml = format!(
        "name: auto\ninput: {{path: {}}}\nstages:\n  - minhash_dedup: {{unit: auto}}\n",
        dir.path().join("in").display()
    );
    let report = run(dir.path(), &yaml).await;
    report.check().unwrap();
    assert_eq!(report.stages[1].dedup.as_ref().unwrap().unit, "word");
    let rej = rejects(dir.path());
    assert_eq!(
        rej.get("b"),
        Some(&("near_duplicate".to_string(), "a".to_string())),
        "{rej:?}"
    );
}

/// The ids an index holds (`docs.parquet`: doc → id) and the document numbers of its band keys.
fn index_contents(index: &Path) -> (BTreeMap<u32, String>, HashSet<u32>) {
    use arrow::array::AsArray;
    use arrow::datatypes::UInt32Type;
    let mut docs = BTreeMap::new();
    for b in read_parquet_file(&index.join("docs.parquet")) {
        let d = b
            .column_by_name("doc")
            .unwrap()
            .as_primitive::<UInt32Type>();
        let ids = strings(std::slice::from_ref(&b), "id");
        for (i, id) in ids.into_iter().enumerate() {
            docs.insert(d.value(i), id.unwrap());
        }
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(index.join("index.json")).unwrap()).unwrap();
    let mut band_docs = HashSet::new();
    for f in manifest["band_files"].as_array().unwrap() {
        for b in read_parquet_file(&index.join(f.as_str().unwrap())) {
            let d = b
                .column_by_name("doc")
                .unwrap()
                .as_primitive::<UInt32Type>();
            band_docs.extend(d.values().iter().copied());
        }
    }
    assert_eq!(
        manifest["documents"].as_u64().unwrap(),
        docs.len() as u64,
        "the manifest counts the ids"
    );
    (docs, band_docs)
}

/// `index: {build}` and `index: {against}` in one stage agree: the built index holds exactly the
/// documents the stage kept (band keys and ids alike), not those it removed as matches of the old
/// index, so that a later run against it finds every match with its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minhash_index_build_and_against_in_one_stage_agree() {
    let (en, _) = sample_docs();
    let dir = tempfile::tempdir().unwrap();
    let (old_in, new_in) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::create_dir_all(&old_in).unwrap();
    std::fs::create_dir_all(&new_in).unwrap();
    write_docs(&old_in.join("docs.parquet"), &en[..100]);
    // The new corpus: half of the old one again, the rest, and copies of ten of the rest.
    let mut new_docs: Vec<(String, String)> = en[50..].to_vec();
    new_docs.extend(
        en[150..160]
            .iter()
            .map(|(id, t)| (format!("copy-{id}"), t.clone())),
    );
    write_docs(&new_in.join("docs.parquet"), &new_docs);
    let (i0, i1) = (dir.path().join("i0"), dir.path().join("i1"));
    let built = dir.path().join("run0");
    std::fs::create_dir_all(&built).unwrap();
    let yaml = format!(
        "name: i0\ninput: {{path: {}}}\nstages:\n  - minhash_dedup: {{index: {{build: {}}}}}\n",
        old_in.display(),
        i0.display()
    );
    run(&built, &yaml).await.check().unwrap();
    let both = dir.path().join("run1");
    std::fs::create_dir_all(&both).unwrap();
    let yaml = format!(
        "name: i1\ninput: {{path: {}}}\nstages:\n  - minhash_dedup: {{index: {{against: {}, build: {}}}}}\n",
        new_in.display(),
        i0.display(),
        i1.display()
    );
    let report = run(&both, &yaml).await;
    report.check().unwrap();
    let dedup = report.stages[1].dedup.clone().unwrap();
    assert!(dedup.removed_by_index >= 45, "{dedup:?}");
    let rej = rejects(&both);
    assert!(
        (150..160).all(|k| rej.contains_key(&format!("copy-{}", en[k].0))),
        "the copies among the new documents go"
    );
    let out: HashSet<String> = strings(&read_parquet_dir(&both.join("out/data")), "id")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let (ids, band_docs) = index_contents(&i1);
    let id_docs: HashSet<u32> = ids.keys().copied().collect();
    assert_eq!(
        band_docs, id_docs,
        "every band key's document has its id, and only those"
    );
    let indexed: HashSet<String> = ids.values().cloned().collect();
    let short = dedup.too_short as usize;
    assert!(
        indexed.is_subset(&out),
        "the index holds only documents that stayed"
    );
    assert_eq!(
        indexed.len() + short,
        out.len(),
        "and all of them that have band keys"
    );
    for (id, (reason, _)) in &rej {
        assert!(
            !indexed.contains(id),
            "{id} was removed ({reason}) yet indexed"
        );
    }
    // Against the new index, every indexed document of the new corpus is found, naming itself.
    let again = dir.path().join("run2");
    std::fs::create_dir_all(&again).unwrap();
    let yaml = format!(
        "name: i2\ninput: {{path: {}}}\nstages:\n  - minhash_dedup: {{index: {{against: {}}}}}\n",
        new_in.display(),
        i1.display()
    );
    run(&again, &yaml).await.check().unwrap();
    let rej2 = rejects(&again);
    for id in &indexed {
        assert_eq!(
            rej2.get(id).map(|(r, d)| (r.as_str(), d.as_str())),
            Some(("near_duplicate_of_index", id.as_str())),
            "{id}"
        );
    }
}

/// An index built from an input that ends empty (every row filtered out before the stage) is a
/// complete, empty index: `index.json` and `docs.parquet`, and a later run against it removes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minhash_index_built_from_an_empty_input_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index");
    let empty = dir.path().join("run0");
    std::fs::create_dir_all(&empty).unwrap();
    let yaml = format!(
        "name: e\ninput: {{path: {}}}\nstages:\n  - text_length: {{min_chars: 100000000}}\n  - minhash_dedup: {{index: {{build: {}}}}}\n",
        root().join("data/sample/en").display(),
        index.display()
    );
    let report = run(&empty, &yaml).await;
    report.check().unwrap();
    assert_eq!(report.rows_written, 0);
    let (ids, bands) = index_contents(&index);
    assert!(ids.is_empty() && bands.is_empty());
    let against = dir.path().join("run1");
    std::fs::create_dir_all(&against).unwrap();
    let yaml = format!(
        "name: a\ninput: {{path: {}}}\nstages:\n  - minhash_dedup: {{index: {{against: {}}}}}\n",
        root().join("data/sample/en").display(),
        index.display()
    );
    let report = run(&against, &yaml).await;
    report.check().unwrap();
    assert_eq!(report.stages[1].dedup.as_ref().unwrap().removed_by_index, 0);
    assert_eq!(report.rows_read, 199);
}
