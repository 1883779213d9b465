-- The completeness witness: each ticket's trail head (event count and
-- last hash) as its latest acknowledged commit left it, written in that
-- commit's transaction. Every worker, and `itsm store check`, compares the
-- tickets with it, so a ticket deleted behind the workers' backs, or a
-- table restored apart from the others, is named rather than missed.
-- Rows for the tickets already stored are added by the migration itself
-- (`witness::seed`), in the same transaction.

CREATE TABLE itsm.witness (
    ticket_id text COLLATE "C" PRIMARY KEY,
    len       bigint NOT NULL,
    hash      text NOT NULL
);
