/* markdown.js: a small, safe Markdown renderer for lesson text (HTML is escaped first):
 *
 *   LI.markdownToHtml(text)    paragraphs, - / * / 1. lists, ``` fenced code, `code`, **bold**, *italic*
 *   LI.markdown(text)          the same in a <div class="md">
 *
 * Needs common.js (LI.el).
 */
"use strict";

(function () {
  const LI = window.LI;
  const el = LI.el;

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
})();
