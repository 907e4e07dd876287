"""Progress output: plain lines, at most one per 10% of the work, when it does not go to a terminal."""

from __future__ import annotations

import io

from featscope.progress import tqdm


def test_a_log_file_gets_a_line_per_tenth_of_the_work_and_no_carriage_returns():
    log = io.StringIO()
    with tqdm(total=1000, desc="decode", unit="it", file=log) as bar:
        for i in range(1000):
            bar.update(1)
            bar.set_postfix(dist=f"{i:.3f}")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 11  # 0%, 10%, ..., 100%
    assert lines[0].startswith("decode:   0%") and lines[-1].startswith("decode: 100% (1000/1000 it)")


def test_a_bar_closed_early_ends_on_its_last_count_and_iterables_work():
    log = io.StringIO()
    bar = tqdm(total=10, desc="early", file=log)
    bar.update(3)
    bar.close()
    assert log.getvalue().splitlines()[-1].startswith("early:  30% (3/10")
    log = io.StringIO()
    assert list(tqdm(range(3), desc="items", file=log)) == [0, 1, 2]
    assert len(log.getvalue().splitlines()) == 4
