-- Nothing to do on SQLite (every table is logged); kept so both stores share version numbers.
SELECT 1;
