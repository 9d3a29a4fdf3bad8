// The official openai Node SDK, unmodified, talking to azproxy.
//
// It is configured the SDK's own way, from the environment:
//   OPENAI_BASE_URL  azproxy's address with /v1, e.g. http://127.0.0.1:3000/v1
//   OPENAI_API_KEY   azproxy credentials, e.g. RESOURCE:DEPLOYMENT:AZURE_KEY
//   E2E_MODEL        the model to ask for (default gpt-4o)
// It sends one plain and one streamed chat completion and prints one JSON line:
// what the SDK received, for tests/e2e/test_real_clients.py to check.
//
//   npm ci && OPENAI_BASE_URL=... OPENAI_API_KEY=... node client.mjs
import OpenAI from "openai";
import { VERSION } from "openai/version";

const client = new OpenAI({ maxRetries: 0, timeout: 30_000 });
const model = process.env.E2E_MODEL ?? "gpt-4o";
const messages = [{ role: "user", content: "Say hello from Node" }];

const plain = await client.chat.completions.create({ model, messages }).withResponse();
const answer = plain.data;

const streamed = await client.chat.completions
  .create({ model, messages, stream: true, stream_options: { include_usage: true } })
  .withResponse();
const pieces = [];
let chunks = 0;
let finishReason = null;
let usage = null;
for await (const chunk of streamed.data) {
  chunks += 1;
  for (const choice of chunk.choices) {
    if (choice.delta?.content) pieces.push(choice.delta.content);
    if (choice.finish_reason) finishReason = choice.finish_reason;
  }
  if (chunk.usage) usage = chunk.usage;
}

console.log(
  JSON.stringify({
    sdk: VERSION,
    plain: {
      content: answer.choices[0].message.content,
      finish_reason: answer.choices[0].finish_reason,
      model: answer.model,
      usage: answer.usage,
      deployment: plain.response.headers.get("x-azproxy-deployment"),
    },
    streamed: {
      content: pieces.join(""),
      pieces,
      chunks,
      finish_reason: finishReason,
      usage,
      content_type: streamed.response.headers.get("content-type"),
      deployment: streamed.response.headers.get("x-azproxy-deployment"),
    },
  }),
);
