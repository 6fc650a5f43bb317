"""The explorer page: its embedded data (no browser), then the page in a real headless Chromium
loaded from file:// (Debian's chromium driven by Playwright), and the PNG figures."""

from __future__ import annotations

import base64
import html as htmlmod
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstmkit.data.mystery import ALIBI_PREFIX, CLUE_PREFIX, QUESTION
from lstmkit.explore import build_page, display_token, write_page, write_pngs
from lstmkit.explore.page import page_data

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS_SCRIPT = "</script><script>window.__pwned=1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned=1">'


def np_lstm(tokens: list[str], H: int = 16, layers: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Gate traces of a randomly initialised LSTM run over one-hot tokens (NumPy, (L, T, H))."""
    rng = np.random.default_rng(seed)
    vocab = sorted(set(tokens))
    x = np.zeros((len(tokens), len(vocab)))
    x[np.arange(len(tokens)), [vocab.index(t) for t in tokens]] = 1
    out: dict[str, list[np.ndarray]] = {k: [] for k in "ifgoch"}
    inp = x
    for _ in range(layers):
        Wx, Wh = rng.normal(0, 1.2, (4 * H, inp.shape[1])), rng.normal(0, 0.5, (4 * H, H))
        b = np.zeros(4 * H)
        b[H : 2 * H] = rng.normal(2.0, 1.5, H)
        h, c = np.zeros(H), np.zeros(H)
        rec: dict[str, list[np.ndarray]] = {k: [] for k in "ifgoch"}
        for t in range(len(tokens)):
            z = Wx @ inp[t] + Wh @ h + b
            i, f, o = (1 / (1 + np.exp(-z[k * H : (k + 1) * H])) for k in (0, 1, 3))
            g = np.tanh(z[2 * H : 3 * H])
            c = f * c + i * g
            h = o * np.tanh(c)
            for k, v in zip("ifgoch", (i, f, g, o, c, h)):
                rec[k].append(v)
        for k in rec:
            out[k].append(np.array(rec[k]))
        inp = np.array(rec["h"])
    return {k: np.stack(v) for k, v in out.items()}


TEXT = (
    "ROMEO. But soft, what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n"
    "Arise, fair sun, and kill the envious moon,\n"
    "Who is already sick and pale with grief,\n"
    "That thou her maid art far more fair than she.\n"
)


def planted_trace(T: int = 120, H: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """Random gates; unit 7's hidden state is on (0.9) exactly over steps 30-40 and 80-90; unit 3's
    forget gate is 0 at step 5 and 1 at step 6."""
    rng = np.random.default_rng(seed)
    tr = {k: rng.uniform(0.2, 0.8, (1, T, H)) for k in "ifo"}
    tr["g"] = rng.uniform(-1, 1, (1, T, H))
    tr["c"] = rng.normal(0, 1.5, (1, T, H))
    h = rng.uniform(-1, 1, (1, T, H))
    if H > 7:
        h[0, :, 7] = rng.uniform(-1, 0.3, T)
        h[0, 30:40, 7] = 0.9
        h[0, 80:90, 7] = 0.9
    tr["h"] = h
    if H > 3 and T > 6:
        tr["f"][0, 5, 3], tr["f"][0, 6, 3] = 0.0, 1.0
    return tr


# ------------------------------------------------------------------------------------ no browser


def _embedded(page_html: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="lstmkit-data">(.*?)</script>', page_html, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_page_embeds_the_trace_faithfully() -> None:
    tokens = list(TEXT[:100])
    tr = np_lstm(tokens, H=6, layers=2)
    page = build_page(tr, tokens, title="t", layer_labels=["bottom", "top"])
    data = _embedded(page)
    assert data["T"] == 100 and data["H"] == 6 and data["layers"] == ["bottom", "top"]
    assert data["tokens"] == [display_token(t) for t in tokens]
    for q in "ifgoch":
        for layer in range(2):
            lo, hi = data["quantities"][q]["range"][layer]
            codes = np.frombuffer(base64.b64decode(data["quantities"][q]["data"][layer]), np.uint8)
            back = lo + codes.reshape(100, 6) / 255 * (hi - lo)
            assert np.abs(back - tr[q][layer]).max() <= (hi - lo) / 255 / 2 + 1e-6
    assert len(data["retention"][1]["half_life"]) == 6
    assert data["breaks"] == [k for k, t in enumerate(tokens) if t == "\n"]


def test_page_escapes_everything_that_could_run() -> None:
    tokens = ["a", XSS_SCRIPT, XSS_IMG, "&amp;", "\u2028", "b"]
    tr = planted_trace(T=6, H=3)
    page = build_page(
        tr,
        tokens,
        title=XSS_IMG,
        report=XSS_SCRIPT,
        predictions=[{"step": 1, "pred": XSS_IMG, "target": "x", "probs": {XSS_SCRIPT: 0.5}}],
    )
    assert page.lower().count("</script") == 2  # the end of the data block and of the page's script
    assert "<img" not in page
    assert "window.__pwned" in page  # ... as escaped data only
    head = page.split("<style>")[0]
    assert htmlmod.escape(XSS_IMG) in head
    data = _embedded(page)
    assert data["tokens"][1] == XSS_SCRIPT and data["tokens"][2] == XSS_IMG


def test_display_token_makes_everything_visible() -> None:
    assert display_token("\n") == "↵"
    assert display_token("\t") == "⇥"
    assert display_token("\x00") == "␀"
    assert display_token("") == "∅"
    assert display_token("\u200b") == "⟨U+200B⟩"
    assert display_token(" ") == " "
    assert display_token("é日本") == "é日本"


def test_build_page_rejects_bad_input() -> None:
    tr = planted_trace(T=10, H=3)
    with pytest.raises(ValueError, match="9 tokens"):
        build_page(tr, ["a"] * 9)
    with pytest.raises(ValueError, match="layer_labels"):
        build_page(tr, ["a"] * 10, layer_labels=["a", "b"])
    bad = dict(tr, f=tr["f"][:, :, :2])
    with pytest.raises(ValueError, match="trace\\['f'\\]"):
        build_page(bad, ["a"] * 10)
    with pytest.raises(ValueError, match="prediction step"):
        build_page(tr, ["a"] * 10, predictions=[{"step": 10, "pred": "a", "target": "a"}])


def test_write_page_is_atomic_and_handles_projection(tmp_path: Path) -> None:
    tr = planted_trace(T=20, H=8)
    tr["h"] = tr["h"][:, :, :3]  # proj_size 3
    path = write_page(tmp_path / "explore", tr, list("abcdefghijklmnopqrst"), title="proj")
    assert path == tmp_path / "explore" / "index.html"
    assert [p.name for p in path.parent.iterdir()] == ["index.html"]
    data = page_data(tr, list("abcdefghijklmnopqrst"))
    assert data["P"] == 3 and data["quantities"]["h"]["width"] == 3


def test_write_pngs(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    tokens = list(TEXT)
    paths = write_pngs(tmp_path, np_lstm(tokens, H=10, layers=2), tokens, layer=1, unit=3, excerpt=120)
    names = ["gates_layer1.png", "retention.png", "saturation.png", "text_unit3.png"]
    assert [p.name for p in paths] == names
    for p in paths:
        img = mpimg.imread(p)
        assert img.shape[0] > 100 and img.shape[1] > 300
        assert img[..., :3].std() > 0.05, f"{p.name} looks blank"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------------ in Chromium

browser_only = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (make setup installs it)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (make setup installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


class Opened:
    def __init__(self, page: Any, errors: list[str]) -> None:
        self.page, self.errors = page, errors


def open_page(browser: Any, path: Path, width: int = 1280, timeout_ms: int = 20000) -> Opened:
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "request",
        lambda r: errors.append("network request: " + r.url) if not r.url.startswith(("file:", "data:")) else None,
    )
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=timeout_ms)
    return Opened(page, errors)


def bg(page: Any, step: int) -> str:
    js = "e => getComputedStyle(e).backgroundColor"
    return str(page.eval_on_selector(f"#text .tok[data-i='{step}']", js))


def choose(page: Any, quantity: str) -> None:
    """Click the quantity's button, as a user would (the radio input itself is hidden)."""
    page.click(f"#quantity input[value='{quantity}'] + span")


def set_unit(page: Any, unit: int) -> None:
    page.fill("#unit", str(unit))
    page.press("#unit", "Tab")


@browser_only
@pytest.mark.browser
@pytest.mark.slow  # starts chromium
def test_page_loads_colours_and_is_not_blank(browser: Any, tmp_path: Path) -> None:
    tokens = list(TEXT)
    path = write_page(
        tmp_path,
        np_lstm(tokens, H=16, layers=2),
        tokens,
        title="Romeo",
        layer_labels=["layer 0", "layer 1"],
        next_probs=[{"e": 0.5, " ": 0.3, "\n": 0.2}] * len(tokens),
    )
    o = open_page(browser, path)
    page = o.page
    assert page.inner_text("#title") == "Romeo"
    assert page.locator("#text .tok").count() == len(tokens)
    before = [bg(page, t) for t in range(40)]
    choose(page, "f")
    after_gate = [bg(page, t) for t in range(40)]
    assert after_gate != before
    set_unit(page, 9)
    after_unit = [bg(page, t) for t in range(40)]
    assert after_unit != after_gate
    assert "unit 9" in page.inner_text("#text-caption") and "forget gate" in page.inner_text("#text-caption")
    page.select_option("#layer", "1")
    assert [bg(page, t) for t in range(40)] != after_unit
    page.select_option("#sort", "variance")
    assert "sorted by variance" in page.inner_text("#heat-caption")
    page.hover("#text .tok[data-i='12']")
    info = page.inner_text("#info").lower()
    assert "forget gate" in info and "likeliest next" in info and "↵" in info
    assert "half" in page.inner_text("#retention-text")
    assert page.locator("#saturation .satrow").count() == 6  # 3 gates × 2 layers
    # not blank: the whole page, and the heatmap canvas by itself
    shot = np.asarray(_png(page.screenshot()))
    assert shot.std() > 20
    heat = np.asarray(_png(page.locator("#heat").screenshot()))
    assert heat.std() > 20 and len(np.unique(heat.reshape(-1, heat.shape[-1]), axis=0)) > 50
    assert o.errors == []
    page.close()


def _png(data: bytes) -> Any:
    try:
        from PIL import Image

        return Image.open(io.BytesIO(data)).convert("RGB")
    except ImportError:  # matplotlib reads PNGs too
        import matplotlib.image as mpimg

        return (mpimg.imread(io.BytesIO(data), format="png")[..., :3] * 255).astype(np.uint8)


@browser_only
@pytest.mark.browser
@pytest.mark.slow  # starts chromium
def test_gate_colour_follows_the_values(browser: Any, tmp_path: Path) -> None:
    tr = planted_trace()
    o = open_page(browser, write_page(tmp_path, tr, [chr(97 + t % 26) for t in range(120)]))
    page = o.page
    choose(page, "f")
    set_unit(page, 3)
    # f = 0 and f = 1 are the two ends of the gate scale (#f7fbff and #08306b)
    assert bg(page, 5) == "rgb(247, 251, 255)"
    assert bg(page, 6) == "rgb(8, 48, 107)"
    assert o.errors == []
    page.close()


@browser_only
@pytest.mark.browser
@pytest.mark.slow  # starts chromium
def test_brushing_finds_the_planted_unit(browser: Any, tmp_path: Path) -> None:
    tr = planted_trace()
    o = open_page(browser, write_page(tmp_path, tr, [chr(97 + t % 26) for t in range(120)]))
    page = o.page
    choose(page, "h")

    def hits() -> list[int]:
        return list(page.eval_on_selector_all("#search-units .chip", "es => es.map(e => +e.dataset.unit)"))

    def matches() -> list[tuple[int, int]]:
        js = "es => es.map(e => [+e.dataset.start, +e.dataset.end])"
        found = page.eval_on_selector_all("#matches li", js)
        return [(a, b) for a, b in found]

    # 1. through the inputs
    page.fill("#t0", "30")
    page.fill("#t1", "40")
    page.fill("#threshold", "0.5")
    page.click("#find")
    assert hits() == [7]
    assert (80, 90) in matches() and (30, 40) in matches()
    assert page.locator("#text .tok.match").count() == 20
    # 2. by dragging across the heatmap (the plot starts 44 px in and ends 8 px before the edge)
    page.fill("#t0", "0")
    page.fill("#t1", "1")
    page.click("#find")
    assert hits() != [7]
    box = page.locator("#heat").bounding_box()
    plot_w = box["width"] - 44 - 8

    def x_of(step: float) -> float:
        return float(box["x"] + 44 + (step + 0.5) / 120 * plot_w)

    y = box["y"] + 20
    page.mouse.move(x_of(30), y)
    page.mouse.down()
    page.mouse.move(x_of(35), y, steps=3)
    page.mouse.move(x_of(39), y, steps=3)
    page.mouse.up()
    assert page.input_value("#t0") == "30" and page.input_value("#t1") == "40"
    assert hits() == [7] and (80, 90) in matches()
    # 3. by dragging across the text
    page.fill("#t0", "0")
    page.fill("#t1", "1")
    page.click("#find")
    page.hover("#text .tok[data-i='80']")
    page.mouse.down()
    page.hover("#text .tok[data-i='85']")
    page.hover("#text .tok[data-i='89']")
    page.mouse.up()
    assert page.input_value("#t0") == "80" and page.input_value("#t1") == "90"
    assert hits() == [7] and (30, 40) in matches()
    # a chip chooses the unit
    page.click("#search-units .chip[data-unit='7']")
    assert page.input_value("#unit") == "7"
    assert o.errors == []
    page.close()


@browser_only
@pytest.mark.browser
@pytest.mark.slow  # starts chromium
def test_input_text_never_runs_as_script(browser: Any, tmp_path: Path) -> None:
    tokens = ["hello ", XSS_SCRIPT, " ", XSS_IMG, "\n", "bye"]
    tr = planted_trace(T=len(tokens), H=4)
    path = write_page(
        tmp_path,
        tr,
        tokens,
        title=XSS_SCRIPT + XSS_IMG,
        report="report " + XSS_IMG,
        predictions=[{"step": 3, "pred": XSS_IMG, "target": XSS_SCRIPT, "probs": {XSS_IMG: 0.9}}],
        next_probs=[{XSS_IMG: 1.0}] * len(tokens),
    )
    o = open_page(browser, path)
    page = o.page
    page.hover("#text .tok[data-i='3']")
    page.wait_for_timeout(100)
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    text = page.inner_text("#text")
    assert XSS_SCRIPT in text and XSS_IMG in text
    assert XSS_IMG in page.inner_text("#report")
    assert XSS_SCRIPT in page.inner_text("#title")
    assert XSS_IMG in page.inner_text("#info")
    assert o.errors == []
    page.close()


@browser_only
@pytest.mark.browser
@pytest.mark.slow  # starts chromium
def test_words_predictions_and_report(browser: Any, tmp_path: Path) -> None:
    story = f"the night was quiet {CLUE_PREFIX}ann a door creaked {CLUE_PREFIX}bob {ALIBI_PREFIX}bob {QUESTION} "
    words = (story * 3).split()
    tr = planted_trace(T=len(words), H=6)
    preds = [
        {"step": t, "pred": "ann", "target": "ann" if t < 30 else "bob", "probs": {"ann": 0.8, "bob": 0.2}}
        for t, w in enumerate(words)
        if w == QUESTION
    ]
    path = write_page(
        tmp_path, tr, words, title="mystery", report="Units carrying the culprit: 4 (yes)", predictions=preds
    )
    o = open_page(browser, path)
    page = o.page
    assert page.is_visible("#report-panel") and "Units carrying" in page.inner_text("#report")
    assert page.is_visible("#pred-card") and "2 of 3 right" in page.inner_text("#pred-caption")
    assert page.locator("#text .tok.query.ok").count() == 2
    assert page.locator("#text .tok.query.bad").count() == 1
    page.hover(f"#text .tok[data-i='{preds[0]['step']}']")
    assert "predicted ann" in page.inner_text("#info")
    assert o.errors == []
    page.close()


@browser_only
@pytest.mark.browser
@pytest.mark.slow  # starts chromium
def test_twenty_thousand_characters_stay_responsive(browser: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    T, H = 20_000, 32
    tokens = list((TEXT * (T // len(TEXT) + 1))[:T])
    tr = {k: rng.uniform(0, 1, (1, T, H)).astype(np.float32) for k in "ifgoch"}
    t0 = time.perf_counter()
    path = write_page(tmp_path, tr, tokens, title="long")
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    o = open_page(browser, path, timeout_ms=30000)
    load_s = time.perf_counter() - t0
    page = o.page
    assert page.locator("#text .tok").count() == T
    before = [bg(page, t) for t in (0, 5000, 19999)]
    t0 = time.perf_counter()
    set_unit(page, 17)
    page.wait_for_function("document.getElementById('text-caption').textContent.includes('unit 17')")
    after = [bg(page, t) for t in (0, 5000, 19999)]
    respond_s = time.perf_counter() - t0
    assert after != before
    assert build_s < 10, f"building the page took {build_s:.1f} s"
    assert load_s < 10, f"loading took {load_s:.1f} s"
    assert respond_s < 3, f"re-colouring took {respond_s:.1f} s"
    page.fill("#t0", "100")
    page.fill("#t1", "101")
    page.click("#find")
    summary = page.inner_text("#search-summary")
    assert "units are on" in summary or "unit is on" in summary
    assert o.errors == []
    page.close()
