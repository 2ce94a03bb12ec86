"""Policies: the policy file model (:mod:`.model`) and the pure planner (:mod:`.planner`)."""
