// The chat page's browser benchmark (scripts/bench-ui.sh): headless Chromium,
// the fake engine at a fixed token rate, a 200-message conversation open,
// a 60-section markdown answer with 60 code blocks streaming in. Reports the
// frame intervals during the stream, the main-thread time per applied batch
// of deltas, the time to open a 2,000-message conversation, and the bundle.
import { chromium } from '../end2end/node_modules/playwright-core/index.mjs';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const bin = process.env.KINKO_BIN;
const site = process.env.KINKO_SITE_ROOT;
const port = Number(process.env.KINKO_BENCH_PORT ?? 3290);
const tokenMs = Number(process.env.KINKO_BENCH_TOKEN_MS ?? 10);
// Chromium's CPU throttling (DevTools' "4x slowdown"), to see a slower machine.
const slowdown = Number(process.env.KINKO_BENCH_CPU_SLOWDOWN ?? 1);
if (!bin || !site) throw new Error('KINKO_BIN and KINKO_SITE_ROOT must be set: run scripts/bench-ui.sh');
const url = `http://127.0.0.1:${port}`;

const server = spawn(bin, ['serve', '--addr', `127.0.0.1:${port}`, '--site-root', site, '--engine', 'fake',
  '--fake-token-delay-ms', String(tokenMs), '--fake-context', '131072', '--default-max-tokens', '16000',
  '--max-tokens-cap', '16000', '--default-num-ctx', '0'], { stdio: 'ignore' });
const stop = () => server.kill();
process.on('exit', stop);
for (let i = 0; ; i++) {
  try { if ((await fetch(`${url}/health`)).ok) break; } catch { /* not yet */ }
  if (i > 100) throw new Error('the server did not start');
  await new Promise((r) => setTimeout(r, 100));
}

const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))] : NaN; };
const f1 = (x) => x.toFixed(1);
const f2 = (x) => x.toFixed(2);

function chat(id, title, n, updated) {
  const messages = Array.from({ length: n }, (_, i) => ({
    role: i % 2 ? 'assistant' : 'user',
    content: i % 2
      ? `Answer ${i}: some **markdown** with \`code\` and a list:\n\n- one\n- two\n\n\`\`\`js\nconst x = ${i};\n\`\`\``
      : `Question ${i} about ${title}?`,
  }));
  return { id, format: 1, title, renamed: true, model: 'fake:latest', pinned: false, created: updated, updated, messages };
}

const sections = Array.from({ length: 60 }, (_, i) => [
  `## Section ${i + 1}`,
  '',
  `This is section ${i + 1}, with **bold**, *emphasis*, \`inline code\` and a [link](https://example.com/${i}).`,
  '',
  '```rust',
  `fn section_${i}(x: u32) -> u32 {`,
  `    // comment ${i}`,
  `    let y = x * ${i} + 1; "text"; y`,
  '}',
  '```',
].join('\n')).join('\n\n');

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
if (slowdown > 1) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: slowdown });
}
await page.goto(`${url}/health`);
await page.evaluate(() => localStorage.setItem('kinko.bench', '1'));
await page.goto(url);
await page.locator('body[data-hydrated=true]').waitFor();
await page.evaluate(async (chats) => {
  const db = await new Promise((ok, fail) => { const r = indexedDB.open('kinko', 1); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
  const tx = db.transaction('chats', 'readwrite');
  for (const c of chats) tx.objectStore('chats').put(JSON.stringify(c), c.id);
  await new Promise((ok) => (tx.oncomplete = ok));
  db.close();
}, [chat('bench200', 'Two hundred', 200, Date.now()), chat('bench2000', 'Two thousand', 2000, Date.now() - 1000)]);
await page.reload();
await page.locator('body[data-hydrated=true]').waitFor();

// Open the 200-message chat, then stream the long answer into it.
await page.getByTestId('chat-item').filter({ hasText: 'Two hundred' }).locator('.chat-open').click();
await page.getByTestId('message').last().waitFor();
await page.waitForTimeout(500);
await page.evaluate(() => {
  window.frames_ = []; let last = performance.now();
  const tick = (t) => { window.frames_.push(t - last); last = t; if (!window.stopFrames) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
});
const batchesBefore = (await page.evaluate(() => window.kinkoDeltaTimes())).length;
const t0 = Date.now();
await page.getByTestId('composer').fill(sections);
await page.getByTestId('composer').press('Enter');
await page.getByTestId('send').waitFor({ timeout: 600_000 });
const streamSeconds = (Date.now() - t0) / 1000;
await page.evaluate(() => { window.stopFrames = true; });
const frames = (await page.evaluate(() => window.frames_)).slice(5);
const deltas = (await page.evaluate(() => window.kinkoDeltaTimes())).slice(batchesBefore);
const answer = page.locator('[data-testid=message][data-role=assistant]').last();
const blocks = await answer.locator('.code-block').count();
const bytes = (await answer.locator('.bubble').innerHTML()).length;

// Open the 2,000-message chat: from the click to the last message painted.
await page.getByTestId('new-chat').click();
await page.waitForTimeout(300);
const openMs = await page.evaluate(async () => {
  const item = [...document.querySelectorAll('[data-testid=chat-item]')].find((e) => e.textContent.includes('Two thousand'));
  const start = performance.now();
  item.querySelector('.chat-open').click();
  for (;;) {
    await new Promise((r) => requestAnimationFrame(r));
    const msgs = document.querySelectorAll('[data-testid=message]');
    if (msgs.length && msgs[msgs.length - 1].textContent.includes('Answer 1999')) break;
  }
  await new Promise((r) => requestAnimationFrame(r));
  return performance.now() - start;
});
await browser.close();
stop();

const gz = (f) => gzipSync(readFileSync(`${site}/pkg/${f}`), { level: 9 }).length;
const wasm = gz('kinko.wasm');
const js = gz('kinko.js');
const over50 = frames.filter((f) => f > 50).length;
console.log(`UI benchmark${slowdown > 1 ? ` (CPU slowed ${slowdown}x)` : ''}: fake engine at ${tokenMs} ms/token, a 200-message chat open, a 60-section answer (${blocks} code blocks, ${Math.round(bytes / 1024)} KB of HTML) streamed in ${f1(streamSeconds)} s`);
console.log(`  frame interval   p50 ${f1(pct(frames, 50))} ms   p95 ${f1(pct(frames, 95))} ms   max ${f1(Math.max(...frames))} ms   over 50 ms: ${over50} of ${frames.length}`);
console.log(`  per applied delta batch (main thread)   p50 ${f2(pct(deltas, 50))} ms   p95 ${f2(pct(deltas, 95))} ms   (${deltas.length} batches)`);
console.log(`  open a 2,000-message chat: ${f1(openMs)} ms to the last message painted`);
console.log(`  bundle: ${Math.round(wasm / 1024)} KB WASM + ${Math.round(js / 1024)} KB JS gzipped = ${Math.round((wasm + js) / 1024)} KB (${wasm + js} bytes)`);
process.exit(0);
