"""API keys: issued, listed and revoked by admins (over the API or ``python -m api.keys``)."""
