"""`lorasel eval` through the CLI: progress, summary table, and one-line errors for bad input."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os

import pytest
import torch
from typer.testing import CliRunner

from lorasel import models
from lorasel.cli import app
from lorasel.evaluate import load_results
from tests import evaluate_helpers as h

runner = CliRunner()
REAL_LOAD_BASE = models.load_base
FAST = ["--steps", "2", "--size", "16x16", "--seeds", "1", "--strengths", "1", "--batch-size", "4"]


@pytest.fixture(autouse=True)
def tiny_models(monkeypatch):
    """The CLI loads models by spec; here every spec gives the tiny test models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(models, "load_base", lambda spec, **kw: h.tiny_pipeline())
    real_load_scorer = models.load_scorer
    monkeypatch.setattr(
        models,
        "load_scorer",
        lambda spec, **kw: h.tiny_scorer() if spec == "toy" else real_load_scorer(spec, **kw),
    )
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run(tmp_path):
    root = h.make_run(tmp_path / "run", n_checkpoints=1, references=2)
    (tmp_path / "prompts.toml").write_text(h.TEST_PROMPTS)
    return root


def _invoke(run, *args):
    return runner.invoke(app, ["eval", str(run), "--prompts", str(run.parent / "prompts.toml"), *FAST, *args])


def test_eval_prints_progress_warnings_and_a_summary_table(run):
    h.write_lora(run / "checkpoints" / "zkz-000009.safetensors", seed=9, scale=1.0, epoch=9, unfit=True)
    result = _invoke(run)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("mean per checkpoint × strength" in line for line in lines)
    header = next(line for line in lines if "fidelity" in line)
    for column in ("checkpoint", "strength", "fidelity", "flexib.", "adher.", "divers.", "preserv."):
        assert column in header
    rows = [line for line in lines if "zkz-000001" in line or " base " in line]
    assert len(rows) == 2 and not any("zkz-000009" in line for line in lines)
    assert "warning: skipping zkz-000009: " in result.stderr
    assert "2 checkpoints × 1 strength × 4 prompts × 1 seed; trigger 'zkz', class 'star'" in result.stderr
    assert (run / "lorasel" / "results.sqlite").is_file()
    assert "0 of 12 renders already done" in result.stderr  # base + 2 checkpoints, 4 prompts, 1 seed
    again = _invoke(run)
    assert again.exit_code == 0 and "mean per checkpoint" in again.stdout
    assert "8 of 12 renders already done" in again.stderr  # the unfit one is tried (and skipped) again
    assert "warning: skipping zkz-000009" in again.stderr


def test_eval_renders_kohya_sample_prompts(run):
    """kohya's --sample_prompts file as the prompt set: its lines as written (the trigger's lines
    in-domain, the others unrelated), plus the trigger prompt."""
    samples = run.parent / "sample_prompts.txt"
    samples.write_text(
        "# kohya\nzkz star on a white background --n blurry --w 512 --d 7\na yellow square --n blurry\n"
    )
    result = _invoke(run, "--prompts", str(samples))
    assert result.exit_code == 0, result.output
    assert "0 of 6 renders already done" in result.stderr  # base + 1 checkpoint, 3 prompts, 1 seed
    results = load_results(run)
    texts = dict(zip(results.renders["prompt_id"], results.renders["prompt"], strict=True))
    assert texts == {
        "in_domain/0": "zkz star on a white background",
        "trigger/0": "zkz star",
        "unrelated/0": "a yellow square",
    }
    assert results.settings["negative"] == "blurry"  # --n; --w and --d are lorasel's own settings


def test_refine_is_a_second_pass_with_its_own_progress_and_a_note(run):
    h.write_lora(run / "checkpoints" / "zkz-000002.safetensors", seed=2, scale=1.0, epoch=2)
    result = _invoke(run, "--refine", "2")
    assert result.exit_code == 0, result.output
    assert "refining " in result.stderr and "with 2 more seeds per prompt" in result.stderr
    note = next(line for line in result.stdout.splitlines() if line.startswith("refined: "))
    assert "with 3 seeds per prompt, the other" in note and "with 1" in note
    assert result.stdout.count("mean per checkpoint") == 1
    # The table gives each candidate's seeds per prompt: 3 for the refined (and the base), 1 else.
    header = next(line for line in result.stdout.splitlines() if "fidelity" in line)
    assert header.rstrip(" │┃").split()[-1] == "seeds"
    rows = [
        line.rstrip(" │┃").split()[-1]
        for line in result.stdout.splitlines()
        if "zkz-" in line or " base " in line
    ]
    assert set(rows) == {"1", "3"}
    plain = [line for line in _invoke(run).stdout.splitlines() if "fidelity" in line]
    assert plain and "seeds" not in plain[0]  # a plain evaluation: no column


def _broken_reference(tmp_path):
    folder = tmp_path / "refs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"\x89PNG truncated")
    return folder


def _prompt_file(tmp_path, text, name="bad.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_INPUT = {
    "unparsable strength": (lambda t: ["--strengths", "0.5,x"], "strength 'x'"),
    "strength above 2": (lambda t: ["--strengths", "2.5"], "outside [0, 2]"),
    "zero seeds": (lambda t: ["--seeds", "0"], "seeds must be a whole number"),
    "bad size": (lambda t: ["--size", "16by16"], "is not WIDTHxHEIGHT"),
    "zero threads": (lambda t: ["--threads", "0"], "threads must be a whole number"),
    "zero workers": (lambda t: ["--workers", "0"], "workers must be a whole number"),
    "negative refine": (lambda t: ["--refine", "-1"], "refine must be a whole number ≥ 0"),
    "weights without refine": (
        lambda t: ["--weights", "flexibility=1"],
        "--weights only chooses what --refine",
    ),
    "unknown weight": (lambda t: ["--refine", "1", "--weights", "nosuch=1"], "unknown metric 'nosuch'"),
    # Found while the helper process loads the base: it is stopped, and the error is one line.
    "unknown prompt set, 2 workers": (
        lambda t: ["--workers", "2", "--prompts", "nosuchset"],
        "unknown prompt set",
    ),
    "unknown kind": (
        lambda t: ["--prompts", str(_prompt_file(t, '[prompts]\nweird = ["a {trigger}"]\n'))],
        "unknown prompt kind prompts.weird",
    ),
    "bad placeholder": (
        lambda t: ["--prompts", str(_prompt_file(t, '[prompts]\ntrigger = ["a {trigger} {colour}"]\n'))],
        "prompts.trigger[0] uses unknown placeholder {colour}",
    ),
    "kohya prompts without the trigger": (
        lambda t: ["--prompts", str(_prompt_file(t, "a cat on a sofa --n blurry\n", "samples.txt"))],
        "no prompt contains the trigger word 'zkz'",
    ),
    "kohya prompts with two negatives": (
        lambda t: [
            "--prompts",
            str(_prompt_file(t, "zkz star --n a\nzkz star on grass --n b\n", "samples.txt")),
        ],
        "the negative prompts differ",
    ),
    "unknown scorer": (lambda t: ["--scorer", "nosuch"], "unknown scorer 'nosuch'"),
    "unknown open_clip model": (lambda t: ["--scorer", "NoSuchViT:openai"], "unknown open_clip model"),
    "unknown open_clip tag": (
        lambda t: ["--scorer", "ViT-B-32:nosuchtag"],
        "no pretrained weights 'nosuchtag'",
    ),
    "pickle scorer weights": (lambda t: ["--scorer", f"ViT-B-32:{t / 'clip.bin'}"], "are a pickle file"),
    "missing scorer weights": (lambda t: ["--scorer", f"ViT-B-32:{t / 'clip.safetensors'}"], "not found"),
    "unreadable reference": (lambda t: ["--reference", str(_broken_reference(t))], "broken.png"),
    "unknown prompt set": (lambda t: ["--prompts", "nosuchset"], "unknown prompt set"),
    "workdir under a file": (
        lambda t: ["--workdir", str(_prompt_file(t, "mine", "notes.txt") / "state")],
        "cannot create the state folder {t}/notes.txt/state: {t}/notes.txt is a file, not a folder",
    ),
    "workdir is a file": (
        lambda t: ["--workdir", str(_prompt_file(t, "mine", "notes.txt"))],
        "cannot create the state folder {t}/notes.txt: {t}/notes.txt is a file, not a folder",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_with_exit_2(run, tmp_path, case):
    make_args, expected = BAD_INPUT[case]
    result = _invoke(run, *make_args(tmp_path))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and expected.replace("{t}", str(tmp_path)) in result.stderr
    assert "(hint: " in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.output
    assert not list((run / "lorasel" / "renders").rglob("*.png")) if (run / "lorasel").exists() else True
    assert not multiprocessing.active_children()


@pytest.mark.parametrize(
    ("make_base", "message"),
    [
        (lambda t: t / "nowhere" / "model.safetensors", "base model '{base}' not found"),
        (lambda t: t / "nowhere", "base model '{base}' not found"),
        (lambda t: t / "model.ckpt", "{base} is a pickle file"),
        (lambda t: t, "{base} is not a diffusers pipeline folder"),
    ],
    ids=["missing file", "missing folder", "pickle", "not a pipeline"],
)
def test_a_bad_base_is_one_line_before_the_scorer_loads(run, tmp_path, monkeypatch, make_base, message):
    """A mistyped --base fails at once: the default scorer for a real base is fetched from the
    hub, which offline takes half a minute of retries to fail, and would hide the real mistake."""

    def scorer_first(spec, **kw):
        raise AssertionError("the scorer was loaded before the base was checked")

    monkeypatch.setattr(models, "load_base", REAL_LOAD_BASE)
    monkeypatch.setattr(models, "load_scorer", scorer_first)
    base = make_base(tmp_path)
    result = _invoke(run, "--base", str(base))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: " + message.format(base=base)), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header", "could not load base model"),
        (b"", "could not load base model"),
    ],
    ids=["damaged", "empty"],
)
def test_a_bad_single_file_base_is_one_line(run, tmp_path, monkeypatch, content, message):
    monkeypatch.setattr(models, "load_base", REAL_LOAD_BASE)
    (tmp_path / "base.safetensors").write_bytes(content)
    result = _invoke(run, "--base", str(tmp_path / "base.safetensors"), "--scorer", "toy")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not list((run / "lorasel").rglob("*.png")) if (run / "lorasel").exists() else True


def test_base_defaults_to_the_runs_and_threads_are_restored(run, monkeypatch):
    specs, scorers = [], []
    monkeypatch.setattr(models, "load_base", lambda spec, **kw: specs.append(spec) or h.tiny_pipeline())
    monkeypatch.setattr(models, "load_scorer", lambda spec, **kw: scorers.append(spec) or h.tiny_scorer())
    (run / "run.toml").write_text('[model]\nbase = "org/my-sd15"\n[dataset]\npath = "dataset"\n')
    torch.set_num_threads(2)
    result = _invoke(run, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert specs == ["org/my-sd15"] and torch.get_num_threads() == 2
    # A real base is scored by a real CLIP unless --scorer says otherwise, never by the toy scorer.
    assert scorers == ["ViT-L-14:datacomp_xl_s13b_b90k"]
    result = _invoke(run, "--base", "other/base", "--scorer", "ViT-B-32:/w.safetensors", "--threads", "1")
    assert specs[-1] == "other/base" and scorers[-1] == "ViT-B-32:/w.safetensors"
    result = _invoke(run, "--base", "toy", "--threads", "1")
    assert specs[-1] == "toy" and scorers[-1] == "toy"


def test_openai_clip_weights_without_quickgelu_are_warned_of(run, monkeypatch):
    monkeypatch.setattr(models, "load_scorer", lambda spec, **kw: h.tiny_scorer())
    result = _invoke(run, "--scorer", "ViT-B-32:/clip/openai-ViT-B-32.safetensors", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert (
        "warning: scorer 'ViT-B-32:/clip/openai-ViT-B-32.safetensors' looks like OpenAI's CLIP weights"
        in result.stderr
    )
    assert "use ViT-B-32-quickgelu:/clip/openai-ViT-B-32.safetensors" in result.stderr


def test_path_that_is_not_a_folder(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / "nowhere"), *FAST])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'nowhere'} is not a folder (hint: ")


def test_no_checkpoints(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "prompts.toml").write_text(h.TEST_PROMPTS)
    result = _invoke(tmp_path / "empty")
    assert result.exit_code == 2
    assert "error: no LoRA checkpoints (.safetensors) found under" in result.stderr
    # A failed command leaves no state folder (with an empty database) behind; nor one given
    # as --workdir, with the folders made for it.
    assert list((tmp_path / "empty").iterdir()) == []
    result = _invoke(tmp_path / "empty", "--workdir", str(tmp_path / "new" / "state"))
    assert result.exit_code == 2 and "no LoRA checkpoints" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "prompts.toml"]


def test_a_failed_evaluation_leaves_an_existing_state_folder_as_it_was(run, tmp_path):
    """The state folder of an earlier evaluation keeps its database when a later one fails
    before rendering (here: an unknown prompt set)."""
    assert _invoke(run).exit_code == 0
    state = run / "lorasel"
    before = sorted(
        p.relative_to(state) for p in state.rglob("*") if "-wal" not in p.name and "-shm" not in p.name
    )
    result = _invoke(run, "--prompts", "nosuchset")
    assert result.exit_code == 2 and "unknown prompt set" in result.stderr
    after = sorted(
        p.relative_to(state) for p in state.rglob("*") if "-wal" not in p.name and "-shm" not in p.name
    )
    assert after == before and "results.sqlite" in {p.name for p in before}
    assert len(load_results(run).renders) > 0


def test_a_rerun_with_other_render_settings_says_its_renders_are_not_reused(run):
    """Left-out options render everything again (the demo's 12 steps, then `lorasel eval` at the
    base's default): said before rendering, with the options that would continue instead."""
    assert _invoke(run).exit_code == 0  # --steps 2
    result = _invoke(run, "--steps", "3")
    assert result.exit_code == 0, result.output
    assert (
        "warning: the last evaluation here rendered with steps 2 (now 3): its renders are not reused; "
        "pass --steps 2 to continue it" in result.stderr
    )
    assert "0 of 8 renders already done" in result.stderr
    for again in ("3", "2"):  # every render there: nothing to say
        result = _invoke(run, "--steps", again)
        assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr
        assert "8 of 8 renders already done" in result.stderr


def test_a_copied_run_points_pick_at_its_own_files(run, tmp_path):
    """A run evaluated on one machine and copied to another (or moved): pick, rank and the report
    name the files where they are now, not where they were evaluated."""
    import shutil

    assert _invoke(run).exit_code == 0
    copy = shutil.copytree(run, tmp_path / "downloaded" / "run")
    stored = load_results(copy).checkpoints
    assert list(stored["path"]) == [str(copy.resolve() / "checkpoints" / "zkz-000001.safetensors")]
    result = runner.invoke(app, ["pick", str(copy)])
    assert result.exit_code == 0, result.output
    file_line = next(line for line in result.stdout.splitlines() if line.strip().startswith("file"))
    assert file_line.split()[-1] == str(copy.resolve() / "checkpoints" / "zkz-000001.safetensors")


def test_the_piped_table_keeps_a_long_checkpoint_name_on_one_line(run):
    name = "my_character_v2_lr1e-4_dim32_alpha16_adamw8bit-000012"
    h.write_lora(run / "checkpoints" / f"{name}.safetensors", seed=3, scale=1.0, epoch=12)
    result = runner.invoke(app, ["eval", str(run), "--prompts", str(run.parent / "prompts.toml"), *FAST],
                           env={"COLUMNS": "80"})  # fmt: skip
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if name in line)
    assert row.split()[1:3] == [name, "│"] and row.count("│") == 8


def test_no_trigger_anywhere(tmp_path):
    from lorasel.checkpoints.write import save_checkpoint

    save_checkpoint(tmp_path / "loras" / "x.safetensors", h.lora_tensors(1, 0.1), {})
    (tmp_path / "loras" / "prompts.toml").write_text(h.TEST_PROMPTS)
    refs = tmp_path / "refs"
    refs.mkdir()
    result = runner.invoke(app, ["eval", str(tmp_path / "loras"), "--prompts", str(tmp_path / "loras" / "prompts.toml"),
                                 "--reference", str(refs), *FAST])  # fmt: skip
    assert result.exit_code == 2
    assert "needs a trigger word" in result.stderr and "--trigger" in result.stderr


@pytest.mark.parametrize(
    ("family", "tensors", "named"),
    [
        # kohya's SDXL names (SGM layout), trained on a file named in ss_sd_model_name
        (
            "SDXL",
            {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": (640, 640)},
            "noobaiXL.safetensors",
        ),
        # SD 1.x: cross-attention from CLIP-L's 768 wide states
        (
            "SD1",
            {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": (320, 768)},
            None,
        ),
        # OneTrainer's OMI names: SGM paths for SDXL's UNet, read from the cross-attention width
        ("SDXL", {"unet.input_blocks.4.1.transformer_blocks.0.attn2.to_k": (640, 2048)}, None),
    ],
)
def test_real_loras_without_a_base_are_one_line_before_anything_else(tmp_path, family, tensors, named):
    """A kohya output folder evaluated without --base: the toy world is the base by default, and
    it cannot render SD 1.x or SDXL LoRAs. Said first, not after the trigger, class and reference
    errors and the base renders that would come before "none fits"."""
    from lorasel.checkpoints.write import save_checkpoint

    metadata = {"ss_sd_model_name": f"/content/models/{named}"} if named else {}
    for epoch in (1, 2):
        weights = {}
        for stem, (out, inp) in tensors.items():
            weights[f"{stem}.lora_down.weight"] = torch.randn(4, inp)
            weights[f"{stem}.lora_up.weight"] = torch.randn(out, 4)
        save_checkpoint(
            tmp_path / "loras" / f"x-{epoch:06d}.safetensors", weights, {**metadata, "ss_epoch": str(epoch)}
        )
    result = runner.invoke(app, ["eval", str(tmp_path / "loras"), *FAST])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: the checkpoints in {tmp_path / 'loras'} are {family} LoRAs")
    assert "(hint: pass --base" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (f"their metadata names {named})" in result.stderr) == bool(named)
    assert not (tmp_path / "loras" / "lorasel" / "renders").exists()


def test_a_folder_of_flux_loras_says_what_they_are(tmp_path):
    """Every file is a LoRA for another model: the last line says which, not "none found"."""
    from lorasel.checkpoints.write import save_checkpoint

    for epoch in (1, 2):
        stem = "lora_unet_double_blocks_0_img_attn_proj"
        weights = {f"{stem}.lora_down.weight": torch.zeros(4, 8), f"{stem}.lora_up.weight": torch.zeros(8, 4)}
        save_checkpoint(
            tmp_path / "loras" / f"flux-{epoch:06d}.safetensors", weights, {"ss_epoch": str(epoch)}
        )
    result = runner.invoke(app, ["eval", str(tmp_path / "loras"), *FAST])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("warning: skipping flux-00000") for line in lines[:2])
    assert lines[2].startswith(
        f"error: none of the 2 LoRA files under {tmp_path / 'loras'} can be evaluated: "
    )
    assert "is a LoRA for Flux; lorasel evaluates LoRAs for SD 1.x, 2.x and SDXL (hint: " in lines[2]


def test_loras_for_another_family_than_the_base_are_one_line_before_any_render(tmp_path, monkeypatch):
    """SD 1.x LoRAs (CLIP-L's 768-wide cross-attention) with an SDXL base: one line after the
    base loads, before its renders and a "does not fit" per checkpoint."""
    from lorasel.checkpoints.write import save_checkpoint
    from tests.lora_files import shared_pipeline

    monkeypatch.setattr(models, "load_base", lambda spec, **kw: shared_pipeline("sdxl"))
    monkeypatch.setattr(models, "load_scorer", lambda spec, **kw: h.tiny_scorer())
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    weights = {f"{stem}.lora_down.weight": torch.randn(4, 768), f"{stem}.lora_up.weight": torch.randn(320, 4)}
    root = h.make_run(tmp_path / "run", n_checkpoints=0, references=1)
    save_checkpoint(
        root / "checkpoints" / "x.safetensors", weights, {"ss_sd_model_name": "v1-5-pruned.safetensors"}
    )
    (tmp_path / "prompts.toml").write_text(h.TEST_PROMPTS)
    result = runner.invoke(app, ["eval", str(root), "--base", "org/my-sdxl", "--prompts", str(tmp_path / "prompts.toml"),
                                 *FAST])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        "error: the checkpoints are SD1 LoRAs and the base model org/my-sdxl is SDXL: none of them fits it (hint: "
        "pass --base with the SD1 model they were trained on (their metadata names v1-5-pruned.safetensors))"
    )
    assert not (root / "lorasel" / "renders").exists()


def test_corrupt_database(run):
    (run / "lorasel").mkdir()
    (run / "lorasel" / "results.sqlite").write_bytes(b"garbage" * 50)
    result = _invoke(run)
    assert result.exit_code == 2
    assert "is corrupt or not a lorasel database" in result.stderr
    assert (run / "lorasel" / "results.sqlite").read_bytes() == b"garbage" * 50


def test_disk_full(run, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    result = _invoke(run)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1].startswith("error: disk full while writing")


def test_toy_world_end_to_end(tmp_path, monkeypatch):
    """The bundled toy world through the CLI, at reduced size: a trainer-style run with the star
    concept's dataset and three checkpoints; trigger, class word, prompt set and references all
    found on their own; then `lorasel rank` reads the results."""
    from benchmarks.bench_eval import make_fixture

    monkeypatch.undo()  # the real loaders: load_base("toy"), load_scorer("toy")
    run = make_fixture(tmp_path)
    result = runner.invoke(app, ["eval", str(run), "--size", "32x32", "--steps", "2", "--seeds", "1",
                                 "--strengths", "1", "--batch-size", "8"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trigger 'zkz', class 'star'" in result.stderr
    assert "0 of 56 renders already done" in result.stderr  # (base + 3) × 14 prompts of toy-star
    for label in ("base", "zkz-000001", "zkz-000002", "zkz-000003"):
        assert label in result.stdout
    ranked = runner.invoke(app, ["rank", str(run), "--json"])
    assert ranked.exit_code == 0, ranked.output
    assert len(json.loads(ranked.stdout)) == 4


# -- lorasel eval --follow ------------------------------------------------------------------


def test_follow_evaluates_what_is_there_then_stops_when_idle(run):
    result = _invoke(run, "--follow", "--follow-idle", "0.01")
    assert result.exit_code == 0, result.output
    assert "waiting for new checkpoints in" in result.stderr
    assert "1 checkpoint evaluated; lorasel picks zkz-000001 at strength 1" in result.stderr
    assert "0 of 8 renders already done" in result.stderr  # base + 1 checkpoint, 4 prompts, 1 seed
    assert "mean per checkpoint × strength" in result.stdout  # the last evaluation's table
    # Following again starts from the cache (that a pipeline from load_base caches under its spec,
    # so plain `lorasel eval` reuses these renders, is tested in test_evaluate_follow).
    again = _invoke(run, "--follow", "--follow-idle", "0.01")
    assert again.exit_code == 0 and "8 of 8 renders already done" in again.stderr


def test_follow_scores_a_real_base_with_a_real_clip(run, monkeypatch):
    scorers = []
    monkeypatch.setattr(models, "load_scorer", lambda spec, **kw: scorers.append(spec) or h.tiny_scorer())
    result = _invoke(run, "--base", "org/my-sd15", "--follow", "--follow-idle", "0.01")
    assert result.exit_code == 0, result.output
    assert scorers == ["ViT-L-14:datacomp_xl_s13b_b90k"]


@pytest.mark.parametrize(
    ("target", "args", "message"),
    [
        ("run", ["--follow-idle", "0"], "--follow-idle must be above 0 minutes (got 0)"),
        ("run", ["--seeds", "0"], "seeds must be"),
        ("missing", [], "is not a folder"),
    ],
)
def test_follow_bad_input_is_one_line(run, tmp_path, target, args, message):
    path = run if target == "run" else tmp_path / "nope"
    result = runner.invoke(app, ["eval", str(path), "--follow", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr and "hint:" in result.stderr
    assert result.stderr.count("\n") == 1
