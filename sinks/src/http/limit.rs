//! Rate limits of one HTTP destination: several windows at once (`"20/s"`, `"100000/day"`),
//! every one respected at all times, plus a destination-wide pause (`Retry-After`).
//!
//! ```text
//!   request ──▶ Limiter::ready() ──▶ all windows conform AND now ≥ paused_until ?
//!                  ▲      │ no: sleep until the latest of (each window's next slot, pause)
//!                  │      ▼ yes: every window's TAT advances together, under one lock
//!   Retry-After ───┘ pause_until(t)
//! ```
//!
//! # Algorithm: GCRA per window, admitted atomically across windows
//!
//! Each window "N per T" is a GCRA (generic cell rate algorithm, the virtual-scheduling form
//! of a token bucket) with a theoretical arrival time `tat`, an emission interval `I` and a
//! tolerance `τ = (b - 1)·I` for a burst of `b`. A request at `t` conforms when
//! `t ≥ tat - τ`; admitting it sets `tat = max(tat, t) + I`.
//!
//! **Invariant (the sliding-window bound).** With `I = T / (N - b + 1)`, any half-open
//! interval of length `T` holds at most `N` admitted requests: GCRA guarantees that `k`
//! admitted requests span at least `(k - b)·I`, and a span shorter than `T` forces
//! `k < b + T/I = N + 1`. The default burst `b = 1` gives the full long-run rate `N/T`
//! with evenly spaced starts; a larger burst buys short bursts at the price of a lower
//! sustained rate `(N - b + 1)/T`. A plain token bucket of capacity `N` refilling at `N/T`
//! (governor's default quota) admits up to `2N - 1` in some window of length `T`, which a
//! server counting a sliding or fixed window answers with 429s.
//!
//! **Why not governor.** governor implements GCRA well, but each `RateLimiter` decides on
//! its own: checking window A and then waiting on window B consumes a slot of A that is only
//! used later, after the wait on B, so A's accounting no longer matches what reaches the
//! server, and a cancelled wait leaks A's slot. Here one mutex holds every window: a request
//! is admitted by all windows in the same instant or by none, and a waiter that is cancelled
//! has consumed nothing. The state is tiny (one `Instant` per window), the mutex is never
//! held across an `.await`, and the decision is a pure function of `now` ([`Windows::admit`]),
//! which the tests drive with explicit instants.
//!
//! **Pause.** [`Limiter::pause_until`] moves a destination-wide barrier forward (never back):
//! no request is admitted before it, whichever window would allow it. Requests that were
//! admitted before the pause was set are already on the wire and are not recalled. After a
//! pause the windows allow at most their burst at once, so a pause never ends in a storm.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Error, Result};

/// The accepted forms, quoted in every parse error.
const ACCEPTED_FORMS: &str =
    "N/UNIT or N/<k>UNIT with UNIT one of s, sec, min, m, h, hour, day, d (e.g. \"20/s\", \"100/10s\", \"5/min\", \"1000/h\", \"250000/day\")";

/// One window: at most `count` requests in any interval of length `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window (≥ 1).
    pub count: u32,
    /// The window's length (> 0).
    pub per: Duration,
    /// Requests that may start at once (1 ≤ burst ≤ count); see the module doc.
    pub burst: u32,
}

impl RateLimit {
    /// `count` requests per `per`, evenly spaced (burst 1).
    pub fn new(count: u32, per: Duration) -> Self {
        RateLimit {
            count: count.max(1),
            per,
            burst: 1,
        }
    }

    /// The same limit allowing `burst` requests at once (clamped to 1..=count); the
    /// sustained rate drops to `(count - burst + 1) / per` so the window bound still holds.
    pub fn with_burst(self, burst: u32) -> Self {
        RateLimit {
            burst: burst.clamp(1, self.count),
            ..self
        }
    }

    /// GCRA emission interval `per / (count - burst + 1)`, rounded up to the nanosecond:
    /// rounding down would let `count + 1` requests fit in one window.
    fn interval(&self) -> Duration {
        let slots = u128::from(self.count - self.burst + 1);
        let nanos = self.per.as_nanos().div_ceil(slots);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// GCRA tolerance `(burst - 1) · interval`.
    fn tolerance(&self) -> Duration {
        self.interval() * (self.burst - 1)
    }
}

impl FromStr for RateLimit {
    type Err = Error;

    /// Parses `"20/s"`, `"100/10s"`, `"250000/day"`, `"5/min"`, `"1000/h"`.
    fn from_str(value: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidRateLimit {
            value: value.to_string(),
            reason: format!("{reason}; accepted: {ACCEPTED_FORMS}"),
        };
        let (count, window) = value
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("missing '/'".into()))?;
        let count: u32 = count.trim().parse().map_err(|_| {
            bad(format!(
                "request count {:?} is not a whole number",
                count.trim()
            ))
        })?;
        if count == 0 {
            return Err(bad("request count must be at least 1".into()));
        }
        let window = window.trim();
        let digits = window.bytes().take_while(u8::is_ascii_digit).count();
        let (multiple, unit) = window.split_at(digits);
        let multiple: u32 = if multiple.is_empty() {
            1
        } else {
            multiple
                .parse()
                .map_err(|_| bad(format!("window multiple {multiple:?} is too large")))?
        };
        if multiple == 0 {
            return Err(bad("window length must be more than 0".into()));
        }
        let unit_secs: u64 = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3_600,
            "d" | "day" => 86_400,
            other => return Err(bad(format!("unknown time unit {other:?}"))),
        };
        Ok(RateLimit::new(
            count,
            Duration::from_secs(unit_secs * u64::from(multiple)),
        ))
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.count, self.per.as_secs_f64())
    }
}

/// The pure admission state of every window and the pause: no clock, no I/O.
#[derive(Debug)]
pub struct Windows {
    limits: Vec<RateLimit>,
    /// Theoretical arrival time per window (`None` = never used, conforms at once).
    tat: Vec<Option<Instant>>,
    paused_until: Option<Instant>,
}

impl Windows {
    /// State for these windows, nothing admitted yet.
    pub fn new(limits: Vec<RateLimit>) -> Self {
        let tat = vec![None; limits.len()];
        Windows {
            limits,
            tat,
            paused_until: None,
        }
    }

    /// Admits one request at `now` in every window at once, or returns the earliest instant
    /// at which every window and the pause would admit it (nothing consumed then).
    pub fn admit(&mut self, now: Instant) -> std::result::Result<(), Instant> {
        let mut earliest = now;
        if let Some(until) = self.paused_until {
            earliest = earliest.max(until);
        }
        for (limit, tat) in self.limits.iter().zip(&self.tat) {
            if let Some(tat) = tat {
                // Conforming from tat - τ on.
                let allowed = tat.checked_sub(limit.tolerance()).unwrap_or(now);
                earliest = earliest.max(allowed);
            }
        }
        if earliest > now {
            return Err(earliest);
        }
        for (limit, tat) in self.limits.iter().zip(self.tat.iter_mut()) {
            let base = tat.map_or(now, |t| t.max(now));
            *tat = Some(base + limit.interval());
        }
        Ok(())
    }

    /// Moves the destination-wide pause to `until` unless it already ends later.
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// The end of the pause, if one was ever set (may be in the past).
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }
}

/// Async front of [`Windows`]: shared by every request task of one destination.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<Windows>,
    /// Waiters are admitted in arrival order (tokio's mutex is fair): without it they all
    /// sleep to the same instant and race, and one may lose again and again.
    turn: tokio::sync::Mutex<()>,
}

impl Limiter {
    /// A limiter respecting every one of `limits` (none: unlimited, only pauses apply).
    pub fn new(limits: Vec<RateLimit>) -> Self {
        Limiter {
            state: Mutex::new(Windows::new(limits)),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Parses each configured window (`["20/s", "100000/day"]`); reports every bad one.
    pub fn parse(limits: &[impl AsRef<str>]) -> Result<Self> {
        let mut parsed = Vec::with_capacity(limits.len());
        let mut errors = Vec::new();
        for l in limits {
            match l.as_ref().parse::<RateLimit>() {
                Ok(l) => parsed.push(l),
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Ok(Limiter::new(parsed)),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Invalid {
                problems: errors.iter().map(ToString::to_string).collect(),
            }),
        }
    }

    /// Waits until one request is admitted by every window and the pause is over, first come
    /// first served. Cancel safe: a dropped wait consumes nothing.
    pub async fn ready(&self) {
        let _turn = self.turn.lock().await;
        loop {
            let now = Instant::now();
            let verdict = self.lock().admit(now);
            match verdict {
                Ok(()) => return,
                Err(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// Pauses the whole destination: no request is admitted before `until`.
    pub fn pause_until(&self, until: Instant) {
        self.lock().pause_until(until);
    }

    /// When the current pause ends, if the destination is paused now.
    pub fn paused_until(&self) -> Option<Instant> {
        self.lock().paused_until().filter(|p| *p > Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        // The state is two Instants per window, always consistent: a poisoned lock only
        // means another task panicked elsewhere while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    //! The bounds are proven on [`Windows`] with explicit instants: the same determinism as
    //! tokio's paused clock without its `test-util` feature, which would build a second copy
    //! of tokio and of everything above it (deltalake) for the tests. `ready()` itself is
    //! checked once on the real clock.
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("20/s", 20, 1),
            ("100/10s", 100, 10),
            ("250000/day", 250_000, 86_400),
            ("5/min", 5, 60),
            ("1000/h", 1000, 3_600),
            (" 7 / 2m ", 7, 120),
        ];
        for (text, count, secs) in cases {
            let l: RateLimit = text.parse().unwrap();
            assert_eq!(
                (l.count, l.per),
                (count, Duration::from_secs(secs)),
                "{text}"
            );
            assert_eq!(l.burst, 1);
        }
    }

    #[test]
    fn parse_errors_name_the_value_and_the_forms() {
        for bad in [
            "20",
            "x/s",
            "0/s",
            "20/0s",
            "20/week",
            "20/",
            "-1/s",
            "99999999999/s",
        ] {
            let e = bad.parse::<RateLimit>().unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains("250000/day"), "{e}");
        }
        let e = Limiter::parse(&["20/s", "1/fortnight", "x/s"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("fortnight") && e.contains("x/s"), "{e}");
    }

    /// Drives `Windows` with a request wanted every `step`, always at the earliest admitted
    /// instant, and returns the admission times.
    fn run(limits: Vec<RateLimit>, step: Duration, total: Duration) -> Vec<Instant> {
        let start = Instant::now();
        let mut w = Windows::new(limits);
        let mut admitted = Vec::new();
        let mut now = start;
        while now < start + total {
            match w.admit(now) {
                Ok(()) => {
                    admitted.push(now);
                    now += step;
                }
                Err(at) => {
                    assert!(at > now);
                    now = at;
                }
            }
        }
        admitted
    }

    /// Every half-open interval of length `per` starting at an admission holds ≤ count.
    fn assert_bound(times: &[Instant], limit: RateLimit) {
        for (i, t) in times.iter().enumerate() {
            let n = times[i..]
                .iter()
                .take_while(|u| **u < *t + limit.per)
                .count();
            assert!(
                n as u32 <= limit.count,
                "{n} requests within {limit} from #{i}"
            );
        }
    }

    #[test]
    fn every_window_bounds_a_greedy_client() {
        let a: RateLimit = "20/s".parse().unwrap();
        let b: RateLimit = "100/10s".parse().unwrap();
        let c = RateLimit::new(30, Duration::from_secs(2)).with_burst(10);
        let times = run(vec![a, b, c], Duration::ZERO, Duration::from_secs(60));
        for l in [a, b, c] {
            assert_bound(&times, l);
        }
        // The tightest window (100/10s) is used fully over the run.
        assert!(times.len() >= 599 && times.len() <= 601, "{}", times.len());
    }

    #[test]
    fn rounding_never_lets_one_more_in() {
        for (count, per_ms, burst) in [
            (3, 1000, 1),
            (7, 1000, 3),
            (33, 10_000, 1),
            (6, 1000, 5),
            (1, 7, 1),
        ] {
            let l = RateLimit::new(count, ms(per_ms)).with_burst(burst);
            let times = run(vec![l], Duration::ZERO, ms(per_ms * 5));
            assert_bound(&times, l);
        }
    }

    #[test]
    fn burst_is_allowed_then_the_sustained_rate() {
        let l = RateLimit::new(10, Duration::from_secs(1)).with_burst(5);
        let times = run(vec![l], Duration::ZERO, Duration::from_secs(10));
        let start = times[0];
        assert_eq!(times.iter().filter(|t| **t == start).count(), 5);
        assert_bound(&times, l);
        // Sustained (10 - 5 + 1) = 6/s.
        assert!((60..=66).contains(&times.len()), "{}", times.len());
    }

    #[test]
    fn a_slow_client_is_never_delayed() {
        let l: RateLimit = "20/s".parse().unwrap();
        let times = run(vec![l], ms(100), Duration::from_secs(1));
        assert_eq!(times.len(), 10);
        for pair in times.windows(2) {
            assert_eq!(pair[1] - pair[0], ms(100));
        }
    }

    #[test]
    fn a_refusal_consumes_no_window() {
        let mut w = Windows::new(vec!["1/s".parse().unwrap(), "10/s".parse().unwrap()]);
        let t0 = Instant::now();
        w.admit(t0).unwrap();
        // Window 1/s refuses; window 10/s must not have been charged by the refusal.
        assert_eq!(w.admit(t0 + ms(100)), Err(t0 + ms(1000)));
        assert_eq!(w.admit(t0 + ms(100)), Err(t0 + ms(1000)));
        w.admit(t0 + ms(1000)).unwrap();
        assert_eq!(w.admit(t0 + ms(1050)), Err(t0 + ms(2000)));
    }

    #[test]
    fn pause_holds_every_request_and_only_moves_forward() {
        let mut w = Windows::new(vec!["100/s".parse().unwrap()]);
        let t0 = Instant::now();
        w.admit(t0).unwrap();
        w.pause_until(t0 + ms(2000));
        w.pause_until(t0 + ms(500)); // an earlier Retry-After does not shorten the pause
        assert_eq!(w.admit(t0 + ms(20)), Err(t0 + ms(2000)));
        assert_eq!(w.admit(t0 + ms(1999)), Err(t0 + ms(2000)));
        w.admit(t0 + ms(2000)).unwrap();
        // No storm after the pause: the window's spacing applies again at once.
        assert_eq!(w.admit(t0 + ms(2000)), Err(t0 + ms(2010)));
    }

    #[test]
    fn no_windows_means_only_the_pause() {
        let mut w = Windows::new(vec![]);
        let t0 = Instant::now();
        for _ in 0..1000 {
            w.admit(t0).unwrap();
        }
        w.pause_until(t0 + ms(10));
        assert_eq!(w.admit(t0), Err(t0 + ms(10)));
    }

    #[tokio::test]
    async fn ready_waits_on_the_real_clock() {
        let limiter = Limiter::parse(&["50/s"]).unwrap();
        let start = Instant::now();
        for _ in 0..6 {
            limiter.ready().await;
        }
        // 6 evenly spaced starts at 50/s take at least 5 × 20 ms.
        assert!(start.elapsed() >= ms(100), "{:?}", start.elapsed());
        limiter.pause_until(Instant::now() + ms(50));
        assert!(limiter.paused_until().is_some());
        let paused_at = Instant::now();
        limiter.ready().await;
        assert!(paused_at.elapsed() >= ms(45), "{:?}", paused_at.elapsed());
    }
}
