"""Draw benchmarks/work/results.json (written by run.py) as a PNG.

    python chart.py results.json results.png
"""

import json
import sys

import matplotlib


matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)


IMPLEMENTATIONS = ('this', '3.0', 'floor')
COLOURS = {'this': '#1b7837', '3.0': '#999999', 'floor': '#2166ac'}


def main(source, target):
    with open(source) as f:
        summary = json.load(f)
    figures = [item for item in summary.items() if item[1]['medians']]
    columns = 3
    rows = (len(figures) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(12, 3.2 * rows))
    axes = list(axes.flat)
    for ax, (key, figure) in zip(axes, figures):
        impls = [i for i in IMPLEMENTATIONS if i in figure['medians']]
        medians = [figure['medians'][i] for i in impls]
        ax.bar(impls, medians, color=[COLOURS[i] for i in impls])
        for x, impl in enumerate(impls):
            values = figure['values'][impl]
            ax.plot([x] * len(values), values, '.', color='black',
                    markersize=3)
        better = 'higher' if figure['higher_is_better'] else 'lower'
        met = {True: '; target met', False: '; target missed',
               None: ''}[figure['met']]
        ax.set_title(f"{figure['label']}\n{figure['unit']}, {better} is"
                     f" better{met}", fontsize=9)
        if key == 'sigterm':
            ax.set_yscale('log')
        ax.tick_params(labelsize=8)
    for ax in axes[len(figures):]:
        ax.set_visible(False)
    fig.suptitle('gocept.runner: this checkout, 3.0 and the plain ZODB floor'
                 ' (medians, dots: single runs)', fontsize=10)
    fig.tight_layout()
    fig.savefig(target, dpi=80)


if __name__ == '__main__':
    main(*sys.argv[1:])
