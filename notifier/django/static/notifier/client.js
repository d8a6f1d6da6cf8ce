// notifier's browser client: follow one task's events (or one workflow's) from the gateway
// until its run ends.
//
//   import { watch } from "/notifications/client.js";
//   for await (const event of watch("/notifications/tasks/42/events", { token })) {
//     if (event.type === "progress") bar.value = event.data.progress;
//   }
//
// It reads the gateway's Server-Sent Events with fetch(), so that the token goes in an
// Authorization header (never in a URL a proxy logs) and every event type arrives, an
// application's own included. A lost connection, a gateway restart or an `overflow` is followed
// by a reconnect that resumes after the last event seen (Last-Event-ID): nothing is missed or
// repeated. A `reset` (the history no longer holds that event) goes on from the latest event.
// A 401 asks `refreshToken()` for a new token once per refusal. The iteration ends after the
// run's terminal event (completed, failed, revoked), or when the gateway answers 204 (it ended
// before). A workflow's URL (/workflows/{id}/events) works the same way: each of its `member`
// events carries the workflow's counts and progress, and it ends with its own completed or
// failed. No dependencies; plain ES module. The same file is the gateway's /client.js.

const TERMINAL = new Set(["completed", "failed", "revoked"]);
const PROGRESS = new Set(["progress", "member"]); // a task's; a workflow's, after each member event
const RETRY_STATUSES = new Set([408, 429, 500, 502, 503, 504]);

export class WatchError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "WatchError";
    this.status = status;
  }
}

// watch(url, options) -> an async iterable of events, with close().
// options: token, refreshToken() -> token (sync or async), lastEventId, onEvent(event),
// onProgress(event), onEnd(event), onReset(latest), onConnection(state: "open" |
// "reconnecting" | "closed"), maxBackoffMs (10000), signal (an AbortSignal).
export function watch(url, options = {}) {
  return new Watch(url, options);
}

class Watch {
  constructor(url, options) {
    this.url = url;
    this.options = options;
    this.token = options.token || "";
    this.lastEventId = options.lastEventId || "";
    this.retryMs = 1000;  // until the gateway's `retry:` says otherwise
    this.controller = new AbortController();
    if (options.signal) options.signal.addEventListener("abort", () => this.close());
    this.closed = false;
  }

  close() {
    this.closed = true;
    this.controller.abort();
    this._connection("closed");
  }

  [Symbol.asyncIterator]() {
    return this._events();
  }

  async *_events() {
    let failures = 0;
    let refreshed = false;
    try {
      while (!this.closed) {
        let response;
        try {
          response = await fetch(this.url, { headers: this._headers(), cache: "no-store",
                                             signal: this.controller.signal });
        } catch (error) {
          if (this.closed) return;
          await this._pause(++failures);
          continue;
        }
        if (response.status === 204) return;  // the run ended before: nothing more to come
        if (response.status === 401 && this.options.refreshToken && !refreshed) {
          refreshed = true;  // once per refusal: a second 401 in a row is an answer
          this.token = await this.options.refreshToken();
          continue;
        }
        if (RETRY_STATUSES.has(response.status)) {
          const after = Number(response.headers.get("Retry-After")) * 1000;
          await this._pause(++failures, after);
          continue;
        }
        if (!response.ok || !response.body) {
          throw new WatchError(`the gateway answered ${response.status}`, response.status);
        }
        refreshed = false;
        failures = 0;
        this._connection("open");
        try {
          for await (const message of messages(response.body)) {
            if (message.retry !== undefined) this.retryMs = message.retry;
            if (message.data === undefined) continue;
            if (message.id) this.lastEventId = message.id;
            if (message.event === "overflow") break;  // too slow: resume from the last id
            const event = JSON.parse(message.data);
            if (message.event === "reset") {
              call(this.options.onReset, event);
              if (event === null) continue;
            }
            call(this.options.onEvent, event);
            if (PROGRESS.has(event.type)) call(this.options.onProgress, event);
            yield event;
            if (TERMINAL.has(event.type)) {
              call(this.options.onEnd, event);
              return;
            }
          }
        } catch (error) {
          if (this.closed) return;
          if (error instanceof SyntaxError) throw error;  // not the gateway's JSON
        }
        if (!this.closed) await this._pause(++failures);
      }
    } finally {
      if (!this.closed) this.close();
    }
  }

  _headers() {
    const headers = { Accept: "text/event-stream" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    return headers;
  }

  _connection(state) {
    if (this.state !== state) {
      this.state = state;
      call(this.options.onConnection, state);
    }
  }

  async _pause(failures, atLeastMs = 0) {
    this._connection("reconnecting");
    if (this.controller.signal.aborted) return;
    const cap = this.options.maxBackoffMs || 10000;
    const backoff = Math.min(cap, this.retryMs * 2 ** Math.min(failures - 1, 6));
    const wait = Math.max(atLeastMs || 0, backoff * (0.5 + Math.random() / 2));
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, wait);
      this.controller.signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); });
    });
  }
}

function call(callback, value) {
  if (callback) callback(value);
}

// The messages of an SSE body, as the HTML standard parses them: fields by line (LF, CR or
// CRLF), a blank line ends a message, a line starting with ":" is a comment (a heartbeat).
async function* messages(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let message = {};
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (buffer[end] === "\r" && end === buffer.length - 1) break;  // CRLF split by a read
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (message.data !== undefined || message.retry !== undefined) yield message;
          message = {};
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") message.data = message.data === undefined ? text : `${message.data}\n${text}`;
        else if (field === "event") message.event = text;
        else if (field === "id") message.id = text;
        else if (field === "retry" && /^\d+$/.test(text)) message.retry = Number(text);
      }
    }
  } finally {
    reader.cancel().catch(() => {});  // an early stop (overflow, the end) closes the response
  }
}
