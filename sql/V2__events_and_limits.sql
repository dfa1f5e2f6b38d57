-- Security events shown to the account's owner, and the counters behind brute-force back-off and
-- per-IP limits. Counters live here, not in memory, so that they hold across every instance.

CREATE TABLE security_events (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type       text NOT NULL CHECK (type IN ('registered', 'login_succeeded', 'login_failed',
                   'refreshed_reuse_detected', 'logged_out', 'session_revoked', 'password_changed')),
    at         timestamptz NOT NULL,
    ip         text,
    user_agent text
);
CREATE INDEX security_events_user_at_idx ON security_events (user_id, at DESC);

-- Consecutive failed logins per email, known or not. The email is kept only as a SHA-256 hash:
-- attempted addresses of strangers are nobody's business.
CREATE TABLE login_failures (
    email_hash      bytea PRIMARY KEY CHECK (octet_length(email_hash) = 32),
    failures        integer NOT NULL,
    last_attempt_at timestamptz NOT NULL
);
CREATE INDEX login_failures_last_attempt_idx ON login_failures (last_attempt_at);

-- GCRA rate limits: `tat` is the theoretical arrival time of the next request; a row whose tat
-- has passed carries no information and may be deleted at any time.
CREATE TABLE rate_limits (
    bucket text PRIMARY KEY,
    tat    timestamptz NOT NULL
);
CREATE INDEX rate_limits_tat_idx ON rate_limits (tat);
