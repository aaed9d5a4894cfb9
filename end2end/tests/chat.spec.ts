import { test, expect, Page } from '@playwright/test';

const REAL_URL = 'http://127.0.0.1:3210';
const FAKE_URL = 'http://127.0.0.1:3211';
const SHOTS = process.env.KINKO_SCREENSHOTS;

async function openHydrated(page: Page, url: string) {
  await page.goto(url);
  // A click before hydration is lost: wait for the marker.
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
}

async function metric(url: string, line: string): Promise<number> {
  const res = await fetch(`${url}/metrics`);
  const text = await res.text();
  const found = text.split('\n').find((l) => l.startsWith(line + ' '));
  if (!found) throw new Error(`metric ${line} not found in:\n${text}`);
  return Number(found.split(' ').pop());
}

test('two turns with the default model stream in, survive a reload', async ({ page }) => {
  await openHydrated(page, REAL_URL);
  const picker = page.getByTestId('model-picker');
  await expect(picker.locator('option[value="smollm2:135m"]')).toHaveCount(1);
  // The embedding model is installed beside it but makes no answers: it
  // stays out of the picker.
  await expect(picker.locator('option[value="all-minilm:latest"]')).toHaveCount(0);
  await picker.selectOption('smollm2:135m');

  const composer = page.getByTestId('composer');
  const answers = page.locator('.msg.assistant .bubble');

  // Turn 1: record every text the answer shows while it streams (a
  // MutationObserver sees each update, however fast the model is).
  await page.evaluate(() => {
    const w = window as unknown as { seen: Set<string> };
    w.seen = new Set();
    const conversation = document.querySelector('[data-testid=conversation]')!;
    new MutationObserver(() => {
      const bubble = document.querySelector('.msg.assistant .bubble');
      if (bubble?.textContent) w.seen.add(bubble.textContent);
    }).observe(conversation, { subtree: true, childList: true, characterData: true });
  });
  await composer.fill('What is the capital of France? Answer in two sentences.');
  await composer.press('Enter');
  await expect(page.locator('.msg.user .bubble').first()).toHaveText('What is the capital of France? Answer in two sentences.');
  await expect(answers.nth(0)).not.toBeEmpty();
  await expect(page.getByTestId('send')).toBeVisible({ timeout: 60_000 });
  const first = (await answers.nth(0).innerText()).trim();
  expect(first.length).toBeGreaterThan(0);
  // The answer appeared in pieces, growing, not all at once (as markdown,
  // a piece may render differently until its block is complete).
  const seen = await page.evaluate(() => [...(window as unknown as { seen: Set<string> }).seen]);
  expect(seen.length).toBeGreaterThan(2);
  expect(Math.min(...seen.map((t) => t.length))).toBeLessThan(first.length);

  // Shift+Enter is a newline, not a send.
  await composer.fill('And of Japan?');
  await composer.press('Shift+Enter');
  await expect(page.locator('.msg.user')).toHaveCount(1);
  await composer.fill('And what is the capital of Japan?');
  await composer.press('Enter');
  await expect(page.locator('.msg.user')).toHaveCount(2);
  await expect(page.getByTestId('send')).toBeVisible({ timeout: 60_000 });
  await expect(answers.nth(1)).not.toBeEmpty();
  await expect(page.getByTestId('error')).toHaveCount(0);
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/two-turns.png`, fullPage: true });

  // Reload: the conversation is still there, from IndexedDB.
  const second = (await answers.nth(1).innerText()).trim();
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await expect(page.locator('.msg.user')).toHaveCount(2);
  await expect(answers.nth(0)).toHaveText(first);
  await expect(answers.nth(1)).toHaveText(second);
  await expect(picker).toHaveValue('smollm2:135m');

  // New chat clears the page; the conversation stays in the list.
  await page.getByTestId('new-chat').click();
  await expect(page.locator('.msg')).toHaveCount(0);
  await expect(page.getByTestId('chat-item')).toHaveCount(1);
});

test('Stop aborts the answer and the server stops generating', async ({ page }) => {
  await openHydrated(page, FAKE_URL);
  await expect(page.getByTestId('model-picker')).toHaveValue('fake:latest');
  const cancelledBefore = await metric(FAKE_URL, 'kinko_streams_finished_total{reason="cancelled"}');

  await page.getByTestId('composer').fill('Tell me everything.');
  await page.getByTestId('composer').press('Enter');
  const answer = page.locator('.msg.assistant .bubble').first();
  await expect(answer).toContainText('word3');
  await page.getByTestId('stop').click();
  await expect(page.getByTestId('send')).toBeVisible();
  await expect(page.locator('.msg.assistant .note')).toContainText('Stopped.');
  const stoppedText = await answer.innerText();
  expect(stoppedText).not.toContain('word1999');

  // The server saw the cancellation and no stream is left running.
  await expect.poll(() => metric(FAKE_URL, 'kinko_streams_finished_total{reason="cancelled"}')).toBe(cancelledBefore + 1);
  await expect.poll(() => metric(FAKE_URL, 'kinko_streams_active')).toBe(0);
  const tokens = await metric(FAKE_URL, 'kinko_tokens_generated_total');
  await page.waitForTimeout(300);
  expect(await metric(FAKE_URL, 'kinko_tokens_generated_total')).toBe(tokens);
  // The text did not keep growing in the page either.
  expect(await answer.innerText()).toBe(stoppedText);
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/stopped.png`, fullPage: true });
});

test('errors show in the conversation', async ({ page }) => {
  await openHydrated(page, FAKE_URL);
  // Pick a model that vanished since the page loaded: the server says 404.
  await page.evaluate(() => {
    const sel = document.querySelector('[data-testid=model-picker]') as HTMLSelectElement;
    const opt = document.createElement('option');
    opt.value = 'gone:latest';
    opt.textContent = 'gone:latest';
    sel.appendChild(opt);
  });
  await page.getByTestId('model-picker').selectOption('gone:latest');
  await page.getByTestId('composer').fill('hello?');
  await page.getByTestId('composer').press('Enter');
  await expect(page.getByTestId('error')).toContainText('not installed');
  await expect(page.getByTestId('error')).toContainText('404');
});

test('Enter while an IME is composing does not send', async ({ page }) => {
  await openHydrated(page, FAKE_URL);
  const composer = page.getByTestId('composer');
  await composer.fill('にほんご');
  // The Enter that commits a Japanese conversion arrives with isComposing
  // set (and keyCode 229 in Chromium): it must not send.
  await composer.evaluate((el) => {
    el.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', isComposing: true, bubbles: true, cancelable: true }));
    const legacy = new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true });
    Object.defineProperty(legacy, 'keyCode', { get: () => 229 });
    el.dispatchEvent(legacy);
  });
  await page.waitForTimeout(300);
  await expect(page.locator('.msg.user')).toHaveCount(0);
  await expect(composer).toHaveValue('にほんご');
  // A plain Enter afterwards sends.
  await composer.press('Enter');
  await expect(page.locator('.msg.user .bubble')).toHaveText('にほんご');
  await expect(page.locator('.msg.assistant .bubble')).toContainText('にほんご');
  await page.getByTestId('stop').click();
});

test('with an API key the browser logs in, and a trimmed history is noted', async ({ page }) => {
  const GUARDED_URL = 'http://127.0.0.1:3212';
  await page.goto(GUARDED_URL);
  await expect(page).toHaveURL(`${GUARDED_URL}/login`);
  await page.locator('input[name=key]').fill('not the key');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('.login-error')).toContainText('not right');
  await page.locator('input[name=key]').fill('browser-key-123');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page).toHaveURL(`${GUARDED_URL}/`);
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'kinko_session');
  expect(session?.httpOnly).toBe(true);
  expect(session?.sameSite).toBe('Strict');

  const composer = page.getByTestId('composer');
  await composer.fill('first question');
  await composer.press('Enter');
  await expect(page.locator('.msg.assistant .bubble').nth(0)).toHaveText('first question');
  await expect(page.getByTestId('send')).toBeVisible();
  await expect(page.getByTestId('note')).toHaveCount(0);
  await composer.fill('second question');
  await composer.press('Enter');
  // The server keeps only the last two messages: one was left out, and the
  // answer says so.
  await expect(page.locator('.msg.assistant .bubble').nth(1)).toHaveText('second question');
  await expect(page.getByTestId('note')).toHaveText(/1 earlier message was left out/);
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/trimmed.png`, fullPage: true });
});

test('a chat picks its context size, with what it costs on this machine', async ({ page }) => {
  // The fake model claims an 8,192-token window and a measured 30 ms per
  // prompt token; the server's default context size is 4,096.
  await page.goto(FAKE_URL);
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  // The context size is one of the chat's settings.
  await page.getByTestId('chat-settings').click();
  const picker = page.getByTestId('num-ctx');
  const cost = page.getByTestId('num-ctx-cost');
  await expect(picker.locator('option')).toHaveText([
    '4096 tokens (default) · ≈ 2 min',
    '1024 tokens · ≈ 31 s',
    '2048 tokens · ≈ 61 s',
    '4096 tokens · ≈ 2 min',
    '8192 tokens · ≈ 4 min',
  ]);
  await expect(cost).toHaveText('Context: a full 4096-token window takes ≈ 2 min to read on this machine');
  await picker.selectOption('1024');
  await expect(cost).toHaveText('Context: a full 1024-token window takes ≈ 31 s to read on this machine');
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/context-size.png`, fullPage: true });

  // The chat's size goes with every request and stays with the chat.
  const sent = page.waitForRequest((r) => r.url().endsWith('/api/chat/stream'));
  await page.getByTestId('composer').fill('How much do you remember?');
  await page.getByTestId('composer').press('Enter');
  expect((await sent).postDataJSON().options.num_ctx).toBe(1024);
  await page.getByTestId('stop').click();
  await expect(page.getByTestId('send')).toBeVisible();
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await page.getByTestId('chat-settings').click();
  await expect(page.getByTestId('num-ctx')).toHaveValue('1024');
  // A new chat starts from the server's default again.
  await page.getByTestId('new-chat').click();
  await expect(page.getByTestId('num-ctx')).toHaveValue('');
});
