"""Where a backbone's weights come from, and one clear line when they are not there.

``MODEL.BACKBONE.WEIGHTS`` is either a Hugging Face hub id (``org/name``; loaded from the hub cache,
``HF_HUB_CACHE``, or downloaded when online) or a local path. Loaders of transformers, open_clip and
huggingface_hub report a missing file as a stack of wrapped errors (and, online without a network,
after minutes of retries); ``explain_missing_weights`` turns those into one ``InputError`` that names
the model, what was looked for and how to provide it.
"""
import contextlib
import json
import os

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                    RepositoryNotFoundError)

from common.errors import InputError

HUB_PREFIX = "hf-hub:"

HOW_TO_PROVIDE = ("provide them as a hub snapshot in the hub cache (HF_HUB_CACHE/models--ORG--NAME/snapshots/REV/, "
                  "e.g. downloaded with `hf download ORG/NAME` on a connected machine) or set MODEL.BACKBONE.WEIGHTS "
                  "to a local folder holding the same files")


def local_path(weights):
    """The absolute path ``weights`` names on this machine, or None when it names none (a hub id)."""
    path = os.path.abspath(os.path.expanduser(weights))
    if os.path.exists(path):
        return path
    # A hub id is "org/name" (or "name"); anything else that does not exist is a mistyped path.
    looks_like_hub_id = not weights.startswith(("/", ".", "~")) and weights.count("/") <= 1 and "\\" not in weights
    if not looks_like_hub_id:
        raise InputError(f"MODEL.BACKBONE.WEIGHTS={weights!r}: no such file or folder; give an existing local path "
                         "or a hub id (org/name)")
    return None


def hub_id(weights):
    return weights[len(HUB_PREFIX):] if weights.startswith(HUB_PREFIX) else weights


def _missing_file_error(error):
    """The error in ``error``'s chain that says a file or repository is missing, or None."""
    while error is not None:
        if isinstance(error, (OSError, EntryNotFoundError)):
            return error
        error = error.__cause__ or error.__context__
    return None


def _reason(error):
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return "not in the hub cache, and the hub cannot be reached (offline)"
    if isinstance(error, RepositoryNotFoundError):
        return "no such (or no accessible) hub repository"
    if isinstance(error, EntryNotFoundError):
        return "a file is missing from the repository"
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__


@contextlib.contextmanager
def explain_missing_weights(model_name, looked_for, how_to_provide=HOW_TO_PROVIDE):
    """Turns a missing-file error raised inside the block into one ``InputError`` line."""
    try:
        yield
    except InputError:
        raise
    except Exception as error:
        missing = _missing_file_error(error)
        if missing is None:
            raise
        raise InputError(f"{model_name}: weights not found: {looked_for} ({_reason(missing)}); "
                         f"{how_to_provide}") from None


def hub_file(model_name, repo_id, filename):
    """Path of ``filename`` from hub repo ``repo_id`` (hub cache, or a download when online)."""
    with explain_missing_weights(model_name, f"{filename} of hub repo {repo_id}"):
        return hf_hub_download(repo_id, filename)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def open_clip_config(model_name, weights):
    """(contents of ``open_clip_config.json``, open_clip's name for the source) of a hub id or a local
    open_clip folder; reads no weights."""
    folder = local_path(hub_id(weights))
    if folder is not None:
        config_path = os.path.join(folder, "open_clip_config.json")
        if not os.path.isfile(config_path):
            raise InputError(f"{model_name}: MODEL.BACKBONE.WEIGHTS={weights!r} has no open_clip_config.json; give "
                             "an open_clip model folder (open_clip_config.json + open_clip_model.safetensors or "
                             "open_clip_pytorch_model.bin) or a hub id")
        source = f"local-dir:{folder}"
    else:
        config_path = hub_file(model_name, hub_id(weights), "open_clip_config.json")
        source = HUB_PREFIX + hub_id(weights)
    return read_json(config_path), source


def open_clip_image_size(model_name, weights):
    """The input size an open_clip model's config declares (None when it declares none)."""
    size = open_clip_config(model_name, weights)[0]["model_cfg"].get("vision_cfg", {}).get("image_size")
    return size[0] if isinstance(size, (list, tuple)) else size


def load_open_clip(model_name, weights, **model_overrides):
    """An open_clip model and its tokenizer through open_clip's own factory, from a hub id or a local
    folder with ``open_clip_config.json`` and the weights file; ``model_overrides`` replace entries of
    the config's ``model_cfg`` (e.g. ``quick_gelu``). Returns (model in eval mode, tokenizer)."""
    import open_clip

    config, source = open_clip_config(model_name, weights)
    # An HF text tower (BiomedCLIP's BERT) is built from its own hub repo's config.json, even when the
    # CLIP checkpoint holds all weights: check that it is there too, to name it if it is not.
    text_cfg = config["model_cfg"].get("text_cfg", {})
    text_tower = text_cfg.get("hf_model_name")
    overrides = dict(model_overrides)
    folder = local_path(hub_id(weights))
    if folder is not None and text_tower and text_tower.startswith("."):
        # A self-contained local folder names its text tower relative to itself ("." = the folder: its
        # config.json); open_clip would resolve it against the working directory.
        text_tower = os.path.normpath(os.path.join(folder, text_tower))
        overrides["text_cfg"] = {**text_cfg, "hf_model_name": text_tower, "hf_model_pretrained": False}
    if text_tower and not os.path.isdir(os.path.expanduser(text_tower)):
        hub_file(model_name, text_tower, "config.json")

    with explain_missing_weights(model_name, weights):
        model = open_clip.create_model_from_pretrained(source, return_transform=False, **overrides)
        tokenizer = open_clip.get_tokenizer(source)
    return model.eval(), tokenizer
