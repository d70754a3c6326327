"""The results store: every finished run, keyed by its run key, in any SQLAlchemy database."""
