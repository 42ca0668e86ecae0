"""A daily send window: the hours of the day, in one time zone, when a broadcast may send.

The window is read on the wall clock of its zone, so it follows daylight saving time: a
09:00-20:00 window opens at 09:00 local time in summer and in winter. A window whose end
comes before its start crosses midnight (22:00-06:00 is open at night). On a day when the
clocks skip the opening time (02:30 on a spring-forward night), it opens when the clock
has moved past it, at the first instant whose wall time is inside the window."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


class BadZone(ValueError):
    pass


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name` (Africa/Addis_Ababa), or BadZone saying so."""
    if name not in available_timezones():
        raise BadZone(f"“{name}” is not a time zone name such as Africa/Addis_Ababa or Europe/Paris.")
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        raise BadZone(f"The time zone “{name}” is not installed on this server.") from None


@dataclass(frozen=True)
class SendWindow:
    start: time
    end: time
    zone: ZoneInfo

    def __post_init__(self):
        if self.start == self.end:
            raise ValueError("A send window needs different start and end times.")

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def contains(self, moment: datetime) -> bool:
        """Whether `moment` (aware) is inside the window: start included, end excluded."""
        wall = moment.astimezone(self.zone).time().replace(tzinfo=None)
        if self.crosses_midnight:
            return wall >= self.start or wall < self.end
        return self.start <= wall < self.end

    def next_opening(self, moment: datetime) -> datetime:
        """`moment` itself when the window is open then; otherwise the next instant it opens."""
        if self.contains(moment):
            return moment
        today = moment.astimezone(self.zone).date()
        for day in (today + timedelta(days=n) for n in range(3)):
            opening = self._at(day, self.start)
            if opening > moment:
                return opening
        raise AssertionError("a daily window opens within two days")  # pragma: no cover

    def seconds_until_open(self, moment: datetime) -> float:
        return (self.next_opening(moment) - moment).total_seconds()

    def _at(self, day: date, wall: time) -> datetime:
        """`wall` on `day` in the zone, as an instant. A wall time the clocks skip maps past
        the gap (fold=0 reads it with the offset before the change); one they repeat maps
        to its first occurrence."""
        return datetime.combine(day, wall, tzinfo=self.zone).astimezone(UTC)

    def describe(self) -> str:
        """09:00–20:00 Africa/Addis_Ababa"""
        return f"{_hhmm(self.start)}–{_hhmm(self.end)} {self.zone.key}"

    def closed_reason(self, moment: datetime) -> str:
        """What the progress page says while the window is closed."""
        opening = self.next_opening(moment).astimezone(self.zone)
        return f"outside its send window ({self.describe()}); resumes at {opening:%Y-%m-%d %H:%M} {self.zone.key}"


def _hhmm(wall: time) -> str:
    return wall.strftime("%H:%M:%S" if wall.second else "%H:%M")
