"""Model cards, Hub upload against a test double, loading by Hub id through a real loopback server, CLI."""

import base64
import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml
from conftest import ENV, ROOT, assert_every_section_has_content
from huggingface_hub import ModelCard, set_client_factory
from huggingface_hub.utils import _http as hub_http

import hf_acts
from hf_acts.cards import render_card
from hf_acts.cli import main as cli
from hf_acts.publish import files_to_upload, publish_to_hub, validate_folder

# the HTTP client the installed huggingface_hub talks through: httpx2 from 2.0 on, httpx in 1.x (the bound is 1.31,
# which make test-lowest runs); the test double must answer the client the Hub library actually builds
httpx = getattr(hub_http, "httpx2", None) or hub_http.httpx

TOKEN = "hf_test_token_never_written_0123456789"


def metadata(card: ModelCard) -> dict:
    return yaml.safe_load(str(card).split("---")[1])


def test_timm_card_from_a_real_run(vision_run):
    card = render_card(vision_run, repo_id="org/resnet8-adrelu-digits")
    meta = metadata(card)
    metrics = json.loads((vision_run / "metrics.json").read_text())
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-classification"
    assert {"hf-acts", "adrelu"} <= set(meta["tags"])
    assert "datasets" not in meta  # digits ships with scikit-learn: no Hub dataset to link
    values = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert values == {"top-1 accuracy": metrics["top1"], "top-5 accuracy": metrics["top5"]}
    text = str(card)
    assert "`stages.2.0.act2` | ReLU | ADReLU | 64" in text  # the swap report as a table
    assert 'timm.create_model("hf-hub:org/resnet8-adrelu-digits", pretrained=True)' in text
    assert "import hf_acts" in text and "@misc{adrelu" in text and "rw2019timm" in text
    assert "| parameters | 78,042 | 92,170 |" in text  # ResNet-8 with 10 classes, and its ADReLU twin
    assert f"{metrics['top1']:.4f}" in text and "training_curves.png" in text
    assert "Speed:" not in text  # the method's paragraphs, not the docstring's implementation notes
    assert "| `--lr` |" in text and "`--pretrained`" not in text  # arguments left unset or False are not listed
    assert_every_section_has_content(text)


@pytest.mark.parametrize("act", [a for a in hf_acts.list_activations() if a != "dynactglu"])
def test_card_of_each_activation_renders_every_section(act, tmp_path):
    import timm

    model = timm.create_model("hf_acts_swapped", base_model="resnet8_cifar", num_classes=4,
                              swaps=[{"act": act, "target": ["relu"], "last": 1}])
    hf_acts.save_timm_model(model, tmp_path)
    card = render_card(tmp_path)
    assert_every_section_has_content(str(card))
    assert "base_model" not in metadata(card)  # not trained from pretrained weights
    assert "not initialised from pretrained" in str(card)


def test_card_structure_check_catches_an_empty_equation():
    with pytest.raises(AssertionError, match="announces"):
        assert_every_section_has_content("---\nx: 1\n---\n# m\n\n``f`` (Eqs. 2-6):\n\nPaper: *ADReLU*.\n")
    with pytest.raises(AssertionError, match="heading without content"):
        assert_every_section_has_content("---\nx: 1\n---\n# m\n\n## Results\n\n## Citation\n\ntext\n")


def test_base_model_only_when_the_run_started_from_pretrained_weights(vision_run, tmp_path):
    scratch = metadata(render_card(vision_run))
    assert "base_model" not in scratch and "base_model_relation" not in scratch
    folder = shutil.copytree(vision_run, tmp_path / "run")
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"]["hf_hub_id"] = "org/resnet8-cifar-weights"
    (folder / "config.json").write_text(json.dumps(config))
    assert "base_model" not in metadata(render_card(folder))  # weights named, but the run did not start from them
    args = json.loads((folder / "training_args.json").read_text())
    (folder / "training_args.json").write_text(json.dumps({**args, "pretrained": True}))
    card = render_card(folder)
    meta = metadata(card)
    assert meta["base_model"] == "org/resnet8-cifar-weights" and meta["base_model_relation"] == "finetune"
    assert "started from the pretrained weights of [`org/resnet8-cifar-weights`]" in str(card)
    card.save(folder / "README.md")
    (folder / "training_args.json").unlink()  # a re-render without the run keeps the card's base_model
    assert metadata(render_card(folder))["base_model"] == "org/resnet8-cifar-weights"


def test_transformers_card_from_a_real_run(lm_run):
    card = render_card(lm_run, repo_id="org/tiny-dynactglu")
    meta = metadata(card)
    metrics = json.loads((lm_run / "metrics.json").read_text())
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert {"hf-acts", "dynactglu"} <= set(meta["tags"])
    (result,) = meta["model-index"][0]["results"][0]["metrics"]
    assert result["type"] == "perplexity" and result["value"] == metrics["perplexity"]
    assert 'from_pretrained("org/tiny-dynactglu", trust_remote_code=True)' in str(card)
    assert 'tokenizer = AutoTokenizer.from_pretrained("org/tiny-dynactglu")' in str(card)  # the run saved one
    assert "@article{bachmann2026dynactivation" in str(card)
    assert_every_section_has_content(str(card))
    assert "base_model" not in meta  # the tiny model is trained from scratch


PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
TINY_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                patch_size=8, num_labels=3)


def _bare_vit_fles():
    from transformers import ViTConfig, ViTModel

    model = ViTModel(ViTConfig(**TINY_VIT)).eval()
    hf_acts.replace_activations(model, "fles", target="gelu")
    return model


def _masked_lm_bert():
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64)).eval()
    hf_acts.replace_activations(model, "dynactivation", target="gelu")
    return model


def _converted_and_swapped_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    hf_acts.convert_glu(model, layers=[0], mode="both")  # a dynActivation on the gate and one on the up branch
    hf_acts.replace_activations(model, "swish_beta", target="silu", select=r"layers\.1\.")
    return model


@pytest.mark.parametrize("make,auto,task,row", [
    (_converted_and_swapped_llama, "AutoModelForCausalLM", "text-generation",
     "| `model.layers.0.mlp` | gated MLP (`hidden_act=silu`) | DynActGLU | `base='silu'`, `mode='both'` |\n"
     "| `model.layers.1.mlp.act_fn` | SiLUActivation | SwishBeta | `channels=64` |"),
    (lambda: hf_acts.create_transformers_model("convnext_adrelu_last_stage", hidden_sizes=[8, 16, 32, 64],
                                               depths=[1, 1, 2, 1], image_size=64, num_labels=3),
     "AutoModelForImageClassification", "image-classification",
     "| `convnext.encoder.stages.3.layers.0.act` | GELUActivation | ADReLU | `channels=256` |"),
    (lambda: hf_acts.create_transformers_model(
        "bert_dynact", auto_class="AutoModelForSequenceClassification", vocab_size=60, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3),
     "AutoModelForSequenceClassification", "text-classification",
     "| `bert.encoder.layer.1.intermediate.intermediate_act_fn` | GELUActivation | DynActivation | `base='gelu'`"),
    (_masked_lm_bert, "AutoModelForMaskedLM", "fill-mask",  # a head's own activation is named in the task model
     "| `cls.predictions.transform.transform_act_fn` | GELUActivation | DynActivation | `base='gelu'`, "
     "`channels=32` |"),
    (_bare_vit_fles, "AutoModel", "feature-extraction",
     "| `layers.0.mlp.activation_fn` | GELUActivation | FleS | `base='gelu'`, `channels=64` |"),
])
def test_swapped_transformers_folders_validate_and_get_a_card(make, auto, task, row, tmp_path):
    """Any swapped transformers model (not only the LM family; also one both converted and swapped): validated with
    the Auto class of its architecture, carded with its swap table, parameter counts and usage."""
    torch.manual_seed(0)
    model = make()
    model.save_pretrained(tmp_path)
    if auto == "AutoModel":
        from transformers import ViTImageProcessor

        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    assert validate_folder(tmp_path) == "transformers"
    card = render_card(tmp_path, repo_id="org/swapped")
    meta, text = metadata(card), str(card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == task
    assert row in text
    state = model.state_dict()
    added = sum(state[k].numel() for k in hf_acts.swap.activation_state_keys(model))
    total = sum({t.data_ptr(): t.numel() for t in state.values()}.values())  # tied weights are saved once
    assert added > 0 and f"| parameters | {total - added:,} | {total:,} |" in text
    assert f'model = {auto}.from_pretrained("org/swapped", trust_remote_code=True)' in text
    assert ('AutoImageProcessor.from_pretrained("org/swapped")' in text) == (auto == "AutoModel")
    assert ("| MLP |" in text) == (auto == "AutoModelForCausalLM")  # the LM family's converted MLPs
    assert_every_section_has_content(text)


def test_validation_refuses_missing_weights_and_cards_need_hf_acts_activations(tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM, ViTConfig, ViTModel

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    hf_acts.convert_glu(llama).save_pretrained(tmp_path / "lm")
    assert validate_folder(tmp_path / "lm") == "transformers"
    weights = load_file(tmp_path / "lm" / "model.safetensors")
    del weights["model.layers.1.mlp.act_fn.beta"]  # from_pretrained alone would only warn and re-initialise it
    save_file(weights, tmp_path / "lm" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"does not load the weights strictly: .*model\.layers\.1\.mlp\.act_fn\.beta"):
        validate_folder(tmp_path / "lm")
    ViTModel(ViTConfig(**TINY_VIT)).save_pretrained(tmp_path / "stock")
    with pytest.raises(ValueError, match="without hf-acts activations"):
        render_card(tmp_path / "stock")


class FakeHub:
    """A test double of the Hub endpoints an upload uses (no request leaves the process)."""

    def __init__(self):
        self.requests, self.commits, self.branches = [], [], []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/api/validate-yaml":
            readme = json.loads(request.content)["content"]
            yaml.safe_load(readme.split("---")[1])  # the front matter must parse
            return httpx.Response(200, json={"errors": [], "warnings": []})
        if path == "/api/repos/create":
            return httpx.Response(200, json={"url": "https://huggingface.co/org/run", "name": "org/run"})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                         "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            self.commits.append([json.loads(line) for line in request.content.decode().splitlines()])
            return httpx.Response(200, json={"commitUrl": "https://huggingface.co/org/run/commit/1",
                                              "commitOid": "1" * 40, "pullRequestUrl": None})
        if "/branch/" in path:
            self.branches.append(path.rsplit("/", 1)[1])
            return httpx.Response(200, json={})
        if path == "/api/agent-harnesses":
            return httpx.Response(200, json=[])
        return httpx.Response(404, json={"error": f"not part of the test double: {path}"})


@pytest.fixture
def fake_hub():
    hub = FakeHub()
    set_client_factory(lambda: httpx.Client(transport=httpx.MockTransport(hub)))
    yield hub
    set_client_factory(httpx.Client)


def test_upload_sends_files_card_and_commit(vision_run, tmp_path, fake_hub, caplog):
    folder = tmp_path / "run"
    shutil.copytree(vision_run, folder)
    assert publish_to_hub(folder, "org/run", dry_run=True) == files_to_upload(folder)
    assert not fake_hub.requests  # a dry run sends nothing
    publish_to_hub(folder, "org/run", token=TOKEN)
    (commit,) = fake_hub.commits
    header, files = commit[0]["value"], {op["value"]["path"]: op["value"] for op in commit[1:]}
    assert header["summary"].startswith("Upload hf-acts model")
    assert set(files) == set(files_to_upload(folder)) and not any(p.startswith("checkpoints") for p in files)
    for path, op in files.items():
        assert base64.b64decode(op["content"]) == (folder / path).read_bytes()
    card = base64.b64decode(files["README.md"]["content"]).decode()
    assert yaml.safe_load(card.split("---")[1])["tags"][0] == "hf-acts"
    created = json.loads(next(r for r in fake_hub.requests if r.url.path == "/api/repos/create").content)
    assert created["name"] == "run" and created["organization"] == "org"
    assert all(r.url.host == "huggingface.co" for r in fake_hub.requests)  # served by the double, not a network
    everything = "".join(p.read_text(errors="ignore") for p in folder.rglob("*") if p.is_file())
    assert TOKEN not in everything and TOKEN not in caplog.text and TOKEN not in json.dumps(commit)
    publish_to_hub(folder, "org/run", token=TOKEN)  # re-publishing the same folder is safe
    assert len(fake_hub.commits) == 2 and not fake_hub.branches
    publish_to_hub(folder, "org/run", revision="v1", token=TOKEN)  # a branch: created, then committed to
    assert fake_hub.branches == ["v1"] and fake_hub.requests[-1].url.path.endswith("/commit/v1")


def test_publish_refuses_a_broken_folder(vision_run, tmp_path, fake_hub):
    folder = tmp_path / "run"
    shutil.copytree(vision_run, folder, ignore=shutil.ignore_patterns("checkpoints"))
    (folder / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ValueError, match="does not load as a timm model"):
        publish_to_hub(folder, "org/run", token=TOKEN)
    assert not fake_hub.requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub_server(tmp_path):
    """olah, a Hub-compatible server, serving local git repositories on 127.0.0.1 in offline mode."""
    port = free_port()
    mirrors = tmp_path / "mirrors"
    config = tmp_path / "olah.toml"
    config.write_text(textwrap.dedent(f"""
        [basic]
        host = "127.0.0.1"
        port = {port}
        repos-path = "{tmp_path / 'repos'}"
        mirrors-path = ["{mirrors}"]

        [accessibility]
        offline = true
    """))
    olah = shutil.which("olah-cli", path=str(ROOT / ".venv" / "bin")) or shutil.which("olah-cli")
    proc = subprocess.Popen([olah, "-c", str(config)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            httpx.get(endpoint + "/api/models/none/none", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.3)

    def add(folder, repo_id):
        dest = mirrors / "models" / repo_id
        shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("checkpoints"))
        git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
        for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "publish"]):
            subprocess.run([*git, *cmd], cwd=dest, check=True)

    yield endpoint, add
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_load_by_hub_id_through_a_real_server(hub_server, vision_run, lm_run, tmp_path):
    endpoint, add = hub_server
    add(vision_run, "org/resnet8-adrelu")
    add(lm_run, "org/tiny-lm")
    # olah answers a request for a file the repository lacks with 401 where the Hub answers 404; transformers' probe
    # for adapter_config.json (made when peft is installed) reads a 401 as "no such repository": hide peft
    no_adapter_probe = "sys.modules['peft'] = None"
    script = textwrap.dedent(f"""
        import sys
        {no_adapter_probe}
        import torch, hf_acts, timm
        from transformers import AutoModelForImageClassification
        x = torch.randn(2, 3, 32, 32)
        hub = timm.create_model("hf-hub:org/resnet8-adrelu", pretrained=True).eval()
        local = timm.create_model("local-dir:{vision_run}", pretrained=True).eval()
        wrapped = AutoModelForImageClassification.from_pretrained("org/resnet8-adrelu").eval()
        with torch.no_grad():
            assert torch.equal(hub(x), local(x)) and torch.equal(wrapped(pixel_values=x).logits, local(x))
        print("timm ok")
    """)
    remote = textwrap.dedent(f"""
        import sys
        sys.modules["hf_acts"] = None  # a machine without hf-acts
        {no_adapter_probe}
        import torch
        from transformers import AutoModelForCausalLM
        ids = torch.arange(20).view(2, 10)
        hub = AutoModelForCausalLM.from_pretrained("org/tiny-lm", trust_remote_code=True).eval()
        local = AutoModelForCausalLM.from_pretrained("{lm_run}", trust_remote_code=True).eval()
        with torch.no_grad():
            assert torch.equal(hub(input_ids=ids).logits, local(input_ids=ids).logits)
        print("transformers ok")
    """)
    env = {**ENV, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf_home")}
    for code, expected in ((script, "timm ok"), (remote, "transformers ok")):
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and expected in proc.stdout, proc.stderr[-3000:]


def test_cli_swap_card_publish_dry_run(tmp_path, capsys):
    out = tmp_path / "swapped"
    cli(["swap", "resnet18", "--act", "fles", "--target", "relu", "--select", r"^layer4\.1", "--num-classes", "4",
         "--output-dir", str(out)])
    assert "`layer4.1.act1` | ReLU | FleS" in capsys.readouterr().out
    meta = metadata(ModelCard.load(out / "README.md"))
    assert "model-index" not in meta  # untrained: no numbers
    assert "base_model" not in meta  # built without --pretrained: not resnet18's published weights
    cli(["card", str(out), "--repo-id", "org/r18-fles"])
    assert "hf-hub:org/r18-fles" in (out / "README.md").read_text()
    cli(["publish", str(out), "--repo-id", "org/r18-fles", "--dry-run"])
    assert "model.safetensors" in capsys.readouterr().out


def test_cli_swap_of_transformers_models(tmp_path, capsys):
    """`hf-acts swap --library transformers`: an activation into any architecture (loaded with the Auto class of its
    architecture, its processor kept), or an LM's MLPs converted to dynActGLU; both folders reload and publish."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        LlamaConfig,
        LlamaForCausalLM,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    torch.manual_seed(0)
    vit = ViTForImageClassification(ViTConfig(**TINY_VIT)).eval()
    vit.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    cli(["swap", str(tmp_path / "vit"), "--library", "transformers", "--act", "fles", "--target", "gelu",
         "--select", r"layers\.1\.", "--output-dir", str(tmp_path / "vit_fles")])
    assert "| `vit.layers.1.mlp.activation_fn` | GELUActivation | FleS | 64 |" in capsys.readouterr().out
    swapped = AutoModelForImageClassification.from_pretrained(tmp_path / "vit_fles").eval()
    with torch.no_grad():  # FleS over GELU starts as GELU
        torch.testing.assert_close(swapped(pixel_values=PIXELS).logits, vit(pixel_values=PIXELS).logits)
    assert (tmp_path / "vit_fles" / "preprocessor_config.json").exists()
    assert "base_model" not in metadata(ModelCard.load(tmp_path / "vit_fles" / "README.md"))  # a local folder
    cli(["swap", str(tmp_path / "vit"), "--library", "transformers", "--act", "fles",  # --target: relu,silu,gelu
         "--num-classes", "5", "--output-dir", str(tmp_path / "vit_fles_5")])
    five = AutoModelForImageClassification.from_pretrained(tmp_path / "vit_fles_5").eval()
    assert sum(isinstance(m, hf_acts.FleS) for m in five.modules()) == TINY_VIT["num_hidden_layers"]
    assert five.classifier.out_features == 5 and torch.equal(five.vit.embeddings.patch_embeddings.projection.weight,
                                                             vit.vit.embeddings.patch_embeddings.projection.weight)
    card = str(render_card(tmp_path / "vit_fles", "org/vit-fles"))
    assert 'AutoImageProcessor.from_pretrained("org/vit-fles")' in card

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    llama.save_pretrained(tmp_path / "llama")
    cli(["swap", str(tmp_path / "llama"), "--library", "transformers", "--act", "dynactglu", "--layers", "1",
         "--output-dir", str(tmp_path / "llama_glu")])
    assert "no tokenizer or processor saved" in capsys.readouterr().err
    converted = AutoModelForCausalLM.from_pretrained(tmp_path / "llama_glu").eval()
    assert [type(layer.mlp).__name__ for layer in converted.model.layers] == ["LlamaMLP", "DynActGLU"]
    ids = torch.arange(20).view(2, 10)
    with torch.no_grad():
        assert torch.equal(converted(input_ids=ids).logits, llama(input_ids=ids).logits)
    for folder in ("vit_fles", "llama_glu"):
        cli(["publish", str(tmp_path / folder), "--repo-id", f"org/{folder}", "--dry-run"])
        assert "model.safetensors" in capsys.readouterr().out


def test_cli_help_and_list(capsys):
    for command in ("list", "swap", "card", "publish", "bench"):
        with pytest.raises(SystemExit) as exit_info:
            cli([command, "--help"])
        assert exit_info.value.code == 0
    cli(["list"])
    out = capsys.readouterr().out
    assert "efficientnetv2_s_adrelu" in out and "hf_acts_qwen3" in out and "dynactglu" in out

