"""The ``cxr-instruct`` command line."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

# Beam without its [gcp] extra warns at import, on the root logger, about Google client libraries a
# local run never uses; the filter must be in place before anything imports apache_beam.
logging.getLogger().addFilter(lambda record: not record.getMessage().startswith("apitools not found"))

from pipelines.output.paths import BUILD_OUTPUT, LOCAL_FOLDER, is_uri  # noqa: E402

console = Console()


COMMANDS = {
    "synth": f"{__name__}:synth",
    "build": f"{__name__}:build",
    "card": f"{__name__}:card",
    "preview": f"{__name__}:preview",
    "verify": f"{__name__}:verify",
    "audit": f"{__name__}:audit",
    "publish": f"{__name__}:publish",
    "tokenize": "pipelines.beam.tokenize:tokenize_command",
    "tokenizer": "pipelines.beam.tokenize:tokenizer_group",
    "export": "pipelines.training.export:export_command",
    "chexmix-lengths": "pipelines.training.export_chexmix:lengths_command",
    "recipe": "pipelines.tools.recipe:recipe_command",
    "hydrate": "pipelines.tools.hydrate:hydrate_command",
}
"""Every command of ``cxr-instruct``: its name -> ``module:attribute`` of its click command. A command's
module is imported only when the command runs or ``--help`` lists it: the tokenizer's module brings torch
(~1.5 s), which ``build`` and the others never need. The commands defined below are named through
``__name__``, so ``python -m pipelines.cli`` finds them in the running module, not in a second copy."""


class LazyGroup(click.Group):
    """A command group whose commands are :data:`COMMANDS`, each imported when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{COMMANDS[name]} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show Beam's progress logs, and the traceback of an error that stops a command.",
)
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Build chest X-ray instruction data from six public datasets."""
    ctx.obj = {"verbose": verbose}
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.command()
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the corpus into.",
)
@click.option(
    "--studies", default=40, show_default=True, help="Number of MIMIC-CXR studies (other sources scale with it)."
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--faults",
    is_flag=True,
    help="Also plant one bad input of every kind in manifests/faults.yaml (listed in SYNTHETIC_TRUTH.json).",
)
def synth(out: Path, studies: int, seed: int, faults: bool) -> None:
    """Write a synthetic corpus of all eight sources in their native layouts, plus build.yaml."""
    from pipelines.synth import generate
    from pipelines.synth.faults import NotEnoughVictims

    with console.status(f"writing synthetic corpus ({studies} studies) to {out}"):
        try:
            generate(out, studies=studies, seed=seed, faults=faults)
        except NotEnoughVictims as error:
            raise click.UsageError(str(error)) from None
    planted = "  with one fault of every kind (see SYNTHETIC_TRUTH.json 'faults')" if faults else ""
    console.print(f"synthetic corpus: {out}  (config: {out / 'build.yaml'}){planted}")


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--config", "config_path", required=True, help="The build's config file (build.yaml).")
@click.option("--out", "out", required=True, help="Output folder (local path or gs:// URI).")
@click.option(
    "--runner",
    default="FnApiRunner",
    show_default=True,
    help="Beam runner: FnApiRunner locally, DataflowRunner at scale.",
)
@click.option(
    "--workers", default=1, show_default=True, help="Local worker processes (FnApiRunner multi_processing when > 1)."
)
@click.option("-v", "--verbose", is_flag=True, help="Show the traceback of an error that stops the build.")
@click.option(
    "--replace",
    is_flag=True,
    help="OUT holds a build of another config: delete the files its manifest.json lists, then build.",
)
@click.pass_context
def build(
    ctx: click.Context, config_path: str, out: str, runner: str, workers: int, verbose: bool, replace: bool
) -> None:
    """Run the Beam build. Extra arguments are passed to Beam as pipeline options.

    A local run shows live progress per stage; every run writes OUT/run.json and prints its summary.
    A finished build of the same inputs and config says so and stops at once.

    Whole-input problems (a config value or key, a missing root or required file, a damaged compressed
    CSV, an --out that is a file) stop the build before it starts with one line naming the file or key,
    exit status 2. Ctrl-C stops it with exit status 130; the same command resumes it."""
    from pipelines.beam.launch import resumable_on_ctrl_c, run_build_command

    verbose = verbose or bool((ctx.obj or {}).get("verbose"))
    with resumable_on_ctrl_c("build", verbose):
        run_build_command(ctx, config_path, out, runner, workers, replace, verbose)


@click.command()
@click.argument("out", type=BUILD_OUTPUT)
def card(out: str) -> None:
    """Write the dataset card OUT/README.md (Hub configs, licences, statistics, plots in OUT/card/).

    OUT is a local folder or a gs:// URI; the card is written into OUT either way."""
    from pipelines.tools.card import write_card

    with console.status("reading tables for the dataset card"):
        path = write_card(out)
    console.print(f"dataset card: {path}")


@click.command()
@click.argument("out", type=BUILD_OUTPUT)
@click.option(
    "--dest",
    type=LOCAL_FOLDER,
    default=None,
    help="Local folder for the preview [default: OUT/preview; required when OUT is gs://].",
)
@click.option(
    "--rows",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows previewed per profile/task (e.g. --rows 500 for a large preview; pages load on demand).",
)
@click.option(
    "--rejects",
    default=100,
    show_default=True,
    type=click.IntRange(min=0),
    help="Rejects listed per source/stage/reason (all are counted).",
)
def preview(out: str, dest: Path | None, rows: int, rejects: int) -> None:
    """Write OUT/preview/: each sampled row with only its answer drawn, filters, pages, rejects.

    OUT is a local folder or a gs:// URI. The preview is a local folder opened from file:// (the page
    cannot load from gs://), so a gs:// build's preview goes to --dest DIR."""
    from pipelines.tools.preview import write_preview

    if dest is None and is_uri(out):
        raise click.UsageError(f"{out} is not a local folder: name the local folder for its preview with --dest DIR")
    with console.status("rendering preview"):
        result = write_preview(out, rows_per_task=rows, rejects_per_reason=rejects, dest=dest)
    console.print(
        f"preview: {result.path}  ({result.items} rows, {result.images} images, {result.shapes} shapes, "
        f"{result.negatives} negative, {result.decode_errors} decode errors, {result.mismatches} not as "
        f"their target, {result.rejects} rejects listed; {result.files} files, {result.bytes / 1e6:.1f} MB)"
    )


@click.command()
@click.argument("out", type=BUILD_OUTPUT)
def verify(out: str) -> None:
    """Re-check OUT (a local folder or gs:// URI) against manifest.json: checksums, row counts,
    reconciliation. Non-zero exit on any mismatch."""
    from pipelines.tools.verify import verify as verify_output

    with console.status("verifying checksums and counts"):
        problems = verify_output(out)
    if problems:
        console.print(f"{out}: {len(problems)} problem(s)", style="red", markup=False, soft_wrap=True)
        for problem in problems:
            console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    console.print(f"{out}: every output matches manifest.json")


@click.command()
@click.argument("out", type=BUILD_OUTPUT)
def audit(out: str) -> None:
    """Re-check every instruction row against its images' annotations; writes OUT/audit.json (OUT a local
    folder or gs:// URI). Non-zero exit on any contradiction."""
    from pipelines.tools.audit import FILE
    from pipelines.tools.audit import audit as audit_output
    from transforms import io

    try:
        with console.status("auditing every instruction row"):
            document = audit_output(out)
    except (FileNotFoundError, ValueError) as unusable:
        console.print(str(unusable), style="red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    table = Table(
        title=f"row audit: {document['rows']} rows, {document['rows_with_contradictions']} with contradictions"
    )
    table.add_column("profile/task")
    table.add_column("rows", justify="right")
    table.add_column("contradictions")
    for name, cell in document["by_task"].items():
        found = ", ".join(f"{kind} {n}" for kind, n in cell["contradictions"].items()) or "none"
        table.add_row(name, str(cell["rows"]), found)
    console.print(table)
    console.print(f"audit: {io.join(out, FILE)}", markup=False, highlight=False, soft_wrap=True)
    if document["rows_with_contradictions"]:
        console.print(f"[red]{sum(document['contradictions'].values())} contradiction(s); examples in audit.json[/red]")
        sys.exit(1)


@click.command()
@click.argument("out", type=BUILD_OUTPUT)
@click.option("--repo", "repo_id", required=True, help="Hub dataset repository, user/name.")
@click.option(
    "--private/--public",
    "private",
    default=True,
    show_default=True,
    help="Repository visibility; --public is refused for rows of restricted sources.",
)
@click.option(
    "--accept-licence",
    "accepted",
    multiple=True,
    metavar="NAME",
    help="Licence id (manifests/sources.yaml) whose terms you accept for a public push; repeatable.",
)
@click.option("--dry-run", is_flag=True, help="List what would be uploaded; send nothing.")
@click.option(
    "--staging",
    type=LOCAL_FOLDER,
    default=None,
    help="gs:// OUT only: local folder in which the files to send are copied (to a temporary "
    "subfolder, removed after the upload) [default: the system's temporary folder].",
)
def publish(
    out: str, repo_id: str, private: bool, accepted: tuple[str, ...], dry_run: bool, staging: Path | None
) -> None:
    """Upload OUT to the Hugging Face Hub (token from HF_TOKEN or the token file). OUT may also be a
    recipe folder (`cxr-instruct recipe`), which may go --public without accepting any licence.

    OUT is a local folder or a gs:// URI; a gs:// OUT is verified and listed where it is, then the
    files to send are copied to a local staging folder (free space: the upload's size) and uploaded."""
    from pipelines.tools.publish import LicenceError, PublishError, human_size, plan_lines
    from pipelines.tools.publish import publish as publish_output

    try:
        with console.status("verifying" if dry_run else "verifying and uploading"):
            result = publish_output(
                out, repo_id, public=not private, accepted=accepted, dry_run=dry_run, staging=staging
            )
    except (LicenceError, PublishError) as refused:
        console.print("[red]publish refused[/red]")
        console.print(str(refused), markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    visibility = "private" if result.private else "public"
    plan = result.plan
    if result.dry_run:
        console.print(
            f"dry run: {len(plan.files)} files, {human_size(plan.total_bytes)} ({plan.total_bytes} bytes), "
            f"would go to {visibility} dataset {repo_id}:",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        for line in plan_lines(plan):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(
            f"uploaded {len(plan.files)} files, {human_size(plan.total_bytes)} ({plan.total_bytes} bytes), "
            f"to {visibility} dataset {repo_id}: {result.commit_url}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


if __name__ == "__main__":
    main()
