// mathagent report page: renders the JSON index a page at a time, loads each trace when its sample is
// opened, typesets LaTeX with the inlined KaTeX. No network access of any kind.
// Index schema (html.py _page_data):
//   runs[r]      = {name, mode, k}
//   problems[p]  = [id, question, gold, level, subject]
//   samples[i]   = [run, problem, sample_index, status (0 wrong, 1 correct, 2 error), answer, state,
//                   tokens_in, tokens_out, time_s, error]; its trace is <script id="t{i}">
//   verdicts[r][p] = null (not in run) or [n_correct, n, voted_correct (0/1), voted_answer]
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var body = document.body, view = body.getAttribute("data-view");
  var STATUS = ["wrong", "correct", "error"];
  var list = document.getElementById("list"), search = document.getElementById("search");
  var counter = document.getElementById("shown");
  var pagers = Array.prototype.slice.call(document.querySelectorAll(".pager"));
  var buttons = Array.prototype.slice.call(document.querySelectorAll(".controls button[data-filter]"));
  var state = { filter: "all", query: "", page: 1, size: +body.getAttribute("data-page-size") || 50 };

  // ---- LaTeX ---------------------------------------------------------------------------------------
  // $$..$$, \[..\] display; \(..\) and $..$ inline, with pandoc's rule for $: the opening $ has a
  // non-space right after it, the closing $ a non-space right before it and no digit after it (so
  // "costs $5 and $10" stays text). A bare \boxed{..} outside math is typeset too.
  function balanced(s, open) { // index after the brace matching s[open] == "{"
    var depth = 0;
    for (var j = open; j < s.length; j++) {
      if (s[j] === "\\") { j++; continue; }
      if (s[j] === "{") depth++;
      else if (s[j] === "}" && --depth === 0) return j + 1;
    }
    return -1;
  }
  function splitTex(s) {
    var out = [], text = "", i = 0, n = s.length;
    function push(kind, t) { if (text) { out.push([0, text]); text = ""; } out.push([kind, t]); }
    while (i < n) {
      var c = s[i], j;
      if (c === "\\" && (s[i + 1] === "[" || s[i + 1] === "(")) {
        j = s.indexOf(s[i + 1] === "[" ? "\\]" : "\\)", i + 2);
        if (j > 0) { push(s[i + 1] === "[" ? 2 : 1, s.slice(i + 2, j)); i = j + 2; continue; }
      } else if (c === "\\" && s.substr(i, 7) === "\\boxed{") {
        j = balanced(s, i + 6);
        if (j > 0) { push(1, s.slice(i, j)); i = j; continue; }
      } else if (c === "\\" && s[i + 1] === "$") {
        text += "$"; i += 2; continue;
      } else if (c === "$" && s[i + 1] === "$") {
        j = s.indexOf("$$", i + 2);
        if (j > 0) { push(2, s.slice(i + 2, j)); i = j + 2; continue; }
      } else if (c === "$" && i + 1 < n && !/\s/.test(s[i + 1])) {
        for (j = i + 1; j < n; j++) {
          if (s[j] === "\\") { j++; continue; }
          if (s[j] === "\n" && s[j + 1] === "\n") { j = n; break; }
          if (s[j] === "$" && !/\s/.test(s[j - 1]) && !/[0-9]/.test(s[j + 1] || "")) break;
        }
        if (j < n && j > i + 1) { push(1, s.slice(i + 1, j)); i = j + 1; continue; }
      }
      text += c; i++;
    }
    if (text) out.push([0, text]);
    return out;
  }
  var memo = new Map(); // typeset markup by (display, tex): answers repeat across samples and runs
  function katexInto(el, tex, display) {
    var key = (display ? "D" : "I") + tex, html = memo.get(key);
    if (html === undefined) {
      try {
        html = katex.renderToString(tex, { displayMode: display, throwOnError: false, strict: "ignore", maxSize: 20, maxExpand: 200 });
      } catch (e) { html = null; }
      if (memo.size > 20000) memo.clear();
      memo.set(key, html);
    }
    if (html === null) el.textContent = tex; else el.innerHTML = html;
  }
  function typeset(root) {
    var els = root.querySelectorAll(".tex:not([data-tex]),.math:not([data-tex])");
    for (var e = 0; e < els.length; e++) {
      var el = els[e], src = el.textContent;
      el.setAttribute("data-tex", "1");
      if (el.classList.contains("math")) { // a bare answer: typeset only what looks like LaTeX
        if (/[\\^_{]/.test(src)) { el.textContent = ""; katexInto(el, src, false); }
        continue;
      }
      var parts = splitTex(src);
      if (parts.length === 1 && parts[0][0] === 0) continue;
      el.textContent = "";
      parts.forEach(function (p) {
        if (p[0] === 0) { el.appendChild(document.createTextNode(p[1])); return; }
        var span = document.createElement("span");
        katexInto(span, p[1], p[0] === 2);
        el.appendChild(span);
      });
    }
  }

  // ---- small DOM helpers ----------------------------------------------------------------------------
  function h(tag, cls, text) {
    var el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined && text !== null) el.textContent = String(text);
    return el;
  }
  function badge(text, cls) { return h("span", "badge" + (cls ? " " + cls : ""), text); }
  function lazyTrace(det, i, extra) { // fill a sample's body the first time it is opened
    det.addEventListener("toggle", function fill() {
      if (!det.open || det.getAttribute("data-loaded")) return;
      var src = document.getElementById("t" + i);
      if (!src) { // still being parsed: try again when the document is complete
        det.lastChild.textContent = "loading…";
        document.addEventListener("DOMContentLoaded", fill);
        return;
      }
      var b = det.lastChild;
      b.textContent = "";
      if (extra) b.appendChild(extra());
      b.insertAdjacentHTML("beforeend", src.textContent);
      det.setAttribute("data-loaded", "1");
      typeset(b);
    });
  }
  function sampleDetails(i, withQuestion) {
    var s = D.samples[i], p = D.problems[s[1]], st = STATUS[s[3]];
    var det = h("details", "sample " + st);
    det.setAttribute("data-i", String(i));
    var sum = h("summary");
    if (withQuestion) sum.appendChild(h("b", null, "#" + p[0] + " "));
    sum.appendChild(document.createTextNode("sample " + s[2] + " — answer "));
    sum.appendChild(h("code", "math", s[4] === null ? "none" : s[4]));
    if (withQuestion) { sum.appendChild(document.createTextNode(" gold ")); sum.appendChild(h("code", "math", p[2])); }
    sum.appendChild(badge(st, st));
    if (s[5]) sum.appendChild(badge("verified " + s[5], "state-" + s[5]));
    if (withQuestion && p[3]) sum.appendChild(badge("level " + p[3]));
    if (withQuestion && p[4]) sum.appendChild(badge(p[4]));
    det.appendChild(sum);
    det.appendChild(h("div", "body"));
    lazyTrace(det, i, withQuestion ? function () {
      var f = document.createDocumentFragment();
      f.appendChild(h("div", "q tex", p[1]));
      var votes = (byProblem[s[0] + ":" + s[1]] || []).map(function (k) {
        var a = D.samples[k][4]; return a === null ? "none" : a;
      });
      f.appendChild(h("div", "votes", "votes of this problem: " + votes.join(", ")));
      return f;
    } : null);
    return det;
  }

  // ---- the two views ----------------------------------------------------------------------------------
  var byProblem = {}; // "run:problem" -> sample indices
  D.samples.forEach(function (s, i) { (byProblem[s[0] + ":" + s[1]] = byProblem[s[0] + ":" + s[1]] || []).push(i); });
  var items, keyText, matches, renderItem;
  if (view === "samples") {
    items = D.samples.map(function (_, i) { return i; });
    keyText = function (i) {
      var s = D.samples[i], p = D.problems[s[1]];
      return [p[0], p[1], s[4], p[2], s[9], p[3], p[4]].join(" ").toLowerCase();
    };
    matches = function (i, f) { return f === "all" || STATUS[D.samples[i][3]] === f; };
    renderItem = function (i) { return sampleDetails(i, true); };
  } else {
    items = D.problems.map(function (_, p) { return p; });
    keyText = function (p) {
      var q = D.problems[p], t = [q[0], q[1], q[2], q[3], q[4]];
      D.verdicts.forEach(function (v) { if (v[p]) t.push(v[p][3]); });
      return t.join(" ").toLowerCase();
    };
    var outcome = function (p) { // verdicts of the runs that have this problem
      return D.verdicts.map(function (v) { return v[p] ? v[p][2] : null; }).filter(function (x) { return x !== null; });
    };
    matches = function (p, f) {
      if (f === "all") return true;
      var o = outcome(p), right = o.filter(function (x) { return x === 1; }).length;
      if (f === "differ") return right > 0 && right < o.length;
      if (f === "all-correct") return o.length > 0 && right === o.length;
      if (f === "all-wrong") return o.length > 0 && right === 0;
      return true;
    };
    renderItem = function (p) {
      var q = D.problems[p], det = h("details", "problem");
      det.setAttribute("data-p", String(p));
      var sum = h("summary", "prow");
      var head = h("span", "pid");
      head.appendChild(h("b", null, "#" + q[0]));
      if (q[3]) head.appendChild(badge("L" + q[3]));
      sum.appendChild(head);
      sum.appendChild(h("span", "qtext tex", q[1].length > 160 ? q[1].slice(0, 160) + "…" : q[1]));
      var gold = h("span", "gold"); gold.appendChild(h("code", "math", q[2])); sum.appendChild(gold);
      D.verdicts.forEach(function (v, r) {
        var cell = h("span", "verdict");
        var x = v[p];
        if (!x) { cell.appendChild(badge("not run", "none")); }
        else {
          cell.classList.add(x[2] ? "correct" : "wrong");
          cell.setAttribute("title", D.runs[r].name + ": voted " + x[3] + ", " + x[0] + "/" + x[1] + " samples right");
          cell.appendChild(h("span", "mark", x[2] ? "✓" : "✗"));
          cell.appendChild(h("code", "math", x[3] === null ? "none" : x[3]));
          cell.appendChild(h("small", null, " " + x[0] + "/" + x[1]));
        }
        sum.appendChild(cell);
      });
      det.appendChild(sum);
      var b = h("div", "body");
      det.appendChild(b);
      det.addEventListener("toggle", function () {
        if (!det.open || det.getAttribute("data-loaded")) return;
        det.setAttribute("data-loaded", "1");
        b.appendChild(h("div", "q tex", q[1]));
        var cols = h("div", "runs");
        cols.style.gridTemplateColumns = "repeat(" + D.runs.length + ", minmax(0, 1fr))";
        D.runs.forEach(function (run, r) {
          var col = h("div", "runcol");
          col.appendChild(h("div", "runname", run.name + " · " + run.mode));
          (byProblem[r + ":" + p] || []).forEach(function (i) { col.appendChild(sampleDetails(i, false)); });
          cols.appendChild(col);
        });
        b.appendChild(cols);
        typeset(b);
      });
      return det;
    };
  }
  var keys = null; // search text per item, built on the first search
  function selected() {
    var q = state.query.toLowerCase().trim(), out = [];
    if (q && !keys) keys = items.map(keyText);
    for (var k = 0; k < items.length; k++) {
      if (matches(items[k], state.filter) && (!q || keys[k].indexOf(q) >= 0)) out.push(items[k]);
    }
    return out;
  }

  // ---- pagination ---------------------------------------------------------------------------------------
  function renderPager(el, pages) {
    el.textContent = "";
    function btn(label, page, disabled) {
      var b = h("button", "pg", label);
      b.disabled = disabled;
      b.setAttribute("data-page", String(page));
      b.addEventListener("click", function () { go({ page: page }); });
      el.appendChild(b);
    }
    btn("« first", 1, state.page <= 1);
    btn("‹ prev", state.page - 1, state.page <= 1);
    el.appendChild(h("span", "pageinfo", "page " + state.page + " of " + pages));
    btn("next ›", state.page + 1, state.page >= pages);
    btn("last »", pages, state.page >= pages);
    var sel = h("select", "pagesize");
    [25, 50, 100, 200].forEach(function (n) {
      var o = h("option", null, n + " per page"); o.value = String(n); o.selected = n === state.size; sel.appendChild(o);
    });
    sel.addEventListener("change", function () { go({ size: +sel.value, page: 1 }); });
    el.appendChild(sel);
  }
  function apply() {
    var t0 = performance.now();
    var sel = selected(), pages = Math.max(1, Math.ceil(sel.length / state.size));
    state.page = Math.min(Math.max(1, state.page), pages);
    var frag = document.createDocumentFragment();
    sel.slice((state.page - 1) * state.size, state.page * state.size).forEach(function (x) { frag.appendChild(renderItem(x)); });
    list.textContent = "";
    list.appendChild(frag);
    typeset(list);
    var what = view === "samples" ? " samples" : " problems";
    counter.textContent = sel.length + " of " + items.length + what + " match";
    counter.setAttribute("data-shown", String(sel.length));
    counter.setAttribute("data-total", String(items.length));
    pagers.forEach(function (p) { renderPager(p, pages); });
    buttons.forEach(function (b) { b.classList.toggle("active", b.getAttribute("data-filter") === state.filter); });
    body.setAttribute("data-page", String(state.page));
    body.setAttribute("data-pages", String(pages));
    body.setAttribute("data-last-render-ms", (performance.now() - t0).toFixed(1));
  }
  function go(change) {
    for (var k in change) state[k] = change[k];
    var hp = new URLSearchParams();
    if (state.filter !== "all") hp.set("filter", state.filter);
    if (state.query) hp.set("q", state.query);
    if (state.page > 1) hp.set("page", String(state.page));
    history.replaceState(null, "", "#" + hp.toString());
    apply();
  }
  buttons.forEach(function (b) {
    b.addEventListener("click", function () { go({ filter: b.getAttribute("data-filter"), page: 1 }); });
  });
  search.addEventListener("input", function () { go({ query: search.value, page: 1 }); });
  var all = document.getElementById("show-all-settings");
  function fold() { document.body.classList.toggle("show-provenance", all.checked); }
  all.addEventListener("change", fold);
  // #filter=wrong&q=text&page=2 opens a given view (handy for links and for tests)
  function fromHash() {
    var hp = new URLSearchParams(location.hash.replace(/^#/, ""));
    state.filter = hp.get("filter") || "all";
    state.query = hp.get("q") || "";
    search.value = state.query;
    state.page = +hp.get("page") || 1;
  }
  window.addEventListener("hashchange", function () { fromHash(); apply(); });
  fromHash();
  fold();
  apply();
  window.mathagentReport = { splitTex: splitTex }; // for tests and the console
  body.setAttribute("data-ready", "1");
  body.setAttribute("data-ready-ms", performance.now().toFixed(1));
})();
