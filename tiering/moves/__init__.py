"""Moves of whole datasets between tiers: copy, verify, commit, then delete the source."""
