-- Email verification and password reset (docs/api.md, "Email"), and the outbox their mail goes
-- through.

-- When the account's address was last proven to receive mail; NULL: not (yet) verified.
-- Accounts that exist before this migration start unverified: switching AUTH_EMAIL_VERIFICATION
-- to `required` asks them to verify too (docs/operations.md).
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;

ALTER TABLE security_events DROP CONSTRAINT security_events_type_check;
ALTER TABLE security_events ADD CONSTRAINT security_events_type_check CHECK (type IN (
    'registered', 'login_succeeded', 'login_failed', 'refreshed_reuse_detected', 'logged_out',
    'session_revoked', 'password_changed', 'email_verified', 'password_reset_requested',
    'password_reset'));

-- The links mailed for verification and reset. Only a SHA-256 hash of the token is stored; the
-- row is bound to the address it was sent to, and deleted when used, superseded (reset) or
-- outrun by a password change (reset).
CREATE TABLE email_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    purpose    text NOT NULL CHECK (purpose IN ('verify', 'reset')),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email      text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX email_tokens_user_purpose_idx ON email_tokens (user_id, purpose);
CREATE INDEX email_tokens_expires_at_idx ON email_tokens (expires_at);

-- Mail waiting to be sent, written in the transaction of what caused it, so that mail is never
-- lost and nothing waits for the mail server. Workers claim due rows with FOR UPDATE SKIP LOCKED
-- and a lease (next_attempt_at moves past the lease, claim_id names the claimant); a claimant
-- that dies leaves the row due again when the lease ends. The body is rendered at send time from
-- `kind`; the only secret, the link's token, is sealed under AUTH_KEY_ENCRYPTION_KEY when that is
-- set and erased once the mail is sent.
CREATE TABLE outbox (
    id              uuid PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('verify_email', 'signup_attempt',
                        'password_reset', 'password_reset_done')),
    recipient       text NOT NULL,
    link_token      bytea,
    token_sealed    boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    claim_id        uuid,
    sent_at         timestamptz,
    rejected_at     timestamptz
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE sent_at IS NULL AND rejected_at IS NULL;
CREATE INDEX outbox_created_at_idx ON outbox (created_at);
