-- A disabled module keeps its registration but may not connect.
ALTER TABLE modules ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;

CREATE FUNCTION module_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM registry_change('module_access', NEW.id, NULL, NULL, NULL);
    RETURN NULL;
END;
$$;
CREATE TRIGGER module_access AFTER UPDATE OF disabled ON modules
FOR EACH ROW WHEN (OLD.disabled IS DISTINCT FROM NEW.disabled)
EXECUTE FUNCTION module_access();
