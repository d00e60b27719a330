"""The rules service: tier status, campaigns and reward triggers, fed by the ledger topic."""
