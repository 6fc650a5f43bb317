// lstmkit explorer page. Reads the JSON block #lstmkit-data; renders text only through
// textContent (never innerHTML with data), so nothing in the input can run as script.
// (One file of ~840 lines: the page ships as a single self-contained HTML file with no build step
// and no module loader, so its views share one closure and one state object.)
(function () {
  "use strict";

  const D = JSON.parse(document.getElementById("lstmkit-data").textContent);
  const $ = (id) => document.getElementById(id);
  const T = D.T;
  const Q = ["i", "f", "g", "o", "c", "h"];
  const NAME = { i: "input gate", f: "forget gate", g: "candidate", o: "output gate", c: "cell state", h: "hidden state" };
  const ROLE = { i: "noting", f: "holding", g: "to write", o: "recalling", c: "the memory", h: "recalled" };

  const state = {
    layer: 0, q: "c", unit: 0, sort: "index", order: [], scaleMode: "unit",
    t0: null, t1: null, hits: [], matches: [], searched: null,
    hover: null, pinned: null, view: [0, T], lastColourMs: 0,
  };

  // ------------------------------------------------------------------ data access
  const codeCache = new Map();
  function decode(b64) {
    const s = atob(b64);
    const a = new Uint8Array(s.length);
    for (let k = 0; k < s.length; k++) a[k] = s.charCodeAt(k);
    return a;
  }
  function codes(q, l) {
    const key = q + "/" + l;
    if (!codeCache.has(key)) codeCache.set(key, decode(D.quantities[q].data[l]));
    return codeCache.get(key);
  }
  const width = (q) => D.quantities[q].width;
  function dequant(q, l) {
    const r = D.quantities[q].range[l];
    const lo = r[0], step = (r[1] - r[0]) / 255;
    return (c) => lo + c * step;
  }
  function value(q, l, t, u) {
    const W = width(q);
    if (u >= W) return null;
    return dequant(q, l)(codes(q, l)[t * W + u]);
  }
  const fmt = (v, d) => (v === null || v === undefined || Number.isNaN(v) ? "–" : (Math.abs(v) < 5e-5 ? 0 : v).toFixed(d === undefined ? 3 : d));
  const clamp = (x, lo, hi) => Math.max(lo, Math.min(hi, x));

  // ------------------------------------------------------------------ colour
  const SEQ = [[0, [247, 251, 255]], [0.25, [198, 219, 239]], [0.5, [107, 174, 214]], [0.75, [33, 113, 181]], [1, [8, 48, 107]]];
  const DIV = [[-1, [178, 24, 43]], [-0.5, [239, 138, 98]], [0, [247, 247, 247]], [0.5, [103, 169, 207]], [1, [33, 102, 172]]];
  function interp(stops, x) {
    for (let k = 1; k < stops.length; k++) {
      if (x <= stops[k][0] || k === stops.length - 1) {
        const a = stops[k - 1], b = stops[k];
        const w = clamp((x - a[0]) / (b[0] - a[0]), 0, 1);
        return [0, 1, 2].map((j) => Math.round(a[1][j] + w * (b[1][j] - a[1][j])));
      }
    }
    return stops[0][1];
  }
  // The colour range of a signed quantity: the layer's, or the unit's own (state.scaleMode).
  function dispScale(q, l, u) {
    const info = D.quantities[q];
    if (info.kind === "gate") return 1;
    return state.scaleMode === "unit" && u >= 0 && u < info.width ? info.unit_display[l][u] : info.display[l];
  }
  const lutCache = new Map();
  function lut(q, l, u) {
    const info = D.quantities[q], gate = info.kind === "gate";
    const disp = dispScale(q, l, u);
    const key = q + "/" + l + "/" + disp;
    if (lutCache.has(key)) return lutCache.get(key);
    const dq = dequant(q, l);
    const rgb = new Uint8Array(768), css = new Array(256), fg = new Array(256);
    for (let c = 0; c < 256; c++) {
      const v = dq(c);
      const x = gate ? v : clamp(v / disp, -1, 1);
      const p = interp(gate ? SEQ : DIV, x);
      rgb[3 * c] = p[0]; rgb[3 * c + 1] = p[1]; rgb[3 * c + 2] = p[2];
      css[c] = "rgb(" + p[0] + "," + p[1] + "," + p[2] + ")";
      fg[c] = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2] < 150 ? "#fff" : "#111";
    }
    const out = { rgb, css, fg };
    lutCache.set(key, out);
    return out;
  }
  function scaleLabels(q, l, u) {
    if (D.quantities[q].kind === "gate") return ["0 shut", "1 open"];
    const d = dispScale(q, l, u);
    return ["−" + fmt(d, 2), "+" + fmt(d, 2)];
  }

  // ------------------------------------------------------------------ text
  const textEl = $("text");
  const spans = new Array(T);
  function buildText() {
    if (D.word_mode) textEl.classList.add("words");
    const frag = document.createDocumentFragment();
    const breaks = new Set(D.breaks);
    for (let t = 0; t < T; t++) {
      const s = document.createElement("span");
      s.className = "tok";
      s.textContent = D.tokens[t];
      s.dataset.i = String(t);
      spans[t] = s;
      frag.appendChild(s);
      if (breaks.has(t)) frag.appendChild(document.createElement("br"));
    }
    for (const p of D.predictions) {
      const s = spans[p.step];
      s.classList.add("query");
      if (p.target !== "") s.classList.add(p.pred === p.target ? "ok" : "bad");
    }
    textEl.appendChild(frag);
  }
  function colourText() {
    const start = performance.now();
    const q = state.q, l = state.layer, W = width(q), u = state.unit;
    const na = u >= W;
    textEl.classList.toggle("na", na);
    if (!na) {
      const a = codes(q, l), L = lut(q, l, u);
      for (let t = 0; t < T; t++) {
        const c = a[t * W + u];
        const st = spans[t].style;
        st.backgroundColor = L.css[c];
        st.color = L.fg[c];
      }
    }
    state.lastColourMs = performance.now() - start;
  }
  const tokIndex = (el) => {
    const s = el && el.closest ? el.closest(".tok") : null;
    return s && s.dataset.i !== undefined && textEl.contains(s) ? Number(s.dataset.i) : null;
  };
  const marked = { brushed: [], match: [] };
  function markRanges(cls, ranges) {
    for (const r of marked[cls]) for (let t = r[0]; t < r[1]; t++) spans[t].classList.remove(cls);
    marked[cls] = ranges;
    for (const r of ranges) for (let t = r[0]; t < r[1]; t++) spans[t].classList.add(cls);
  }
  function scrollToStep(t) {
    const s = spans[clamp(t, 0, T - 1)];
    const top = s.offsetTop - textEl.offsetTop - textEl.clientHeight / 3;
    textEl.scrollTop = Math.max(0, top);
  }

  // ------------------------------------------------------------------ unit scores and order
  const statCache = new Map();
  function unitStats(q, l) {
    const key = q + "/" + l;
    if (statCache.has(key)) return statCache.get(key);
    const W = width(q), a = codes(q, l), dq = dequant(q, l);
    const mean = new Float64Array(W), sq = new Float64Array(W);
    for (let t = 0; t < T; t++) {
      const row = t * W;
      for (let u = 0; u < W; u++) { const v = dq(a[row + u]); mean[u] += v; sq[u] += v * v; }
    }
    const variance = new Float64Array(W);
    for (let u = 0; u < W; u++) { mean[u] /= T; variance[u] = Math.max(0, sq[u] / T - mean[u] * mean[u]); }
    let corr = null;
    if (D.signal) {
      const s = D.signal.values.map((x) => (x === null ? 0 : x));
      const sm = s.reduce((x, y) => x + y, 0) / T;
      let ss = 0;
      for (let t = 0; t < T; t++) ss += (s[t] - sm) * (s[t] - sm);
      corr = new Float64Array(W);
      for (let u = 0; u < W; u++) {
        let sxy = 0;
        for (let t = 0; t < T; t++) sxy += (dq(a[t * W + u]) - mean[u]) * (s[t] - sm);
        const den = Math.sqrt(variance[u] * T * ss);
        corr[u] = den > 0 ? Math.abs(sxy / den) : 0;
      }
    }
    const out = { mean, variance, corr };
    statCache.set(key, out);
    return out;
  }
  const SORTS = [
    ["index", "unit number"], ["variance", "variance"], ["mean", "mean value"], ["half_life", "memory half-life"],
    ["saturation", "gate saturation"], ["selection", "stands out in the selection"], ["search", "unit search hits"],
  ];
  if (D.signal) SORTS.splice(3, 0, ["correlation", "correlation with " + D.signal.name]);
  function scoreArray(key) {
    const q = state.q, l = state.layer, W = width(q);
    if (key === "mean") return unitStats(q, l).mean;
    if (key === "variance") return unitStats(q, l).variance;
    if (key === "correlation") return unitStats(q, l).corr;
    if (key === "half_life" || key === "saturation") {
      if (W !== D.H) return null; // per cell unit; the projected h has other units
      return D.scores[l][key].map((x) => (x === null ? Infinity : x));
    }
    if (key === "selection") {
      if (state.t0 === null) return null;
      const a = codes(q, l), dq = dequant(q, l), mean = unitStats(q, l).mean, n = state.t1 - state.t0;
      const out = new Float64Array(W);
      for (let u = 0; u < W; u++) {
        let s = 0;
        for (let t = state.t0; t < state.t1; t++) s += dq(a[t * W + u]);
        out[u] = s / n - mean[u];
      }
      return out;
    }
    return null;
  }
  function computeOrder() {
    const W = width(state.q);
    const idx = Array.from({ length: W }, (_, k) => k);
    if (state.sort === "search") {
      const hit = new Set(state.hits);
      state.order = state.hits.filter((u) => u < W).concat(idx.filter((u) => !hit.has(u)));
      return;
    }
    const s = scoreArray(state.sort);
    state.order = s ? idx.sort((a, b) => (s[b] - s[a]) || (a - b)) : idx;
  }

  // ------------------------------------------------------------------ heatmap
  const canvas = $("heat"), wrap = $("heat-wrap"), ctx = canvas.getContext("2d");
  const base = document.createElement("canvas"), bctx = base.getContext("2d");
  const GUT = 44, AXIS = 22, PADR = 8;
  let geo = { W: 1, rowH: 4, plotW: 100, plotH: 100, dpr: 1 };
  function layoutHeat() {
    const W = width(state.q), dpr = window.devicePixelRatio || 1;
    const cssW = Math.max(200, wrap.clientWidth);
    const rowH = clamp(Math.floor(380 / W), 1, 14);
    const plotW = cssW - GUT - PADR, plotH = W * rowH, cssH = plotH + AXIS;
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    canvas.style.height = cssH + "px";
    geo = { W, rowH, plotW, plotH, dpr };
  }
  function renderBase() {
    const q = state.q, l = state.layer, W = width(q), a = codes(q, l), order = state.order;
    const luts = order.map((u) => lut(q, l, u));
    const v0 = state.view[0], len = state.view[1] - state.view[0];
    const nc = Math.max(1, Math.min(len, Math.floor(geo.plotW * geo.dpr)));
    base.width = nc; base.height = W;
    const img = bctx.createImageData(nc, W), px = img.data;
    for (let c = 0; c < nc; c++) {
      const s0 = v0 + Math.floor((c * len) / nc), s1 = Math.max(s0 + 1, v0 + Math.floor(((c + 1) * len) / nc));
      const n = s1 - s0;
      for (let r = 0; r < W; r++) {
        const u = order[r], L = luts[r];
        let sum = 0;
        for (let s = s0; s < s1; s++) sum += a[s * W + u];
        const code = n === 1 ? sum : Math.round(sum / n);
        const p = (r * nc + c) * 4;
        px[p] = L.rgb[3 * code]; px[p + 1] = L.rgb[3 * code + 1]; px[p + 2] = L.rgb[3 * code + 2]; px[p + 3] = 255;
      }
    }
    bctx.putImageData(img, 0, 0);
  }
  const xOf = (t) => GUT + ((t - state.view[0]) / (state.view[1] - state.view[0])) * geo.plotW;
  const stepAt = (x) => clamp(state.view[0] + Math.floor(((x - GUT) / geo.plotW) * (state.view[1] - state.view[0])), state.view[0], state.view[1] - 1);
  const rowAt = (y) => clamp(Math.floor(y / geo.rowH), 0, geo.W - 1);
  function niceStep(span, n) {
    const raw = span / n, p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return Math.max(1, m * p);
    return Math.max(1, 10 * p);
  }
  let dragPreview = null;
  function drawHeat() {
    const dpr = geo.dpr;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(base, 0, 0, base.width, base.height, GUT * dpr, 0, geo.plotW * dpr, geo.plotH * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const H = geo.plotH;
    // matches: green brackets under the plot and faint outlines over it
    ctx.lineWidth = 1.5;
    for (const m of state.matches.slice(0, 500)) {
      if (m.end <= state.view[0] || m.start >= state.view[1]) continue;
      const x0 = xOf(Math.max(m.start, state.view[0])), x1 = Math.max(x0 + 2, xOf(Math.min(m.end, state.view[1])));
      ctx.fillStyle = "rgba(15,157,88,0.85)";
      ctx.fillRect(x0, H + 2, x1 - x0, 4);
      ctx.strokeStyle = "rgba(15,157,88,0.9)";
      ctx.strokeRect(x0 + 0.5, 0.5, x1 - x0 - 1, H - 1);
    }
    const br = dragPreview || (state.t0 !== null ? [state.t0, state.t1] : null);
    if (br && br[1] > state.view[0] && br[0] < state.view[1]) {
      const x0 = xOf(Math.max(br[0], state.view[0])), x1 = Math.max(x0 + 2, xOf(Math.min(br[1], state.view[1])));
      ctx.fillStyle = "rgba(232,89,12,0.16)";
      ctx.fillRect(x0, 0, x1 - x0, H);
      ctx.strokeStyle = "#e8590c";
      ctx.lineWidth = 1.5;
      ctx.strokeRect(x0 + 0.5, 0.5, x1 - x0 - 1, H - 1);
      ctx.fillRect(x0, H + 2, x1 - x0, 4);
    }
    // hit units: orange ticks in the gutter
    const rowOf = new Map(state.order.map((u, r) => [u, r]));
    ctx.fillStyle = "#e8590c";
    for (const u of state.hits) {
      const r = rowOf.get(u);
      if (r !== undefined) ctx.fillRect(GUT - 6, r * geo.rowH, 4, Math.max(2, geo.rowH));
    }
    // the chosen unit
    const r = rowOf.get(state.unit);
    ctx.font = "10.5px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    if (geo.rowH >= 11) {
      ctx.fillStyle = "#9ca3af";
      for (let k = 0; k < geo.W; k++) if (k !== r) ctx.fillText(String(state.order[k]), GUT - 9, k * geo.rowH + geo.rowH / 2);
    }
    if (r !== undefined) {
      ctx.strokeStyle = "#111";
      ctx.lineWidth = 1.5;
      ctx.strokeRect(GUT - 0.5, r * geo.rowH - 0.5, geo.plotW + 1, geo.rowH + 1);
      ctx.fillStyle = "#111";
      ctx.font = "600 11px system-ui, sans-serif";
      ctx.fillText(String(state.unit), GUT - 9, clamp(r * geo.rowH + geo.rowH / 2, 6, H - 6));
    }
    if (state.hover !== null && state.hover >= state.view[0] && state.hover < state.view[1]) {
      const x = xOf(state.hover + 0.5);
      ctx.strokeStyle = "rgba(17,17,17,0.6)";
      ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, H); ctx.stroke();
    }
    // step axis
    ctx.fillStyle = "#6b7280";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    ctx.font = "10.5px system-ui, sans-serif";
    const span = state.view[1] - state.view[0], st = niceStep(span, Math.max(2, Math.floor(geo.plotW / 80)));
    for (let t = Math.ceil(state.view[0] / st) * st; t < state.view[1]; t += st) {
      const x = xOf(t);
      ctx.fillRect(x, H, 1, 3);
      ctx.fillText(String(t), clamp(x, GUT + 8, GUT + geo.plotW - 8), H + 8);
    }
  }
  function refreshHeat(full) {
    if (full) { layoutHeat(); renderBase(); }
    drawHeat();
    const q = state.q, len = state.view[1] - state.view[0];
    const per = len / Math.max(1, Math.min(len, Math.floor(geo.plotW * geo.dpr)));
    const sortName = (SORTS.find((s) => s[0] === state.sort) || ["", "unit number"])[1];
    const fell = state.sort !== "index" && state.sort !== "search" && !scoreArray(state.sort);
    $("heat-caption").textContent =
      NAME[q] + " of " + geo.W + " units, sorted by " + (fell ? "unit number (" + sortName + " is not available here)" : sortName) +
      " · steps " + state.view[0] + "–" + (state.view[1] - 1) + (per > 1.01 ? " · " + per.toFixed(1) + " steps per column" : "");
  }

  // heatmap mouse: drag = select steps, click = choose the unit of that row
  let heatDrag = null;
  const inPlot = (e) => e.offsetX >= GUT && e.offsetX <= GUT + geo.plotW && e.offsetY <= geo.plotH;
  canvas.addEventListener("mousedown", (e) => {
    if (!inPlot(e)) return;
    heatDrag = { x: e.offsetX, t: stepAt(e.offsetX) };
    e.preventDefault();
  });
  canvas.addEventListener("mousemove", (e) => {
    if (heatDrag) {
      const t = stepAt(e.offsetX);
      dragPreview = [Math.min(heatDrag.t, t), Math.max(heatDrag.t, t) + 1];
      drawHeat();
      return;
    }
    if (!inPlot(e)) { $("heat-tip").textContent = "Drag to select steps · click a row to choose its unit."; return; }
    const t = stepAt(e.offsetX), u = state.order[rowAt(e.offsetY)];
    $("heat-tip").textContent = "unit " + u + " · step " + t + " “" + D.tokens[t] + "” · " + NAME[state.q] + " " + fmt(value(state.q, state.layer, t, u));
    setHover(t);
  });
  window.addEventListener("mouseup", (e) => {
    if (heatDrag) {
      const drag = heatDrag;
      heatDrag = null;
      dragPreview = null;
      const rect = canvas.getBoundingClientRect(), x = e.clientX - rect.left, y = e.clientY - rect.top;
      if (Math.abs(x - drag.x) < 4) {
        if (y >= 0 && y <= geo.plotH) setUnit(state.order[rowAt(y)]);
        scrollToStep(drag.t);
      } else {
        const t = stepAt(x);
        setBrush(Math.min(drag.t, t), Math.max(drag.t, t) + 1);
        runSearch();
        scrollToStep(state.t0);
      }
      drawHeat();
    }
    if (textDrag) {
      const drag = textDrag;
      textDrag = null;
      if (drag.last !== drag.start) runSearch();
      else { state.pinned = drag.start; setHover(drag.start); }
    }
  });

  // text mouse: hover = show the step, drag = select steps
  let textDrag = null;
  textEl.addEventListener("mousedown", (e) => {
    const t = tokIndex(e.target);
    if (t === null) return;
    textDrag = { start: t, last: t };
    e.preventDefault();
  });
  textEl.addEventListener("mouseover", (e) => {
    const t = tokIndex(e.target);
    if (t === null) return;
    setHover(t);
    if (textDrag && t !== textDrag.last) {
      textDrag.last = t;
      setBrush(Math.min(textDrag.start, t), Math.max(textDrag.start, t) + 1);
    }
  });

  // ------------------------------------------------------------------ hover / info panel
  let hoverSpan = null;
  function setHover(t) {
    if (t === state.hover) return;
    state.hover = t;
    if (hoverSpan) hoverSpan.classList.remove("hover");
    hoverSpan = t === null ? null : spans[t];
    if (hoverSpan) hoverSpan.classList.add("hover");
    renderInfo();
    if (!heatDrag) drawHeat();
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function barCell(v, signed, scale) {
    const td = el("td", "bar"), b = el("div", "b"), i = el("i");
    if (v !== null) {
      if (signed) {
        const x = clamp(v / scale, -1, 1);
        i.style.left = (x < 0 ? 50 + 50 * x : 50) + "%";
        i.style.width = Math.abs(50 * x) + "%";
        i.style.background = x < 0 ? "#b2182b" : "#2166ac";
      } else {
        i.style.left = "0";
        i.style.width = 100 * clamp(v, 0, 1) + "%";
      }
    }
    b.appendChild(i);
    td.appendChild(b);
    return td;
  }
  function renderInfo() {
    const box = $("info");
    box.textContent = "";
    const t = state.hover !== null ? state.hover : state.pinned;
    if (t === null) {
      $("info-step").textContent = "hover a token";
      box.appendChild(el("div", "muted", "Values of unit " + state.unit + " at the step under the pointer."));
      return;
    }
    $("info-step").textContent = t + " of " + T;
    const line = el("div", "tokline");
    line.appendChild(el("span", "tok", D.tokens[t]));
    line.appendChild(el("span", "muted", "  unit " + state.unit + " · " + D.layers[state.layer]));
    box.appendChild(line);
    const table = el("table");
    for (const q of Q) {
      const tr = el("tr"), v = value(q, state.layer, t, state.unit);
      const name = el("td");
      name.appendChild(el("span", "", NAME[q]));
      name.appendChild(el("span", "muted", " " + ROLE[q]));
      tr.appendChild(name);
      const info = D.quantities[q];
      tr.appendChild(barCell(v, info.kind !== "gate", dispScale(q, state.layer, state.unit)));
      tr.appendChild(el("td", "v", v === null ? "n/a" : fmt(v)));
      if (q === state.q) tr.style.fontWeight = "600";
      table.appendChild(tr);
    }
    box.appendChild(table);
    const preds = D.predictions.filter((p) => p.step === t);
    for (const p of preds) {
      box.appendChild(el("div", "sub", "prediction at this query"));
      const ok = p.target === "" ? "" : p.pred === p.target ? "  ✓" : "  ✗";
      box.appendChild(el("div", "", "predicted " + p.pred + (p.target !== "" ? " · target " + p.target : "") + ok));
      box.appendChild(probTable(p.probs, p.target));
    }
    if (D.next_probs && D.next_probs[t]) {
      const actual = t + 1 < T ? D.tokens[t + 1] : null;
      box.appendChild(el("div", "sub", "likeliest next" + (actual !== null ? " (actual: “" + actual + "”)" : "")));
      box.appendChild(probTable(D.next_probs[t], actual));
    }
  }
  function probTable(pairs, actual) {
    const table = el("table", "probs");
    for (const pr of pairs) {
      const tr = el("tr", pr[0] === actual ? "actual" : "");
      tr.appendChild(el("td", "ch", "“" + pr[0] + "”"));
      tr.appendChild(barCell(pr[1], false, 1));
      tr.appendChild(el("td", "v", fmt(pr[1], 2)));
      table.appendChild(tr);
    }
    return table;
  }

  // ------------------------------------------------------------------ unit search
  function setBrush(t0, t1) {
    t0 = clamp(Math.floor(t0), 0, T - 1);
    t1 = clamp(Math.floor(t1), t0 + 1, T);
    state.t0 = t0; state.t1 = t1;
    $("t0").value = String(t0);
    $("t1").value = String(t1);
    markRanges("brushed", [[t0, t1]]);
    if (state.sort === "selection") { computeOrder(); refreshHeat(true); } else drawHeat();
  }
  function excerpt(a, b) {
    let s = "";
    for (let t = a; t < b && s.length < 40; t++) s += (D.word_mode && t > a ? " " : "") + D.tokens[t];
    return s.length > 40 ? s.slice(0, 39) + "…" : s + (b - a > 40 && !D.word_mode ? "…" : "");
  }
  function runSearch() {
    const q = state.q, l = state.layer, W = width(q), a = codes(q, l), dq = dequant(q, l);
    const t0 = Number($("t0").value), t1 = Number($("t1").value);
    const thr = Number($("threshold").value), minLen = Math.max(1, Math.floor(Number($("min-len").value) || 1));
    const off = $("off-outside").checked;
    const summary = $("search-summary");
    if (!Number.isFinite(t0) || !Number.isFinite(t1) || !(t0 >= 0 && t1 > t0 && t1 <= T) || !Number.isFinite(thr)) {
      summary.textContent = "Choose steps with 0 ≤ from < to ≤ " + T + " and a numeric threshold.";
      return;
    }
    if (state.t0 !== t0 || state.t1 !== t1) setBrush(t0, t1);
    const on = new Uint8Array(256);
    for (let c = 0; c < 256; c++) on[c] = dq(c) > thr ? 1 : 0;
    const hits = [];
    for (let u = 0; u < W; u++) {
      let ok = true;
      for (let t = t0; t < t1 && ok; t++) ok = on[a[t * W + u]] === 1;
      if (ok && off && t0 > 0) ok = on[a[(t0 - 1) * W + u]] === 0;
      if (ok && off && t1 < T) ok = on[a[t1 * W + u]] === 0;
      if (ok) hits.push(u);
    }
    const matches = [];
    if (hits.length) {
      let start = -1;
      for (let t = 0; t <= T; t++) {
        let all = t < T;
        for (let k = 0; k < hits.length && all; k++) all = on[a[t * W + hits[k]]] === 1;
        if (all && start < 0) start = t;
        if (!all && start >= 0) {
          if (t - start >= minLen) {
            let s = 0;
            for (let x = start; x < t; x++) for (const u of hits) s += dq(a[x * W + u]);
            matches.push({ start, end: t, score: s / ((t - start) * hits.length), self: start < t1 && t0 < t });
          }
          start = -1;
        }
      }
      matches.sort((x, y) => (y.end - y.start) - (x.end - x.start) || y.score - x.score || x.start - y.start);
    }
    state.hits = hits;
    state.matches = matches;
    state.searched = { t0, t1, thr, q, l };
    renderSearch();
    markRanges("match", matches.slice(0, 500).map((m) => [m.start, m.end]));
    if (state.sort === "search" || state.sort === "selection") { computeOrder(); refreshHeat(true); } else drawHeat();
  }
  function renderSearch() {
    const s = state.searched, hits = state.hits, matches = state.matches;
    const where = "steps " + s.t0 + "–" + (s.t1 - 1);
    const summary = $("search-summary");
    if (!hits.length) {
      summary.textContent = "No unit's " + NAME[s.q] + " is above " + fmt(s.thr, 2) + " over all of " + where +
        ". Lower the threshold or select fewer steps.";
    } else {
      const others = matches.filter((m) => !m.self).length;
      summary.textContent = hits.length + (hits.length === 1 ? " unit is" : " units are") + " on (" + NAME[s.q] + " > " +
        fmt(s.thr, 2) + ") over " + where + "; together they fire in " + others + " other place" + (others === 1 ? "" : "s") + ".";
    }
    const chips = $("search-units");
    chips.textContent = "";
    for (const u of hits.slice(0, 200)) {
      const b = el("button", "chip" + (u === state.unit ? " current" : ""), String(u));
      b.type = "button";
      b.dataset.unit = String(u);
      b.title = "show unit " + u;
      b.addEventListener("click", () => setUnit(u));
      chips.appendChild(b);
    }
    const list = $("matches");
    list.textContent = "";
    for (const m of matches.slice(0, 100)) {
      const li = el("li", m.self ? "self" : "");
      li.dataset.start = String(m.start);
      li.dataset.end = String(m.end);
      li.appendChild(el("span", "where", "steps " + m.start + "–" + (m.end - 1)));
      li.appendChild(el("span", "muted", " · " + (m.end - m.start) + " steps · mean " + fmt(m.score, 2) + (m.self ? " · your selection" : "") + "  "));
      li.appendChild(el("span", "excerpt", excerpt(m.start, m.end)));
      li.addEventListener("click", () => { scrollToStep(m.start); setHover(m.start); });
      list.appendChild(li);
    }
  }

  // ------------------------------------------------------------------ memory and saturation
  const SVGNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, parent, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function renderMemory() {
    const R = D.retention[state.layer], u = state.unit;
    const txt = $("retention-text"), cv = $("retention-curve"), hs = $("retention-hist");
    txt.textContent = ""; cv.textContent = ""; hs.textContent = "";
    if (!R) { txt.textContent = "The input is too short to measure retention."; return; }
    const hl = (x) => (x === null ? Infinity : x);
    const finite = R.half_life.filter((x) => x !== null).sort((a, b) => a - b);
    const median = finite.length ? finite[Math.floor(finite.length / 2)] : null;
    if (u >= D.H) {
      txt.textContent = "Retention is measured per cell unit (0–" + (D.H - 1) + "); unit " + u + " is a projected output.";
    } else {
      const h = hl(R.half_life[u]);
      txt.appendChild(document.createTextNode("Unit " + u + (Number.isFinite(h) ? " keeps half of what it writes for " : "'s memory never falls to half within ")));
      txt.appendChild(el("b", "", Number.isFinite(h) ? fmt(h, 1) + " steps" : R.max_lag + " steps"));
      const never = R.half_life.length - finite.length;
      txt.appendChild(document.createTextNode(". " + (never === 0
        ? "Across the layer the median half-life is " + fmt(median, 1) + " steps."
        : never + " of " + R.half_life.length + " units never fall to half within " + R.max_lag + " steps" +
          (median !== null ? "; the median of the others is " + fmt(median, 1) + " steps." : "."))));
      // retention curve of the chosen unit, log-scaled lag axis
      const Wd = 300, Ht = 132, L = 34, B = 20, top = 20, right = 8;
      const s = svg("svg", { viewBox: "0 0 " + Wd + " " + Ht, role: "img", "aria-label": "retention curve of unit " + u }, cv);
      const maxLag = Math.max(2, R.max_lag);
      const x = (k) => L + (Math.log(Math.max(1, k)) / Math.log(maxLag)) * (Wd - L - right);
      const y = (v) => top + (1 - v) * (Ht - top - B);
      svg("rect", { x: L, y: top, width: Wd - L - right, height: Ht - top - B, fill: "#fafafa", stroke: "#e5e7eb" }, s);
      svg("line", { x1: L, x2: Wd - right, y1: y(0.5), y2: y(0.5), stroke: "#9ca3af", "stroke-dasharray": "3 3" }, s);
      svg("text", { x: L - 4, y: y(0.5) + 3, "text-anchor": "end" }, s, "½");
      svg("text", { x: L - 4, y: y(1) + 8, "text-anchor": "end" }, s, "1");
      svg("text", { x: L - 4, y: y(0) + 3, "text-anchor": "end" }, s, "0");
      const pts = [];
      for (let k = 1; k < R.lags.length; k++) pts.push(x(R.lags[k]).toFixed(1) + "," + y(R.curves[u][k] === null ? 0 : R.curves[u][k]).toFixed(1));
      svg("polyline", { points: pts.join(" "), fill: "none", stroke: "#e8590c", "stroke-width": 2 }, s);
      if (Number.isFinite(h) && h >= 1) svg("line", { x1: x(h), x2: x(h), y1: y(0.5), y2: Ht - B, stroke: "#e8590c", "stroke-dasharray": "2 2" }, s);
      for (const k of [1, 10, 100, 1000, 10000]) {
        if (k > maxLag) break;
        svg("text", { x: x(k), y: Ht - 6, "text-anchor": "middle" }, s, String(k));
      }
      svg("text", { x: L, y: 11, "text-anchor": "start" }, s, "share of what unit " + u + " writes that is left k steps later");
      svg("text", { x: L + 4, y: Ht - B - 5, "text-anchor": "start" }, s, "k (log scale)");
    }
    // histogram of half-lives in this layer
    const counts = R.hist.counts.concat([R.hist.never]);
    const labels = R.hist.edges.slice(0, -1).map((e) => (e === 0 ? "<1" : String(e))).concat(["never"]);
    const Wd = 300, Ht = 112, L = 8, B = 30, top = 14;
    const s = svg("svg", { viewBox: "0 0 " + Wd + " " + Ht, role: "img", "aria-label": "histogram of half-lives" }, hs);
    const n = counts.length, bw = (Wd - 2 * L) / n, maxC = Math.max(1, ...counts);
    let mine = -1;
    if (u < D.H) {
      const h = hl(R.half_life[u]);
      if (!Number.isFinite(h)) mine = n - 1;
      else for (let k = 0; k < n - 1; k++) if (h >= R.hist.edges[k] && h < R.hist.edges[k + 1]) mine = k;
    }
    for (let k = 0; k < n; k++) {
      const hgt = (counts[k] / maxC) * (Ht - top - B);
      svg("rect", { x: L + k * bw + 1, y: Ht - B - hgt, width: Math.max(1, bw - 2), height: hgt, rx: 2,
        fill: k === mine ? "#e8590c" : k === n - 1 ? "#94a3b8" : "#6baed6" }, s);
      if (counts[k]) svg("text", { x: L + (k + 0.5) * bw, y: Ht - B - hgt - 3, "text-anchor": "middle" }, s, String(counts[k]));
      svg("text", { x: L + (k + 0.5) * bw, y: Ht - B + 12, "text-anchor": "middle" }, s, labels[k]);
    }
    svg("text", { x: Wd / 2, y: Ht - 3, "text-anchor": "middle" }, s, "half-life of each unit (steps), " + D.layers[state.layer]);
  }
  function renderSaturation() {
    const box = $("saturation"), S = D.saturation;
    box.textContent = "";
    $("sat-caption").textContent = "share of steps shut (< " + S.thresholds[0] + ") and wide open (> " + S.thresholds[1] + ")";
    for (let l = 0; l < D.layers.length; l++) {
      box.appendChild(el("div", "satlayer", D.layers[l] + (l === state.layer ? " (shown)" : "")));
      S.gates.forEach((g, gi) => {
        const lo = S.low[gi][l], hi = S.high[gi][l];
        const row = el("div", "satrow");
        row.appendChild(el("span", "", NAME[g] || g));
        const bar = el("div", "satbar");
        const a = el("span", "lo"), m = el("span", ""), b = el("span", "hi");
        a.style.width = 100 * lo + "%"; m.style.flex = "1"; b.style.width = 100 * hi + "%";
        bar.append(a, m, b);
        bar.title = NAME[g] + ": " + (100 * lo).toFixed(1) + "% shut, " + (100 * hi).toFixed(1) + "% wide open";
        row.appendChild(bar);
        row.appendChild(el("span", "satnum", (100 * lo).toFixed(0) + "% · " + (100 * hi).toFixed(0) + "%"));
        box.appendChild(row);
      });
    }
    const key = el("div", "satkey");
    const k1 = el("b"); k1.style.background = "#c6dbef";
    const k2 = el("b"); k2.style.background = "#08306b";
    key.append(k1, document.createTextNode("shut"), k2, document.createTextNode("wide open"));
    box.appendChild(key);
  }
  function renderPredictions() {
    if (!D.predictions.length) return;
    $("pred-card").hidden = false;
    const list = $("predictions");
    const scored = D.predictions.filter((p) => p.target !== "");
    const right = scored.filter((p) => p.pred === p.target).length;
    $("pred-caption").textContent = scored.length ? right + " of " + scored.length + " right" : "";
    for (const p of D.predictions.slice(0, 500)) {
      const li = el("li", "");
      li.appendChild(el("span", "where", "step " + p.step));
      li.appendChild(el("span", "", " · predicted " + p.pred + (p.target !== "" ? " · target " + p.target + (p.pred === p.target ? " ✓" : " ✗") : "")));
      li.addEventListener("click", () => { scrollToStep(p.step); state.pinned = p.step; setHover(p.step); });
      list.appendChild(li);
    }
  }

  // ------------------------------------------------------------------ controls
  function updateCaptions() {
    const q = state.q, W = width(q);
    $("text-caption").textContent = state.unit < W
      ? "coloured by unit " + state.unit + "’s " + NAME[q] + " · " + D.layers[state.layer]
      : NAME[q] + " has " + W + " units (projection); unit " + state.unit + " has none";
    const stops = (D.quantities[q].kind === "gate" ? SEQ : DIV).map((s) => "rgb(" + s[1].join(",") + ")");
    $("scale-bar").style.background = "linear-gradient(90deg," + stops.join(",") + ")";
    const lab = scaleLabels(q, state.layer, state.unit);
    $("scale-mode").hidden = D.quantities[q].kind === "gate";
    $("scale-lo").textContent = lab[0];
    $("scale-hi").textContent = lab[1];
    $("unit").max = String(Math.max(D.H, D.P) - 1);
  }
  function setUnit(u) {
    u = clamp(Math.floor(Number(u)) || 0, 0, Math.max(D.H, D.P) - 1);
    state.unit = u;
    $("unit").value = String(u);
    colourText();
    updateCaptions();
    renderInfo();
    renderMemory();
    for (const c of document.querySelectorAll("#search-units .chip")) c.classList.toggle("current", Number(c.dataset.unit) === u);
    drawHeat();
  }
  function setQuantity(q) {
    if (!D.quantities[q]) return;
    state.q = q;
    const radio = document.querySelector('input[name="q"][value="' + q + '"]');
    if (radio) radio.checked = true;
    computeOrder();
    colourText();
    updateCaptions();
    renderInfo();
    refreshHeat(true);
  }
  function setLayer(l) {
    state.layer = clamp(Number(l) || 0, 0, D.layers.length - 1);
    $("layer").value = String(state.layer);
    computeOrder();
    colourText();
    updateCaptions();
    renderInfo();
    renderMemory();
    renderSaturation();
    refreshHeat(true);
  }
  function setSort(key) {
    state.sort = key;
    $("sort").value = key;
    computeOrder();
    refreshHeat(true);
  }
  function stepUnit(delta) {
    const k = state.order.indexOf(state.unit);
    const next = state.order[clamp((k < 0 ? 0 : k) + delta, 0, state.order.length - 1)];
    if (next !== undefined) setUnit(next);
  }

  function init() {
    document.title = D.title;
    $("subtitle").textContent = T + " steps · " + D.H + " units" + (D.P !== D.H ? " (projected to " + D.P + ")" : "") +
      " · " + D.layers.length + (D.layers.length === 1 ? " layer" : " layer rows");
    const layerSel = $("layer");
    D.layers.forEach((name, k) => { const o = el("option", "", name); o.value = String(k); layerSel.appendChild(o); });
    const sortSel = $("sort");
    for (const s of SORTS) { const o = el("option", "", s[1]); o.value = s[0]; sortSel.appendChild(o); }
    if (D.report) { $("report-panel").hidden = false; $("report").textContent = D.report; }
    $("t1").max = String(T);
    $("t0").max = String(T - 1);
    buildText();
    // Start on the cell state of the unit the report names first (D.start), else of the unit that
    // varies most: usually the most telling.
    let best = 0;
    if (D.start) {
      state.layer = D.start.layer;
      layerSel.value = String(D.start.layer);
      best = D.start.unit;
    } else {
      const v = unitStats("c", 0).variance;
      for (let u = 1; u < v.length; u++) if (v[u] > v[best]) best = u;
    }
    state.unit = best;
    state.pinned = 0;
    $("unit").value = String(best);
    document.querySelector('input[name="q"][value="c"]').checked = true;
    computeOrder();
    layoutHeat();
    renderBase();
    colourText();
    updateCaptions();
    refreshHeat(false);
    renderInfo();
    renderMemory();
    renderSaturation();
    renderPredictions();

    layerSel.addEventListener("change", () => setLayer(layerSel.value));
    sortSel.addEventListener("change", () => setSort(sortSel.value));
    $("scale-mode").addEventListener("change", () => {
      state.scaleMode = $("scale-mode").value;
      colourText();
      updateCaptions();
      renderInfo();
      refreshHeat(true);
    });
    for (const r of document.querySelectorAll('input[name="q"]')) r.addEventListener("change", () => setQuantity(r.value));
    $("unit").addEventListener("change", () => setUnit($("unit").value));
    $("unit-prev").addEventListener("click", () => stepUnit(-1));
    $("unit-next").addEventListener("click", () => stepUnit(1));
    $("find").addEventListener("click", runSearch);
    for (const id of ["t0", "t1", "threshold", "min-len"]) {
      $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") runSearch(); });
    }
    $("zoom").addEventListener("click", () => {
      if (state.t0 === null) return;
      const pad = Math.max(2, Math.round((state.t1 - state.t0) * 0.5));
      state.view = [Math.max(0, state.t0 - pad), Math.min(T, state.t1 + pad)];
      refreshHeat(true);
    });
    $("zoom-out").addEventListener("click", () => { state.view = [0, T]; refreshHeat(true); });
    textEl.addEventListener("mouseleave", () => { if (!textDrag) setHover(state.pinned); });
    document.addEventListener("keydown", (e) => {
      const tag = e.target && e.target.tagName;
      if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
      if (e.key === "ArrowDown" || e.key === "j") { stepUnit(1); e.preventDefault(); }
      if (e.key === "ArrowUp" || e.key === "k") { stepUnit(-1); e.preventDefault(); }
    });
    let pending = false;
    window.addEventListener("resize", () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; refreshHeat(true); });
    });
  }

  init();
  window.lstmkitExplorer = {
    state, setUnit, setQuantity, setLayer, setSort, runSearch,
    brush: (t0, t1) => { setBrush(t0, t1); runSearch(); },
    value: (q, t, u) => value(q, state.layer, t, u),
  };
  document.body.dataset.ready = "1";
})();
