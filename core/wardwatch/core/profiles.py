"""The GATT profile table: one declaration per wearable type, iterated by every part.

A :class:`Profile` names the service a device advertises, the characteristics to subscribe to
(notify / indicate) or read once, each with its codec (bytes <-> value, both directions, from
:mod:`wardwatch.core.gatt`), and how a decoded value becomes samples (:class:`Measurement`: the
signal, value, quality and, when the device sent one, its own timestamp). The gateway's sessions
and decoder, the simulator's devices and the wire-format checks iterate :data:`PROFILES`; adding a
wearable is a codec module plus one entry here (and its :class:`~wardwatch.core.schema.Signal`
members with units and valid ranges).

Device clocks: a :class:`Measurement` carries the device's naive local timestamp, if any;
:class:`DeviceClock` decides (for every profile alike) whether to believe it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

from wardwatch.core import gatt
from wardwatch.core.gatt.blood_pressure import (
    BloodPressureMeasurement,
    BloodPressureStatus,
    decode_blood_pressure_feature,
    decode_blood_pressure_measurement,
    decode_intermediate_cuff_pressure,
    encode_blood_pressure_feature,
    encode_blood_pressure_measurement,
    encode_intermediate_cuff_pressure,
)
from wardwatch.core.gatt.current_time import CurrentTime, decode_current_time, encode_current_time
from wardwatch.core.gatt.thermometer import (
    TemperatureMeasurement,
    decode_intermediate_temperature,
    decode_measurement_interval,
    decode_temperature_measurement,
    decode_temperature_type,
    encode_intermediate_temperature,
    encode_measurement_interval,
    encode_temperature_measurement,
    encode_temperature_type,
)
from wardwatch.core.quality import ordered, plx_quality
from wardwatch.core.schema import AbsentReason, DeviceRole, Quality, Signal

__all__ = [
    "BATTERY",
    "CODECS",
    "CURRENT_TIME",
    "CURRENT_TIME_SERVICE",
    "PROFILES",
    "SIGNAL_ROLES",
    "Access",
    "DeviceClock",
    "Measurement",
    "Point",
    "Profile",
    "ProfileCharacteristic",
    "blood_pressure_quality",
    "codec",
    "profile_for_role",
    "profile_for_service",
]

V = TypeVar("V")


class Access(enum.Enum):
    """How the gateway gets a characteristic's values."""

    NOTIFY = "notify"
    INDICATE = "indicate"  # acknowledged: the device keeps the value until the central confirms
    READ_ONCE = "read"  # read after connecting (features, configuration)


@dataclass(frozen=True, slots=True)
class Point:
    """One sample a decoded value yields; ``before_ms`` back-dates it from the measurement time."""

    signal: Signal
    value: float | None
    quality: tuple[Quality, ...] = ()
    absent: AbsentReason | None = None
    before_ms: int = 0


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one decoded value means: samples, and the device's own (naive, local) time if it sent one."""

    points: tuple[Point, ...]
    device_time: datetime | None = None
    device_clock_unset: bool = False  # the device says its clock is not set


@dataclass(frozen=True, slots=True)
class ProfileCharacteristic(Generic[V]):
    """One characteristic of a profile: codec, access and (for measurements) value -> samples."""

    codec: gatt.Characteristic[V]
    access: Access
    samples: Callable[[V], Measurement] | None = None  # None: no samples (features, intermediate values)

    @property
    def uuid16(self) -> int:
        """The 16-bit UUID."""
        return self.codec.uuid16

    @property
    def subscribed(self) -> bool:
        """The gateway subscribes: notified or indicated, and it yields samples."""
        return self.access != Access.READ_ONCE and self.samples is not None


@dataclass(frozen=True, slots=True)
class Profile:
    """One wearable type: the service it advertises and the characteristics the gateway uses."""

    name: str
    role: DeviceRole
    service: int
    characteristics: tuple[ProfileCharacteristic[Any], ...]
    signals: tuple[Signal, ...]
    # Spot-check device: wakes when the patient takes a reading, advertises, delivers its stored and
    # new measurements, sleeps. The gateway connects on sight and lets it go once it falls quiet.
    spot_check: bool = False
    record_access: bool = False  # stored records are fetched through RACP (0x2A52) after a reconnect
    by_uuid: Mapping[int, ProfileCharacteristic[Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_uuid", MappingProxyType({c.uuid16: c for c in self.characteristics}))


# --- value -> samples ------------------------------------------------------------------------------

_ABSENT: Final = {reason.value: AbsentReason(reason.value) for reason in gatt.AbsentReason}


def _med(signal: Signal, value: gatt.MedFloat, quality: tuple[Quality, ...]) -> Point:
    absent = None if value.absent_reason is None else _ABSENT[value.absent_reason.value]
    return Point(signal, value.value, quality, absent)


def _heart_rate(m: gatt.HeartRateMeasurement) -> Measurement:
    if m.sensor_contact is False:
        # No skin contact: whatever number the strap sends (often 0) is no heart rate.
        quality: tuple[Quality, ...] = (Quality.CONTACT_LOST,)
        points = [Point(Signal.HEART_RATE, None, quality, AbsentReason.UNAVAILABLE)]
    else:
        quality = ()
        points = [Point(Signal.HEART_RATE, float(m.heart_rate))]
    if m.energy_expended is not None:
        points.append(Point(Signal.ENERGY_EXPENDED, float(m.energy_expended)))
    if m.rr_ticks:
        # Beat times back-dated from reception: the last beat now, each earlier one an interval before.
        beats = []
        before = 0
        for ticks in reversed(m.rr_ticks):
            beats.append(Point(Signal.RR_INTERVAL, ticks / 1024, quality, None, before))
            before += round(ticks * 1000 / 1024)
        points.extend(reversed(beats))
    return Measurement(tuple(points))


def _plx(
    spo2: gatt.MedFloat, pulse_rate: gatt.MedFloat, pai: gatt.MedFloat | None, quality: tuple[Quality, ...]
) -> tuple[Point, ...]:
    points = [_med(Signal.SPO2, spo2, quality), _med(Signal.PULSE_RATE, pulse_rate, quality)]
    if pai is not None:
        points.append(_med(Signal.PERFUSION_INDEX, pai, quality))
    return tuple(points)


def _plx_continuous(m: gatt.PlxContinuousMeasurement) -> Measurement:
    quality = plx_quality(m.measurement_status, m.device_sensor_status)
    return Measurement(_plx(m.spo2, m.pulse_rate, m.pulse_amplitude_index, quality))


def _plx_spot_check(m: gatt.PlxSpotCheckMeasurement) -> Measurement:
    quality = plx_quality(m.measurement_status, m.device_sensor_status)
    return Measurement(
        _plx(m.spo2, m.pulse_rate, m.pulse_amplitude_index, quality), m.timestamp, m.device_clock_not_set
    )


_BP_QUALITY: Final = (
    (BloodPressureStatus.body_movement, Quality.BODY_MOVEMENT),
    (BloodPressureStatus.cuff_too_loose, Quality.CUFF_LOOSE),
    (BloodPressureStatus.irregular_pulse, Quality.IRREGULAR_PULSE),
    (BloodPressureStatus.improper_position, Quality.IMPROPER_POSITION),
)


def blood_pressure_quality(status: BloodPressureStatus | None) -> tuple[Quality, ...]:
    """Quality flags from the Blood Pressure Measurement status bits."""
    if not status:
        return ()
    return ordered(q for bit, q in _BP_QUALITY if status & bit)


def _blood_pressure(m: BloodPressureMeasurement) -> Measurement:
    quality = blood_pressure_quality(m.status)
    points = []
    for signal, value in (
        (Signal.SYSTOLIC_BP, m.systolic),
        (Signal.DIASTOLIC_BP, m.diastolic),
        (Signal.MEAN_ARTERIAL_PRESSURE, m.mean_arterial_pressure),
    ):
        point = _med(signal, value, quality)
        if point.value is not None:
            point = Point(signal, round(m.in_mmhg(value) or 0.0, 1), quality)
        points.append(point)
    return Measurement(tuple(points), m.timestamp)


def _temperature(m: TemperatureMeasurement) -> Measurement:
    point = _med(Signal.BODY_TEMPERATURE, m.temperature, ())
    if point.value is not None:
        point = Point(Signal.BODY_TEMPERATURE, round(m.celsius or 0.0, 2))
    return Measurement((point,), m.timestamp)


# --- the table -------------------------------------------------------------------------------------


def _known(uuid16: int) -> gatt.Characteristic[Any]:
    return gatt.CHARACTERISTICS[uuid16]


def _char(
    uuid16: int, name: str, decode: Callable[[gatt.BytesLike], V], encode: Callable[[V], bytes]
) -> gatt.Characteristic[V]:
    return gatt.Characteristic(uuid16, name, decode, encode)


BATTERY: Final = ProfileCharacteristic(_known(gatt.BATTERY_LEVEL), Access.NOTIFY)
"""Battery Level: read once and notified by every wearable; remembered for the status, not sampled."""

CURRENT_TIME_SERVICE: Final = 0x1805
CURRENT_TIME: Final = _char(0x2A2B, "Current Time", decode_current_time, encode_current_time)
"""Current Time: the gateway writes it on connect when a device offers it writable (its clock is then set)."""

HEART_RATE_STRAP = Profile(
    "heart rate strap",
    DeviceRole.HEART_RATE_STRAP,
    gatt.HEART_RATE_SERVICE,
    (
        ProfileCharacteristic(_known(gatt.HEART_RATE_MEASUREMENT), Access.NOTIFY, _heart_rate),
        ProfileCharacteristic(_known(gatt.BODY_SENSOR_LOCATION), Access.READ_ONCE),
    ),
    (Signal.HEART_RATE, Signal.RR_INTERVAL, Signal.ENERGY_EXPENDED),
)
PULSE_OXIMETER = Profile(
    "pulse oximeter",
    DeviceRole.PULSE_OXIMETER,
    gatt.PULSE_OXIMETER_SERVICE,
    (
        ProfileCharacteristic(_known(gatt.PLX_SPOT_CHECK_MEASUREMENT), Access.INDICATE, _plx_spot_check),
        ProfileCharacteristic(_known(gatt.PLX_CONTINUOUS_MEASUREMENT), Access.NOTIFY, _plx_continuous),
        ProfileCharacteristic(_known(gatt.PLX_FEATURES), Access.READ_ONCE),
    ),
    (Signal.SPO2, Signal.PULSE_RATE, Signal.PERFUSION_INDEX),
    record_access=True,
)
BLOOD_PRESSURE_CUFF = Profile(
    "blood pressure cuff",
    DeviceRole.BLOOD_PRESSURE_CUFF,
    0x1810,
    (
        ProfileCharacteristic(
            _char(
                0x2A35,
                "Blood Pressure Measurement",
                decode_blood_pressure_measurement,
                encode_blood_pressure_measurement,
            ),
            Access.INDICATE,
            _blood_pressure,
        ),
        ProfileCharacteristic(
            _char(
                0x2A36,
                "Intermediate Cuff Pressure",
                decode_intermediate_cuff_pressure,
                encode_intermediate_cuff_pressure,
            ),
            Access.NOTIFY,
        ),
        ProfileCharacteristic(
            _char(0x2A49, "Blood Pressure Feature", decode_blood_pressure_feature, encode_blood_pressure_feature),
            Access.READ_ONCE,
        ),
    ),
    (Signal.SYSTOLIC_BP, Signal.DIASTOLIC_BP, Signal.MEAN_ARTERIAL_PRESSURE),
    spot_check=True,
)
THERMOMETER = Profile(
    "thermometer",
    DeviceRole.THERMOMETER,
    0x1809,
    (
        ProfileCharacteristic(
            _char(0x2A1C, "Temperature Measurement", decode_temperature_measurement, encode_temperature_measurement),
            Access.INDICATE,
            _temperature,
        ),
        ProfileCharacteristic(
            _char(0x2A1D, "Temperature Type", decode_temperature_type, encode_temperature_type), Access.READ_ONCE
        ),
        ProfileCharacteristic(
            _char(0x2A1E, "Intermediate Temperature", decode_intermediate_temperature, encode_intermediate_temperature),
            Access.NOTIFY,
        ),
        ProfileCharacteristic(
            _char(0x2A21, "Measurement Interval", decode_measurement_interval, encode_measurement_interval),
            Access.READ_ONCE,
        ),
    ),
    (Signal.BODY_TEMPERATURE,),
    spot_check=True,
)

PROFILES: Final[tuple[Profile, ...]] = (HEART_RATE_STRAP, PULSE_OXIMETER, BLOOD_PRESSURE_CUFF, THERMOMETER)
"""Every wearable type wardwatch supports."""

CODECS: Final[Mapping[int, gatt.Characteristic[Any]]] = MappingProxyType(
    {
        **gatt.CHARACTERISTICS,
        **{c.uuid16: c.codec for p in PROFILES for c in p.characteristics},
        CURRENT_TIME.uuid16: CURRENT_TIME,
    }
)
"""Every characteristic with a codec, by 16-bit UUID (the core registry plus the profiles' own)."""

SIGNAL_ROLES: Final[Mapping[Signal, DeviceRole]] = MappingProxyType(
    {signal: p.role for p in PROFILES for signal in p.signals}
)
"""Which kind of device measures each sampled signal."""

_BY_ROLE: Final = {p.role: p for p in PROFILES}
_BY_SERVICE: Final = {p.service: p for p in PROFILES}


def profile_for_role(role: DeviceRole) -> Profile:
    """The profile of a bound device's role."""
    return _BY_ROLE[role]


def profile_for_service(uuid16: int) -> Profile | None:
    """The profile whose service is ``uuid16``, if any."""
    return _BY_SERVICE.get(uuid16)


def codec(uuid: str | int) -> gatt.Characteristic[Any]:
    """The codec of any supported characteristic; :class:`gatt.UnknownCharacteristicError` if none."""
    uuid16 = gatt.parse_uuid16(uuid)
    found = CODECS.get(uuid16)
    if found is None:
        raise gatt.UnknownCharacteristicError(str(uuid), f"no codec for characteristic 0x{uuid16:04X}")
    return found


# --- device clocks ---------------------------------------------------------------------------------

# A device clock outside this window is not believed (unset clocks often start in 2000 or 1970).
EARLIEST_DEVICE_TIME_MS: Final = 1_577_836_800_000  # 2020-01-01
# Nor one ahead of the gateway's by more than this: a reading cannot be taken after it arrived. A clock
# minutes or hours fast (drift, a wrong zone, the simulator's compressed time) would stamp a reading in
# the future, and downstream every later reading of that device and signal would look older than it.
DEVICE_CLOCK_FUTURE_SLACK_MS: Final = 2_000


@dataclass(frozen=True, slots=True)
class DeviceClock:
    """Shared handling of device timestamps for every timestamped profile.

    ``zone`` is the zone device clocks are read in (None: the gateway's local zone).
    """

    zone: tzinfo | None = None

    def now(self, wall_s: float) -> CurrentTime:
        """The Current Time value that sets a device's clock to ``wall_s`` (epoch s) in :attr:`zone`."""
        moment = datetime.fromtimestamp(wall_s, self.zone) if self.zone is not None else datetime.fromtimestamp(wall_s)
        return CurrentTime.of(moment.replace(tzinfo=None))

    def resolve(self, m: Measurement, received_ms: int) -> tuple[int, Quality | None]:
        """The sample time of ``m`` and the clock flag to add (None: gateway time, nothing to say).

        A believable device time (set, after 2020, not in the future beyond a 2 s slack) is used and
        flagged ``device_clock``; an unset clock, or one that is implausible (unset clocks start in
        2000, drifted or wrong-zone clocks run ahead) falls back to reception time, flagged
        ``device_clock_unset``.
        """
        if m.device_clock_unset:
            return received_ms, Quality.DEVICE_CLOCK_UNSET
        if m.device_time is None:
            return received_ms, None
        ts = m.device_time
        local = ts.replace(tzinfo=self.zone) if self.zone is not None else ts.astimezone()
        device_ms = int(local.timestamp() * 1000)
        if EARLIEST_DEVICE_TIME_MS <= device_ms <= received_ms + DEVICE_CLOCK_FUTURE_SLACK_MS:
            return device_ms, Quality.DEVICE_CLOCK
        return received_ms, Quality.DEVICE_CLOCK_UNSET
