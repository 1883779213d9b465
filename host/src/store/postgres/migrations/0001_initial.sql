-- The store's records, one table each. Ids and names sort by byte
-- (COLLATE "C"), as sled's keys do: listings page by id, and ids are
-- time-ordered.

CREATE TABLE itsm.tickets (
    id           text COLLATE "C" PRIMARY KEY,
    -- The summary a listing shows, kept beside the whole ticket.
    workflow     text COLLATE "C" NOT NULL,
    subject      text COLLATE "C" NOT NULL,
    state        text COLLATE "C" NOT NULL,
    requested_by text NOT NULL,
    batch        text COLLATE "C",
    created_ms   bigint NOT NULL,
    updated_ms   bigint NOT NULL,
    in_flight    boolean NOT NULL,
    -- The ticket, sealed JSON (CRC-32 first).
    body         bytea NOT NULL
);
CREATE INDEX tickets_by_workflow ON itsm.tickets (workflow, id);
CREATE INDEX tickets_by_subject ON itsm.tickets (subject, id);
CREATE INDEX tickets_by_batch ON itsm.tickets (batch, id) WHERE batch IS NOT NULL;
CREATE INDEX tickets_by_state ON itsm.tickets (state, id);
CREATE INDEX tickets_by_created ON itsm.tickets (created_ms, id);
CREATE INDEX tickets_in_flight ON itsm.tickets (id) WHERE in_flight;

-- Audit events: appended, never rewritten (a second event at one seq is
-- refused by the key).
CREATE TABLE itsm.events (
    ticket_id text COLLATE "C" NOT NULL,
    seq       bigint NOT NULL,
    body      bytea NOT NULL,
    PRIMARY KEY (ticket_id, seq)
);

CREATE TABLE itsm.workflows (
    name text COLLATE "C" NOT NULL,
    hash text COLLATE "C" NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (name, hash)
);

CREATE TABLE itsm.idempotency (
    key       text COLLATE "C" PRIMARY KEY,
    ticket_id text NOT NULL
);

CREATE TABLE itsm.plugin_kv (
    plugin text COLLATE "C" NOT NULL,
    key    text COLLATE "C" NOT NULL,
    value  bytea NOT NULL,
    PRIMARY KEY (plugin, key)
);
