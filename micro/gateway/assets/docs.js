// The docs page: one section per route of openapi.json, each with a form that sends
// its JSON body (unary and server-streaming calls; streams show every line).
"use strict";

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, attributes);
  node.append(...children);
  return node;
}

async function send(verb, path, body, answer) {
  answer.textContent = "…";
  const init = { method: verb, headers: { "content-type": "application/json" } };
  if (verb !== "GET" && verb !== "DELETE") init.body = body;
  const response = await fetch(path.replace(/^\//, ""), init);
  answer.textContent = response.status + " " + (await response.text());
  answer.dataset.status = String(response.status);
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
