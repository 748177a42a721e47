"""The streaming clinical alarm engine: pure decision logic from samples to :class:`ConditionChange` events.

Public surface: :class:`Engine` (live and replay), :class:`EngineStats`, :class:`NaiveEngine` (the
fixed-threshold baseline used for comparison), :data:`RULES` (rule names, categories, priorities)
and the NEWS2 scoring helpers in :mod:`wardwatch.alerting.engine.news2`.
"""

from wardwatch.alerting.engine._engine import RULES, Engine, EngineStats
from wardwatch.alerting.engine.naive import NaiveEngine

__all__ = ["RULES", "Engine", "EngineStats", "NaiveEngine"]
