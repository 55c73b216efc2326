-- Each module's last known state, written in batches (one transaction a second) by the state
-- writer, read at startup so the hub shows modules with their last readings, marked stale,
-- before they report again. Removing a module removes its state.
CREATE TABLE module_state (
    module_id    TEXT   COLLATE "C" PRIMARY KEY REFERENCES modules(id) ON DELETE CASCADE,
    readings     TEXT   NOT NULL, -- JSON [[name, value], ...] in first-seen order
    rev          BIGINT NOT NULL,
    last_seen_ms BIGINT,          -- Unix milliseconds
    fw           TEXT,
    heartbeat_ms BIGINT,
    updated_at   BIGINT NOT NULL  -- Unix seconds of the write
);
