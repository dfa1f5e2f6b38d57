//! The bounded pool of threads that password hashing (and strength scoring) runs on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use prometheus_client::metrics::counter::Counter;

use crate::error::Error;
use crate::kdf::{Backend, Lanes};

/// Iterations a thread runs before it gives its core away (`sched_yield`) and looks at the queue
/// for a derivation to join it: about 80 µs of SHA-NI work, so also how long a newcomer waits at
/// most for a thread that has room.
///
/// The yield is what keeps a login flood from slowing every other request. On two cores, with
/// logins that did nothing but hash, `/me`'s p99 during the flood was 2.3-2.9× its idle p99 with
/// the threads at nice 10, and up to 3× in the idle class (SCHED_IDLE) or with a 0.1 ms scheduler
/// slice; a yield every 1 024 iterations made it 1.0-1.2× at the same login rate, where looking
/// at the queue as often without yielding changed nothing and a yield every 4 096 helped less
/// (bench/RESULTS.md's notes). A yield costs about 2 µs here even with nothing else waiting: 1-3%
/// of a hash (hash_bench measures a hash run this way).
pub const STEPS_BETWEEN_YIELDS: u32 = 1_024;

/// Runs password hashing on threads of its own, at most `max_concurrent` threads busy with at most
/// `queue` jobs waiting beyond the idle threads; past that a request is refused at once with 503
/// `overloaded`, because a queue without a bound turns a login flood into timeouts for everyone.
/// The hashing threads run at a lower scheduling priority (nice 10) and give their core away
/// every [`STEPS_BETWEEN_YIELDS`] iterations: when every core is hashing, requests that need no
/// hash (token checks, refreshes) still get the CPU first, and within tens of microseconds.
///
/// A thread hashing a PBKDF2 derivation takes a waiting one beside it as soon as no thread is idle,
/// and runs the two interleaved ([`crate::kdf::Lanes`]): SHA-256's round instructions are
/// latency-bound, so one core finishes two in less than the time of two, and a derivation that
/// arrives halfway through another joins it there. A lone derivation never waits for a partner,
/// and an idle thread is always preferred to a shared one.
pub struct HashingPool {
    shared: Arc<Shared>,
    threads: usize,
    queue: usize,
    backend: Backend,
}

struct Shared {
    state: Mutex<State>,
    work_arrived: Condvar,
    threads: usize,
    /// Derivations that joined another one in progress on its thread.
    pairs: AtomicU64,
    /// Every derivation run (a pair counts two): the work password checks and hashes cost, which
    /// `/metrics` shows and tests read to see that a path spent its hash.
    derivations: Counter,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    busy: usize,
    closed: bool,
}

/// A job and whether its caller still waits for it: the caller holds the only strong reference, so
/// a cancelled request (client gone, request timeout) frees its queue place and costs no CPU.
struct Job {
    work: Work,
    caller: Weak<()>,
}

enum Work {
    /// Computes, then returns the delivery of its result, which runs once the thread is free again.
    Task(Box<dyn FnOnce() -> Delivery + Send>),
    Derive(DeriveJob),
}

type Delivery = Box<dyn FnOnce() + Send>;

/// An owned [`Derivation`] (see there for `extra_iterations`).
pub struct DeriveRequest {
    pub password: Vec<u8>,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub extra_iterations: u32,
    pub len: usize,
}

struct DeriveJob {
    request: DeriveRequest,
    done: tokio::sync::oneshot::Sender<Vec<u8>>,
}

impl Job {
    fn abandoned(&self) -> bool {
        self.caller.strong_count() == 0
    }
}

/// Lowers the calling thread's priority; on Linux `setpriority(PRIO_PROCESS, 0, ..)` applies to
/// the calling thread only. Failing to is harmless: the thread just keeps the normal priority.
///
/// Not the idle class (SCHED_IDLE): like nice, it ranks the threads only within their scheduling
/// group (the container's cgroup, or with the kernel's autogroup the process's session); where it
/// does reach the database's processes it shortened the `/me` tail during a login flood only a
/// little, far less than the yields do (see [`STEPS_BETWEEN_YIELDS`]), and any other busy
/// program in the group starves its hashes outright.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic never happens while the lock is held (jobs run outside it), so a poisoned lock
        // still guards a consistent state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for work and takes the next live job for a thread that has none. `None` once the
    /// pool is dropped.
    fn take(&self) -> Option<Work> {
        let mut state = self.lock();
        loop {
            while let Some(job) = state.jobs.pop_front() {
                if job.abandoned() {
                    continue;
                }
                state.busy += 1;
                return Some(job.work);
            }
            if state.closed {
                return None;
            }
            state = self
                .work_arrived
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// What a thread with derivations in progress takes between two runs, once every thread is
    /// busy (an idle one would start a newcomer at full speed): a task at the head of the queue
    /// (so that scoring is never starved by a stream of hashes), else a derivation when `room`.
    fn take_beside(&self, room: bool) -> Option<Work> {
        let mut state = self.lock();
        if state.busy < self.threads {
            return None;
        }
        state.jobs.retain(|job| !job.abandoned());
        let index = match state.jobs.front() {
            Some(Job {
                work: Work::Task(_),
                ..
            }) => 0,
            Some(_) if room => state
                .jobs
                .iter()
                .position(|job| matches!(job.work, Work::Derive(_)))?,
            _ => return None,
        };
        state.jobs.remove(index).map(|job| job.work)
    }

    /// Marks the thread free, then hands out the results: a caller that submits its next job as
    /// soon as it wakes (registration scores, then hashes) always finds the thread free again.
    fn finish(&self, deliveries: Vec<Delivery>) {
        self.lock().busy -= 1;
        for deliver in deliveries {
            deliver();
        }
    }
}

type Waiter = tokio::sync::oneshot::Sender<Vec<u8>>;

fn work(shared: &Shared, backend: Backend) {
    let mut lanes: Lanes<Waiter> = Lanes::new(backend, crate::kdf::WIDTH);
    while let Some(first) = shared.take() {
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Work::Task(task)) => {
                    // A task that panics must not take its thread (or the derivations beside it)
                    // with it.
                    let delivery =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)).ok();
                    if lanes.is_empty() {
                        shared.finish(delivery.into_iter().collect());
                        break;
                    }
                    if let Some(deliver) = delivery {
                        deliver();
                    }
                }
                Some(Work::Derive(job)) => {
                    if !lanes.is_empty() {
                        shared.pairs.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.derivations.inc();
                    let DeriveRequest {
                        password,
                        salt,
                        iterations,
                        extra_iterations,
                        len,
                    } = &job.request;
                    lanes.add(
                        job.done,
                        password,
                        salt,
                        *iterations,
                        *extra_iterations,
                        *len,
                    );
                }
                None => {}
            }
            next = shared.take_beside(lanes.has_room());
            if next.is_some() {
                continue;
            }
            // A fault in the hashing code must not take the thread with it: the derivations in
            // progress are dropped, and their callers get an error instead of waiting for ever.
            let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                lanes.run(STEPS_BETWEEN_YIELDS)
            }))
            .unwrap_or_else(|_| {
                lanes = Lanes::new(backend, crate::kdf::WIDTH);
                Vec::new()
            });
            std::thread::yield_now();
            let deliveries: Vec<Delivery> = finished
                .into_iter()
                .map(|(waiter, output)| -> Delivery {
                    Box::new(move || {
                        let _ = waiter.send(output);
                    })
                })
                .collect();
            if lanes.is_empty() {
                shared.finish(deliveries);
                break;
            }
            for deliver in deliveries {
                deliver();
            }
        }
    }
}

impl HashingPool {
    pub fn new(max_concurrent: usize, queue: usize) -> Result<Self, Error> {
        Self::with_backend(max_concurrent, queue, Backend::fastest())
    }

    /// A pool whose derivations run on `backend` (tests force each available one).
    pub fn with_backend(
        max_concurrent: usize,
        queue: usize,
        backend: Backend,
    ) -> Result<Self, Error> {
        let threads = max_concurrent.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work_arrived: Condvar::new(),
            threads,
            pairs: AtomicU64::new(0),
            derivations: Counter::default(),
        });
        for index in 0..threads {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("latchkey-hash-{index}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    work(&shared, backend);
                })
                .map_err(|e| Error::internal("starting the hashing threads", e))?;
        }
        Ok(HashingPool {
            shared,
            threads,
            queue,
            backend,
        })
    }

    /// The backend the derivations run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many derivations joined another one in progress on its thread.
    pub fn pairs_run(&self) -> u64 {
        self.shared.pairs.load(Ordering::Relaxed)
    }

    /// The count of derivations run so far; it shares its value with the pool (a clone of it
    /// goes into the metrics registry).
    pub fn derivations(&self) -> Counter {
        self.shared.derivations.clone()
    }

    /// Requests waiting for a hashing thread right now.
    pub fn queue_depth(&self) -> usize {
        let state = self.shared.lock();
        state
            .jobs
            .iter()
            .filter(|job| !job.abandoned())
            .count()
            .saturating_sub(self.threads - state.busy)
    }

    /// Queues `work` unless the idle threads and the waiting room are all taken; the returned
    /// handle is the caller's claim on it.
    fn submit(&self, work: Work) -> Result<Arc<()>, Error> {
        let caller = Arc::new(());
        let mut state = self.shared.lock();
        if state.closed {
            return Err(Error::internal("hashing threads", "the pool has stopped"));
        }
        state.jobs.retain(|job| !job.abandoned());
        if state.jobs.len() >= (self.threads - state.busy) + self.queue {
            return Err(Error::Overloaded {
                retry_after_secs: 1,
            });
        }
        state.jobs.push_back(Job {
            work,
            caller: Arc::downgrade(&caller),
        });
        drop(state);
        self.shared.work_arrived.notify_one();
        Ok(caller)
    }

    /// Runs `job` on a hashing thread.
    pub async fn run<T, F>(&self, job: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let _claim = self.submit(Work::Task(Box::new(move || -> Delivery {
            let value = job();
            Box::new(move || {
                let _ = done.send(value);
            })
        })))?;
        result.await.map_err(|e| Error::internal("hashing job", e))
    }

    /// Derives `request.len` bytes with PBKDF2-HMAC-SHA256 on a hashing thread, interleaved with
    /// another derivation when every thread is busy.
    pub async fn derive(&self, request: DeriveRequest) -> Result<Vec<u8>, Error> {
        let (done, result) = tokio::sync::oneshot::channel();
        let _claim = self.submit(Work::Derive(DeriveJob { request, done }))?;
        result.await.map_err(|e| Error::internal("hashing job", e))
    }
}

impl Drop for HashingPool {
    /// The threads finish the jobs already queued, then end.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work_arrived.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(password: &[u8], iterations: u32) -> DeriveRequest {
        DeriveRequest {
            password: password.to_vec(),
            salt: b"salt".to_vec(),
            iterations,
            extra_iterations: 0,
            len: 32,
        }
    }

    fn reference(password: &[u8], iterations: u32) -> Vec<u8> {
        let mut expected = vec![0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, b"salt", iterations, &mut expected);
        expected
    }

    #[tokio::test]
    async fn a_callers_next_job_finds_the_slot_free_once_its_result_arrives() {
        // No waiting room: a thread still marked busy after the answer would refuse the next job.
        let pool = HashingPool::new(1, 0).unwrap();
        for round in 0..2_000 {
            assert_eq!(pool.run(move || round).await.unwrap(), round);
            assert!(pool.run(|| ()).await.is_ok(), "round {round}");
            assert!(
                pool.derive(request(b"pw", 1)).await.is_ok(),
                "round {round}"
            );
        }
    }

    /// Occupies the pool's only thread until the returned sender is used or dropped.
    async fn block_the_thread(
        pool: &Arc<HashingPool>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<bool, Error>>,
    ) {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let running = {
            let pool = Arc::clone(pool);
            tokio::spawn(async move { pool.run(move || release_rx.recv().is_ok()).await })
        };
        until_a_thread_is_busy(pool).await;
        (release_tx, running)
    }

    async fn until_a_thread_is_busy(pool: &HashingPool) {
        while pool.shared.lock().busy == 0 {
            tokio::task::yield_now().await;
        }
    }

    /// A derivation started on a thread of the pool (returned once a thread has taken it).
    async fn derivation_in_progress(
        pool: &Arc<HashingPool>,
        password: &'static [u8],
        iterations: u32,
    ) -> tokio::task::JoinHandle<Result<Vec<u8>, Error>> {
        let running = {
            let pool = Arc::clone(pool);
            tokio::spawn(async move { pool.derive(request(password, iterations)).await })
        };
        until_a_thread_is_busy(pool).await;
        running
    }

    #[tokio::test]
    async fn the_pool_refuses_work_beyond_its_queue() {
        let pool = Arc::new(HashingPool::new(1, 1).unwrap());
        let (release, running) = block_the_thread(&pool).await;
        let queued = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(|| 7).await })
        };
        while pool.queue_depth() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            pool.run(|| 0).await,
            Err(Error::Overloaded { .. })
        ));
        assert!(matches!(
            pool.derive(request(b"pw", 1)).await,
            Err(Error::Overloaded { .. })
        ));
        release.send(()).unwrap();
        assert!(running.await.unwrap().unwrap());
        assert_eq!(queued.await.unwrap().unwrap(), 7);
        assert_eq!(pool.queue_depth(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_caller_frees_its_place_in_the_queue() {
        let pool = Arc::new(HashingPool::new(1, 1).unwrap());
        let (release, running) = block_the_thread(&pool).await;
        let gave_up = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.derive(request(b"pw", 1)).await })
        };
        while pool.queue_depth() == 0 {
            tokio::task::yield_now().await;
        }
        gave_up.abort();
        assert!(gave_up.await.unwrap_err().is_cancelled());
        assert_eq!(pool.queue_depth(), 0);
        let queued = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.derive(request(b"pw", 2)).await })
        };
        release.send(()).unwrap();
        assert!(running.await.unwrap().unwrap());
        assert_eq!(queued.await.unwrap().unwrap(), reference(b"pw", 2));
    }

    #[tokio::test]
    async fn waiting_derivations_run_in_pairs_with_correct_results_on_every_backend() {
        for backend in Backend::available() {
            let pool = Arc::new(HashingPool::with_backend(1, 8, backend).unwrap());
            let (release, running) = block_the_thread(&pool).await;
            // Five derivations of different lengths queue behind the busy thread: it then runs
            // them two at a time, each one after the first joining one in progress as soon as
            // there is room, and a task queued behind them keeps its turn.
            let mut waiting = Vec::new();
            for (index, iterations) in [1000u32, 3, 2000, 1, 4096].into_iter().enumerate() {
                let caller = Arc::clone(&pool);
                let password = format!("password {index}").into_bytes();
                waiting.push(tokio::spawn(async move {
                    let output = caller.derive(request(&password, iterations)).await;
                    (output, reference(&password, iterations))
                }));
                while pool.queue_depth() < waiting.len() {
                    tokio::task::yield_now().await;
                }
            }
            let task = {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { pool.run(|| 42).await })
            };
            release.send(()).unwrap();
            assert!(running.await.unwrap().unwrap());
            for handle in waiting {
                let (output, expected) = handle.await.unwrap();
                assert_eq!(output.unwrap(), expected, "{backend:?}");
            }
            assert_eq!(task.await.unwrap().unwrap(), 42);
            assert_eq!(pool.queue_depth(), 0);
            assert_eq!(pool.pairs_run(), 4, "{backend:?}");
        }
    }

    #[tokio::test]
    async fn a_derivation_arriving_halfway_through_another_joins_it() {
        let pool = Arc::new(HashingPool::new(1, 4).unwrap());
        let long = derivation_in_progress(&pool, b"long", 400_000).await;
        let short = pool.derive(request(b"short", 2_000)).await.unwrap();
        // It joined the long one in progress instead of waiting behind it.
        assert_eq!(short, reference(b"short", 2_000));
        assert_eq!(pool.pairs_run(), 1);
        assert_eq!(long.await.unwrap().unwrap(), reference(b"long", 400_000));
    }

    #[tokio::test]
    async fn an_idle_thread_takes_a_newcomer_before_a_busy_one_shares_its_core() {
        let pool = Arc::new(HashingPool::new(2, 4).unwrap());
        let first = derivation_in_progress(&pool, b"first", 200_000).await;
        let second = pool.derive(request(b"second", 200_000)).await.unwrap();
        assert_eq!(second, reference(b"second", 200_000));
        assert_eq!(first.await.unwrap().unwrap(), reference(b"first", 200_000));
        assert_eq!(pool.pairs_run(), 0);
    }

    #[tokio::test]
    async fn a_lone_derivation_runs_at_once_without_a_partner() {
        let pool = HashingPool::new(1, 0).unwrap();
        assert_eq!(
            pool.derive(request(b"alone", 500)).await.unwrap(),
            reference(b"alone", 500)
        );
        assert_eq!(pool.pairs_run(), 0);
    }

    #[tokio::test]
    async fn concurrent_derivations_on_several_threads_all_get_their_own_result() {
        let pool = Arc::new(HashingPool::new(2, 64).unwrap());
        let results = futures::future::join_all((0..48u32).map(|index| {
            let pool = Arc::clone(&pool);
            async move {
                let password = index.to_be_bytes();
                let iterations = 1 + index * 37;
                let output = pool.derive(request(&password, iterations)).await.unwrap();
                (output, reference(&password, iterations))
            }
        }))
        .await;
        for (output, expected) in results {
            assert_eq!(output, expected);
        }
    }
}
