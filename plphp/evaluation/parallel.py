"""Data-parallel `plphp eval`: several processes under `torchrun` or `accelerate launch` share the batches.

Every process builds the same list of pending batches (from the records already in the output
folder, read before any process writes), and process `rank` runs batches `rank`, `rank + N`, ...
(batches, not items, are dealt out, so every batch holds the items it would hold in one process and
the figures are those of one process). Each process appends to its own records file,
`items.rank<R>.jsonl`; when all are done, rank 0 merges them into `items.jsonl` and writes
`results.json`. A rerun, with any number of processes, skips what any records file of the folder
holds. See docs/evaluation.md, "Several processes".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from plphp.errors import ConfigError

#: The merged records file (the only one a single process writes).
RECORDS = "items.jsonl"
RANK_RECORDS = "items.rank{rank}.jsonl"

T = TypeVar("T")


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment {name}: {value!r} is not an integer (set by torchrun / accelerate)") from None


@dataclass(frozen=True)
class Shard:
    """Which process this is among `world_size`, as `torchrun` and `accelerate launch` set it
    (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Shard:
        """The shard of this process (one process of one when no launcher set the variables)."""
        env = os.environ if env is None else env
        world = _env_int(env, "WORLD_SIZE", 1)
        rank = _env_int(env, "RANK", 0)
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"environment RANK={rank}, WORLD_SIZE={world}: the rank must lie in [0, WORLD_SIZE)")
        return cls(rank, world, _env_int(env, "LOCAL_RANK", rank))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that merges the records and writes the results."""
        return self.rank == 0

    @property
    def records_name(self) -> str:
        """The records file this process appends to."""
        return RECORDS if self.world_size == 1 else RANK_RECORDS.format(rank=self.rank)

    def mine(self, batches: Sequence[T]) -> Iterator[T]:
        """The batches this process runs: every `world_size`-th, from its rank."""
        yield from batches[self.rank :: self.world_size]

    def barrier(self) -> None:
        """Wait until every process gets here (nothing to wait for in a single process).

        The processes only synchronise here (the records travel through files), so a gloo group
        serves on CPU and GPU machines alike; one that a launcher already set up is used as it is.
        """
        if self.world_size == 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=self.rank, world_size=self.world_size)
        dist.barrier()


def record_files(out_dir: Path) -> list[Path]:
    """The folder's records files: the merged one first, then those of the ranks of a run in progress."""
    merged = [out_dir / RECORDS] if (out_dir / RECORDS).is_file() else []
    return merged + sorted(out_dir.glob(RANK_RECORDS.format(rank="*")))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of one file; a truncated last line (a crash mid-write) is ignored."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_all_records(out_dir: Path) -> list[dict[str, Any]]:
    """Every (policy, item) record of the folder, once (the first file holding it wins)."""
    seen: set[tuple[str, str]] = set()
    records = []
    for path in record_files(out_dir):
        for record in read_records(path):
            key = (record["policy"], record["id"])
            if key not in seen:
                seen.add(key)
                records.append(record)
    return records


def merge_records(out_dir: Path) -> None:
    """Rank 0, once every rank is done: fold the ranks' files into `items.jsonl` and remove them."""
    ranks = sorted(out_dir.glob(RANK_RECORDS.format(rank="*")))
    if not ranks:
        return
    records = read_all_records(out_dir)
    partial = out_dir / f"{RECORDS}.partial"
    partial.write_text("".join(json.dumps(record) + "\n" for record in records))
    partial.replace(out_dir / RECORDS)  # atomic: a crash leaves either the old or the new file
    for path in ranks:
        path.unlink()
