-- Accounts, sessions with their refresh tokens, and the signing keys every instance shares.
-- Applied by refinery at start-up; never edit once applied: add a new V<n>__ file instead.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Stored lower-cased, so a plain unique constraint makes uniqueness case-insensitive.
    email         text NOT NULL CONSTRAINT users_email_key UNIQUE
                  CONSTRAINT users_email_lower_case CHECK (email = lower(email)),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL
);

CREATE TABLE sessions (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    -- The absolute end; the idle limit is derived from last_used_at.
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    ip           text,
    user_agent   text
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- Only SHA-256 hashes of refresh tokens are stored. A token is live until used; a used token
-- stays (for the reuse grace window and reuse detection) until its session is gone.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
-- Rotation must never leave a session with two usable refresh tokens.
CREATE UNIQUE INDEX refresh_tokens_one_live_per_session ON refresh_tokens (session_id) WHERE used_at IS NULL;

CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    alg         text NOT NULL,
    public_jwk  jsonb NOT NULL,
    -- PKCS#8 DER; when `encrypted`, AES-256-GCM nonce (12 bytes) followed by the ciphertext.
    private_key bytea NOT NULL,
    encrypted   boolean NOT NULL,
    created_at  timestamptz NOT NULL,
    -- Published in the JWKS from created_at; signs from signs_from on.
    signs_from  timestamptz NOT NULL
);
CREATE INDEX signing_keys_signs_from_idx ON signing_keys (signs_from);

-- Secrets the instances share, created by whichever instance needs one first.
CREATE TABLE service_secrets (
    name       text PRIMARY KEY,
    value      bytea NOT NULL,
    encrypted  boolean NOT NULL,
    created_at timestamptz NOT NULL
);
