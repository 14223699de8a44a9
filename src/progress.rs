//! The progress line of a run: rows and text bytes read, with rates, refreshed from the readers'
//! counters; during a corpus stage's passes, that pass's bar instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::io::ReadStats;

/// Counters of finished tasks plus the task under way.
#[derive(Default)]
pub struct Progress {
    done_rows: AtomicU64,
    done_bytes: AtomicU64,
    current: Mutex<Option<Arc<ReadStats>>>,
    /// The pass of a corpus stage under way, which the line shows instead of the reads.
    phase: Mutex<Option<Phase>>,
    /// Set by `stop`; the drawing thread waits on it between refreshes, so that it ends at once.
    stop: (Mutex<bool>, Condvar),
}

/// A pass over the corpus that does not go through the readers: a bar when its total is known.
#[derive(Clone)]
struct Phase {
    name: String,
    total: Option<u64>,
    done: Arc<AtomicU64>,
}

impl Progress {
    /// Starts showing a pass named `name` of `total` units (a spinner when unknown); the pass adds
    /// what it did to the counter returned.
    pub fn phase(&self, name: impl Into<String>, total: Option<u64>) -> Arc<AtomicU64> {
        let done = Arc::new(AtomicU64::new(0));
        *self.phase.lock().expect("progress lock") = Some(Phase {
            name: name.into(),
            total,
            done: Arc::clone(&done),
        });
        done
    }

    /// Back to showing the reads.
    pub fn end_phase(&self) {
        *self.phase.lock().expect("progress lock") = None;
    }

    pub fn track(&self, stats: &Arc<ReadStats>) {
        *self.current.lock().expect("progress lock") = Some(Arc::clone(stats));
    }

    pub fn finish_task(&self) {
        if let Some(s) = self.current.lock().expect("progress lock").take() {
            self.done_rows
                .fetch_add(ReadStats::get(&s.rows), Ordering::Relaxed);
            self.done_bytes
                .fetch_add(ReadStats::get(&s.text_bytes), Ordering::Relaxed);
        }
    }

    fn totals(&self) -> (u64, u64) {
        let cur = self.current.lock().expect("progress lock").clone();
        let (r, b) = cur
            .map(|s| (ReadStats::get(&s.rows), ReadStats::get(&s.text_bytes)))
            .unwrap_or((0, 0));
        (
            self.done_rows.load(Ordering::Relaxed) + r,
            self.done_bytes.load(Ordering::Relaxed) + b,
        )
    }

    /// Draws a spinner line on stderr until `stop` (hidden when stderr is not a terminal).
    pub fn spawn(self: &Arc<Self>, name: &str) -> std::thread::JoinHandle<()> {
        let this = Arc::clone(self);
        let bar = ProgressBar::new_spinner();
        let spinner = ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}] {msg}")
            .expect("template");
        let with_bar = ProgressStyle::with_template(
            "{spinner} {prefix} [{elapsed_precise}] {msg} {wide_bar} {human_pos}/{human_len} \
             ({eta} left)",
        )
        .expect("template");
        bar.set_style(spinner.clone());
        bar.set_prefix(name.to_string());
        std::thread::spawn(move || {
            let start = Instant::now();
            let (lock, wake) = &this.stop;
            let mut stopped = lock.lock().expect("progress lock");
            let mut shown: Option<String> = None;
            while !*stopped {
                let phase = this.phase.lock().expect("progress lock").clone();
                if shown != phase.as_ref().map(|p| p.name.clone()) {
                    shown = phase.as_ref().map(|p| p.name.clone());
                    match phase.as_ref().and_then(|p| p.total) {
                        Some(total) => {
                            bar.set_style(with_bar.clone());
                            bar.set_length(total);
                        }
                        None => bar.set_style(spinner.clone()),
                    }
                    bar.set_position(0);
                    bar.reset_eta();
                }
                match phase {
                    Some(Phase {
                        name,
                        total: Some(_),
                        done,
                    }) => {
                        bar.set_message(name);
                        bar.set_position(done.load(Ordering::Relaxed));
                    }
                    Some(Phase {
                        name,
                        total: None,
                        done,
                    }) => bar.set_message(format!("{name}: {}", done.load(Ordering::Relaxed))),
                    None => {
                        let (rows, bytes) = this.totals();
                        let secs = start.elapsed().as_secs_f64().max(1e-3);
                        bar.set_message(format!(
                            "{rows} rows, {:.1} MB read ({:.0} rows/s, {:.1} MB/s)",
                            bytes as f64 / 1e6,
                            rows as f64 / secs,
                            bytes as f64 / 1e6 / secs
                        ));
                    }
                }
                bar.tick();
                stopped = wake
                    .wait_timeout(stopped, Duration::from_millis(200))
                    .expect("progress lock")
                    .0;
            }
            bar.finish_and_clear();
        })
    }

    pub fn stop(&self) {
        *self.stop.0.lock().expect("progress lock") = true;
        self.stop.1.notify_all();
    }
}
