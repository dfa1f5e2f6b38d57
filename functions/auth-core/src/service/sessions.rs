//! The account's sessions: the list, and ending them.

use time::OffsetDateTime;
use uuid::Uuid;

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
            .map(|row| SessionInfo {
                current: row.id == subject.session_id,
                id: row.id,
                created_at: row.created_at,
                last_used_at: row.last_used_at,
                expires_at: row.expires_at,
                ip: row.ip,
                user_agent: row.user_agent,
            })
            .collect())
    }

    /// Ends one of the caller's sessions; another user's session (or a dead one) is not found.
    pub async fn revoke_session(
        &self,
        subject: TokenSubject,
        session_id: Uuid,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        if !store::revoke_user_session(&tx, subject.user_id, session_id, now).await? {
            return Err(Error::NotFound);
        }
        record_event(
            &tx,
            subject.user_id,
            store::EventType::SessionRevoked,
            client,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends every session of the caller but the one making the request.
    pub async fn revoke_other_sessions(
        &self,
        subject: TokenSubject,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        if store::revoke_other_sessions(&tx, subject.user_id, subject.session_id, now).await? > 0 {
            record_event(
                &tx,
                subject.user_id,
                store::EventType::SessionRevoked,
                client,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
