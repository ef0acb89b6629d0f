"""The plots page on SQLite and PostgreSQL: three SVG images drawn from the leaderboard table's rows, read back
as XML and checked against the rows (one marker per model at its log-scale position, histogram bars of the
right heights, numpy's correlations), filtered like the table, cached, and sent with the pages' headers."""

from __future__ import annotations

import base64
import random
import re
import xml.etree.ElementTree as ET
from html import unescape

import numpy as np
import pytest
from starlette.testclient import TestClient

from backend.api.app import create_api
from backend.domain import ModelType, Precision
from backend.leaderboards.config import load_config
from backend.publish.table import TYPE_LABELS
from backend.web import charts
from backend.web.charts import CHARTS, HISTOGRAM_BINS, PlotData, Renders, type_name
from backend.web.view import CSP

from .test_publish import MODELS, evaluate

SVG = "{http://www.w3.org/2000/svg}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
# Beside MODELS: the two other types, and a model whose size is not known (left out of the scatter).
MORE = [
    ("org-d/delta", Precision.BFLOAT16, ModelType.CONTINUOUSLY_PRETRAINED, 100.0),
    ("org-e/epsilon", Precision.FLOAT16, ModelType.FINE_TUNED, 100.0),
    ("org-f/unsized", Precision.BFLOAT16, ModelType.CHAT, 100.0),
]
PARAMS = {
    "org-a/alpha": 0.05,
    "org-b/beta": 7.2,
    "org-c/gamma": 140.0,
    "org-d/delta": 1.5,
    "org-e/epsilon": 13.0,
}


@pytest.fixture
def client(app):
    with TestClient(create_api(app)) as http:
        yield http


def varied(model: str):
    """An edit of the reference's results that gives ``model`` scores of its own, benchmark by benchmark."""
    rng = random.Random(model)

    def edit(results: dict) -> None:
        for entry in results["results"].values():
            factor = rng.uniform(0.9, 1.35)
            for key, value in list(entry.items()):
                if "," in key and "_stderr" not in key and isinstance(value, float):
                    entry[key] = min(1.0, value * factor)

    return edit


def evaluate_all(app, clock, tmp_path) -> list[dict]:
    for model, precision, model_type, seconds in MODELS + MORE:
        evaluate(
            app,
            clock,
            tmp_path,
            model,
            precision,
            model_type,
            seconds,
            edit=varied(model),
            params_b=PARAMS.get(model),
        )
    return app.leaderboard.rows()


def svg_of(client, name: str, **params: str) -> ET.Element:
    answer = client.get(f"/plots/{name}.svg", params=params)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/svg+xml"
    assert answer.headers["content-security-policy"] == CSP
    assert answer.headers["x-content-type-options"] == "nosniff"
    root = ET.fromstring(answer.content)
    assert root.tag == f"{SVG}svg"
    # What the CSP would refuse: matplotlib's styles are presentation attributes here.
    assert not [e for e in root.iter() if "style" in e.attrib or e.tag == f"{SVG}style"]
    assert not [e for e in root.iter() if e.tag == f"{SVG}script"]
    assert "$" not in "".join(root.itertext())  # no mathtext left unrendered
    return root


def group(root: ET.Element, gid: str) -> ET.Element:
    found = root.find(f".//{SVG}g[@id='{gid}']")
    assert found is not None, gid
    return found


def texts(element: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in element.iter(f"{SVG}text")]


def markers(root: ET.Element) -> dict[str, list[float]]:
    """The scatter's markers, by model type value: their x positions."""
    return {
        g.get("id", "").removeprefix("models-"): [float(u.get("x", "nan")) for u in g.iter(f"{SVG}use")]
        for g in root.iter(f"{SVG}g")
        if g.get("id", "").startswith("models-")
    }


def x_ticks(root: ET.Element) -> dict[float, float]:
    """The x axis's labelled ticks: value -> x position."""
    ticks = {}
    for tick in group(root, "matplotlib.axis_1").iter(f"{SVG}g"):
        if re.fullmatch(r"xtick_\d+", tick.get("id", "")) and texts(tick):
            ticks[float(texts(tick)[0])] = float(next(tick.iter(f"{SVG}use")).get("x", "nan"))
    return ticks


def test_the_plots_page_shows_three_images_drawn_from_the_table(app, clock, tmp_path, client):
    evaluate_all(app, clock, tmp_path)
    page = client.get("/plots")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    html = page.text
    assert '<a href="/plots">Plots</a>' in client.get("/").text  # the nav links here from every page
    assert "<script" not in html and " style=" not in html
    images = re.findall(r'<img src="([^"]+)" alt="([^"]+)">', html)
    assert [src for src, _ in images] == [f"/plots/{name}.svg" for name in CHARTS]
    assert all(len(alt) > 40 for _, alt in images)  # each image says what it shows
    assert "6 models in this view" in html
    assert "1 model left out: no average or no parameter count." in html  # the unsized one
    assert "over the 6 models that have all of them" in unescape(html)


def test_the_scatter_has_a_marker_per_model_on_a_log_axis_and_a_legend_of_its_types(
    app, clock, tmp_path, client
):
    rows = evaluate_all(app, clock, tmp_path)
    root = svg_of(client, "average-vs-params")
    sized = [r for r in rows if r["#Params (B)"] is not None]
    by_type = {m.value: [r for r in sized if r["Type"] == TYPE_LABELS[m][1]] for m in ModelType}
    found = markers(root)
    assert {t: len(xs) for t, xs in found.items()} == {t: len(rs) for t, rs in by_type.items() if rs}
    legend = texts(group(root, "legend_1"))
    assert legend == ["Model type"] + [f"{type_name(m)} ({len(by_type[m.value])})" for m in ModelType]
    # A log axis: its labelled ticks are powers of ten, equally spaced, and each marker sits at log10(size).
    ticks = x_ticks(root)
    assert {0.1, 1.0, 10.0, 100.0} <= set(ticks)
    decade = ticks[10.0] - ticks[1.0]
    assert ticks[100.0] - ticks[10.0] == pytest.approx(decade, abs=0.01)
    assert ticks[1.0] - ticks[0.1] == pytest.approx(decade, abs=0.01)
    for model_type, xs in found.items():
        expected = sorted(ticks[1.0] + decade * np.log10(r["#Params (B)"]) for r in by_type[model_type])
        assert sorted(xs) == pytest.approx(expected, abs=0.05)


def test_the_histograms_count_each_benchmarks_scores(app, clock, tmp_path, client):
    rows = evaluate_all(app, clock, tmp_path)
    root = svg_of(client, "score-distributions")
    titles = texts(root)
    for index, benchmark in enumerate(app.config.benchmarks):
        scores = [r[benchmark.column] for r in rows]
        counts, _ = np.histogram(np.clip(scores, 0, 100), bins=HISTOGRAM_BINS)
        assert f"{benchmark.column} ({len(scores)} models)" in titles
        heights = []
        for number in range(len(counts)):
            d = next(group(root, f"bins-{index}-{number}").iter(f"{SVG}path")).get("d", "")
            ys = [float(y) for y in re.findall(r"[ML] [\d.]+ ([\d.]+)", d)]
            heights.append(max(ys) - min(ys))
        assert len(heights) == len(HISTOGRAM_BINS) - 1
        unit = max(heights) / counts.max()
        assert heights == pytest.approx([c * unit for c in counts], abs=0.01)


def test_the_correlations_shown_are_numpys_over_the_table_rows(app, clock, tmp_path, client):
    rows = evaluate_all(app, clock, tmp_path)
    columns = [b.column for b in app.config.benchmarks]
    r = np.corrcoef(np.array([[row[c] for c in columns] for row in rows]), rowvar=False)
    assert np.isfinite(r).all() and (np.abs(r) < 0.99).any()  # the test's scores are not degenerate
    root = svg_of(client, "benchmark-correlations")
    page = client.get("/plots").text
    table = page.split('<table class="correlation">', 1)[1].split("</table>", 1)[0]
    shown = [re.findall(r'<td class="num">([^<]*)</td>', line) for line in table.split("<tr>")[2:]]
    for i in range(len(columns)):
        for j in range(len(columns)):
            assert texts(group(root, f"r-{i}-{j}")) == [f"{r[i, j]:.2f}"]
            assert shown[i][j] == f"{r[i, j]:.2f}"
    assert [texts(group(root, f"ytick_{i + 1}")) for i in range(len(columns))] == [[c] for c in columns]


def test_the_plots_take_the_tables_filters(app, clock, tmp_path, client):
    evaluate_all(app, clock, tmp_path)
    chat = svg_of(client, "average-vs-params", type=ModelType.CHAT.value)
    assert {t: len(xs) for t, xs in markers(chat).items()} == {ModelType.CHAT.value: 1}
    assert texts(group(chat, "legend_1")) == ["Model type", f"{type_name(ModelType.CHAT)} (1)"]
    big = markers(svg_of(client, "average-vs-params", min_params="5"))
    assert sum(len(xs) for xs in big.values()) == 3  # 7.2, 13 and 140 billion
    assert "IFEval (2 models)" in texts(svg_of(client, "score-distributions", precision="float16"))
    page = client.get("/plots", params={"precision": "float16", "search": "e"}).text
    assert '<img src="/plots/average-vs-params.svg?precision=float16&amp;search=e"' in page
    assert '<option value="float16" selected>' in page and "2 models in this view" in page
    # Two models are too few to correlate: the page says so and links no image.
    assert "Correlations need at least three models" in page and "benchmark-correlations.svg" not in page


@pytest.mark.parametrize("path", ["/plots", "/plots/average-vs-params.svg", "/plots/score-distributions.svg"])
@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"type": "robot"}, "type must be one of"),
        ({"min_params": "abc"}, "min_params must be a number"),
        ({"search": "x" * 201}, "search must be at most 200 characters"),
    ],
)
def test_a_filter_that_is_not_valid_is_a_page_saying_why(client, path, params, problem):
    answer = client.get(path, params=params)
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"] == CSP
    assert problem in unescape(answer.text) and 'href="/plots"' in answer.text


def test_a_plot_that_does_not_exist_is_a_404_page(client):
    answer = client.get("/plots/nope.svg")
    assert answer.status_code == 404 and "no plot of this name" in answer.text


def test_with_no_model_or_one_there_is_nothing_to_plot_yet(app, clock, tmp_path, client):
    empty = client.get("/plots")
    assert empty.status_code == 200 and "Nothing to plot yet: no model is in this view" in empty.text
    assert "<img" not in empty.text
    for name in CHARTS:  # an image asked for anyway is an image that says so
        assert "Nothing to plot yet in this view" in texts(svg_of(client, name))
    evaluate(app, clock, tmp_path, *MODELS[0])
    one = client.get("/plots")
    assert one.status_code == 200 and "Nothing to plot yet: one model is in this view" in one.text


def test_an_image_is_drawn_once_for_the_same_numbers(app, clock, tmp_path, client):
    evaluate_all(app, clock, tmp_path)
    first = client.get("/plots/score-distributions.svg")
    # Another view of the same models is the same drawing (the fingerprint is of the numbers, not the URL).
    same = client.get("/plots/score-distributions.svg", params={"search": "org-"})
    assert same.headers["etag"] == first.headers["etag"] and same.content == first.content
    fewer = client.get("/plots/score-distributions.svg", params={"search": "alpha"})
    assert fewer.headers["etag"] != first.headers["etag"]
    held = client.get("/plots/score-distributions.svg", headers={"If-None-Match": first.headers["etag"]})
    assert held.status_code == 304 and held.content == b""
    assert held.headers["content-security-policy"] == CSP

    data = PlotData.from_rows(app.leaderboard.rows(), app.config)
    renders = Renders()
    drawn = [renders.svg(CHARTS["benchmark-correlations"], data) for _ in range(3)]
    assert renders.misses == 1 and drawn[0][1] is drawn[2][1]


def synthetic_rows(n: int, *, missing_every: int = 0) -> list[dict]:
    config = load_config("open_llm_v2")
    rng = random.Random(n)
    rows = []
    for i in range(n):
        row = {b.column: rng.uniform(0, 80) for b in config.benchmarks}
        row[config.average.column] = sum(row.values()) / len(row)
        row["#Params (B)"] = 10 ** rng.uniform(-1, 2)
        row["Type"] = TYPE_LABELS[list(ModelType)[i % len(ModelType)]][1]
        if missing_every and i % missing_every == 0:
            row["GPQA"] = None
        rows.append(row)
    return rows


def test_models_missing_a_value_are_left_out_of_the_plots_that_need_it():
    config = load_config("open_llm_v2")
    rows = synthetic_rows(10, missing_every=5)  # rows 0 and 5 have no GPQA
    rows[1]["#Params (B)"] = None
    rows[2]["#Params (B)"] = 0.0  # not on a log axis
    rows[3][config.average.column] = float("nan")
    data = PlotData.from_rows(rows, config)
    assert data.models == 10 and len(data.points) == 7
    gpqa = data.benchmarks.index("GPQA")
    assert [len(s) for s in data.scores] == [10 if i != gpqa else 8 for i in range(len(data.benchmarks))]
    assert len(data.complete) == 8
    columns = list(data.benchmarks)
    kept = [[r[c] for c in columns] for i, r in enumerate(rows) if i not in (0, 5)]
    assert np.array(data.correlation()) == pytest.approx(np.corrcoef(np.array(kept), rowvar=False))


def test_a_benchmark_whose_scores_do_not_vary_has_no_correlation():
    config = load_config("open_llm_v2")
    rows = synthetic_rows(5)
    for row in rows:
        row["MUSR"] = 0.0
    r = PlotData.from_rows(rows, config).correlation()
    musr = [b.column for b in config.benchmarks].index("MUSR")
    assert r is not None and r[musr] == [None] * len(r) and r[0][0] == pytest.approx(1.0)
    svg = ET.fromstring(CHARTS["benchmark-correlations"].svg(PlotData.from_rows(rows, config)))
    assert texts(group(svg, f"r-{musr}-0")) == ["–"]


def test_many_points_are_one_embedded_png(monkeypatch):
    monkeypatch.setattr(charts, "RASTERIZE_ABOVE", 10)
    data = PlotData.from_rows(synthetic_rows(40), load_config("open_llm_v2"))
    root = ET.fromstring(CHARTS["average-vs-params"].svg(data))
    assert all(xs == [] for xs in markers(root).values())  # no marker element per model
    images = [e.get(XLINK_HREF, "") for e in root.iter(f"{SVG}image")]
    assert len(images) == 1 and images[0].startswith("data:image/png;base64,")
    assert base64.b64decode(images[0].split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    legend = texts(group(root, "legend_1"))
    assert legend[1:] == [f"{type_name(m)} (8)" for m in ModelType]  # the legend still counts them
