/* What the map and the planner share: elements built without HTML (every string from the data
   becomes text, never markup), links only to http(s) URLs, and JSON requests with the API's error
   shape. An ES module, served as it is. */

/** An element with a class name (a string) or attributes ({class, text, name: value…}) and
    children; strings become text nodes, null and false are left out. */
export function el(tag, props, ...kids) {
  const node = document.createElement(tag);
  if (typeof props === "string") node.className = props;
  else {
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
  }
  for (const kid of kids) if (kid != null && kid !== false) node.append(kid);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element with attributes ({text, name: value…}) and children, as `el` builds HTML
    ones: a string from the data becomes text, never markup. */
export function svg(tag, props, ...kids) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const kid of kids) if (kid != null && kid !== false) node.append(kid);
  return node;
}

/** The href if it is an absolute http(s) URL, else null (javascript:, data:, garbage). */
export function safeHref(href) {
  try {
    const url = new URL(href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch (e) {
    return null;
  }
}

/** A link that opens elsewhere, or plain text when the href is not a safe one. */
export function link(href, text) {
  const ok = safeHref(href);
  if (!ok) return el("span", null, text);
  const a = el("a", null, text);
  a.href = ok;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  return a;
}

/** GET a JSON document. A refusal throws an Error whose message is the API's `message` (or the
    status line) and whose `status` is the HTTP status; `onResponse` sees the response first.
    Other fetch options (signal, cache) pass through. */
export async function getJSON(url, { onResponse, ...init } = {}) {
  const response = await fetch(url, { ...init, headers: { Accept: "application/json" } });
  if (onResponse) onResponse(response);
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    if (response.ok) throw e; // a refusal that is not JSON falls back to its status line
  }
  if (!response.ok) {
    const error = new Error((body && body.message) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}
