/* formula.js: ASCII formulas typeset as MathML, no vendored TeX engine:
 *
 *   LI.formulaToMathML(text)   the <math> markup (throws on unbalanced brackets)
 *   LI.formula(text)           an element: the typeset formula, or the ASCII in <code>
 *
 * The notation is in docs/explorer.md (Formulas). Needs common.js (LI.el).
 */
"use strict";

(function () {
  const LI = window.LI;
  const el = LI.el;

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
})();
