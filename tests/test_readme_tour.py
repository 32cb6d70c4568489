"""The README's API tour, run verbatim (the code block under "## API tour").

Which format ``layout="auto"`` picks depends on timings, so this checks that the block runs
and that its report has the layers and the shape the README shows, not the choice itself.
"""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def tour_code() -> str:
    text = README.read_text()
    section = text.split("## API tour", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README.md: no ```python block under '## API tour'"
    return m.group(1)


def test_readme_api_tour_runs_verbatim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it writes model.safetensors
    monkeypatch.setenv("SPARSEKERN_CACHE", str(tmp_path / "cache"))
    ns = {}
    exec(compile(tour_code(), str(README) + ":API tour", "exec"), ns)
    report = ns["model"].sparsekern_report
    assert set(report) == {"0", "2"}
    assert report["2"][0] == "dense"  # the dense last layer has no zeros to pack
    assert report["0"][0] in ("csc", "2:4", "bsr", "dense") and report["0"][1]
    assert (tmp_path / "model.safetensors").exists()
    assert ns["Y_ref"].shape == (512, 8)


def test_tour_block_is_found():
    assert "sk.sparsify(model, layout=\"auto\"" in tour_code()


def test_tour_pastes_into_the_interactive_interpreter():
    """Pasted line by line into `python`, a compound statement (a `with` block) ends only at a
    blank line: a statement right after one is a SyntaxError there, and what follows never
    runs (the weight copy did not, and the report came out all dense)."""
    import codeop
    pending = []
    for line in tour_code().splitlines():
        pending.append(line)
        try:
            done = codeop.compile_command("\n".join(pending), symbol="single")
        except SyntaxError as e:
            pytest.fail(f"README.md API tour: pasted into the REPL, {line!r} is a SyntaxError "
                        f"({e.msg}); end the block above it with a blank line")
        if done is not None:
            pending = []
