"""A wheel install works on its own: templates shipped as package data, remote code written from the package."""

import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory) -> Path:
    """A fresh virtualenv holding the built wheel; the dev environment's packages (torch, timm, ...) reused through
    a ``.pth`` line, without its editable hf-acts."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: setuptools writes build/ beside the sources
    source.mkdir()
    for part in ("pyproject.toml", "setup.py", "README.md", "hf_acts", "model_cards"):
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / part, source / part)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("hf_acts-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    python = tmp / "venv" / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "dev_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True)
    return python


@pytest.mark.slow
def test_wheel_install_renders_cards_and_saves_remote_code(wheel_python, tmp_path):
    script = textwrap.dedent(f"""
        import subprocess, sys
        from pathlib import Path
        import torch, hf_acts
        assert "site-packages" in hf_acts.__file__ and "{ROOT}" not in hf_acts.__file__, hf_acts.__file__
        assert "peft" not in sys.modules  # the Trainer's modules (and PEFT) load with hf_acts.AIECCallback only
        assert hf_acts.AIECCallback.__module__ == "hf_acts.integrations.trainer" and "peft" in sys.modules
        from hf_acts.cards import TEMPLATES, render_card
        assert TEMPLATES.parent == Path(hf_acts.__file__).parent, TEMPLATES

        import timm
        model = timm.create_model("resnet8_cifar_adrelu", num_classes=4)
        hf_acts.save_timm_model(model, "{tmp_path}/timm")
        card = render_card("{tmp_path}/timm")
        assert "resnet8_cifar" in card.content and "max(x, tau)" in card.content, card.content

        from transformers import LlamaConfig, LlamaForCausalLM, AutoModelForCausalLM
        torch.manual_seed(0)
        lm = hf_acts.convert_glu(LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)), "dynactglu").eval()
        lm.save_pretrained("{tmp_path}/lm")
        ids = torch.arange(10)[None]
        with torch.no_grad():
            torch.save(lm(input_ids=ids).logits, "{tmp_path}/logits.pt")
        code = ("import sys, torch; sys.modules['hf_acts'] = None; from transformers import AutoModelForCausalLM; "
                "m = AutoModelForCausalLM.from_pretrained('{tmp_path}/lm', trust_remote_code=True).eval(); "
                "torch.testing.assert_close(m(input_ids=torch.arange(10)[None]).logits, "
                "torch.load('{tmp_path}/logits.pt'), rtol=1e-5, atol=1e-5); print('remote ok')")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "remote ok" in out.stdout, out.stderr[-2000:]
        print("wheel ok")
    """)
    # HF_ACTS_FUSED=0: the plain formulas, so the test does not build the C++ kernels for this throwaway install
    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_ACTS_FUSED": "0"}
    proc = subprocess.run([str(wheel_python), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "wheel ok" in proc.stdout, proc.stderr[-3000:]


def test_lowest_constraints_pin_every_bound_and_follow_the_extras(tmp_path, monkeypatch):
    """`make test-lowest`'s constraints: each dependency at its lower bound (markers kept), extras followed through
    self-references, torch left as installed, and a dependency without a bound refused."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import lowest_constraints

    lines = lowest_constraints.constraints(["test"])
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, _, bound = dep.partition(">=")
        assert name in ("torch", "torchvision") or f"{name}=={bound}" in lines, dep
    assert any(line.startswith("kernels==") for line in lines)  # through hf-acts[kernels]
    assert "triton==3.8.0; platform_system == \"Linux\"" in lines
    assert not any(line.startswith(("torch==", "torchvision==", "hf-acts")) for line in lines)
    assert not any(line.startswith(("ruff==", "olah==")) for line in lines)  # dev only
    assert len(lines) == len({line.split("==")[0] for line in lines})
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "p"
        dependencies = ["a>=1.2", "b~=2.0"]
        [project.optional-dependencies]
        x = ["p[y]"]
        y = ["c"]
    """))
    monkeypatch.setattr(lowest_constraints, "ROOT", tmp_path)
    assert lowest_constraints.constraints([]) == ["a==1.2", "b==2.0"]
    with pytest.raises(SystemExit, match="no lower bound in pyproject.toml for: c"):
        lowest_constraints.constraints(["x"])
    with pytest.raises(SystemExit, match="no extra 'z'"):
        lowest_constraints.constraints(["z"])
