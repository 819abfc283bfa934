/* engine.js: the Engine view (/engine). A small paged engine on the explorer's model
 * (web/engine_api.py, web/engine_session.py), stepped by hand: add requests, press Step, and see
 *   block tables   each sample's logical blocks -> physical block ids (filled slots / size)
 *   pool           every physical block, coloured by the request holding it; striped when
 *                  shared, outlined when in the prefix cache, grey when free
 *   memory         KV bytes held by tokens vs allocated to blocks in use vs the whole pool
 *   counters       prefix-cache hits, evictions, preemptions, running / waiting / finished
 *   events         what the last step admitted, forked (n > 1), preempted and finished
 * The session id lives in sessionStorage (a reload keeps the session); leaving the page closes
 * it. <main> carries data-state and data-render (finished draws) for tests. */
"use strict";

(function () {
  const el = LI.el;
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2",
    "#edc948", "#ff9da7", "#9c755f", "#8cd17d", "#86bcb6", "#d37295"];
  const STORAGE_KEY = "llm-internals-engine-session";

  /** r3 -> the colour of request 3 (request ids are r1, r2, ...). */
  function colour(requestId) {
    const n = Number(String(requestId).replace(/^r/, "").replace(/#.*$/, ""));
    return PALETTE[(Number.isFinite(n) ? n - 1 : 0) % PALETTE.length];
  }

  function bytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(2)} MiB`;
  }

  function numberInput(id, label, value, min, max) {
    const input = el("input", { id, type: "number", min, max, step: 1, value });
    return { input, node: el("label", {}, label, input) };
  }

  LI.registerView("engine", async (main) => {
    main.dataset.state = "loading";
    document.title = "Engine · llm-internals";
    let view = null;
    const existing = sessionStorage.getItem(STORAGE_KEY);
    if (existing) {
      try {
        view = await LI.api(`/api/engine/sessions/${encodeURIComponent(existing)}`);
      } catch (err) {
        view = null;
      }
    }
    if (!view) view = await LI.api("/api/engine/sessions", {});
    sessionStorage.setItem(STORAGE_KEY, view.id);
    const base = `/api/engine/sessions/${encodeURIComponent(view.id)}`;
    window.addEventListener("pagehide", () => {
      if (navigator.sendBeacon) navigator.sendBeacon(`${base}/close`);
      sessionStorage.removeItem(STORAGE_KEY);
    });

    const settings = view.settings;
    const blockSize = numberInput("block-size", "block size", settings.block_size, 1, view.limits.max_block_size);
    const numBlocks = numberInput("num-blocks", "blocks", settings.num_blocks, 1, view.limits.max_blocks);
    const maxSeqs = numberInput("max-num-seqs", "max sequences", settings.max_num_seqs, 1, 8);
    const maxBatched = numberInput("max-batched-tokens", "tokens per step", settings.max_num_batched_tokens, 1, 256);
    const prompt = el("input", { id: "engine-prompt", type: "text", value: "to be, or not to be",
      "aria-label": "request prompt" });
    const maxTokens = numberInput("engine-max-tokens", "max tokens", 8, 1, view.limits.max_new_tokens);
    const samples = numberInput("engine-n", "samples (n)", 1, 1, view.limits.max_samples);
    const addButton = el("button", { id: "add", type: "submit", text: "Add request" });
    const stepButton = el("button", { id: "step", type: "button", text: "Step" });
    const runButton = el("button", { id: "run-all", type: "button", text: "Run to the end" });
    const resetButton = el("button", { id: "reset", type: "button", text: "Reset with these settings" });

    const errorArea = el("div", { id: "engine-error" });
    const status = el("div", { id: "engine-status", class: "counters" });
    const memory = el("div", { id: "memory" });
    const requests = el("div", { id: "requests" });
    const tables = el("div", { id: "block-tables" });
    const pool = el("div", { id: "pool", class: "pool" });
    const events = el("ul", { id: "events", class: "events" });

    const addForm = el("form", { class: "inputs" },
      el("label", { class: "wide" }, "prompt", prompt), maxTokens.node, samples.node, addButton,
      stepButton, runButton);
    main.replaceChildren(
      el("h1", { text: "Engine" }),
      el("p", { class: "summary", text: "A paged-KV serving engine (continuous batching, " +
        "prefix caching, preemption) on the explorer's model, with a deliberately small pool. " +
        "Requests are greedy and run to max tokens." }),
      el("form", { class: "inputs", id: "settings" }, blockSize.node, numBlocks.node,
        maxSeqs.node, maxBatched.node, resetButton),
      addForm, errorArea, status, memory,
      el("h2", { text: "Last step" }), events,
      el("h2", { text: "Block tables" }), tables,
      el("h2", { text: "Physical pool" }), pool,
      el("p", { class: "legend", text: "Colour: the request holding the block (×n: its ref " +
        "count); stripes: shared by several block tables; black border: in the prefix cache " +
        "(dashed: held by nobody, evicted first when the pool runs out); grey: free." }),
      el("h2", { text: "Requests" }), requests);

    function drawStatus(v) {
      const c = v.counters;
      const items = [["step", v.steps], ["running", c.running], ["waiting", c.waiting],
        ["finished", c.finished], ["prefix-cache hits", `${c.prefix_hit_tokens} / ` +
          `${c.prefix_queried_tokens} tokens (${(100 * c.prefix_hit_rate).toFixed(0)}%)`],
        ["evictions", c.evictions], ["preemptions", c.preemptions],
        ["blocks used / cached / free", `${c.blocks_used} / ${c.blocks_cached} / ${c.blocks_free}`]];
      status.replaceChildren(...items.map(([label, value]) => el("span", {
        class: "counter", "data-counter": label }, el("span", { class: "label", text: label }),
      el("span", { class: "value", text: value }))));
    }

    function drawMemory(v) {
      const m = v.memory;
      const pct = (n) => (100 * n / m.pool_bytes).toFixed(2);
      memory.replaceChildren(
        el("div", { class: "memory-bar", title: "KV memory of the pool" },
          el("span", { class: "allocated", style: `width: ${pct(m.allocated_bytes)}%` }),
          el("span", { class: "used", style: `width: ${pct(m.used_bytes)}%` })),
        el("div", { class: "meta", "data-used": m.used_bytes, "data-allocated": m.allocated_bytes,
          "data-pool": m.pool_bytes,
          text: `KV memory: ${bytes(m.used_bytes)} held by tokens, ${bytes(m.allocated_bytes)} ` +
            `allocated to blocks in use, ${bytes(m.pool_bytes)} in the pool ` +
            `(${bytes(m.bytes_per_block)} per block)` }));
    }

    function drawEvents(v) {
      const text = (e) => e.kind === "finished" ? `${e.request} finished (${e.reason})`
        : `${e.request}#${e.index} ${e.kind}`;
      events.replaceChildren(...(v.events.length ? v.events.map((e) => el("li", {
        "data-kind": e.kind, "data-request": e.request, text: text(e) }))
        : [el("li", { class: "muted", text: v.steps ? "nothing arrived, left or was preempted" : "no step yet" })]));
    }

    function drawTables(v) {
      const size = v.settings.block_size;
      if (!v.sequences.length) {
        tables.replaceChildren(el("p", { class: "muted", text: "no unfinished requests" }));
        return;
      }
      tables.replaceChildren(...v.sequences.map((s) => {
        const name = `${s.request}#${s.index}`;
        return el("div", { class: "block-table", "data-seq": name },
          el("span", { class: "seq", text: name, style: `color: ${colour(s.request)}` }),
          el("span", { class: "muted count", text: `${s.num_computed_tokens}/${s.num_tokens} tokens` }),
          s.block_table.length ? s.block_table.map((b, i) => el("span", {
            class: "block", "data-block": b, "data-filled": s.filled[i],
            title: `logical block ${i} -> physical block ${b}, ${s.filled[i]} of ${size} slots filled`,
            style: `border-color: ${colour(s.request)}`,
          }, el("span", { class: "id", text: b }), el("span", { class: "fill", text: `${s.filled[i]}/${size}` })))
            : el("span", { class: "muted", text: "waiting (no blocks)" }));
      }));
    }

    function drawPool(v) {
      pool.replaceChildren(...v.pool.map((b) => {
        const owner = b.holders.length ? b.holders[0].replace(/#.*$/, "") : null;
        const fill = owner ? colour(owner) : "#e4e6eb";
        const stripes = "repeating-linear-gradient(45deg, rgba(255, 255, 255, 0.4) 0 4px, transparent 4px 9px)";
        const background = b.shared ? `${stripes}, ${fill}` : fill;
        return el("div", {
          class: `pool-block ${b.state.replace(" ", "-")}${b.cached ? " cached" : ""}`,
          "data-block": b.id, "data-state": b.state, "data-ref": b.ref_count,
          "data-holders": b.holders.join(" "), "data-cached": b.cached,
          title: `block ${b.id}: ${b.state}, ref count ${b.ref_count}` +
            (b.holders.length ? `, held by ${b.holders.join(", ")}` : "") +
            (b.cached ? ", in the prefix cache" : ""),
          style: `background: ${background}`,
        }, el("span", { class: "id", text: b.id }),
        el("span", { class: "ref", text: b.ref_count ? `×${b.ref_count}` : b.state === "cached" ? "cached" : "free" }));
      }));
    }

    function drawRequests(v) {
      const rows = v.requests.map((r) => [r.id, r.prompt, r.status, r.added_at_step, r.n,
        r.outputs.reduce((sum, ids) => sum + ids.length, 0), r.texts.join(" | ")]);
      requests.replaceChildren(v.requests.length
        ? LI.sortableTable(["request", "prompt", "status", "added at step", "samples", "tokens out",
          "output"], rows, 0, "requests")
        : el("p", { class: "muted", text: "no requests yet: add one above" }));
    }

    function draw(v) {
      view = v;
      drawStatus(v); drawMemory(v); drawEvents(v); drawTables(v); drawPool(v); drawRequests(v);
      stepButton.disabled = runButton.disabled = !v.has_unfinished;
      if (v.error) errorArea.replaceChildren(LI.errorBox({ message: v.error }));
      main.dataset.state = "ready";
      main.dataset.render = String(Number(main.dataset.render || 0) + 1);
    }

    async function act(call) {
      main.dataset.state = "loading";
      errorArea.replaceChildren();
      try {
        draw(await call());
      } catch (err) {
        errorArea.replaceChildren(LI.errorBox(err));
        main.dataset.state = "error";
        main.dataset.render = String(Number(main.dataset.render || 0) + 1);
      }
    }

    addForm.addEventListener("submit", (event) => {
      event.preventDefault();
      act(() => LI.api(`${base}/requests`, { prompt: prompt.value,
        max_tokens: Number(maxTokens.input.value), n: Number(samples.input.value) }));
    });
    stepButton.addEventListener("click", () => act(() => LI.api(`${base}/step`, {})));
    runButton.addEventListener("click", () => act(async () => {
      let v = view;
      while (v.has_unfinished) v = await LI.api(`${base}/step`, {});
      return v;
    }));
    resetButton.addEventListener("click", () => act(() => LI.api(`${base}/reset`, {
      block_size: Number(blockSize.input.value), num_blocks: Number(numBlocks.input.value),
      max_num_seqs: Number(maxSeqs.input.value),
      max_num_batched_tokens: Number(maxBatched.input.value),
    })));
    draw(view);
  });
})();
