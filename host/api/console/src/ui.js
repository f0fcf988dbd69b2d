// Shared bits of the views: htm bound to preact, formatting, errors.
import { h } from "preact";
import htm from "htm";
import { ProblemError, expired } from "./session.js";

export const html = htm.bind(h);

export function errorText(err) {
  if (err instanceof ProblemError) {
    const where = err.field ? ` (${err.field})` : "";
    return `${err.status} ${err.code || ""}${where}: ${err.problem?.detail || err.message}`;
  }
  return String(err?.message || err);
}

// report shows err where the view wants it and signs out on a 401.
export function report(set) {
  return (err) => {
    expired(err);
    set(errorText(err));
  };
}

export function ErrorLine({ text }) {
  return text ? html`<p class="error" role="alert">${text}</p>` : null;
}

export function time(at) {
  if (!at) return "";
  const d = new Date(at);
  return isNaN(d) ? at : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// short is the end of an id: a UUIDv7 begins with its timestamp, the same for
// spans appended together.
export function short(id) {
  return id ? id.slice(-8) : "";
}

export function json(v) {
  return v === undefined ? "" : JSON.stringify(v, null, 2);
}

// latest keeps each id's highest seq of a listing's items.
export function latest(items) {
  const by = new Map();
  for (const { span } of items) {
    const had = by.get(span.id);
    if (!had || had.seq < span.seq) by.set(span.id, span);
  }
  return [...by.values()];
}
