//! Refresh-token rotation, logout, and accepting access tokens.

use time::OffsetDateTime;

use super::sign_in::StartedSession;
use super::{Auth, ClientInfo, SignedIn, record_event, to_time};
use crate::error::Error;
use crate::store::{self, Rotation};
use crate::token::{self, TokenSubject};

impl Auth {
    /// Rotates a refresh token. A token presented again within the grace window gets the same
    /// successor; after it, the reuse revokes the whole session.
    pub async fn refresh(
        &self,
        presented: &str,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<SignedIn, Error> {
        if !token::looks_like_refresh_token(presented) {
            return Err(Error::token("malformed refresh token"));
        }
        let successor = token::successor_refresh_token(&self.refresh_secret, presented)?;
        let session = {
            let mut db = self.pool.get().await?;
            let tx = db.transaction().await?;
            let rotation = store::rotate_refresh_token(
                &tx,
                &token::refresh_token_hash(presented),
                &token::refresh_token_hash(&successor),
                now,
                to_time(self.config.session_idle),
                to_time(self.config.refresh_reuse_grace),
            )
            .await?;
            match rotation {
                // A concurrent or retried refresh gets the successor the first one got.
                Rotation::Rotated(session) | Rotation::Repeated(session) => {
                    tx.commit().await?;
                    session
                }
                Rotation::Reused {
                    session_id,
                    user_id,
                } => {
                    record_event(
                        &tx,
                        user_id,
                        store::EventType::RefreshedReuseDetected,
                        client,
                        now,
                    )
                    .await?;
                    tx.commit().await?;
                    tracing::warn!(%session_id, "refresh token reuse detected; session revoked");
                    return Err(Error::token("refresh token reused"));
                }
                Rotation::Refused(reason) => return Err(Error::token(reason)),
            }
        };
        let started = StartedSession {
            session_id: session.session_id,
            expires_at: session.expires_at,
            refresh_token: successor,
        };
        self.sign_in(session.user.into(), started, now).await
    }

    /// Ends every session named by a valid access token or one of the refresh tokens. Unknown or
    /// dead tokens are not an error: the caller is signed out either way.
    pub async fn logout(
        &self,
        bearer: Option<&str>,
        refresh: &[&str],
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        // No connection is taken until there is something to revoke: signing out with nothing
        // usable is a 204 even while the database is down.
        let mut sessions = Vec::new();
        if let Some(bearer) = bearer
            && let Ok(subject) = self.verify_signature(bearer, now).await
        {
            sessions.push(subject.session_id);
        }
        for refresh in refresh
            .iter()
            .filter(|token| token::looks_like_refresh_token(token))
        {
            if let Some(session_id) = store::session_for_refresh_token(
                &self.pool.get().await?,
                &token::refresh_token_hash(refresh),
            )
            .await?
            {
                sessions.push(session_id);
            }
        }
        sessions.dedup();
        for session_id in sessions {
            let mut db = self.pool.get().await?;
            let tx = db.transaction().await?;
            if let Some(user_id) = store::revoke_session(&tx, session_id, now).await? {
                record_event(&tx, user_id, store::EventType::LoggedOut, client, now).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// The session check behind every access token, batched with concurrent ones
    /// ([`super::session_checks`]).
    pub(super) async fn user_of_live_session(
        &self,
        subject: TokenSubject,
        now: OffsetDateTime,
    ) -> Result<Option<store::UserRow>, Error> {
        self.session_checks
            .user_of_live_session(store::SessionCheck {
                session_id: subject.session_id,
                user_id: subject.user_id,
                now,
                idle_limit: to_time(self.config.session_idle),
            })
            .await
    }

    /// Signature and claims only, without the session check.
    pub(super) async fn verify_signature(
        &self,
        bearer: &str,
        now: OffsetDateTime,
    ) -> Result<TokenSubject, Error> {
        self.keys
            .verify(&self.pool, &self.token_settings(), bearer, now)
            .await
    }

    /// Accepts an access token only while its session is alive, so that logout and revocation
    /// take effect at once on every instance.
    pub async fn authenticate(
        &self,
        bearer: &str,
        now: OffsetDateTime,
    ) -> Result<TokenSubject, Error> {
        let subject = self.verify_signature(bearer, now).await?;
        self.require_live_session(subject, now).await?;
        Ok(subject)
    }

    /// `invalid_token` unless the session of a verified access token is alive.
    pub(super) async fn require_live_session(
        &self,
        subject: TokenSubject,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let alive = self.user_of_live_session(subject, now).await?.is_some();
        if alive {
            Ok(())
        } else {
            Err(Error::token("session ended"))
        }
    }

    /// Adds the signing keys the schedule needs at `now` and reloads this instance's ring.
    pub async fn maintain_keys(&self, now: OffsetDateTime) -> Result<(), Error> {
        self.keys.maintain(&self.pool, now).await
    }
}
