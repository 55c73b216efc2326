-- Users of the dashboard. Passwords are argon2 PHC strings.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    name          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

-- The module registry. Module tokens are random 192-bit secrets, stored as SHA-256 hex.
CREATE TABLE modules (
    id                   TEXT    PRIMARY KEY,
    name                 TEXT    NOT NULL,
    type                 TEXT    NOT NULL DEFAULT 'station',
    owner_id             INTEGER REFERENCES users(id) ON DELETE SET NULL,
    token_hash           TEXT    NOT NULL,
    heartbeat_timeout_ms INTEGER,
    created_at           INTEGER NOT NULL
);
CREATE INDEX modules_owner ON modules(owner_id);

-- Login sessions. The cookie carries a random token; only its SHA-256 is stored.
CREATE TABLE sessions (
    token_hash   TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
