-- Each module's last known state, written in batches (one transaction a second) by the state
-- writer, read at startup so the hub shows modules with their last readings, marked stale,
-- before they report again. Removing a module removes its state.
CREATE TABLE module_state (
    module_id    TEXT    PRIMARY KEY REFERENCES modules(id) ON DELETE CASCADE,
    readings     TEXT    NOT NULL, -- JSON [[name, value], ...] in first-seen order
    rev          INTEGER NOT NULL,
    last_seen_ms INTEGER,          -- Unix milliseconds
    fw           TEXT,
    heartbeat_ms INTEGER,
    updated_at   INTEGER NOT NULL  -- Unix seconds of the write
) WITHOUT ROWID;
