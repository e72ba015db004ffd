// The rater's page: one pair at a time, three criteria, left / tie / right. A submission is kept in localStorage
// until the server acknowledges it and is re-sent (same client_id, so it counts once) after a reload or an outage.
"use strict";

const token = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const api = `/api/rater/${encodeURIComponent(token)}`;
const pendingKey = `infinity-preference:pending:${token}`;
const $ = (id) => document.getElementById(id);
let current = null;

function setState(state, text, isError = false) {
  document.body.dataset.state = state;
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function clientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function call(path, options = {}) {
  const response = await fetch(api + path, { cache: "no-store", ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((body.error && body.error.message) || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function buildCriteria() {
  for (const row of document.querySelectorAll(".criterion")) {
    const name = row.dataset.criterion;
    for (const side of ["left", "tie", "right"]) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      Object.assign(input, { type: "radio", name, value: side });
      input.dataset.testid = `${name}-${side}`;
      input.addEventListener("change", () => {
        $("submit").disabled = !["overall", "prompt", "aesthetics"].every(
          (c) => document.querySelector(`input[name=${c}]:checked`));
      });
      label.append(input, side === "tie" ? "Tie" : side[0].toUpperCase() + side.slice(1));
      row.append(label);
    }
  }
}

async function flushPending() {
  const stored = localStorage.getItem(pendingKey);
  if (!stored) return;
  const pending = JSON.parse(stored);
  for (;;) {
    try {
      setState("saving", "saving your answer…");
      await call("/votes", { method: "POST", headers: { "content-type": "application/json" }, body: stored });
      localStorage.removeItem(pendingKey);
      return pending;
    } catch (error) {
      if (error.status && error.status < 500) {  // rejected for good (e.g. already rated): nothing to retry
        localStorage.removeItem(pendingKey);
        return pending;
      }
      setState("retrying", "cannot reach the server; retrying…", true);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

async function loadNext() {
  await flushPending();
  for (;;) {
    try {
      current = await call("/next");
      break;
    } catch (error) {
      if (error.status && error.status < 500) { setState("error", error.message, true); return; }
      setState("retrying", "cannot reach the server; retrying…", true);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  $("rated").textContent = String(current.rated);
  if (current.done) {
    $("task").hidden = true;
    setState("done", "All pairs are rated. Thank you!");
    return;
  }
  $("form").reset();
  $("submit").disabled = true;
  $("prompt").textContent = current.prompt;
  const loaded = Promise.all(["left", "right"].map((side) => new Promise((resolve) => {
    $(side).onload = resolve;
    $(side).onerror = resolve;
    $(side).src = current[side];
  })));
  $("task").hidden = false;
  await loaded;
  setState("rating", "Compare the two images for each question, then submit.");
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const choices = {};
  for (const c of ["overall", "prompt", "aesthetics"]) {
    choices[c] = document.querySelector(`input[name=${c}]:checked`).value;
  }
  $("submit").disabled = true;
  localStorage.setItem(pendingKey, JSON.stringify({ assignment: current.assignment, client_id: clientId(), choices }));
  await loadNext();
});

buildCriteria();
loadNext();
