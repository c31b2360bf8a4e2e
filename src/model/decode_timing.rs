//! Where a decode step's time goes (`moe-edge bench --timing`): the decode pool's parallel
//! regions, how busy its threads were in them, how long the publishing thread waited for the
//! last task of each, and so, by difference with the wall time, the serial work between
//! regions (norms, rotary embedding, routing, KV-cache writes, quantizing activations).
//!
//! Off unless asked for: when off, a region costs one relaxed load more. When on, every task
//! reads the clock twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

static ON: AtomicBool = AtomicBool::new(false);
static REGIONS: AtomicU64 = AtomicU64::new(0);
static TASKS: AtomicU64 = AtomicU64::new(0);
static REGION_NS: AtomicU64 = AtomicU64::new(0);
static BUSY_NS: AtomicU64 = AtomicU64::new(0);
static TAIL_NS: AtomicU64 = AtomicU64::new(0);

/// Totals since the last [`take`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DecodeTiming {
    /// Parallel regions the decode pool ran (two or more tasks each).
    pub regions: u64,
    /// Their tasks.
    pub tasks: u64,
    /// From each region's start to its last task's end, as the publishing thread saw it.
    pub region: Duration,
    /// Time inside tasks, every thread's added up.
    pub busy: Duration,
    /// The publishing thread's wait, after its last own task, for the other threads' tasks.
    pub tail_wait: Duration,
}

impl std::ops::AddAssign for DecodeTiming {
    fn add_assign(&mut self, t: DecodeTiming) {
        self.regions += t.regions;
        self.tasks += t.tasks;
        self.region += t.region;
        self.busy += t.busy;
        self.tail_wait += t.tail_wait;
    }
}

/// Starts or stops counting.
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

pub(super) fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

pub(super) fn add_task(d: Duration) {
    TASKS.fetch_add(1, Ordering::Relaxed);
    BUSY_NS.fetch_add(nanos(d), Ordering::Relaxed);
}

pub(super) fn add_region(region: Duration, tail_wait: Duration) {
    REGIONS.fetch_add(1, Ordering::Relaxed);
    REGION_NS.fetch_add(nanos(region), Ordering::Relaxed);
    TAIL_NS.fetch_add(nanos(tail_wait), Ordering::Relaxed);
}

/// The totals so far, and zero again.
pub fn take() -> DecodeTiming {
    let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
    DecodeTiming {
        regions: take(&REGIONS),
        tasks: take(&TASKS),
        region: Duration::from_nanos(take(&REGION_NS)),
        busy: Duration::from_nanos(take(&BUSY_NS)),
        tail_wait: Duration::from_nanos(take(&TAIL_NS)),
    }
}
