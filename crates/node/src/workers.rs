//! The threads the binding's calls run on, kept between calls: a closure of
//! tens of thousands of small paths is as many calls, and starting a thread
//! for each (its stack, its TLS, its first page faults) cost more than
//! packing a small path.
//!
//! Every job starts at once, on an idle thread or a new one, never behind
//! another job: a job may wait for JavaScript, which may be waiting for the
//! other. A thread idle for [`IDLE_EXIT`] ends.

use std::collections::VecDeque;
use std::io;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

const IDLE_EXIT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    jobs: VecDeque<(&'static str, Job)>,
    /// Threads waiting for a job and not yet promised one.
    idle: usize,
    /// Jobs promised to waiting threads and not yet taken.
    promised: usize,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(Default::default);
static WAKE: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    // A job runs outside the lock: a panic never poisons it.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `job` on a thread named `narcache-<what>`.
pub fn run(what: &'static str, job: Job) -> io::Result<()> {
    let mut state = state();
    state.jobs.push_back((what, job));
    if state.idle > 0 {
        state.idle -= 1;
        state.promised += 1;
        WAKE.notify_one();
        return Ok(());
    }
    // Started under the lock: if it cannot be, the job just queued is
    // still the last one, and is given back to the caller to drop.
    match thread::Builder::new().spawn(work) {
        Ok(_) => Ok(()),
        Err(e) => {
            state.jobs.pop_back();
            Err(e)
        }
    }
}

fn work() {
    batch_scheduling();
    let mut named = "";
    let mut state = state();
    loop {
        let Some((what, job)) = state.jobs.pop_front() else {
            state.idle += 1;
            let timed_out;
            (state, timed_out) = WAKE
                .wait_timeout_while(state, IDLE_EXIT, |s| s.promised == 0)
                .map(|(s, t)| (s, t.timed_out()))
                .unwrap_or_else(|e| {
                    let (s, t) = e.into_inner();
                    (s, t.timed_out())
                });
            if timed_out {
                state.idle -= 1;
                return;
            }
            state.promised -= 1;
            continue;
        };
        drop(state);
        if what != named {
            set_name(what);
            named = what;
        }
        job();
        state = self::state();
    }
}

/// Names the calling thread `narcache-<what>` (15 bytes at most are kept),
/// which is what `top -H` and the bench's per-thread figures show.
fn set_name(what: &str) {
    #[cfg(target_os = "linux")]
    {
        let mut name = format!("narcache-{what}").into_bytes();
        name.truncate(15);
        name.push(0);
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        }
    }
}

/// Puts the calling thread, and the compressor threads it starts (which
/// inherit it), under SCHED_BATCH: bulk work that a wake-up does not preempt.
/// Under the default policy, a zstd worker that signals the end of a job
/// while the path's thread waits to hand over the next one is preempted by
/// that woken thread before the worker marks itself idle; the woken thread
/// then finds no idle worker and retries in a loop inside zstd until its time
/// slice ends. On 2 cores that spinning took 2% of a zstd build's CPU time.
fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: changes only this thread's policy; a failure (a sandbox
        // that forbids it) leaves the default policy, which is also correct.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn every_job_starts_at_once_even_while_others_wait() {
        // Job k, once started, waits for job k + 1 to start: queued behind
        // one another on too few threads, they would never end.
        const JOBS: usize = 8;
        let (started, waits): (Vec<_>, Vec<_>) = (0..JOBS).map(|_| mpsc::channel::<()>()).unzip();
        let mut started = started.into_iter();
        let mut previous: Option<mpsc::Sender<()>> = None;
        let (done_tx, done_rx) = mpsc::channel();
        for (k, wait) in waits.into_iter().enumerate() {
            let tell = previous.take();
            previous = started.next();
            let done = done_tx.clone();
            let job = move || {
                if let Some(tell) = tell {
                    tell.send(()).unwrap();
                }
                if k + 1 < JOBS {
                    wait.recv_timeout(Duration::from_secs(10)).unwrap();
                }
                done.send(()).unwrap();
            };
            run("test", Box::new(job)).unwrap();
        }
        for _ in 0..JOBS {
            done_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        }
    }

    #[test]
    fn threads_are_kept_for_the_next_jobs() {
        let ids = (0..20)
            .map(|_| {
                let (tx, rx) = mpsc::channel();
                run(
                    "test",
                    Box::new(move || tx.send(thread::current().id()).unwrap()),
                )
                .unwrap();
                rx.recv().unwrap()
            })
            .collect::<std::collections::HashSet<_>>();
        assert!(
            ids.len() < 20,
            "{} threads for 20 jobs one after another",
            ids.len()
        );
    }
}
