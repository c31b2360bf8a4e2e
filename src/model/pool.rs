//! A lean spinning pool for decode steps.
//!
//! A decode step runs about 80 small parallel regions per token (a few hundred microseconds
//! each). Rayon's fork-join wakes, steals and yields for every one of them; here the helper
//! threads spin on one atomic ticket between regions, so a region starts as soon as it is
//! published, and they park only after [`SPIN`] without work (between tokens of a slow consumer,
//! or while rayon runs a prompt).
//!
//! One thread publishes a region at a time: `n` tasks, run as `f(0..n)` by whichever thread
//! claims each index first (the publisher takes part). The pool has the rayon pool's thread
//! count, the publisher included. A second publisher while a region runs (tests calling
//! from several threads, or a nested call) gets `false` from [`try_run`] and uses rayon.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::decode_timing;

/// How long a helper spins without work before it parks.
const SPIN: Duration = Duration::from_micros(300);

/// The work of one region: called once per task index.
type TaskFn<'a> = &'a (dyn Fn(usize) + Sync);

/// Per-thread preparation run once on every helper.
type SetupFn<'a> = &'a (dyn Fn() + Sync);

/// The ticket packs the region's epoch (high 32 bits), its task count (16 bits) and the next
/// unclaimed index (low 16 bits); a claim is a compare-exchange of the whole word, so a helper
/// can never claim an index of a region other than the one whose work it loaded.
fn ticket(epoch: u64, n: u64, next: u64) -> u64 {
    (epoch << 32) | (n << 16) | next
}

fn count(t: u64) -> u64 {
    (t >> 16) & 0xFFFF
}

fn next(t: u64) -> u64 {
    t & 0xFFFF
}

struct Shared {
    ticket: AtomicU64,
    /// Points at the publisher's `TaskFn` (on its stack) while its region runs.
    work: AtomicPtr<TaskFn<'static>>,
    /// Tasks of the current region finished.
    done: AtomicUsize,
    /// A task panicked in this region.
    panicked: AtomicBool,
    /// [`on_each_helper`]: its generation, its closure and the helpers that have run it.
    setup_gen: AtomicU64,
    setup: AtomicPtr<SetupFn<'static>>,
    setup_acks: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// Held by the thread publishing a region.
    publisher: Mutex<()>,
}

struct Pool {
    shared: &'static Shared,
    helpers: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            ticket: AtomicU64::new(0),
            work: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            setup_gen: AtomicU64::new(0),
            setup: AtomicPtr::new(std::ptr::null_mut()),
            setup_acks: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            publisher: Mutex::new(()),
        }));
        let wanted = rayon::current_num_threads().saturating_sub(1);
        let mut helpers = 0;
        for i in 0..wanted {
            let spawned = std::thread::Builder::new()
                .name(format!("moe-edge-decode-{i}"))
                .spawn(move || helper(shared));
            match spawned {
                Ok(_) => helpers += 1,
                Err(e) => log::warn!("decode helper thread not started: {e}"),
            }
        }
        Pool { shared, helpers }
    })
}

/// Claims the next index of the region `t` belongs to, if one is left. Never an index of a
/// newer region: a helper loaded the work pointer of `t`'s region, and a region published
/// since (a new epoch) has other work. Following the newer ticket here ran an old region's
/// closure, already gone, under a new region's index, which then never ran: wrong results,
/// seen once in CI under QEMU, where a helper can lag a whole region behind.
fn claim(s: &Shared, mut t: u64) -> Option<u64> {
    let epoch = t >> 32;
    while next(t) < count(t) {
        match s
            .ticket
            .compare_exchange_weak(t, t + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Some(next(t)),
            Err(now) if now >> 32 != epoch => return None,
            Err(now) => t = now,
        }
    }
    None
}

/// Runs task `i` of the region whose work `work` points at, counting it done.
fn run_task(s: &Shared, work: *const TaskFn<'static>, i: u64) {
    // SAFETY: `work` was loaded after the ticket of this region and index `i` of that same
    // region was then claimed, so the region is not finished (its `done` count lacks this
    // task) and its publisher is still waiting in `try_run`, keeping the closure alive. A
    // newer region's pointer cannot have been loaded: it is stored only after every index of
    // this region was claimed, which would have made the claim fail.
    let f = unsafe { *work };
    if catch_unwind(AssertUnwindSafe(|| f(i as usize))).is_err() {
        s.panicked.store(true, Ordering::Relaxed);
    }
    s.done.fetch_add(1, Ordering::Release);
}

/// Whether a helper has something to do: an unclaimed task, or a setup it has not run.
fn has_work(s: &Shared, setup_seen: u64) -> bool {
    let t = s.ticket.load(Ordering::SeqCst);
    next(t) < count(t) || s.setup_gen.load(Ordering::SeqCst) != setup_seen
}

fn helper(s: &'static Shared) {
    let mut idle_since = Instant::now();
    let mut spins = 0u32;
    let mut setup_seen = 0;
    loop {
        let gen = s.setup_gen.load(Ordering::Acquire);
        if gen != setup_seen {
            // SAFETY: `on_each_helper` stores the pointer before the generation and waits for
            // every helper's acknowledgement before its closure goes out of scope.
            let f = unsafe { *s.setup.load(Ordering::Acquire) };
            f();
            setup_seen = gen;
            s.setup_acks.fetch_add(1, Ordering::Release);
        }
        let t = s.ticket.load(Ordering::Acquire);
        if next(t) < count(t) {
            let work = s.work.load(Ordering::Acquire);
            if let Some(i) = claim(s, t) {
                run_task(s, work, i);
                idle_since = Instant::now();
            }
            continue;
        }
        std::hint::spin_loop();
        spins += 1;
        if !spins.is_multiple_of(256) || idle_since.elapsed() < SPIN {
            continue;
        }
        let mut guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
        s.sleepers.fetch_add(1, Ordering::SeqCst);
        while !has_work(s, setup_seen) {
            guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        s.sleepers.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        idle_since = Instant::now();
    }
}

/// Runs `f(i)` for every `i` in `0..n` on the pool and returns `true`, or returns `false`
/// without running anything when the pool is busy with another publisher's region (or `n` is
/// too large for a ticket). A panic in a task is raised here after the region has finished.
pub fn try_run(n: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
    if n > 0xFFFF {
        return false;
    }
    let p = pool();
    let s = p.shared;
    let _publishing = match s.publisher.try_lock() {
        Ok(g) => g,
        // A panic raised by an earlier region poisoned the lock; the pool itself is intact.
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return false,
    };
    if n == 0 {
        return true;
    }
    if p.helpers == 0 || n == 1 {
        (0..n).for_each(f);
        return true;
    }
    let timed = decode_timing::enabled();
    let start = timed.then(Instant::now);
    let counted = |i: usize| {
        let t = Instant::now();
        f(i);
        decode_timing::add_task(t.elapsed());
    };
    let f: &(dyn Fn(usize) + Sync) = if timed { &counted } else { f };
    let erased: TaskFn<'_> = f;
    // SAFETY: only the lifetime is erased. The pointer is used by helpers only for indices of
    // this region (see `run_task`), and this function returns only after all of them are done.
    let erased: TaskFn<'static> = unsafe { std::mem::transmute(erased) };
    s.done.store(0, Ordering::Relaxed);
    s.panicked.store(false, Ordering::Relaxed);
    s.work.store(
        &erased as *const TaskFn<'static> as *mut _,
        Ordering::Release,
    );
    let epoch = (s.ticket.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xFFFF_FFFF;
    let t = ticket(epoch, n as u64, 0);
    s.ticket.store(t, Ordering::SeqCst);
    if s.sleepers.load(Ordering::SeqCst) > 0 {
        let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
        s.wake.notify_all();
    }
    let mut own_panic = None;
    while let Some(i) = claim(s, s.ticket.load(Ordering::Acquire)) {
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(i as usize))) {
            own_panic.get_or_insert(e);
        }
        s.done.fetch_add(1, Ordering::Release);
    }
    let tail = timed.then(Instant::now);
    // Spin: the last tasks are short. Yield now and then, in case a helper was preempted
    // (more threads than cores) and needs this core to finish.
    let mut spins = 0u32;
    while s.done.load(Ordering::Acquire) < n {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(4096) {
            std::thread::yield_now();
        }
    }
    if let (Some(start), Some(tail)) = (start, tail) {
        decode_timing::add_region(start.elapsed(), tail.elapsed());
    }
    if let Some(e) = own_panic {
        resume_unwind(e);
    }
    if s.panicked.load(Ordering::Relaxed) {
        panic!("a decode task panicked on a helper thread");
    }
    true
}

/// Runs `f` once on every helper thread (to size its per-thread buffers before a decode step
/// that must not allocate) and returns when all have. Waits for a region in progress.
pub fn on_each_helper(f: &(dyn Fn() + Sync)) {
    let p = pool();
    let s = p.shared;
    let _publishing = s.publisher.lock().unwrap_or_else(|e| e.into_inner());
    if p.helpers == 0 {
        return;
    }
    let erased: SetupFn<'_> = f;
    // SAFETY: only the lifetime is erased; this function returns only after every helper has
    // run the closure and acknowledged it, and no helper reads the pointer after that.
    let erased: SetupFn<'static> = unsafe { std::mem::transmute(erased) };
    s.setup_acks.store(0, Ordering::Relaxed);
    s.setup.store(
        &erased as *const SetupFn<'static> as *mut _,
        Ordering::Release,
    );
    s.setup_gen.fetch_add(1, Ordering::SeqCst);
    if s.sleepers.load(Ordering::SeqCst) > 0 {
        let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
        s.wake.notify_all();
    }
    while s.setup_acks.load(Ordering::Acquire) < p.helpers {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_exactly_once_region_after_region() {
        let hits: Vec<AtomicUsize> = (0..200).map(|_| AtomicUsize::new(0)).collect();
        let publisher = std::thread::current().id();
        let on_helpers = AtomicUsize::new(0);
        let region = |n: usize| {
            hits.iter().for_each(|h| h.store(0, Ordering::Relaxed));
            let task = |i: usize| {
                // A little work per task, so that the threads claim side by side.
                let mut x = i as u64;
                for _ in 0..200 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                }
                hits[i].fetch_add(1, Ordering::Relaxed);
                if std::thread::current().id() != publisher {
                    on_helpers.fetch_add(1, Ordering::Relaxed);
                }
            };
            // Another test thread may hold the pool for a moment: retry until it is ours.
            while !try_run(n, &task) {
                std::thread::yield_now();
            }
            for (i, h) in hits.iter().enumerate() {
                let want = usize::from(i < n);
                assert_eq!(h.load(Ordering::Relaxed), want, "index {i} of {n}");
            }
        };
        for n in [0, 1, 2, 3, 17, 64, 200] {
            for _ in 0..50 {
                region(n);
            }
        }
        if pool().helpers > 0 {
            // The check above only means something if helpers claimed tasks too. On a loaded
            // machine (other tests on every core) a helper may not have been scheduled yet:
            // keep publishing regions, each checked, until one of its tasks ran on a helper.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while on_helpers.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
                region(200);
            }
            assert!(
                on_helpers.load(Ordering::Relaxed) > 0,
                "no task ran on a helper in 20 s of regions"
            );
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_publisher() {
        let r = std::panic::catch_unwind(|| {
            while !try_run(8, &|i| assert_ne!(i, 5, "task five fails")) {}
        });
        assert!(r.is_err());
        // The pool still works afterwards.
        let sum = AtomicUsize::new(0);
        while !try_run(8, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        }) {}
        assert_eq!(sum.load(Ordering::Relaxed), 28);
    }

    #[test]
    fn setup_runs_once_on_every_helper() {
        let runs = AtomicUsize::new(0);
        on_each_helper(&|| {
            runs.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(runs.load(Ordering::Relaxed), pool().helpers);
    }
}
