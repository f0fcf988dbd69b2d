// A Server-Sent Events parser that follows the WHATWG HTML standard's
// "event stream interpretation" (§9.2.6), for a stream read with fetch:
// EventSource cannot send an Authorization header, so the client reads
// text/event-stream itself. Pure: no I/O, no timers; fed decoded text.

/** One dispatched event. */
export interface SSEEvent {
  /** The event type: "message" unless an event: field named another. */
  type: string;
  /**
   * The data fields joined by "\n"; undefined when there was no data field,
   * for which the spec fires no event: only its id counts.
   */
  data: string | undefined;
  /**
   * The last event ID after this event: the stream's id so far (an id:
   * field persists until the next one), as EventSource's lastEventId.
   */
  lastEventId: string;
}

/**
 * Parses an event stream incrementally. push() takes text as it arrives
 * (already UTF-8 decoded, chunks split anywhere, even inside a CRLF) and
 * calls onEvent at every blank line and onRetry for every valid retry:
 * field. A block without data still updates lastEventId (the spec sets it
 * at every dispatch) and is reported with data undefined, so a caller can
 * keep a position the server sends as an id alone. What is pending when the stream ends is discarded, as the spec
 * says: an event is only whole at its blank line.
 */
export class SSEParser {
  private partial: string[] = []; // the pieces of a line not yet ended
  private started = false;
  private pendingCR = false; // the last chunk ended in CR: a LF next belongs to it
  private data: string[] = [];
  private hasData = false;
  private type = "";
  private idBuf: string; // the last event ID buffer: id: fields so far
  private lastId: string; // the last event ID string: idBuf at the last dispatch

  constructor(
    private readonly onEvent: (ev: SSEEvent) => void,
    private readonly onRetry: (ms: number) => void = () => {},
    lastEventId = "",
  ) {
    this.idBuf = this.lastId = lastEventId;
  }

  /** The last event ID as of the last dispatched event. */
  get lastEventId(): string {
    return this.lastId;
  }

  push(chunk: string): void {
    if (chunk === "") return;
    if (!this.started) {
      this.started = true;
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1); // one leading BOM
    }
    if (this.pendingCR) {
      this.pendingCR = false;
      if (chunk.charCodeAt(0) === 0x0a) chunk = chunk.slice(1);
    }
    // Only the new chunk is scanned, and a line's earlier pieces are joined
    // once, at its end: a 16 MiB span in 64 KiB reads stays linear.
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (c !== 0x0a && c !== 0x0d) continue;
      let line = chunk.slice(start, i);
      if (this.partial.length > 0) {
        this.partial.push(line);
        line = this.partial.join("");
        this.partial = [];
      }
      this.line(line);
      if (c === 0x0d) {
        if (i + 1 === chunk.length) {
          this.pendingCR = true; // a CRLF split across chunks
        } else if (chunk.charCodeAt(i + 1) === 0x0a) {
          i++;
        }
      }
      start = i + 1;
    }
    if (start < chunk.length) this.partial.push(chunk.slice(start));
  }

  /**
   * Discards whatever is pending, an id: of an event not yet dispatched
   * included: a new connection starts clean from lastEventId.
   */
  reset(): void {
    this.partial = [];
    this.started = false;
    this.pendingCR = false;
    this.data = [];
    this.hasData = false;
    this.type = "";
    this.idBuf = this.lastId;
  }

  private line(line: string): void {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.charCodeAt(0) === 0x3a) return; // ":" a comment
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    }
    switch (field) {
      case "event":
        this.type = value;
        break;
      case "data":
        this.data.push(value);
        this.hasData = true;
        break;
      case "id":
        if (!value.includes("\u0000")) this.idBuf = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.onRetry(parseInt(value, 10));
        break;
      // Any other field is ignored.
    }
  }

  private dispatch(): void {
    this.lastId = this.idBuf;
    const ev: SSEEvent = {
      type: this.type === "" ? "message" : this.type,
      data: this.hasData ? this.data.join("\n") : undefined,
      lastEventId: this.lastId,
    };
    this.data = [];
    this.hasData = false;
    this.type = "";
    this.onEvent(ev);
  }
}
