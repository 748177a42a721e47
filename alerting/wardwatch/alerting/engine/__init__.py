"""The streaming clinical alarm engine: pure decision logic from samples to :class:`ConditionChange` events.

Public surface: :class:`Engine` (live and replay), :class:`EngineStats`, :class:`NaiveEngine` (the
fixed-threshold baseline used for comparison), :data:`RULES` (rule names, categories, priorities),
:func:`build_source` / :class:`EngineSource` (the service's ward-first ``ConditionSource`` adapter)
and the NEWS2 scoring helpers in :mod:`wardwatch.alerting.engine.news2`.
"""

from wardwatch.alerting.engine._engine import RULES, Engine, EngineStats
from wardwatch.alerting.engine.naive import NaiveEngine
from wardwatch.alerting.engine.source import EngineSource, build_source

__all__ = ["RULES", "Engine", "EngineSource", "EngineStats", "NaiveEngine", "build_source"]
