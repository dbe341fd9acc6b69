"""``compress report PAGE SOURCE...``: the results page, rebuilt from finished runs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from compress import runs
from compress.cli.common import add_options, command, options_of
from compress.errors import UsageError
from compress.options import Options, option
from compress.reports import console
from compress.results import build_page

EXAMPLES = ("compress report docs/results results/quantize results/distill --intro docs/intro.md",)


@dataclass
class ReportOptions(Options):
    page: str = option(
        "", "the page: PAGE.md, with figures and summaries in PAGE/", positional=True
    )
    sources: tuple[str, ...] = option(
        (), "directories of finished runs: one section each", positional=True
    )
    hardware: str = option("not stated", "the machine the runs ran on, as the page says it")
    intro: str | None = option(None, "markdown put above the sections (the findings)")
    force: bool = option(False, "replace a page that exists (PAGE.md and PAGE/)")
    keep: tuple[str, ...] = option(
        (), "sections of the existing page to keep, rebuilt from its own run summaries"
    )


def execute(args: argparse.Namespace) -> None:
    options: ReportOptions = options_of(ReportOptions, args)
    page = Path(options.page)
    if not page.name or page.name in (".", ".."):
        raise UsageError(f"the page needs a name, e.g. docs/results, got {options.page!r}")
    if page.with_suffix(".md").exists() and not options.force:
        raise UsageError(
            f"{page.with_suffix('.md')} exists: rebuilding replaces it (its sections come "
            "only from the sources given now); add --force to do so"
        )
    runs.check_output(page.with_suffix(".md"), "the page")
    page = build_page(
        Path(options.page),
        [Path(source) for source in options.sources],
        options.hardware,
        Path(options.intro) if options.intro else None,
        options.keep,
    )
    console.print(f"wrote {page} and {page.with_suffix('')}/", highlight=False)


def add_to(commands: argparse._SubParsersAction) -> None:
    summary = "the results page (markdown, figures, CSVs) from finished runs"
    parser = command(commands, "report", summary, EXAMPLES, execute)
    add_options(parser, ReportOptions, "report")
