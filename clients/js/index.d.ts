// Types for celery-notifier (index.js): a task's or a workflow's events from notifier's gateway.

/** One event of a task, as published (notifier/schema/task-event.json). */
export interface TaskEvent {
  event_id: string;
  type: string;
  task_id: string;
  timestamp: string;
  data: Record<string, unknown>;
}

/** The counts every workflow event ends with (notifier/schema/workflow-event.json). */
export interface WorkflowCounts {
  total: number;
  completed: number;
  failed: number;
  running: number;
  /** The mean of the members' last progress (a completed member counts 100). */
  progress: number;
}

/** One event of a workflow: `member` (a member's event, then the counts), `completed` or
 * `failed` (the end: `member` and `error` name the first member that failed). */
export interface WorkflowEvent {
  event_id: string;
  type: "member" | "completed" | "failed";
  workflow_id: string;
  timestamp: string;
  data: WorkflowCounts & { member?: string; event?: TaskEvent; error?: string; error_type?: string | null };
}

export type NotifierEvent = TaskEvent | WorkflowEvent;

export type ConnectionState = "open" | "reconnecting" | "closed";

export interface WatchOptions {
  /** The task's token, sent as `Authorization: Bearer`. */
  token?: string;
  /** Called after a 401 for a new token (once per refusal). */
  refreshToken?: () => string | Promise<string>;
  /** Resume after this stream id instead of from the start of the history. */
  lastEventId?: string;
  onEvent?: (event: NotifierEvent) => void;
  /** A task's `progress` event, or a workflow's `member` event (with the workflow's progress). */
  onProgress?: (event: NotifierEvent) => void;
  /** The run's terminal event (completed, failed, revoked); the watch closes after it. */
  onEnd?: (event: NotifierEvent) => void;
  /** The history no longer held the last event seen: going on from `latest`. */
  onReset?: (latest: NotifierEvent | null) => void;
  onConnection?: (state: ConnectionState) => void;
  /** The longest pause between reconnects, in ms (10000). */
  maxBackoffMs?: number;
  signal?: AbortSignal;
}

export interface Watch extends AsyncIterable<NotifierEvent> {
  /** The stream id of the last event received: where a reconnect resumes. */
  readonly lastEventId: string;
  close(): void;
}

/** A refusal that reconnecting will not mend (403, 404, a second 401 in a row...). */
export class WatchError extends Error {
  readonly status: number;
}

/** Follow the events at `url` (the gateway's `/tasks/{id}/events` or `/workflows/{id}/events`)
 * until the run ends. */
export function watch(url: string, options?: WatchOptions): Watch;
