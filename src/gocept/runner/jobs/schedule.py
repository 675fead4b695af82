"""When a schedule occurs: a cron expression in a time zone, or an interval
of seconds.

A cron expression has five fields (minute, hour, day of month, month, day
of week) or six, the sixth giving the seconds; croniter reads it and finds
the wall-clock times that match.  Turning a wall-clock time into an instant
across a change of daylight saving time follows cron (Vixie cron, cronie):

- A time that the change skips (02:30 when the clock jumps from 02:00 to
  03:00) occurs once, at the change, for a fixed-time expression (one whose
  second, minute and hour fields do not start with ``*``); a wildcard
  expression (``*/15 * * * *``) goes by the clock it finds and has no
  occurrence in the skipped hour.
- A time that the change repeats (02:30 when the clock goes back from 03:00
  to 02:00) occurs once, at its first passing, for a fixed-time
  expression; a wildcard expression occurs at both.

So a job at 02:30 runs once on either day of change.  An interval of N
seconds occurs at every multiple of N seconds since the epoch, in every
time zone alike.
"""

import datetime
import math
import numbers
import zoneinfo

import croniter


class Schedule:
    """The occurrences of `spec`: a cron expression (a string) or an
    interval (a number of seconds above 0), the cron expression in
    `timezone` (a name such as ``'Europe/Berlin'``, a tzinfo, or None for
    the machine's).  Raises ValueError naming what is wrong with either.
    """

    def __init__(self, spec, timezone=None):
        self.spec = spec
        self.interval = self.expression = None
        if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
            if not (math.isfinite(spec) and spec > 0):
                raise ValueError(
                    f'An interval schedule is a number of seconds above 0,'
                    f' not {spec!r}')
            self.interval = float(spec)
        elif isinstance(spec, str):
            self.expression = ' '.join(spec.split())
            fields = self.expression.split(' ')
            if len(fields) not in (5, 6):
                raise ValueError(
                    f'{spec!r} is not a cron expression: it has five fields'
                    ' (minute hour day month weekday), or six with the'
                    ' seconds last')
            try:
                croniter.croniter(self.expression)
            except (croniter.CroniterError, ValueError) as e:
                raise ValueError(
                    f'{spec!r} is not a cron expression: {e}') from None
            # Second (the sixth field, if any), minute and hour.
            self.wildcard = any(
                field.startswith('*') for field in fields[:2] + fields[5:])
        else:
            raise ValueError(
                f'A schedule is a cron expression or a number of seconds,'
                f' not {spec!r}')
        self.timezone = _zone(timezone)
        try:
            self.after(0)
        except croniter.CroniterError:
            raise ValueError(
                f'The cron expression {spec!r} never occurs') from None

    def __str__(self):
        if self.interval is not None:
            return f'every {self.interval:g} seconds'
        return self.expression

    def __repr__(self):
        return f'<Schedule {self}>'

    def after(self, instant):
        """The first occurrence after `instant` (seconds since the epoch).
        """
        return next(self.occurrences(instant))

    def between(self, start, end, limit):
        """The occurrences after `start` up to `end`, in order: at most
        `limit` of them, and whether there are more."""
        found = []
        for instant in self.occurrences(start):
            if instant > end:
                return found, False
            if len(found) == limit:
                return found, True
            found.append(instant)

    def occurrences(self, instant):
        """The occurrences after `instant`, in order, for ever."""
        if self.interval is not None:
            number = math.floor(instant / self.interval) + 1
            while True:
                yield number * self.interval
                number += 1
        yield from self._cron(instant)

    def _cron(self, instant):
        start = self._wall(instant)
        first, second = self._instants(start.replace(fold=0))
        if second is not None and not start.fold:
            # Times of the repeated hour before `start` occur again after
            # `instant`, at their second passing: from its beginning on.
            start -= datetime.timedelta(seconds=second - first)
        times = croniter.croniter(
            self.expression, start - datetime.timedelta(seconds=1))
        # A wildcard expression's second passings of a repeated hour: they
        # come after its first passings, before the clock goes on.
        repeated = []
        last = instant
        while True:
            wall = times.get_next(datetime.datetime)
            first, second = self._instants(wall)
            if second is None or first is None:
                for passing in repeated:
                    if passing > last:
                        yield passing
                        last = passing
                repeated.clear()
            if second is not None and self.wildcard:
                repeated.append(second)
            if first is not None and first > last:
                yield first
                last = first

    def _instants(self, wall):
        """The instants of the wall-clock time `wall` (naive): its first
        and second passing (None if it passes once), as cron has them."""
        early, late = sorted(
            self._instant(wall.replace(fold=fold)) for fold in (0, 1))
        if early == late:
            return early, None
        if self._wall(early).replace(fold=0) == wall:
            return early, late
        # Skipped by the change: a fixed-time expression occurs at it.
        if self.wildcard:
            return None, None
        while late - early > 1:
            middle = (early + late) // 2
            if self._wall(middle).replace(fold=0) > wall:
                late = middle
            else:
                early = middle
        return late, None

    def _wall(self, instant):
        """The wall-clock time (naive, with its fold) of `instant`."""
        if self.timezone is None:
            return datetime.datetime.fromtimestamp(instant)
        return datetime.datetime.fromtimestamp(
            instant, self.timezone).replace(tzinfo=None)

    def _instant(self, wall):
        if self.timezone is None:
            return wall.timestamp()
        return wall.replace(tzinfo=self.timezone).timestamp()


def _zone(timezone):
    if timezone is None or isinstance(timezone, datetime.tzinfo):
        return timezone
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f'Unknown time zone {timezone!r}') from None
