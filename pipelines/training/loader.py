"""A reproducible mixture loader over one profile's instruction shards (PyTorch ``IterableDataset``).

Sampling, for every sample of an epoch: a (task, source) pool is drawn (:func:`mixture_probabilities`):
a task by the profile's ``weights.json`` weight among the tasks that have rows in the split (weights
renormalised over them), and a source inside that task proportionally to its rows by default (so
every row of a task is equally likely), by the task's ``source_weights`` in ``weights.json`` where
the profile gives them (M4CXR's per-dataset pool weights; a source not named there is left out), or
by the caller's ``source_weights`` ({source: weight} for every task, overriding the profile's; every
source with rows must be named; weight 0 leaves one out on purpose); then a row of that pool. Rows of a pool are taken without replacement
in a shuffled order and reshuffled when the pool runs out, so small pools repeat only as often as
their weight asks. The draw is joint: one ``numpy`` generator seeded from ``stable_hash(seed,
epoch)`` picks the pool of every sample of the epoch at once.

Positions: sample ``p`` of the stream is sample ``p % N`` of epoch ``p // N`` (``N`` =
``samples_per_epoch``, the split's row count by default). The stream is a fixed function of
(build, profile, split, seed, N); consumers (DataLoader workers x distributed ranks) split it by
position, consumer ``c`` of ``C`` taking the positions ``p % C == c`` with ``c = worker x world_size +
rank``: rank ``r`` sees exactly the positions ``p % world_size == r`` whatever its worker count. Every sample carries its ``position``; ``state_dict`` / ``load_state_dict``
resume after the last consumed position.

Images are decoded lazily, only for the samples yielded, from a small LRU cache of Parquet row
groups, and resized to the profile's ``image_size`` when its ``weights.json`` names one (Radixpert,
MediVLM: 224; ``image_size=`` overrides it, None keeps the build's canvas). ``torch`` is imported only
when the dataset is built (:func:`mixture_dataset`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.hashing import stable_hash
from transforms.images import resize_canvas
from transforms.png import resize_png


class LoaderError(ValueError):
    """The build output does not support the requested mixture (missing split, stale weights, missing image)."""


def mixture_probabilities(
    rows: dict[str, dict[str, int]],
    task_weights: dict[str, float],
    source_weights: dict[str, float] | None = None,
    task_source_weights: dict[str, dict[str, float]] | None = None,
) -> dict[tuple[str, str], float]:
    """Probability of each (task, source) pool; pools without rows get none.

    ``rows`` is {task: {source: row count in the split}}. Each pool gets a mass, and the masses are
    normalised over all pools:

    - by default ``task weight x rows / task rows`` (sources in proportion to their rows);
    - with ``task_source_weights[task]`` (the profile's ``source_weights`` of that task, from
      ``weights.json``) ``task weight x source weight / sum of the task's source weights``: a pool's
      share is fixed by the profile whether or not its sibling pools have rows in this split, and a
      source not named gets none;
    - with ``source_weights`` (the caller's override, for every task) ``task weight x source weight /
      sum over the task's sources with rows``; every source with rows must be named, 0 leaves one out.
    """
    task_source_weights = task_source_weights or {}
    masses = {}
    for task, sources in sorted(rows.items()):
        sources = {s: n for s, n in sources.items() if n > 0}
        if not sources:
            continue
        within: Mapping[str, float]
        if source_weights is not None:
            missing = sorted(set(sources) - set(source_weights))
            if missing:
                raise LoaderError(
                    f"source_weights names no weight for {missing} (task {task}); give 0 to leave one out"
                )
            within = {s: source_weights[s] for s in sources}
            total = sum(within.values())
        elif task in task_source_weights:
            declared = task_source_weights[task]
            within = {s: declared.get(s, 0.0) for s in sources}
            total = sum(declared.values())
        else:
            within, total = sources, sum(sources.values())
        if total <= 0:
            continue
        for source, weight in sorted(within.items()):
            if weight > 0:
                masses[(task, source)] = task_weights[task] * weight / total
    if not masses:
        raise LoaderError("no task has weighted rows in this split")
    mass_total = sum(masses.values())
    if mass_total <= 0:
        raise LoaderError(f"task weights {task_weights} give no weight to the tasks with rows {sorted(rows)}")
    return {pool: mass / mass_total for pool, mass in masses.items() if mass > 0}


class _GroupCache:
    """The last few Parquet row groups read (columns fixed per cache), least recently used out first."""

    def __init__(self, columns: list[str] | None, size: int):  # None: every column
        self.columns, self.size = columns, size
        self.groups: OrderedDict[tuple[str, int], pa.Table] = OrderedDict()
        self.files: dict[str, pq.ParquetFile] = {}

    def row(self, path: str, group: int, offset: int) -> dict:
        key = (path, group)
        table = self.groups.get(key)
        if table is None:
            parquet = self.files.get(path) or self.files.setdefault(path, pq.ParquetFile(path))
            table = self.groups[key] = parquet.read_row_group(group, columns=self.columns)
            if len(self.groups) > self.size:
                self.groups.popitem(last=False)
        else:
            self.groups.move_to_end(key)
        return table.slice(offset, 1).to_pylist()[0]


def _locations(paths: list[str], column: str) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """Values of ``column`` over the shards with each row's (shard, row group, offset in group)."""
    values, shard_ids, groups, offsets = [], [], [], []
    for shard_id, path in enumerate(paths):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            column_values = parquet.read_row_group(group, columns=[column])[column].to_pylist()
            values += column_values
            shard_ids.append(np.full(len(column_values), shard_id, np.int32))
            groups.append(np.full(len(column_values), group, np.int32))
            offsets.append(np.arange(len(column_values), dtype=np.int32))
    empty = np.zeros(0, np.int32)
    return (
        values,
        np.concatenate(shard_ids or [empty]),
        np.concatenate(groups or [empty]),
        np.concatenate(offsets or [empty]),
    )


class MixtureStream:
    """The sampling and decoding logic, without torch; :func:`mixture_dataset` wraps it for DataLoader."""

    def __init__(
        self,
        out: str | Path,
        profile: str,
        split: str = "train",
        seed: int = 0,
        samples_per_epoch: int | None = None,
        epochs: int | None = None,
        source_weights: dict[str, float] | None = None,
        decode_images: bool = True,
        transform: Callable[[dict], object] | None = None,
        rank: int = 0,
        world_size: int = 1,
        cache_groups: int = 4,
        image_size: int | Literal["profile"] | None = "profile",
    ):
        root = Path(out) / "instructions" / profile
        weights_path = root / "weights.json"
        if not weights_path.is_file():
            raise LoaderError(f"no profile {profile!r} in {out} (missing {weights_path})")
        weights = json.loads(weights_path.read_text(encoding="utf-8"))
        self.image_size = weights.get("image_size") if image_size == "profile" else image_size
        self.profile, self.split, self.seed = profile, split, seed
        self.epochs, self.decode_images, self.transform = epochs, decode_images, transform
        self.rank, self.world_size = rank, world_size
        self.position = 0

        self.shards = sorted(str(p) for p in root.glob(f"*/{split}-*.parquet"))
        pairs, self.row_shard, self.row_group, self.row_offset = _locations(self.shards, "source")
        self.shard_tasks = [Path(shard).parent.name for shard in self.shards]
        tasks = np.array(self.shard_tasks, dtype=object)[self.row_shard]
        sources = np.array(pairs, dtype=object)
        rows: dict[str, dict[str, int]] = {}
        for task, source in zip(tasks.tolist(), sources.tolist()):
            rows.setdefault(task, {}).setdefault(source, 0)
            rows[task][source] += 1
        declared = {
            t: {s: n[split] for s, n in spec["rows"].items() if n.get(split)} for t, spec in weights["tasks"].items()
        }
        if {t: s for t, s in declared.items() if s} != rows:
            raise LoaderError(f"{weights_path} rows for split {split!r} {declared} disagree with the shards {rows}")
        task_weights = {t: spec["weight"] for t, spec in weights["tasks"].items()}
        task_source_weights = {
            t: spec["source_weights"] for t, spec in weights["tasks"].items() if "source_weights" in spec
        }
        probabilities = mixture_probabilities(rows, task_weights, source_weights, task_source_weights)
        self.pools = sorted(probabilities)
        self.pool_probabilities = np.array([probabilities[p] for p in self.pools])
        self.pool_probabilities /= self.pool_probabilities.sum()
        self.pool_rows = [np.flatnonzero((tasks == t) & (sources == s)) for t, s in self.pools]
        self.samples_per_epoch = samples_per_epoch or len(self.row_shard)

        self.image_shards = sorted(str(p) for p in (Path(out) / "images").glob(f"{split}-*.parquet"))
        image_keys, shard_ids, groups, offsets = _locations(self.image_shards, "image_key")
        self.image_location = {
            k: (int(s), int(g), int(o)) for k, s, g, o in zip(image_keys, shard_ids, groups, offsets)
        }
        referenced = {
            k
            for path in self.shards
            for k in pq.read_table(path, columns=["image_keys"])
            .column("image_keys")
            .combine_chunks()
            .flatten()
            .to_pylist()
        }
        missing = sorted(referenced - self.image_location.keys())
        if missing:
            raise LoaderError(
                f"{len(missing)} images of {profile}/{split} rows are not in {out}/images, e.g. {missing[:3]}"
            )
        self._row_cache = _GroupCache(None, cache_groups)
        self._image_cache = _GroupCache(["image"], cache_groups)
        self._plan: tuple[int, np.ndarray] | None = None

    # ---------------------------------------------------------------- sampling
    def epoch_rows(self, epoch: int) -> np.ndarray:
        """The row (index into this split's rows) of every sample of an epoch, in stream order."""
        rng = np.random.default_rng(stable_hash("mixture", self.profile, self.split, self.seed, epoch))
        pool_of = rng.choice(len(self.pools), size=self.samples_per_epoch, p=self.pool_probabilities)
        result = np.empty(self.samples_per_epoch, np.int64)
        for pool, members in enumerate(self.pool_rows):
            where = np.flatnonzero(pool_of == pool)
            cycles = -(-len(where) // len(members))
            order = rng.permuted(np.tile(np.arange(len(members)), (max(cycles, 1), 1)), axis=1).ravel()
            result[where] = members[order[: len(where)]]
        return result

    def row_at(self, position: int) -> int:
        epoch, index = divmod(position, self.samples_per_epoch)
        if self._plan is None or self._plan[0] != epoch:
            self._plan = (epoch, self.epoch_rows(epoch))
        return int(self._plan[1][index])

    def positions(self, consumer: int, consumers: int) -> Iterator[int]:
        """This consumer's positions from the resume point (``p % consumers == consumer``)."""
        start = self.position + (consumer - self.position) % consumers
        end = None if self.epochs is None else self.epochs * self.samples_per_epoch
        position = start
        while end is None or position < end:
            yield position
            position += consumers

    # ---------------------------------------------------------------- decoding
    def row(self, position: int) -> dict:
        """The instruction row at a stream position, as stored (no images)."""
        row_id = self.row_at(position)
        return self._row_cache.row(
            self.shards[self.row_shard[row_id]], int(self.row_group[row_id]), int(self.row_offset[row_id])
        )

    def row_task(self, row_id: int) -> str:
        """The task of a row (an index into this split's rows, as :meth:`epoch_rows` gives them)."""
        return self.shard_tasks[self.row_shard[row_id]]

    def sample(self, position: int) -> dict:
        """The row at a stream position, with ``images`` (uint8 arrays, or PNG bytes) and ``position``."""
        row = self.row(position)
        images: list[np.ndarray | bytes] = []
        for key in row["image_keys"]:
            shard, group, offset = self.image_location[key]
            png = self._image_cache.row(self.image_shards[shard], group, offset)["image"]["bytes"]
            if self.decode_images:
                pixels = decode_png(png)
                images.append(pixels if self.image_size is None else resize_canvas(pixels, self.image_size))
            else:
                images.append(png if self.image_size is None else resize_png(png, self.image_size))
        row["images"] = images
        row["position"] = position
        return row

    def iterate(self, consumer: int = 0, consumers: int = 1) -> Iterator:
        for position in self.positions(consumer, consumers):
            sample = self.sample(position)
            self.position = position + 1
            yield sample if self.transform is None else self.transform(sample)

    def __iter__(self) -> Iterator:
        return self.iterate(self.rank, self.world_size)

    # ---------------------------------------------------------------- resuming
    def state_dict(self, consumed_positions=None) -> dict:
        """Where to resume: after this process's last sample, or after the largest of ``consumed_positions``.

        With DataLoader workers the training loop passes the positions of the batches it consumed; the
        next run starts after the largest, skipping at most ``workers x batch_size`` samples.
        """
        position = self.position if consumed_positions is None else int(max(consumed_positions)) + 1
        return {
            "position": position,
            "profile": self.profile,
            "split": self.split,
            "seed": self.seed,
            "samples_per_epoch": self.samples_per_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("profile", "split", "seed", "samples_per_epoch"):
            if state[key] != getattr(self, key):
                raise LoaderError(f"state was saved with {key}={state[key]!r}, this loader has {getattr(self, key)!r}")
        self.position = int(state["position"])


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 array (H, W) for grayscale, (H, W, C) otherwise."""
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise LoaderError("image bytes are not a decodable PNG")
    return pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


@cache
def _dataset_class():
    import torch.utils.data

    class MixtureDataset(MixtureStream, torch.utils.data.IterableDataset):
        """:class:`MixtureStream` as a torch ``IterableDataset``: DataLoader workers split the positions."""

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
            return self.iterate(worker * self.world_size + self.rank, self.world_size * workers)

    return MixtureDataset


def mixture_dataset(out: str | Path, profile: str, **options):
    """A torch ``IterableDataset`` over ``OUT/instructions/<profile>`` (options of :class:`MixtureStream`)."""
    return _dataset_class()(out, profile, **options)
