-- A disabled module keeps its registration but may not connect.
ALTER TABLE modules ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER module_access AFTER UPDATE OF disabled ON modules
WHEN OLD.disabled IS NOT NEW.disabled
BEGIN
    INSERT INTO registry_changes (kind, module_id) VALUES ('module_access', NEW.id);
END;
