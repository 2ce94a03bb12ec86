"""Policies: the policy file model (:mod:`.model`) and the pure planner (:mod:`.planner`, with
:mod:`.inputs`, :mod:`.criteria`, :mod:`.outcomes`, :mod:`.context`, :mod:`.explain`).

``load_policy(path)`` validates a file; ``plan_moves(datasets, tiers, policy=..., now=...)`` returns a
:class:`Plan` without touching a database, a clock or a file; ``explain(plan, dataset_id)`` is the text of
``tiering why``.
"""

from tiering.lifecycle.criteria import check_policy_against_tiers
from tiering.lifecycle.explain import Decisions, Plan, explain
from tiering.lifecycle.inputs import DatasetFacts, Pin, TierFacts, heat
from tiering.lifecycle.model import Budget, Comparison, Criteria, Policy, Rule, TierPolicy, load_policy, parse_policy
from tiering.lifecycle.outcomes import WATERMARK_RULE, Decision, Move, MoveCause, Outcome, TierProjection
from tiering.lifecycle.planner import plan_moves

__all__ = [
    "WATERMARK_RULE", "Budget", "Comparison", "Criteria", "DatasetFacts", "Decision", "Decisions", "Move",
    "MoveCause", "Outcome", "Pin", "Plan", "Policy", "Rule", "TierFacts", "TierPolicy", "TierProjection",
    "check_policy_against_tiers", "explain", "heat", "load_policy", "parse_policy", "plan_moves",
]
