-- The login back-off counts consecutive failed password checks per email and client network, so
-- that a stranger elsewhere cannot lock the owner out, and per email across every network (the
-- row whose network is '*'), which backs off only after a much larger number. A failure is
-- charged after the check, so a refused (overloaded) or a correct attempt never counts.
-- login_failures stays (unused) for now: instances of the previous release keep answering while
-- a rolling deploy replaces them, and a rollback finds the table it reads. A later migration
-- drops it.

CREATE TABLE password_failures (
    email_hash      bytea NOT NULL CHECK (octet_length(email_hash) = 32),
    network         text NOT NULL CHECK (length(network) <= 64),
    failures        integer NOT NULL,
    last_failure_at timestamptz NOT NULL,
    PRIMARY KEY (email_hash, network)
);
CREATE INDEX password_failures_last_failure_idx ON password_failures (last_failure_at);
