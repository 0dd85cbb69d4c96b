"""The operator API: authenticated, role-checked commands and the read side, over HTTP (FastAPI)."""
