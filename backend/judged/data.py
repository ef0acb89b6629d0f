"""A judged leaderboard's data: its instruction set, the reference outputs and the GLM's table.

The data mirror (``backend.evaluation.data``) carries them beside the benchmarks' data, in the same layout:
the instruction set and the reference outputs are dataset splits (``<repo>/<config>/<split>.parquet``), the
GLM's table (AlpacaEval's df_gamed.csv) a file of a dataset repository (``<repo>/_files/<name>``), each
recorded in MANIFEST.json. Runs read them from the mirror, air-gapped; without one they read the Hub at the
config's pinned revisions (``leaderboard data pin --judged NAME``) and refuse an unpinned dataset, as a
benchmark run does. Every value is checked for type and size where it is read: past these readers, code
trusts the records. Reference outputs are matched to the instructions by instruction text, and an
instruction without one is refused by name (alpaca-eval's merge would leave a NaN there and judge it).
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backend.errors import (
    DatasetNotPinned,
    DatasetSourceError,
    JudgedDataInvalid,
    LeaderboardConfigError,
    MirrorError,
)
from backend.evaluation import data as mirror_data
from backend.judged.config import (
    DatasetRef,
    GlmTable,
    JudgedConfig,
    JudgeKind,
    is_judged,
    load_judged_config,
)
from backend.judged.glm import read_glm_table
from backend.judged.outputs import Instruction
from backend.leaderboards.config import CONFIG_DIR, load_judged
from backend.manifests import load_yaml

log = logging.getLogger(__name__)

MIB = 2**20
#: AlpacaEval has 805 instructions; a set past this is not an instruction set a judge should be paid for.
MAX_ROWS = 10_000
MAX_TEXT_CHARS = 200_000  # an instruction or a reference output
MAX_NAME_CHARS = 256  # a source set's name (AlpacaEval's "dataset" column)
MAX_PARQUET_BYTES = 1024 * MIB

#: What a judged config reads: dataset splits and repository files.
DataRef = DatasetRef | GlmTable


@dataclass(frozen=True)
class JudgedRevisions:
    """The revisions a run read, for its provenance: the mirror's, or the config's pins."""

    instructions: str
    reference: str
    glm_table: str | None  # None: no table was read (none configured, or the mirror lacks it)

    def as_dict(self) -> dict[str, str | None]:
        return {"instructions": self.instructions, "reference": self.reference, "glm_table": self.glm_table}


# ---------------------------------------------------------------------------------------------- layout


def judged_data_files(config: JudgedConfig) -> tuple[DataRef, ...]:
    """The dataset splits and repository files the config reads, each once, in that order."""
    refs: list[DataRef] = [config.instructions.dataset, config.reference.dataset]
    if config.scoring.glm_table is not None:
        refs.append(config.scoring.glm_table)
    return tuple(dict.fromkeys(refs))


def mirror_path(mirror: Path, ref: DataRef) -> Path:
    """Where the mirror keeps a split or file (ids validated: the path never leaves the mirror)."""
    if isinstance(ref, GlmTable):
        return mirror_data.mirror_repo_file(mirror, ref.repo, ref.filename)
    return mirror_data.mirror_file(mirror, ref.repo, ref.config, ref.split)


def describe_ref(ref: DataRef) -> str:
    """How messages name a split or file: ``repo/config/split`` or ``repo/filename``."""
    if isinstance(ref, GlmTable):
        return f"{ref.repo}/{ref.filename}"
    return f"{ref.repo}/{ref.config or 'default'}/{ref.split}"


def load_judged_configs(names: Iterable[str]) -> tuple[JudgedConfig, ...]:
    """Judged configs by name (leaderboard_configs/<name>.yaml) or path; ``all``: every judged config there."""
    found: dict[str, JudgedConfig] = {}
    for name in names:
        if name == "all":
            paths = sorted(CONFIG_DIR.glob("*.yaml"))
            wanted = [p.stem for p in paths if is_judged(load_yaml(p, LeaderboardConfigError, "config"))]
        else:
            wanted = [name]
        for item in wanted:
            config = load_judged(item)
            found.setdefault(config.name, config)
    return tuple(found.values())


# ----------------------------------------------------------------------------------------------- reading


def read_instructions(config: JudgedConfig, mirror: Path | None) -> list[Instruction]:
    """The instruction set, in its order, from the mirror (else the Hub at the pinned revision)."""
    spec = config.instructions
    fields = [spec.instruction_field] + ([spec.dataset_field] if spec.dataset_field else [])
    source, rows = _read_split(config, spec.dataset, mirror, fields)
    if not rows:
        raise JudgedDataInvalid(f"{source}: no instructions")
    instructions = []
    for number, row in enumerate(rows):
        text = _text(row, spec.instruction_field, number, source, MAX_TEXT_CHARS)
        if not text.strip():
            raise JudgedDataInvalid(f"{source}: row {number}: column {spec.instruction_field} is empty")
        # AlpacaEval's "dataset": the source set of the instruction; the set itself without such a column.
        dataset = (
            _text(row, spec.dataset_field, number, source, MAX_NAME_CHARS)
            if spec.dataset_field
            else spec.dataset.repo
        )
        instructions.append(Instruction(text, dataset))
    return instructions


def read_reference_outputs(
    config: JudgedConfig, mirror: Path | None, instructions: Sequence[Instruction]
) -> list[str]:
    """The reference model's output to each instruction, aligned with ``instructions`` by instruction text.

    An instruction given k times takes the reference's k first outputs to that text, in order. Reference
    rows for other instructions are ignored; an instruction with no output left is refused, named.
    """
    spec = config.reference
    source, rows = _read_split(config, spec.dataset, mirror, [spec.instruction_field, spec.output_field])
    by_text: dict[str, deque[str]] = defaultdict(deque)
    for number, row in enumerate(rows):
        text = _text(row, spec.instruction_field, number, source, MAX_TEXT_CHARS)
        by_text[text].append(_text(row, spec.output_field, number, source, MAX_TEXT_CHARS))
    outputs: list[str] = []
    missing: list[str] = []
    for number, item in enumerate(instructions):
        queue = by_text.get(item.instruction)
        if queue:
            outputs.append(queue.popleft())
        else:
            missing.append(f"instruction {number} ({_excerpt(item.instruction)})")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise JudgedDataInvalid(
            f"{source}: no reference output ({spec.generator}, column {spec.output_field}) for "
            f"{'; '.join(missing[:3])}{more} of {describe_ref(config.instructions.dataset)}: the reference "
            "must answer every instruction, with the same text (alpaca-eval's merge would leave a NaN there). "
            "Use the reference dataset of the same instructions, or rebuild the mirror"
        )
    return outputs


def glm_table_path(config: JudgedConfig, mirror: Path | None) -> Path | None:
    """The GLM's table (df_gamed.csv) to read with ``backend.judged.glm.read_glm_table``; None when the
    config names none or the mirror lacks it (the caller then fits the fallback GLM and says so)."""
    ref = config.scoring.glm_table
    if ref is None:
        return None
    if mirror is not None:
        path = mirror_path(mirror, ref)
        name = path.relative_to(mirror).as_posix()
        if name not in mirror_data.read_manifest(mirror)["files"]:
            log.warning("the data mirror %s has no %s: the fallback GLM is fitted", mirror, describe_ref(ref))
            return None
        if not path.is_file():
            raise MirrorError(
                f"{mirror}: {name} is in {mirror_data.MANIFEST} but missing: rebuild the mirror"
            )
        return path
    return _download_file(ref, _pinned(ref, config), None)


def judged_revisions(config: JudgedConfig, mirror: Path | None) -> JudgedRevisions:
    """The revisions the readers above read: the mirror's (its manifest), or the config's pins."""
    table = config.scoring.glm_table
    if mirror is None:
        return JudgedRevisions(
            instructions=_pinned(config.instructions.dataset, config),
            reference=_pinned(config.reference.dataset, config),
            glm_table=_pinned(table, config) if table is not None else None,
        )
    files = mirror_data.read_manifest(mirror)["files"]

    def revision(ref: DataRef) -> str | None:
        entry = files.get(mirror_path(mirror, ref).relative_to(mirror).as_posix())
        return entry["revision"] if isinstance(entry, dict) else None

    instructions, reference = revision(config.instructions.dataset), revision(config.reference.dataset)
    if instructions is None or reference is None:
        check_judged_mirror(mirror, [config])  # raises, naming what is missing
    assert instructions is not None and reference is not None
    return JudgedRevisions(instructions, reference, revision(table) if table is not None else None)


def _read_split(
    config: JudgedConfig, ref: DatasetRef, mirror: Path | None, fields: Sequence[str]
) -> tuple[str, list[dict[str, Any]]]:
    """The named columns of a split as rows, and how messages name it; size-checked before reading."""
    fields = list(dict.fromkeys(fields))
    if mirror is not None:
        import pyarrow.parquet as pq

        path = mirror_path(mirror, ref)
        source = f"{path} ({describe_ref(ref)})"
        problems = mirror_data.mirror_problems(mirror, [path])
        if problems:
            raise MirrorError(
                f"the data mirror {mirror} cannot serve {describe_ref(ref)}: {'; '.join(problems)}. Rebuild it "
                f"with `leaderboard data mirror --judged {config.name}` (or `leaderboard data synthesize "
                f"--judged {config.name}` for test data)"
            )
        if path.stat().st_size > MAX_PARQUET_BYTES:
            raise JudgedDataInvalid(f"{source}: larger than {MAX_PARQUET_BYTES // MIB} MiB")
        try:
            metadata = pq.read_metadata(path)
            _check_shape(source, metadata.num_rows, metadata.schema.names, fields)
            rows: list[dict[str, Any]] = pq.read_table(path, columns=fields).to_pylist()
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise MirrorError(f"{source} is not a readable parquet file ({exc}): rebuild the mirror") from exc
        return source, rows
    revision = _pinned(ref, config)
    source = f"{describe_ref(ref)}@{revision}"
    dataset = _load_dataset(ref, revision)
    _check_shape(source, dataset.num_rows, list(dataset.column_names), fields)
    return source, list(dataset.select_columns(fields).to_list())


def _check_shape(source: str, rows: int, columns: Sequence[str], fields: Sequence[str]) -> None:
    missing = [f for f in fields if f not in columns]
    if missing:
        raise JudgedDataInvalid(
            f"{source}: no column {', '.join(missing)} (it has {', '.join(columns)}): fix the config's field names"
        )
    if rows > MAX_ROWS:
        raise JudgedDataInvalid(f"{source}: {rows} rows, more than {MAX_ROWS}")


def _text(row: dict[str, Any], field: str, number: int, source: str, limit: int) -> str:
    value = row.get(field)
    if not isinstance(value, str):
        shown = "nothing (null)" if value is None else type(value).__name__
        raise JudgedDataInvalid(f"{source}: row {number}, column {field}: {shown}, not a string")
    if len(value) > limit:
        raise JudgedDataInvalid(
            f"{source}: row {number}, column {field}: {len(value)} characters, more than {limit}"
        )
    return value


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _pinned(ref: DataRef, config: JudgedConfig) -> str:
    """A ref's pinned revision: reading the Hub at whatever its main branch is now would not be reproducible."""
    if ref.revision is None:
        raise DatasetNotPinned(
            f"{describe_ref(ref)} has revision: null in {config.source}: run `leaderboard data pin --judged "
            f"{config.name}` where "
            "the Hub is reachable (and commit the config), or read it from a data mirror"
        )
    return ref.revision


# -------------------------------------------------------------------------------------------- the Hub


def _load_dataset(ref: DatasetRef, revision: str, token: str | None = None) -> Any:
    import datasets

    try:  # never trust_remote_code: a dataset's loading script is code from the Hub
        return datasets.load_dataset(ref.repo, ref.config, split=ref.split, revision=revision, token=token)
    except Exception as exc:  # datasets wraps Hub errors in several types
        raise DatasetSourceError(
            f"could not read dataset {describe_ref(ref)}@{revision} from the Hub: {exc}"
        ) from exc


def _download_file(ref: GlmTable, revision: str, token: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(ref.repo, ref.filename, repo_type="dataset", revision=revision, token=token)
        )
    except Exception as exc:  # huggingface_hub raises HTTP, gating and network errors alike
        raise DatasetSourceError(
            f"could not download {describe_ref(ref)}@{revision} from the Hub: {exc}"
        ) from exc


def _repo_revisions(configs: Sequence[JudgedConfig], token: str | None) -> dict[str, str]:
    """One revision per repository for a mirror: the pinned one (refused if two differ), else the Hub's."""
    pins: dict[str, set[str]] = defaultdict(set)
    for config in configs:
        for ref in judged_data_files(config):
            pins[ref.repo].update([ref.revision] if ref.revision else [])
    revisions = {}
    api = None
    for repo, pinned in pins.items():
        if len(pinned) > 1:
            raise MirrorError(
                f"{repo} is pinned at {', '.join(sorted(pinned))} by the judged configs: a mirror holds one "
                "revision of each repository (pin them alike, or build a mirror per revision)"
            )
        if pinned:
            revisions[repo] = next(iter(pinned))
            continue
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        revisions[repo] = mirror_data.hub_commit(api, repo)
    return revisions


def mirror_judged_from_hub(
    mirror: Path, configs: Sequence[JudgedConfig], token: str | None = None
) -> dict[str, str]:
    """Copy every split and file the judged configs read into an existing mirror (after the task set's),
    at the pinned (else current) revisions, then check them as ``verify`` does; return repo -> revision."""
    mirror = Path(mirror).resolve()
    revisions = _repo_revisions(configs, token)
    for entry in mirror_data.read_manifest(mirror)["files"].values():
        if revisions.get(entry["repo"], entry["revision"]) != entry["revision"]:
            raise MirrorError(
                f"{mirror} holds {entry['repo']} at {entry['revision']}, and the judged configs read it at "
                f"{revisions[entry['repo']]}: a mirror holds one revision of each repository (build a new one)"
            )
    entries: dict[str, dict[str, Any]] = {}
    for ref in dict.fromkeys(ref for config in configs for ref in judged_data_files(config)):
        path = mirror_path(mirror, ref)
        revision = revisions[ref.repo]
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(ref, GlmTable):
            downloaded = _download_file(ref, revision, token)
            table = read_glm_table(downloaded, f"{describe_ref(ref)}@{revision}")
            shutil.copyfile(downloaded, path)
            name, entry = mirror_data.manifest_entry(
                mirror,
                path,
                repo=ref.repo,
                file=ref.filename,
                source="hub",
                revision=revision,
                rows=len(table.preference),
            )
        else:
            dataset = _load_dataset(ref, revision, token)
            if dataset.num_rows > MAX_ROWS:
                raise JudgedDataInvalid(
                    f"{describe_ref(ref)}@{revision}: {dataset.num_rows} rows, more than {MAX_ROWS}"
                )
            dataset.to_parquet(str(path))
            name, entry = mirror_data.manifest_entry(
                mirror,
                path,
                repo=ref.repo,
                config=ref.config,
                split=ref.split,
                source="hub",
                revision=revision,
                rows=dataset.num_rows,
            )
        entries[name] = entry
        log.info("mirrored %s at %s: %d rows", describe_ref(ref), revision, entry["rows"])
    mirror_data.add_to_manifest(mirror, entries)
    verify_judged_mirror(mirror, configs)
    return {ref_repo: revisions[ref_repo] for ref_repo in sorted(revisions)}


# ------------------------------------------------------------------------------------------ checking


def check_judged_mirror(mirror: Path, configs: Sequence[JudgedConfig], *, checksums: bool = False) -> None:
    """Refuse a mirror that lacks a split or file these configs read (with checksums: or whose bytes changed)."""
    mirror = Path(mirror)
    for config in configs:
        paths = [mirror_path(mirror, ref) for ref in judged_data_files(config)]
        problems = mirror_data.mirror_problems(mirror, paths, checksums=checksums)
        if problems:
            raise MirrorError(
                f"the data mirror {mirror} cannot serve judged leaderboard {config.name}: {'; '.join(problems)}. "
                f"Rebuild it with `leaderboard data mirror --judged {config.name}` (or `leaderboard data "
                f"synthesize --judged {config.name}` for test data)"
            )


def verify_judged_mirror(mirror: Path, configs: Sequence[JudgedConfig]) -> None:
    """Every file against its sha256, then read as a run reads them: the instructions, a reference output
    for each, and a GLM table that read_glm_table accepts, with a difficulty for every instruction."""
    check_judged_mirror(mirror, configs, checksums=True)
    for config in configs:
        instructions = read_instructions(config, mirror)
        read_reference_outputs(config, mirror, instructions)
        path = glm_table_path(config, mirror)
        if path is not None:
            table = read_glm_table(path)
            if table.n_instructions < len(instructions):
                raise JudgedDataInvalid(
                    f"{path}: instruction difficulties for {table.n_instructions} instructions, and "
                    f"{describe_ref(config.instructions.dataset)} has {len(instructions)}: the GLM matches them "
                    "by position, so the table must be the instruction set's own"
                )


# ---------------------------------------------------------------------------------------------- pinning


def pin_judged(config: JudgedConfig, token: str | None = None, *, update: bool = False) -> JudgedConfig:
    """Write the Hub's current commits into the config file (only unpinned revisions unless update): its
    datasets' and the GLM table's, and a local judge model's. Comments and layout are kept."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    commits: dict[tuple[str, str], str] = {}

    def commit(repo: str, repo_type: str = "dataset") -> str:
        if (repo, repo_type) not in commits:
            commits[(repo, repo_type)] = mirror_data.hub_commit(api, repo, repo_type)
        return commits[(repo, repo_type)]

    wanted: dict[tuple[str, ...], str] = {}
    refs: list[tuple[tuple[str, ...], DataRef]] = [
        (("instructions", "dataset", "revision"), config.instructions.dataset),
        (("reference", "dataset", "revision"), config.reference.dataset),
    ]
    if config.scoring.glm_table is not None:
        refs.append((("scoring", "glm_table", "revision"), config.scoring.glm_table))
    for keys, ref in refs:
        if ref.revision is None or update:
            wanted[keys] = commit(ref.repo)
    judge = config.judge
    if judge.kind is JudgeKind.LOCAL and (judge.revision is None or update):
        wanted[("judge", "revision")] = commit(judge.model, "model")
    path = Path(config.source)
    if wanted:
        write_yaml_scalars(path, wanted)
    return load_judged_config(path)


def write_yaml_scalars(path: Path, values: dict[tuple[str, ...], str]) -> None:
    """Replace scalars of a YAML file in place, by their key path, as quoted strings: every other byte (the
    comments, flow or block style) is kept. Each key must already be there (``revision: null``)."""
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise LeaderboardConfigError(f"{path}: not valid YAML: {exc}") from exc
    spans = []
    for keys, value in values.items():
        if "'" in value or "\n" in value:
            raise LeaderboardConfigError(f"{path}: {value!r} cannot be written as a quoted scalar")
        node = root
        for key in keys:
            child = None
            if isinstance(node, yaml.MappingNode):
                child = next(
                    (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None
                )
            if child is None:
                raise LeaderboardConfigError(
                    f"{path}: no field {'.'.join(keys)} to pin: add `{keys[-1]}: null` there and pin again"
                )
            node = child
        if not isinstance(node, yaml.ScalarNode):
            raise LeaderboardConfigError(f"{path}: field {'.'.join(keys)} is not a single value")
        spans.append((node.start_mark.index, node.end_mark.index, f"'{value}'"))  # quoted: all-digit shas
    for start, end, new in sorted(spans, reverse=True):
        text = text[:start] + new + text[end:]
    path.write_text(text, encoding="utf-8")
