"""scores.csv and report.html: content, self-containment, escaping of hostile text, and (in
headless Chromium) that the table sorts, every image loads and no injected script runs."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lorasel.rank import rank
from lorasel.rank.ranking import TABLE_COLUMNS
from lorasel.report import write_csv, write_html
from lorasel.results import BASE
from tests.cdp import Browser, find_chromium
from tests.synthetic_results import make_results, overfitting, refined_results

SCRIPT_PAYLOAD = "<script>window.pwned=1;document.title='pwned'</script>"
IMG_PAYLOAD = "<img src=x onerror=\"window.pwned=2;document.title='pwned'\">"


def hostile_results(state_dir: Path):
    """A run whose file names, prompts, metadata and settings all carry script payloads."""
    results = make_results(
        checkpoints=3,
        strengths=(0.5, 1.0),
        seeds=2,
        labels=[f"zkz{IMG_PAYLOAD}-000001", "zkz-000002", f"=HYPERLINK(1){SCRIPT_PAYLOAD}"],
        prompt_text=lambda pid, kind: f"a zkz star {SCRIPT_PAYLOAD} {IMG_PAYLOAD} ({pid})",
        metadata={
            "ss_output_name": SCRIPT_PAYLOAD,
            "modelspec.title": IMG_PAYLOAD,
            f"key{IMG_PAYLOAD}": "x" * 5000,
        },
        state_dir=state_dir,
        image_size=64,
    )
    results.settings["base"] = SCRIPT_PAYLOAD
    return results


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("run") / f"run{IMG_PAYLOAD.replace('/', '')}"
    state = root / "lorasel"
    results = hostile_results(state)
    # One render missing, one pointing out of the state folder: both become placeholders.
    renders = results.renders
    first_seed = renders.index[renders["seed_index"] == 0]
    renders.loc[first_seed[0], "image"] = "renders/not-there.png"
    renders.loc[first_seed[1], "image"] = "../../../../etc/passwd"
    ranking = rank(results, n_boot=200)
    html_path = write_html(results, ranking, root / "report" / "report.html", state, title=root.name)
    csv_path = write_csv(ranking, root / "report" / "scores.csv")
    return {"results": results, "ranking": ranking, "html": html_path, "csv": csv_path}


def test_csv_has_every_row_and_column_and_defuses_formulas(report):
    table = pd.read_csv(report["csv"])
    ranking = report["ranking"]
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert len(table) == 3 * 2 + 1
    np.testing.assert_allclose(table["score"], ranking.table["score"])
    np.testing.assert_allclose(table["p_best"], ranking.table["p_best"].astype(float))
    assert table.loc[table["checkpoint"] == BASE, "rank"].isna().all()
    formula = table[table["label"].str.contains("HYPERLINK")]
    assert (formula["label"].str.startswith("'=")).all() and (
        formula["checkpoint"].str.startswith("'=")
    ).all()


def test_html_is_self_contained_and_escapes_every_hostile_text(report):
    html = report["html"].read_text()
    parser = _Tags()
    parser.feed(html)
    tags = parser.tags
    scripts = [a for t, a in tags if t == "script"]
    assert len(scripts) == 1 and not scripts[0]  # ours, inline
    # Nothing is fetched: no src/href outside data: URIs, no <link>, no CDN.
    for tag, attrs in tags:
        assert tag not in ("link", "iframe", "object", "embed", "base")
        for name in ("src", "href"):
            if attrs.get(name) is not None:
                assert attrs[name].startswith("data:image/"), (tag, attrs[name][:40])
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    # The payloads are in the page as text, escaped.
    assert "window.pwned" in html
    assert "<script>window.pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.pwned=1;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    # Only our script may run: the CSP names it by hash.
    csp = next(
        a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    )
    digest = base64.b64encode(hashlib.sha256("".join(parser.script_text).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    # Long metadata values are clipped.
    assert "x" * 400 not in html and "(5000 characters)" in html


def test_html_content(report):
    html = report["html"].read_text()
    ranking = report["ranking"]
    parser = _Tags()
    parser.feed(html)
    images = [a for t, a in parser.tags if t == "img"]
    # 2 plots + per prompt (8): 3 checkpoints x 2 strengths + base, first seed only, minus 2 placeholders.
    assert len(images) == 2 + 8 * (3 * 2 + 1) - 2
    assert html.count('class="missing"') == 2
    assert sum(1 for t, a in parser.tags if t == "details" and a.get("class") == "grid") == 8
    assert len(re.findall(r'<td class="pick">', html)) == 8  # the pick outlined in every grid
    assert "Recommendation" in html and f"{ranking.best.strength:g}" in html
    # The pick as an A1111 prompt tag, escaped like every text from the file names.
    stem = Path(ranking.best.path).stem
    tag = f"&lt;lora:{escape(stem)}:{ranking.best.strength:g}&gt;"
    assert f'In an A1111 or Forge prompt: <code class="tag">{tag}</code>' in html
    assert "Fidelity against adherence." in html and "(fidelity-adherence)" in html
    # Candidates are tied with the pick at 2 seeds per prompt: the report says how to separate them.
    contest = ranking.table[ranking.table["checkpoint"] != BASE]
    tied = int(contest["tied"].iloc[1:].sum())
    assert tied >= 2
    assert f"{tied} other candidates could be the best at 2 seeds per prompt" in html and "--seeds 4" in html
    assert html.count("<tr") >= len(ranking.table)
    assert len(html) < 400_000


def test_html_says_when_a_weighted_metric_was_not_measured(tmp_path):
    quality = overfitting(3)
    results = make_results(
        checkpoints=3, quality=lambda e, s: {k: v for k, v in quality(e, s).items() if k != "adherence"}
    )
    html = write_html(results, rank(results, n_boot=50), tmp_path / "r.html", tmp_path).read_text()
    assert "adherence not used (not measured)" in html and "flexibility not used" not in html
    assert "Note: adherence was not measured in this evaluation" in html


def test_html_shows_each_candidates_seeds_only_after_a_refinement(tmp_path):
    full = make_results(checkpoints=3, strengths=(1.0,), seeds=3)
    first = str(full.checkpoints["checkpoint"].iloc[0])
    refined = refined_results(full, {(first, 1.0)}, seeds=2)
    headers = {}
    for name, results in (("plain", full), ("refined", refined)):
        html = write_html(results, rank(results, n_boot=50), tmp_path / f"{name}.html", tmp_path).read_text()
        headers[name] = re.findall(r"<th scope=\"col\" data-key=\"(\w+)\"", html)
    assert "seeds" not in headers["plain"]
    assert headers["refined"] == [*headers["plain"], "seeds"]


def test_html_is_written_atomically(report, tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("previous")

    def boom(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr("lorasel.report.plots.tradeoff", boom)
    with pytest.raises(RuntimeError):
        write_html(report["results"], report["ranking"], target, tmp_path)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


@pytest.mark.browser
def test_report_in_headless_chromium(report, tmp_path):
    executable = find_chromium()
    if executable is None:
        pytest.skip("chromium is not installed: apt-get install chromium (Debian) to run the browser tests")
    browser = Browser(executable, tmp_path / "profile")
    try:
        url = report["html"].resolve().as_uri()
        browser.open(url)
        # No injected script ran: neither flag nor title changed, and no element came from the payloads.
        assert browser.evaluate("typeof window.pwned") == "undefined"
        assert browser.evaluate("document.title").startswith("lorasel report: run")
        assert browser.evaluate("document.scripts.length") == 1
        assert browser.evaluate("document.querySelectorAll('img[src=\"x\"], [onerror]').length") == 0
        assert SCRIPT_PAYLOAD in browser.evaluate("document.body.innerText")
        # Every image loaded.
        count, loaded = browser.evaluate(
            "[document.images.length, Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length]"
        )
        assert count == loaded == 2 + 8 * 7 - 2
        # The table sorts on click: epoch ascending, then descending; text columns alphabetically.
        column = "Array.from(document.querySelectorAll('#ranking-table tbody tr')).map(r => r.cells[{}].dataset.sort)"
        browser.evaluate("document.querySelector('#ranking-table th[data-key=epoch]').click()")
        epochs = [float(v) if v else None for v in browser.evaluate(column.format(2))]
        assert epochs == [1, 1, 2, 2, 3, 3, None]  # blanks (the base model) last
        browser.evaluate("document.querySelector('#ranking-table th[data-key=epoch]').click()")
        assert [float(v) if v else None for v in browser.evaluate(column.format(2))] == [
            3,
            3,
            2,
            2,
            1,
            1,
            None,
        ]
        browser.evaluate("document.querySelector('#ranking-table th[data-key=p_best]').click()")
        p_best = [float(v) for v in browser.evaluate(column.format(12)) if v]
        assert p_best == sorted(p_best) and len(p_best) == 6
        browser.evaluate("document.querySelector('#ranking-table th[data-key=checkpoint]').click()")
        labels = browser.evaluate(column.format(1))
        assert labels == sorted(labels, key=str.lower)
        assert browser.evaluate("typeof window.pwned") == "undefined"
    finally:
        browser.close()


def test_thumbnails_are_small_cached_and_never_leave_the_state_folder(tmp_path):
    from PIL import Image

    from lorasel.report.thumbnails import CACHE_DIRNAME, thumbnail

    state = tmp_path / "state"
    (state / "renders").mkdir(parents=True)
    rng = np.random.default_rng(0)
    big = Image.fromarray((rng.random((64, 48, 3)) * 255).astype("uint8")).resize((512, 384))
    big.save(state / "renders" / "big.png")
    (tmp_path / "secret.png").write_bytes((state / "renders" / "big.png").read_bytes())
    (state / "renders" / "broken.png").write_bytes(b"not a png")

    uri = thumbnail(state, "renders/big.png")
    png = base64.b64decode(uri.split(",", 1)[1])
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (96, 72) and image.mode == "P"
    assert len(png) < 16_000
    cached = list((state / CACHE_DIRNAME).iterdir())
    assert len(cached) == 1
    cached[0].write_bytes(b"cached")  # a second call reads the cache instead of recomputing
    assert base64.b64decode(thumbnail(state, "renders/big.png").split(",", 1)[1]) == b"cached"
    assert thumbnail(state, "renders/missing.png") is None
    assert thumbnail(state, "renders/broken.png") is None
    assert thumbnail(state, "../secret.png") is None
    assert thumbnail(state, str(tmp_path / "secret.png")) is None


def test_html_names_an_embedding_the_picked_file_bundles_escaped(tmp_path):
    """A pivotal-tuning LoRA: the report says which embedding goes in the prompt, its name (from a
    stranger's file) shown as text."""
    import torch
    from safetensors.torch import save_file

    results = make_results(checkpoints=2, strengths=(1.0,), seeds=2, state_dir=tmp_path / "lorasel")
    ranking = rank(results, n_boot=50)
    picked = Path(ranking.best.path)
    picked.parent.mkdir(parents=True, exist_ok=True)
    name = "<b>zkz</b>"
    save_file(
        {f"bundle_emb.{name}.clip_l": torch.zeros(2, 8), "lora_unet_x.lora_down.weight": torch.zeros(1, 8)},
        picked,
    )
    html = write_html(results, ranking, tmp_path / "report.html", tmp_path / "lorasel").read_text()
    assert 'bundles the textual-inversion embedding <code class="tag">&lt;b&gt;zkz&lt;/b&gt;</code>' in html
    assert "<b>zkz</b>" not in html
    picked.unlink()  # the file gone: the report stands on the stored results, without the line
    html = write_html(results, ranking, tmp_path / "report.html", tmp_path / "lorasel").read_text()
    assert "textual-inversion embedding" not in html
