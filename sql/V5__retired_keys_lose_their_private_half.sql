-- A retired signing key keeps its public half (tokens it signed may be checked until they expire)
-- but its private half is wiped, so an old backup cannot mint tokens with it.
ALTER TABLE signing_keys ALTER COLUMN private_key DROP NOT NULL;
