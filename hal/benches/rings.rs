//! Micro-benchmarks of our shared ring (`FrontRing`/`BackRing` over a
//! `WordMemory` page) between two host threads, each against a baseline
//! run in the same process, interleaved (ours, baseline, ours, ...):
//!
//! - `ring-rtt`: one request, then one response, over the ring: nanoseconds
//!   per round trip. Baseline: a raw cache-line ping-pong between the same
//!   two threads (two `AtomicU64`s in separate cache lines).
//! - `ring-stream`: requests streamed from the front to the back and
//!   answered, in batches (publish once per batch), at most a ring's worth
//!   outstanding: entries (answered requests) per second. Baseline: two
//!   `rtrb` SPSC queues, one each way, with the same entry types, the same
//!   capacity and the same window, used in batches too (slices).
//!
//! Both sides poll: no event channel between host threads, so the ring's
//! notify decisions are computed (as a driver must) but nothing is sent.
//!
//! `cargo xtask bench` runs this (`cargo bench -p xenpal-hal --bench rings
//! -- [--rounds N] [--ms MS] [ring-rtt] [ring-stream]`) and reads the
//! lines it prints, one per measurement:
//!
//! `sample NAME ours|baseline VALUE`
//!
//! Each measurement runs for about `MS` milliseconds (default 200) after a
//! short warm-up. Nothing is pinned to a CPU.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use xenpal_hal::mem::WordMemory;
use xenpal_hal::{BackRing, FrontRing, PAGE_SIZE};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A request: 16 bytes.
#[derive(Copy, Clone, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Req {
    id: u64,
    arg: u64,
}

/// A response: 16 bytes.
#[derive(Copy, Clone, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Rsp {
    id: u64,
    status: u64,
}

/// The request that tells the back end to answer and stop.
const STOP: u64 = u64::MAX;

/// What the back end computes from a request (cheap, but not nothing).
fn answer(r: &Req) -> Rsp {
    Rsp {
        id: r.id,
        status: r.arg.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    }
}

/// Busy-waiting that gives the CPU away now and then, so that on a loaded
/// 2-core machine a spinner does not hold the core its peer needs for a
/// whole time slice. Used the same way by ours and the baselines.
struct Spin(u32);

impl Spin {
    fn new() -> Self {
        Spin(0)
    }

    fn wait(&mut self) {
        self.0 = self.0.wrapping_add(1);
        if self.0.is_multiple_of(1 << 14) {
            thread::yield_now();
        } else {
            spin_loop();
        }
    }
}

type Front = FrontRing<WordMemory, Req, Rsp>;
type Back = BackRing<WordMemory, Req, Rsp>;

/// A one-page ring: 128 slots of 16 bytes.
fn ring() -> (Front, Back) {
    let mem = WordMemory::new(PAGE_SIZE);
    let front = Front::init(mem.clone()).expect("a page holds a ring");
    let back = Back::attach(mem).expect("a page holds a ring");
    (front, back)
}

/// The front end of a request/response channel, as the benchmarks drive it.
trait FrontEnd {
    /// Send every request of `reqs` (the caller keeps within the window),
    /// publishing once.
    fn send(&mut self, reqs: &[Req]);
    /// Take up to `out.len()` responses; returns how many.
    fn recv(&mut self, out: &mut [Rsp]) -> usize;
}

/// The back end of a request/response channel.
trait BackEnd: Send {
    /// Take up to `out.len()` requests; returns how many.
    fn recv(&mut self, out: &mut [Req]) -> usize;
    /// Send every response of `rsps`, publishing once.
    fn send(&mut self, rsps: &[Rsp]);
}

impl FrontEnd for Front {
    fn send(&mut self, reqs: &[Req]) {
        for r in reqs {
            self.stage_request(r).expect("the window fits the ring");
        }
        // Polling back end: the notify decision is made, nothing is sent.
        let _notify = self.push_requests_and_check_notify();
    }

    fn recv(&mut self, out: &mut [Rsp]) -> usize {
        self.take_responses(out).expect("well-behaved back end")
    }
}

impl BackEnd for Back {
    fn recv(&mut self, out: &mut [Req]) -> usize {
        self.take_requests(out).expect("well-behaved front end")
    }

    fn send(&mut self, rsps: &[Rsp]) {
        for r in rsps {
            self.stage_response(r).expect("answers a taken request");
        }
        let _notify = self.push_responses_and_check_notify();
    }
}

/// The baseline channel's front end: two `rtrb` queues.
struct RtrbFront {
    req: rtrb::Producer<Req>,
    rsp: rtrb::Consumer<Rsp>,
}

/// The baseline channel's back end.
struct RtrbBack {
    req: rtrb::Consumer<Req>,
    rsp: rtrb::Producer<Rsp>,
}

/// Two `rtrb` queues of `capacity` entries, one each way.
fn rtrb_pair(capacity: usize) -> (RtrbFront, RtrbBack) {
    let (req_p, req_c) = rtrb::RingBuffer::new(capacity);
    let (rsp_p, rsp_c) = rtrb::RingBuffer::new(capacity);
    (
        RtrbFront {
            req: req_p,
            rsp: rsp_c,
        },
        RtrbBack {
            req: req_c,
            rsp: rsp_p,
        },
    )
}

impl FrontEnd for RtrbFront {
    fn send(&mut self, reqs: &[Req]) {
        let (_, rest) = self.req.push_partial_slice(reqs);
        assert!(rest.is_empty(), "the window fits the queue");
    }

    fn recv(&mut self, out: &mut [Rsp]) -> usize {
        self.rsp.pop_partial_slice(out).0.len()
    }
}

impl BackEnd for RtrbBack {
    fn recv(&mut self, out: &mut [Req]) -> usize {
        self.req.pop_partial_slice(out).0.len()
    }

    fn send(&mut self, rsps: &[Rsp]) {
        let (_, rest) = self.rsp.push_partial_slice(rsps);
        assert!(rest.is_empty(), "the window fits the queue");
    }
}

/// The back end's loop: take what is there, answer it all, publish once;
/// until it answers [`STOP`].
fn serve<B: BackEnd>(mut back: B, window: usize) {
    let mut reqs = vec![Req::default(); window];
    let mut rsps = vec![Rsp::default(); window];
    let mut spin = Spin::new();
    loop {
        let n = back.recv(&mut reqs);
        if n == 0 {
            spin.wait();
            continue;
        }
        for (q, s) in reqs[..n].iter().zip(&mut rsps[..n]) {
            *s = answer(q);
        }
        back.send(&rsps[..n]);
        if reqs[..n].iter().any(|r| r.id == STOP) {
            return;
        }
    }
}

/// Round trips before the clock starts.
const WARM_UP: u64 = 10_000;

/// Nanoseconds per round trip: one request, wait for its response, again,
/// for about `run`.
fn rtt<F: FrontEnd, B: BackEnd>(mut front: F, back: B, run: Duration) -> f64 {
    thread::scope(|s| {
        s.spawn(move || serve(back, 1));
        let mut rsp = [Rsp::default()];
        let mut round_trip = |id: u64| {
            front.send(&[Req { id, arg: id }]);
            let mut spin = Spin::new();
            while front.recv(&mut rsp) == 0 {
                spin.wait();
            }
            assert_eq!(rsp[0].id, id, "the response answers the request");
        };
        for id in 0..WARM_UP {
            round_trip(id);
        }
        let start = Instant::now();
        let mut id = WARM_UP;
        let elapsed = loop {
            for _ in 0..1024 {
                round_trip(id);
                id += 1;
            }
            let e = start.elapsed();
            if e >= run {
                break e;
            }
        };
        round_trip(STOP);
        elapsed.as_nanos() as f64 / (id - WARM_UP) as f64
    })
}

/// Two counters in separate cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Line(AtomicU64);

/// Nanoseconds per round trip of a raw cache-line ping-pong: the front
/// writes `i` to one line and waits for the back to write `i` to the other.
fn rtt_baseline(run: Duration) -> f64 {
    let (ping, pong) = (Line::default(), Line::default());
    // Values are id + 1, so that 0 (the initial value) is no round trip.
    let back = |ping: &Line, pong: &Line| {
        let mut seen = 0;
        let mut spin = Spin::new();
        loop {
            let v = ping.0.load(Ordering::Acquire);
            if v == seen {
                spin.wait();
                continue;
            }
            seen = v;
            pong.0.store(v, Ordering::Release);
            if v == STOP {
                return;
            }
        }
    };
    thread::scope(|s| {
        s.spawn(|| back(&ping, &pong));
        let round_trip = |v: u64| {
            ping.0.store(v, Ordering::Release);
            let mut spin = Spin::new();
            while pong.0.load(Ordering::Acquire) != v {
                spin.wait();
            }
        };
        for id in 0..WARM_UP {
            round_trip(id + 1);
        }
        let start = Instant::now();
        let mut id = WARM_UP;
        let elapsed = loop {
            for _ in 0..1024 {
                round_trip(id + 1);
                id += 1;
            }
            let e = start.elapsed();
            if e >= run {
                break e;
            }
        };
        round_trip(STOP);
        elapsed.as_nanos() as f64 / (id - WARM_UP) as f64
    })
}

/// Entries answered per second when the front keeps up to `window`
/// requests outstanding, sending in batches, for about `run`.
fn stream<F: FrontEnd, B: BackEnd>(mut front: F, back: B, window: usize, run: Duration) -> f64 {
    thread::scope(|s| {
        s.spawn(move || serve(back, window));
        let mut reqs = vec![Req::default(); window];
        let mut rsps = vec![Rsp::default(); window];
        let (mut sent, mut got) = (0u64, 0u64);
        let mut start: Option<(Instant, u64)> = None;
        let mut spin = Spin::new();
        let (elapsed, counted) = loop {
            let room = window - (sent - got) as usize;
            if room > 0 {
                for (i, r) in reqs[..room].iter_mut().enumerate() {
                    let id = sent + i as u64;
                    *r = Req { id, arg: id };
                }
                front.send(&reqs[..room]);
                sent += room as u64;
            }
            let n = front.recv(&mut rsps);
            if n == 0 {
                spin.wait();
                continue;
            }
            for r in &rsps[..n] {
                assert_eq!(r.id, got, "responses come back in order");
                got += 1;
            }
            match start {
                None if got >= WARM_UP * 10 => start = Some((Instant::now(), got)),
                None => {}
                Some((t0, g0)) => {
                    let e = t0.elapsed();
                    if e >= run {
                        break (e, got - g0);
                    }
                }
            }
        };
        // Drain what is in flight, then stop the back end.
        while got < sent {
            let n = front.recv(&mut rsps);
            got += n as u64;
        }
        front.send(&[Req { id: STOP, arg: 0 }]);
        while front.recv(&mut rsps) == 0 {
            spin_loop();
        }
        counted as f64 / elapsed.as_secs_f64()
    })
}

fn main() {
    let mut rounds = 5;
    let mut ms = 200;
    let mut which = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            // cargo bench passes --bench to a harness-less bench.
            "--bench" => {}
            "--rounds" => rounds = num("--rounds"),
            "--ms" => ms = num("--ms"),
            "ring-rtt" | "ring-stream" => which.push(a),
            other => panic!(
                "unknown argument {other:?}: rings [--rounds N] [--ms MS] [ring-rtt] [ring-stream]"
            ),
        }
    }
    if which.is_empty() {
        which = vec!["ring-rtt".into(), "ring-stream".into()];
    }
    let run = Duration::from_millis(ms);
    let window = ring().0.size() as usize;
    for name in &which {
        for _ in 0..rounds {
            let (ours, base) = if name == "ring-rtt" {
                let (f, b) = ring();
                let ours = rtt(f, b, run);
                (ours, rtt_baseline(run))
            } else {
                let (f, b) = ring();
                let ours = stream(f, b, window, run);
                let (f, b) = rtrb_pair(window);
                (ours, stream(f, b, window, run))
            };
            println!("sample {name} ours {ours:.3}");
            println!("sample {name} baseline {base:.3}");
        }
    }
}
