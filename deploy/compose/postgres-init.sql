-- Run once by the postgres image, when it initialises an empty data volume, as
-- POSTGRES_USER connected to POSTGRES_DB (the ledger's database). The rules service and
-- the notifier each have a database of their own; their migrations create the tables.
CREATE DATABASE loyalty_rules;
CREATE DATABASE loyalty_notifier;
