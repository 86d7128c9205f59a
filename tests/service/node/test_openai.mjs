// The npm `openai` client against POST /v1/images/generations: b64_json, url, an error.
// Usage: node test_openai.mjs BASE_URL   (run by test_service_openai.py, which starts the
// server). Exits 0 when every check passes.
import assert from "node:assert/strict";
import OpenAI from "openai";

const base = process.argv[2];
const client = new OpenAI({ apiKey: "sk-unused", baseURL: `${base}/v1`, maxRetries: 0 });

async function main() {
  const a = await client.images.generate({
    model: "dall-e-2", prompt: "a cat", n: 1, size: "256x256", response_format: "b64_json",
  });
  assert.equal(a.data.length, 1);
  const png = Buffer.from(a.data[0].b64_json, "base64");
  assert.equal(png.subarray(1, 4).toString(), "PNG");
  assert.equal(png.readUInt32BE(16), 256);
  console.log("ok   b64_json");

  const b = await client.images.generate({
    prompt: "a dog", size: "256x256", response_format: "url",
  });
  assert.ok(b.data[0].url.startsWith(`${base}/v1/jobs/`), b.data[0].url);
  const img = await fetch(b.data[0].url);
  assert.equal(img.status, 200);
  assert.equal(img.headers.get("content-type"), "image/png");
  console.log("ok   url");

  await assert.rejects(
    client.images.generate({ prompt: "x", size: "12x34x56" }),
    (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      assert.equal(e.status, 400);
      assert.equal(e.error?.param ?? e.param, "size");
      return true;
    });
  await assert.rejects(
    client.images.generate({ prompt: "x", size: "256x256", n: 1000 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400);
  console.log("ok   errors");
}

main().catch((e) => {
  console.error("FAIL", e);
  process.exit(1);
});
