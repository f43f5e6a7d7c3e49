// bgjobs console: live refresh of <main>, and data-action buttons that POST to the API with the
// CSRF token. Plain JavaScript, shipped in the wheel; nothing is loaded from elsewhere.
"use strict";

(function () {
  const main = () => document.getElementById("main");

  function cookie(name) {
    const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
    return found ? decodeURIComponent(found.split("=").slice(1).join("=")) : "";
  }

  function toast(text, bad) {
    const box = document.getElementById("toast");
    if (!box) return;
    box.textContent = text;
    box.className = "show " + (bad ? "bad" : "good");
    clearTimeout(box._hide);
    box._hide = setTimeout(() => { box.className = ""; }, 6000);
  }

  let busy = false;

  async function refresh() {
    const area = main();
    if (!area || busy || document.visibilityState !== "visible") return;
    // Never pull the page from under a person: not while they type, select or a dialog is open.
    const active = document.activeElement;
    if (active && area.contains(active) && /INPUT|SELECT|TEXTAREA/.test(active.tagName)) return;
    if (area.querySelector("input[type=checkbox]:checked")) return;
    try {
      const answer = await fetch(location.href, { headers: { "X-Bgjobs-Fragment": "1" }, credentials: "same-origin" });
      if (answer.ok) area.innerHTML = await answer.text();
    } catch (err) {
      // the console restarted or the network blinked: the next tick tries again
    }
  }

  function argsOf(text) {
    const args = {};
    for (const line of text.split("\n")) {
      const at = line.indexOf("=");
      if (at > 0) args[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return args;
  }

  function request(button) {
    let url = button.dataset.action;
    let body = button.dataset.body ? JSON.parse(button.dataset.body) : {};
    if (button.dataset.selection) {
      const ids = [...document.querySelectorAll(`input[name="${button.dataset.selection}"]:checked`)].map((i) => i.value);
      if (!ids.length) { toast("Select at least one row first.", true); return null; }
      body = { ids };
    }
    if (button.dataset.form) {
      const form = document.getElementById(button.dataset.form);
      const data = new FormData(form);
      url = url.replace("{job}", encodeURIComponent(data.get("job")));
      body = { args: argsOf(String(data.get("args") || "")) };
    }
    return { url, body };
  }

  async function act(button) {
    const made = request(button);
    if (!made) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const label = button.textContent;
    button.disabled = true;
    button.textContent = label + "…";
    button.setAttribute("aria-busy", "true");
    busy = true;
    try {
      const answer = await fetch(made.url, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": cookie("bgjobs_csrf") },
        body: JSON.stringify(made.body),
      });
      const result = await answer.json().catch(() => ({ error: answer.statusText }));
      if (answer.ok) {
        toast(label + ": " + Object.entries(result).filter(([, v]) => typeof v !== "object").map(([k, v]) => `${k} ${v}`).join(", "), false);
      } else {
        toast(label + " refused: " + (result.error || answer.status), true);
      }
    } catch (err) {
      toast(label + " failed: " + err, true);
    } finally {
      button.disabled = false;
      button.textContent = label;
      button.removeAttribute("aria-busy");
      busy = false;
      document.querySelectorAll("input[type=checkbox]:checked").forEach((i) => { i.checked = false; });
      refresh();
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (button) { event.preventDefault(); act(button); }
  });
  document.addEventListener("change", (event) => {
    const all = event.target.closest("[data-select-all]");
    if (all) document.querySelectorAll(`input[name="${all.dataset.selectAll}"]`).forEach((i) => { i.checked = all.checked; });
  });
  document.addEventListener("DOMContentLoaded", () => {
    const every = Number(main() && main().dataset.live) || 3000;
    setInterval(refresh, every);
  });
})();
