"""The notebooks run top to bottom against a result set, and are committed clean.

They take the result set from $TQ_RESULTS_DIR; here that is a synthetic set
made in tmp_path (with a failed cell and two work_us values, so the slicing
and failed-cell paths run too).  The kernel is ipykernel's "python3", which
jupyter_client starts with this interpreter (sys.executable).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from report_synth import write_result_set

from bench.analysing.loading import find_result_dirs

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
NAMES = ("explore_results.ipynb", "choose_batch_size.ipynb")


@pytest.fixture(scope="module")
def nb_results(tmp_path_factory):
    return write_result_set(
        tmp_path_factory.mktemp("nb"),
        consumers=(1, 2, 4, 8),
        work_us=(10.0, 50.0),
        failed=lambda c: c["backend"] == "mpq" and c["consumers"] == 8 and c["work_us"] == 50,
    )


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip outputs"
    source = "".join(c.source for c in nb.cells)
    assert "from bench.analysing.loading import" in source and "def " not in source.split("import", 1)[0]


def _execute(name):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    return nb


def _text(nb) -> str:
    return "\n".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, nb_results, monkeypatch):
    monkeypatch.setenv("TQ_RESULTS_DIR", str(nb_results))
    nb = _execute(name)
    text = _text(nb)
    assert str(nb_results) in text  # it read the set it was pointed at
    images = sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert images >= 3
    if name == "choose_batch_size.ipynb":
        assert "W=50 us" in text  # the largest work_us is the default scenario
        assert "consumer processes" in text


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_on_committed_results(name, monkeypatch):
    """With TQ_RESULTS_DIR unset the notebooks open the newest set under results/."""
    committed = find_result_dirs(REPO / "results")
    if not committed:
        pytest.skip("no result set committed under results/")
    monkeypatch.delenv("TQ_RESULTS_DIR", raising=False)
    nb = _execute(name)
    assert str(committed[-1]) in _text(nb)
