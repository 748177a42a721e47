"""What stands between the MQTT input and the pure engine: impossible times, and failures per patient.

:class:`TimeGate` keeps samples the engine must not see: stamped before 2020 (a clock never set,
``t = 0``), more than ``future_margin_s`` ahead of the server's clock, or ahead of it by more than
``clock_skew_s`` (the engine drops samples not newer than the newest it has seen, so one sample
stamped ahead would hide every real one after it until the clock caught up). The message is
ignored, counted, and a "device clock wrong" technical alarm is raised for the patient; it clears
when every device of the patient sends sane times again.

:class:`FailureTracker` counts, per (ward, patient), consecutive messages the engine failed on.
After ``failures_before_impaired`` it raises "monitoring impaired" for the patient (its own
priority) and the service turns unhealthy; ``successes_before_recovered`` good messages clear it.
Both raise their alarms through :meth:`AlarmService.technical`, never through the engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from wardwatch.alerting.service import ALL_PATIENTS, DEVICE_CLOCK_WRONG, MONITORING_IMPAIRED, AlarmService
from wardwatch.core.logs import RateLimitedLog
from wardwatch.core.sampletime import EARLIEST_SAMPLE_MS

_log = logging.getLogger(__name__)

PatientKey = tuple[str, str]  # (ward, patient)

_SHOWN_IMPAIRED: Final = 5  # patients named in the health report (the count is always given)
_ANY_DEVICE: Final = "*"  # restored after a restart: which device it was is not known
IMPAIRED_PATIENTS: Final = "impaired-patients"
"""The patient id of the ward's one alarm for impaired patients beyond the first five."""
_ALARMS_PER_WARD: Final = 5  # patient alarms of their own; beyond, one alarm for the ward (no page flood)


class TimeGate:
    """Decides whether a time stamp may reach the engine; raises and clears "device clock wrong"."""

    def __init__(self, service: AlarmService) -> None:
        self._service = service
        guard = service.config.guard
        self._margin_ms = round(guard.future_margin_s * 1000)
        self._skew_ms = round(guard.clock_skew_s * 1000)
        self._priority = guard.clock_wrong_priority
        self._wrong: dict[PatientKey, set[str]] = {}  # devices with a wrong clock, per patient
        self._warn = RateLimitedLog(_log, interval_s=60.0)

    def problem(self, t_min: int, t_max: int, now: int) -> tuple[str, str] | None:
        """``(reason label, text)`` if times in ``[t_min, t_max]`` must not reach the engine, else ``None``."""
        if t_min < EARLIEST_SAMPLE_MS:
            return "epoch", f"time stamp {t_min} is before 2020-01-01 (the device's clock was never set)"
        ahead_ms = t_max - now
        if ahead_ms > self._margin_ms:
            return "future", f"time stamp {t_max} is {ahead_ms / 1000:.0f} s ahead of the server clock"
        if ahead_ms > self._skew_ms:
            return "ahead", (
                f"time stamp {t_max} is {ahead_ms / 1000:.1f} s ahead of the server clock "
                f"(more than {self._skew_ms / 1000:g} s allowed)"
            )
        return None

    def admit(self, ward: str, patient: str, device: str, t_min: int, t_max: int, samples: int) -> bool:
        """Whether a device's message with times ``t_min..t_max`` goes to the engine (the hot path)."""
        now = self._service.clock.now_ms()
        if t_min >= EARLIEST_SAMPLE_MS and t_max - now <= self._skew_ms:
            if self._wrong:
                self._sane_again(ward, patient, device)
            return True
        found = self.problem(t_min, t_max, now)
        if found is None:  # pragma: no cover - the fast path above admits exactly these
            return True
        reason, text = found
        self._service.metrics.samples_ignored.labels(reason=reason).inc(samples)
        self._warn.warning(f"{ward}/{patient}/{device}", "ignored data of %s/%s/%s: %s", ward, patient, device, text)
        key = (ward, patient)
        devices = self._wrong.setdefault(key, set())
        if device not in devices:
            devices.add(device)
            alarm_text = f"device clock wrong: {device}: {text}; its data is not used"
            self._service.technical(ward, patient, DEVICE_CLOCK_WRONG, self._priority, True, alarm_text)
        return False

    def restore(self, ward: str, patient: str) -> None:
        """A "device clock wrong" alarm open before a restart: the patient's next sane message clears it."""
        self._wrong.setdefault((ward, patient), set()).add(_ANY_DEVICE)

    def _sane_again(self, ward: str, patient: str, device: str) -> None:
        key = (ward, patient)
        devices = self._wrong.get(key)
        if devices is None or (device not in devices and _ANY_DEVICE not in devices):
            return
        devices.discard(device)
        devices.discard(_ANY_DEVICE)
        if not devices:
            del self._wrong[key]
            self._service.technical(
                ward, patient, DEVICE_CLOCK_WRONG, self._priority, False, f"device clock of {device} sane again"
            )


@dataclass
class _Failing:
    failures: int = 0  # consecutive
    successes: int = 0  # consecutive, once impaired
    impaired: bool = False
    alarmed: bool = False  # has a patient alarm of its own (else counted in the ward's summary alarm)
    last_error: str = ""
    total: int = field(default=0)


class FailureTracker:
    """Counts consecutive engine failures per (ward, patient); raises and clears "monitoring impaired"."""

    def __init__(self, service: AlarmService) -> None:
        self._service = service
        guard = service.config.guard
        self._threshold = guard.failures_before_impaired
        self._recovery = guard.successes_before_recovered
        self._priority = guard.impaired_priority
        self._failing: dict[PatientKey, _Failing] = {}

    def restore(self, ward: str, patient: str) -> None:
        """A "monitoring impaired" alarm open before a restart: good inputs clear it, failures keep it."""
        if patient == IMPAIRED_PATIENTS:
            return  # rebuilt from the patients' own states as they fail again
        self._failing[(ward, patient)] = _Failing(impaired=True, alarmed=True, last_error="before a restart")
        self._report()

    @property
    def impaired(self) -> list[PatientKey]:
        """Patients whose monitoring is impaired now."""
        return sorted(k for k, f in self._failing.items() if f.impaired)

    def failed(self, ward: str, patient: str, stage: str, exc: BaseException) -> None:
        """The engine raised on this patient's input (``patient`` may be :data:`ALL_PATIENTS`)."""
        self._service.metrics.failures.labels(stage=stage).inc()
        state = self._failing.setdefault((ward, patient), _Failing())
        state.failures += 1
        state.total += 1
        state.successes = 0
        state.last_error = f"{type(exc).__name__}: {exc}"[:200]
        if state.failures == 1 or state.total % 1000 == 0:
            _log.error(
                "the engine failed on input of %s/%s (%s; %d so far)",
                ward,
                patient,
                stage,
                state.total,
                exc_info=exc,
            )
        if not state.impaired and state.failures >= self._threshold:
            state.impaired = True
            alarmed = [k for k, f in self._failing.items() if k[0] == ward and f.alarmed and k[1] != ALL_PATIENTS]
            if patient == ALL_PATIENTS or len(alarmed) < _ALARMS_PER_WARD:
                state.alarmed = True
                who = f"every patient on {ward}" if patient == ALL_PATIENTS else patient
                text = (
                    f"monitoring of {who} impaired: the alarm engine failed on {state.failures} inputs in a row "
                    f"({type(exc).__name__}); alarms may be missed - check the patient directly"
                )
                self._service.technical(ward, patient, MONITORING_IMPAIRED, self._priority, True, text, state.failures)
            else:
                self._ward_summary(ward)
            self._report()

    def succeeded(self, ward: str, patient: str) -> None:
        """The engine handled this patient's input (cheap unless the patient was failing)."""
        if not self._failing:
            return
        key = (ward, patient)
        state = self._failing.get(key)
        if state is None:
            return
        state.failures = 0
        if not state.impaired:
            del self._failing[key]
            return
        state.successes += 1
        if state.successes >= self._recovery:
            del self._failing[key]
            if state.alarmed:
                text = f"monitoring of {patient} restored: {self._recovery} inputs handled without failure"
                self._service.technical(ward, patient, MONITORING_IMPAIRED, self._priority, False, text)
            else:
                self._ward_summary(ward)
            self._report()

    def _ward_summary(self, ward: str) -> None:
        """One alarm for the ward's impaired patients beyond the first few (who have alarms of their own)."""
        others = sorted(p for (w, p), f in self._failing.items() if w == ward and f.impaired and not f.alarmed)
        summary = (ward, IMPAIRED_PATIENTS)
        if others:
            text = (
                f"monitoring of {len(others) + _ALARMS_PER_WARD} patients on {ward} impaired, among them "
                f"{', '.join(others[:_SHOWN_IMPAIRED])}: the alarm engine fails on their data - see /healthz"
            )
            self._service.technical(ward, summary[1], MONITORING_IMPAIRED, self._priority, True, text, len(others))
        else:
            self._service.technical(ward, summary[1], MONITORING_IMPAIRED, self._priority, False, "recovered")

    def _report(self) -> None:
        impaired = self.impaired
        self._service.metrics.patients_impaired.set(len(impaired))
        if not impaired:
            self._service.set_problem("monitoring_impaired", None)
            return
        shown = ", ".join(f"{w}/{p} ({self._failing[(w, p)].last_error})" for w, p in impaired[:_SHOWN_IMPAIRED])
        more = f" and {len(impaired) - _SHOWN_IMPAIRED} more" if len(impaired) > _SHOWN_IMPAIRED else ""
        self._service.set_problem(
            "monitoring_impaired", f"monitoring impaired for {len(impaired)} patient(s): {shown}{more}"
        )
