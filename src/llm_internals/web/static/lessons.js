/* lessons.js: the lesson index (/) and a lesson page (/lessons/NAME), drawn from the lesson JSON
 * (docs/explain-json.md) that /api/lessons/NAME returns. A lesson with inputs gets a form; each
 * change refetches /api/lessons/NAME?input=value (the server rebuilds the lesson with the real
 * code) and redraws. <main> carries data-state (loading, ready, error) and data-render (a count
 * of finished loads) so tests can wait for a redraw. */
"use strict";

(function () {
  const el = LI.el;
  const MAX_SLICES = 8;

  LI.registerView("lessons", async (main) => {
    main.dataset.state = "loading";
    const data = await LI.api("/api/lessons");
    document.title = "Lessons · llm-internals";
    main.replaceChildren(
      el("h1", { text: "Lessons" }),
      el("p", { class: "summary",
        text: "Each lesson runs the library's real code on a small input and shows every step " +
          "with its numbers. Lessons with inputs can be rebuilt with your own values." }),
      el("ol", { class: "lessons" }, data.lessons.map((lesson) => el("li", { "data-lesson": lesson.name },
        el("a", { class: "title", href: `/lessons/${encodeURIComponent(lesson.name)}`, text: lesson.title }),
        el("span", { class: "name", text: lesson.name }),
        lesson.inputs.length ? el("span", { class: "editable", title: "inputs you can change",
          text: "inputs: " + lesson.inputs.join(", ") }) : null,
        el("div", { class: "summary", text: lesson.summary })))));
    main.dataset.state = "ready";
  });

  function isInteger(dtype) {
    return /int|bool/.test(dtype || "");
  }

  /** A tensor: a number (0-D), a one-row heatmap (1-D), a heatmap (2-D), or one heatmap per
   * leading index (more dimensions; the first MAX_SLICES of them). */
  function tensorView(value, decimals) {
    const shape = value.data_shape || value.shape;
    const integer = isInteger(value.dtype);
    const meta = `${value.dtype} [${value.shape.join(" × ")}]` +
      (value.truncated ? `, showing the leading ${shape.join(" × ")} block` : "");
    if (shape.length === 0) {
      return [el("span", { class: "number", "data-value": String(value.data),
        text: LI.format(value.data, decimals, integer) }), el("span", { class: "meta", text: meta })];
    }
    const out = [el("span", { class: "meta", text: meta })];
    if (shape.length <= 2) {
      out.push(LI.heatmap(value.data, { name: value.name, decimals, integer }));
      return out;
    }
    const slices = [];
    const walk = (data, index) => {
      if (slices.length >= MAX_SLICES) return;
      if (index.length === shape.length - 2) slices.push([index, data]);
      else data.forEach((sub, i) => walk(sub, [...index, i]));
    };
    walk(value.data, []);
    for (const [index, data] of slices) {
      const label = `${value.name}[${index.join(", ")}, :, :]`;
      const box = LI.heatmap(data, { name: label, decimals, integer });
      box.dataset.slice = index.join(",");
      out.push(el("div", { class: "slice" }, el("div", { class: "meta", text: label }), box));
    }
    const total = shape.slice(0, -2).reduce((a, b) => a * b, 1);
    if (total > slices.length) out.push(el("div", { class: "meta", text: `… ${total - slices.length} more slices` }));
    return out;
  }

  function valueView(value, decimals) {
    const box = el("div", { class: `value ${value.kind}`, "data-name": value.name, "data-kind": value.kind },
      el("span", { class: "label", text: value.name }), " ");
    if (value.kind === "tensor") box.append(...tensorView(value, decimals));
    else if (value.kind === "table") box.append(LI.sortableTable(value.columns, value.rows, decimals, value.name));
    else if (value.kind === "text") {
      box.append(value.value.includes("\n") ? el("pre", { text: value.value })
        : el("code", { "data-value": value.value, text: value.value }));
    } else {
      box.append("= ", el("span", { class: "number", "data-value": String(value.value),
        text: LI.format(value.value, decimals) }));
    }
    return box;
  }

  function stepView(step) {
    return el("div", { class: "step" },
      LI.markdown(step.text),
      step.formula ? LI.formula(step.formula) : null,
      step.values.map((v) => valueView(v, step.decimals)),
      step.figures.map(LI.figure));
  }

  function lessonBody(lesson) {
    return lesson.sections.map((section, i) => el("section", { "data-section": i },
      el("h2", { text: `${i + 1}. ${section.title}` }), section.steps.map(stepView)));
  }

  /** The inputs form: one field per input; any change calls onChange(values). */
  function inputsForm(inputs, onChange) {
    const form = el("form", { class: "inputs", "aria-label": "lesson inputs" });
    for (const input of inputs) {
      let field;
      if (input.choices) {
        field = el("select", { name: input.name },
          input.choices.map((c) => el("option", { value: c, text: c })));
      } else {
        field = el("input", {
          name: input.name, type: input.kind === "str" ? "text" : "number",
          step: input.kind === "int" ? 1 : input.kind === "float" ? "any" : null,
          min: input.minimum, max: input.maximum,
        });
      }
      field.value = String(input.value);
      const limits = input.kind === "str" ? "" : ` (${input.minimum ?? "−∞"} to ${input.maximum ?? "∞"})`;
      form.append(el("label", {}, `${input.label}${limits}`, field,
        input.help ? el("span", { class: "help", text: input.help }) : null));
    }
    const update = el("button", { type: "submit", text: "update" });
    const reset = el("button", { type: "button", text: "defaults" });
    reset.addEventListener("click", () => {
      for (const input of inputs) form.elements[input.name].value = String(input.default);
      onChange(values());
    });
    form.append(update, reset);
    const values = () => Object.fromEntries(inputs.map((i) => [i.name, form.elements[i.name].value]));
    form.addEventListener("change", () => onChange(values()));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      onChange(values());
    });
    return form;
  }

  /** "← previous · all lessons · next →" in curriculum order (filled in when the list arrives). */
  function neighbours(name) {
    const nav = el("nav", { class: "neighbours", "aria-label": "other lessons" });
    LI.api("/api/lessons").then((data) => {
      const names = data.lessons.map((l) => l.name);
      const at = names.indexOf(name);
      const link = (i, label) => (i >= 0 && i < names.length
        ? el("a", { href: `/lessons/${encodeURIComponent(names[i])}`, rel: i < at ? "prev" : "next",
          text: label.replace("NAME", data.lessons[i].title) }) : null);
      nav.replaceChildren(...[link(at - 1, "← NAME"), el("a", { href: "/", text: "all lessons" }),
        link(at + 1, "NAME →")].filter(Boolean));
    }).catch(() => nav.remove());
    return nav;
  }

  LI.registerView("lesson", async (main, params) => {
    const name = params.name;
    const header = el("div", { class: "lesson-header" });
    const status = el("div", { class: "status" });
    const body = el("div", { class: "lesson-body" });
    let form = null, renders = 0, latest = 0;
    main.replaceChildren(header, status, body);

    async function load(values) {
      const ticket = ++latest;  // a slow answer to an older request must not win
      main.dataset.state = "loading";
      const query = new URLSearchParams(values).toString();
      try {
        const lesson = await LI.api(`/api/lessons/${encodeURIComponent(name)}${query ? "?" + query : ""}`);
        if (ticket !== latest) return;
        document.title = `${lesson.title} · llm-internals`;
        if (!form) {
          header.replaceChildren(neighbours(name), el("h1", { text: lesson.title }),
            el("p", { class: "summary", text: lesson.summary }));
          if (lesson.inputs.length) {
            form = inputsForm(lesson.inputs, (next) => {
              history.replaceState(null, "", `${location.pathname}?${new URLSearchParams(next)}`);
              load(next);
            });
            header.append(form);
          }
        }
        status.replaceChildren();
        body.replaceChildren(...lessonBody(lesson));
        main.dataset.state = "ready";
      } catch (err) {
        if (ticket !== latest) return;
        const box = LI.errorBox(err);
        if (!form && query && err.status === 400) {  // a bad value in the address: offer defaults
          box.append(el("div", {}, el("a", { href: location.pathname, text: "open this lesson with its default inputs" })));
        }
        status.replaceChildren(box);
        main.dataset.state = "error";
      }
      main.dataset.render = String(++renders);
    }

    await load(Object.fromEntries(new URLSearchParams(location.search)));
  });
})();
