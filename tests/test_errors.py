"""The failures a user meets first end in one line on stderr and a non-zero exit, without a traceback."""

import json
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import ENV, ROOT

from hf_acts.cli import main as cli
from hf_acts.errors import user_message


def one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hf-acts: error: "), err
    return err[0]


def test_cli_errors_are_one_line(capsys, tmp_path):
    out = str(tmp_path / "out")
    assert "unknown timm model 'resnet_nope'" in one_line_error(
        capsys, ["swap", "resnet_nope", "--act", "fles", "--output-dir", out])
    assert "unknown activation 'nope'; known: adrelu" in one_line_error(
        capsys, ["swap", "resnet18", "--act", "nope", "--output-dir", out])
    assert "--act-kwargs is not valid JSON" in one_line_error(
        capsys, ["swap", "resnet18", "--act", "fles", "--act-kwargs", "{groups: 2}", "--output-dir", out])
    assert "--act-kwargs must be a JSON object" in one_line_error(
        capsys, ["swap", "resnet18", "--act", "fles", "--act-kwargs", "[2]", "--output-dir", out])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("x")
    assert "already exists and is not empty" in one_line_error(
        capsys, ["swap", "resnet18", "--act", "fles", "--output-dir", str(tmp_path / "taken")])
    assert "not a saved model folder" in one_line_error(capsys, ["card", str(tmp_path)])
    assert "not a saved model folder" in one_line_error(capsys, ["publish", str(tmp_path), "--repo-id", "a/b",
                                                                 "--dry-run"])


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="unknown activation"):
        cli(["swap", "resnet18", "--act", "nope", "--output-dir", str(tmp_path / "o"), "--debug"])


def test_unexpected_errors_name_their_type():
    assert user_message(ZeroDivisionError("division by zero")) == "ZeroDivisionError: division by zero"
    assert user_message(KeyError("missing")) == "missing"


def run_offline(commands: list[list[str]], tmp_path) -> list[tuple[int, str]]:
    """Each command (a script path or ``-m module``, then its arguments) run as ``__main__`` in one fresh
    interpreter with an empty Hub cache and HF_HUB_OFFLINE=1 (one interpreter: importing torch, timm and
    transformers costs seconds); ``(exit status, stderr)`` per command."""
    script = textwrap.dedent("""
        import json, runpy, sys
        for command in json.loads(sys.argv[1]):
            sys.argv = command[1:]
            print("@@@ start", file=sys.stderr, flush=True)
            try:
                if command[0] == "-m":
                    runpy.run_module(command[1], run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(command[0], run_name="__main__")
                code = 0
            except SystemExit as e:
                code = e.code
            print(f"@@@ exit {code}", file=sys.stderr, flush=True)
    """)
    commands = [c if c[0] == "-m" else [c[0], *c] for c in commands]
    env = {**ENV, "HF_HOME": str(tmp_path / "empty_hf_home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    results = re.findall(r"@@@ start\n(.*?)@@@ exit (\S+)", proc.stderr, flags=re.S)
    assert len(results) == len(commands), proc.stderr[-3000:]
    return [(int(code) if code.lstrip("-").isdigit() else 1, err) for err, code in results]


def assert_one_line(result: tuple[int, str], prog: str, expected: str) -> None:
    code, stderr = result
    assert code == 1, stderr[-2000:]
    lines = [line for line in stderr.strip().splitlines() if "Warning" not in line and line.strip()]
    assert "Traceback" not in stderr and lines[-1].startswith(f"{prog}: error: "), stderr[-2000:]
    assert expected in lines[-1], lines[-1]


@pytest.mark.slow
def test_offline_and_finetune_errors_are_one_line(tmp_path):
    vision, lm = str(ROOT / "finetune" / "vision.py"), str(ROOT / "finetune" / "lm.py")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("someone else's folder")
    cases = [
        (["-m", "hf_acts.cli", "swap", "resnet34", "--act", "fles", "--pretrained", "--output-dir", "out"], "hf-acts",
         "cannot load 'timm/resnet34.a1_in1k': it is not in the local cache and HF_HUB_OFFLINE=1 is set"),
        (["-m", "hf_acts.cli", "swap", "Qwen/Qwen3-0.6B", "--library", "transformers", "--act", "dynactglu",
          "--output-dir", "out2"], "hf-acts", "not in the local cache"),
        ([vision, "--dataset", "uoft-cs/cifar100", "--model", "resnet8_cifar_adrelu", "--output-dir", "run0"],
         "vision.py", "cannot load 'uoft-cs/cifar100'"),
        ([vision, "--model", "resnet_nope", "--output-dir", "run1"], "vision.py", "unknown timm model 'resnet_nope'"),
        ([vision, "--model", "resnet8_cifar", "--act", "fles", "--act-kwargs", "{x", "--output-dir", "run2"],
         "vision.py", "--act-kwargs is not valid JSON"),
        ([lm, "--model", "Qwen/Qwen3-0.6B", "--max-steps", "1", "--output-dir", "run3"], "lm.py",
         "not in the local cache"),
        ([vision, "--output-dir", str(taken)], "vision.py", "holds files but no training_args.json"),
        ([lm, "--lora-r", "4", "--output-dir", "x"], "", ""),
    ]
    results = run_offline([[*args, "--report-to", "none"] if args[0] != "-m" else args for args, _, _ in cases],
                          tmp_path)
    for (_, prog, expected), result in zip(cases[:-1], results[:-1], strict=True):
        assert_one_line(result, prog, expected)
    code, stderr = results[-1]  # an argument error: argparse's usage line and exit status 2
    assert code == 2 and "--lora-r adapts pretrained weights" in stderr
