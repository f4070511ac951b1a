-- A table of an application's own, beside jobyard's.
CREATE TABLE demo_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL);
