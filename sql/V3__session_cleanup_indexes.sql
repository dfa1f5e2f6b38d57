-- Dead sessions are deleted in small batches by the requests themselves (see store::prune_expired);
-- these indexes keep finding them cheap however large the table grows.
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX sessions_last_used_at_idx ON sessions (last_used_at);
