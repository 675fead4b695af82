#!/usr/bin/env python3
"""Benchmark: the cost of tracing ticks with OpenTelemetry.

    .venv/bin/python benchmarks/tracing.py [--quick]

Run it with a Python that has this checkout and its ``opentelemetry``
extra.  In PROCESSES processes each (workers/tracing.py), the same runner
ticks empty ticks, then writing ticks, without tracing, with it (the
SDK's TracerProvider, a BatchSpanProcessor and the OTLP/HTTP exporter to
a collector on 127.0.0.1 that this script runs: what OTEL_TRACES_EXPORTER=
otlp sets up), and with it sampling one trace in a hundred; for writing
ticks also the references "SDK alone" (no tracing, but the worker begins
and ends a span of the SDK for each tick itself); in turn, ROUNDS times
each way, SECONDS seconds a run (and one to warm up).  Each
second gives the ticks per second and per CPU second (all the runner's
threads: the exporter's count); the figures are
the ratios, with tracing to without, of the medians of all seconds, with
their 95 % intervals, and "met" is judged on the ratio per CPU second.
Writes benchmarks/tracing-results.txt (--quick: to benchmarks/work/); the
exit status is 1 if a run failed.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import timeit
import types

from metrics import prepare
from metrics import rates
from metrics import ratio
from run import TMPFS
from run import WORK
from run import WORKERS

from gocept.runner.tests.tracingprograms import Collector


HERE = os.path.dirname(os.path.abspath(__file__))
# Processes, rounds in each, seconds a run is measured (full, quick).
PROCESSES = (3, 1)
ROUNDS = (6, 3)
SECONDS = (4, 2)
# figure -> (worker kind, goal, the runs of a round); the runs with
# tracing to compare with 'without', and their labels.  A span of the
# SDK's begun and ended by the worker itself ('sdk', 'sdk_sampled') is
# what a writing tick's span costs the SDK alone: the reference for what
# tracing could cost at best.
FIGURES = {
    'empty ticks': ('empty', 0.9, ('without', 'with', 'sampled')),
    'writing ticks': ('writing', 0.97, ('without', 'with', 'sampled', 'sdk',
                                        'sdk_sampled')),
}
LABELS = {'with': '', 'sampled': ', 1 %', 'sdk': ', SDK alone',
          'sdk_sampled': ', 1 %, SDK alone'}


def run_process(template, kind, runs, rounds, seconds):
    """The seconds of one process: {'without': [(ticks, CPU seconds,
    seconds)], 'with': [...], ...} for each of `runs` (see
    workers/tracing.py),
    the ticks of its runs 'with' tracing and the spans of theirs that the
    collector received."""
    directory = tempfile.mkdtemp(dir=template.rsplit('/', 1)[0])
    collector = Collector()
    try:
        for name in os.listdir(template):
            shutil.copy(os.path.join(template, name), directory)
        proc = subprocess.run(
            [sys.executable, os.path.join(WORKERS, 'tracing.py'),
             'zope.conf', kind, str(rounds), str(seconds),
             collector.endpoint, *runs],
            cwd=directory, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or 'Traceback' in proc.stderr:
            sys.exit(f'{kind} ticks failed ({proc.returncode}):\n'
                     + proc.stderr)
        measured = json.loads(proc.stdout.splitlines()[-1])
        traced = measured.pop('ticks_traced')
        for name in runs:
            if len(measured.get(name, ())) != rounds * seconds:
                sys.exit(f'{kind} ticks {name} tracing: measured'
                         f' {measured.get(name)}')
        received = [span for span in collector.named('gocept.runner.tick')
                    if span.attributes['gocept.runner.worker'] == 'with']
        return measured, traced, len(received)
    finally:
        collector.close()
        shutil.rmtree(directory)


def hook_cost():
    """The microseconds that the Tracing middleware's hook of a tick
    (after_tick) takes for a committed tick that did nothing (no span) and
    for one that wrote (a span, going to a BatchSpanProcessor whose
    exporter drops it): the best of 5 times 20,000 calls each.  What its
    synchronizer costs a commit is not in it."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from gocept.runner import tracing
    from gocept.runner.tick import Tick

    class Dropped(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    middleware = tracing.Tracing(provider)
    tick = Tick(1)
    tick.outcome, tick.ended = 'committed', time.monotonic()
    loop = types.SimpleNamespace(name='worker', tick_count=1, last_tick=tick)
    middleware.before_loop(loop)
    span = tracing._ticks.span
    written = types.SimpleNamespace(_p_serial=b'\0\0\0\0\0\0\0\1')

    def idle():
        middleware.after_tick(loop, tick)

    def wrote():
        # What the span's synchronizer notes of a commit in the tick.
        span.wrote_in, span.written = tick, written
        middleware.after_tick(loop, tick)
    try:
        return [min(timeit.repeat(hooks, number=20000, repeat=5,
                                  timer=time.process_time)) / 20000 * 1e6
                for hooks in (idle, wrote)]
    finally:
        middleware.after_loop(loop)
        provider.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: fewer seconds and rounds')
    args = parser.parse_args()
    i = 1 if args.quick else 0
    processes, rounds, seconds = PROCESSES[i], ROUNDS[i], SECONDS[i]
    began = time.monotonic()
    on_disk = not os.path.isdir(TMPFS)
    base = tempfile.mkdtemp(prefix='runner-tracing-',
                            dir=None if on_disk else TMPFS)
    rows = []
    traced = received = 0
    # The CPU microseconds of a tick without tracing (median).
    tick_us = {}
    try:
        template = prepare(base)
        for figure, (kind, goal, runs) in FIGURES.items():
            pooled = {name: [] for name in runs}
            for i in range(processes):
                measured, ticks, spans = run_process(
                    template, kind, runs, rounds, seconds)
                traced += ticks
                received += spans
                for name, run in measured.items():
                    pooled[name] += run
                    wall, cpu = rates(run)
                    print(f'{figure}, {name} tracing:'
                          f' {statistics.median(wall):,.0f} ticks/s,'
                          f' {statistics.median(cpu):,.0f} per CPU s'
                          f' (medians of {len(run)} s)', flush=True)
                print(f'{spans:,} of {ticks:,} tick spans received',
                      flush=True)
            plain_wall, plain_cpu = rates(pooled['without'])
            for name in runs[1:]:
                traced_wall, traced_cpu = rates(pooled[name])
                rows.append((figure + LABELS[name],
                             ratio(traced_wall, plain_wall),
                             ratio(traced_cpu, plain_cpu),
                             None if name.startswith('sdk') else goal))
            tick_us[figure] = 1e6 / statistics.median(plain_cpu)
        idle, hook = hook_cost()
    finally:
        shutil.rmtree(base)
    lines = [
        'figure                          ticks/s  95 % interval  per CPU s'
        '  95 % interval  goal    met',
    ]
    for name, wall, cpu, goal in rows:
        if goal is None:
            judged = '(reference)'
        else:
            judged = f'≥ {goal:.2f}  ' + ('yes' if cpu[0] >= goal else ' NO')
        lines.append(
            f'{name:<30}  {wall[0]:>7.3f}  {wall[1]:.3f}-{wall[2]:.3f}'
            f'    {cpu[0]:>9.3f}  {cpu[1]:.3f}-{cpu[2]:.3f}  {judged}')
    lines += [
        '',
        f'Ratios, with tracing to without, of the medians of the ticks per'
        f' second (wall clock) and per CPU second (all threads of the'
        f' runner: the exporter\'s count) of {processes * rounds * seconds}'
        f' seconds each way, and their 95 % intervals (bootstrap).'
        f'  {processes} processes ran the runner (appmain: set-up and loop)'
        f' without tracing, with it, and with it sampling 1 % of the traces'
        f' ("1 %": OTEL_TRACES_SAMPLER=traceidratio,'
        f' OTEL_TRACES_SAMPLER_ARG=0.01), and, for writing ticks, without'
        f' tracing but with a worker that begins and ends a span of the SDK'
        f' itself for each tick, with the attributes of a tick\'s span'
        f' ("SDK alone", every one and 1 % sampled: what the SDK costs at'
        f' the least), in turn, {rounds} times each way,'
        f' {seconds} s a run after one to warm up; spans exported by the'
        f' SDK\'s BatchSpanProcessor and OTLP/HTTP exporter to a collector'
        f' on 127.0.0.1 ({received:,} tick spans received of the'
        f' {traced:,} ticks of the runs with tracing: empty ticks make'
        f' none, and the SDK drops what its queue cannot hold).  "met" is'
        f' judged on the ratio per CPU second.',
        f'The hook of a tick (Tracing.after_tick) takes'
        f' {idle:.1f} µs of CPU for a tick that did nothing (no span) and'
        f' {hook:.1f} µs for one that wrote (a span begun and ended; its'
        f' export in the processor\'s thread is not counted): '
        + ', '.join(f'{cost / us:.0%} of one of the {figure} without'
                    f' tracing ({us:.0f} µs of CPU)'
                    for (figure, us), cost in zip(tick_us.items(),
                                                  (idle, hook))) + '.',
        'Database: FileStorage ' + ('on disk.' if on_disk else
                                    f'on a tmpfs ({TMPFS}).'),
        f'Python {platform.python_version()}, {os.cpu_count()} CPUs,'
        f' load average at the end'
        f' {" ".join(f"{x:.1f}" for x in os.getloadavg())};'
        f' whole run {time.monotonic() - began:.0f} s.',
    ]
    table = len(rows) + 2
    text = '\n'.join(lines[:table] + [
        textwrap.fill(line, 78) for line in lines[table:]]) + '\n'
    print('\n' + text)
    out = WORK if args.quick else HERE
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'tracing-results.txt'), 'w') as f:
        f.write(text)


if __name__ == '__main__':
    main()
