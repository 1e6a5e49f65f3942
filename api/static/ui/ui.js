// vitrine's search page: plain JavaScript against the JSON API, no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("vitrine-token") || "",
  filters: {},            // field -> value, sent as the search's equality filters
  facetsSupported: false, // the server's /search takes "facets" (read from /openapi.json)
  lastQuery: null,
  queryImage: null,       // data URL of the picked image
  crop: null,             // {x, y, w, h} in the picture's own pixels
  blobUrls: [],
  attributeKeys: [],
  page: 0,                // pages of PAGE_SIZE results already shown, less one
  topScore: null,         // the first result's score: relevance is shown relative to it
};
const PAGE_SIZE = 24;

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function api(path, { method = "GET", json } = {}) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  const response = await fetch(path, { method, headers, body });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) lock(state.token ? "That token was refused; enter another." : "This server needs an API token.");
  if (!response.ok) throw new ApiError(response.status, data.error || response.statusText);
  return data;
}

// Images go through fetch() with the token and become blob: URLs, so a token-protected server never
// has to expose its images publicly.
async function showImage(img, url, fallback) {
  img.alt = img.alt || "";
  if (!state.token) { img.src = url; if (fallback) img.onerror = () => { img.onerror = null; img.src = fallback; }; return; }
  try {
    const response = await fetch(url, { headers: { Authorization: `Bearer ${state.token}` } });
    if (!response.ok) throw new Error(String(response.status));
    const blobUrl = URL.createObjectURL(await response.blob());
    state.blobUrls.push(blobUrl);
    img.src = blobUrl;
  } catch (_) {
    if (fallback && /^https?:/.test(fallback)) img.src = fallback;
  }
}

function releaseBlobs() {
  state.blobUrls.forEach((url) => URL.revokeObjectURL(url));
  state.blobUrls = [];
}

// Access ---------------------------------------------------------------------------------------------

function lock(message) {
  document.querySelector("main").hidden = true;
  $("token-form").hidden = false;
  $("results").replaceChildren();
  setStatus(message, true);
  $("token").focus();
}

function unlock() {
  document.querySelector("main").hidden = false;
  $("token-form").hidden = !state.token;
}

async function start() {
  try {
    const info = await api("/info");
    // Known before the first search, so that search already asks for facets.
    await Promise.all([detectFacets(), learnAttributeKeys()]);
    unlock();
    const catalog = info.catalog ? `${info.catalog.products} products` : "no catalog";
    setStatus(`${catalog} · ${info.model}${info.random_weights ? " (random weights: scores are meaningless)" : ""}`);
    // Hooks (browse.js: the URL's search or the landing page) start from here, once the page can ask.
    document.dispatchEvent(new CustomEvent("vitrine:started", { detail: { info } }));
  } catch (error) {
    if (error.status === 503) { setStatus(`${error.message} — retrying…`); setTimeout(start, 2000); }
    else if (error.status !== 401) setStatus(error.message, true);
  }
}

async function detectFacets() {
  try {
    const spec = await (await fetch("/openapi.json")).json();
    let schema = spec.paths["/search"].post.requestBody.content["application/json"].schema;
    if (schema.$ref) schema = spec.components.schemas[schema.$ref.split("/").pop()];
    state.facetsSupported = Boolean(schema.properties && schema.properties.facets);
  } catch (_) { state.facetsSupported = false; }
}

// The attribute fields worth faceting on, read from a first page of the catalog listing.
async function learnAttributeKeys() {
  try {
    const listing = await api("/products?limit=50");
    const keys = new Set(state.attributeKeys);
    listing.results.forEach((product) => Object.keys(product.attributes || {}).forEach((key) => keys.add(key)));
    state.attributeKeys = [...keys];
  } catch (_) { /* an older server without the listing: facets come after the first answer */ }
}

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("vitrine-token", state.token);
  await start();
});

// Search ---------------------------------------------------------------------------------------------

// ``page``: 0 for a new search; a later page is appended below the results shown ("Load more").
// ``push``: false when the search comes from the URL (Back, Forward, a shared link).
async function runSearch(query, label, { page = 0, push = true } = {}) {
  state.lastQuery = { query, label };
  state.page = page;
  const body = { ...query, k: PAGE_SIZE, offset: page * PAGE_SIZE };
  if (query.text && $("mode").value) body.mode = $("mode").value;
  const sort = $("sort").value;
  if (sort) body.sort = [{ field: sort.replace(/^-/, ""), order: sort.startsWith("-") ? "desc" : "asc" }];
  state.lastBody = body;
  if (Object.keys(state.filters).length) body.filters = { ...state.filters };
  if (state.facetsSupported) body.facets = ["category", ...state.attributeKeys].slice(0, 8);
  if (push) document.dispatchEvent(new CustomEvent("vitrine:search", { detail: { query, label, page } }));
  setStatus("Searching…");
  try {
    const answer = await api("/search", { method: "POST", json: body });
    renderResults(answer, label, page > 0);
    const shown = $("results").children.length;
    const total = answer.total !== undefined ? ` of ${answer.total}` : "";
    setStatus(`${shown}${total} result${shown === 1 ? "" : "s"} in ${Math.round(answer.took_ms)} ms`);
    // A full page may have more behind it; a sorted answer says how many exactly.
    const more = answer.total !== undefined ? shown < answer.total : answer.results.length === PAGE_SIZE;
    $("more").hidden = !more;
  } catch (error) {
    if (error.status !== 401) setStatus(error.message, true);
  }
}

function renderResults(answer, label, append = false) {
  if (!append) { releaseBlobs(); state.topScore = answer.results.length ? answer.results[0].score : null; }
  $("summary").textContent = label;
  $("landing").hidden = true;
  const keys = new Set(state.attributeKeys);
  const cards = answer.results.map((hit) => {
    Object.keys(hit.attributes || {}).forEach((key) => keys.add(key));
    return card(hit);
  });
  state.attributeKeys = [...keys];
  if (append) $("results").append(...cards); else $("results").replaceChildren(...cards);
  renderFacets(answer.facets);
  document.dispatchEvent(new CustomEvent("vitrine:results", { detail: { answer, append } }));
}

// How well a result matches, for a person: its score against the best result's (100% for the first),
// in words and a bar; the raw scores stay on hover (and in the API).
function relevance(hit) {
  const element = document.createElement("span");
  element.className = "score";
  if (hit.score === undefined) return element;  // a listing (the landing page): no query to match
  const share = state.topScore > 0 && hit.score > 0 ? Math.min(1, hit.score / state.topScore) : null;
  const words = share === null ? "match" : share >= 0.9 ? "best match" : share >= 0.7 ? "good match" : "weaker match";
  const meter = document.createElement("span");
  meter.className = "meter";
  meter.setAttribute("role", "meter");
  meter.setAttribute("aria-valuemin", "0");
  meter.setAttribute("aria-valuemax", "100");
  meter.setAttribute("aria-valuenow", String(share === null ? 0 : Math.round(share * 100)));
  meter.setAttribute("aria-label", "relevance");
  const fill = document.createElement("span");
  fill.style.width = `${share === null ? 0 : Math.round(share * 100)}%`;
  meter.append(fill);
  element.append(meter, ` ${words}${hit.category ? ` · ${hit.category}` : ""}`);
  const raw = [`score ${hit.score}`];
  if (hit.vector_score !== undefined) raw.push(`vector ${hit.vector_score}`);
  if (hit.lexical_score !== undefined && hit.lexical_score !== null) raw.push(`lexical ${hit.lexical_score}`);
  element.title = raw.join(" · ");
  return element;
}

function card(hit) {
  const item = document.createElement("li");
  item.className = "card";
  item.dataset.id = hit.id;
  const img = document.createElement("img");
  img.alt = hit.title || hit.id;
  // The image of the product that matched the query, not always its first one.
  const matched = hit.matched_image;
  const imageUrl = matched ? matched.url : hit.image_url;
  if (matched) img.dataset.position = String(matched.position);
  showImage(img, imageUrl, matched ? matched.image : hit.image);
  const body = document.createElement("div");
  body.className = "body";
  const title = button(hit.title || hit.id, () => openProduct(hit.id), "title");
  title.setAttribute("aria-label", `Details of ${hit.title || hit.id}`);
  const score = relevance(hit);
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(button("More like this", () => moreLikeThis(hit.id, hit.title), "more"));
  if (hit.category) actions.append(button(hit.category, () => addFilter("category", hit.category), "secondary"));
  body.append(title, score);
  const price = (hit.attributes || {}).price;
  if (price !== undefined && price !== null) {
    const tag = document.createElement("span");
    tag.className = "price";
    tag.textContent = `${Number(price).toFixed(2)}`;
    body.append(tag);
  }
  if (hit.images && hit.images.length > 1 && matched) {
    const which = document.createElement("span");
    which.className = "matched";
    which.textContent = `matched image ${matched.position + 1} of ${hit.images.length}`;
    body.append(which);
  }
  body.append(actions);
  item.append(img, body);
  // The whole card opens the product (its buttons keep their own actions).
  item.tabIndex = 0;
  item.addEventListener("click", (event) => { if (!event.target.closest("button")) openProduct(hit.id); });
  item.addEventListener("keydown", (event) => { if (event.key === "Enter" && event.target === item) openProduct(hit.id); });
  return item;
}

function button(text, onClick, className = "") {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  if (className) element.className = className;
  element.addEventListener("click", onClick);
  return element;
}

// The text box is cleared: this search is by the product's pictures, and the label says so.
function moreLikeThis(id, title) {
  $("q").value = "";
  runSearch({ product_id: id }, `Products that look like “${title || id}”`);
}

function addFilter(field, value) {
  state.filters[field] = value;
  renderFilters();
  if (state.lastQuery) runSearch(state.lastQuery.query, state.lastQuery.label);
}

$("more").addEventListener("click", () => {
  if (state.lastQuery) runSearch(state.lastQuery.query, state.lastQuery.label, { page: state.page + 1 });
});
["sort", "mode"].forEach((id) => $(id).addEventListener("change", () => {
  if (state.lastQuery) runSearch(state.lastQuery.query, state.lastQuery.label);
}));
$("filters-toggle").addEventListener("click", () => {
  const open = $("facets").classList.toggle("open");
  $("filters-toggle").setAttribute("aria-expanded", String(open));
});

function renderFilters() {
  const chips = Object.entries(state.filters).map(([field, value]) => {
    const chip = button(`${field}: ${value} ×`, () => {
      delete state.filters[field];
      renderFilters();
      if (state.lastQuery) runSearch(state.lastQuery.query, state.lastQuery.label);
    }, "chip");
    chip.setAttribute("aria-label", `Remove filter ${field} ${value}`);
    return chip;
  });
  $("filters").replaceChildren(...chips);
}

function renderFacets(facets) {
  const panel = $("facets");
  if (!facets || !Object.keys(facets).length) { panel.hidden = true; panel.replaceChildren(); return; }
  const groups = Object.entries(facets).map(([field, counts]) => {
    const group = document.createElement("div");
    const heading = document.createElement("h3");
    heading.textContent = field;
    const list = document.createElement("ul");
    Object.entries(counts).forEach(([value, count]) => {
      const entry = document.createElement("li");
      entry.append(button(`${value} (${count})`, () => addFilter(field, value)));
      list.append(entry);
    });
    group.append(heading, list);
    return group;
  });
  panel.replaceChildren(...groups);
  panel.hidden = false;
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("q").value.trim();
  if (text) runSearch({ text }, `“${text}”`);
});

// Product view ---------------------------------------------------------------------------------------

async function openProduct(id) {
  try {
    const product = await api(`/products/${encodeURIComponent(id)}`);
    $("product-title").textContent = product.title || product.id;
    $("product-meta").textContent = [product.id, product.category].filter(Boolean).join(" · ");
    const images = product.images && product.images.length
      ? product.images.map((image) => ({ url: image.url, fallback: image.image }))
      : [{ url: product.image_url, fallback: product.image }];
    $("product-images").replaceChildren(...images.map((image, i) => {
      const img = document.createElement("img");
      img.alt = `${product.title || product.id}, image ${i + 1}`;
      showImage(img, image.url, image.fallback);
      return img;
    }));
    const rows = [];
    Object.entries(product.attributes || {}).forEach(([key, value]) => {
      const term = document.createElement("dt");
      term.textContent = key;
      const detail = document.createElement("dd");
      detail.append(button(String(value), () => { $("product").close(); addFilter(key, value); }, "chip"));
      rows.push(term, detail);
    });
    $("product-attributes").replaceChildren(...rows);
    $("product-similar").onclick = () => { $("product").close(); moreLikeThis(product.id, product.title); };
    document.dispatchEvent(new CustomEvent("vitrine:product", { detail: { id: product.id, query: state.lastBody } }));
    $("product").showModal();
  } catch (error) {
    if (error.status !== 401) setStatus(error.message, true);
  }
}

// Image queries: upload, drag-and-drop, paste; an optional crop box drawn on the picture ------------

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function setQueryImage(file) {
  if (!file || !file.type.startsWith("image/")) { setStatus("That is not an image file.", true); return; }
  state.queryImage = await readAsDataUrl(file);
  state.crop = null;
  $("crop-box").hidden = true;
  $("query-image").src = state.queryImage;
  $("crop-stage").hidden = false;
  $("image-actions").hidden = false;
  searchQueryImage();
}

function croppedImage() {
  if (!state.crop) return state.queryImage;
  const picture = $("query-image");
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(state.crop.w));
  canvas.height = Math.max(1, Math.round(state.crop.h));
  canvas.getContext("2d").drawImage(picture, state.crop.x, state.crop.y, state.crop.w, state.crop.h, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/png");
}

function searchQueryImage() {
  if (state.queryImage) runSearch({ image: croppedImage() }, state.crop ? "Image (cropped)" : "Image");
}

function imagesFrom(dataTransfer) {
  return [...(dataTransfer ? dataTransfer.files : [])].filter((file) => file.type.startsWith("image/"));
}

$("image-pick").addEventListener("click", () => $("image-file").click());
$("image-file").addEventListener("change", () => setQueryImage($("image-file").files[0]));
$("image-search").addEventListener("click", searchQueryImage);
$("crop-reset").addEventListener("click", () => { state.crop = null; $("crop-box").hidden = true; searchQueryImage(); });
$("image-clear").addEventListener("click", () => {
  state.queryImage = null; state.crop = null;
  $("crop-stage").hidden = true; $("image-actions").hidden = true; $("image-file").value = "";
});

function dropTarget(zone, onFile) {
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const [file] = imagesFrom(event.dataTransfer);
    if (file) onFile(file);
  });
}
dropTarget($("drop"), setQueryImage);

(function cropBox() {
  const picture = $("query-image");
  const box = $("crop-box");
  let origin = null;
  const point = (event) => {
    const rect = picture.getBoundingClientRect();
    return {
      x: Math.min(Math.max(event.clientX - rect.left, 0), rect.width),
      y: Math.min(Math.max(event.clientY - rect.top, 0), rect.height),
    };
  };
  picture.addEventListener("dragstart", (event) => event.preventDefault());
  picture.addEventListener("pointerdown", (event) => {
    origin = point(event);
    picture.setPointerCapture(event.pointerId);
  });
  picture.addEventListener("pointermove", (event) => {
    if (!origin) return;
    const here = point(event);
    Object.assign(box.style, {
      left: `${Math.min(origin.x, here.x)}px`, top: `${Math.min(origin.y, here.y)}px`,
      width: `${Math.abs(here.x - origin.x)}px`, height: `${Math.abs(here.y - origin.y)}px`,
    });
    box.hidden = false;
  });
  picture.addEventListener("pointerup", (event) => {
    if (!origin) return;
    const here = point(event);
    const scale = picture.naturalWidth / picture.clientWidth;
    const w = Math.abs(here.x - origin.x), h = Math.abs(here.y - origin.y);
    if (w > 8 && h > 8) {
      state.crop = { x: Math.min(origin.x, here.x) * scale, y: Math.min(origin.y, here.y) * scale, w: w * scale, h: h * scale };
      searchQueryImage();
    } else {
      box.hidden = true;
    }
    origin = null;
  });
})();

// Zero-shot playground -------------------------------------------------------------------------------

let zeroShotImage = null;

async function setZeroShotImage(file) {
  if (!file || !file.type.startsWith("image/")) return;
  zeroShotImage = await readAsDataUrl(file);
  $("zs-image").src = zeroShotImage;
  $("zs-image").hidden = false;
}

$("zs-file").addEventListener("change", () => setZeroShotImage($("zs-file").files[0]));
dropTarget($("zs-drop"), setZeroShotImage);

$("zs-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const labels = $("zs-labels").value.split("\n").map((label) => label.trim()).filter(Boolean);
  if (!zeroShotImage) { setStatus("Choose an image to classify.", true); return; }
  if (!labels.length) { setStatus("Give at least one label.", true); return; }
  try {
    const scores = await api("/", {
      method: "POST",
      json: { inputs: zeroShotImage, parameters: { candidate_labels: labels, multi_label: $("zs-multi").checked } },
    });
    $("zs-bars").replaceChildren(...scores.map(({ label, score }) => {
      const item = document.createElement("li");
      const text = document.createElement("div");
      text.textContent = `${label} — ${(score * 100).toFixed(1)}%`;
      const track = document.createElement("div");
      track.className = "track";
      track.setAttribute("role", "meter");
      track.setAttribute("aria-label", label);
      track.setAttribute("aria-valuemin", "0");
      track.setAttribute("aria-valuemax", "1");
      track.setAttribute("aria-valuenow", String(score));
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = `${Math.max(score * 100, 0.5)}%`;
      track.append(fill);
      item.append(text, track);
      return item;
    }));
    setStatus(`${labels.length} labels scored`);
  } catch (error) {
    if (error.status !== 401) setStatus(error.message, true);
  }
});

// Views, paste, keyboard -----------------------------------------------------------------------------

function showView(name) {
  document.querySelectorAll(".tab[data-view]").forEach((tab) => tab.setAttribute("aria-pressed", String(tab.dataset.view === name)));
  $("view-search").hidden = name !== "search";
  $("view-zeroshot").hidden = name !== "zeroshot";
}
document.querySelectorAll(".tab[data-view]").forEach((tab) => tab.addEventListener("click", () => showView(tab.dataset.view)));

document.addEventListener("paste", (event) => {
  const [file] = imagesFrom(event.clipboardData);
  if (!file) return;
  event.preventDefault();
  if ($("view-zeroshot").hidden) setQueryImage(file); else setZeroShotImage(file);
});

document.addEventListener("keydown", (event) => {
  const typing = ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (event.key === "/" && !typing) { event.preventDefault(); showView("search"); $("q").focus(); }
});

document.querySelector("main").hidden = true;
start();
