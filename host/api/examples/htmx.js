// The example page's own script: the page's CSP allows no inline script and
// no eval, so what htmx attributes cannot say lives here.
"use strict";

// Once the timeline's first page is in, connect its live part from where the
// page was listed (the Logline-Cursor the server answered: the ledger's tail
// as read before listing), so no span that commits meanwhile is missed.
document.addEventListener("htmx:afterSwap", (e) => {
  if (!e.detail.elt || e.detail.elt.id !== "rows") return;
  const live = document.getElementById("live");
  if (!live || live.hasAttribute("sse-connect")) return;
  const cur = e.detail.xhr.getResponseHeader("Logline-Cursor");
  live.setAttribute("sse-connect", "/ssr/timeline/stream" + (cur ? "?cursor=" + encodeURIComponent(cur) : ""));
  htmx.process(live);
});

// A span that committed between reading the tail and listing comes in both:
// keep the listed row and drop the streamed one (the event id is the cursor).
document.addEventListener("htmx:sseBeforeMessage", (e) => {
  const id = e.detail && e.detail.lastEventId;
  if (id && document.querySelector('tr[data-cursor="' + CSS.escape(id) + '"]')) e.preventDefault();
});

// Signed in: forget the token the form holds.
document.addEventListener("htmx:afterRequest", (e) => {
  if (e.detail.elt && e.detail.elt.id === "signin" && e.detail.successful) e.detail.elt.reset();
});
