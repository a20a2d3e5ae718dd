// Progressive enhancement: pages work without it.
// 1. Elements with data-refresh="URL" reload their content from URL every data-every seconds.
//    A runs list stops refreshing once nothing in it runs (so an opened traceback stays open).
// 2. The schedule form shows Day of Week / Day of Month only for the frequency that needs it.
"use strict";

function refresh(el) {
  const every = 1000 * (parseFloat(el.dataset.every) || 3);
  const note = document.querySelector("[data-refresh-note]");
  const keepGoing = el.id !== "runs";  // the cluster page always refreshes
  async function tick() {
    try {
      const response = await fetch(el.dataset.refresh, {headers: {"X-Requested-With": "dashboard"},
                                                          credentials: "same-origin", cache: "no-store"});
      if (response.status === 401) { window.location.reload(); return; }  // logged out: show the login
      if (!response.ok) throw new Error("HTTP " + response.status);
      el.innerHTML = await response.text();
      el.dataset.updated = String(Date.now());
      if (note) note.textContent = "Updated " + new Date().toISOString().slice(11, 19) + " UTC; refreshes every " + every / 1000 + " s.";
      if (!keepGoing && !el.querySelector("[data-running]")) return;
    } catch (err) {
      if (note) note.textContent = "Cannot reach the dashboard (" + err.message + "); trying again.";
    }
    setTimeout(tick, every);
  }
  setTimeout(tick, every);
}

function scheduleForm(form) {
  const freq = form.querySelector("select[name=schedule_frequency]");
  function show() {
    for (const input of form.querySelectorAll("[data-for]")) {
      input.closest(".field").hidden = input.dataset.for !== freq.value;
    }
  }
  freq.addEventListener("change", show);
  show();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refresh);
  const form = document.querySelector("form.schedule");
  if (form) scheduleForm(form);
});
