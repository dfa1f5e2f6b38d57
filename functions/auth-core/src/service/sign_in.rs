//! Registration and login: both end in a new session and its first tokens.

use time::OffsetDateTime;
use uuid::Uuid;

use super::idempotency::{
    KEY_KEPT, KeyedLogin, REGISTER_ENDPOINT, USED_FOR_ANOTHER, claim_registration_key, key_refused,
};
use super::limits::PasswordCheck;
use super::{
    Account, Auth, ClientInfo, SignedIn, record_event, to_stored_precision, to_time, whole_seconds,
};
use crate::error::Error;
use crate::password;
use crate::store::{self, NewSession, UserRow};
use crate::token::{self, AccessTokenSettings, TokenSubject};

/// A session just stored, whose tokens are not signed yet.
pub(super) struct StartedSession {
    pub session_id: Uuid,
    pub expires_at: OffsetDateTime,
    pub refresh_token: String,
}

impl Auth {
    pub(super) fn token_settings(&self) -> AccessTokenSettings<'_> {
        AccessTokenSettings {
            alg: self.config.signing_alg,
            issuer: &self.config.issuer,
            audience: &self.config.audience,
            ttl: self.config.access_ttl,
        }
    }

    /// A session to start now, with a random first refresh token.
    fn new_session(&self, now: OffsetDateTime) -> Result<StartedSession, Error> {
        Ok(StartedSession {
            session_id: Uuid::now_v7(),
            expires_at: now + to_time(self.config.session_ttl),
            refresh_token: token::new_refresh_token()?,
        })
    }

    /// Stores `started` for `user_id` with its first refresh token and the event, inside the
    /// caller's transaction.
    async fn start_session(
        &self,
        tx: &impl deadpool_postgres::GenericClient,
        user_id: Uuid,
        started: StartedSession,
        event: store::EventType,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<StartedSession, Error> {
        let session = NewSession {
            id: started.session_id,
            user_id,
            now,
            expires_at: started.expires_at,
            ip: client.ip.as_deref(),
            user_agent: client.user_agent.as_deref(),
        };
        store::start_session(
            tx,
            &session,
            &token::refresh_token_hash(&started.refresh_token),
        )
        .await?;
        record_event(tx, user_id, event, client, now).await?;
        // A cap on live sessions keeps one account from growing without bound; the oldest make
        // room, and the owner sees that they ended.
        let ended = store::end_sessions_beyond(
            tx,
            user_id,
            i64::from(self.config.max_sessions_per_user),
            now,
            to_time(self.config.session_idle),
        )
        .await?;
        if ended > 0 {
            record_event(tx, user_id, store::EventType::SessionRevoked, client, now).await?;
        }
        Ok(started)
    }

    /// Signs the access token for a session. Called with no connection held: the key ring's
    /// reload takes one.
    pub(super) async fn sign_in(
        &self,
        account: Account,
        session: StartedSession,
        now: OffsetDateTime,
    ) -> Result<SignedIn, Error> {
        let account = self.shown(account);
        let StartedSession {
            session_id,
            expires_at: session_expires_at,
            refresh_token,
        } = session;
        let ring = self.keys.fresh_ring(&self.pool, now).await?;
        let access_token = token::issue_access_token(
            &ring,
            &self.token_settings(),
            TokenSubject {
                user_id: account.id,
                session_id,
            },
            account.email_verified,
            now,
        )?;
        Ok(SignedIn {
            access_token,
            expires_in: self.config.access_ttl.as_secs(),
            refresh_token,
            refresh_expires_in: whole_seconds(session_expires_at - now),
            account,
        })
    }

    /// The account a registration would create: within the client network's limit, the email and
    /// password validated together and the password hashed, all before any row is written.
    pub(super) async fn new_user(
        &self,
        raw_email: &str,
        raw_password: &str,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<UserRow, Error> {
        self.limit_per_network(
            "register",
            client,
            self.config.ip_registrations_per_hour,
            time::Duration::HOUR,
            now,
        )
        .await?;
        // Strength scoring costs milliseconds of CPU too, so it runs in the bounded pool with the
        // hash: a registration flood meets 503 `overloaded` instead of stalling the server.
        let (raw_email, raw_password) = (raw_email.to_owned(), raw_password.to_owned());
        let (min_score, iterations) = (
            self.config.password_min_score,
            self.config.pbkdf2_iterations,
        );
        let (email, password) = self
            .hashing
            .run(move || password::validate_credentials(&raw_email, &raw_password, min_score))
            .await??;
        let password_hash = password::hash_password(&self.hashing, &password, iterations).await?;
        Ok(UserRow {
            id: Uuid::now_v7(),
            email,
            password_hash,
            created_at: to_stored_precision(now),
            email_verified_at: None,
        })
    }

    /// Registers an account and starts its first session. With an `Idempotency-Key`, a retry of a
    /// registration that did commit (whatever became of its answer) is answered as it was: 201
    /// with a new session, for whoever still sends the same email and password.
    pub async fn register(
        &self,
        raw_email: &str,
        raw_password: &str,
        idempotency_key: Option<&str>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<SignedIn, Error> {
        // A retry of a committed registration is checked against the account's password.
        let password_for_replay = idempotency_key.map(|_| raw_password.to_owned());
        let user = self.new_user(raw_email, raw_password, client, now).await?;
        let started = {
            let mut db = self.pool.get().await?;
            let tx = db.transaction().await?;
            if let Some(key) = idempotency_key {
                match claim_registration_key(&tx, key, user.id, now).await? {
                    store::KeyClaim::Claimed => {}
                    store::KeyClaim::Used { endpoint, user_id } => {
                        drop(tx);
                        drop(db);
                        return self
                            .replay_registration(
                                &endpoint,
                                user_id,
                                &user.email,
                                password_for_replay.as_deref().unwrap_or_default(),
                                client,
                                now,
                            )
                            .await;
                    }
                }
            }
            store::insert_user(&tx, &user).await?;
            let started = self
                .start_session(
                    &tx,
                    user.id,
                    self.new_session(now)?,
                    store::EventType::Registered,
                    client,
                    now,
                )
                .await?;
            self.queue_verification(&tx, &user, now).await?;
            tx.commit().await?;
            started
        };
        self.wake_mail_worker();
        self.sign_in(user.into(), started, now).await
    }

    /// The answer to a registration retried with its Idempotency-Key: the account the first
    /// request created, in a new session, if this request is the same one (same email, and a
    /// password that is still the account's).
    async fn replay_registration(
        &self,
        endpoint: &str,
        user_id: Uuid,
        email: &str,
        raw_password: &str,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<SignedIn, Error> {
        let reused = || key_refused(USED_FOR_ANOTHER);
        let user = store::find_user(&self.pool.get().await?, user_id).await?;
        let Some(user) = user.filter(|user| endpoint == REGISTER_ENDPOINT && user.email == email)
        else {
            return Err(reused());
        };
        let Some(password) = password::password_as_typed(raw_password) else {
            return Err(reused());
        };
        let (stored, iterations) = (user.password_hash.clone(), self.config.pbkdf2_iterations);
        let verification =
            password::verify_password(&self.hashing, &password, &stored, iterations).await?;
        if !matches!(verification, password::Verification::Match { .. }) {
            return Err(reused());
        }
        self.sign_in_while_password_holds(user, None, client, now)
            .await
            .map_err(|error| match error {
                Error::InvalidCredentials => reused(),
                other => other,
            })
    }

    /// Stores a new session for `user` only while the password hash just checked is still the
    /// account's, with the row locked against a change until it is (a change that committed
    /// first refuses this sign-in with `invalid_credentials`; one that comes after ends its
    /// session), then signs its first tokens. A login with an Idempotency-Key records it with
    /// the session; a retry gets that session back instead of a new one.
    async fn sign_in_while_password_holds(
        &self,
        user: UserRow,
        keyed: Option<KeyedLogin<'_>>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<SignedIn, Error> {
        let started = {
            let mut db = self.pool.get().await?;
            let tx = db.transaction().await?;
            if !store::lock_user_with_password(&tx, user.id, &user.password_hash).await? {
                return Err(Error::InvalidCredentials);
            }
            let mut session = self.new_session(now)?;
            if let Some(login) = keyed {
                session.refresh_token =
                    login.first_refresh_token(&self.refresh_secret, session.session_id)?;
                let claim = store::claim_request(
                    &tx,
                    &login.key_hash(),
                    &KeyedLogin::fingerprint(user.id),
                    Some(session.session_id),
                    now,
                    now - KEY_KEPT,
                )
                .await?;
                if let store::RequestClaim::Kept(kept) = claim {
                    drop(tx);
                    drop(db);
                    return self.replay_login(user, login, &kept, now).await;
                }
            }
            let started = self
                .start_session(
                    &tx,
                    user.id,
                    session,
                    store::EventType::LoginSucceeded,
                    client,
                    now,
                )
                .await?;
            tx.commit().await?;
            started
        };
        self.sign_in(user.into(), started, now).await
    }

    /// The answer to a login retried with its Idempotency-Key: the session the first request
    /// started, with a new access token and the same refresh token, while that session lives and
    /// its first refresh token is unused (a client that refreshed got the first answer; a lost
    /// answer's token cannot have been used). Anything else is 422.
    async fn replay_login(
        &self,
        user: UserRow,
        login: KeyedLogin<'_>,
        kept: &store::KeptRequest,
        now: OffsetDateTime,
    ) -> Result<SignedIn, Error> {
        let session_id = match kept.session_id {
            Some(session_id) if KeyedLogin::same_account(kept, user.id) => session_id,
            _ => return Err(key_refused(USED_FOR_ANOTHER)),
        };
        let refresh_token = login.first_refresh_token(&self.refresh_secret, session_id)?;
        let expires_at = store::first_token_unused(
            &self.pool.get().await?,
            session_id,
            &token::refresh_token_hash(&refresh_token),
            now,
            to_time(self.config.session_idle),
        )
        .await?
        .ok_or_else(|| {
            key_refused(
                "The session this key started has ended or has been refreshed; sign in with a new key.",
            )
        })?;
        let started = StartedSession {
            session_id,
            expires_at,
            refresh_token,
        };
        self.sign_in(user.into(), started, now).await
    }

    /// Signs in with email and password. With an `Idempotency-Key`, a retry within a day gets the
    /// session the first one started (see [`Self::replay_login`]).
    pub async fn login(
        &self,
        raw_email: &str,
        raw_password: &str,
        idempotency_key: Option<&str>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<SignedIn, Error> {
        // An address that cannot be an account's is still counted and hashed like one, so the
        // answer and its timing say nothing.
        let email = password::normalise_email(raw_email).unwrap_or_default();
        let user = if email.is_empty() {
            None
        } else {
            store::find_user_by_email(&self.pool.get().await?, &email).await?
        };
        let account = user.as_ref().map(|u| (u.id, u.password_hash.as_str()));
        let PasswordCheck::Matched {
            password,
            needs_rehash,
        } = self
            .check_password(&email, account, raw_password, client, now)
            .await?
        else {
            return Err(Error::InvalidCredentials);
        };
        let Some(user) = user else {
            return Err(Error::InvalidCredentials);
        };
        // Said only to whoever knows the password, so it reveals nothing about the address.
        if self.config.email_verification == crate::config::EmailVerification::Required
            && user.email_verified_at.is_none()
        {
            return Err(Error::EmailUnverified);
        }
        let (user_id, checked_hash) = (user.id, user.password_hash.clone());
        let keyed = idempotency_key.map(|key| KeyedLogin {
            key,
            password: &password,
        });
        let signed_in = self
            .sign_in_while_password_holds(user, keyed, client, now)
            .await?;
        if needs_rehash {
            self.rehash(user_id, &checked_hash, password).await;
        }
        Ok(signed_in)
    }

    /// Upgrades a hash made with fewer iterations than configured. A failure only delays the
    /// upgrade to the next login, so it is logged, not returned.
    async fn rehash(&self, user_id: Uuid, old_hash: &str, password: String) {
        let iterations = self.config.pbkdf2_iterations;
        let upgraded = async {
            let new_hash = password::hash_password(&self.hashing, &password, iterations).await?;
            store::set_password_hash(&self.pool.get().await?, user_id, old_hash, &new_hash).await
        };
        if let Err(error) = upgraded.await {
            tracing::warn!(%user_id, error = %crate::error::cause_chain(&error), "password re-hash postponed");
        }
    }
}
