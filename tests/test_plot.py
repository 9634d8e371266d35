"""plot: training curves from train_log.jsonl; bad logs are clear errors naming file:line."""

from __future__ import annotations

import json

import pytest

from attnmt.plot import plot_training, read_log

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_log(run_dir, steps: int = 30, resumed: bool = False) -> None:
    lines = []
    for step in range(10, steps + 1, 10):
        lines.append(
            {"kind": "train", "step": step, "epoch": 1, "loss": 5.0 / step, "lr": 1e-3 * step,
             "tokens_per_s": 1000.0, "elapsed_s": float(step)}
        )  # fmt: skip
        if step % 20 == 0:
            lines.append(
                {"kind": "valid", "step": step, "valid_loss": 4.0 / step, "valid_ppl": 50.0 / step,
                 "dev_bleu": float(step), "dev_chrf": 2.0 * step}
            )  # fmt: skip
    if resumed:  # a run resumed from step 10 logs step 20 again
        lines.append(dict(lines[1], loss=0.123))
    (run_dir / "train_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_plot_training_writes_png(tmp_path):
    write_log(tmp_path, resumed=True)
    out = plot_training(tmp_path)
    assert out == tmp_path / "curves.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    log = read_log(tmp_path / "train_log.jsonl")
    assert sorted(log["train"]) == [10, 20, 30] and log["train"][20]["loss"] == 0.123
    assert sorted(log["valid"]) == [20]


def test_plot_training_other_path_and_svg(tmp_path):
    write_log(tmp_path, steps=10)  # train lines only: the validation panels say "no data yet"
    out = plot_training(tmp_path, tmp_path / "plots" / "c.svg")
    assert b"<svg" in out.read_bytes()[:2000]


def test_missing_and_empty_log(tmp_path):
    with pytest.raises(ValueError, match="train_log.jsonl: training log not found"):
        plot_training(tmp_path)
    (tmp_path / "train_log.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="train_log.jsonl: training log has no lines"):
        plot_training(tmp_path)


@pytest.mark.parametrize(
    "bad",
    ['{"kind": "train", "step": 3', '[1, 2]', '{"kind": "train"}', '{"step": 1, "loss": 2.0}',
     '{"kind": "train", "step": 5, "loss": "nan?"}'],
)  # fmt: skip
def test_malformed_line_names_file_and_line(tmp_path, bad):
    write_log(tmp_path)
    log = tmp_path / "train_log.jsonl"
    log.write_text(log.read_text() + bad + "\n")
    n = len(log.read_text().splitlines())
    with pytest.raises(ValueError, match=f"train_log.jsonl:{n}: "):
        plot_training(tmp_path)
    assert not (tmp_path / "curves.png").exists()


def test_unknown_kind_is_kept_but_not_an_error(tmp_path):
    write_log(tmp_path)
    log = tmp_path / "train_log.jsonl"
    log.write_text(log.read_text() + '{"kind": "test", "step": 30, "test_bleu": 1.0}\n')
    assert read_log(log)["test"][30]["test_bleu"] == 1.0
    assert plot_training(tmp_path).exists()


def test_plot_real_training_log(tiny_run):
    out = plot_training(tiny_run, tiny_run.parent / "real_curves.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
