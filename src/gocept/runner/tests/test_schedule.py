"""When schedules occur: cron expressions in a time zone across changes of
daylight saving time, intervals, and what is no schedule (a test clock:
instants given, nothing waited for)."""

import datetime
import unittest
import zoneinfo

from gocept.runner.jobs import periodic
from gocept.runner.jobs.schedule import Schedule


BERLIN = zoneinfo.ZoneInfo('Europe/Berlin')


def instant(*wall, fold=0):
    """The instant of a wall-clock time in Berlin."""
    return datetime.datetime(*wall, tzinfo=BERLIN, fold=fold).timestamp()


def walls(instants):
    """The instants as Berlin's wall clock with its offset."""
    return [datetime.datetime.fromtimestamp(t, BERLIN).strftime(
        '%m-%d %H:%M%z') for t in instants]


class CronTest(unittest.TestCase):

    def occurrences(self, spec, start, end, timezone=BERLIN):
        found, more = Schedule(spec, timezone).between(
            instant(*start), instant(*end), 100)
        self.assertFalse(more)
        return walls(found)

    def test_a_cron_expression_occurs_at_its_wall_clock_times(self):
        self.assertEqual(
            ['01-05 09:00+0100', '01-05 17:30+0100', '01-06 09:00+0100'],
            self.occurrences('0,30 9,17 * * 1-5 ', (2026, 1, 3),
                             (2026, 1, 6, 12))
            [:1] + self.occurrences('30 17 * * 1', (2026, 1, 5, 10),
                                    (2026, 1, 5, 18)) +
            self.occurrences('0 9 6 1 *', (2026, 1, 5, 10),
                             (2026, 1, 6, 12)))

    def test_six_fields_have_the_seconds_last(self):
        schedule = Schedule('*/20 * * * * 15')
        start = instant(2026, 1, 5, 9, 0, 0)
        self.assertEqual(
            [15, 20 * 60 + 15, 40 * 60 + 15],
            [t - start for t in schedule.between(start, start + 3600, 3)[0]])

    def test_a_fixed_time_skipped_by_the_clock_runs_once_at_the_change(self):
        # 2026-03-29: Berlin's clocks jump from 02:00 to 03:00.
        self.assertEqual(
            ['03-28 02:30+0100', '03-29 03:00+0200', '03-30 02:30+0200'],
            self.occurrences('30 2 * * *', (2026, 3, 28), (2026, 3, 31)))
        # Two fixed times in the skipped hour: one run.
        self.assertEqual(
            ['03-29 01:45+0100', '03-29 03:00+0200', '03-29 03:15+0200'],
            self.occurrences('15,45 1-3 * * *', (2026, 3, 29, 1, 30),
                             (2026, 3, 29, 3, 20)))

    def test_a_fixed_time_repeated_by_the_clock_runs_once(self):
        # 2026-10-25: Berlin's clocks go back from 03:00 to 02:00.
        self.assertEqual(
            ['10-24 02:30+0200', '10-25 02:30+0200', '10-26 02:30+0100'],
            self.occurrences('30 2 * * *', (2026, 10, 24), (2026, 10, 27)))
        # Also looked for from within the repeated hour.
        self.assertEqual(
            ['10-26 02:30+0100'],
            walls(Schedule('30 2 * * *', BERLIN).between(
                instant(2026, 10, 25, 2, 40, fold=1),
                instant(2026, 10, 26, 12), 10)[0]))

    def test_a_wildcard_expression_goes_by_the_clock_it_finds(self):
        self.assertEqual(
            ['03-29 01:30+0100', '03-29 03:00+0200', '03-29 03:30+0200'],
            self.occurrences('*/30 * * * *', (2026, 3, 29, 1, 10),
                             (2026, 3, 29, 3, 40)))
        self.assertEqual(
            ['10-25 02:00+0200', '10-25 02:30+0200', '10-25 02:00+0100',
             '10-25 02:30+0100', '10-25 03:00+0100'],
            self.occurrences('*/30 * * * *', (2026, 10, 25, 1, 50),
                             (2026, 10, 25, 3, 10)))
        # From the first passing of the repeated hour on: its second.
        self.assertEqual(
            ['10-25 02:00+0100', '10-25 02:30+0100'],
            walls(Schedule('*/30 * * * *', BERLIN).between(
                instant(2026, 10, 25, 2, 40), instant(2026, 10, 25, 2, 40,
                                                      fold=1), 10)[0]))

    def test_the_time_zone_is_the_schedules(self):
        start, end = (2026, 6, 1), (2026, 6, 1, 12)
        self.assertEqual(['06-01 09:00+0200'],
                         self.occurrences('0 9 * * *', start, end))
        self.assertEqual(['06-01 11:00+0200'], self.occurrences(
            '0 9 * * *', start, end, 'UTC'))

    def test_after_gives_the_next_occurrence(self):
        schedule = Schedule('0 * * * *', BERLIN)
        self.assertEqual(instant(2026, 6, 1, 10),
                         schedule.after(instant(2026, 6, 1, 9)))
        self.assertEqual(instant(2026, 6, 1, 10),
                         schedule.after(instant(2026, 6, 1, 9, 59, 59) + 0.5))

    def test_between_stops_at_its_limit(self):
        found, more = Schedule('* * * * *', BERLIN).between(
            instant(2026, 6, 1), instant(2026, 6, 2), 3)
        self.assertEqual(['06-01 00:01+0200', '06-01 00:02+0200',
                          '06-01 00:03+0200'], walls(found))
        self.assertTrue(more)


class IntervalTest(unittest.TestCase):

    def test_an_interval_occurs_at_its_multiples_since_the_epoch(self):
        self.assertEqual(([105.0, 110.0, 115.0], False),
                         Schedule(5).between(100, 115, 10))
        self.assertEqual(([0.5, 1.0], False),
                         Schedule(0.5).between(0.2, 1.2, 10))
        self.assertEqual(3600.0, Schedule(3600, BERLIN).after(0))
        self.assertEqual('every 1.5 seconds', str(Schedule(1.5)))


class InvalidTest(unittest.TestCase):

    def error(self, *args, **kwargs):
        with self.assertRaises(ValueError) as raised:
            Schedule(*args, **kwargs)
        return str(raised.exception)

    def test_what_is_no_schedule_is_named(self):
        self.assertEqual(
            "'61 * * * *' is not a cron expression: [61 * * * *] is not"
            ' acceptable, out of range', self.error('61 * * * *'))
        self.assertEqual(
            "'0 3 * *' is not a cron expression: it has five fields (minute"
            ' hour day month weekday), or six with the seconds last',
            self.error('0 3 * *'))
        self.assertEqual(
            "The cron expression '0 0 30 2 *' never occurs",
            self.error('0 0 30 2 *'))
        for value in 0, -1, float('inf'), float('nan'):
            self.assertIn('is a number of seconds above 0',
                          self.error(value))
        self.assertEqual('A schedule is a cron expression or a number of'
                         ' seconds, not True', self.error(True))
        self.assertEqual("Unknown time zone 'Mars/Olympus'",
                         self.error(60, 'Mars/Olympus'))

    def test_periodic_checks_its_schedule_and_catch_up(self):
        with self.assertRaises(ValueError) as raised:
            periodic('0 3 * *')
        self.assertIn('is not a cron expression', str(raised.exception))
        with self.assertRaises(ValueError) as raised:
            periodic(60, catch_up='some')
        self.assertEqual("catch_up must be one of 'latest', 'all', 'none',"
                         " not 'some'", str(raised.exception))
        with self.assertRaises(ValueError):
            periodic(60, retries=-1)
