"""The engine's emission of condition changes: dedup, inhibition by a severer sibling, flap suppression."""

from __future__ import annotations

from wardwatch.alerting.engine._state import _FAR, EngineStats, _Cond, _Patient
from wardwatch.alerting.events import ConditionChange
from wardwatch.core.schema import News2


class _Emitter:
    """Raises and clears a patient's conditions; the base of :class:`~wardwatch.alerting.engine.Engine`."""

    stats: EngineStats

    def _raise(
        self,
        st: _Patient,
        rule: str,
        t: int,
        value: float | None,
        text: str,
        out: list[ConditionChange],
        *,
        news2: News2 | None = None,
    ) -> None:
        c = st.conds.get(rule)
        if c is None:
            c = st.conds[rule] = _Cond(rule)
        if c.shown:
            c.want = True
            if c.clear_t >= 0:  # re-raised inside the flap window: the same alarm continues
                c.clear_t = -1
                self.stats.flaps_merged += 1
            return
        if not c.want:
            c.want = True
            c.t, c.value, c.text, c.news2 = t, value, text, news2
        conds = st.conds
        for name in c.inhibitors:
            other = conds.get(name)
            if other is not None and (other.shown or t - other.cleared_at < c.holdoff):
                return  # held back; a family member releases it when it clears
        c.shown = True
        out.append(ConditionChange(st.id, st.ward, rule, c.category, c.priority, True, t, value, text, news2))

    def _clear(
        self, st: _Patient, rule: str, t: int, value: float | None, text: str, out: list[ConditionChange]
    ) -> None:
        c = st.conds.get(rule)
        if c is None or not c.want:
            return
        c.want = False
        if not c.shown:
            return
        if t < c.t:  # e.g. backfilled samples older than the silence alarm: a clear never precedes its raise
            t = c.t
        c.clear_t, c.clear_value, c.clear_text = t, value, text
        if st.flap_ms <= 0:
            self._emit_clear(st, c, out)
        elif t + st.flap_ms < st.next_due:
            st.next_due = t + st.flap_ms

    def _emit_clear(self, st: _Patient, c: _Cond, out: list[ConditionChange]) -> None:
        t = c.clear_t
        c.shown = False
        c.clear_t = -1
        c.cleared_at = t
        out.append(
            ConditionChange(st.id, st.ward, c.rule, c.category, c.priority, False, t, c.clear_value, c.clear_text)
        )
        if c.releases is not None:
            lower = st.conds.get(c.releases)
            if lower is not None and lower.want and not lower.shown:
                lower.want = False
                self._raise(st, lower.rule, t, lower.value, lower.text or c.clear_text, out)

    def _due(self, st: _Patient, now: int, out: list[ConditionChange]) -> None:
        flap = st.flap_ms
        nxt = _FAR
        for c in list(st.conds.values()):
            if c.clear_t >= 0:
                if c.clear_t + flap <= now:
                    self._emit_clear(st, c, out)
                elif c.clear_t + flap < nxt:
                    nxt = c.clear_t + flap
        st.next_due = nxt
