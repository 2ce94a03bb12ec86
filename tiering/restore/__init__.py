"""Restores from the archive as jobs: requests, dispatch, the archive protocol, expiry."""
