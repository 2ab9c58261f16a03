"""open_clip scorers by spec: local safetensors weights, pretrained tags from the hub (their
safetensors file only, never the pickle open_clip would fall back to), and bad specs as one-line
errors. The toy CLIP's
registered config and weights stand in for a real model: no network."""

from __future__ import annotations

import importlib
import shutil

import huggingface_hub
import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from torchvision import transforms

from lorasel.errors import ModelLoadError
from lorasel.models import load_scorer
from lorasel.toyworld.model import weights_path
from lorasel.toyworld.scorer import MODEL_NAME, SCORER_WEIGHTS, register_config

TEXTS = ["a red star", "a blue circle on grass"]


@pytest.fixture
def toy_weights(tmp_path):
    register_config()  # the toy CLIP's name in open_clip.list_models(), as a real model's is
    file = tmp_path / "clip weights.safetensors"
    shutil.copy(weights_path(SCORER_WEIGHTS), file)
    return file


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of our own, so the machine's cannot answer."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _cache_file(cache, repo: str, name: str, source) -> None:
    """Put a file into a Hugging Face cache as hf_hub_download leaves it (refs/main → snapshot)."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy(source, snapshot / name)


@pytest.fixture
def no_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)


def _normalize(scorer) -> transforms.Normalize:
    return next(t for t in scorer.preprocess.transforms if isinstance(t, transforms.Normalize))


def test_local_safetensors_weights_load_the_same_model_as_the_toy_spec(toy_weights):
    scorer = load_scorer(f"{MODEL_NAME}:{toy_weights}")
    toy = load_scorer("toy")
    assert scorer.name.startswith(f"{MODEL_NAME}:file-") and scorer.name != toy.name
    torch.testing.assert_close(scorer.embed_texts(TEXTS), toy.embed_texts(TEXTS))


def test_a_pretrained_tag_loads_the_hubs_safetensors_with_the_tags_preprocessing(
    toy_weights, monkeypatch, no_pickle
):
    tag = {"hf_hub": "org/clip/", "mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 0.5), "quick_gelu": True}
    asked = []
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, name: tag if name == "mytag" else {})
    monkeypatch.setattr(
        huggingface_hub,
        "hf_hub_download",
        lambda repo, name, **kw: asked.append((repo, name)) or str(toy_weights),
    )
    scorer = load_scorer(f"{MODEL_NAME}:mytag")
    assert asked == [("org/clip", "open_clip_model.safetensors")] and scorer.name == f"{MODEL_NAME}:mytag"
    assert tuple(_normalize(scorer).mean) == (0.1, 0.2, 0.3)
    assert any(isinstance(m, QuickGELU) for m in scorer.model.modules())


@pytest.mark.parametrize(
    ("hf_hub", "file"),
    [
        ("org/clip/open_clip_pytorch_model.bin", "open_clip_model.safetensors"),
        ("org/clip/open_clip_model.safetensors", "open_clip_model.safetensors"),
        ("org/clip/weights.pth", "weights.safetensors"),
    ],
)
def test_a_tag_asks_the_hub_for_the_safetensors_twin_of_its_file(hf_hub, file, toy_weights, monkeypatch):
    """open_clip's ``hf_hub`` names a repo and, at times, a file: the safetensors file beside it is
    what open_clip prefers, and the only one lorasel asks for."""
    asked = []
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, name: {"hf_hub": hf_hub})
    monkeypatch.setattr(
        huggingface_hub,
        "hf_hub_download",
        lambda repo, name, **kw: asked.append((repo, name)) or str(toy_weights),
    )
    load_scorer(f"{MODEL_NAME}:mytag")
    assert asked == [("org/clip", file)]


def _no_such_file(repo, name, **kw):
    """What hf_hub_download raises for a file the repo does not have (HTTP 404)."""
    from huggingface_hub import errors

    http = importlib.import_module(errors.Response.__module__.split(".")[0])  # httpx2 or httpx
    url = f"https://huggingface.co/{repo}/resolve/main/{name}"
    response = http.Response(404, request=http.Request("HEAD", url))
    raise errors.RemoteEntryNotFoundError(
        f"404 Client Error.\n\nEntry Not Found for url: {url}.", response=response
    )


def test_a_tag_whose_hub_weights_are_pickle_only_is_refused_without_fetching_them(monkeypatch, no_pickle):
    """The hub has no safetensors file for the tag: one line, and the pickle open_clip would fall
    back to is never asked for (it would be refused after a download of up to gigabytes)."""
    register_config()
    asked = []
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, name: {"hf_hub": "org/clip/"})
    monkeypatch.setattr(
        huggingface_hub,
        "hf_hub_download",
        lambda repo, name, **kw: asked.append(name) or _no_such_file(repo, name),
    )
    with pytest.raises(ModelLoadError) as err:
        load_scorer(f"{MODEL_NAME}:mytag")
    message = str(err.value)
    assert message.startswith(f"the hub has no safetensors weights for scorer '{MODEL_NAME}:mytag'")
    assert "never loads the pickle" in message and "\n" not in message
    assert "MODEL:/path/to/weights.safetensors" in err.value.hint
    assert asked == ["open_clip_model.safetensors"]


def test_a_tag_whose_weights_are_not_on_the_hub_is_refused_without_a_download(monkeypatch):
    """A tag with only a URL (older open_clip configs had OpenAI's ``.pt`` archives so): refused
    before any download, since what the URL serves is a pickle."""
    register_config()
    url = {"url": "https://openaipublic.azureedge.net/clip/models/x/ViT-L-14.pt"}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, name: url)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **kw: pytest.fail("downloaded"))
    with pytest.raises(ModelLoadError, match="are not on the Hugging Face Hub") as err:
        load_scorer(f"{MODEL_NAME}:mytag")
    assert "MODEL:/path/to/weights.safetensors" in err.value.hint


def test_a_tag_that_cannot_be_fetched_is_one_line_and_the_hub_clients_retries_are_quiet(monkeypatch, caplog):
    def offline(repo, name, **kw):
        from huggingface_hub.utils import logging as hub_logging

        log = hub_logging.get_logger("huggingface_hub.utils._http")
        log.warning(f"'[Errno -2] Name or service not known' thrown while requesting HEAD {repo}/{name}")
        log.warning("Retrying in 1s [Retry 1/5].")
        raise OSError(
            "An error happened while trying to locate the file on the Hub.\nLast error: no connection"
        )

    from huggingface_hub.utils import logging as hub_logging

    verbosity = hub_logging.get_verbosity()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(ModelLoadError) as err:
        load_scorer("ViT-L-14:datacomp_xl_s13b_b90k")
    message = str(err.value)
    assert message.startswith(
        "could not fetch scorer 'ViT-L-14:datacomp_xl_s13b_b90k' "
        "(laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K/open_clip_model.safetensors): An error happened"
    )
    assert "\n" not in message and "without network" in err.value.hint
    assert [r.getMessage() for r in caplog.records if r.name.startswith("huggingface_hub")] == []
    assert hub_logging.get_verbosity() == verbosity


@pytest.mark.parametrize(
    ("pretrained", "message"),
    [
        ("laion9000_nope", "no pretrained weights 'laion9000_nope' for ViT-L-14"),
        ("/nowhere/clip.safetensors", "not found"),
        ("/nowhere/clip.bin", "a pickle file"),
        ("/nowhere/clip.ckpt", "a pickle file"),
        ("./weights.npz", "not a .safetensors file"),
    ],
)
def test_bad_weights_are_named(pretrained, message, no_pickle):
    with pytest.raises(ModelLoadError) as err:
        load_scorer(f"ViT-L-14:{pretrained}")
    assert message in str(err.value) and err.value.hint


def test_an_existing_pickle_file_is_refused_unread(tmp_path, no_pickle):
    pickled = tmp_path / "clip.pt"
    pickled.write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelLoadError, match="a pickle file; lorasel loads safetensors only"):
        load_scorer(f"ViT-L-14:{pickled}")


def test_weights_of_another_architecture_are_one_error(tmp_path):
    register_config()
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"visual.proj": torch.zeros(3, 3)}, str(other))
    with pytest.raises(
        ModelLoadError, match=f"could not load scorer '{MODEL_NAME}:.*other.safetensors"
    ) as err:
        load_scorer(f"{MODEL_NAME}:{other}")
    assert "\n" not in str(err.value) and MODEL_NAME in err.value.hint


def test_a_tag_already_in_the_hub_cache_loads_without_the_network(
    toy_weights, hf_cache, monkeypatch, no_pickle
):
    def network(repo, name, **kw):
        raise AssertionError("went to the network for cached weights")

    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, name: {"hf_hub": "org/clip/"})
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", network)
    _cache_file(hf_cache, "org/clip", "open_clip_model.safetensors", toy_weights)
    scorer = load_scorer(f"{MODEL_NAME}:mytag")
    torch.testing.assert_close(scorer.embed_texts(TEXTS), load_scorer("toy").embed_texts(TEXTS))


def test_a_cached_pickle_is_not_taken_for_the_weights(tmp_path, hf_cache, monkeypatch, no_pickle):
    """Only the pickle in the cache: the hub is asked for the safetensors file (here: it has
    none), and the cached pickle is left alone."""
    register_config()
    pickled = tmp_path / "open_clip_pytorch_model.bin"
    pickled.write_bytes(b"\x80\x04not really")
    _cache_file(hf_cache, "org/clip", "open_clip_pytorch_model.bin", pickled)
    asked = []
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, name: {"hf_hub": "org/clip/"})
    monkeypatch.setattr(
        huggingface_hub,
        "hf_hub_download",
        lambda repo, name, **kw: asked.append(name) or _no_such_file(repo, name),
    )
    with pytest.raises(ModelLoadError, match="no safetensors weights"):
        load_scorer(f"{MODEL_NAME}:mytag")
    assert asked == ["open_clip_model.safetensors"]


@pytest.mark.parametrize(
    ("spec", "warned"),
    [
        (
            "ViT-L-14:/hf/models--timm--vit_large_patch14_clip_224.openai/snapshots/x/open_clip_model.safetensors",
            True,
        ),
        ("ViT-B-32:~/clip/OpenAI-ViT-B-32.safetensors", True),
        ("ViT-L-14-quickgelu:/hf/timm--vit_large_patch14_clip_224.openai/open_clip_model.safetensors", False),
        ("ViT-L-14:openai", False),  # a tag: open_clip's pretrained config gives QuickGELU
        ("ViT-L-14:/models/datacomp_xl.safetensors", False),
        ("toy", False),
    ],
)
def test_openai_weights_from_a_file_without_quickgelu_are_warned_of(spec, warned):
    """open_clip gives a local file QuickGELU only under a -quickgelu model name; the name the
    warning suggests is one open_clip knows, with QuickGELU."""
    from lorasel.models.scorer import scorer_caveat

    caveat = scorer_caveat(spec)
    assert bool(caveat) == warned
    if warned:
        suggested = caveat.split("use ", 1)[1].split(":", 1)[0]
        assert open_clip.get_model_config(suggested)["quick_gelu"] is True
