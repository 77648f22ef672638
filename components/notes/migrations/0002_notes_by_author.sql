-- Migration number: 0002
-- An author's notes, newest first, without a scan of the table.
CREATE INDEX IF NOT EXISTS notes_by_author ON notes (author, id);
