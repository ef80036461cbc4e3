//! Rate limits: token buckets keyed by account or address, with bounded memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// A limit of `rate` events per second with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub fn per_minute(n: u32) -> Rate {
        Rate {
            per_second: n as f64 / 60.0,
            burst: n as f64,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per key. When the map grows past `max_keys`, buckets that have refilled
/// completely are forgotten (they carry no information), so memory stays bounded by the
/// number of keys that are actually being limited.
pub struct RateLimiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(rate: Rate) -> Self {
        RateLimiter {
            rate,
            max_keys: 100_000,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token; false when the key is over its limit.
    pub fn check(&self, key: &K) -> bool {
        if self.rate.per_second <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= self.max_keys {
            let rate = self.rate;
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * rate.per_second < rate.burst
            });
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.rate.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused() {
        let limiter = RateLimiter::new(Rate {
            per_second: 0.001,
            burst: 3.0,
        });
        assert!(limiter.check(&"a"));
        assert!(limiter.check(&"a"));
        assert!(limiter.check(&"a"));
        assert!(!limiter.check(&"a"));
        assert!(limiter.check(&"b"), "keys are limited separately");
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let limiter = RateLimiter::new(Rate {
            per_second: 0.0,
            burst: 0.0,
        });
        for _ in 0..1000 {
            assert!(limiter.check(&1));
        }
    }
}

/// One token bucket that delays instead of refusing: for shaping a single connection's input
/// (the connection simply is not read until the wait is over, so a flooding client slows
/// down without anyone else noticing).
#[derive(Debug, Clone)]
pub struct Shaper {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl Shaper {
    pub fn new(rate: Rate, now: Instant) -> Shaper {
        Shaper {
            rate,
            tokens: rate.burst,
            at: now,
        }
    }

    /// Takes one token at `now`; returns how long to wait before going on (zero when a
    /// token was there). A rate of 0 never waits.
    pub fn take(&mut self, now: Instant) -> std::time::Duration {
        if self.rate.per_second <= 0.0 {
            return std::time::Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_secs_f64(-self.tokens / self.rate.per_second)
        }
    }
}

#[cfg(test)]
mod shaper_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_each_event_waits_its_share() {
        let t0 = Instant::now();
        let mut s = Shaper::new(
            Rate {
                per_second: 10.0,
                burst: 3.0,
            },
            t0,
        );
        for _ in 0..3 {
            assert_eq!(s.take(t0), Duration::ZERO);
        }
        // The fourth at the same instant waits a tenth of a second, the fifth two tenths.
        assert!((s.take(t0).as_secs_f64() - 0.1).abs() < 1e-9);
        assert!((s.take(t0).as_secs_f64() - 0.2).abs() < 1e-9);
        // After a quiet second the bucket is full again (at most the burst).
        let later = t0 + Duration::from_secs(2);
        for _ in 0..3 {
            assert_eq!(s.take(later), Duration::ZERO);
        }
        assert!(s.take(later) > Duration::ZERO);
    }

    #[test]
    fn a_rate_of_zero_never_waits() {
        let t0 = Instant::now();
        let mut s = Shaper::new(
            Rate {
                per_second: 0.0,
                burst: 0.0,
            },
            t0,
        );
        for _ in 0..1000 {
            assert_eq!(s.take(t0), Duration::ZERO);
        }
    }
}
