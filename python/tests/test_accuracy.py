"""docs/accuracy.md's real-model table is what `python -m kvq_jit.accuracy`
prints now (regenerate with scripts/update-accuracy.sh)."""

import pathlib

from kvq_jit import accuracy

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "accuracy.md"
BEGIN, END = "<!-- kvq_jit.accuracy: begin -->", "<!-- kvq_jit.accuracy: end -->"


def test_the_real_model_table_is_current():
    doc = DOC.read_text(encoding="utf-8")
    committed = doc[doc.index(BEGIN) + len(BEGIN):doc.index(END)].strip()
    assert committed == accuracy.table().strip(), (
        "docs/accuracy.md's real-model table is stale: run scripts/update-accuracy.sh "
        "and check the reading under it")
