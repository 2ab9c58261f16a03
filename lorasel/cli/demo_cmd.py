"""`lorasel demo [--workdir DIR]`: train, evaluate, rank and report on the toy world, end to end."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from lorasel.cli.app import app
from lorasel.cli.ranking_output import describe, printable, table_text, warnings_to_stderr
from lorasel.demo import DEMO_CONCEPT, DEMO_SEEDS, DEMO_STEPS

SELECTOR_NAMES = {
    "lorasel": "lorasel pick",
    "lowest_loss": "lowest training loss",
    "lowest_val_loss": "lowest validation loss",
    "last_epoch": "last epoch",
    "oracle": "oracle's best",
}


@app.command("demo")
def demo_command(
    workdir: Annotated[
        Path,
        typer.Option("--workdir", help="Where the demo's run, renders and report go (reused on a rerun)."),
    ] = Path("lorasel-demo"),
    concept: Annotated[
        str, typer.Option(help="Toy-world concept: star, heart, cross, moon, ring or arrow.")
    ] = DEMO_CONCEPT,
    epochs: Annotated[
        int | None,
        typer.Option(help="Training epochs, one checkpoint each. [default: the toyworld preset's]"),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per prompt in the evaluation.")] = DEMO_SEEDS,
    refine: Annotated[
        int,
        typer.Option(
            help="After the evaluation, N more seeds per prompt for just the candidates that could be "
            "the best (as `lorasel eval --refine N`); the oracle judges on the seeds every candidate has."
        ),
    ] = 0,
    steps: Annotated[
        int,
        typer.Option(
            help="Sampling steps per render (`lorasel eval` uses the toy base's 20; the demo's 12 score the "
            "same on the toy world, in less time)."
        ),
    ] = DEMO_STEPS,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads. Training takes all but one, and the last one renders each checkpoint "
            "as soon as it is saved; after training, rendering runs as many one-thread processes, which "
            "the toy world's small ops use better than threads. [default: the cores, at most 4]"
        ),
    ] = None,
    tui: Annotated[
        bool,
        typer.Option(
            "--tui/--no-tui", help="Open the TUI at the end (only in a terminal; else the table is printed)."
        ),
    ] = True,
) -> None:
    """Train a toy-world LoRA, evaluate every epoch at three strengths, rank, report, and let the
    oracle judge lorasel's pick against the lowest-loss pick. About 5 minutes on 2 CPU cores."""
    from lorasel import demo
    from lorasel.cli.eval_cmd import _ProgressBar
    from lorasel.cli.train_cmd import ProgressView
    from lorasel.errors import ConfigError
    from lorasel.evaluate import evaluate
    from lorasel.evaluate.follow import Follower, FollowSettings, follow_threads
    from lorasel.rank import rank, read_loss
    from lorasel.report import write_csv, write_html

    demo.check_concept(concept)
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (got {seeds})", hint="use --seeds 2")
    if refine < 0:
        raise ConfigError(f"--refine must be 0 or more (got {refine})", hint="use e.g. --refine 2")
    if steps < 1:
        raise ConfigError(
            f"--steps must be at least 1 (got {steps})", hint=f"omit it for the demo's {DEMO_STEPS}"
        )
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be at least 1 (got {epochs})", hint="omit it for the preset's 10")
    if threads is None:
        threads = demo.default_threads()
    elif threads < 1:
        raise ConfigError(f"--threads must be at least 1 (got {threads})", hint="omit it to use the cores")
    run_dir = workdir / "run"
    demo.check_reusable(run_dir, concept, epochs)
    say = _Say()
    say(f"lorasel demo: a LoRA on the toy world's {concept!r} concept, in {printable(run_dir)}")
    # With two threads or more, one of them evaluates each checkpoint while the next trains.
    train_threads, follow = follow_threads(threads)
    say.step(
        "1/4 train: the toyworld preset (LoCon), a checkpoint every epoch"
        + (", each evaluated while the next trains" if follow else "")
    )
    eval_kwargs = {"strengths": demo.DEMO_STRENGTHS, "seeds": seeds, "steps": steps}
    follower = Follower(FollowSettings(str(run_dir), evaluate_kwargs=eval_kwargs)) if follow else None
    view = ProgressView()
    try:
        overrides = [f"training.cpu_threads={train_threads}"] + (
            [f"training.epochs={epochs}"] if epochs is not None else []
        )
        demo.train_concept(run_dir, concept=concept, overrides=overrides, progress=view)
    finally:
        view.close()
        problem = follower.stop() if follower is not None else None
    if problem:
        say(f"note: the evaluation during training stopped early; the one below does all of it. {problem}")
    say.step("2/4 evaluate: every checkpoint at strengths 0.5, 0.75 and 1.0, the same prompts and seeds")
    with _ProgressBar(enabled=True) as bar:
        lines = _RenderLines(say) if not say.console.is_terminal else None

        def progress(event) -> None:
            bar.update(event)
            if lines is not None:
                lines(event)

        results = evaluate(
            run_dir, **eval_kwargs, threads=1, workers=threads, refine=refine, progress=progress
        )
    say.step("3/4 rank and report")
    with warnings_to_stderr():
        ranking = rank(results, loss=read_loss(run_dir))
    run = demo.RunDir.at(run_dir)
    html, csv = run.report / "report.html", run.report / "scores.csv"
    write_csv(ranking, csv)
    write_html(results, ranking, html, run.state, title=f"lorasel demo: {concept}")
    say.step("4/4 the oracle's verdict (ground truth the ranking never sees)")
    outcome = demo.judge_selection(run_dir, _shared_seeds(results, seeds), ranking)
    _print_verdicts(outcome)
    typer.echo(f"\nreport: {printable(html)}  scores: {printable(csv)}")
    typer.echo(f"done in {time.perf_counter() - say.started:.0f} s. Next: lorasel tui {printable(run_dir)}")
    if tui and sys.stdin.isatty() and sys.stdout.isatty():
        from lorasel.tui import make_app

        make_app(run_dir, eval_options={"workers": threads} if threads > 1 else None).run()
    else:
        typer.echo("\n" + table_text(ranking))


def _shared_seeds(results, seeds: int):
    """``results`` on the seed indices every candidate has: a refinement's extra seeds would give
    the candidates it rendered again an oracle quality on other seeds than the rest."""
    from dataclasses import replace

    renders = results.renders
    return replace(results, renders=renders[renders["seed_index"] < seeds])


class _Say:
    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.started = time.perf_counter()

    def __call__(self, text: str) -> None:
        self.console.print(text, markup=False, style="bold", soft_wrap=True)

    def step(self, text: str) -> None:
        """A step's heading with the time since the demo started, so a slow step shows."""
        minutes, seconds = divmod(int(time.perf_counter() - self.started), 60)
        self(f"{text}  [{minutes}:{seconds:02d}]")


class _RenderLines:
    """Piped output has no live bar: a line every tenth of the renders instead."""

    def __init__(self, say: _Say) -> None:
        self.say = say
        self.shown = -1

    def __call__(self, event) -> None:
        if event.phase != "render" or not event.total:
            return
        tenth = event.done * 10 // event.total
        if tenth > self.shown:
            self.shown = tenth
            rate = f", {event.rate:.1f} renders/s" if event.rate else ""
            self.say.console.print(f"rendered {event.done}/{event.total}{rate}", highlight=False)


def _print_verdicts(outcome) -> None:
    from lorasel.demo import format_regret

    ranking = outcome.ranking
    lines = []
    for key in ("lorasel", "lowest_loss", "lowest_val_loss", "last_epoch", "oracle"):
        v = outcome.verdicts.get(key)
        if v is None:
            continue
        lines.append(
            (
                SELECTOR_NAMES[key],
                f"{printable(v.label, 32)} @ {v.strength:g}",
                f"{v.quality:.3f}",
                format_regret(v.regret),
            )
        )
    head = ("selector", "choice", "oracle quality", "regret")
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(4)]
    for r in [head, *lines]:
        typer.echo(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    best = ranking.best
    typer.echo(f"\nlorasel picks {describe(best)}: P(best) {best.p_best:.2f}, score {best.score:.3f}")
    advice = ranking.tie_advice(rerun="lorasel demo")
    if advice:
        typer.echo(f"{advice} (the demo renders few seeds to stay fast)")
    if ranking.loss_spearman is not None:
        typer.echo(
            f"training loss vs lorasel score: Spearman rho {ranking.loss_spearman:+.2f} "
            "(loss would be a good guide near -1)"
        )
    typer.echo(
        "regret: how far below the oracle's best candidate, as a share of the range from worst to best"
    )
