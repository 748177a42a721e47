"""The streaming clinical alarm engine: pure decision logic from samples to :class:`ConditionChange` events.

Public surface: :class:`Engine` (live and replay), :class:`EngineStats`, :class:`NaiveEngine` (the
fixed-threshold baseline used for comparison), :data:`RULES` (rule names, categories, priorities)
and the NEWS2 scoring helpers in :mod:`wardwatch.alerting.engine.news2`.

Inside (one class, split by responsibility): ``_engine`` (:class:`Engine`: configuration, input, time,
queries), ``_heart`` (pulse source, beats, asystole), ``_vital_rules`` (the rules on accepted samples,
NEWS2, spot checks, battery, sensor-off / poor-signal timers), ``_emit`` (dedup, inhibition, flap),
``_state`` (the rule table, constants and per-patient state), ``_rules`` and ``_filters`` (the
threshold state machines and the artefact filters).
"""

from wardwatch.alerting.engine._engine import RULES, Engine, EngineStats
from wardwatch.alerting.engine.naive import NaiveEngine

__all__ = ["RULES", "Engine", "EngineStats", "NaiveEngine"]
