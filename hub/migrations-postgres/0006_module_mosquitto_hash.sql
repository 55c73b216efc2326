-- The module's token hashed the way Mosquitto's password file wants it (PBKDF2-SHA512, `$7$`),
-- written whenever a token is created or rotated (the plaintext is known only then), so that
-- `hub export mosquitto-acl` can hand an external broker the same credentials. NULL for a
-- token that predates this column: rotate it to export it.
ALTER TABLE modules ADD COLUMN mosquitto_hash TEXT;
