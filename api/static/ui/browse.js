// The page's state in the URL, and the landing page. Loaded after ui.js; it listens to ui.js's events
// ("vitrine:started", "vitrine:search") and calls its functions (runSearch, addFilter, openProduct).
//
// A text or "more like this" search is written to the URL (?q=, ?like=, mode, sort, filters, page), so a
// search can be shared and Back / Forward step through searches. An image query stays out of the URL
// (a picture is too large for one).
"use strict";

function urlOf(query, page) {
  const params = new URLSearchParams();
  if (query.text) params.set("q", query.text);
  else if (query.product_id) params.set("like", query.product_id);
  else return null;
  if ($("mode").value) params.set("mode", $("mode").value);
  if ($("sort").value) params.set("sort", $("sort").value);
  if (Object.keys(state.filters).length) params.set("filters", JSON.stringify(state.filters));
  if (page) params.set("page", String(page + 1));
  return `?${params}`;
}

document.addEventListener("vitrine:search", ({ detail }) => {
  const url = urlOf(detail.query, detail.page);
  if (url && url !== location.search) history.pushState(null, "", url);
});

// The URL's search, shown as if typed: every page up to the one named, so Back lands where it was.
async function applyUrl() {
  const params = new URLSearchParams(location.search);
  $("mode").value = params.get("mode") || "";
  $("sort").value = params.get("sort") || "";
  try { state.filters = JSON.parse(params.get("filters") || "{}"); } catch (_) { state.filters = {}; }
  renderFilters();
  const text = params.get("q");
  const like = params.get("like");
  const pages = Math.max(1, Number.parseInt(params.get("page") || "1", 10) || 1);
  $("q").value = text || "";
  if (!text && !like) { showLanding(); return; }
  const query = text ? { text } : { product_id: like };
  const label = text ? `“${text}”` : `Products that look like “${like}”`;
  for (let page = 0; page < pages; page += 1) await runSearch(query, label, { page, push: false });
}

window.addEventListener("popstate", applyUrl);
document.addEventListener("vitrine:started", applyUrl);

// Landing: the catalog's categories with their counts, and its newest products ----------------------

async function showLanding() {
  state.lastQuery = null;
  $("results").replaceChildren();
  $("summary").textContent = "";
  $("more").hidden = true;
  $("facets").hidden = true;
  try {
    const listing = await api("/products?limit=100&facets=category");
    const categories = Object.entries((listing.facets || {}).category || {}).map(([name, count]) => {
      const entry = document.createElement("li");
      entry.append(button(`${name} (${count})`, () => {
        state.filters = { category: name };
        renderFilters();
        runSearch({ text: name }, `“${name}”`);
      }, "category"));
      return entry;
    });
    $("landing-categories").replaceChildren(...categories);
    // Newest first among the listing's first page (the listing itself is in id order).
    const newest = [...listing.results]
      .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)))
      .slice(0, 8)
      .map((product) => card(product));
    $("landing-newest").replaceChildren(...newest);
    $("landing-total").textContent = `${listing.total} products`;
    $("landing").hidden = false;
  } catch (error) {
    if (error.status !== 401) setStatus(error.message, true);
  }
}
