// The product view's "why not" box: asks POST /search/explain where this product went in the last
// search. Kept apart from ui.js, which tells it about each opened product with a "vitrine:product"
// event ({id, query}: the product id and the last /search body).
"use strict";

(() => {
  const box = () => document.getElementById("why-not");

  const REASONS = {
    filter: (key) => `the filter on “${key}” leaves it out`,
    query_example: () => "it is an example of the query itself (never its own result)",
    min_score: (t) => `its score is below the cut-off min_score ${t}`,
    min_vector_score: (t) => `its cosine is below the cut-off min_vector_score ${t}`,
    min_lexical_score: (t) => `its text score is below the cut-off min_lexical_score ${t}`,
    min_relevance: (t) => `its relevance is below the cut-off min_relevance ${t}`,
    window: (n) => `it ranked below the ${n} candidates each list hands to fusion`,
    no_match: (mode) => `the ${mode} ranking has no score for it (no query word matches)`,
    max_sorted: (n) => `the sorted set was cut at ${n} products before it`,
    page: (p) => `it is on page ${p.number} (offset ${p.offset})`,
    collapse: (c) => `it was folded into a near-duplicate${c && c.into ? ` (${c.into})` : ""}`,
  };

  function reasonText(excluded) {
    if (!excluded) return "It is in the results.";
    const [key, value] = Object.entries(excluded)[0];
    return `Not in the results: ${(REASONS[key] || (() => key))(value)}.`;
  }

  function listText(name, list, scoreName) {
    if (!list) return null;
    if (list.rank === null) return `${name}: not ranked`;
    const score = list[scoreName];
    const where = list.in_window ? "" : " (outside the candidates fused)";
    return `${name}: rank ${list.rank}, ${scoreName} ${typeof score === "number" ? score.toFixed(4) : score}${where}`;
  }

  function line(text) {
    const p = document.createElement("p");
    p.textContent = text;
    return p;
  }

  async function explain(id, query) {
    const target = box();
    target.replaceChildren(line("Asking the server…"));
    const headers = { "Content-Type": "application/json" };
    const token = sessionStorage.getItem("vitrine-token");
    if (token) headers.Authorization = `Bearer ${token}`;
    const { facets, ...body } = query; // facets do not change where a product went
    try {
      const response = await fetch("/search/explain", {
        method: "POST", headers, body: JSON.stringify({ query: body, product_id: id }),
      });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.error || response.statusText);
      const lines = [reasonText(answer.excluded_by)];
      if (answer.rank !== null) lines.push(`Rank ${answer.rank} in the ${answer.mode} ranking.`);
      [listText("Vector", answer.vector, "cosine"), listText("Text", answer.lexical, "score")]
        .filter(Boolean).forEach((text) => lines.push(text));
      target.replaceChildren(...lines.map(line));
    } catch (error) {
      target.replaceChildren(line(`Could not explain: ${error.message}`));
    }
  }

  document.addEventListener("vitrine:product", (event) => {
    const target = box();
    if (!target) return;
    const { id, query } = event.detail || {};
    target.hidden = !query;
    if (!query) return;
    const ask = document.createElement("button");
    ask.type = "button";
    ask.className = "secondary";
    ask.textContent = "Why is this (not) in my results?";
    ask.addEventListener("click", () => explain(id, query));
    target.replaceChildren(ask);
  });
})();
