// The SSE parser against the WHATWG rules (HTML §9.2.6), fed in every
// possible split so that chunk boundaries never change what is parsed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SSEParser } from "../dist/index.js";

function parse(chunks, lastEventId = "") {
  const events = [];
  const retries = [];
  const p = new SSEParser((ev) => events.push(ev), (ms) => retries.push(ms), lastEventId);
  for (const c of chunks) p.push(c);
  return { events, retries, lastEventId: p.lastEventId };
}

// Every split of text into two chunks, and one char at a time, parse the same.
function parseAllSplits(text) {
  const whole = parse([text]);
  for (let i = 0; i <= text.length; i++) {
    assert.deepEqual(parse([text.slice(0, i), text.slice(i)]), whole, `split at ${i}`);
  }
  assert.deepEqual(parse([...text]), whole, "one character at a time");
  return whole;
}

const msg = (data, lastEventId, type = "message") => ({ type, data, lastEventId });

test("LF, CRLF and CR all end lines, even split across chunks", () => {
  for (const nl of ["\n", "\r\n", "\r"]) {
    const { events } = parseAllSplits(`id: 1${nl}data: a${nl}${nl}data: b${nl}${nl}`);
    assert.deepEqual(events, [msg("a", "1"), msg("b", "1")], JSON.stringify(nl));
  }
  // Mixed in one stream.
  const { events } = parseAllSplits("data: a\r\n\rdata: b\n\r\n");
  assert.deepEqual(events, [msg("a", ""), msg("b", "")]);
});

test("multi-line data joins with LF; one leading space is stripped, no more", () => {
  const { events } = parseAllSplits("data: one\ndata:two\ndata:  three\ndata\ndata:\n\n");
  assert.deepEqual(events, [msg("one\ntwo\n three\n\n", "")]);
});

test("comments, unknown fields and a leading BOM are ignored", () => {
  const { events } = parseAllSplits("\uFEFF: ping\nfoo: bar\ndata: x\n: another\n\n: ping\n\n");
  assert.deepEqual(events, [msg("x", ""), msg(undefined, "")]);
  // Only one BOM, only at the very start.
  assert.deepEqual(parse(["\uFEFF\uFEFFdata: y\n\n"]).events, [msg(undefined, "")], "a second BOM makes a field name");
});

test("id persists until the next one; an id without data still moves lastEventId", () => {
  const { events, lastEventId } = parseAllSplits("id: 7.1\n\ndata: a\n\nid: 7.2\ndata: b\n\nid\n\ndata: c\n\n");
  assert.deepEqual(events, [msg(undefined, "7.1"), msg("a", "7.1"), msg("b", "7.2"), msg(undefined, ""), msg("c", "")]);
  assert.equal(lastEventId, "");
});

test("an id containing NUL is ignored", () => {
  const { events } = parse(["id: 1\n\nid: 2\u00003\ndata: a\n\n"]);
  assert.deepEqual(events, [msg(undefined, "1"), msg("a", "1")]);
});

test("retry takes ASCII digits only", () => {
  const { retries } = parseAllSplits("retry: 2000\n\nretry: 1.5\nretry: -1\nretry: x\nretry:30\n\n");
  assert.deepEqual(retries, [2000, 30]);
});

test("event names the type; it resets after each dispatch", () => {
  const { events } = parseAllSplits("event: add\ndata: a\n\ndata: b\n\nevent: only\n\n");
  assert.deepEqual(events, [msg("a", "", "add"), msg("b", ""), msg(undefined, "", "only")]);
});

test("an event not ended by a blank line is never dispatched", () => {
  const { events, lastEventId } = parse(["data: a\n\nid: 9\ndata: partial\n"]);
  assert.deepEqual(events, [msg("a", "")]);
  assert.equal(lastEventId, "", "the pending id was not dispatched");
});

test("reset drops a half-read event; the last event ID survives", () => {
  const events = [];
  const p = new SSEParser((ev) => events.push(ev), undefined, "5.0");
  p.push("id: 5.1\ndata: a\n\nid: 5.2\ndata: cut");
  p.reset();
  p.push("data: b\n\n");
  assert.deepEqual(events, [msg("a", "5.1"), msg("b", "5.1")]);
});

test("a long line in many chunks parses whole", () => {
  const big = "x".repeat(1 << 20);
  const chunks = ["id: 1\ndata: "];
  for (let i = 0; i < big.length; i += 4096) chunks.push(big.slice(i, i + 4096));
  chunks.push("\r", "\n", "\r\n");
  const { events } = parse(chunks);
  assert.equal(events.length, 1);
  assert.equal(events[0].data, big);
});
