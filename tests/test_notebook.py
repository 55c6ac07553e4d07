"""The exercise notebook executes top to bottom on a short setting, answers every question
from its run, and is stored without outputs (so the repository never holds stale numbers)."""

import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "exercise.ipynb"


def test_the_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), \
        "strip the notebook's outputs before committing (jupyter nbconvert --clear-output)"


def test_exercise_notebook_executes(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("STOCHOPT_DATA", str(data_dir))
    monkeypatch.setenv("STOCHOPT_NB_EPOCHS", "1")
    monkeypatch.setenv("STOCHOPT_NB_SEEDS", "2")
    monkeypatch.setenv("STOCHOPT_NB_ROWS", "6000")  # an eighth of the training rows
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    shown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    grad_line = next(line for line in text.splitlines() if "max |grad - autograd|" in line)
    assert float(grad_line.split("=")[1]) < 1e-10
    fd_line = next(line for line in text.splitlines() if "central differences" in line)
    assert float(fd_line.split("=")[1]) < 1e-6
    assert "validation accuracy" in text
    assert "torch.Size([6000, 784])" in text  # the first cell's shapes: the rows asked for
    assert shown.count("**Answer.**") == 3  # questions 4, 5 and 6, from the run
    assert "Final validation accuracy by batch size" in shown and "adam" in shown
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 8
