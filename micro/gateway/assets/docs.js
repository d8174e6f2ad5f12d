// The docs page: one section per route of openapi.json, each with a form that sends
// a JSON request (unary and server-streaming calls; streams show every line).
"use strict";

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, attributes);
  node.append(...children);
  return node;
}

// The request a form's JSON means for a route: {variables} of the path from its
// fields (a dotted name reads nested ones), the other top-level fields as the body,
// or as query parameters for GET and DELETE.
function request(verb, path, text) {
  const data = JSON.parse(text || "{}");
  const used = new Set();
  const url = path.replace(/\{([^}]+)\}/g, (_, name) => {
    used.add(name);
    const value = name.split(".").reduce((at, key) => (at == null ? undefined : at[key]), data);
    return String(value ?? "").split("/").map(encodeURIComponent).join("/");
  });
  const rest = Object.fromEntries(Object.entries(data).filter(([key]) => !used.has(key)));
  const init = { method: verb, headers: { "content-type": "application/json" } };
  if (verb !== "GET" && verb !== "DELETE") {
    init.body = JSON.stringify(rest);
    return [url, init];
  }
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(rest)) {
    for (const one of [].concat(value)) query.append(key, String(one));
  }
  return [query.size ? `${url}?${query}` : url, init];
}

async function send(verb, path, text, answer) {
  answer.textContent = "…";
  try {
    const [url, init] = request(verb, path, text);
    const response = await fetch(url.replace(/^\//, ""), init);
    answer.textContent = response.status + " " + (await response.text());
    answer.dataset.status = String(response.status);
  } catch (error) {
    answer.textContent = String(error);
    answer.dataset.status = "error";
  }
}

function section(path, verb, operation) {
  const answer = element("pre", { className: "answer" });
  const body = element("textarea", { rows: 3, value: "{}" });
  const button = element("button", { type: "button", textContent: "Send" });
  button.addEventListener("click", () => send(verb.toUpperCase(), path, body.value, answer));
  const title = element("h2", {},
    element("span", { className: "verb", textContent: verb.toUpperCase() }), path);
  if (operation.deprecated) title.append(element("span", { className: "badge", textContent: "deprecated" }));
  const part = element("section", { id: operation.operationId }, title,
    element("p", { textContent: operation.description || operation.summary }));
  if (operation.deprecated) part.classList.add("deprecated");
  if (!operation.description || !operation.description.startsWith("Client streaming")) {
    part.append(body, button, answer);
  }
  return part;
}

async function main() {
  const operations = document.getElementById("operations");
  const spec = await (await fetch("openapi.json")).json();
  operations.textContent = "";
  for (const [path, verbs] of Object.entries(spec.paths)) {
    for (const [verb, operation] of Object.entries(verbs)) {
      operations.append(section(path, verb, operation));
    }
  }
  if (!operations.children.length) operations.textContent = "No service is registered.";
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  document.getElementById("operations").textContent = "could not load openapi.json: " + error;
});
