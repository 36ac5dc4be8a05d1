// Filters and cell details for the pgssl HTML report. State lives in the URL fragment so a
// filtered view is a link: #scenario=..&backend=..&class=..&status=..&cell=<case> <backend>
(function () {
  "use strict";
  var FILTERS = ["scenario", "backend", "class", "status"];
  var grid = document.getElementById("grid");
  var detail = document.getElementById("detail");
  var shown = document.getElementById("shown");

  function state() {
    return new URLSearchParams(location.hash.slice(1));
  }

  function matches(td, f) {
    if (!td.dataset.status || td.hidden) return false;
    if (f.status === "divergent") {
      if (td.dataset.status === "canonical") return false;
    } else if (f.status === "changed") {
      if (!td.dataset.change) return false;
    } else if (f.status && td.dataset.status !== f.status) {
      return false;
    }
    if (f["class"] && (td.dataset.classes || "").split(" ").indexOf(f["class"]) < 0) return false;
    return true;
  }

  function apply() {
    var p = state();
    var f = {};
    FILTERS.forEach(function (k) {
      f[k] = p.get(k) || "";
      var el = document.getElementById("f-" + k);
      if (el) el.value = f[k];
    });
    grid.querySelectorAll("[data-backend]").forEach(function (el) {
      el.hidden = f.backend !== "" && el.dataset.backend !== f.backend;
    });
    var rows = grid.tBodies[0].rows;
    var visible = 0;
    for (var i = 0; i < rows.length; i++) {
      var tr = rows[i];
      var any = false;
      var cells = tr.cells;
      for (var j = 1; j < cells.length; j++) {
        var m = matches(cells[j], f);
        cells[j].classList.toggle("dim", !m);
        if (m) any = true;
      }
      tr.hidden = !any || (f.scenario !== "" && tr.dataset.scenario !== f.scenario);
      if (!tr.hidden) visible++;
    }
    shown.textContent = "showing " + visible + " of " + rows.length + " cases";
    showCell(p.get("cell"));
  }

  function row(label, value) {
    if (!value) return "";
    var dt = document.createElement("dt");
    dt.textContent = label;
    var dd = document.createElement("dd");
    dd.textContent = value;
    return dt.outerHTML + dd.outerHTML;
  }

  function showCell(key) {
    grid.querySelectorAll("td.selected").forEach(function (td) { td.classList.remove("selected"); });
    if (!key) { detail.hidden = true; return; }
    var sp = key.indexOf(" ");
    var caseId = key.slice(0, sp), backend = key.slice(sp + 1);
    var td = null;
    grid.querySelectorAll("tbody tr").forEach(function (tr) {
      if (tr.dataset["case"] !== caseId) return;
      for (var j = 1; j < tr.cells.length; j++) {
        if (tr.cells[j].dataset.backend === backend) td = tr.cells[j];
      }
    });
    if (!td || !td.dataset.status) { detail.hidden = true; return; }
    td.classList.add("selected");
    var d = td.dataset;
    detail.innerHTML = "<dl>" + row("case", caseId) + row("backend", backend) +
      row("status", d.status) + row("expected", d.expected) + row("actual", d.actual) +
      row("raw message", d.raw) + row("override reason", d.reason) +
      row("override selector", d.selector) + row("why", d.why) +
      row("changes", d.change) + row("time", d.ms + " ms") + "</dl>";
    detail.hidden = false;
  }

  function update(changes) {
    var p = state();
    Object.keys(changes).forEach(function (k) {
      if (changes[k]) p.set(k, changes[k]); else p["delete"](k);
    });
    history.replaceState(null, "", "#" + p.toString());
    apply();
  }

  document.querySelectorAll("[data-filter]").forEach(function (sel) {
    sel.addEventListener("change", function () {
      var c = {};
      c[sel.dataset.filter] = sel.value;
      update(c);
    });
  });
  grid.addEventListener("click", function (ev) {
    var td = ev.target.closest("td");
    if (!td || !td.dataset.status) return;
    update({ cell: td.parentNode.dataset["case"] + " " + td.dataset.backend });
  });
  window.addEventListener("hashchange", apply);
  apply();
})();
