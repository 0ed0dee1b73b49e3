"""PlotCurvesHook redraws curves.png only on checkpoint/eval periods, throttled, and at the end."""

import json
import types

from se_detectron.engine import PlotCurvesHook


def _run(tmp_path, periods, min_interval_s, iters=12):
    (tmp_path / "metrics.json").write_text(
        "\n".join(json.dumps({"iteration": i, "total_loss": 1.0 / (i + 1)}) for i in range(iters))
    )
    hook = PlotCurvesHook(str(tmp_path), periods, min_interval_s=min_interval_s)
    hook.trainer = types.SimpleNamespace(iter=0)
    during = []
    for i in range(iters):
        hook.trainer.iter = i
        hook.after_step()
        during.append(hook.redraws)
    hook.after_train()
    return during, hook.redraws


def test_redraws_on_periods_and_at_the_end(tmp_path):
    during, total = _run(tmp_path, periods=(5, 0), min_interval_s=0)
    # after iterations 5 and 10 (1-based), then once more at the end
    assert during == [0] * 4 + [1] * 5 + [2] * 3 and total == 3
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_redraws_are_throttled_and_eval_periods_count(tmp_path):
    during, total = _run(tmp_path, periods=(4, 3), min_interval_s=3600)
    assert during[-1] == 1 and total == 2  # first due step (3) only, then the end


def test_no_periods_draws_only_at_the_end(tmp_path):
    during, total = _run(tmp_path, periods=(0, 0), min_interval_s=0)
    assert during == [0] * 12 and total == 1


def test_a_single_period_is_accepted(tmp_path):
    during, total = _run(tmp_path, periods=6, min_interval_s=0)
    assert during[-1] == 2 and total == 3
