"""Publishing: a real ``HfApi`` upload against a small fake Hub on 127.0.0.1, and the licence guard.

The fake Hub answers the four calls a push makes (create repo, repo info, preupload, commit; the last
two as described in docs/tokenizer.md §5) and keeps the files each commit carried.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from builds import writable_copy
from huggingface_hub import HfApi

from pipelines.cli import main
from pipelines.tools.card import load_sources, write_card
from pipelines.tools.publish import (
    IGNORE_PATTERNS,
    LicenceError,
    PublishError,
    human_size,
    licence_guard,
    publish,
    upload_plan,
)

COMMIT_OID = "a" * 40


class FakeHub:
    """Repos by id -> {"private": bool, "files": {path: bytes}}; one thread serving HTTP on loopback."""

    def __init__(self, existing: dict[str, bool] | None = None):
        self.repos = {repo: {"private": private, "files": {}} for repo, private in (existing or {}).items()}
        self.requests: list[tuple[str, str]] = []
        self.card_metadata: dict | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def reply(self, status: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                repo = self.path.split("?")[0].removeprefix("/api/datasets/")
                if repo in hub.repos:
                    return self.reply(200, {"id": repo, "private": hub.repos[repo]["private"]})
                self.reply(404, {"error": "Repository not found"})

            def do_POST(self):
                hub.requests.append(("POST", self.path))
                data = self.body()
                if self.path == "/api/repos/create":
                    payload = json.loads(data)
                    repo = f"{payload['organization']}/{payload['name']}"
                    if repo in hub.repos:
                        return self.reply(
                            409,
                            {
                                "error": "You already created this dataset repo",
                                "url": f"{hub.endpoint}/datasets/{repo}",
                            },
                        )
                    hub.repos[repo] = {"private": payload.get("visibility") != "public", "files": {}}
                    return self.reply(200, {"url": f"{hub.endpoint}/datasets/{repo}"})
                if self.path == "/api/validate-yaml":  # the README's front matter, checked before the commit
                    content = json.loads(data)["content"]
                    hub.card_metadata = yaml.safe_load(content.split("---\n")[1])
                    return self.reply(200, {})
                repo, _, action = self.path.removeprefix("/api/datasets/").rpartition("/")[0].rpartition("/")
                if action == "preupload":
                    files = json.loads(data)["files"]
                    return self.reply(
                        200,
                        {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                    )
                if action == "commit":
                    for line in data.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            value = item["value"]
                            hub.repos[repo]["files"][value["path"]] = base64.b64decode(value["content"])
                    return self.reply(
                        200,
                        {"commitUrl": f"{hub.endpoint}/datasets/{repo}/commit/{COMMIT_OID}", "commitOid": COMMIT_OID},
                    )
                self.reply(404, {"error": f"unexpected {self.path}"})

        return Handler

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def build(clean_build, tmp_path_factory) -> Path:
    out = writable_copy(clean_build.out, tmp_path_factory.mktemp("publish") / "out")
    write_card(out)
    return out


@pytest.fixture(autouse=True)
def no_real_hub(monkeypatch, tmp_path):
    """No test may reach the real Hub or read the developer's token."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a stray call fails fast


def test_private_upload_sends_every_file_of_the_output(build):
    with FakeHub() as hub:
        api = HfApi(endpoint=hub.endpoint, token="hf_dummy")
        result = publish(build, "someone/cxr-demo", api=api)
    repo = hub.repos["someone/cxr-demo"]
    assert repo["private"] is True
    assert sorted(repo["files"]) == result.files == upload_plan(build).paths
    for path, data in repo["files"].items():
        assert data == (build / path).read_bytes(), path
    assert {"README.md", "manifest.json", "rejects/rejects-00000-of-00001.parquet"} <= set(repo["files"])
    assert result.commit_url.endswith(COMMIT_OID) and not result.dry_run
    configs = {c["config_name"]: c for c in hub.card_metadata["configs"]}
    assert {"images", "annotations", "rejects", "m4cxr-disease_classification"} <= set(configs)


def test_private_push_refuses_an_existing_public_repo(build):
    with (
        FakeHub(existing={"someone/open": False}) as hub,
        pytest.raises(PublishError, match="already exists and is public"),
    ):
        publish(build, "someone/open", api=HfApi(endpoint=hub.endpoint, token="hf_dummy"))
    assert not any(path.endswith("/commit/main") for _, path in hub.requests)


def test_public_push_of_credentialed_rows_is_refused_before_any_request(build):
    with FakeHub() as hub, pytest.raises(LicenceError) as refused:
        publish(build, "someone/cxr-public", public=True, api=HfApi(endpoint=hub.endpoint, token="hf_dummy"))
    assert hub.requests == []
    message = str(refused.value)
    for licence_id in (
        "physionet-credentialed-1.5.0",
        "physionet-vindr-cxr",
        "bimcv-padchest-terms",
        "kaggle-siim-acr-rules",
    ):
        assert f"--accept-licence {licence_id}" in message


def manifest_with(read: dict[str, int]) -> dict:
    return {"counts": {source: {"read": n} for source, n in read.items()}}


def test_licence_guard_decides_from_the_sources_that_contributed():
    sources = load_sources()
    licence_guard(manifest_with({"chexmask": 5, "mimic": 0}), sources, public=True)  # open annotations only
    licence_guard(manifest_with({"mimic": 5}), sources, public=False)  # private is always allowed
    with pytest.raises(LicenceError, match="MIMIC-CXR"):
        licence_guard(manifest_with({"mimic": 5, "chexmask": 5}), sources, public=True)
    with pytest.raises(LicenceError, match="PadChest"):  # accepting one licence does not cover another
        licence_guard(
            manifest_with({"mimic": 1, "padchest": 1}), sources, public=True, accepted=("physionet-credentialed-1.5.0",)
        )
    licence_guard(
        manifest_with({"mimic": 1, "imagenome": 1}), sources, public=True, accepted=("physionet-credentialed-1.5.0",)
    )
    with pytest.raises(LicenceError, match="not a licence id"):
        licence_guard(manifest_with({"mimic": 1}), sources, public=False, accepted=("mit",))
    with pytest.raises(LicenceError, match="no entry"):
        licence_guard(manifest_with({"chexpert": 1}), sources, public=True)


def test_public_push_with_every_licence_accepted_goes_public(build):
    accepted = tuple(sorted({e["licence_id"] for e in load_sources()["sources"].values()}))
    with FakeHub() as hub:
        publish(
            build,
            "someone/accepted",
            public=True,
            accepted=accepted,
            api=HfApi(endpoint=hub.endpoint, token="hf_dummy"),
        )
    assert hub.repos["someone/accepted"]["private"] is False


INTERNAL = {  # what a killed or resumed build, the tokenizer, an editor or a loader leave in OUT
    "_work/images/train-00000-of-00001.json": "build work files (_work/)",
    "_work/rows/annotations/train/train-00000-of-00001.pkl": "build work files (_work/)",
    "vq/_complete/train-00000-of-00001.json": "tokenize completion markers (vq/_complete/)",
    "images/train-00000-of-00001.parquet.partial": "partial writes (*.partial, *.tmp)",
    "instructions/m4cxr/weights.json.partial": "partial writes (*.partial, *.tmp)",
    "run.json": "the local run record (local paths and times)",
    "build.lock": "lock files (*.lock)",
    "annotations/.train.lock": "hidden files and folders",
    "__pycache__/card.cpython-311.pyc": "caches",
    "images/cache-1a2b3c.arrow": "caches",
    ".cache/huggingface/download/x.metadata": "hidden files and folders",
    ".DS_Store": "hidden files and folders",
}


@pytest.fixture
def cluttered(build, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the build with internal files beside its own; the build's own files."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(build, out)
    own = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    for path in INTERNAL:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(b"internal")
    return out, own


def test_internal_files_are_neither_planned_nor_uploaded_by_one_rule(cluttered):
    out, own = cluttered
    plan = upload_plan(out)
    assert plan.paths == own
    assert dict(plan.excluded) == INTERNAL
    assert [f.bytes for f in plan.files] == [(out / path).stat().st_size for path in own]
    assert plan.total_bytes == sum((out / path).stat().st_size for path in own)
    with FakeHub() as hub:
        result = publish(out, "someone/clean", api=HfApi(endpoint=hub.endpoint, token="hf_dummy"))
    assert sorted(hub.repos["someone/clean"]["files"]) == result.files == own
    assert IGNORE_PATTERNS[:2] == [".*", "*/.*"] and len(set(IGNORE_PATTERNS)) == len(IGNORE_PATTERNS)
    publish(out, "someone/again", dry_run=True)
    assert upload_plan(out).paths == own  # the patterns are not changed by a push (upload_folder appends to its list)


def test_human_sizes():
    assert [human_size(n) for n in (0, 1023, 1024, 1536, 5 * 2**20 + 2**19, 3 * 2**30)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.5 MiB",
        "3.0 GiB",
    ]


def test_cli_dry_run_lists_every_file_with_its_size_and_the_total_and_sends_nothing(cluttered):
    from click.testing import CliRunner

    out, own = cluttered
    result = CliRunner().invoke(main, ["publish", str(out), "--repo", "someone/x", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    total = sum((out / path).stat().st_size for path in own)
    assert (
        lines[0]
        == f"dry run: {len(own)} files, {human_size(total)} ({total} bytes), would go to private dataset someone/x:"
    )
    listed = [line.split() for line in lines[1 : 1 + len(own)]]
    for path, fields in zip(own, listed):
        size = (out / path).stat().st_size
        assert fields[-1] == path and fields[-2] == str(size) and " ".join(fields[:-2]) == human_size(size), fields
    assert lines[1 + len(own)] == f"total: {len(own)} files, {human_size(total)} ({total} bytes)"
    assert lines[2 + len(own)].startswith(f"left out: {len(INTERNAL)} internal files (")
    assert not any(path in result.output for path in INTERNAL)
    refused = CliRunner().invoke(main, ["publish", str(out), "--repo", "someone/x", "--public", "--dry-run"])
    assert refused.exit_code != 0 and "--accept-licence" in refused.output


def test_cli_without_token_says_how_to_get_one(build):
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["publish", str(build), "--repo", "someone/x"])
    assert result.exit_code != 0 and "HF_TOKEN" in result.output


def test_tampered_output_is_not_published(build, tmp_path):
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(build, copy)
    (copy / "manifest.json").write_text((copy / "manifest.json").read_text().replace('"rows": ', '"rows": 1', 1))
    with pytest.raises(PublishError, match="does not verify"):
        publish(copy, "someone/x", dry_run=True)


# ------------------------------------------------------------------------------------ recipes


@pytest.fixture(scope="module")
def recipe(build, tmp_path_factory) -> Path:
    from pipelines.tools.recipe import make_recipe

    dest = tmp_path_factory.mktemp("recipe") / "recipe"
    make_recipe(str(build), dest)
    return dest


def test_a_recipe_goes_public_without_accepting_a_licence_with_a_card_that_says_how_to_hydrate(recipe):
    from click.testing import CliRunner

    own = sorted(p.relative_to(recipe).as_posix() for p in recipe.rglob("*") if p.is_file())
    dry = CliRunner().invoke(main, ["publish", str(recipe), "--repo", "someone/r", "--public", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines()[0].startswith(f"dry run: {len(own)} files")
    assert "public dataset someone/r" in dry.output
    with FakeHub() as hub:
        result = publish(recipe, "someone/cxr-recipe", public=True, api=HfApi(endpoint=hub.endpoint, token="hf_dummy"))
    repo = hub.repos["someone/cxr-recipe"]
    assert repo["private"] is False and sorted(repo["files"]) == result.files == own
    for path, data in repo["files"].items():
        assert data == (recipe / path).read_bytes(), path
    assert hub.card_metadata["viewer"] is False
    card = repo["files"]["README.md"].decode()
    assert "cxr-instruct hydrate recipe --sources build.yaml --out out" in card
    sources = load_sources()["sources"]
    for name in json.loads((recipe / "recipe.json").read_text())["sources"]:
        assert sources[name]["url"] in card and sources[name]["licence"] in card, name  # where to get it, on what terms


def _with_field(folder: Path) -> None:
    doc = json.loads((folder / "recipe.json").read_text())
    doc["outputs"][0]["conversations"] = [{"from": "gpt", "value": "Cardiomegaly."}]
    (folder / "recipe.json").write_text(json.dumps(doc))


def _with_text(folder: Path) -> None:
    doc = json.loads((folder / "recipe.json").read_text())
    doc["sources"]["mimic"]["release"] = "FINDINGS: " + "There is a small left pleural effusion. " * 10
    (folder / "recipe.json").write_text(json.dumps(doc))


def _with_table(folder: Path, build: Path) -> None:
    (folder / "images").mkdir(exist_ok=True)
    shutil.copy(next((build / "images").glob("*.parquet")), folder / "images" / "train.parquet")


def _with_card_line(folder: Path) -> None:
    with open(folder / "README.md", "a") as card:
        card.write("\nExample row: a 3 cm nodule in the right upper lobe.\n")


def _with_sealed_column(folder: Path) -> None:
    doc = json.loads((folder / "recipe.json").read_text())
    lines = (folder / "sealed.tsv").read_text().splitlines()
    lines = [lines[0] + "\tanswer"] + [line + "\tyes" for line in lines[1:]]
    data = ("\n".join(lines) + "\n").encode()
    (folder / "sealed.tsv").write_bytes(data)
    for entry in doc["recipe_files"]:  # listed with its new checksum: only the guard's shape check can catch it
        if entry["path"] == "sealed.tsv":
            entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (folder / "recipe.json").write_text(json.dumps(doc))


def _relist(folder: Path, path: str) -> None:
    """List ``path`` in recipe.json with its new checksum, as someone smuggling content would."""
    doc = json.loads((folder / "recipe.json").read_text())
    data = (folder / path).read_bytes()
    for entry in doc["recipe_files"]:
        if entry["path"] == path:
            entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (folder / "recipe.json").write_text(json.dumps(doc))


def _edit_doc(folder: Path, change) -> None:
    doc = json.loads((folder / "recipe.json").read_text())
    change(doc)
    (folder / "recipe.json").write_text(json.dumps(doc))


def _pixels_in_ids(folder: Path, build: Path) -> None:
    png = pq.read_table(next((build / "images").glob("*.parquet"))).to_pylist()[0]["image"]["bytes"]
    keys = folder / "images" / "vindr.txt"
    keys.write_text(keys.read_text() + "vindr/" + base64.b64encode(png).decode() + "\n")
    _relist(folder, "images/vindr.txt")


def _text_in_input_path(folder: Path) -> None:
    hashes = folder / "inputs" / "mimic.sha256"
    hashes.write_text(hashes.read_text() + "0" * 64 + "  files/FINDINGS: There is a small left pleural effusion.txt\n")
    _relist(folder, "inputs/mimic.sha256")


def _long_text_as_key(folder: Path) -> None:
    _edit_doc(
        folder,
        lambda doc: doc["counts"]["mimic"]["item_rejects"].update(
            {"FINDINGS: " + "There is a small left pleural effusion. " * 20: 1}
        ),
    )


def _labels_under_new_key(folder: Path) -> None:
    keys = (folder / "images" / "vindr.txt").read_text().split()
    _edit_doc(
        folder, lambda doc: doc["counts"]["vindr"].update(per_image={k: "Cardiomegaly,Nodule/Mass" for k in keys})
    )


def _sentence_value_not_in_card(folder: Path) -> None:
    _edit_doc(
        folder, lambda doc: doc["outputs"][0].update(note="There is a small left pleural effusion; box (239.0,1)")
    )


@pytest.mark.parametrize(
    "change, says",
    [
        (_with_field, "unknown field(s) ['conversations']"),
        (_with_text, "sources.mimic.release: not what manifests/sources.yaml"),
        (_pixels_in_ids, "images/vindr.txt: 1 line(s) not of a recipe's format"),
        (_text_in_input_path, "inputs/mimic.sha256: 1 line(s) not of a recipe's format"),
        (
            _long_text_as_key,
            "counts.mimic.item_rejects: key 'FINDINGS: There is a small left pleural ' is not a known name",
        ),
        (_labels_under_new_key, "counts.vindr: unknown field(s) ['per_image']"),
        (_sentence_value_not_in_card, "outputs[0]: unknown field(s) ['note']"),
        (_with_table, "images/train.parquet: not a file a recipe holds"),
        (_with_card_line, "README.md is not the file recipe.json lists"),
        (_with_sealed_column, "sealed.tsv: header does not name recipe.json's sealed groups"),
    ],
)
def test_a_recipe_holding_anything_protected_is_refused_before_any_request(build, recipe, tmp_path, change, says):
    folder = tmp_path / "recipe"
    shutil.copytree(recipe, folder)
    change(folder, build) if change in (_with_table, _pixels_in_ids) else change(folder)
    with FakeHub() as hub:
        with pytest.raises(LicenceError, match="holds what a public recipe may not") as refused:
            publish(folder, "someone/r", public=True, api=HfApi(endpoint=hub.endpoint, token="hf_dummy"))
        with pytest.raises(LicenceError):
            publish(folder, "someone/r", api=HfApi(endpoint=hub.endpoint, token="hf_dummy"))  # private too
    assert hub.requests == []
    assert says in str(refused.value), str(refused.value)
