"""Pieces every process shares: settings, logging, database and broker connections."""
