// Types for notifier-client (index.js): a task's events from notifier's gateway.

/** One event, as published (notifier/schema/task-event.json). */
export interface TaskEvent {
  event_id: string;
  type: string;
  task_id: string;
  timestamp: string;
  data: Record<string, unknown>;
}

export type ConnectionState = "open" | "reconnecting" | "closed";

export interface WatchOptions {
  /** The task's token, sent as `Authorization: Bearer`. */
  token?: string;
  /** Called after a 401 for a new token (once per refusal). */
  refreshToken?: () => string | Promise<string>;
  /** Resume after this stream id instead of from the start of the history. */
  lastEventId?: string;
  onEvent?: (event: TaskEvent) => void;
  onProgress?: (event: TaskEvent) => void;
  /** The run's terminal event (completed, failed, revoked); the watch closes after it. */
  onEnd?: (event: TaskEvent) => void;
  /** The history no longer held the last event seen: going on from `latest`. */
  onReset?: (latest: TaskEvent | null) => void;
  onConnection?: (state: ConnectionState) => void;
  /** The longest pause between reconnects, in ms (10000). */
  maxBackoffMs?: number;
  signal?: AbortSignal;
}

export interface Watch extends AsyncIterable<TaskEvent> {
  /** The stream id of the last event received: where a reconnect resumes. */
  readonly lastEventId: string;
  close(): void;
}

/** A refusal that reconnecting will not mend (403, 404, a second 401 in a row...). */
export class WatchError extends Error {
  readonly status: number;
}

/** Follow the task's events at `url` (the gateway's `/tasks/{id}/events`) until its run ends. */
export function watch(url: string, options?: WatchOptions): Watch;
