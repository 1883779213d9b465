//! Who gets the cores first: short work before long-running plugin calls.
//!
//! Plugin calls share the executor's threads with everything else the host
//! does (ticket transitions, commits, API requests). A call yields at each
//! epoch tick, but a plugin spinning toward its time limit is back in the run
//! queue straight away, and a few of them keep both cores of a small machine
//! busy: every short step of every other ticket then waits behind their
//! slices. So work is in two classes:
//!
//! - **short work**: futures wrapped in [`short`] (ticket drivers, the API's
//!   requests, ticket creation, a call getting its capacity), commits
//!   waiting for their fsync ([`hold`]), and every plugin call in its first
//!   [`YOUNG`] of CPU. A future counts only while it is ready to run (woken
//!   and not yet polled, or being polled): waiting on a plugin's HTTP
//!   request or on a long-poll, it holds nothing back.
//! - **long calls**: calls past [`YOUNG`] of CPU, and every call of a plugin
//!   whose last call was one. A long call runs only in a *lane*: there is
//!   one fewer than the executor has threads, so one thread is always free
//!   for short work. At each tick it gives its lane up; while short work is
//!   ready, or was within the last two ticks, it sleeps, but runs at least a
//!   tick every [`STARVE`]; then it queues for a lane again (first come,
//!   first served). With no short work about, long calls fill their lanes.
//!
//! The cores are the process's, so the gate is too: one per process, shared
//! by every runtime and scheduler in it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// CPU a call may use before it counts as long-running.
pub(crate) const YOUNG: Duration = Duration::from_millis(5);
/// A long call sleeps in periods of this many ticks per long call (at most
/// [`STARVE`]), looking again after each whether short work is about.
const LONG_SHARE: u32 = 4;
/// However busy the host, a long call runs a tick at least this often.
pub(crate) const STARVE: Duration = Duration::from_millis(100);

struct Gate {
    short: AtomicUsize,
    long: AtomicUsize,
    /// When short work was last ready, in µs since [`base`].
    last_short_us: AtomicU64,
}

static GATE: Gate = Gate {
    short: AtomicUsize::new(0),
    long: AtomicUsize::new(0),
    last_short_us: AtomicU64::new(0),
};

/// The instant gate times count from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    base().elapsed().as_micros() as u64
}

fn count_in() {
    GATE.short.fetch_add(1, Ordering::SeqCst);
}

fn count_out() {
    if GATE.short.fetch_sub(1, Ordering::SeqCst) == 1 {
        GATE.last_short_us.store(now_us(), Ordering::SeqCst);
    }
}

/// Short work in progress while it lives, ready to run or not: for work
/// that waits on something besides the executor and is due straight after
/// it (a commit waiting for its fsync).
#[must_use = "the work counts only while the guard lives"]
pub struct Held(());

/// Count short work in until the guard is dropped.
pub fn hold() -> Held {
    count_in();
    Held(())
}

impl Drop for Held {
    fn drop(&mut self) {
        count_out();
    }
}

/// Short work ready to run now (for tests and metrics).
pub fn short_ready() -> usize {
    GATE.short.load(Ordering::SeqCst)
}

/// Long calls running now (for tests and metrics).
pub fn long_running() -> usize {
    GATE.long.load(Ordering::SeqCst)
}

/// Whether short work is ready, or was less than `hold` ago. Short work
/// comes in bursts with gaps of microseconds between them (one ticket's
/// steps, a commit's fsync); a long call that ran in every gap would still
/// hold each burst up by a tick.
fn busy(hold: Duration) -> bool {
    GATE.short.load(Ordering::SeqCst) > 0
        || now_us().saturating_sub(GATE.last_short_us.load(Ordering::SeqCst))
            < hold.as_micros() as u64
}

/// One short future's standing, shared with the wakers it hands out.
struct Flag {
    /// Woken and counted in, not yet polled.
    queued: AtomicBool,
    /// A call past [`YOUNG`]: no longer counted.
    long: AtomicBool,
    /// CPU the call has used, in µs.
    used_us: AtomicU64,
    /// The waker of the task polling the future.
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.long.load(Ordering::SeqCst) && !self.queued.swap(true, Ordering::SeqCst) {
            count_in();
        }
        if let Some(w) = self.task.lock().expect("waker lock").as_ref() {
            w.wake_by_ref();
        }
    }
}

pin_project_lite::pin_project! {
    /// A future counted as short work whenever it is ready to run.
    pub struct Short<F> {
        #[pin]
        inner: F,
        counted: Counted,
    }
}

/// Counts a short future out if it is dropped while woken.
struct Counted {
    flag: Arc<Flag>,
    waker: Waker,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.flag.queued.swap(false, Ordering::SeqCst) {
            count_out();
        }
    }
}

/// Run `inner` as short work: counted from now (it is about to be polled
/// or queued to be), then whenever it is woken, until it is polled to
/// pending again.
pub fn short<F: Future>(inner: F) -> Short<F> {
    Short::with(inner, CallClass::new(false))
}

impl<F: Future> Short<F> {
    fn with(inner: F, class: CallClass) -> Self {
        let flag = class.0;
        if !flag.long.load(Ordering::SeqCst) {
            flag.queued.store(true, Ordering::SeqCst);
            count_in();
        }
        Short {
            inner,
            counted: Counted {
                waker: Waker::from(flag.clone()),
                flag,
            },
        }
    }
}

impl<F: Future> Future for Short<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let flag = &this.counted.flag;
        {
            let mut task = flag.task.lock().expect("waker lock");
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        // Running now: counted once, whether it was woken through us or not.
        let counted = !flag.long.load(Ordering::SeqCst);
        if counted && !flag.queued.swap(false, Ordering::SeqCst) {
            count_in();
        }
        let polled = this
            .inner
            .poll(&mut Context::from_waker(&this.counted.waker));
        if counted {
            count_out();
        }
        // Woken while polled: ready again, and still counted, unless done
        // or turned long meanwhile.
        if (polled.is_ready() || flag.long.load(Ordering::SeqCst))
            && flag.queued.swap(false, Ordering::SeqCst)
        {
            count_out();
        }
        polled
    }
}

/// The class of one plugin call, shared by the future running it (see
/// [`CallClass::run`]) and its epoch callback ([`pacer`]), which moves it
/// from short work to the long calls once it has used [`YOUNG`] of CPU.
#[derive(Clone)]
pub(crate) struct CallClass(Arc<Flag>);

impl CallClass {
    /// A call's class: long from the start if its plugin's last call ran
    /// long. A plugin that spins to its time limit on every call would
    /// otherwise take the cores as short work for the first [`YOUNG`] of
    /// each; one call under [`YOUNG`] makes its plugin's calls short again.
    pub fn new(starts_long: bool) -> Self {
        Self(Arc::new(Flag {
            queued: AtomicBool::new(false),
            long: AtomicBool::new(starts_long),
            used_us: AtomicU64::new(0),
            task: Mutex::new(None),
        }))
    }

    /// Whether the call used [`YOUNG`] of CPU or more (so far).
    pub fn ran_long(&self) -> bool {
        self.0.used_us.load(Ordering::Relaxed) >= YOUNG.as_micros() as u64
    }

    /// Run the call's future, counted as short work while young.
    pub fn run<F: Future>(&self, call: F) -> Short<F> {
        Short::with(call, self.clone())
    }

    fn turn_long(&self) -> LongCall {
        self.0.long.store(true, Ordering::SeqCst);
        GATE.long.fetch_add(1, Ordering::SeqCst);
        LongCall
    }
}

/// Counted among the long calls while it lives.
struct LongCall;

impl Drop for LongCall {
    fn drop(&mut self) {
        GATE.long.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The epoch callback of one call's store, pacing the call once it has
/// run long. `tick` is the engine's epoch period.
///
/// CPU is measured from the moment the call resumes after a yield here to
/// its next callback: running straight through, that is at most about a
/// tick. A longer span means the call also waited inside it (for I/O, in a
/// host function), so it is not counted: a connector making many slow
/// requests stays young however long its call lasts. Time spent queued
/// for the executor is never counted, however many calls share it.
pub(crate) fn pacer<T>(
    tick: Duration,
    class: CallClass,
) -> impl FnMut(wasmtime::StoreContextMut<'_, T>) -> wasmtime::Result<wasmtime::UpdateDeadline>
+ Send
+ Sync
+ 'static {
    let mut long: Option<LongCall> = class
        .0
        .long
        .load(Ordering::SeqCst)
        .then(|| class.turn_long());
    let resumed = Arc::new(AtomicU64::new(now_us()));
    let lane: Arc<Mutex<Option<OwnedSemaphorePermit>>> = Arc::default();
    move |_| {
        let ran = now_us().saturating_sub(resumed.load(Ordering::Relaxed));
        if ran <= (tick * 2).as_micros() as u64 {
            class.0.used_us.fetch_add(ran, Ordering::Relaxed);
        }
        if long.is_none() {
            if !class.ran_long() {
                return Ok(resume_after(tokio::task::yield_now(), &resumed));
            }
            long = Some(class.turn_long());
        }
        let hold = tick * 2;
        // Give up the lane at every tick, so long calls take turns (the
        // semaphore is first come, first served) and short work can have it.
        lane.lock().expect("lane lock").take();
        let period = (tick * LONG_SHARE * long_running().max(1) as u32).min(STARVE);
        let lane = lane.clone();
        Ok(resume_after(
            async move {
                let start = Instant::now();
                while busy(hold) && start.elapsed() < STARVE {
                    tokio::time::sleep(period).await;
                }
                let permit = lanes().acquire_owned().await.expect("never closed");
                *lane.lock().expect("lane lock") = Some(permit);
            },
            &resumed,
        ))
    }
}

/// Lanes for long calls: one fewer than the executor's threads (at least
/// one), so however many long calls there are, one thread is always free
/// to take short work the moment it is ready.
fn lanes() -> Arc<Semaphore> {
    static LANES: OnceLock<Arc<Semaphore>> = OnceLock::new();
    LANES
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            Arc::new(Semaphore::new(lane_count(threads)))
        })
        .clone()
}

/// Lanes beside `threads` executor threads (tokio's default: one per core).
fn lane_count(threads: usize) -> usize {
    threads.saturating_sub(1).max(1)
}

/// Yield to the executor until `wait` is done, noting when the call resumes.
fn resume_after(
    wait: impl Future<Output = ()> + Send + 'static,
    resumed: &Arc<AtomicU64>,
) -> wasmtime::UpdateDeadline {
    let resumed = resumed.clone();
    wasmtime::UpdateDeadline::YieldCustom(
        1,
        Box::pin(async move {
            wait.await;
            resumed.store(now_us(), Ordering::Relaxed);
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A future pending until `ready`, keeping the last waker it was given.
    struct Gated {
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Gated {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    fn queued<F: Future>(f: &Short<F>) -> bool {
        f.counted.flag.queued.load(Ordering::SeqCst)
    }

    /// The count follows a future through its life: in when made, out while
    /// pending, in again when woken, out when done. (The count itself is
    /// process-wide and other tests move it, so this looks at the future's
    /// own standing.)
    #[test]
    fn a_short_future_counts_only_while_ready_to_run() {
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(Mutex::new(None));
        let mut f = Box::pin(short(Gated {
            ready: ready.clone(),
            waker: waker.clone(),
        }));
        assert!(queued(&f), "counted from when it is made");
        let mut cx = Context::from_waker(Waker::noop());
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert!(!queued(&f), "pending: not counted");
        waker.lock().unwrap().take().expect("inner waker").wake();
        assert!(queued(&f), "woken: counted");
        ready.store(true, Ordering::SeqCst);
        assert!(f.as_mut().poll(&mut cx).is_ready());
        assert!(!queued(&f), "done: not counted");
    }

    #[test]
    fn a_long_call_is_never_counted_as_short_work() {
        let class = CallClass::new(true);
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(Mutex::new(None));
        let mut f = Box::pin(class.run(Gated {
            ready,
            waker: waker.clone(),
        }));
        assert!(!queued(&f));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(f.as_mut().poll(&mut cx).is_pending());
        waker.lock().unwrap().take().expect("inner waker").wake();
        assert!(!queued(&f), "woken, yet long");
    }

    #[test]
    fn busy_while_short_work_is_ready_and_for_the_hold_after() {
        let minute = Duration::from_secs(60);
        let work = hold();
        assert!(busy(minute));
        drop(work);
        // Other tests may do short work too: assert only what holds
        // whatever they do.
        assert!(busy(minute), "quiet straight after short work ended");
    }

    #[test]
    fn long_calls_leave_a_thread_free() {
        assert_eq!(lane_count(1), 1, "one thread: long calls still run");
        assert_eq!(lane_count(2), 1);
        assert_eq!(lane_count(8), 7);
    }
}
