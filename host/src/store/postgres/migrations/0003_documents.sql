-- Configuration every worker shares (tokens.toml, ...): one versioned text
-- each, written compare-and-set so two writers never lose each other's.
CREATE TABLE itsm.documents (
    name       text COLLATE "C" PRIMARY KEY,
    body       text NOT NULL,
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
