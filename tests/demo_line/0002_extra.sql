ALTER TABLE demo_notes ADD COLUMN extra TEXT;
