/* heatmap.js: LI.heatmap(rows, options), a grid of coloured cells (diverging blue/red around
 * 0 when values of both signs occur, else white to blue); each <td> carries data-row, data-col
 * and data-value (the exact value), and hovering a cell shows it. Needs common.js (LI.el,
 * LI.toNumber, LI.format).
 */
"use strict";

(function () {
  const LI = window.LI;
  const el = LI.el;

  function mix(a, b, t) {
    return a.map((x, i) => Math.round(x + (b[i] - x) * t));
  }
  const WHITE = [255, 255, 255], RED = [178, 24, 43], BLUE = [33, 102, 172];

  /** The colour of each value: diverging (blue < 0 < red) when values of both signs occur,
   * else white to blue from the smallest to the largest. */
  function colourScale(values) {
    const finite = values.filter(Number.isFinite);
    const lo = finite.length ? Math.min(...finite) : 0;
    const hi = finite.length ? Math.max(...finite) : 0;
    if (lo < 0 && hi > 0) {
      const m = Math.max(-lo, hi);
      return (v) => (Number.isFinite(v) ? mix(WHITE, v < 0 ? BLUE : RED, Math.abs(v) / m)
        : v > 0 ? RED : v < 0 ? BLUE : [200, 200, 200]);
    }
    return (v) => {
      if (!Number.isFinite(v)) return v === Infinity ? BLUE : v === -Infinity ? WHITE : [200, 200, 200];
      return mix(WHITE, BLUE, hi > lo ? (v - lo) / (hi - lo) : 0.35);
    };
  }

  /**
   * rows: a 2-D array (a 1-D one is one row). options: name, decimals, integer (ints),
   * rowLabels, colLabels, dense (no numbers in the cells; default: over 24 columns).
   * Returns a <div> holding the <table class="heatmap"> and a readout line that shows the
   * hovered cell's exact value.
   */
  LI.heatmap = function (rows, options) {
    const o = options || {};
    const grid = Array.isArray(rows[0]) ? rows : [rows];
    const flat = grid.flat().map(LI.toNumber);
    const colour = colourScale(flat);
    const ncols = Math.max(0, ...grid.map((r) => r.length));
    const dense = o.dense !== undefined ? o.dense : ncols > 24;
    const readout = el("div", { class: "readout", text: "\u00a0" });
    const table = el("table", { class: "heatmap", "data-name": o.name });
    if (o.colLabels) {
      table.append(el("tr", {}, o.rowLabels ? el("th") : null,
        o.colLabels.map((label) => el("th", { scope: "col", text: label }))));
    }
    grid.forEach((row, r) => {
      const tr = el("tr", {}, o.rowLabels ? el("th", { scope: "row", text: o.rowLabels[r] }) : null);
      row.forEach((value, c) => {
        const n = LI.toNumber(value);
        const [R, G, B] = colour(n);
        const dark = 0.299 * R + 0.587 * G + 0.114 * B < 140;
        const where = o.rowLabels || o.colLabels
          ? `${o.rowLabels ? o.rowLabels[r] : r}, ${o.colLabels ? o.colLabels[c] : c}`
          : grid.length === 1 ? `${c}` : `${r}, ${c}`;
        tr.append(el("td", {
          "data-row": r, "data-col": c, "data-value": String(value),
          title: `[${where}] = ${value}`,
          class: dense ? "dense" : null,
          style: `background: rgb(${R},${G},${B}); color: ${dark ? "#fff" : "#111"}`,
          text: dense ? "" : LI.format(value, o.decimals, o.integer),
        }));
      });
      table.append(tr);
    });
    table.addEventListener("mouseover", (event) => {
      const cell = event.target.closest("td");
      if (cell) readout.textContent = `${o.name || ""}${cell.title}`;
    });
    return el("div", { class: "heatmap-box" }, table, readout);
  };
})();
