-- Idempotency-Key on login and on what a signed-in session changes (password change, account
-- deletion, ending sessions). A row commits in the same transaction as the request's effect, so
-- it exists exactly when the effect does; a retry finds it and gets the first answer instead of
-- doing the work again. Nothing here is secret or personal: `key_hash` is a SHA-256 of the
-- endpoint, the caller's scope and the key; `fingerprint` an HMAC of the request keyed with the
-- caller's access token (never stored), or, for a login, a hash of the account id. No foreign key:
-- an account deletion's row must outlive the account to answer its retry. Kept a day.
CREATE TABLE idempotent_requests (
    key_hash    bytea PRIMARY KEY CHECK (octet_length(key_hash) = 32),
    fingerprint bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    -- A login's: the session it started.
    session_id  uuid,
    created_at  timestamptz NOT NULL
);
CREATE INDEX idempotent_requests_created_at_idx ON idempotent_requests (created_at);
