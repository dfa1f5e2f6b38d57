//! The bounded pool of threads that password hashing (and strength scoring) runs on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use prometheus_client::metrics::counter::Counter;

use crate::error::Error;
use crate::kdf::{Backend, Derivation};

/// Runs password hashing on threads of its own, at most `max_concurrent` threads busy with at most
/// `queue` jobs waiting beyond the idle threads; past that a request is refused at once with 503
/// `overloaded`, because a queue without a bound turns a login flood into timeouts for everyone.
/// The hashing threads run at a lower scheduling priority (nice 10): when every core is hashing,
/// requests that need no hash (token checks, refreshes) still get the CPU first.
///
/// A thread that takes a PBKDF2 derivation while another one waits takes both and runs them
/// interleaved ([`crate::kdf::derive_many`]): SHA-256's round instructions are latency-bound, so
/// one core finishes the two in little more than the time of one. A lone derivation never waits
/// for a partner.
pub struct HashingPool {
    shared: Arc<Shared>,
    threads: usize,
    queue: usize,
    backend: Backend,
}

struct Shared {
    state: Mutex<State>,
    work_arrived: Condvar,
    /// Derivations that ran interleaved with another one (each pair counts once).
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

    /// Waits for work, then takes the next live job and, when it is a derivation, the next live
    /// derivation behind it as its partner. `None` once the pool is dropped.
    fn take(&self) -> Option<(Job, Option<Job>)> {
        let mut state = self.lock();
        loop {
            while let Some(job) = state.jobs.pop_front() {
                if job.abandoned() {
                    continue;
                }
                let partner = if matches!(job.work, Work::Derive(_)) {
                    state.jobs.retain(|job| !job.abandoned());
                    state
                        .jobs
                        .iter()
                        .position(|job| matches!(job.work, Work::Derive(_)))
                        .and_then(|index| state.jobs.remove(index))
                } else {
                    None
                };
                state.busy += 1;
                return Some((job, partner));
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

    /// Marks the thread free, then hands out the results: a caller that submits its next job as
    /// soon as it wakes (registration scores, then hashes) always finds the thread free again.
    fn finish(&self, deliveries: Vec<Delivery>) {
        self.lock().busy -= 1;
        for deliver in deliveries {
            deliver();
        }
    }
}

fn work(shared: &Shared, backend: Backend) {
    while let Some((job, partner)) = shared.take() {
        // A job that panics must not take its thread (or its partner's result) with it.
        let deliveries = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match (job.work, partner.map(|partner| partner.work)) {
                (Work::Task(task), _) => vec![task()],
                (Work::Derive(first), Some(Work::Derive(second))) => {
                    shared.pairs.fetch_add(1, Ordering::Relaxed);
                    shared.derivations.inc_by(2);
                    derive(backend, [first, second])
                }
                (Work::Derive(first), _) => {
                    shared.derivations.inc();
                    derive(backend, [first])
                }
            }
        }))
        .unwrap_or_default();
        shared.finish(deliveries);
    }
}

fn derive<const N: usize>(backend: Backend, jobs: [DeriveJob; N]) -> Vec<Delivery> {
    let mut outputs: Vec<Vec<u8>> = jobs.iter().map(|job| vec![0u8; job.request.len]).collect();
    let mut derivations: Vec<Derivation<'_>> = jobs
        .iter()
        .zip(outputs.iter_mut())
        .map(|(job, out)| Derivation {
            password: &job.request.password,
            salt: &job.request.salt,
            iterations: job.request.iterations,
            extra_iterations: job.request.extra_iterations,
            out,
        })
        .collect();
    crate::kdf::derive_many(backend, &mut derivations);
    drop(derivations);
    jobs.into_iter()
        .zip(outputs)
        .map(|(job, output)| -> Delivery {
            Box::new(move || {
                let _ = job.done.send(output);
            })
        })
        .collect()
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

    /// How many times a thread has run two derivations interleaved.
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
    /// another waiting derivation when there is one.
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
        while pool.shared.lock().busy == 0 {
            tokio::task::yield_now().await;
        }
        (release_tx, running)
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
            // Five derivations of different lengths queue behind the busy thread: it then takes
            // them two by two (the last alone), and a task queued between them keeps its turn.
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
            assert_eq!(pool.pairs_run(), 2, "{backend:?}");
        }
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
