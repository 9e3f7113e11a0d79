"""What a run directory or a report holds is data: names and config strings are escaped in
`scorelab compare`'s HTML and markdown, and nothing read is unpickled."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

from scorelab.cli import main
from scorelab.data import load_dataset
from tests.helpers import cli_fails

SMALL = ["--n-data", "300", "--width", "16", "--depth", "1", "--batch-size", "64"]
SMALL += ["--steps", "5", "--T", "10", "--no-progress"]

SCRIPT = "<script>alert(1)<\\script>&co"  # a directory name cannot hold '/'
IMG = "<img src=x onerror=alert(1)>"
OWN_TAGS = "!doctype html head meta title style body h1 h2 table tr th td div figure img figcaption"
BROKEN = "two\n| x | y |\n*b*"  # a line break and pipes: they must not make table rows


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory):
    """Two ring runs in directories named with markup and a line break, trained on a .npy
    whose path (the config's `data`, the report's title) holds an HTML tag."""
    root = tmp_path_factory.mktemp("sec")
    data = root / f"{IMG}.npy"
    np.save(data, load_dataset("ring", 300, seed=0).numpy())
    runs = root / SCRIPT, root / BROKEN
    for run in runs:
        assert main(["train", "--data", str(data), *SMALL, "--out", str(run)]) == 0
    return runs


def test_compare_escapes_run_names_and_config_strings(hostile_runs, tmp_path):
    out = tmp_path / "report"
    argv = ["compare", *map(str, hostile_runs), "--out", str(out), "--n", "50"]
    assert main([*argv, "--n-nll", "10", "--steps", "5"]) == 0
    page = (out / "index.html").read_text()
    for raw in (SCRIPT, IMG, "<script", "<img src=x", "onerror=alert(1)>"):
        assert raw not in page, raw
    assert html.escape(SCRIPT) in page and html.escape(IMG) in page
    assert "&lt;script&gt;alert(1)&lt;\\script&gt;&amp;co" in page
    # the only tags are the report's own, and every <img> is an embedded PNG
    tags = set(re.findall(r"<([a-zA-Z!][a-zA-Z0-9]*)", page))
    assert tags <= set(OWN_TAGS.split()), tags - set(OWN_TAGS.split())
    assert page.count("<img") == page.count("<img alt='") == page.count("data:image/png") == 2

    md = (out / "report.md").read_text()
    assert IMG not in md and "\n| x |" not in md
    assert not re.search(r"(?<!\\)<", md)  # every '<' is escaped: no raw HTML
    assert "\\<img src=x onerror=alert(1)\\>" in md  # renders as the literal text
    assert "\\<script\\>alert(1)\\<\\\\script\\>\\&co" in md
    # every row of every table has its header's number of cells: nothing split a row
    for table in re.findall(r"((?:^\|.*\n)+)", md, flags=re.M):
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(widths) == 1, table
    runs_table = md.split("## Runs")[1].split("##")[0]
    assert runs_table.count("\n|") == 4  # header, rule, two runs
    assert "two \\| x \\| y \\| \\*b\\*" in runs_table
    # pictures are written under safe names, one per run
    assert len(list(out.glob("*_samples.png"))) == 2
    assert all(re.fullmatch(r"[\w.-]+", p.name) for p in out.iterdir())


def test_a_pickled_npy_is_refused_in_one_line(tmp_path, capsys):
    """An object array needs pickle to load; --data refuses it instead of unpickling it."""
    bad = tmp_path / "obj.npy"
    np.save(bad, np.array([[{"a": 1}, 2.0]], dtype=object), allow_pickle=True)
    out = str(tmp_path / "run")
    cli_fails(["train", "--data", str(bad), *SMALL, "--out", out], capsys, "not a plain numeric")
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_nothing_is_unpickled():
    """No torch.load, pickle or np.load(allow_pickle=True) in the package: checkpoints are
    safetensors, arrays are loaded with allow_pickle=False."""
    from pathlib import Path

    import scorelab

    root = Path(scorelab.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for bad in ("torch.load(", "import pickle", "pickle.load", "allow_pickle=True"):
            assert bad not in text, f"{path}: {bad}"
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, f"{path}: {call}"


def test_markdown_text_and_picture_names():
    from scorelab.reports.compare import _md, _stems

    text = "a|b\r\nc <i>&amp; [x](y) `z` \\|"
    assert _md(text) == r"a\|b c \<i\>\&amp; \[x\](y) \`z\` \\\|"
    assert _stems(["a<b", "a>b"]) == ["0_a_b", "1_a_b"]  # two runs never share a picture
    assert _stems(["ring_ddpm", "ring_vae"]) == ["ring_ddpm", "ring_vae"]


def test_paths_in_a_run_config_do_not_move_what_commands_write(tmp_path, capsys):
    """A run whose stored config names its data through '..' and absolute paths elsewhere:
    `sample`, `eval` and `compare` read those paths but write only under their --out (eval:
    the run directory, its documented cache)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from scorelab.training.checkpoint import CHECKPOINT

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    np.save(elsewhere / "ring.npy", load_dataset("ring", 300, seed=0).numpy())
    run = tmp_path / "runs" / "a"
    assert main(["train", "--data", str(elsewhere / "ring.npy"), *SMALL, "--out", str(run)]) == 0
    # the stored config now reaches its data through '..' from the run directory
    path = run / CHECKPOINT
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    config = json.loads(header["config"])
    config["data"] = str(run / ".." / ".." / "elsewhere" / "ring.npy")
    header["config"] = json.dumps(config)
    save_file(load_file(path), str(path), metadata=header)
    (run / "config.json").write_text(json.dumps(config))

    def files() -> set:
        return {p for p in tmp_path.rglob("*") if p.is_file()}

    before = files()
    out = tmp_path / "out"
    assert main(["sample", str(run), "--n", "20", "--steps", "5", "--out", str(out / "s.png")]) == 0
    assert main(["compare", str(run), "--out", str(out / "cmp"), "--n", "50", "--n-nll", "10",
                 "--steps", "5"]) == 0  # fmt: skip
    assert main(["eval", str(run), "--nll", "vlb", "--n", "20"]) == 0
    capsys.readouterr()
    new = files() - before
    assert new and all(out in p.parents or run in p.parents for p in new), new - {
        p for p in new if out in p.parents
    }
    assert not any(elsewhere in p.parents for p in new)
