-- Migration number: 0001
-- The notes table, as the plugin makes it on first use (so either may
-- come first).
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL CHECK (length(text) BETWEEN 1 AND 10000),
    author TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
