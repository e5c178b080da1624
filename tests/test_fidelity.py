"""The fidelity table (pipeline/fidelity.py): the paper's words, this configuration's values, and the
departures, which must be exactly what pipeline.config.deviations says."""
import inspect
import os
import re
from pathlib import Path

import pytest

from data_prep import preprocess
from pipeline.config import STANDIN_WEIGHTS, deviations, resolve_config
from pipeline.fidelity import (AS_PAPER, ASSUMPTION, DEPARTURE, DOCS_PATH, PREPROCESSING_ORDER, docs_text,
                               fidelity_markdown, fidelity_rows)

ALL = {"experiments": ["all"], "scenarios": ["all"]}
#: The paper's text is not part of the repository: PAPER_TEXT names it, else the team's shared copy.
PAPER_TEXT = Path(os.environ.get("PAPER_TEXT", Path(__file__).resolve().parents[2] / "shared" / "paper"
                                 / "000_8b5bf4c74a9db6bf.txt"))


def rows_by_topic(cfg):
    return {r.topic: r for r in fidelity_rows(cfg)}


def test_paper_preset_uses_the_papers_numbers():
    rows = rows_by_topic(resolve_config("paper", {}, "cpu"))
    # the numbers as the paper prints them, not as the config holds them
    expect = {"batch size": "50", "base learning rate": "0.001", "momentum": "0.9", "weight decay": "0.001",
              "input size (pixels)": "227 x 227", "test fractions": "0.05"}
    for topic, here in expect.items():
        assert (rows[topic].here, rows[topic].kind) == (here, AS_PAPER), topic
    assert rows["lr schedule"].here == "multiplied by 0.1 every 2500 iterations"
    assert rows["cross-validation"].here.startswith("6 folds") and rows["cross-validation"].kind == AS_PAPER
    assert rows["false-negative analyses"].kind == AS_PAPER
    assert rows["iterations"].kind == ASSUMPTION and "7500" in rows["iterations"].here


def test_a_changed_setting_changes_its_row():
    paper = rows_by_topic(resolve_config("paper", {}, "cpu"))
    changed = rows_by_topic(resolve_config("paper", {"lr": 0.01, "momentum": 0.5}, "cpu"))
    assert paper["base learning rate"].kind == AS_PAPER
    for topic, value in (("base learning rate", "0.01"), ("momentum", "0.5")):
        assert changed[topic].here == value and changed[topic].kind == DEPARTURE
        assert value in changed[topic].source and "paper:" in changed[topic].source
    assert changed["batch size"] == paper["batch size"]
    pretrained = rows_by_topic(resolve_config("paper", {"pretrained": str(STANDIN_WEIGHTS)}, "cpu"))
    assert "stand-in" in pretrained["pretraining"].here and pretrained["pretraining"].kind == DEPARTURE
    assert "'pretrained-file'" in pretrained["mean subtraction"].here
    assert "'training-split'" in paper["mean subtraction"].here


# Configurations whose every departure deviations() states (the demo's, the paper's, and changes of them).
CONFIGS = [("paper", {}), ("paper", ALL), ("demo", {}), ("demo", ALL), ("tiny", ALL), ("paper", {"lr": 0.01}),
           ("paper", {"pretrained": str(STANDIN_WEIGHTS), "new_layer_lr_mult": 2.0}), ("demo", {"pretrained": "none"}),
           ("paper", {"fn_analysis": "holdout", "warmup": 5, "augment_flip": 1}), ("demo", {"cv": 3}),
           ("paper", {"variant": "torchvision", "input_size": 224})]


@pytest.mark.parametrize("preset,overrides", CONFIGS)
def test_departures_are_exactly_what_deviations_says(preset, overrides):
    cfg = resolve_config(preset, overrides, "cpu")
    said = deviations(cfg)
    rows = fidelity_rows(cfg)
    for r in rows:
        if r.kind == DEPARTURE:  # its source is deviations' own lines
            assert set(r.source.split("\n")) <= set(said), (r.topic, r.source)
    sources = [line for r in rows for line in r.source.split("\n")]
    assert [d for d in said if d not in sources] == [], "lines of deviations() that no row of the table shows"


def test_the_paper_presets_only_departures_are_data_and_weights():
    cfg = resolve_config("paper", ALL, "cpu")
    departures = {r.topic for r in fidelity_rows(cfg) if r.kind == DEPARTURE}
    assert departures == {"data", "views per exam (synthetic data)", "pretraining", "fine-tuning", "incremental transfer"}


def test_settings_deviations_does_not_cover_are_departures_too():
    for overrides, topic in (({"test_fractions": [0.3]}, "test fractions"), ({"fn_analysis": "off"},
                                                                              "false-negative analyses")):
        row = rows_by_topic(resolve_config("paper", overrides, "cpu"))[topic]
        assert row.kind == DEPARTURE and row.source, (topic, row)
    robustness = rows_by_topic(resolve_config("paper", {"test_fractions": [0.05, 0.1, 0.15]}, "cpu"))
    assert robustness["test fractions"].kind == AS_PAPER


def test_cross_validation_rows_follow_cv_and_its_use():
    paper = rows_by_topic(resolve_config("paper", {}, "cpu"))
    reported = rows_by_topic(resolve_config("paper", {"cv_select": "none"}, "cpu"))
    off = rows_by_topic(resolve_config("paper", {"cv": 0, "cv_select": "none"}, "cpu"))
    use = "what cross-validation does"
    assert paper[use].kind == ASSUMPTION and paper[use].here.startswith("chooses the training length")
    assert reported[use].kind == DEPARTURE and "reported only" in reported[use].here
    assert off["cross-validation"].here == "off" and off[use].kind == DEPARTURE


def normalized(text):
    """The paper's PDF text with its ligatures and symbol-font characters as plain text, one space
    between words."""
    for a, b in (("ﬁ", "fi"), ("ﬂ", "fl"), ("ﬀ", "ff"), ("ﬃ", "ffi"), ("ﬄ", "ffl"), ("þ", "+"), ("¼", "="),
                 ("’", "'")):
        text = text.replace(a, b)
    return re.sub(r"\s+", " ", text)


@pytest.mark.skipif(not PAPER_TEXT.exists(), reason=f"the paper's text is not at {PAPER_TEXT} (set PAPER_TEXT)")
def test_every_quote_is_the_papers_own_words():
    paper = normalized(PAPER_TEXT.read_text(encoding="utf-8"))
    quotes = {q for preset, overrides in CONFIGS for r in fidelity_rows(resolve_config(preset, overrides, "cpu"))
              for q in r.paper}
    assert len(quotes) > 25
    assert sorted(q for q in quotes if normalized(q) not in paper) == []


def test_preprocessing_order_is_the_codes():
    source = inspect.getsource(preprocess.preprocess_steps)
    calls = [source.index(f"{name}(") for name, _ in PREPROCESSING_ORDER]
    assert calls == sorted(calls), "data_prep.preprocess.preprocess_steps calls its steps in another order"
    here = rows_by_topic(resolve_config("paper", {}, "cpu"))["preprocessing steps and their order"].here
    positions = [here.index(what) for _, what in PREPROCESSING_ORDER]
    assert positions == sorted(positions)


def test_markdown_has_one_line_per_row_and_escapes_pipes():
    cfg = resolve_config("demo", ALL, "cpu")
    lines = fidelity_markdown(cfg)
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| topic")]
    assert len(table) == len(fidelity_rows(cfg))
    assert all(re.sub(r"\\\|", "", line).count("|") == 6 for line in table)


def test_docs_file_is_current():
    assert DOCS_PATH.exists() and DOCS_PATH.read_text() == docs_text(), (
        "docs/fidelity.md differs from what pipeline/fidelity.py generates; regenerate it with "
        "python3 -c \"from pipeline.fidelity import write_docs; write_docs()\"")
