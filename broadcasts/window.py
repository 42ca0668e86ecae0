"""A daily send window: the hours of the day, in one time zone, when a broadcast may send.

The window is read on the wall clock of its zone, so it follows daylight saving time: a
09:00-20:00 window opens at 09:00 local time in summer and in winter. A window whose end
comes before its start crosses midnight (22:00-06:00 is open at night). On a day when the
clocks skip the opening time (02:30 on a spring-forward night), it opens as the clocks
change; on a day they repeat it, at its first occurrence."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class BadZone(ValueError):
    pass


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name` (Africa/Addis_Ababa), or BadZone saying so."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadZone(f"“{name}” is not a time zone name such as Africa/Addis_Ababa or Europe/Paris.") from None


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
            opening = self._opening_on(day)
            if opening > moment:
                return opening
        raise AssertionError("a daily window opens within two days")  # pragma: no cover

    def seconds_until_open(self, moment: datetime) -> float:
        return (self.next_opening(moment) - moment).total_seconds()

    def _opening_on(self, day: date) -> datetime:
        """The instant the window opens on `day`. A wall time the clocks repeat opens at its
        first occurrence; one they skip, at the change: read with the offset after the
        change (fold=1) it falls before the change, with the one before it (fold=0) after."""
        before, after = (
            datetime.combine(day, self.start.replace(fold=fold), self.zone).astimezone(UTC) for fold in (1, 0)
        )
        if before >= after:
            return after
        while after - before > timedelta(seconds=1):
            middle = before + (after - before) / 2
            before, after = (before, middle) if self.contains(middle) else (middle, after)
        return after.replace(microsecond=0)

    def describe(self) -> str:
        """09:00–20:00 Africa/Addis_Ababa"""
        return f"{_hhmm(self.start)}–{_hhmm(self.end)} {self.zone.key}"

    def closed_reason(self, moment: datetime) -> str:
        """What the progress page says while the window is closed."""
        opening = self.next_opening(moment).astimezone(self.zone)
        resumes = f"{opening:%Y-%m-%d} {_hhmm(opening.time())} {self.zone.key}"
        return f"outside its send window ({self.describe()}); resumes at {resumes}"


def _hhmm(wall: time) -> str:
    return wall.strftime("%H:%M:%S" if wall.second else "%H:%M")
