-- Housekeeping deletes an outbox row only once it is finished (sent, or refused for good) and a
-- day has passed since; a mail not sent yet stays however old it gets, so that an SMTP outage
-- longer than a day delays mail instead of losing it. This index finds the finished rows.
CREATE INDEX outbox_finished_at_idx ON outbox ((coalesce(sent_at, rejected_at)))
    WHERE sent_at IS NOT NULL OR rejected_at IS NOT NULL;
