// A page's use of the client, written against index.d.ts through the package's own name and
// its "exports" (as a bundler or Node resolves it): `make check-js` compiles it with
// `tsc --strict`. The @ts-expect-error lines are mistakes the types must refuse; each fails the
// check if the types stop refusing it.
import { watch, WatchError } from "celery-notifier";
import type {
  ConnectionState,
  NotifierEvent,
  TaskEvent,
  Watch,
  WatchOptions,
  WorkflowEvent,
} from "celery-notifier";

function isWorkflowEvent(event: NotifierEvent): event is WorkflowEvent {
  return "workflow_id" in event;
}

function progressOf(event: TaskEvent): number | null {
  const value = event.data["progress"]; // unknown: the page checks what the payload holds
  return typeof value === "number" ? value : null;
}

const states: ConnectionState[] = [];
const controller = new AbortController();
const options: WatchOptions = {
  token: "a-signed-token",
  refreshToken: async () => "a-new-token",
  lastEventId: "1700000000000-0",
  onEvent: (event) => {
    console.log(event.event_id, event.type, event.timestamp);
  },
  onProgress: (event) => {
    if (isWorkflowEvent(event)) {
      const { completed, total, progress }: { completed: number; total: number; progress: number } =
        event.data;
      console.log(`${completed}/${total}`, progress, event.data.member ?? "");
    } else {
      console.log(event.task_id, progressOf(event));
    }
  },
  onEnd: (event) => {
    if (isWorkflowEvent(event) && event.type === "failed") {
      console.log(event.data.member, event.data.error, event.data.error_type ?? "no type");
    }
  },
  onReset: (latest) => console.log(latest === null ? "nothing yet" : latest.event_id),
  onConnection: (state) => states.push(state),
  maxBackoffMs: 10_000,
  signal: controller.signal,
};

export async function follow(taskId: string): Promise<number | null> {
  const events: Watch = watch(`/notifications/tasks/${taskId}/events`, options);
  let last: number | null = null;
  try {
    for await (const event of events) {
      if (!isWorkflowEvent(event) && event.type === "progress") last = progressOf(event);
    }
  } catch (error: unknown) {
    if (error instanceof WatchError) {
      console.log(`refused (${error.status}): ${error.message}`);
      return error.status === 404 ? null : last;
    }
    throw error;
  } finally {
    events.close();
  }
  console.log("resume after", events.lastEventId);
  return last;
}

export function mistakes(events: Watch, event: WorkflowEvent): void {
  // @ts-expect-error: the URL is a string
  watch(42);
  // @ts-expect-error: no such option (a misspelt token)
  watch("/notifications/tasks/t/events", { tokn: "a-signed-token" });
  // @ts-expect-error: refreshToken gives the new token, not nothing
  watch("/notifications/tasks/t/events", { refreshToken: () => undefined });
  // @ts-expect-error: where a watch resumes is read, not set
  events.lastEventId = "1700000000000-1";
  // @ts-expect-error: a workflow's events are member, completed or failed
  event.type = "progress";
  // @ts-expect-error: the counts are numbers
  const running: string = event.data.running;
  console.log(running);
  // @ts-expect-error: not a connection state
  states.push("connecting");
}
