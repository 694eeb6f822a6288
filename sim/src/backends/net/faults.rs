//! Seeded faults on a vif's link: loss, duplication, reordering,
//! corruption, delay and jitter, and partitions that heal.
//!
//! Each faulty link draws from its own generator, seeded from the run's
//! seed by whoever configures it ([`super::NetBackend::link_faults`]), and
//! draws only as dom0 moves frames, so a deterministic run makes the same
//! draws in the same order: a failure replays from its seed.

use crate::hypervisor::Rng;
use std::time::Duration;

/// What goes wrong on one vif's link, both directions (a frame between
/// two faulty vifs crosses both links). Probabilities are per frame, from
/// 0.0 to 1.0. The default is a perfect link.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Seed of the link's generator: derive it from the run's seed.
    pub seed: u64,
    /// A frame is dropped.
    pub loss: f64,
    /// A frame is delivered twice.
    pub duplicate: f64,
    /// A frame is held back by up to [`reorder_window`](Self::reorder_window),
    /// so frames sent after it overtake it.
    pub reorder: f64,
    /// How far back a reordered frame may fall.
    pub reorder_window: Duration,
    /// One byte of a frame, past its Ethernet header, is flipped (the IP or
    /// TCP checksum should catch it, as on a real network where the
    /// Ethernet CRC did not).
    pub corrupt: f64,
    /// Every frame is delayed by this much.
    pub delay: Duration,
    /// ... plus up to this much more, drawn per frame. Jitter keeps a
    /// link's frames in order, as a queue does (a frame never leaves
    /// before one sent earlier); only [`reorder`](Self::reorder) reorders.
    pub jitter: Duration,
    /// On average, how long the link works between partitions (zero: no
    /// partitions). Each gap is drawn from 0 to twice this; partitions
    /// come with time, not with traffic, as a cable pulled or a switch
    /// rebooting does.
    pub partition_every: Duration,
    /// The longest a partition lasts (each lasts 1 ns to this, drawn);
    /// every frame that meets one is dropped, then the link heals.
    pub partition_length: Duration,
}

impl LinkFaults {
    /// A perfect link whose faults, once set, draw from `seed`.
    pub fn seeded(seed: u64) -> Self {
        LinkFaults {
            seed,
            ..LinkFaults::default()
        }
    }

    /// Whether any fault is on.
    pub fn any(&self) -> bool {
        self.loss > 0.0
            || self.duplicate > 0.0
            || self.reorder > 0.0
            || self.corrupt > 0.0
            || self.delay > Duration::ZERO
            || self.jitter > Duration::ZERO
            || self.partition_every > Duration::ZERO
    }
}

/// What a faulty link did, counted per vif.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Frames dropped by loss.
    pub lost: u64,
    /// Frames sent twice.
    pub duplicated: u64,
    /// Frames held back to be overtaken.
    pub reordered: u64,
    /// Frames with a byte flipped.
    pub corrupted: u64,
    /// Frames dropped in a partition.
    pub partitioned: u64,
    /// Partitions that began (counted as frames pass, so those in a quiet
    /// spell count too).
    pub partitions: u64,
}

/// A link with its faults' state.
pub(super) struct FaultyLink {
    faults: LinkFaults,
    rng: Rng,
    /// The current or next partition: from and until (nanoseconds), and
    /// whether it is counted yet. Drawn when the first frame passes.
    partition: Option<(u64, u64, bool)>,
    /// When the last frame kept in order leaves (nanoseconds).
    last_out: u64,
    pub counters: FaultCounters,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl FaultyLink {
    pub fn new(faults: LinkFaults) -> Self {
        FaultyLink {
            rng: Rng::new(faults.seed),
            faults,
            partition: None,
            last_out: 0,
            counters: FaultCounters::default(),
        }
    }

    /// A number from 0 to `max` inclusive.
    fn upto(&mut self, max: u64) -> u64 {
        if max == 0 {
            0
        } else {
            self.rng.next_u64() % (max.saturating_add(1)).max(1)
        }
    }

    /// The partition after one ending at `after`: a gap, then a length.
    fn next_partition(&mut self, after: u64) -> (u64, u64) {
        let gap = self.upto(nanos(self.faults.partition_every).saturating_mul(2));
        let from = after.saturating_add(gap);
        let length = 1 + self.upto(nanos(self.faults.partition_length).saturating_sub(1));
        (from, from.saturating_add(length))
    }

    /// Whether the link is partitioned at `at`.
    fn partitioned(&mut self, at: u64) -> bool {
        if self.faults.partition_every == Duration::ZERO {
            return false;
        }
        let (mut from, mut until, mut counted) = match self.partition {
            Some(p) => p,
            None => {
                let (from, until) = self.next_partition(at);
                (from, until, false)
            }
        };
        // Partitions that began and healed since the last frame.
        while until <= at {
            if !counted {
                self.counters.partitions += 1;
            }
            (from, until) = self.next_partition(until);
            counted = false;
        }
        let inside = from <= at;
        if inside && !counted {
            self.counters.partitions += 1;
            counted = true;
        }
        self.partition = Some((from, until, counted));
        inside
    }

    /// Pass `frame`, arriving at time `at`, over the link: push each copy
    /// that comes out, with the time it comes out, to `out` (none if it was
    /// lost).
    pub fn pass(&mut self, at: u64, frame: Vec<u8>, out: &mut Vec<(u64, Vec<u8>)>) {
        let f = self.faults;
        if self.partitioned(at) {
            self.counters.partitioned += 1;
            return;
        }
        if f.loss > 0.0 && self.rng.chance(f.loss) {
            self.counters.lost += 1;
            return;
        }
        let mut copies = Vec::with_capacity(2);
        if f.duplicate > 0.0 && self.rng.chance(f.duplicate) {
            self.counters.duplicated += 1;
            copies.push(frame.clone());
        }
        copies.push(frame);
        for mut frame in copies {
            if f.corrupt > 0.0 && frame.len() > 14 && self.rng.chance(f.corrupt) {
                let i = 14 + self.rng.below(frame.len() - 14);
                let bit = 1u8 << self.rng.below(8);
                frame[i] ^= bit;
                self.counters.corrupted += 1;
            }
            let mut when = at
                .saturating_add(nanos(f.delay))
                .saturating_add(self.upto(nanos(f.jitter)));
            if f.reorder > 0.0 && self.rng.chance(f.reorder) {
                when = when.saturating_add(1 + self.upto(nanos(f.reorder_window)));
                self.counters.reordered += 1;
            } else {
                when = when.max(self.last_out);
                self.last_out = when;
            }
            out.push((when, frame));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u64) -> Vec<u8> {
        // The index twice (once inverted), so a flipped bit cannot make
        // another frame's bytes.
        let mut frame = vec![0u8; 60];
        frame[20..28].copy_from_slice(&i.to_le_bytes());
        frame[30..38].copy_from_slice(&(!i).to_le_bytes());
        frame
    }

    fn run(faults: LinkFaults, frames: u64) -> (Vec<(u64, Vec<u8>)>, FaultCounters) {
        let mut link = FaultyLink::new(faults);
        let mut out = Vec::new();
        for i in 0..frames {
            link.pass(i * 1000, frame(i), &mut out);
        }
        (out, link.counters)
    }

    #[test]
    fn a_perfect_link_passes_every_frame_at_once() {
        let (out, c) = run(LinkFaults::seeded(1), 100);
        assert_eq!(out.len(), 100);
        assert!(
            out.iter()
                .enumerate()
                .all(|(i, (t, _))| *t == i as u64 * 1000)
        );
        assert_eq!(c, FaultCounters::default());
        assert!(!LinkFaults::seeded(1).any());
    }

    #[test]
    fn faults_happen_at_about_their_rates_and_replay_from_the_seed() {
        let faults = LinkFaults {
            loss: 0.1,
            duplicate: 0.05,
            corrupt: 0.05,
            reorder: 0.1,
            reorder_window: Duration::from_micros(5),
            delay: Duration::from_micros(100),
            jitter: Duration::from_micros(10),
            ..LinkFaults::seeded(42)
        };
        let (out, c) = run(faults, 10_000);
        assert!((800..1200).contains(&c.lost), "{c:?}");
        assert!((350..650).contains(&c.duplicated), "{c:?}");
        assert!((350..650).contains(&c.corrupted), "{c:?}");
        assert!((800..1200).contains(&c.reordered), "{c:?}");
        assert_eq!(out.len() as u64, 10_000 - c.lost + c.duplicated);
        // Delay and jitter: every frame 100 to 115 µs late (110 + 5
        // reordering), never early.
        let mut intact = 0;
        for (t, f) in &out {
            let i = u64::from_le_bytes(f[20..28].try_into().unwrap());
            if *f == frame(i) {
                let d = t - i * 1000;
                assert!((100_000..=115_001).contains(&d), "{d}");
                intact += 1;
            }
        }
        assert!(intact > 8000, "{intact}");
        // The same seed, the same faults; another seed, others.
        assert_eq!(run(faults, 10_000), (out, c));
        let (_, other) = run(LinkFaults { seed: 43, ..faults }, 10_000);
        assert_ne!(other, c);
    }

    #[test]
    fn partitions_come_with_time_drop_everything_then_heal() {
        let faults = LinkFaults {
            partition_every: Duration::from_micros(100),
            partition_length: Duration::from_micros(50),
            ..LinkFaults::seeded(7)
        };
        // 10,000 frames 1 µs apart: 10 ms, about 80 partitions (a gap of
        // 100 µs and a length of 25 on average), each dropping at most the
        // 50 frames within it; about a fifth of the frames in all.
        let (out, c) = run(faults, 10_000);
        assert!((50..=110).contains(&c.partitions), "{c:?}");
        assert!(c.partitioned <= c.partitions * 51, "{c:?}");
        assert!((1_000..3_000).contains(&c.partitioned), "{c:?}");
        assert_eq!(out.len() as u64, 10_000 - c.partitioned);
        // A dropped frame is inside a run: the link heals, then breaks
        // again later, rather than dropping frames at random.
        let kept: Vec<u64> = out
            .iter()
            .map(|(_, f)| u64::from_le_bytes(f[20..28].try_into().unwrap()))
            .collect();
        let gaps = kept.windows(2).filter(|w| w[1] != w[0] + 1).count() as u64;
        assert!(gaps <= c.partitions, "{gaps} gaps, {c:?}");
        // Traffic does not bring partitions on: the same time with a
        // tenth of the frames meets about as many.
        let mut link = FaultyLink::new(faults);
        let mut sparse = Vec::new();
        for i in 0..1_000 {
            link.pass(i * 10_000, frame(i), &mut sparse);
        }
        assert!(
            (50..=110).contains(&link.counters.partitions),
            "{:?}",
            link.counters
        );
    }
}
