// Sign-in, tabs and routing (by #hash). Views live in tenant.js and operator.js.

import { api, saveSession, session } from "./api.js";
import { clear, el } from "./dom.js";
import { TENANT_VIEWS } from "./tenant.js";
import { OPERATOR_VIEWS } from "./operator.js";

const main = document.getElementById("main");
let stopView = null; // a view's cleanup (timers) when another is shown

function views() {
  const s = session();
  return s ? (s.role === "operator" ? OPERATOR_VIEWS : TENANT_VIEWS) : null;
}

function signIn() {
  const error = el("p", { class: "error", role: "alert" });
  const key = el("input", { type: "password", name: "key", autocomplete: "off", required: true });
  const role = el("select", { name: "role" },
    el("option", { value: "tenant" }, "Tenant (API key)"), el("option", { value: "operator" }, "Operator (admin key)"));
  const form = el("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      try {
        await api(role.value === "operator" ? "/admin/workers" : "/v1/models", { key: key.value });
        saveSession({ role: role.value, key: key.value });
        location.hash = "";
        render();
      } catch (err) {
        error.textContent = err.status === 401 || err.status === 403 ? "That key was not accepted." : err.message;
      }
    },
  }, el("label", {}, "Sign in as", role), el("label", {}, "Key", key), el("button", { type: "submit" }, "Sign in"), error);
  clear(main).append(el("section", {}, el("h2", {}, "Sign in"),
    el("p", { class: "muted" }, "The key stays in this browser tab (session storage) and is sent only to this server."), form));
}

function render() {
  if (stopView) { stopView(); stopView = null; }
  const tabs = document.getElementById("tabs");
  const who = document.getElementById("who");
  const signout = document.getElementById("signout");
  const all = views();
  clear(tabs);
  if (!all) { who.textContent = ""; signout.hidden = true; signIn(); return; }
  const names = Object.keys(all);
  const current = names.includes(location.hash.slice(1)) ? location.hash.slice(1) : names[0];
  for (const name of names) {
    tabs.append(el("a", { href: `#${name}`, "aria-current": name === current ? "page" : false }, all[name].title));
  }
  who.textContent = session().role === "operator" ? "operator" : "tenant";
  signout.hidden = false;
  clear(main);
  stopView = all[current].show(main) || null;
}

document.getElementById("signout").addEventListener("click", () => { saveSession(null); location.hash = ""; render(); });
window.addEventListener("hashchange", render);
render();
