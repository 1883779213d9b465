-- Several workers on one database: who drives each ticket, under which
-- fencing token, until when; and when a released ticket next wants a tick.
ALTER TABLE itsm.tickets
    ADD COLUMN owner text,
    ADD COLUMN fence bigint NOT NULL DEFAULT 0,
    ADD COLUMN lease_until timestamptz,
    ADD COLUMN wake_ms bigint,
    -- The subject as the duplicate check folds it (trimmed, lower case):
    -- computed by the host, whose case folding is Unicode's.
    ADD COLUMN subject_key text COLLATE "C";
UPDATE itsm.tickets SET subject_key = lower(subject);
ALTER TABLE itsm.tickets ALTER COLUMN subject_key SET NOT NULL;
-- Tickets written before leases: the first worker free looks at each once.
UPDATE itsm.tickets SET wake_ms = 0 WHERE in_flight;

-- Fencing tokens: every lease taken gets the next one.
CREATE SEQUENCE itsm.fences;

-- What a worker looking for work reads: released tickets by wake, leases
-- by expiry (never a scan of every ticket).
CREATE INDEX tickets_due ON itsm.tickets (wake_ms) WHERE in_flight AND owner IS NULL;
CREATE INDEX tickets_leased ON itsm.tickets (lease_until) WHERE in_flight AND owner IS NOT NULL;
CREATE INDEX tickets_open_by_subject ON itsm.tickets (workflow, subject_key) WHERE in_flight;
