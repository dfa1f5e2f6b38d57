-- Idempotency-Key on registration: a retried request whose first answer was lost (the COMMIT
-- landed as the connection died) is answered as the first would have been, instead of 409. Only a
-- hash of the key is kept, with the account it created, for a day; the row commits with the
-- account, so it exists exactly when the account does.
CREATE TABLE idempotency_keys (
    key_hash   bytea PRIMARY KEY CHECK (octet_length(key_hash) = 32),
    endpoint   text NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
