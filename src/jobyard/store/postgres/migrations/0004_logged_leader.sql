-- The lease must survive a database crash: an unlogged table is emptied by crash recovery,
-- and a follower would be elected while the old leader still trusted its term.
ALTER TABLE jobyard_leader SET LOGGED;
