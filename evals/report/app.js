(function () {
  var samples = Array.prototype.slice.call(document.querySelectorAll("details.sample"));
  var search = document.getElementById("search");
  var counter = document.getElementById("shown");
  var buttons = Array.prototype.slice.call(document.querySelectorAll(".controls button[data-filter]"));
  var state = { filter: "all", query: "" };
  function apply() {
    var q = state.query.toLowerCase(), n = 0;
    samples.forEach(function (el) {
      var ok = (state.filter === "all" || el.classList.contains(state.filter)) &&
        (!q || el.getAttribute("data-search").indexOf(q) >= 0);
      el.style.display = ok ? "" : "none";
      if (ok) n++;
    });
    counter.textContent = n + " of " + samples.length + " samples shown";
    counter.setAttribute("data-shown", String(n));
    buttons.forEach(function (b) { b.classList.toggle("active", b.getAttribute("data-filter") === state.filter); });
  }
  buttons.forEach(function (b) {
    b.addEventListener("click", function () { state.filter = b.getAttribute("data-filter"); apply(); });
  });
  search.addEventListener("input", function () { state.query = search.value; apply(); });
  // #filter=wrong&q=text pre-selects a view (handy for links and for tests)
  var h = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (h.get("filter")) state.filter = h.get("filter");
  if (h.get("q")) { state.query = h.get("q"); search.value = state.query; }
  apply();
  document.body.setAttribute("data-ready", "1");
})();
