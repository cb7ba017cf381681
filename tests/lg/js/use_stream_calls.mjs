// The calls @langchain/langgraph-sdk's useStream makes (react/stream.lgp.js), without React:
// create a thread, stream a run with values + messages-tuple + updates, read state and
// history, resume an interrupt with a command, and rejoin a run from "-1".
// Usage: node use_stream_calls.mjs <apiUrl> <apiKey>; prints one JSON report.
import { Client } from "@langchain/langgraph-sdk";

const [apiUrl, apiKey] = process.argv.slice(2);
const client = new Client({ apiUrl, apiKey });
const report = {};

async function collect(iterable) {
  const parts = [];
  for await (const part of iterable) parts.push(part);
  return parts;
}

const thread = await client.threads.create({ metadata: { from: "js" } });
report.thread = thread;
let created = null;
const parts = await collect(
  client.runs.stream(thread.thread_id, "chat", {
    input: { question: "from js" },
    streamMode: ["values", "messages-tuple", "updates"],
    streamResumable: false,
    onDisconnect: "cancel",
    onRunCreated(params) {
      created = params;
    },
  }),
);
report.events = parts.map((p) => p.event);
report.ids = parts.map((p) => p.id ?? null);
report.created = created;
report.tokens = parts
  .filter((p) => p.event === "messages")
  .map((p) => p.data[0].content)
  .join("");
report.lastValues = parts.filter((p) => p.event === "values").at(-1).data;
report.state = await client.threads.getState(thread.thread_id);
report.history = await client.threads.getHistory(thread.thread_id, { limit: 10 });

const review = await client.threads.create();
const asked = await collect(
  client.runs.stream(review.thread_id, "review", {
    input: { item: "js" },
    streamMode: ["values"],
  }),
);
report.interrupt = asked.filter((p) => p.event === "values").at(-1).data.__interrupt__;
report.reviewState = await client.threads.get(review.thread_id);
const resumed = await collect(
  client.runs.stream(review.thread_id, "review", {
    command: { resume: { decision: "approve" } },
    streamMode: ["values"],
  }),
);
const inputAsk = resumed.filter((p) => p.event === "values").at(-1).data.__interrupt__;
report.inputInterrupt = inputAsk;
const done = await collect(
  client.runs.stream(review.thread_id, "review", {
    command: { resume: "js-reviewer" },
    streamMode: ["values"],
  }),
);
report.finalReview = done.filter((p) => p.event === "values").at(-1).data;
const runId = asked[0].data.run_id;
const replay = await collect(
  client.runs.joinStream(review.thread_id, runId, { lastEventId: "-1", streamMode: ["updates"] }),
);
report.replayUpdates = replay.filter((p) => p.event === "updates").map((p) => Object.keys(p.data)[0]);
try {
  await client.threads.get("00000000-0000-4000-8000-000000000000");
  report.missing = "found";
} catch (error) {
  report.missing = String(error.status ?? error.message);
}
console.log(JSON.stringify(report));
