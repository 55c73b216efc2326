-- Modules that tried to connect but are not registered: admins see them and may claim them.
-- No secret is kept; claiming creates a fresh token.
CREATE TABLE pending_modules (
    id           TEXT   COLLATE "C" PRIMARY KEY,
    attempts     BIGINT NOT NULL,
    first_seen   BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL,
    last_address TEXT   NOT NULL
);
