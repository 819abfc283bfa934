/* common.js: the explorer's shared front-end pieces, used by every view (lessons.js, model.js,
 * engine.js). Plain browser JavaScript, no build step, no network beyond the app's own /api/.
 *
 *   LI.registerView(name, render)    a view draws itself into <main> (render(main, params))
 *   LI.api(path, body)               GET JSON (POST `body` as JSON when given); throws an Error
 *                                    carrying the server's error/hint
 *   LI.el(tag, attrs, ...children)   build an element
 *   LI.errorBox(err)                 the message (and hint) of an error, never a stack trace
 *   LI.heatmap(rows, options)        a grid of coloured cells; each <td> carries data-row,
 *                                    data-col, data-value (the exact value); hover shows it
 *   LI.sortableTable(cols, rows, d)  a table sorted by clicking a header (again: reversed)
 *   LI.formula(text)                 an ASCII formula typeset as MathML (formulaToMathML)
 *   LI.markdown(text)                a small, safe Markdown renderer (HTML is escaped first)
 *   LI.figure(figure)                an <img> with its caption
 */
"use strict";

(function () {
  const LI = (window.LI = window.LI || {});
  const views = {};

  LI.registerView = function (name, render) {
    views[name] = render;
  };

  LI.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "html") node.innerHTML = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };
  const el = LI.el;

  LI.api = async function (path, body) {
    let response;
    const init = body === undefined ? { headers: { Accept: "application/json" } } : {
      method: "POST", body: JSON.stringify(body),
      headers: { Accept: "application/json", "Content-Type": "application/json" },
    };
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw Object.assign(new Error("the explorer's server does not answer"), {
        hint: "is `llm-internals explore` still running?",
      });
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch (e) {
      answer = null;
    }
    if (!response.ok || answer === null) {
      const message = answer && answer.error ? answer.error : `${path}: HTTP ${response.status}`;
      throw Object.assign(new Error(message), {
        hint: answer && answer.hint, status: response.status,
      });
    }
    return answer;
  };

  LI.errorBox = function (err) {
    return el("div", { class: "error", role: "alert" },
      el("div", { class: "message", text: err && err.message ? err.message : String(err) }),
      err && err.hint ? el("div", { class: "hint", text: "hint: " + err.hint }) : null);
  };

  /* ---------------------------------------------------------------- numbers */

  /** A JSON number of the lesson format as a JS number ("nan", "inf", "-inf", booleans). */
  LI.toNumber = function (v) {
    if (v === "nan") return NaN;
    if (v === "inf") return Infinity;
    if (v === "-inf") return -Infinity;
    if (typeof v === "boolean") return v ? 1 : 0;
    return typeof v === "number" ? v : NaN;
  };

  /** How a value is shown: ints with thousands separators, floats with `decimals` decimals.
   * `integer`: true or false when the dtype says (a float32 2 is 2.0000), else guessed. */
  LI.format = function (v, decimals, integer) {
    if (typeof v === "string" || typeof v === "boolean") return String(v);
    if (typeof v !== "number") return String(v);
    if (integer === true || (integer === undefined && Number.isInteger(v))) {
      return Math.abs(v) >= 1e4 ? v.toLocaleString("en-US") : String(v);
    }
    const d = decimals === undefined ? 4 : decimals;
    if (v !== 0 && (Math.abs(v) >= 1e9 || Math.abs(v) < Math.pow(10, -d))) {
      return v.toExponential(Math.max(1, Math.min(d, 4)));
    }
    return v.toFixed(d);
  };

  /* --------------------------------------------------------------- heatmaps */

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

  /* ---------------------------------------------------------- sortable tables */

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

  /* ----------------------------------------------------------------- formulas */

  const GREEK = {
    alpha: "α", beta: "β", gamma: "γ", delta: "δ", Delta: "Δ", eps: "ε", epsilon: "ε",
    zeta: "ζ", eta: "η", theta: "θ", Theta: "Θ", lambda: "λ", Lambda: "Λ", mu: "μ", nu: "ν",
    xi: "ξ", pi: "π", Pi: "Π", rho: "ρ", sigma: "σ", Sigma: "Σ", tau: "τ", phi: "φ",
    Phi: "Φ", chi: "χ", psi: "ψ", omega: "ω", Omega: "Ω",
  };
  const BIG = { sum: "∑", prod: "∏" };
  const LIMIT_LIKE = new Set(["argmax", "argmin", "max", "min", "lim"]);
  const OPERATORS = [
    ["<->", "↔"], ["...", "…"], ["->", "→"], ["<-", "←"], ["=>", "⇒"], ["<=", "≤"],
    [">=", "≥"], ["!=", "≠"], ["==", "=="], ["||", "‖"], ["//", "//"], ["..", "…"],
    ["*", "⋅"], ["-", "−"], ["~", "∼"],
  ];
  const TOKEN = /(\s+)|(\d+(?:\.\d+)?(?:e-?\d+)?)|([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z][A-Za-z0-9]*)*'*)|(.)/gy;

  function escapeXml(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;");
  }

  /** snake_case names (block_size, kv_heads) stay one word; x_i, d_k, W_down, q_max are a
   * letter (or short name) with a subscript. */
  function isWord(name) {
    const parts = name.replace(/'+$/, "").split("_");
    return parts.length > 1 && parts[0].length >= 2 && !(parts[0] in BIG) &&
      !LIMIT_LIKE.has(parts[0]) && parts.slice(1).every((p) => p.length >= 3);
  }

  function tokenize(text) {
    const tokens = [];
    TOKEN.lastIndex = 0;
    let m;
    while (TOKEN.lastIndex < text.length && (m = TOKEN.exec(text)) !== null) {
      if (m[1]) tokens.push({ t: "space", v: m[1] });
      else if (m[2]) tokens.push({ t: "num", v: m[2] });
      else if (m[3]) {
        if (m[3].includes("_") && !isWord(m[3])) {  // split off the subscripts: x _ i
          const primes = m[3].match(/'*$/)[0];
          const parts = m[3].slice(0, m[3].length - primes.length).split("_");
          parts.forEach((p, i) => {
            if (i) tokens.push({ t: "op", v: "_" });
            tokens.push({ t: "id", v: p + (i === parts.length - 1 ? primes : "") });
          });
        } else tokens.push({ t: "id", v: m[3] });
      } else {
        const rest = text.slice(m.index);
        const op = OPERATORS.find(([ascii]) => rest.startsWith(ascii));
        if (op && op[0].length > 1) TOKEN.lastIndex = m.index + op[0].length;
        tokens.push({ t: "op", v: op ? op[0] : m[4] });
      }
    }
    return tokens;
  }

  const FENCES = new Set(["(", ")", "[", "]", "{", "}", "|", "||"]);

  /** An operator; brackets keep their text height (a stretched pair around a whole formula
   * reads as a misprint). */
  function mo(ascii) {
    const op = OPERATORS.find(([a]) => a === ascii);
    const attrs = FENCES.has(ascii) ? ' stretchy="false"' : "";
    return `<mo${attrs}>${escapeXml(op ? op[1] : ascii)}</mo>`;
  }

  function identifier(name) {
    const primes = name.match(/'*$/)[0];
    const base = name.slice(0, name.length - primes.length);
    const mark = "′".repeat(primes.length);
    if (base in GREEK) return `<mi>${GREEK[base]}${mark}</mi>`;
    const letterDigits = /^([A-Za-z])(\d+)$/.exec(base);  // W1, x2: subscripted digits
    if (letterDigits && !primes) {
      return `<msub><mi>${letterDigits[1]}</mi><mn>${letterDigits[2]}</mn></msub>`;
    }
    return `<mi>${escapeXml(base)}${mark}</mi>`;
  }

  const CLOSER = { "(": ")", "[": "]", "{": "}" };

  class FormulaParser {
    constructor(text) {
      this.tokens = tokenize(text);
      this.i = 0;
    }
    peek(offset) {
      return this.tokens[this.i + (offset || 0)];
    }
    /** Tokens up to `closer` (consumed) or the end. */
    sequence(closer) {
      let out = "";
      while (this.i < this.tokens.length) {
        const tok = this.peek();
        if (closer && tok.t === "op" && tok.v === closer) {
          this.i++;
          return out;
        }
        if (tok.t === "space") {
          this.i++;
          const prev = this.tokens[this.i - 2], next = this.peek();
          if (next && next.t === "id" && next.v === "x" && prev && this.peek(1) &&
              this.peek(1).t === "space") {  // " x " between spaces: a multiplication sign
            this.i++;
            out += "<mo>×</mo>";
            continue;
          }
          if (next && next.t === "op" && next.v === "." && this.peek(1) &&
              this.peek(1).t === "space") {  // " . " a dot product
            this.i++;
            out += "<mo>⋅</mo>";
            continue;
          }
          out += `<mspace width="${tok.v.length > 1 ? "1em" : "0.25em"}"></mspace>`;
          continue;
        }
        out += this.scripted();
      }
      if (closer) throw new Error(`missing ${closer}`);
      return out;
    }
    /** An atom with its _sub and ^sup scripts. */
    scripted() {
      const first = this.peek();
      const atom = this.atom();
      let sub = null, sup = null;
      for (;;) {
        const tok = this.peek();
        if (!tok || tok.t !== "op" || (tok.v !== "_" && tok.v !== "^")) break;
        const which = tok.v;
        this.i++;
        const arg = this.scriptArgument();
        if (which === "_" && sub === null) sub = arg;
        else if (which === "^" && sup === null) sup = arg;
        else return `<mrow>${atom}</mrow>`;  // x_a_b: keep what is typeset
      }
      const under = first && first.t === "id" && (first.v in BIG || LIMIT_LIKE.has(first.v));
      if (sub !== null && sup !== null) {
        return under ? `<munderover>${atom}${sub}${sup}</munderover>`
          : `<msubsup>${atom}${sub}${sup}</msubsup>`;
      }
      if (sub !== null) return under ? `<munder>${atom}${sub}</munder>` : `<msub>${atom}${sub}</msub>`;
      if (sup !== null) return `<msup>${atom}${sup}</msup>`;
      return atom;
    }
    /** What follows _ or ^: {group} or (group) without its brackets, or one token
     * (a leading minus sign included: ^-1). */
    scriptArgument() {
      const tok = this.peek();
      if (!tok || tok.t === "space") return "<mrow></mrow>";
      if (tok.t === "op" && (tok.v === "{" || tok.v === "(")) {
        this.i++;
        return `<mrow>${this.sequence(CLOSER[tok.v])}</mrow>`;
      }
      if (tok.t === "op" && tok.v === "-") {
        this.i++;
        return `<mrow><mo>−</mo>${this.atom()}</mrow>`;
      }
      if (tok.t === "id") {  // a name, even max or sum: x_max is x with "max" below
        this.i++;
        return identifier(tok.v);
      }
      return this.atom();
    }
    atom() {
      const tok = this.peek();
      this.i++;
      if (tok.t === "num") return `<mn>${tok.v}</mn>`;
      if (tok.t === "id") {
        const next = this.peek();
        if (tok.v === "sqrt" && next && next.t === "op" && next.v === "(") {
          this.i++;
          return `<msqrt>${this.sequence(")")}</msqrt>`;
        }
        const after = this.peek(1);
        if (tok.v in BIG && !(next && next.t === "space" && after && after.t === "id" &&
            /^(of|over)$/.test(after.v))) {  // "sum of counts" stays words
          return `<mo largeop="true">${BIG[tok.v]}</mo>`;
        }
        if (LIMIT_LIKE.has(tok.v)) return `<mo movablelimits="true">${tok.v}</mo>`;
        return identifier(tok.v);
      }
      if (tok.v in CLOSER) {
        const inner = this.sequence(CLOSER[tok.v]);
        return `<mrow>${mo(tok.v)}${inner}${mo(CLOSER[tok.v])}</mrow>`;
      }
      return mo(tok.v);
    }
  }

  /** MathML for an ASCII formula: x_i, x_{t+1}, W^T, 10000^(2i/d) (scripts), sqrt(...),
   * sum_j (a big sum with its index below), Greek names (alpha -> α), arrows (-> <- =>),
   * <= >= !=, " x " (×), " . " (⋅), * (⋅). Throws on unbalanced brackets. */
  LI.formulaToMathML = function (text) {
    const parser = new FormulaParser(text);
    const body = parser.sequence(null);
    return `<math display="block"><mrow>${body}</mrow></math>`;
  };

  /** A formula element: typeset MathML, or the ASCII text in <code> if it cannot be parsed.
   * The ASCII is kept in data-ascii (and as the accessible label). */
  LI.formula = function (text) {
    const box = el("div", { class: "formula", "data-ascii": text, title: text });
    if (text.includes("\\")) {  // a regular expression, not mathematics
      box.append(el("code", { text }));
      return box;
    }
    try {
      box.innerHTML = LI.formulaToMathML(text);
      box.firstChild.setAttribute("alttext", text);
    } catch (e) {
      box.append(el("code", { text }));
    }
    return box;
  };

  /* ----------------------------------------------------------------- Markdown */

  function escapeHtml(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  /** `code`, **bold**, *italic* inside one already-escaped line. */
  function inline(escaped) {
    return escaped.split(/(`[^`]+`)/).map((part) => {
      if (part.length > 1 && part.startsWith("`") && part.endsWith("`")) {
        return `<code>${part.slice(1, -1)}</code>`;
      }
      return part.replace(/\*\*(?=\S)(.+?)\*\*/g, "<strong>$1</strong>")
        .replace(/(^|[^*\w])\*(?=\S)([^*]+?)\*(?!\w)/g, "$1<em>$2</em>");
    }).join("");
  }

  /** Markdown to HTML: paragraphs, - / * / 1. lists, ``` fenced code, `code`, **bold**,
   * *italic*. Everything is HTML-escaped first, so lesson text can never inject markup. */
  LI.markdownToHtml = function (text) {
    const lines = escapeHtml(String(text || "")).split("\n");
    const out = [];
    let paragraph = [], list = null, code = null;
    const flushParagraph = () => {
      if (paragraph.length) out.push(`<p>${inline(paragraph.join(" "))}</p>`);
      paragraph = [];
    };
    const flushList = () => {
      if (list) out.push(`<${list.tag}>${list.items.map((i) => `<li>${inline(i)}</li>`).join("")}</${list.tag}>`);
      list = null;
    };
    for (const line of lines) {
      if (code !== null) {
        if (/^\s*```/.test(line)) {
          out.push(`<pre><code>${code.join("\n")}</code></pre>`);
          code = null;
        } else code.push(line);
        continue;
      }
      if (/^\s*```/.test(line)) {
        flushParagraph(); flushList();
        code = [];
        continue;
      }
      const item = /^\s*(?:([-*])|(\d+)[.)])\s+(.*)$/.exec(line);
      if (item) {
        flushParagraph();
        const tag = item[1] ? "ul" : "ol";
        if (list && list.tag !== tag) flushList();
        list = list || { tag, items: [] };
        list.items.push(item[3]);
      } else if (!line.trim()) {
        flushParagraph(); flushList();
      } else if (list && /^\s+/.test(line)) {
        list.items[list.items.length - 1] += " " + line.trim();
      } else {
        flushList();
        paragraph.push(line.trim());
      }
    }
    if (code !== null) out.push(`<pre><code>${code.join("\n")}</code></pre>`);
    flushParagraph(); flushList();
    return out.join("\n");
  };

  LI.markdown = function (text) {
    return el("div", { class: "md", html: LI.markdownToHtml(text) });
  };

  /* ------------------------------------------------------------------ figures */

  LI.figure = function (figure) {
    return el("figure", { "data-file": figure.file },
      el("img", { src: figure.url, alt: figure.caption }),
      el("figcaption", { text: figure.caption }));
  };

  /* ------------------------------------------------------------------- routing */

  /** Which view a path shows: / and /lessons: "lessons"; /lessons/NAME: "lesson" {name};
   * /model, /engine and any other first segment: that name. */
  LI.route = function (pathname) {
    const parts = pathname.split("/").filter(Boolean).map(decodeURIComponent);
    if (!parts.length || (parts[0] === "lessons" && parts.length === 1)) return { view: "lessons", params: {} };
    if (parts[0] === "lessons") return { view: "lesson", params: { name: parts.slice(1).join("/") } };
    return { view: parts[0], params: {} };
  };

  LI.start = async function () {
    const main = document.getElementById("app");
    const { view, params } = LI.route(location.pathname);
    const section = view === "lesson" ? "lessons" : view;
    document.querySelectorAll("header nav a").forEach((a) => {
      a.classList.toggle("active", a.dataset.view === section);
    });
    main.dataset.view = view;
    const render = views[view];
    if (!render) {
      main.replaceChildren(LI.errorBox({ message: `this explorer has no ${view} view`, hint: "the views: Lessons, Model, Engine" }));
      main.dataset.state = "error";
      return;
    }
    try {
      await render(main, params);
    } catch (err) {
      main.replaceChildren(LI.errorBox(err));
      main.dataset.state = "error";
    }
  };

  document.addEventListener("DOMContentLoaded", () => LI.start());
})();
