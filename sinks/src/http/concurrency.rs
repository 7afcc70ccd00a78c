//! Adaptive request concurrency of one HTTP destination: AIMD on backpressure and latency,
//! after Vector's Adaptive Request Concurrency (ARC).
//!
//! ```text
//!   acquire() ──▶ in_flight < limit ? ──yes──▶ Permit ──▶ request ──▶ permit.finish(outcome)
//!                      │ no: wait for a finish                              │
//!                      ◀──────────────── notify ◀─── adjust limit ◀─────────┘
//! ```
//!
//! Invariants: `1 ≤ limit ≤ max`; `in_flight ≤ limit` whenever a permit is handed out (a
//! decrease never revokes permits already out: they drain, and no new one starts until
//! `in_flight < limit` again).
//!
//! Rules (in [`Controller::record`]):
//! - **Backpressure** (429, 503, timeouts), on any response: the limit halves (rounded
//!   down, at least 1). At most one decrease per "generation": responses to requests that
//!   started before the last decrease were sent under the old limit and say nothing about
//!   the new one, so a burst of 429s from one window of requests halves once, not once per
//!   request (TCP's rule of one decrease per RTT, and why ARC adjusts once per RTT).
//! - **Latency**, judged once per round: a round is `limit` successful responses of the
//!   current generation, and its RTT is the fastest of them. A round above `spike_ratio` ×
//!   the moving average is backpressure (the limit halves); a round above the average holds
//!   the limit (latency is rising: more requests would only queue); a round at or below it
//!   grows the limit by 1, if the limit was actually in use (in flight reached it since it
//!   last changed): additive increase of one per round trip, as in TCP congestion
//!   avoidance and ARC.
//! - Other errors (4xx rejections, a 500 without backpressure meaning): no change.
//!
//! The moving average is an EWMA (α = [`EWMA_ALPHA`]) of the rounds' RTTs, as ARC's
//! `past_rtt`. The decision is a pure function of the outcomes fed in: the unit tests feed
//! outcomes and assert the limit's trajectory.
//!
//! Where this differs from ARC (vector `src/sinks/util/adaptive_concurrency/controller.rs`):
//! ARC adjusts on a timer, once per mean RTT, comparing that period's mean RTT with
//! `past_rtt.mean + 2.5σ`, and decreases by 0.9. Here the rounds are counted in responses,
//! which needs no clock and gives the same one-step-per-round-trip pace; a round is judged
//! by its fastest response, because on a loaded machine single responses stall for
//! scheduling reasons that say nothing about the destination (judged per response, the
//! limit halved on such stalls and stayed at 1–2 of 32 in the catch-up bench), while a
//! destination that is really slower is slower for every request of the round; a spike is
//! a ratio of the average because a σ computed from near-constant RTTs turns any jitter
//! into a spike; and backpressure halves, since a 429 from a SaaS API means the rate is
//! well over what it takes, not slightly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Weight of the newest RTT in the moving average; ARC's default `ewma_alpha` is 0.4.
pub const EWMA_ALPHA: f64 = 0.4;

/// Tuning of the controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConcurrencyConfig {
    /// The limit at start (clamped to `1..=max`); low so a new destination is probed gently.
    pub initial: usize,
    /// The configured cap (`max_concurrency`); the limit never exceeds it.
    pub max: usize,
    /// An RTT above `spike_ratio` × its moving average counts as backpressure.
    pub spike_ratio: f64,
}

impl ConcurrencyConfig {
    /// Starts at 2, caps at `max`, spikes at 2.5 × the average.
    pub fn with_max(max: usize) -> Self {
        ConcurrencyConfig {
            initial: 2,
            max: max.max(1),
            spike_ratio: 2.5,
        }
    }
}

/// What one request ended with, as far as concurrency is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// A 2xx response after `rtt`.
    Success { rtt: Duration },
    /// The destination is overloaded: 429, 503, a timeout.
    Backpressure,
    /// Anything else (a rejection, a connection error): the limit stays.
    Other,
}

/// The pure AIMD state.
#[derive(Debug)]
pub struct Controller {
    config: ConcurrencyConfig,
    limit: usize,
    in_flight: usize,
    /// Incremented at each decrease; permits remember the generation they started in.
    generation: u64,
    /// Successes of the current round, and the fastest of their RTTs (seconds).
    round: (usize, f64),
    /// In flight reached the limit since the limit last changed: the limit is in use, so
    /// successes are evidence that more would work too.
    saturated: bool,
    /// Moving average of the rounds' RTTs (seconds).
    rtt_mean: Option<f64>,
}

/// What a started request carries back to [`Controller::record`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
}

impl Controller {
    /// A controller at `config.initial`.
    pub fn new(config: ConcurrencyConfig) -> Self {
        let max = config.max.max(1);
        Controller {
            config: ConcurrencyConfig { max, ..config },
            limit: config.initial.clamp(1, max),
            in_flight: 0,
            generation: 0,
            round: (0, f64::INFINITY),
            saturated: false,
            rtt_mean: None,
        }
    }

    /// Starts a request if the limit allows one now.
    pub fn try_start(&mut self) -> Option<Ticket> {
        if self.in_flight >= self.limit {
            return None;
        }
        self.in_flight += 1;
        self.saturated |= self.in_flight >= self.limit;
        Some(Ticket {
            generation: self.generation,
        })
    }

    /// Ends a request started with `ticket` and adapts the limit to its outcome.
    pub fn record(&mut self, ticket: Ticket, outcome: Outcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Backpressure => self.decrease(ticket),
            Outcome::Success { rtt } if ticket.generation == self.generation => {
                self.round = (self.round.0 + 1, self.round.1.min(rtt.as_secs_f64()));
                if self.round.0 < self.limit {
                    return;
                }
                let rtt = self.round.1;
                self.round = (0, f64::INFINITY);
                let mean = self.rtt_mean;
                self.rtt_mean = Some(match mean {
                    None => rtt,
                    Some(m) => m + EWMA_ALPHA * (rtt - m),
                });
                match mean {
                    Some(m) if rtt > m * self.config.spike_ratio => self.decrease(ticket),
                    Some(m) if rtt > m => {}
                    _ => {
                        if self.saturated && self.limit < self.config.max {
                            self.limit += 1;
                            self.saturated = false;
                        }
                    }
                }
            }
            // A response to a request sent under the limit before the last decrease.
            Outcome::Success { .. } => {}
            Outcome::Other => {}
        }
    }

    /// Ends a request whose outcome is unknown (dropped permit): releases it only.
    pub fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    fn decrease(&mut self, ticket: Ticket) {
        if ticket.generation != self.generation {
            return;
        }
        self.limit = (self.limit / 2).max(1);
        self.generation += 1;
        self.round = (0, f64::INFINITY);
        self.saturated = false;
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests started and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// Shared async front of [`Controller`] for one destination.
#[derive(Debug, Clone)]
pub struct Concurrency {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<Controller>,
    notify: Notify,
    /// Waiters take turns in arrival order (tokio's mutex is fair), so a request waiting
    /// for a slot is never overtaken by later ones: the hub's in-flight window stays a
    /// window, and a crash resends no more than it.
    turn: tokio::sync::Mutex<()>,
}

/// The right to have one request in flight; give it back with [`Permit::finish`]. Dropping
/// it without finishing releases the slot and leaves the limit as it is.
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Shared>,
    ticket: Option<Ticket>,
}

impl Concurrency {
    /// An adaptive limit starting at `config.initial`, never above `config.max`.
    pub fn new(config: ConcurrencyConfig) -> Self {
        Concurrency {
            inner: Arc::new(Shared {
                state: Mutex::new(Controller::new(config)),
                notify: Notify::new(),
                turn: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Waits until one more request may be in flight, first come first served. Cancel safe.
    pub async fn acquire(&self) -> Permit {
        let _turn = self.inner.turn.lock().await;
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a finish between check and await is not lost.
            notified.as_mut().enable();
            if let Some(ticket) = self.inner.lock().try_start() {
                return Permit {
                    inner: self.inner.clone(),
                    ticket: Some(ticket),
                };
            }
            notified.await;
        }
    }

    /// The current limit (for metrics and `sluice status`).
    pub fn limit(&self) -> usize {
        self.inner.lock().limit()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().in_flight()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Controller> {
        // Plain counters, consistent at every statement boundary.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Permit {
    /// Ends the request with its outcome, adapting the limit.
    pub fn finish(mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.inner.lock().record(ticket, outcome);
            self.inner.notify.notify_waiters();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.ticket.take().is_some() {
            self.inner.lock().release();
            self.inner.notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64) -> Outcome {
        Outcome::Success {
            rtt: Duration::from_millis(ms),
        }
    }

    /// Runs rounds of "fill to the limit, then finish all with `outcome`", returning the
    /// limit after each round.
    fn rounds(c: &mut Controller, n: usize, outcome: impl Fn(usize) -> Outcome) -> Vec<usize> {
        let mut trajectory = Vec::new();
        for round in 0..n {
            let mut tickets = Vec::new();
            while let Some(t) = c.try_start() {
                tickets.push(t);
            }
            assert_eq!(c.in_flight(), c.limit());
            for t in tickets {
                c.record(t, outcome(round));
            }
            assert_eq!(c.in_flight(), 0);
            trajectory.push(c.limit());
        }
        trajectory
    }

    #[test]
    fn grows_by_one_per_round_up_to_the_cap() {
        let mut c = Controller::new(ConcurrencyConfig::with_max(8));
        assert_eq!(c.limit(), 2);
        let t = rounds(&mut c, 9, |_| ok(100));
        assert_eq!(t, vec![3, 4, 5, 6, 7, 8, 8, 8, 8]);
    }

    #[test]
    fn backpressure_halves_once_per_generation() {
        let mut c = Controller::new(ConcurrencyConfig::with_max(32));
        rounds(&mut c, 14, |_| ok(100));
        assert_eq!(c.limit(), 16);
        // A whole round of 429s: 16 responses, one halving.
        let t = rounds(&mut c, 3, |_| Outcome::Backpressure);
        assert_eq!(t, vec![8, 4, 2]);
        let t = rounds(&mut c, 5, |_| Outcome::Backpressure);
        assert_eq!(t, vec![1, 1, 1, 1, 1]);
        // Then it grows again.
        let t = rounds(&mut c, 3, |_| ok(100));
        assert_eq!(t, vec![2, 3, 4]);
    }

    #[test]
    fn rising_latency_stops_growth_and_a_spike_halves() {
        let mut c = Controller::new(ConcurrencyConfig::with_max(64));
        rounds(&mut c, 6, |_| ok(100));
        assert_eq!(c.limit(), 8);
        // RTT rising round after round: always above the moving average, no growth.
        let t = rounds(&mut c, 4, |r| ok(110 + 10 * r as u64));
        assert_eq!(t, vec![8, 8, 8, 8]);
        // A spike (> 2.5 × the average) is backpressure.
        let t = rounds(&mut c, 1, |_| ok(1_000));
        assert_eq!(t, vec![4]);
    }

    #[test]
    fn one_slow_response_per_round_is_not_a_spike() {
        let mut c = Controller::new(ConcurrencyConfig::with_max(16));
        rounds(&mut c, 2, |_| ok(10));
        assert_eq!(c.limit(), 4);
        // Every round has one response stalled 20× (a descheduled thread), the rest as fast
        // as before: the limit keeps growing.
        for _ in 0..4 {
            let tickets: Vec<_> = std::iter::from_fn(|| c.try_start()).collect();
            for (i, t) in tickets.into_iter().enumerate() {
                c.record(t, ok(if i == 0 { 200 } else { 10 }));
            }
        }
        assert_eq!(c.limit(), 8);
    }

    #[test]
    fn rejections_change_nothing_and_unsaturated_successes_do_not_grow() {
        let mut c = Controller::new(ConcurrencyConfig::with_max(8));
        rounds(&mut c, 3, |_| Outcome::Other);
        assert_eq!(c.limit(), 2);
        // One request at a time never reaches the limit of 2: no evidence for more.
        let mut c = Controller::new(ConcurrencyConfig::with_max(8));
        for _ in 0..20 {
            let t = c.try_start().unwrap();
            c.record(t, ok(10));
        }
        assert_eq!(c.limit(), 2);
    }

    #[test]
    fn late_responses_from_an_old_generation_do_not_halve_again() {
        let mut c = Controller::new(ConcurrencyConfig {
            initial: 8,
            ..ConcurrencyConfig::with_max(8)
        });
        let tickets: Vec<_> = std::iter::from_fn(|| c.try_start()).collect();
        assert_eq!(tickets.len(), 8);
        for t in tickets {
            c.record(t, Outcome::Backpressure);
        }
        assert_eq!(c.limit(), 4);
    }

    #[test]
    fn initial_is_clamped() {
        let c = Controller::new(ConcurrencyConfig {
            initial: 0,
            max: 0,
            spike_ratio: 2.0,
        });
        assert_eq!(c.limit(), 1);
    }

    #[tokio::test]
    async fn acquire_waits_for_a_finish() {
        let conc = Concurrency::new(ConcurrencyConfig {
            initial: 1,
            ..ConcurrencyConfig::with_max(4)
        });
        let p = conc.acquire().await;
        assert_eq!(conc.in_flight(), 1);
        let c2 = conc.clone();
        let waiter = tokio::spawn(async move { c2.acquire().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        p.finish(Outcome::Other);
        let p2 = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(conc.in_flight(), 1);
        drop(p2);
        assert_eq!(conc.in_flight(), 0);
        assert_eq!(conc.limit(), 1);
    }
}
