"""Nothing the toolkit loads can run code: every ``torch.load`` is ``weights_only=True``, no pickle, no
``eval``/``exec``, no ``trust_remote_code``; a pickled checkpoint is refused without running its code, and
code shipped in a model repository is never imported."""
import ast
import json
import os
import shutil

import pytest
import torch

from bad_inputs import TouchOnLoad, write_checkpoint
from clip_models import build_backbone
from common.errors import CheckpointError
from dassl_compat.checkpoint import load_checkpoint
from helpers_reliability import REPO

SKIPPED_FOLDERS = {"__pycache__", "build", "dist", "node_modules", "venv"}
# A line of this file that loads unsafely on purpose (to show a fixture is harmful) carries this mark;
# the mark exempts it here and nowhere else.
ON_PURPOSE = "# unsafe on purpose:"


def _dotted(node):
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id] + parts[::-1])
    return None


def _keyword(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_constant(node, value):
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(source):
    """[(line number, what)] for each call in ``source`` that could run code from a file or a string."""
    tree = ast.parse(source)
    # What each imported name stands for: "np" -> "numpy", "load" -> "torch.load", "th" -> "torch".
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                if name.asname:
                    aliases[name.asname] = name.name
                else:  # "import a.b" binds "a"
                    aliases[name.name.split(".")[0]] = name.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for name in node.names:
                aliases[name.asname or name.name] = f"{node.module}.{name.name}"
    findings = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None:
            continue
        head, _, rest = name.partition(".")
        full = aliases.get(head, head) + ("." + rest if rest else "")
        problem = None
        weights_only = _keyword(node, "weights_only")
        if full in ("torch.load", "torch.serialization.load") and not _is_constant(weights_only, True):
            problem = f"{name}(...) without weights_only=True"
        elif full in ("eval", "exec", "builtins.eval", "builtins.exec"):
            problem = f"{name}(...) runs a string as code"
        elif full.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib", "shelve") and full.endswith(
                ("load", "loads", "Unpickler", "open")):
            problem = f"{name}(...) unpickles"
        elif full == "numpy.load" and _keyword(node, "allow_pickle") is not None \
                and not _is_constant(_keyword(node, "allow_pickle"), False):
            problem = f"{name}(..., allow_pickle=...) may unpickle"
        elif full in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            problem = f"{name}(...) can build arbitrary objects; use yaml.safe_load"
        trust = _keyword(node, "trust_remote_code")
        if trust is not None and not _is_constant(trust, False):
            problem = f"{name}(..., trust_remote_code=...) may run a model repository's code"
        if problem:
            findings.append((node.lineno, problem))
    return findings


def project_python_files():
    for folder, subfolders, names in os.walk(REPO):
        subfolders[:] = [s for s in subfolders if not s.startswith(".") and s not in SKIPPED_FOLDERS
                         and not s.endswith(".egg-info")]
        for name in names:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def test_no_unsafe_loading_anywhere_in_the_project():
    files = list(project_python_files())
    assert len(files) > 40 and os.path.join(REPO, "train.py") in files
    findings = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        lines = source.splitlines()
        findings += [f"{os.path.relpath(path, REPO)} line {number}: {problem}"
                     for number, problem in unsafe_calls(source)
                     if not (path == os.path.abspath(__file__) and ON_PURPOSE in lines[number - 1])]
    assert not findings, "\n".join(findings)


@pytest.mark.parametrize("source", [
    "import torch\nstate = torch.load(path)",
    "import torch\nstate = torch.load(path, weights_only=False)",
    "import torch as th\nstate = th.load(path, map_location='cpu')",
    "from torch import load\nstate = load(path)",
    "from torch.serialization import load as restore\nstate = restore(path, weights_only=flag)",
    "value = eval(cfg.BACKDOOR.POSITION)",
    "exec(open(script).read())",
    "import pickle\nobj = pickle.loads(data)",
    "import numpy as np\na = np.load(path, allow_pickle=True)",
    "import yaml\ncfg = yaml.load(text, Loader=yaml.Loader)",
    "from transformers import AutoModel\nm = AutoModel.from_pretrained(repo, trust_remote_code=True)",
    "import open_clip\nm = open_clip.create_model(name, trust_remote_code=allow)",
])
def test_the_scan_finds_each_unsafe_call(source):
    assert len(unsafe_calls(source)) == 1, source


@pytest.mark.parametrize("source", [
    "import torch\nstate = torch.load(path, map_location='cpu', weights_only=True)",
    "model.eval()\nlayer = module.eval()",
    "import numpy as np\na = np.load(path)",
    "import yaml\ncfg = yaml.safe_load(text)",
    "m = AutoModel.from_pretrained(repo, trust_remote_code=False)",
    "text = 'torch.load(path)  eval(x)'",
])
def test_the_scan_passes_safe_calls(source):
    assert unsafe_calls(source) == [], source


def test_a_pickled_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "code-ran"
    write_checkpoint(str(tmp_path), "prompt_learner", {"state_dict": {"ctx": torch.zeros(4, 8)}, "epoch": 1,
                                                       "scheduler": TouchOnLoad(marker)})
    path = tmp_path / "prompt_learner" / "model.pth.tar-1"
    assert pickle_would_run_it(path, marker)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(str(path))
    assert "pickled Python object" in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


def pickle_would_run_it(path, marker):
    """The file really is harmful: a plain unpickling (here in the test, never in the project) runs it."""
    torch.load(path, weights_only=False)  # unsafe on purpose: proves the fixture would run code
    ran = marker.exists()
    marker.unlink()
    return ran


EVIL_CODE = """import pathlib
pathlib.Path({marker!r}).write_text("code from the model repository ran")
from transformers import {base} as {name}
"""


def test_code_shipped_in_a_model_repository_is_never_run(standins, tmp_path):
    """BiomedCLIP's text tower is loaded through transformers' Auto classes, which run a repository's
    own code only with trust_remote_code. A tower whose config and tokenizer config point at code files
    (``auto_map``) still loads with transformers' built-in classes, and the code files are never imported."""
    from huggingface_hub import snapshot_download

    from clip_models.standins import BIOMEDCLIP_BERT_ID, write_hub_repo

    marker = str(tmp_path / "code-ran")
    modules = {"configuration_evil": ("BertConfig", "EvilConfig"), "modeling_evil": ("BertModel", "EvilModel"),
               "tokenization_evil": ("BertTokenizer", "EvilTokenizer")}

    def evil_tower(folder):
        shutil.copytree(snapshot_download(BIOMEDCLIP_BERT_ID), folder, dirs_exist_ok=True)
        for module, (base, name) in modules.items():
            with open(os.path.join(folder, module + ".py"), "w") as f:
                f.write(EVIL_CODE.format(marker=marker, base=base, name=name))
        for file, auto_map in (("config.json", {"AutoConfig": "configuration_evil.EvilConfig",
                                                "AutoModel": "modeling_evil.EvilModel"}),
                               ("tokenizer_config.json", {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]})):
            path = os.path.join(folder, file)
            with open(path) as f:
                config = json.load(f)
            with open(path, "w") as f:
                json.dump({**config, "auto_map": auto_map}, f)

    def clip_naming_the_evil_tower(folder):
        shutil.copytree(snapshot_download(standins["biomedclip"]), folder, dirs_exist_ok=True)
        path = os.path.join(folder, "open_clip_config.json")
        with open(path) as f:
            config = json.load(f)
        config["model_cfg"]["text_cfg"].update(hf_model_name="test/evil-tower", hf_tokenizer_name="test/evil-tower")
        with open(path, "w") as f:
            json.dump(config, f)

    cache = os.environ["HF_HUB_CACHE"]
    write_hub_repo(cache, "test/evil-tower", evil_tower)
    write_hub_repo(cache, "test/evil-biomedclip", clip_naming_the_evil_tower)
    backbone = build_backbone("biomedclip", "test/evil-biomedclip")
    with torch.no_grad():
        assert backbone.encode_text(["normal lung"]).shape == (1, backbone.embed_dim)
    assert not os.path.exists(marker)
