/* model.js: the Model view (/model). Type a prompt; the server runs the explorer's model once
 * (web/model_api.py) and the page shows:
 *   tokens         one chip per token: its text piece and id (click one to pick the position
 *                  the residual norms and the next-token table describe)
 *   attention      the weights of the chosen layer and head as a heatmap (rows: queries,
 *                  columns: keys; each cell's data-value is the exact weight)
 *   residual norms ||h_l|| of the chosen token after the embedding and after every block
 *   logit lens     each layer's residual through the final norm and the head: the top token
 *                  per position (hover for the top 5)
 *   next token     the sampler's distribution at the last position; the temperature, top-p and
 *                  top-k controls refetch it (the server applies the library's filters)
 *   routing        per MoE layer, the experts each token went to and their weights (a
 *                  tokens x experts heatmap; only for models with experts)
 * <main> carries data-state (loading, ready, error) and data-render (finished draws), and the
 * next-token table data-render too, so tests can wait for a redraw. */
"use strict";

(function () {
  const el = LI.el;
  const DEFAULT_PROMPT = "to be, or not to be";

  function query(params) {
    return new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();
  }

  /** A label for a token piece that shows spaces and newlines. */
  function shown(piece) {
    return piece.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5") || "\u2205";
  }

  function bump(node) {
    node.dataset.render = String(Number(node.dataset.render || 0) + 1);
  }

  function slider(id, label, min, max, step, value) {
    const input = el("input", { id, type: "range", min, max, step, value });
    const out = el("output", { for: id, text: value });
    input.addEventListener("input", () => { out.textContent = input.value; });
    return { input, node: el("label", { class: "control" }, `${label} `, input, out) };
  }

  LI.registerView("model", async (main) => {
    main.dataset.state = "loading";
    document.title = "Model · llm-internals";
    const info = await LI.api("/api/model");
    const params = new URLSearchParams(location.search);
    const state = { layer: 0, head: 0, position: null, data: null };

    const prompt = el("input", { id: "prompt", type: "text", class: "prompt",
      value: params.get("prompt") || DEFAULT_PROMPT, maxlength: 2000,
      "aria-label": "prompt" });
    const runButton = el("button", { id: "run", type: "submit", text: "Run" });
    const layerSelect = el("select", { id: "layer", "aria-label": "layer" });
    for (let l = 0; l < info.n_layers; l++) layerSelect.append(el("option", { value: l, text: `layer ${l}` }));
    const headSelect = el("select", { id: "head", "aria-label": "head" });
    for (let h = 0; h < info.n_heads; h++) headSelect.append(el("option", { value: h, text: `head ${h}` }));
    const temperature = slider("temperature", "temperature", 0, 2, 0.05, 1);
    const topP = slider("top-p", "top-p", 0.05, 1, 0.05, 1);
    const topK = el("input", { id: "top-k", type: "number", min: 0, max: info.vocab_size, step: 1, value: 0 });

    const errorArea = el("div", { id: "model-error" });
    const tokens = el("div", { id: "tokens", class: "tokens" });
    const attention = el("div", { id: "attention" });
    const norms = el("div", { id: "residual-norms", class: "bars" });
    const lens = el("div", { id: "logit-lens", class: "lens" });
    const nextToken = el("div", { id: "next-token" });
    const routing = el("div", { id: "routing" });

    const form = el("form", { class: "inputs model-form" },
      el("label", { class: "wide" }, "prompt", prompt), runButton);
    main.replaceChildren(
      el("h1", { text: "Model" }),
      el("p", { class: "summary", id: "model-info",
        text: `${info.path}: ${info.family}, ${info.n_layers} layers, ${info.n_heads} heads ` +
          `(${info.n_kv_heads} K/V), d_model ${info.d_model}, vocabulary ${info.vocab_size}` +
          (info.experts ? `, ${info.experts} experts` : "") +
          `; prompts up to ${info.max_prompt_tokens} tokens` }),
      form, errorArea,
      el("h2", { text: "Tokens" }), tokens,
      el("h2", { text: "Attention" }),
      el("div", { class: "controls" }, layerSelect, headSelect),
      attention,
      el("h2", { text: "Residual stream norms" }), norms,
      el("h2", { text: "Logit lens" }),
      el("p", { class: "summary", text: "Each layer's residual through the final norm and the " +
        "output head: the token it would predict next, at every position." }), lens,
      el("h2", { text: "Next-token probabilities" }),
      el("div", { class: "controls" }, temperature.node, topP.node,
        el("label", { class: "control" }, "top-k ", topK)),
      nextToken,
      el("div", { id: "routing-box" }, routing));

    function drawTokens(data) {
      tokens.replaceChildren(...data.tokens.map((t, i) => el("span", {
        class: "chip" + (i === state.position ? " selected" : ""), "data-index": i, "data-id": t.id,
        "data-piece": t.piece, title: `position ${i}, id ${t.id}`,
        onclick: () => { state.position = i; drawTokens(data); drawNorms(data); },
      }, el("span", { class: "piece", text: shown(t.piece) }), el("sub", { text: t.id }))));
    }

    function drawAttention(data) {
      const labels = data.tokens.map((t, i) => `${i} ${shown(t.piece)}`);
      attention.replaceChildren(
        el("div", { class: "meta", text: `layer ${data.layer}, head ${data.head}: ` +
          "rows are queries, columns keys; each row sums to 1 (future keys get 0)" +
          (data.tokens.length > 24 ? "; hover a cell for its weight" : "") }),
        LI.heatmap(data.attention, { name: `attention[${data.layer}, ${data.head}]`,
          rowLabels: labels, colLabels: labels, decimals: 4 }));
    }

    function drawNorms(data) {
      const t = state.position;
      const values = data.residual_norms.map((row) => row[t]);
      const top = Math.max(...values) || 1;
      norms.replaceChildren(
        el("div", { class: "meta", text: `token ${t} (${shown(data.tokens[t].piece)}): ` +
          "||h|| after the embedding and after each block" }),
        ...values.map((v, l) => el("div", { class: "bar-row", "data-layer": l, "data-value": v },
          el("span", { class: "bar-label", text: l === 0 ? "embedding" : `block ${l - 1}` }),
          el("span", { class: "bar", style: `width: ${(100 * v / top).toFixed(1)}%` }),
          el("span", { class: "bar-value", text: LI.format(v, 3) }))));
    }

    function drawLens(data) {
      const head = el("tr", {}, el("th", { text: "layer" }),
        data.tokens.map((t, i) => el("th", { scope: "col", text: `${i} ${shown(t.piece)}` })));
      const rows = data.logit_lens.map((perToken, l) => el("tr", { "data-layer": l },
        el("th", { scope: "row", text: l === 0 ? "embedding" : `block ${l - 1}` }),
        perToken.map((top, i) => el("td", {
          "data-col": i, "data-id": top[0].id, "data-value": top[0].prob,
          title: top.map((e) => `${shown(e.piece)} ${LI.format(e.prob, 4)}`).join("\n"),
          style: `background: rgba(36, 86, 199, ${(0.08 + 0.6 * top[0].prob).toFixed(3)})`,
        }, el("span", { class: "piece", text: shown(top[0].piece) }),
        el("span", { class: "prob", text: LI.format(top[0].prob, 2) })))));
      lens.replaceChildren(el("table", { class: "lens-table" }, el("thead", {}, head), el("tbody", {}, rows)));
    }

    function drawNext(dist) {
      const rows = dist.tokens.map((t) => [shown(t.piece), t.id, t.prob, t.raw_prob]);
      const table = LI.sortableTable(["token", "id", "probability", "at T = 1, unfiltered"],
        rows, 4, "next-token");
      nextToken.replaceChildren(
        el("div", { class: "meta", text: `temperature ${dist.temperature}, top-p ${dist.top_p}, ` +
          `top-k ${dist.top_k}: ${dist.kept} of ${dist.vocab} tokens kept` +
          (dist.temperature === 0 ? " (greedy: the argmax)" : "") }), table);
      bump(nextToken);
    }

    /** Per MoE layer a tokens x experts heatmap: the combine weight of each chosen expert,
     * 0 for the experts a token was not sent to. */
    function drawRouting(data) {
      routing.replaceChildren();
      if (!data.routing.length) return;
      routing.append(el("h2", { text: "Expert routing" }));
      const labels = data.tokens.map((t, i) => `${i} ${shown(t.piece)}`);
      for (const layer of data.routing) {
        const grid = layer.experts.map((experts, i) => {
          const row = new Array(layer.n_experts).fill(0);
          experts.forEach((e, j) => { row[e] = layer.weights[i][j]; });
          return row;
        });
        const colLabels = Array.from({ length: layer.n_experts }, (_, e) => `expert ${e}`);
        const box = LI.heatmap(grid, { name: `routing[layer ${layer.layer}]`, rowLabels: labels,
          colLabels, decimals: 3, dense: false });
        box.dataset.layer = layer.layer;
        routing.append(el("div", { class: "meta", text: `layer ${layer.layer}: ` +
          `${layer.experts[0].length} of ${layer.n_experts} experts per token, with their weights` }), box);
      }
    }

    function samplingParams() {
      return { temperature: temperature.input.value, top_p: topP.input.value, top_k: topK.value || 0 };
    }

    async function run() {
      main.dataset.state = "loading";
      errorArea.replaceChildren();
      try {
        const data = await LI.api("/api/model/inspect?" + query({
          prompt: prompt.value, layer: layerSelect.value, head: headSelect.value, ...samplingParams(),
        }));
        if (state.position === null || state.position >= data.tokens.length ||
            (state.data && state.data.tokens.length !== data.tokens.length)) {
          state.position = data.tokens.length - 1;
        }
        state.data = data;
        state.prompt = prompt.value;
        drawTokens(data); drawAttention(data); drawNorms(data); drawLens(data);
        drawNext(data.next_token); drawRouting(data);
        main.dataset.state = "ready";
      } catch (err) {
        errorArea.replaceChildren(LI.errorBox(err));
        main.dataset.state = "error";
      }
      bump(main);
    }

    async function refetchNext() {
      if (!state.data) return;
      try {
        drawNext(await LI.api("/api/model/next-token?" + query({ prompt: state.prompt, ...samplingParams() })));
        errorArea.replaceChildren();
      } catch (err) {
        errorArea.replaceChildren(LI.errorBox(err));
        bump(nextToken);
      }
    }

    form.addEventListener("submit", (event) => { event.preventDefault(); run(); });
    layerSelect.addEventListener("change", run);
    headSelect.addEventListener("change", run);
    for (const control of [temperature.input, topP.input, topK]) {
      control.addEventListener("change", refetchNext);
    }
    await run();
  });
})();
