//! Seeded faults of a virtual disk: I/O errors, latency with jitter, crashes
//! that lose the volatile cache and tear the write in flight, and clean
//! restarts.
//!
//! Each faulty disk draws from its own generator, seeded from the run's seed
//! by whoever configures it ([`super::VbdOptions::faults`]), and draws only
//! as blkback handles that disk's requests, one request after another in
//! ring order, so a deterministic run makes the same draws in the same
//! order: a failure replays from its seed. A draw is made only for a fault
//! that is on, and all of a disk's faults share its generator: what replays
//! is a given configuration with a given seed.

use crate::hypervisor::Rng;
use std::fmt;
use std::time::Duration;

/// What goes wrong on one virtual disk. Probabilities run from 0.0 to 1.0.
/// The default is a perfect disk.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct DiskFaults {
    /// Seed of the disk's generator: derive it from the run's seed.
    pub seed: u64,
    /// A read or write request is answered `BLKIF_RSP_ERROR` without the
    /// disk being touched: a failed read copies nothing to the frontend, a
    /// failed write writes nothing. Drawn per read or write request.
    pub io_error: f64,
    /// Every response is delayed by this much simulated time...
    pub latency: Duration,
    /// ... plus from zero up to this much more, drawn per response.
    /// Responses may then complete out of order, as blkif allows and real
    /// disks do.
    pub jitter: Duration,
    /// The backend crashes while carrying out a write: its volatile cache
    /// (writes completed but not flushed) is lost, a random prefix of the
    /// write's sectors (from none to all, in whole logical sectors)
    /// reaches durable storage and the rest does not, the write is never answered, and the device is reset
    /// and offered again as after [`super::Vbd::crash`]. Drawn per write
    /// request the backend carries out (after its checks and
    /// [`io_error`](Self::io_error)).
    pub crash: f64,
    /// The backend restarts cleanly as it takes a request, as after
    /// [`super::Vbd::restart`]: the cache is written back, responses
    /// already due are sent, and that request (and any after it) is never
    /// carried out nor answered. Drawn per request of any kind.
    pub restart: f64,
}

impl DiskFaults {
    /// A perfect disk whose faults, once set, draw from `seed`.
    pub fn seeded(seed: u64) -> Self {
        DiskFaults {
            seed,
            ..DiskFaults::default()
        }
    }

    /// Whether any fault is on.
    pub fn any(&self) -> bool {
        self.io_error > 0.0
            || self.crash > 0.0
            || self.restart > 0.0
            || self.latency > Duration::ZERO
            || self.jitter > Duration::ZERO
    }

    /// Check that every probability is a number from 0.0 to 1.0.
    ///
    /// Errors: [`DiskFaultsError::Probability`] naming the first that is
    /// not.
    pub fn check(&self) -> Result<(), DiskFaultsError> {
        for (name, value) in [
            ("io_error", self.io_error),
            ("crash", self.crash),
            ("restart", self.restart),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(DiskFaultsError::Probability { name, value });
            }
        }
        Ok(())
    }
}

/// Why a [`DiskFaults`] is unusable.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum DiskFaultsError {
    /// A probability is not a number from 0.0 to 1.0.
    Probability {
        /// The field.
        name: &'static str,
        /// Its value.
        value: f64,
    },
}

impl fmt::Display for DiskFaultsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskFaultsError::Probability { name, value } => {
                write!(f, "disk fault `{name}` = {value} is not from 0.0 to 1.0")
            }
        }
    }
}

impl std::error::Error for DiskFaultsError {}

/// What a faulty disk did (all zero on a perfect disk); see
/// [`super::VbdStats::faults`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskFaultCounters {
    /// Read and write requests answered `BLKIF_RSP_ERROR` by
    /// [`DiskFaults::io_error`].
    pub io_errors: u64,
    /// Responses held back by [`DiskFaults::latency`] or
    /// [`DiskFaults::jitter`] (a zero delay drawn is not counted).
    pub delayed: u64,
    /// Crashes drawn ([`DiskFaults::crash`]; also counted in
    /// [`super::VbdStats::crashes`] with those of [`super::Vbd::crash`]).
    pub crashes: u64,
    /// Crashes whose write in flight reached the disk in part: some of its
    /// sectors, not none and not all.
    pub torn_writes: u64,
    /// Sectors (512 bytes) of writes in flight that reached the disk in
    /// crashes.
    pub torn_sectors: u64,
    /// Clean restarts drawn ([`DiskFaults::restart`]).
    pub restarts: u64,
}

/// A disk's faults with their generator and counters. Lives as long as the
/// disk, across connections.
pub(super) struct FaultyDisk {
    faults: DiskFaults,
    rng: Rng,
    pub counters: DiskFaultCounters,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl FaultyDisk {
    pub fn new(faults: DiskFaults) -> Self {
        FaultyDisk {
            rng: Rng::new(faults.seed),
            faults,
            counters: DiskFaultCounters::default(),
        }
    }

    /// A number from 0 to `max` inclusive.
    fn upto(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            None => self.rng.next_u64(),
            Some(n) => self.rng.next_u64() % n,
        }
    }

    /// Whether the backend restarts as it takes a request.
    pub fn restart_now(&mut self) -> bool {
        let hit = self.faults.restart > 0.0 && self.rng.chance(self.faults.restart);
        if hit {
            self.counters.restarts += 1;
        }
        hit
    }

    /// Whether a read or write fails without touching the disk.
    pub fn io_error_now(&mut self) -> bool {
        let hit = self.faults.io_error > 0.0 && self.rng.chance(self.faults.io_error);
        if hit {
            self.counters.io_errors += 1;
        }
        hit
    }

    /// Whether the backend crashes during a write of `sectors` 512-byte
    /// sectors, which tears in whole units of `unit` of them (the logical
    /// sector); if so, how many of its first sectors reach the disk (0 to
    /// `sectors`, a multiple of `unit`).
    pub fn crash_now(&mut self, sectors: u64, unit: u64) -> Option<u64> {
        if !(self.faults.crash > 0.0 && self.rng.chance(self.faults.crash)) {
            return None;
        }
        let unit = unit.max(1);
        let kept = self.upto(sectors / unit) * unit;
        self.counters.crashes += 1;
        self.counters.torn_sectors += kept;
        if kept > 0 && kept < sectors {
            self.counters.torn_writes += 1;
        }
        Some(kept)
    }

    /// How long (nanoseconds of simulated time) to hold a response back.
    pub fn delay(&mut self) -> u64 {
        let mut d = nanos(self.faults.latency);
        if self.faults.jitter > Duration::ZERO {
            d = d.saturating_add(self.upto(nanos(self.faults.jitter)));
        }
        if d > 0 {
            self.counters.delayed += 1;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a faulty disk decides for `n` requests, each a write of 8
    /// sectors: restart, error, crash (and sectors kept), delay.
    type Decision = (bool, bool, Option<u64>, u64);

    fn run(faults: DiskFaults, n: usize) -> (Vec<Decision>, DiskFaultCounters) {
        let mut d = FaultyDisk::new(faults);
        let decisions = (0..n)
            .map(|_| {
                let restart = d.restart_now();
                let error = d.io_error_now();
                let crash = d.crash_now(8, 1);
                (restart, error, crash, d.delay())
            })
            .collect();
        (decisions, d.counters)
    }

    #[test]
    fn a_perfect_disk_never_fails_nor_waits() {
        let (decisions, c) = run(DiskFaults::seeded(1), 1000);
        assert!(decisions.iter().all(|&d| d == (false, false, None, 0)));
        assert_eq!(c, DiskFaultCounters::default());
        assert!(!DiskFaults::seeded(1).any());
        assert_eq!(DiskFaults::default().check(), Ok(()));
    }

    #[test]
    fn faults_happen_at_about_their_rates_and_replay_from_the_seed() {
        let faults = DiskFaults {
            io_error: 0.1,
            crash: 0.05,
            restart: 0.02,
            latency: Duration::from_micros(100),
            jitter: Duration::from_micros(50),
            ..DiskFaults::seeded(42)
        };
        assert!(faults.any());
        let (decisions, c) = run(faults, 10_000);
        assert!((800..1200).contains(&c.io_errors), "{c:?}");
        assert!((350..650).contains(&c.crashes), "{c:?}");
        assert!((120..280).contains(&c.restarts), "{c:?}");
        assert_eq!(c.delayed, 10_000);
        // Counters agree with the decisions.
        let count = |f: fn(&Decision) -> bool| decisions.iter().filter(|d| f(d)).count() as u64;
        assert_eq!(count(|d| d.0), c.restarts);
        assert_eq!(count(|d| d.1), c.io_errors);
        assert_eq!(count(|d| d.2.is_some()), c.crashes);
        assert_eq!(count(|d| matches!(d.2, Some(1..=7))), c.torn_writes);
        let kept: u64 = decisions.iter().filter_map(|d| d.2).sum();
        assert_eq!(kept, c.torn_sectors);
        // A crash keeps any prefix, none and all included, about evenly.
        for k in 0..=8 {
            let n = count_kept(&decisions, k);
            assert!((20..100).contains(&n), "{k} sectors kept {n} times");
        }
        // Delays: 100 to 150 µs, spread over the whole range.
        let delays: Vec<u64> = decisions.iter().map(|d| d.3).collect();
        assert!(delays.iter().all(|d| (100_000..=150_000).contains(d)));
        assert!(delays.iter().any(|&d| d < 105_000));
        assert!(delays.iter().any(|&d| d > 145_000));
        // The same seed, the same faults; another seed, others.
        assert_eq!(run(faults, 10_000), (decisions, c));
        let (_, other) = run(DiskFaults { seed: 43, ..faults }, 10_000);
        assert_ne!(other, c);
    }

    fn count_kept(decisions: &[Decision], k: u64) -> usize {
        decisions.iter().filter(|d| d.2 == Some(k)).count()
    }

    #[test]
    fn certain_faults_always_happen_and_latency_alone_is_exact() {
        let always = DiskFaults {
            io_error: 1.0,
            crash: 1.0,
            restart: 1.0,
            ..DiskFaults::seeded(5)
        };
        let (decisions, c) = run(always, 100);
        assert!(
            decisions
                .iter()
                .all(|d| d.0 && d.1 && d.2.is_some() && d.3 == 0)
        );
        assert_eq!(
            (c.restarts, c.io_errors, c.crashes, c.delayed),
            (100, 100, 100, 0)
        );
        let fixed = DiskFaults {
            latency: Duration::from_millis(1),
            ..DiskFaults::seeded(5)
        };
        let (decisions, c) = run(fixed, 100);
        assert!(decisions.iter().all(|d| d.3 == 1_000_000));
        assert_eq!(c.delayed, 100);
    }

    #[test]
    fn a_write_tears_at_logical_sector_boundaries() {
        let mut d = FaultyDisk::new(DiskFaults {
            crash: 1.0,
            ..DiskFaults::seeded(9)
        });
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            // A write of 4 sectors of 4096 bytes.
            let kept = d.crash_now(32, 8).unwrap();
            assert!(kept.is_multiple_of(8) && kept <= 32, "{kept}");
            seen.insert(kept);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [0, 8, 16, 24, 32]);
    }

    #[test]
    fn probabilities_outside_zero_to_one_are_refused() {
        for (bad, name) in [
            (
                DiskFaults {
                    io_error: 1.5,
                    ..DiskFaults::default()
                },
                "io_error",
            ),
            (
                DiskFaults {
                    crash: -0.1,
                    ..DiskFaults::default()
                },
                "crash",
            ),
            (
                DiskFaults {
                    restart: f64::NAN,
                    ..DiskFaults::default()
                },
                "restart",
            ),
        ] {
            match bad.check() {
                Err(DiskFaultsError::Probability { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
