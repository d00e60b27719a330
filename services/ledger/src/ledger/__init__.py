"""The loyalty points ledger service."""
