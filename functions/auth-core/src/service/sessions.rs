//! The account's sessions: the list, and ending them.

use time::OffsetDateTime;
use uuid::Uuid;

use super::idempotency::{KeyedRequest, record_request};
use super::{Auth, ClientInfo, SessionInfo, record_event, to_time};
use crate::error::Error;
use crate::store;
use crate::token::TokenSubject;

impl Auth {
    /// The caller's live sessions, newest first, the calling one marked.
    pub async fn sessions(
        &self,
        subject: TokenSubject,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionInfo>, Error> {
        let rows = store::live_sessions(
            &self.pool.get().await?,
            subject.user_id,
            now,
            to_time(self.config.session_idle),
            // No more than the cap can be live; the bound holds even if the cap was lowered.
            i64::from(self.config.max_sessions_per_user),
        )
        .await?;
        Ok(rows
            .into_iter()
            .map(|session| SessionInfo {
                current: session.id == subject.session_id,
                session,
            })
            .collect())
    }

    /// Ends one of the caller's sessions; another user's session (or a dead one) is not found.
    pub async fn revoke_session(
        &self,
        subject: TokenSubject,
        session_id: Uuid,
        keyed: Option<KeyedRequest>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let ended = self
            .end_sessions(
                subject.user_id,
                Ending::Only(session_id),
                keyed,
                client,
                now,
            )
            .await?;
        if ended == Some(0) {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Ends every session of the caller but the one making the request.
    pub async fn revoke_other_sessions(
        &self,
        subject: TokenSubject,
        keyed: Option<KeyedRequest>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        self.end_sessions(
            subject.user_id,
            Ending::AllBut(subject.session_id),
            keyed,
            client,
            now,
        )
        .await
        .map(|_| ())
    }

    /// Ends the user's sessions `ending` names and, when any ended, records it for the owner, in
    /// one transaction; returns how many ended, or `None` when a duplicate with the same
    /// Idempotency-Key did it first (its answer stands).
    async fn end_sessions(
        &self,
        user_id: Uuid,
        ending: Ending,
        keyed: Option<KeyedRequest>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<Option<u64>, Error> {
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        if record_request(&tx, keyed, now).await? {
            return Ok(None);
        }
        let ended = match ending {
            Ending::Only(session_id) => {
                u64::from(store::revoke_user_session(&tx, user_id, session_id, now).await?)
            }
            Ending::AllBut(keep) => store::revoke_other_sessions(&tx, user_id, keep, now).await?,
        };
        if ended > 0 {
            record_event(&tx, user_id, store::EventType::SessionRevoked, client, now).await?;
        } else if matches!(ending, Ending::Only(_)) {
            // 404: nothing to commit, and a key must not make a retry's answer 204.
            return Ok(Some(0));
        }
        tx.commit().await?;
        Ok(Some(ended))
    }
}

/// Which of a user's sessions to end.
#[derive(Clone, Copy)]
enum Ending {
    Only(Uuid),
    AllBut(Uuid),
}
