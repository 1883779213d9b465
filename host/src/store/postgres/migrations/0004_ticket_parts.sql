-- A ticket kept in parts: `tickets.body` holds the ticket with its steps
-- left out (a row written before this migration still holds them whole,
-- and is read as it is until its next write), each step is a row of
-- `steps` without its attempts, and each attempt, with its log and
-- requests, a row of `attempts`. A transition writes the ticket's row and
-- the parts it changed, so a ticket with many retries costs what one with
-- none does.

CREATE TABLE itsm.steps (
    ticket_id text COLLATE "C" NOT NULL,
    step      text COLLATE "C" NOT NULL,
    body      bytea NOT NULL,
    PRIMARY KEY (ticket_id, step)
);

CREATE TABLE itsm.attempts (
    ticket_id text COLLATE "C" NOT NULL,
    step      text COLLATE "C" NOT NULL,
    n         bigint NOT NULL,
    body      bytea NOT NULL,
    PRIMARY KEY (ticket_id, step, n)
);
