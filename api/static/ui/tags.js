// Tags on the search page (loaded after ui.js, whose api(), state, button() and openProduct() it uses):
// the taxonomy's attributes become facets ("tags.<name>"), and the Audit view lists merchant values that
// contradict a confident tag.
"use strict";

(function tags() {
  const PAGE = 50;
  let offset = 0;

  async function learnTagFields() {
    try {
      const answer = await api("/taxonomy");
      const names = Object.keys((answer.taxonomy && answer.taxonomy.attributes) || {});
      const fields = names.map((name) => `tags.${name}`).filter((field) => !state.attributeKeys.includes(field));
      state.attributeKeys.unshift(...fields); // searches facet on tags first
      // Replaced each time the view opens: the attribute chosen meanwhile stays chosen (an answer that
      // arrived after the choice used to reset it to the first attribute).
      const chosen = $("audit-attribute").value;
      $("audit-attribute").replaceChildren(...names.map((name) => {
        const option = document.createElement("option");
        option.value = option.textContent = name;
        return option;
      }));
      if (names.includes(chosen)) $("audit-attribute").value = chosen;
    } catch (_) { /* no catalog, or an older server: no tag facets */ }
  }

  async function runAudit() {
    const params = new URLSearchParams({ attribute: $("audit-attribute").value, limit: PAGE, offset });
    if ($("audit-min").value !== "") params.set("min_score", $("audit-min").value);
    try {
      const answer = await api(`/audit?${params}`);
      $("audit-rows").replaceChildren(...answer.results.map((row) => {
        const tr = document.createElement("tr");
        const id = document.createElement("td");
        id.append(button(row.id, () => openProduct(row.id), "chip"));
        tr.append(id, ...[row.given, row.predicted, row.score.toFixed(3)].map((text) => {
          const td = document.createElement("td");
          td.textContent = text;
          return td;
        }));
        return tr;
      }));
      $("audit-table").hidden = !answer.results.length;
      $("audit-summary").textContent = answer.total
        ? `${answer.total} contradiction${answer.total === 1 ? "" : "s"} of ${answer.attribute} at score ≥ ${answer.min_score}; ${offset + 1}–${offset + answer.count} shown`
        : `No contradictions of ${answer.attribute} at score ≥ ${answer.min_score}.`;
      $("audit-prev").hidden = offset === 0;
      $("audit-next").hidden = offset + answer.count >= answer.total;
    } catch (error) {
      if (error.status !== 401) setStatus(error.message, true);
    }
  }

  // ui.js switches the search and zero-shot views; this one is shown or hidden beside them.
  document.querySelectorAll(".tab[data-view]").forEach((tab) => tab.addEventListener("click", () => {
    $("view-audit").hidden = tab.dataset.view !== "audit";
    if (tab.dataset.view === "audit") learnTagFields();
  }));
  $("audit-form").addEventListener("submit", (event) => { event.preventDefault(); offset = 0; runAudit(); });
  $("audit-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); runAudit(); });
  $("audit-next").addEventListener("click", () => { offset += PAGE; runAudit(); });
  learnTagFields();
})();
