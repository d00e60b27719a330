"""Shared code for the loyalty services. Never runs by itself."""
