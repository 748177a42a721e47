"""Device status bits → wire quality flags: one mapping shared by the gateway and the simulator."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from wardwatch.core import gatt
from wardwatch.core.schema import Quality

__all__ = ["ordered", "plx_quality"]

_MS = gatt.MeasurementStatus
_DSS = gatt.DeviceSensorStatus

_MS_QUALITY: Final = (
    (_MS.early_estimated_data, Quality.EARLY_ESTIMATE),
    (_MS.data_from_measurement_storage, Quality.FROM_STORAGE),
    (_MS.data_for_demonstration, Quality.TEST_DATA),
    (_MS.data_for_testing, Quality.TEST_DATA),
    (_MS.calibration_ongoing, Quality.QUESTIONABLE),
    (_MS.measurement_unavailable, Quality.UNAVAILABLE),
    (_MS.questionable_measurement_detected, Quality.QUESTIONABLE),
    (_MS.invalid_measurement_detected, Quality.INVALID),
)
_DSS_QUALITY: Final = (
    (_DSS.equipment_malfunction_detected, Quality.SENSOR_FAULT),
    (_DSS.signal_processing_irregularity_detected, Quality.POOR_SIGNAL),
    (_DSS.inadequate_signal_detected, Quality.POOR_SIGNAL),
    (_DSS.poor_signal_detected, Quality.POOR_SIGNAL),
    (_DSS.low_perfusion_detected, Quality.LOW_PERFUSION),
    (_DSS.erratic_signal_detected, Quality.POOR_SIGNAL),
    (_DSS.nonpulsatile_signal_detected, Quality.POOR_SIGNAL),
    (_DSS.questionable_pulse_detected, Quality.QUESTIONABLE),
    (_DSS.sensor_interference_detected, Quality.POOR_SIGNAL),
    (_DSS.sensor_unconnected_to_user, Quality.SENSOR_UNCONNECTED),
    (_DSS.unknown_sensor_connected, Quality.SENSOR_FAULT),
    (_DSS.sensor_displaced, Quality.SENSOR_DISPLACED),
    (_DSS.sensor_malfunctioning, Quality.SENSOR_FAULT),
    (_DSS.sensor_disconnected, Quality.SENSOR_FAULT),
)
_QUALITY_ORDER: Final = {q: i for i, q in enumerate(Quality)}


def plx_quality(measurement: int | None, device_sensor: int | None) -> tuple[Quality, ...]:
    """Quality flags from PLX measurement status and device-and-sensor status bits (sorted, unique)."""
    found: set[Quality] = set()
    if measurement:
        found.update(q for bit, q in _MS_QUALITY if measurement & bit)
    if device_sensor:
        found.update(q for bit, q in _DSS_QUALITY if device_sensor & bit)
    return ordered(found)


def ordered(flags: Iterable[Quality]) -> tuple[Quality, ...]:
    """Flags without repeats, in :class:`Quality` order (so equal flag sets compare equal on the wire)."""
    return tuple(sorted(set(flags), key=_QUALITY_ORDER.__getitem__))
