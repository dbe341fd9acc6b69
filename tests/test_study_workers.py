"""Studies over several processes: journal file on one machine, PostgreSQL across machines.

Real processes: the CLI starts the workers, the test kills one with SIGKILL mid-trial.
The PostgreSQL tests run where ``COMPRESS_TEST_POSTGRES`` names a reachable server
(``.ci/run`` starts one) and skip elsewhere.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from clitools import compress_cli, quick_study
from optuna.trial import TrialState

from studies.storage import WORKER_ATTR, open_storage
from studies.study import trial_options


def postgres_url() -> str:
    url = os.environ.get("COMPRESS_TEST_POSTGRES")
    if not url:
        pytest.skip("no PostgreSQL server (set COMPRESS_TEST_POSTGRES; .ci/run starts one)")
    try:
        open_storage(url)
    except Exception as error:
        pytest.skip(f"PostgreSQL at {url} unreachable: {error}")
    return url


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def assert_each_trial_once(study: optuna.Study, count: int) -> None:
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(count))
    run_dirs = [t.user_attrs["metrics"]["run_dir"] for t in trials if "metrics" in t.user_attrs]
    assert len(set(run_dirs)) == len(run_dirs)


def test_two_workers_share_the_trials_none_lost_or_repeated(tmp_path):
    args = [*quick_study("prune"), "--epochs", "1", "--trials", "2", "--workers", "2"]
    result = compress_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    journal = tmp_path / "out/pareto.journal"
    assert journal.exists() and not (tmp_path / "out/pareto.db").exists()
    study = load(f"journal:{journal}", "pareto")
    assert_each_trial_once(study, 2)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    pids = {t.user_attrs[WORKER_ATTR]["pid"] for t in study.trials}
    assert len(pids) == 2  # two processes did the work, one trial each
    # each worker samples with its own seed: they do not draw the same (continuous) ratio
    ratios = [t.params["prune.ratio"] for t in study.trials]
    assert len(set(ratios)) == 2
    assert (tmp_path / "out/pareto/pareto.png").exists()

    shown = compress_cli("study", "show", "pareto", "--out", "out", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "2 trials complete, 0 failed" in " ".join(shown.stdout.split())  # title may wrap


def searched_options(technique: str, backbone: str) -> set[str]:
    """The names of the parameters a trial of ``technique`` draws (its technique too)."""
    trial = optuna.create_study().ask()
    trial_options(trial, technique, backbone)
    return {"technique", *trial.params}


def wait_for_running_trial(storage: str, name: str, timeout: float = 120) -> dict:
    """The worker attr of a ghost trial that is training right now: all its options drawn,
    so that a retry of it draws nothing new."""
    drawn = searched_options("ghost", "resnet20")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = load(storage, name)
        except (KeyError, FileNotFoundError, ValueError):
            time.sleep(0.2)
            continue
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            if WORKER_ATTR in trial.user_attrs and set(trial.params) == drawn:
                return {"number": trial.number, **trial.user_attrs[WORKER_ATTR]}
        time.sleep(0.2)
    raise AssertionError("no trial started in time")


def kill_a_worker_then_resume(tmp_path, storage: str, name: str) -> None:
    args = [*quick_study("ghost"), "--epochs", "2", "--study-name", name, "--storage", storage]
    command = [sys.executable, "-m", "compress.cli", *args]
    parent = subprocess.Popen(
        [*command, "--trials", "2", "--workers", "2"],  # one trial each
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = wait_for_running_trial(storage, name)
    os.kill(victim["pid"], signal.SIGKILL)
    _, stderr = parent.communicate(timeout=600)
    assert parent.returncode == 0, stderr
    assert f"(pid {victim['pid']}) ended with exit code -9" in stderr

    study = load(storage, name)
    killed = study.trials[victim["number"]]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["error"].startswith("WorkerDied: worker process")
    assert not study.get_trials(states=(TrialState.RUNNING,))  # consistent: nothing dangling

    resumed = compress_cli(*args, "--trials", "1", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    study = load(storage, name)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params  # the killed trial ran again, once
    assert_each_trial_once(study, len(study.trials))
    assert states.count(TrialState.COMPLETE) == len(states) - 1
    rows = json.loads((tmp_path / "out" / name / "trials.json").read_text())
    (row,) = [row for row in rows if row["trial"] == killed.number]
    assert row["error"].endswith(f"; retried as trial {retries[0].number} (complete)")
    statuses = [
        json.loads(path.read_text())["status"]
        for path in (tmp_path / "out" / name / "trials").glob("*/metrics.json")
    ]
    assert "running" not in statuses  # the killed trial's run says it failed


def test_killing_a_worker_mid_trial_leaves_the_study_consistent_and_resumable(tmp_path):
    journal = tmp_path / "out" / "killed.journal"
    kill_a_worker_then_resume(tmp_path, f"journal:{journal}", "killed")


def test_workers_refuse_sqlite(tmp_path):
    sqlite = f"sqlite:///{tmp_path}/s.db"
    result = compress_cli(
        *quick_study("ghost"), "--workers", "2", "--storage", sqlite, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "SQLite, which locks under concurrent writers" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_two_machines_on_postgresql_share_one_study(tmp_path):
    url = postgres_url()
    name = f"machines-{uuid.uuid4().hex[:8]}"
    args = [*quick_study("ghost"), "--epochs", "1", "--trials", "1", "--study-name", name]
    command = [sys.executable, "-m", "compress.cli", *args, "--storage", url]
    machines = [  # two independent `compress study pareto` commands, as on two machines
        subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    for machine in machines:
        _, stderr = machine.communicate(timeout=600)
        assert machine.returncode == 0, stderr
    study = load(url, name)
    assert_each_trial_once(study, 2)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_killing_a_worker_on_postgresql_is_recovered_too(tmp_path):
    kill_a_worker_then_resume(tmp_path, postgres_url(), f"killed-{uuid.uuid4().hex[:8]}")


def children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_study(tmp_path, name: str, **popen) -> subprocess.Popen:
    args = ["--epochs", "20", "--trials", "4", "--workers", "2", "--study-name", name]
    return subprocess.Popen(
        [sys.executable, "-m", "compress.cli", *quick_study("ghost"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_killing_the_study_process_stops_its_workers(tmp_path):
    parent = start_study(tmp_path, "orphans")
    wait_for_running_trial(f"journal:{tmp_path / 'out' / 'orphans.journal'}", "orphans")
    workers = {pid for pid in children(parent.pid) if alive(pid)}
    assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
    parent.kill()
    parent.communicate(timeout=180)  # the pipes close when the last worker has exited
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if alive(pid)]


def test_ctrl_c_on_a_study_says_one_line_per_process(tmp_path):
    study = start_study(tmp_path, "stopped", start_new_session=True)
    wait_for_running_trial(f"journal:{tmp_path / 'out' / 'stopped.journal'}", "stopped")
    os.killpg(study.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, stderr = study.communicate(timeout=120)
    assert study.returncode == 130, stderr
    assert "Traceback" not in stderr
    # Optuna's own "[I ...]" log lines aside:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("[I ")]
    assert len(lines) <= 3, stderr  # the study, and at most one line per worker
    assert lines[-1] == "compress study: interrupted"


def test_a_worker_says_interrupted_when_a_library_turned_the_ctrl_c_into_an_error(
    monkeypatch, capsys, signal_handlers_restored
):
    """Ctrl-C inside Optuna's journal lock release comes out as the lock's own error (seen
    in CI as a worker's traceback): the worker still ends with its one line and 130."""
    import studies.study
    from compress import interrupts
    from studies.worker import work

    def optimize_interrupted_inside_a_lock(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
            time.sleep(5)
        except KeyboardInterrupt:
            raise FileNotFoundError("the lock file, gone") from None

    monkeypatch.setattr(studies.study, "optimize", optimize_interrupted_inside_a_lock)
    try:
        with pytest.raises(SystemExit) as ended:
            work({"worker_index": 1}, threads=1)
    finally:
        interrupts.handled()
    assert ended.value.code == 130
    assert capsys.readouterr().err == "worker 1: interrupted\n"
