//! The progress line of a run: rows and text bytes read, with rates, refreshed from the readers'
//! counters.

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
    /// Set by `stop`; the drawing thread waits on it between refreshes, so that it ends at once.
    stop: (Mutex<bool>, Condvar),
}

impl Progress {
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
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}] {msg}")
                .expect("template"),
        );
        bar.set_prefix(name.to_string());
        std::thread::spawn(move || {
            let start = Instant::now();
            let (lock, wake) = &this.stop;
            let mut stopped = lock.lock().expect("progress lock");
            while !*stopped {
                let (rows, bytes) = this.totals();
                let secs = start.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "{rows} rows, {:.1} MB read ({:.0} rows/s, {:.1} MB/s)",
                    bytes as f64 / 1e6,
                    rows as f64 / secs,
                    bytes as f64 / 1e6 / secs
                ));
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
