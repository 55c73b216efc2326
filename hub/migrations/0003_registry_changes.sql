-- Every change to the registry, written by triggers in the same transaction as the change, so
-- that the running hub applies the effects (events, closed connections, tracker updates) of
-- changes made by anyone: its own HTTP API or the `hub` CLI in another process.
CREATE TABLE registry_changes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL,
    module_id    TEXT,
    user_id      INTEGER,
    owner_before INTEGER,
    owner_after  INTEGER,
    at           INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE TRIGGER module_added AFTER INSERT ON modules BEGIN
    INSERT INTO registry_changes (kind, module_id, owner_after)
    VALUES ('module_added', NEW.id, NEW.owner_id);
END;

CREATE TRIGGER module_updated AFTER UPDATE OF name, type, owner_id, heartbeat_timeout_ms ON modules
WHEN OLD.name IS NOT NEW.name OR OLD.type IS NOT NEW.type OR OLD.owner_id IS NOT NEW.owner_id
     OR OLD.heartbeat_timeout_ms IS NOT NEW.heartbeat_timeout_ms
BEGIN
    INSERT INTO registry_changes (kind, module_id, owner_before, owner_after)
    VALUES ('module_updated', NEW.id, OLD.owner_id, NEW.owner_id);
END;

CREATE TRIGGER module_token AFTER UPDATE OF token_hash ON modules
WHEN OLD.token_hash IS NOT NEW.token_hash
BEGIN
    INSERT INTO registry_changes (kind, module_id) VALUES ('module_token', NEW.id);
END;

CREATE TRIGGER module_removed AFTER DELETE ON modules BEGIN
    INSERT INTO registry_changes (kind, module_id, owner_before)
    VALUES ('module_removed', OLD.id, OLD.owner_id);
END;

CREATE TRIGGER user_profile AFTER UPDATE OF name, email ON users
WHEN OLD.name IS NOT NEW.name OR OLD.email IS NOT NEW.email
BEGIN
    INSERT INTO registry_changes (kind, user_id) VALUES ('user_profile', NEW.id);
END;

CREATE TRIGGER user_access AFTER UPDATE OF disabled, is_admin ON users
WHEN OLD.disabled IS NOT NEW.disabled OR OLD.is_admin IS NOT NEW.is_admin
BEGIN
    INSERT INTO registry_changes (kind, user_id) VALUES ('user_access', NEW.id);
END;

CREATE TRIGGER user_deleted AFTER DELETE ON users BEGIN
    INSERT INTO registry_changes (kind, user_id) VALUES ('user_deleted', OLD.id);
END;
