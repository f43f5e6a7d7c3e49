// bgjobs console: live refresh of <main> (never of a form: what a person types stays), a freshness
// marker that says when the data was last updated or that it is stale, and data-action buttons that
// POST to the API with the CSRF token. Plain JavaScript, shipped in the wheel; nothing is loaded
// from elsewhere.
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
  let leaving = false; // set once an action sends the page elsewhere: nothing refreshes meanwhile
  const live = { on: localStorage.getItem("bgjobs-live") !== "off", updated: Date.now(), failed: null, count: 0 };
  // A page served without its data (Redis down) is stale from the start, not "updated 0 s ago".
  document.addEventListener("DOMContentLoaded", () => { if (main() && main().dataset.stale) live.failed = Date.now(); });
  document.addEventListener("DOMContentLoaded", () => {
    const said = sessionStorage.getItem("bgjobs-toast");
    if (said) { sessionStorage.removeItem("bgjobs-toast"); toast(said, false); }
  });

  // Put the fresh page in place, keeping every form of the current one as it is (the values typed
  // or chosen in it): a refresh replaces what the console shows, never what a person is entering.
  function swap(area, html) {
    const fresh = document.createElement("div");
    fresh.innerHTML = html;
    const kept = [...area.querySelectorAll("form")];
    [...fresh.querySelectorAll("form")].forEach((form, i) => {
      const old = (form.id && kept.find((k) => k.id === form.id)) || kept[i];
      if (old) form.replaceWith(old);
    });
    area.replaceChildren(...fresh.childNodes);
  }

  function showFreshness() {
    const marker = document.getElementById("freshness");
    if (!marker) return;
    const ago = (t) => Math.max(0, Math.round((Date.now() - t) / 1000));
    if (live.failed !== null) {
      marker.textContent = `stale: not updated for ${ago(live.updated)} s (the last refresh failed)`;
      marker.className = "freshness bad";
    } else {
      marker.textContent = (live.on ? "live · " : "paused · ") + `updated ${ago(live.updated)} s ago`;
      marker.className = "freshness";
    }
    const toggle = document.getElementById("live-toggle");
    if (toggle) toggle.textContent = live.on ? "Pause live refresh" : "Resume live refresh";
  }

  async function refresh(force) {
    const area = main();
    if (!area || busy || leaving || (!live.on && !force) || document.visibilityState !== "visible") return;
    // Never pull the page from under a person: not while they type, select or a dialog is open.
    const active = document.activeElement;
    if (active && area.contains(active) && /INPUT|SELECT|TEXTAREA/.test(active.tagName)) return;
    if (area.querySelector("input[type=checkbox]:checked")) return;
    try {
      const answer = await fetch(location.href, { headers: { "X-Bgjobs-Fragment": "1" }, credentials: "same-origin" });
      if (!answer.ok) throw new Error(String(answer.status));
      swap(area, await answer.text());
      live.updated = Date.now();
      live.failed = null;
      live.count += 1;
      document.body.dataset.refreshed = String(live.count);
    } catch (err) {
      live.failed = Date.now(); // the console restarted, the network blinked, or a check failed
    }
    showFreshness();
  }

  function argsOf(text) {
    const args = {};
    for (const line of text.split("\n")) {
      const at = line.indexOf("=");
      if (at > 0) args[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return args;
  }

  // What an answer says in a toast: its counts and outcome, not every field of the object it returns.
  const TOLD = ["message_id", "job", "selected", "requeued", "purged", "queued", "skipped", "deliveries",
    "status", "health", "paused", "disabled_reason", "payout_id"];
  function summary(result) {
    const scalar = Object.entries(result).filter(([, v]) => v === null || typeof v !== "object");
    const told = scalar.filter(([k]) => TOLD.includes(k));
    return (told.length ? told : scalar.slice(0, 3)).map(([k, v]) => `${k} ${v}`).join(", ") || "done";
  }

  function request(button) {
    let url = button.dataset.action;
    let body = button.dataset.body ? JSON.parse(button.dataset.body) : {};
    if (button.dataset.selection) {
      const ids = [...document.querySelectorAll(`input[name="${button.dataset.selection}"]:checked`)].map((i) => i.value);
      if (!ids.length) { toast("Select at least one row first.", true); return null; }
      body = { ids };
    }
    let confirm = button.dataset.confirm;
    if (button.dataset.form && document.getElementById(button.dataset.form).hasAttribute("data-fields")) {
      // A form of plain fields: the filled ones are the body, as the API names them
      body = {};
      for (const [name, value] of new FormData(document.getElementById(button.dataset.form))) {
        if (String(value).trim()) body[name] = String(value).trim();
      }
      if (!Object.keys(body).length) { toast("Fill in at least one field first.", true); return null; }
    } else if (button.dataset.form) {
      const form = document.getElementById(button.dataset.form);
      const data = new FormData(form);
      const job = String(data.get("job"));
      url = url.replace("{job}", encodeURIComponent(job));
      body = { args: argsOf(String(data.get("args") || "")) };
      const args = Object.entries(body.args).map(([k, v]) => `${k}=${v}`).join(" ");
      confirm = `Run ${job} ${args ? "with " + args : "with no arguments"}?`;
    }
    return { url, body, confirm };
  }

  // A bulk requeue or purge of many letters takes a while: say how far it is on its button.
  async function followProgress(button, label) {
    try {
      const answer = await fetch(button.dataset.progress, { credentials: "same-origin" });
      const found = (await answer.json()).operations || [];
      const action = label.toLowerCase().startsWith("purge") ? "purge" : "requeue";
      const op = found.filter((o) => o.action === action).pop();
      if (op && button.disabled) {
        const of = op.total === null ? "" : ` of ${op.total.toLocaleString()}`;
        button.textContent = `${label}… ${op.done.toLocaleString()}${of}`;
      }
    } catch (err) { /* the answer to the action itself says what happened */ }
  }

  async function act(button) {
    const made = request(button);
    if (!made) return;
    if (made.confirm && !window.confirm(made.confirm)) return;
    const label = button.textContent;
    button.disabled = true;
    button.textContent = label + "…";
    button.setAttribute("aria-busy", "true");
    busy = true;
    const watch = button.dataset.progress ? setInterval(() => followProgress(button, label), 500) : null;
    try {
      const answer = await fetch(made.url, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": cookie("bgjobs_csrf") },
        body: JSON.stringify(made.body),
      });
      const result = await answer.json().catch(() => ({ error: answer.statusText }));
      if (answer.ok && button.dataset.then) {
        // The action removed what this page shows (a dead letter requeued from its own page):
        // go where it leads, and say what happened there, instead of refreshing into a 404.
        sessionStorage.setItem("bgjobs-toast", label + ": " + summary(result));
        leaving = true;
        location.assign(button.dataset.then);
        return;
      } else if (answer.ok) {
        toast(label + ": " + summary(result), false);
      } else {
        toast(label + " refused: " + (result.error || answer.status), true);
      }
    } catch (err) {
      toast(label + " failed: " + err, true);
    } finally {
      if (watch) clearInterval(watch);
      button.disabled = false;
      button.textContent = label;
      button.removeAttribute("aria-busy");
      busy = false;
      document.querySelectorAll("input[type=checkbox]:checked").forEach((i) => { i.checked = false; });
      refresh(true);
    }
  }

  document.addEventListener("click", (event) => {
    if (event.target.closest("#live-toggle")) {
      live.on = !live.on;
      localStorage.setItem("bgjobs-live", live.on ? "on" : "off");
      showFreshness();
      return;
    }
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
    setInterval(showFreshness, 1000);
    showFreshness();
  });
})();
