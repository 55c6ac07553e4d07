"""The exercise notebook executes top to bottom on a short setting."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "exercise.ipynb"


def test_exercise_notebook_executes(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("STOCHOPT_DATA", str(data_dir))
    monkeypatch.setenv("STOCHOPT_NB_EPOCHS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "max |grad - autograd| =" in outputs and "validation accuracy" in outputs
    grad_line = next(line for line in outputs.splitlines() if "max |grad" in line)
    assert float(grad_line.split("=")[1]) < 1e-10
    assert os.environ.get("STOCHOPT_NB_EPOCHS") == "1"
