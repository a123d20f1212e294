//! The retry policies, in one place (DESIGN: the `backoff` crate is used here only).
//!
//! Two levels: a few quick in-process retries for blips (bounded to seconds), then the job
//! waits in a delay tier for the exponential backoff with jitter between deliveries
//! (`MAIL_RETRY_INITIAL` doubling up to `MAIL_RETRY_MAX`), up to `MAIL_MAX_ATTEMPTS`.

use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;

/// Quick tries per delivery (the first one included).
pub const QUICK_TRIES: u32 = 3;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// Waits between the quick tries of one delivery: 200 ms, then 400 ms, jittered, never
    /// more than 3 s in all.
    pub fn quick(&self) -> QuickRetries {
        QuickRetries(
            ExponentialBackoffBuilder::new()
                .with_initial_interval(Duration::from_millis(200))
                .with_multiplier(2.0)
                .with_randomization_factor(0.3)
                .with_max_interval(Duration::from_secs(1))
                .with_max_elapsed_time(Some(Duration::from_secs(3)))
                .build(),
        )
    }

    /// The wait before the next delivery after `failed_deliveries` (1, 2, ...) deliveries
    /// failed: exponential from `initial`, capped at `max`, with up to +30 % jitter. The
    /// jitter only lengthens: a wait is never cut short below the schedule (a greylisting
    /// relay counts on the sender waiting).
    pub fn delay_after(&self, failed_deliveries: u32) -> Duration {
        let mut schedule = ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial)
            .with_multiplier(2.0)
            .with_randomization_factor(0.0)
            .with_max_interval(self.max)
            .with_max_elapsed_time(None)
            .build();
        let mut base = self.initial;
        for _ in 0..failed_deliveries.clamp(1, 64) {
            base = schedule.next_backoff().unwrap_or(self.max);
        }
        let base = base.min(self.max);
        let jitter = base.mul_f64(rand::random::<f64>() * 0.3);
        (base + jitter).min(self.max).max(base)
    }
}

/// The waits between the quick tries of one delivery; `None` once the time is used up.
pub struct QuickRetries(ExponentialBackoff);

impl QuickRetries {
    pub fn next_wait(&mut self) -> Option<Duration> {
        self.0.next_backoff()
    }
}

/// Waits between attempts to reach RabbitMQ and PostgreSQL again: 0.5 s doubling to 10 s,
/// jittered, for as long as it takes.
pub struct Reconnect(ExponentialBackoff);

impl Reconnect {
    pub fn new() -> Self {
        Reconnect(
            ExponentialBackoffBuilder::new()
                .with_initial_interval(Duration::from_millis(500))
                .with_max_interval(Duration::from_secs(10))
                .with_max_elapsed_time(None)
                .build(),
        )
    }

    pub fn next_wait(&mut self) -> Duration {
        self.0.next_backoff().unwrap_or(Duration::from_secs(10))
    }

    /// After a success: start from the shortest wait again.
    pub fn reset(&mut self) {
        self.0.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_are_never_cut_short_and_stop_at_the_max() {
        let p = RetryPolicy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(60),
            max_attempts: 10,
        };
        for _ in 0..200 {
            let first = p.delay_after(1);
            assert!((5000..=6500).contains(&first.as_millis()), "{first:?}");
            let third = p.delay_after(3);
            assert!((20_000..=26_000).contains(&third.as_millis()), "{third:?}");
            assert_eq!(p.delay_after(20), Duration::from_secs(60));
        }
    }

    #[test]
    fn quick_retries_are_bounded() {
        let p = RetryPolicy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(60),
            max_attempts: 10,
        };
        let mut quick = p.quick();
        let first = quick.next_wait().unwrap();
        assert!(first <= Duration::from_millis(300), "{first:?}");
    }
}
