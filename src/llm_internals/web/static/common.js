/* common.js: the explorer's namespace and the pieces every other script builds on; loaded
 * first (web/app.py SHARED_SCRIPTS lists the load order). Plain browser JavaScript, no build
 * step, no network beyond the app's own /api/.
 *
 *   LI.registerView(name, render)    a view draws itself into <main> (render(main, params))
 *   LI.api(path, body)               GET JSON (POST `body` as JSON when given); throws an Error
 *                                    carrying the server's error/hint
 *   LI.el(tag, attrs, ...children)   build an element
 *   LI.errorBox(err)                 the message (and hint) of an error, never a stack trace
 *   LI.toNumber(v), LI.format(v)     lesson-format numbers ("nan", "inf") and how they are shown
 *   LI.figure(figure)                an <img> with its caption
 *   LI.route(pathname), LI.start()   which view a path shows; draw it (on DOMContentLoaded)
 *
 * The shared pieces in their own files: heatmap.js (LI.heatmap), tables.js
 * (LI.sortableTable), formula.js (LI.formula, LI.formulaToMathML), markdown.js (LI.markdown).
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
