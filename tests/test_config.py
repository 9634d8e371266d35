"""Config: defaults, YAML overrides, --set coercion, clear errors, dict/YAML round trips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attnmt.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.model.arch == "lstm"
    assert isinstance(cfg.train.betas, tuple)


def test_yaml_overrides_only_named_fields(tmp_path):
    path = write(
        tmp_path / "c.yaml", "model:\n  hidden: 64\n  attention: dot\ntrain:\n  lr: 1e-3\n"
    )
    cfg = load_config(path)
    assert cfg.model.hidden == 64
    assert cfg.model.attention == "dot"
    assert cfg.train.lr == pytest.approx(1e-3)  # PyYAML reads "1e-3" as a string: coerced
    assert isinstance(cfg.train.lr, float)
    assert cfg.model.emb_dim == Config().model.emb_dim  # untouched fields keep defaults
    assert cfg.data == Config().data


def test_empty_yaml_and_empty_section_give_defaults(tmp_path):
    # Defaults everywhere, but the run directory is named after the file.
    for name, text in (("e", ""), ("s", "model:\n")):
        cfg = load_config(write(tmp_path / f"{name}.yaml", text))
        assert cfg.train.out_dir == str(Path("runs") / name)
        cfg.train.out_dir = Config().train.out_dir
        assert cfg == Config()


@pytest.mark.parametrize(
    "item, section, key, expected",
    [
        ("train.progress=false", "train", "progress", False),
        ("train.progress=True", "train", "progress", True),
        ("data.lowercase=yes", "data", "lowercase", True),
        ("train.progress=0", "train", "progress", False),
        ("data.lowercase=1", "data", "lowercase", True),
        ("model.hidden=512", "model", "hidden", 512),
        ("model.hidden=64.0", "model", "hidden", 64),
        ("train.lr=0.5", "train", "lr", 0.5),
        ("train.lr=3", "train", "lr", 3.0),
        ("train.betas=[0.8, 0.95]", "train", "betas", (0.8, 0.95)),
        ("model.arch=transformer", "model", "arch", "transformer"),
        ("data.corpus=a.tsv", "data", "corpus", "a.tsv"),
        ("data.corpus=123", "data", "corpus", "123"),
        ("data.valid=", "data", "valid", ""),
    ],
)
def test_set_coercion(item, section, key, expected):
    cfg = load_config(None, [item])
    value = getattr(getattr(cfg, section), key)
    assert value == expected
    assert type(value) is type(expected)


def test_set_tuple_elements_are_floats():
    cfg = apply_overrides(Config(), ["train.betas=[1, 0]"])
    assert cfg.train.betas == (1.0, 0.0)
    assert all(isinstance(b, float) for b in cfg.train.betas)


def test_set_applies_after_yaml(tmp_path):
    path = write(tmp_path / "c.yaml", "model:\n  hidden: 64\n  layers: 2\n")
    cfg = load_config(path, ["model.hidden=32"])
    assert cfg.model.hidden == 32
    assert cfg.model.layers == 2


def test_apply_overrides_changes_only_named_keys():
    cfg = Config()
    cfg.model.layers = 3
    apply_overrides(cfg, ["model.hidden=48"])
    assert cfg.model.hidden == 48
    assert cfg.model.layers == 3


@pytest.mark.parametrize("item", ["model.hidden", "hidden=3", "=3"])
def test_set_malformed(item):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, item.split())


def test_unknown_section_names_it_and_file(tmp_path):
    path = write(tmp_path / "bad.yaml", "modle:\n  hidden: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "modle" in str(e.value)
    assert str(path) in str(e.value)


def test_unknown_key_names_it_and_file(tmp_path):
    path = write(tmp_path / "bad.yaml", "model:\n  hiden: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "model.hiden" in str(e.value)
    assert str(path) in str(e.value)


def test_unknown_key_in_set():
    with pytest.raises(ConfigError, match=r"--set.*train\.nope"):
        load_config(None, ["train.nope=1"])


@pytest.mark.parametrize(
    "text, where",
    [
        ("model:\n  hidden: lots\n", "model.hidden"),
        ("model:\n  hidden: 3.5\n", "model.hidden"),
        ("train:\n  lr: fast\n", "train.lr"),
        ("train:\n  progress: maybe\n", "train.progress"),
        ("train:\n  betas: [0.9]\n", "train.betas"),
        ("train:\n  betas: [0.9, x]\n", "train.betas"),
    ],
)
def test_bad_type_names_section_key(tmp_path, text, where):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert where in str(e.value)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("item", ["model.layers=two", "model.layers=true", "train.lr=false"])
def test_bad_type_in_set(item):
    with pytest.raises(ConfigError, match=item.split("=")[0].replace(".", r"\.")):
        load_config(None, item.split())


def test_shipped_configs_load():
    configs = sorted((Path(__file__).parents[1] / "attnmt" / "configs").glob("*.yaml"))
    for path in configs:
        load_config(path)


def test_section_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="'model' must be a mapping"):
        load_config(write(tmp_path / "bad.yaml", "model: 3\n"))
    with pytest.raises(ConfigError, match="top level"):
        load_config(write(tmp_path / "list.yaml", "- a\n- b\n"))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as e:
        load_config(path)
    assert str(path) in str(e.value)


def test_invalid_yaml(tmp_path):
    path = write(tmp_path / "broken.yaml", "model: [unclosed\n  hidden: : 3\n")
    with pytest.raises(ConfigError, match="invalid YAML") as e:
        load_config(path)
    assert str(path) in str(e.value)


def test_dict_round_trip():
    cfg = load_config(None, ["model.hidden=48", "train.betas=[0.8, 0.9]", "data.lowercase=true"])
    raw = config_to_dict(cfg)
    assert raw["train"]["betas"] == [0.8, 0.9]  # plain list: safe for YAML and weights_only
    assert set(raw) == {"data", "model", "train", "decode"}
    assert config_from_dict(raw) == cfg


def test_save_config_loads_back_equal(tmp_path):
    cfg = load_config(None, ["model.arch=transformer", "decode.beam=3", "train.lr=0.0005"])
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temp file left
    save_config(Config(), path)  # overwrite in place
    assert load_config(path) == Config()


@pytest.mark.parametrize(
    "item, message",
    [
        ("train.eval_every=0", "train.eval_every: must be >= 1, got 0"),
        ("train.save_every=0", "train.save_every: must be >= 1"),
        ("train.log_every=0", "train.log_every: must be >= 1"),
        ("train.accum=0", "train.accum: must be >= 1"),
        ("train.optimizer=sgd", "train.optimizer: unknown 'sgd' (use adam, adamw)"),
        ("train.batch_tokens=-5", "train.batch_tokens: must be >= 1"),
        ("data.vocab_size=3", "data.vocab_size: must be >= 5"),
        ("train.max_steps=-1", "train.max_steps: must be >= 0"),
        ("train.lr=.nan", "train.lr: must be >= 0"),
        ("model.dropout=1.0", "model.dropout: must be in [0, 1)"),
        ("data.dev_fraction=0.96", "dev_fraction + data.test_fraction must be < 1"),
        ("train.device=tpu", "train.device: unknown 'tpu'"),
        ("train.betas=[1,0]", "train.betas: each must be in [0, 1)"),
        ("decode.n_best=6", "decode.n_best: must be between 1 and beam (5), got 6"),
        ("decode.length_penalty=.nan", "decode.length_penalty: must be a finite number"),
        ("decode.max_len_a=0 decode.max_len_b=1", "allows no output"),
        ("model.arch=gru", "model.arch: unknown 'gru'"),
    ],
)
def test_out_of_range_values_are_refused_by_name(item, message):
    """Bug: train.eval_every=0 was a ZeroDivisionError mid-run; train.optimizer=sgd ran Adam."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, item.split())


def test_set_with_invalid_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match=r"--set 'train.betas=\[1,': the value is not valid YAML"):
        load_config(None, ["train.betas=[1,"])


def test_a_config_file_without_out_dir_runs_in_its_own_directory(tmp_path):
    """Bug: every config without train.out_dir ran in runs/demo, so a user's config resumed the
    demo's model there and overwrote its test.tsv."""
    mine = write(tmp_path / "my_exp.yaml", "data:\n  corpus: pairs.tsv\n")
    other = write(tmp_path / "other.yaml", "train:\n  max_steps: 5\n")
    assert load_config(mine).train.out_dir == str(Path("runs") / "my_exp")
    assert load_config(other).train.out_dir == str(Path("runs") / "other")
    assert load_config(None).train.out_dir == "runs/default"  # no file: the one default
    named = write(tmp_path / "named.yaml", "train:\n  out_dir: runs/here\n")
    assert load_config(named).train.out_dir == "runs/here"
    assert load_config(mine, ["train.out_dir=x/y"]).train.out_dir == "x/y"
    shipped = Path(__file__).resolve().parents[1] / "configs" / "lstm_demo.yaml"
    assert load_config(shipped).train.out_dir == "runs/demo"  # the demo keeps its directory
    with pytest.raises(ConfigError, match="train.out_dir: empty"):
        load_config(mine, ["train.out_dir="])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.mkdir(), "is a directory, expected a YAML config file"),
        (lambda p: p.write_bytes(b"train:\n  lr: \xff\n"), "not UTF-8 text (byte 13)"),
    ],
)
def test_an_unreadable_config_is_a_config_error(tmp_path, make, message):
    """Bug: a directory given as the config was a raw IsADirectoryError traceback."""
    path = tmp_path / "c.yaml"
    make(path)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        load_config(path)


def test_every_config_key_is_in_the_reference() -> None:
    """docs/configs.md lists every key (regenerate its tables when a key is added)."""
    import dataclasses

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configs.md").read_text()
    cfg = Config()
    for section in ("data", "model", "train", "decode"):
        for f in dataclasses.fields(getattr(cfg, section)):
            assert f"`{section}.{f.name}`" in doc, f"{section}.{f.name} missing in docs/configs.md"
