//! Suffix array construction on the corpus text: one candidate per process, so that `/usr/bin/time`
//! gives each its own peak memory.
//!   suffix-array-compare CANDIDATE CORPUS_DIR [THREADS]
//! CANDIDATE: libsais, divsufsort (pure Rust port), cdivsufsort (the C library), suffix (SA-IS in
//! Rust). Prints the input size, the seconds of construction (and of the LCP array where the crate
//! has one), and a checksum of the suffix array, which must be equal across candidates.

use std::io::BufRead;
use std::time::Instant;

use arrow::array::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Every document of `en/` (Parquet) and `zh/` (JSONL.gz), each followed by a 0 byte: the bytes the
/// stage would index (it uses separators that cannot occur in UTF-8 text).
fn corpus_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir.join("en"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let texts = b.column_by_name("text").unwrap().as_string::<i32>();
            for t in texts.iter().flatten() {
                out.extend_from_slice(t.as_bytes());
                out.push(0);
            }
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(dir.join("zh"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            std::fs::File::open(f).unwrap(),
        ));
        for line in r.lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            out.extend_from_slice(v["text"].as_str().unwrap().as_bytes());
            out.push(0);
        }
    }
    out
}

fn checksum(sa: impl Iterator<Item = u64>) -> u64 {
    sa.fold(0xcbf29ce484222325u64, |h, x| (h ^ x).wrapping_mul(0x100000001b3))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let candidate = args[1].as_str();
    let text = corpus_bytes(std::path::Path::new(&args[2]));
    let threads: u16 = args.get(3).map_or(1, |t| t.parse().unwrap());
    let t = Instant::now();
    let (sum, sa_s, lcp_s) = match candidate {
        "libsais" => {
            use libsais::{SuffixArrayConstruction, ThreadCount};
            let sa = SuffixArrayConstruction::for_text(&text)
                .in_owned_buffer32()
                .multi_threaded(ThreadCount::fixed(threads))
                .run()
                .unwrap();
            let build = t.elapsed().as_secs_f64();
            let sum = checksum(sa.suffix_array().iter().map(|&x| x as u64));
            let t2 = Instant::now();
            let with_lcp = sa
                .plcp_construction()
                .multi_threaded(ThreadCount::fixed(threads))
                .run()
                .unwrap()
                .lcp_construction()
                .multi_threaded(ThreadCount::fixed(threads))
                .run()
                .unwrap();
            let lcp = t2.elapsed().as_secs_f64();
            drop(with_lcp);
            (sum, build, Some(lcp))
        }
        "divsufsort" => {
            let sa = divsufsort::sort(&text);
            let build = t.elapsed().as_secs_f64();
            (checksum(sa.into_parts().1.iter().map(|&x| x as u64)), build, None)
        }
        "cdivsufsort" => {
            let sa = cdivsufsort::sort(&text);
            let build = t.elapsed().as_secs_f64();
            (checksum(sa.into_parts().1.iter().map(|&x| x as u64)), build, None)
        }
        "suffix" => {
            let s = std::str::from_utf8(&text).unwrap();
            let table = suffix::SuffixTable::new(s);
            let build = t.elapsed().as_secs_f64();
            (checksum(table.table().iter().map(|&x| x as u64)), build, None)
        }
        other => panic!("unknown candidate {other}"),
    };
    println!(
        "{{\"candidate\": \"{candidate}\", \"threads\": {threads}, \"bytes\": {}, \"sa_seconds\": {sa_s:.3}, \"lcp_seconds\": {}, \"checksum\": \"{sum:016x}\"}}",
        text.len(),
        lcp_s.map_or("null".to_string(), |s| format!("{s:.3}"))
    );
}
