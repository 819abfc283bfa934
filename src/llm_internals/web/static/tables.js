/* tables.js: LI.sortableTable(columns, rows, decimals, name), a table sorted by clicking a
 * header (again: reversed). Needs common.js (LI.el, LI.toNumber, LI.format).
 */
"use strict";

(function () {
  const LI = window.LI;
  const el = LI.el;

  function compareCells(a, b) {
    const x = LI.toNumber(a), y = LI.toNumber(b);
    const xn = typeof a !== "string" || !Number.isNaN(x);
    const yn = typeof b !== "string" || !Number.isNaN(y);
    if (xn && yn) return (Number.isNaN(x) ? Infinity : x) - (Number.isNaN(y) ? Infinity : y);
    if (xn !== yn) return xn ? -1 : 1;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  /** A table whose rows sort by the clicked column (click again to reverse). Cells carry
   * data-row (the row's original index), data-col and data-value. */
  LI.sortableTable = function (columns, rows, decimals, name) {
    const table = el("table", { class: "sortable", "data-name": name });
    const head = el("tr");
    const body = el("tbody");
    const trs = rows.map((row, r) => el("tr", { "data-row": r },
      row.map((cell, c) => el("td", {
        "data-row": r, "data-col": c, "data-value": String(cell),
        class: typeof cell === "string" && Number.isNaN(LI.toNumber(cell)) ? "text" : null,
        text: LI.format(cell, decimals),
      }))));
    columns.forEach((column, c) => {
      const th = el("th", { scope: "col", "data-col": c, text: column, title: "sort by " + column });
      th.addEventListener("click", () => {
        const descending = th.getAttribute("aria-sort") === "ascending";
        head.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        const order = trs.slice().sort((a, b) => {
          const d = compareCells(rows[a.dataset.row][c], rows[b.dataset.row][c]);
          return (descending ? -d : d) || a.dataset.row - b.dataset.row;
        });
        body.append(...order);
      });
      head.append(th);
    });
    body.append(...trs);
    table.append(el("thead", {}, head), body);
    return table;
  };
})();
