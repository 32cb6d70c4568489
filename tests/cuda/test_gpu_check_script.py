"""bench/gpu_check.sh without a GPU: DRY_RUN=1 runs the real stage machinery (limits,
summary, JUnit XML, skip rules) with each GPU stage replaced by a fake command."""
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
STAGES = ["env", "build", "probe", "cuda_tests", "selftime", "opprofile", "triton_tests",
          "memcheck", "racecheck", "bench"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run_script(tmp_path, path=None, **fakes):
    out = tmp_path / "out"
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), BUDGET_S="300", PY=sys.executable,
               RESULTS=str(tmp_path / "results"))
    env.update({k: str(v) for k, v in fakes.items()})
    if path is not None:
        env["PATH"] = path
        env.pop("PY")
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=120)
    return proc, out


def stage_rows(out):
    lines = (out / "summary.txt").read_text().splitlines()
    rows = {}
    for line in lines[2:]:
        parts = line.split()
        if parts and parts[0] in STAGES:
            rows.setdefault(parts[0], line)
    return rows


def test_failures_and_timeouts_do_not_stop_later_stages(tmp_path):
    proc, out = run_script(
        tmp_path,
        FAKE_build='echo "build: ok"',
        FAKE_probe='echo "probe: 3 mismatches -> probe.txt"; exit 1',
        FAKE_cuda_tests="sleep 30", CAP_cuda_tests=2,
        FAKE_selftime='printf "layout M K N\\n2:4 8192 8192 8192 0.5\\n"',
        FAKE_triton_tests='echo "7 passed, 1 failed in 2.00s"; exit 1',
        FAKE_bench='echo "{}" > "$OUT/gpu-dry-run.json"; exit 130')
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = stage_rows(out)
    assert list(rows) == STAGES, (out / "summary.txt").read_text()
    assert " ok " in rows["env"] and " ok " in rows["build"]
    assert "FAILED (rc 1)" in rows["probe"] and "3 mismatches" in rows["probe"]
    assert "TIMEOUT" in rows["cuda_tests"]
    assert " ok " in rows["selftime"] and "FAILED" in rows["triton_tests"]
    assert "7 passed, 1 failed" in rows["triton_tests"]
    assert "INTERRUPTED" in rows["bench"]
    assert "2:4 8192 8192 8192" in (out / "summary.txt").read_text()  # key figures copied
    assert (out / "gpu-dry-run.json").exists()  # the bench's partial JSON stays
    assert (tmp_path / "results" / "gpu-dry-run.json").exists()  # and is copied for commit
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "10" and suite.get("failures") == "4"
    log = (out / "gpu_check.log").read_text()
    assert "numpy:" in log and "torch:" in log  # the env stage ran for real
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back


def test_failed_build_skips_only_the_stages_that_need_it(tmp_path):
    proc, out = run_script(tmp_path, FAKE_build="exit 2", SKIP="racecheck")
    assert proc.returncode == 1
    rows = stage_rows(out)
    assert "FAILED (rc 2)" in rows["build"]
    for name in ("probe", "cuda_tests", "selftime", "opprofile", "memcheck"):
        assert "skipped (build failed)" in rows[name], rows[name]
    assert "skipped (SKIP)" in rows["racecheck"]
    assert " ok " in rows["triton_tests"] and " ok " in rows["bench"]


def test_python3_is_used_when_python_is_missing(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tools = ["bash", "timeout", "date", "mktemp", "cat", "tail", "grep", "sed", "tr", "cut",
             "head", "mkdir", "rm", "nproc", "tee", "ls", "dirname", "sleep", "env"]
    for tool in tools:
        where = shutil.which(tool)
        if where:
            (bindir / tool).symlink_to(where)
    (bindir / "python3").symlink_to(sys.executable)
    proc, out = run_script(tmp_path, path=str(bindir), SKIP="bench")
    assert "python3)" in proc.stdout.splitlines()[0], proc.stdout[:300]
    assert " ok " in stage_rows(out)["env"], (out / "gpu_check.log").read_text()[-2000:]


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="needs a C compiler for bench/segv_bt.c")
def test_a_crashing_test_stage_leaves_its_native_backtrace(tmp_path):
    # A stage process killed by SIGSEGV (here: Python reading address 0) prints its native
    # frames through the preloaded shim, and the script decodes them into the logs.
    crash = f"{sys.executable} -c 'import ctypes; ctypes.string_at(0)'"
    proc, out = run_script(tmp_path, FAKE_build='echo "build: ok"', FAKE_cuda_tests=crash)
    assert proc.returncode == 1
    rows = stage_rows(out)
    assert "FAILED (rc 139)" in rows["cuda_tests"], rows["cuda_tests"]
    log = (out / "gpu_check.log").read_text()
    assert "=== segv_bt: signal 11" in log
    assert "== cuda_tests: native backtrace of the crash (addr2line)" in log
    frames = log.split("native backtrace of the crash (addr2line)")[1].splitlines()[1:]
    assert any("libc.so" in f or "python" in f or "libffi" in f for f in frames), frames[:8]
    assert " ok " in rows["selftime"] and " ok " in rows["triton_tests"]  # later stages ran
