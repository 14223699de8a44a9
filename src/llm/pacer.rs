//! Requests-per-minute and tokens-per-minute limits: a pacer that spaces units (requests, tokens)
//! evenly, with at most one second's worth at once.
//!
//! Providers state limits per minute but enforce them over shorter intervals (OpenAI: "60,000 rpm may
//! be enforced as 1,000 requests per second"), so a limiter that lets a minute's worth through at once
//! gets 429s. This is the generic cell rate algorithm: each reservation moves a theoretical arrival time
//! forward by its units' share of the rate, and is admitted once that time is within the burst. The rate is
//! `(limit - burst) / 60 s`, so that no 60-second window holds more than `limit`, burst included.
//! By hand rather than `governor`: tokens-per-minute needs a reservation that is corrected afterwards
//! (a response's tokens are known only when it arrives), which governor cannot refund, and its clock
//! ignores tokio's paused time in tests.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    /// Time per unit.
    interval: Duration,
    /// Units that may go at once.
    burst: f64,
    /// The theoretical arrival time: when the units reserved so far would all have been spent.
    tat: Mutex<Option<Instant>>,
    /// Wakes the waiters when units are given back.
    returned: tokio::sync::Notify,
}

impl Pacer {
    /// A pacer for `per_minute` units a minute; `None` when the limit is 0 (no limit).
    pub fn per_minute(per_minute: u64) -> Option<Self> {
        if per_minute == 0 {
            return None;
        }
        let burst = (per_minute as f64 / 60.0).floor().max(1.0);
        // Spread what the burst does not take over the minute; a limit of one a minute stays one.
        let rate_units = (per_minute as f64 - burst).max(1.0);
        Some(Self {
            interval: Duration::from_secs_f64(60.0 / rate_units),
            burst,
            tat: Mutex::new(None),
            returned: tokio::sync::Notify::new(),
        })
    }

    /// Waits until `units` may be spent, and reserves them. The reservation is made when it is
    /// admitted, not when the wait begins, so that what is given back meanwhile (`adjust`) shortens
    /// the wait of everyone waiting.
    pub async fn acquire(&self, units: u64) {
        loop {
            let notified = self.returned.notified();
            let wait = {
                let mut tat = self.tat.lock().expect("pacer lock");
                let now = Instant::now();
                let start = tat.map_or(now, |t| t.max(now));
                let new_tat = start + self.interval.mul_f64(units as f64);
                // Admitted once the reservation lies within the burst of now.
                let ready = new_tat
                    .checked_sub(self.interval.mul_f64(self.burst))
                    .unwrap_or(now);
                // More units than the burst can never fit within it: they go when nothing is
                // pending, and those after them wait for their share of the rate.
                let idle = tat.is_none_or(|t| t <= now);
                if ready <= now || (units as f64 >= self.burst && idle) {
                    *tat = Some(new_tat);
                    return;
                }
                ready - now
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = notified => {}
            }
        }
    }

    /// Corrects an earlier reservation by `delta` units: positive when more were spent than
    /// reserved (the wait of later reservations grows), negative to give back what was not used.
    pub fn adjust(&self, delta: i64) {
        let mut tat = self.tat.lock().expect("pacer lock");
        let Some(t) = *tat else { return };
        let shift = self.interval.mul_f64(delta.unsigned_abs() as f64);
        *tat = Some(if delta >= 0 {
            t + shift
        } else {
            // Never earlier than now: unused units are not banked beyond the burst.
            t.checked_sub(shift).unwrap_or(t).max(Instant::now())
        });
        if delta < 0 {
            self.returned.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time (tokio's paused clock needs its `test-util` feature, which would rebuild DataFusion's
    // tokio for the tests). A sleep never ends early, so the limits (upper bounds on what goes in a
    // window, lower bounds on how long a backlog takes) hold exactly on any machine; how fast the
    // pacer lets units through is not asserted (that is timing, for benchmarks).

    impl Pacer {
        /// The theoretical arrival time, for tests.
        fn tat(&self) -> Option<Instant> {
            *self.tat.lock().expect("pacer lock")
        }
    }

    #[tokio::test]
    async fn no_window_holds_more_than_the_burst_and_the_rate() {
        // 6,000 a minute: 100 at once, then one every 60/5,900 s.
        let pacer = Pacer::per_minute(6000).unwrap();
        let interval = 60.0 / 5900.0;
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..200 {
            pacer.acquire(1).await;
            times.push(start.elapsed().as_secs_f64());
        }
        for (i, &t) in times.iter().enumerate() {
            for (j, &u) in times.iter().enumerate().skip(i) {
                let allowed = 100.0 + (u - t) / interval + 1e-6;
                assert!(
                    (j - i + 1) as f64 <= allowed,
                    "{} in {:.4} s",
                    j - i + 1,
                    u - t
                );
            }
        }
        // The 100 beyond the burst wait for their share of the rate.
        let last = *times.last().unwrap();
        assert!(last >= 100.0 * interval - 1e-3, "{last}");
    }

    #[tokio::test]
    async fn refunds_shorten_the_wait() {
        // 60,000 a minute: 1,000 at once, then 60/59,000 s each.
        let pacer = Pacer::per_minute(60_000).unwrap();
        let interval = Duration::from_secs_f64(60.0 / 59_000.0);
        let before = Instant::now();
        pacer.acquire(5000).await; // more than the burst: goes at once, the rate owes 5,000
        let owed = pacer.tat().unwrap();
        assert!(owed >= before + interval.mul_f64(5000.0));
        pacer.adjust(-1400); // only 3,600 of the 5,000 were used
        let refunded = pacer.tat().unwrap();
        assert_eq!(owed - refunded, interval.mul_f64(1400.0));
        pacer.adjust(200); // and then 200 more than reserved
        assert_eq!(pacer.tat().unwrap() - refunded, interval.mul_f64(200.0));
        // A refund never banks beyond now: the next reservation starts from now at the earliest.
        pacer.adjust(-1_000_000);
        let floor = pacer.tat().unwrap();
        assert!(floor <= Instant::now() && floor >= refunded - interval.mul_f64(5000.0));
    }

    #[test]
    fn zero_is_no_limit() {
        assert!(Pacer::per_minute(0).is_none());
    }
}
