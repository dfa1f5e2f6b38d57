//! The session check every signed-in request makes, batched: checks that arrive while earlier
//! ones are in flight share one statement (`unnest` over their arrays), so that under load the
//! database runs one query for many requests instead of one each. A lone check goes out at
//! once; nothing waits for company. Every check still reads the database after its request
//! arrived, so a session ended on any instance is refused once the ending call has answered.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::{Error, cause_chain};
use crate::store::{self, SessionCheck, UserRow};

/// Checks per statement at most.
const MAX_BATCH: usize = 64;
/// Statements in flight at once; checks arriving meanwhile wait and form the next batches.
const BATCHES_IN_FLIGHT: usize = 4;
/// Checks waiting for a batch; a request finding it full waits for room.
const WAITING: usize = 4096;

type Answer = Result<Option<UserRow>, Error>;

pub struct SessionChecks {
    waiting: mpsc::Sender<(SessionCheck, oneshot::Sender<Answer>)>,
}

impl SessionChecks {
    /// Starts the batching task; it ends when this value is dropped.
    pub fn start(pool: Pool) -> Self {
        let (waiting, arrivals) = mpsc::channel(WAITING);
        tokio::spawn(batch_checks(pool, arrivals));
        SessionChecks { waiting }
    }

    /// The account behind the session, while the session is alive.
    pub async fn user_of_live_session(&self, check: SessionCheck) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.waiting
            .send((check, reply))
            .await
            .map_err(|_| Error::internal("session checks", "the batching task has stopped"))?;
        answer
            .await
            .map_err(|e| Error::internal("session checks", e))?
    }
}

async fn batch_checks(
    pool: Pool,
    mut arrivals: mpsc::Receiver<(SessionCheck, oneshot::Sender<Answer>)>,
) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let Some(first) = arrivals.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match arrivals.try_recv() {
                Ok(check) => batch.push(check),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let (checks, replies): (Vec<SessionCheck>, Vec<oneshot::Sender<Answer>>) =
                batch.into_iter().unzip();
            let result = async {
                let db = pool.get().await?;
                store::users_of_live_sessions(&db, &checks).await
            }
            .await;
            drop(permit);
            match result {
                Ok(users) => {
                    for (reply, user) in replies.into_iter().zip(users) {
                        let _ = reply.send(Ok(user));
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _ = reply.send(Err(same_error(&error)));
                    }
                }
            }
        });
    }
}

/// The batch's error for each of its requests (errors are not `Clone`): an outage stays an
/// outage (503), anything else stays internal, with the same message.
fn same_error(error: &Error) -> Error {
    match error {
        Error::Unavailable(cause) => Error::Unavailable(cause_chain(cause.as_ref()).into()),
        Error::Internal { context, source } => {
            Error::internal(context, cause_chain(source.as_ref()))
        }
        other => Error::internal("session check", cause_chain(other)),
    }
}
