//! The bounded pool of threads that password hashing (and strength scoring) runs on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use crate::error::Error;

/// Runs password hashing on threads of its own, at most `max_concurrent` at a time with at most
/// `queue` waiting; past that a request is refused at once with 503 `overloaded`, because a queue
/// without a bound turns a login flood into timeouts for everyone. The hashing threads run at a
/// lower scheduling priority (nice 10): when every core is hashing, requests that need no hash
/// (token checks, refreshes) still get the CPU first.
pub struct HashingPool {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    jobs: std::sync::mpsc::Sender<HashJob>,
}

type HashJob = Box<dyn FnOnce() + Send>;

/// Leaves the queue count right even when the waiting request is cancelled.
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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

impl HashingPool {
    pub fn new(max_concurrent: usize, queue: usize) -> Result<Self, Error> {
        let threads = max_concurrent.max(1);
        let (jobs, receiver) = std::sync::mpsc::channel::<HashJob>();
        let receiver = Arc::new(std::sync::Mutex::new(receiver));
        for index in 0..threads {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("latchkey-hash-{index}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        // The lock is held only while taking a job, never while running one.
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            // A job that panics must not take its thread with it.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            // The pool was dropped: the thread ends.
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| Error::internal("starting the hashing threads", e))?;
        }
        Ok(HashingPool {
            permits: Arc::new(Semaphore::new(threads)),
            waiting: AtomicUsize::new(0),
            queue,
            jobs,
        })
    }

    /// Requests waiting for a hashing slot right now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub async fn run<T, F>(&self, job: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let already_waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
                let _slot = QueueSlot(&self.waiting);
                if already_waiting >= self.queue {
                    return Err(Error::Overloaded {
                        retry_after_secs: 1,
                    });
                }
                Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .map_err(|e| Error::internal("hashing pool closed", e))?
            }
        };
        // One permit per thread: a job handed over with a permit starts at once. The permit is
        // released by the job itself, so a caller that gives up cannot over-commit the threads,
        // and released before the result is delivered, so a caller that submits its next job as
        // soon as it wakes (registration scores, then hashes) always finds the slot free again.
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let value = job();
                drop(permit);
                let _ = done.send(value);
            }))
            .map_err(|_| Error::internal("hashing threads", "the pool has stopped"))?;
        result.await.map_err(|e| Error::internal("hashing job", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_callers_next_job_finds_the_slot_free_once_its_result_arrives() {
        // No waiting room: a permit still held after the answer would refuse the second job.
        let pool = HashingPool::new(1, 0).unwrap();
        for round in 0..2_000 {
            assert_eq!(pool.run(move || round).await.unwrap(), round);
            assert!(pool.run(|| ()).await.is_ok(), "round {round}");
        }
    }

    #[tokio::test]
    async fn the_pool_refuses_work_beyond_its_queue() {
        let pool = Arc::new(HashingPool::new(1, 1).unwrap());
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let running = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(move || release_rx.recv().is_ok()).await })
        };
        while pool.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
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
        release_tx.send(()).unwrap();
        assert!(running.await.unwrap().unwrap());
        assert_eq!(queued.await.unwrap().unwrap(), 7);
        assert_eq!(pool.queue_depth(), 0);
    }
}
