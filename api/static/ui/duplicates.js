// "Hide duplicates": a toggle beside the search box. While it is on, every search the page sends asks
// the server to collapse duplicate groups ({"collapse": "duplicates"}, docs/duplicates.md): one result
// per group. Kept apart from ui.js: it only adds the field to the page's POST /search bodies and
// re-runs the current text search when toggled.
(() => {
  "use strict";
  const form = document.getElementById("search-form");
  if (!form) return;
  const label = document.createElement("label");
  label.className = "check";
  label.innerHTML = '<input id="hide-duplicates" type="checkbox"> hide duplicates';
  form.append(label);
  const box = label.querySelector("input");
  box.checked = localStorage.getItem("vitrine.hideDuplicates") === "1";

  const send = window.fetch.bind(window);
  window.fetch = (resource, options = {}) => {
    const path = typeof resource === "string" ? resource : "";
    if (box.checked && path === "/search" && options.method === "POST" && typeof options.body === "string") {
      const body = JSON.parse(options.body);
      body.collapse = "duplicates";
      options = { ...options, body: JSON.stringify(body) };
    }
    return send(resource, options);
  };

  box.addEventListener("change", () => {
    localStorage.setItem("vitrine.hideDuplicates", box.checked ? "1" : "0");
    const q = document.getElementById("q");
    if (q && q.value.trim()) form.requestSubmit();
  });
})();
