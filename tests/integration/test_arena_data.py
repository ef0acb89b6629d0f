"""The arena's battles out and in, on SQLite and PostgreSQL: an export imported into a fresh database gives
the same battles and the same ratings, importing is idempotent (identical minimal records stay separate),
a refused file writes nothing, the suspicious-voter report over votes timed by the test's clock, its admin
route, and the arena in the published results dataset (no voter's name or address in any file)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from backend.api.app import create_api
from backend.app import App
from backend.errors import BattlesInvalid, PublishFailed
from backend.publish.targets import LocalFolderTarget
from backend.services.arena import ArenaService
from backend.services.arena_data import ArenaDataService
from backend.services.arena_report import ReportRules
from backend.settings import Settings
from backend.storage.schema import arena_battles
from backend.storage.tokens import TokenRepository
from tests.conftest import _postgres_schema_url

from .conftest import Clock
from .test_arena_service import answer_both, service

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
VOTERS = ("alice-voter-17", "bob-voter-42")
ADDRESS = "203.0.113.77"


@pytest.fixture
def other_app(database_url: str, tmp_path: Path, clock: Clock) -> Iterator[App]:
    """A second, empty database of the same kind: where an export is imported."""
    urls: Iterator[str] = (
        iter([f"sqlite:///{tmp_path / 'other.db'}"])
        if database_url.startswith("sqlite")
        else _postgres_schema_url()
    )
    for url in urls:
        application = App.open(Settings(database_url=url))
        application.clock = clock
        yield application
        application.close()


def vote(
    arena: ArenaService, clock: Clock, user: str, winner: str, *, think: float = 30.0, turns: int = 1
) -> int:
    """A live battle of ``user`` with ``turns`` prompts, voted ``think`` seconds after the last answer."""
    view = arena.start(user, ADDRESS, "Question 1")
    answer_both(arena, view.id, user)
    for number in range(2, turns + 1):
        arena.continue_battle(view.id, user, f"Question {number}")
        answer_both(arena, view.id, user)
    clock.advance(think)
    arena.vote(view.id, user, winner)
    return view.id


def populate(arena: ArenaService, clock: Clock, tmp_path: Path) -> ArenaDataService:
    """Live votes of two voters (one battle of three turns), a battle revealed without a vote and one never
    voted (neither exported), and imported battles without conversations (one not anonymous)."""
    winners = ["model_a", "model_b", "tie", "tie (bothbad)", "model_a", "model_b", "model_a"]
    for i, winner in enumerate(winners):
        vote(arena, clock, VOTERS[i % 2], winner, turns=3 if i == 2 else 1)
    revealed = arena.start(VOTERS[0], ADDRESS, "Revealed")
    answer_both(arena, revealed.id, VOTERS[0])
    arena.reveal(revealed.id, VOTERS[0])
    arena.start(VOTERS[1], ADDRESS, "Never voted")
    data = ArenaDataService(arena, clock, batch=3)
    minimal = tmp_path / "minimal.jsonl"
    lines = [
        {"model_a": "org/alpha", "model_b": "org/gamma", "winner": "model_b", "tstamp": 1.7e9},
        {"model_a": "org/gamma", "model_b": "org/beta", "winner": "tie", "turn": 2, "question_id": "pub-9"},
        {"model_a": "org/beta", "model_b": "org/alpha", "winner": "model_a", "anony": False},
    ]
    minimal.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert data.import_file(minimal).added == 3
    return data


def exported(data: ArenaDataService, path: Path) -> list[dict[str, Any]]:
    """The records of an export, read back as JSON lines."""
    data.export(path)
    with path.open() as lines:
        return [json.loads(line) for line in lines]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_an_export_imported_into_a_fresh_database_gives_the_same_battles_and_ratings(
    app: App, other_app: App, clock: Clock, tmp_path: Path, suffix: str
) -> None:
    source = populate(service(app, clock), clock, tmp_path)
    records = exported(source, tmp_path / "source.jsonl")
    assert len(records) == 10  # 7 live votes and 3 imported; the revealed and the unvoted battles are not
    assert [r["mode"] for r in records] == ["live"] * 7 + ["imported"] * 3
    three = records[2]
    assert three["turn"] == 3 and [m["role"] for m in three["conversation_a"]] == ["user", "assistant"] * 3
    assert three["conversation_a"][4]["content"] == "Question 3"
    assert three["question_id"] == "test_arena-3"  # the third battle started
    assert (
        records[8]["turn"] == 2
        and records[8]["conversation_a"] is None
        and records[8]["question_id"] == "pub-9"
    )
    assert records[7]["tstamp"] == 1.7e9 and records[9]["anony"] is False

    path = tmp_path / f"battles{suffix}"
    assert source.export(path) == 10
    target = ArenaDataService(service(other_app, clock), clock, batch=4)
    report = target.import_file(path)
    assert (report.read, report.added, report.already) == (10, 10, 0)
    again = exported(target, tmp_path / "again.jsonl")
    assert [r["mode"] for r in again] == ["imported"] * 10
    strip = [{k: v for k, v in r.items() if k != "mode"} for r in records]
    assert [{k: v for k, v in r.items() if k != "mode"} for r in again] == strip
    ratings, imported = source.ratings(), target.ratings()
    assert ratings is not None and imported is not None and ratings.battles == 9  # the anonymous votes
    assert imported.rows() == ratings.rows()

    twice = target.import_file(path)
    assert (twice.read, twice.added, twice.already) == (10, 0, 10)
    assert target.repository.vote_stamp("test_arena")[0] == 10


def test_identical_minimal_records_stay_separate_and_a_new_release_adds_only_its_new_battles(
    app: App, clock: Clock, tmp_path: Path
) -> None:
    data = ArenaDataService(service(app, clock), clock, batch=2)
    same = {"model_a": "org/alpha", "model_b": "org/beta", "winner": "model_a"}
    other = {"model_a": "org/beta", "model_b": "org/gamma", "winner": "tie"}
    first = tmp_path / "release-1.json"
    first.write_text(json.dumps([same, same, same, other]))
    assert (data.import_file(first).added, data.import_file(first).added) == (4, 0)
    second = tmp_path / "release-2.json"
    second.write_text(json.dumps([same, same, same, same, other, {**other, "winner": "model_b"}]))
    report = data.import_file(second)
    assert (report.read, report.added, report.already) == (6, 2, 4)
    records = exported(data, tmp_path / "all.jsonl")
    assert sum(r["model_a"] == "org/alpha" for r in records) == 4
    assert all(r["anony"] is True and r["turn"] == 1 and r["conversation_a"] is None for r in records)
    assert {r["tstamp"] for r in records} == {clock().timestamp()}  # no tstamp: the import's time


def test_a_refused_file_writes_nothing_and_names_the_record_the_field_and_the_fix(
    app: App, clock: Clock, tmp_path: Path
) -> None:
    data = ArenaDataService(service(app, clock), clock, batch=1)
    good = {"model_a": "org/alpha", "model_b": "org/beta", "winner": "model_a"}
    cases = [
        (good | {"turn": "two"}, "line 3: turn is 'two', not a whole number", "number of user turns"),
        (good | {"winner": "draw"}, "line 3: winner is 'draw'", "winner must be one of"),
        (good | {"model_b": "org/alpha"}, "line 3: org/alpha battles itself", "leave out battles"),
        ({"model_a": "org/alpha", "winner": "tie"}, "line 3: model_b is missing", "give every record"),
    ]
    path = tmp_path / "bad.jsonl"
    for bad, problem, fix in cases:
        path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
        with pytest.raises(BattlesInvalid) as refused:
            data.import_file(path, "bad.jsonl")
        assert refused.value.source == "bad.jsonl"
        assert refused.value.problem.startswith(problem), refused.value.problem
        assert fix in refused.value.fix
    assert data.repository.vote_stamp("test_arena") == (0, 0)  # the good first record was not written

    link = tmp_path / "link.jsonl"
    link.symlink_to(path)
    with pytest.raises(BattlesInvalid, match="is a symbolic link"):
        data.import_file(link)
    with pytest.raises(BattlesInvalid, match="is not a regular file"):
        data.import_file(tmp_path)
    with pytest.raises(BattlesInvalid, match=r"'\.txt' is none of"):
        (tmp_path / "b.txt").write_text("{}")
        data.import_file(tmp_path / "b.txt")


def test_the_report_flags_one_side_and_fast_voters_and_not_an_honest_one(app: App, clock: Clock) -> None:
    arena = service(app, clock)
    for i in range(6):
        vote(arena, clock, "always-a", "model_a", think=40)
        vote(arena, clock, "speedy", ["model_a", "model_b", "tie"][i % 3], think=0.5)
        vote(arena, clock, "honest", ["model_a", "model_b", "tie"][i % 3], think=25 + i)
    data = ArenaDataService(arena, clock)
    voters = {v.user: v for v in data.suspicious(30, ReportRules(min_votes=5))}
    assert set(voters) == {"always-a", "speedy"}
    assert voters["always-a"].reasons == ("same-side: 100% of 6 votes for side A",)
    assert voters["speedy"].median_seconds == 0.5 and voters["speedy"].reasons[0].startswith("fast-votes")
    assert data.suspicious(30, ReportRules(min_votes=7)) == []  # too few votes for those rules
    clock.advance(31 * 86400)
    assert data.suspicious(30, ReportRules(min_votes=5)) == []  # only the period's votes


def test_the_admin_route_answers_admins_only_and_404_without_an_arena(app: App, clock: Clock) -> None:
    tokens = TokenRepository(app.db)
    _, admin = tokens.create("root", True, "test", clock())
    _, user = tokens.create("alice", False, "test", clock())
    url = "/api/admin/arena/suspicious"
    arena = service(app, clock)
    app.arena = arena  # the deployment's arena, as App builds it from LEADERBOARD_ARENA
    for _ in range(5):
        vote(arena, clock, "always-b", "model_b")
    with TestClient(create_api(app)) as http:
        assert http.get(url).status_code == 401
        assert http.get(url, headers={"Authorization": f"Bearer {user}"}).status_code == 403
        found = http.get(url, params={"min_votes": 5}, headers={"Authorization": f"Bearer {admin}"})
        assert found.status_code == 200, found.text
        assert [(v["user"], v["votes"], v["share_b"]) for v in found.json()] == [("always-b", 5, 1.0)]
        refused = http.get(url, params={"side_share": 2}, headers={"Authorization": f"Bearer {admin}"})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_input"
    with (
        App.open(Settings(database_url=app.settings.database_url)) as plain,
        TestClient(create_api(plain)) as http,
    ):
        assert http.get(url, headers={"Authorization": f"Bearer {user}"}).status_code == 403
        missing = http.get(url, headers={"Authorization": f"Bearer {admin}"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "arena_not_configured"


class FlakyFolder(LocalFolderTarget):
    """A folder that refuses deliveries while ``down`` (a Hub commit that fails)."""

    down = False

    def put(self, files: dict[str, bytes], message: str) -> list[str]:
        if self.down:
            raise PublishFailed("the target is down")
        return super().put(files, message)


def _bytes_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_the_arena_is_published_as_two_configs_only_when_its_votes_change(
    app: App, clock: Clock, tmp_path: Path
) -> None:
    import datasets

    arena = service(app, clock)
    app.arena = arena
    folder = tmp_path / "published"
    target = FlakyFolder(folder)
    assert app.publishing.publish(target).arena_battles == 0 and not folder.exists()  # no vote: nothing
    populate(arena, clock, tmp_path)
    report = app.publishing.publish(target)
    assert report.published == 0 and report.arena_battles == 10
    assert {"arena/test_arena/battles.parquet", "arena/test_arena/ratings.csv", "README.md"} <= set(
        report.changed_files
    )
    battles = datasets.load_dataset(str(folder), "test_arena_battles", split="train")
    assert battles.num_rows == 10 and battles.column_names[:4] == [
        "question_id",
        "model_a",
        "model_b",
        "winner",
    ]
    assert [m["role"] for m in battles[2]["conversation_b"]] == ["user", "assistant"] * 3
    ratings = datasets.load_dataset(str(folder), "test_arena_ratings", split="train")
    assert ratings.column_names == ["rank", "model", "rating", "rating_lower", "rating_upper", "battles"]
    fit = arena.ratings()
    assert fit is not None and ratings["model"] == [m.model for m in fit.models]
    card = (folder / "README.md").read_text()
    assert 'load_dataset(repo, "test_arena_battles")' in card
    files = _bytes_of(folder)
    with app.db.transaction() as conn:  # what the database keeps of the address: a keyed hash
        address_hash = conn.execute(
            select(arena_battles.c.address).where(arena_battles.c.id == 1)
        ).scalar_one()
    for secret in (*VOTERS, ADDRESS, address_hash):
        assert not [path for path, data in files.items() if secret.encode() in data], secret

    again = app.publishing.publish(target)  # the votes did not change
    assert (again.arena_battles, again.changed_files) == (0, []) and _bytes_of(folder) == files
    fresh = App.open(Settings(database_url=app.settings.database_url))  # another process: reads the stamp
    fresh.clock, fresh.arena = clock, service(fresh, clock)
    assert fresh.publishing.publish(target).changed_files == []
    fresh.close()

    vote(arena, clock, VOTERS[0], "model_b")
    target.down = True
    with pytest.raises(PublishFailed, match="the arena's files go with the next publish"):
        app.publishing.publish(target)
    assert _bytes_of(folder) == files  # nothing half-written
    target.down = False
    later = app.publishing.publish(target)
    assert later.arena_battles == 11
    assert pq.read_table(folder / "arena/test_arena/battles.parquet").num_rows == 11
    assert json.loads((folder / "arena/test_arena/stamp.json").read_text())["votes"] == 11
    assert os.listdir(folder / "arena") == ["test_arena"]
