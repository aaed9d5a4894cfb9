import { test, expect, Page } from '@playwright/test';
import { UI_URL, open, done, say, seed, countWrites } from './helpers';
import * as fs from 'fs';
import * as path from 'path';

// Slow, long answers (40 ms a token): for Stop.
const FAKE_URL = 'http://127.0.0.1:3211';
const SHOTS = process.env.KINKO_SCREENSHOTS;

const answers = (page: Page) => page.locator('[data-testid=message][data-role=assistant]');
const questions = (page: Page) => page.locator('[data-testid=message][data-role=user]');

/** The bodies of the chat requests the page sends from now on. */
function requests(page: Page): any[] {
  const seen: any[] = [];
  page.on('request', (r) => {
    if (r.url().endsWith('/api/chat/stream')) seen.push(JSON.parse(r.postData() ?? '{}'));
  });
  return seen;
}

const texts = async (page: Page) =>
  (await page.locator('[data-testid=message] .bubble').allTextContents()).map((t) => t.trim());

test('regenerate and edit make versions; the history sent is the branch on screen', async ({ page }) => {
  await open(page);
  const sent = requests(page);
  await say(page, 'first');
  await say(page, 'second');
  await expect(page.getByTestId('regenerate')).toHaveCount(1);

  // Regenerate: a second version of the last answer, ‹ 2/2 ›.
  await page.getByTestId('regenerate').click();
  await done(page);
  await expect(page.getByTestId('branch-label')).toHaveText(['2/2']);
  expect(sent[2].messages.map((m: any) => m.content)).toEqual(['first', 'first', 'second']);
  await page.getByTestId('branch-prev').click();
  await expect(page.getByTestId('branch-label')).toHaveText(['1/2']);
  await expect(page.getByTestId('branch-prev')).toBeDisabled();
  await page.getByTestId('branch-next').click();
  await expect(page.getByTestId('branch-label')).toHaveText(['2/2']);

  // Edit the first question: a new branch from there, with its own answer.
  await questions(page).first().getByTestId('edit').click();
  await page.getByTestId('edit-input').fill('first, edited');
  await page.getByTestId('edit-save').click();
  await done(page);
  expect(await texts(page)).toEqual(['first, edited', 'first, edited']);
  await expect(questions(page).first().getByTestId('branch-label')).toHaveText('2/2');
  // Only the branch on screen was sent.
  expect(sent[3].messages.map((m: any) => m.content)).toEqual(['first, edited']);

  // The first version comes back with what followed it, both answers kept.
  await questions(page).first().getByTestId('branch-prev').click();
  expect(await texts(page)).toEqual(['first', 'first', 'second', 'second']);
  await expect(answers(page).last().getByTestId('branch-label')).toHaveText('2/2');

  // Continuing there sends that branch.
  await say(page, 'third');
  expect(sent[4].messages.map((m: any) => m.content)).toEqual(['first', 'first', 'second', 'second', 'third']);

  // Every branch is saved: after a reload the same branch is on screen.
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  expect(await texts(page)).toEqual(['first', 'first', 'second', 'second', 'third', 'third']);
  await expect(questions(page).first().getByTestId('branch-label')).toHaveText('1/2');
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/branches.png`, fullPage: true });

  // ↑ in the empty composer edits the last question; Esc leaves it.
  await page.getByTestId('composer').focus();
  await page.keyboard.press('ArrowUp');
  await expect(page.getByTestId('edit-input')).toHaveValue('third');
  await page.keyboard.press('Escape');
  await expect(page.getByTestId('edit-input')).toHaveCount(0);
});

test('per-chat settings are sent, fall back visibly, and are saved with the chat', async ({ page }) => {
  await open(page);
  const sent = requests(page);
  await page.getByTestId('chat-settings').click();
  // Empty fields show what they fall back to (this server's defaults).
  await expect(page.getByTestId('temperature')).toHaveAttribute('placeholder', /\(server default\)$/);
  await expect(page.getByTestId('system-prompt')).toHaveAttribute('placeholder', 'none (server default)');
  await page.getByTestId('system-prompt').fill('Answer like a pirate.');
  await page.getByTestId('temperature').fill('0.3');
  await say(page, 'ahoy');
  expect(sent[0].messages[0]).toEqual({ role: 'system', content: 'Answer like a pirate.' });
  expect(sent[0].options.temperature).toBe(0.3);
  expect(sent[0].options.top_p).toBeUndefined();
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await page.getByTestId('chat-settings').click();
  await expect(page.getByTestId('system-prompt')).toHaveValue('Answer like a pirate.');
  await expect(page.getByTestId('temperature')).toHaveValue('0.3');
  // A new chat starts from the defaults.
  await page.getByTestId('new-chat').click();
  await expect(page.getByTestId('temperature')).toHaveValue('');
  await expect(page.getByTestId('system-prompt')).toHaveValue('');
});

test('answers show their stats and the context gauge warns before messages are left out', async ({ page }) => {
  await open(page);
  await say(page, 'how fast?');
  await expect(page.getByTestId('answer-stats')).toHaveText(/s to first token · ([\d.,]+ tokens\/s · )?\d+ tokens · ended: finished/);
  await expect(page.getByTestId('context-gauge')).toHaveText(/^Context \d+ \/ 4,096 tokens \(\d+%\)$/);
  await expect(page.getByTestId('context-gauge')).toHaveAttribute('data-state', 'ok');
  // A chat whose last turn filled 80 % of its window: the gauge warns.
  await seed(page, [{
    id: 'full', format: 2, title: 'Nearly full', model: 'fake:latest', created: 1, updated: Date.now() + 1e6, current: 2,
    messages: [
      { id: 1, role: 'user', content: 'long' },
      { id: 2, parent: 1, role: 'assistant', content: 'long answer',
        stats: { prompt_tokens: 3000, completion_tokens: 277, context_window: 4096, finish: 'stop', ttft_ms: 1200, tokens_per_second: 31.5 } },
    ],
  }]);
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await page.getByTestId('chat-item').filter({ hasText: 'Nearly full' }).locator('.chat-open').click();
  await expect(page.getByTestId('context-gauge')).toHaveAttribute('data-state', 'warn');
  await expect(page.getByTestId('context-gauge')).toHaveText('Context 3,277 / 4,096 tokens (80%) · Nearly full: earlier messages will soon be left out.');
  await expect(page.getByTestId('answer-stats')).toHaveText('1.20 s to first token · 31.5 tokens/s · 277 tokens · ended: finished');
});

test('an answer left half-written by a tab closed mid-stream can be regenerated', async ({ page }) => {
  await open(page);
  await seed(page, [{
    id: 'cut', format: 2, title: '', model: 'fake:latest', created: 1, updated: Date.now() + 1e6, current: 2,
    messages: [{ id: 1, role: 'user', content: 'cut short' }, { id: 2, parent: 1, role: 'assistant', content: 'cut', pending: true }],
  }]);
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await page.getByTestId('chat-item').first().locator('.chat-open').click();
  await expect(page.getByTestId('regenerate')).toBeEnabled();
  await page.getByTestId('regenerate').click();
  await done(page);
  await expect(page.getByTestId('branch-label')).toHaveText('2/2');
  await expect(answers(page).locator('.bubble')).toHaveText(['cut short']);
  // The half answer is kept as version 1, no longer shown as streaming.
  await page.getByTestId('branch-prev').click();
  await expect(answers(page).locator('.bubble')).toHaveText(['cut']);
  await expect(answers(page).last()).toHaveAttribute('class', /^msg assistant$/);
});

test('日本語: follows the browser, can be switched, is remembered, sets <html lang>', async ({ browser }) => {
  const ja = await browser.newContext({ locale: 'ja-JP' });
  const page = await ja.newPage();
  await open(page);
  await expect(page.locator('html')).toHaveAttribute('lang', 'ja');
  await expect(page.getByTestId('new-chat')).toHaveText('新しいチャット');
  await expect(page.getByTestId('language')).toHaveValue('ja');
  await say(page, 'こんにちは');
  await expect(page.getByTestId('answer-stats')).toHaveText(/^最初のトークンまで [\d.]+ 秒 · ([\d.,]+ トークン\/秒 · )?\d+ トークン · 終了理由: 完了$/);
  await expect(page.getByTestId('context-gauge')).toHaveText(/^コンテキスト \d+ \/ 4,096 トークン/);
  await page.getByTestId('chat-settings').click();
  await expect(page.locator('.settings-date')).toHaveText(/^作成: \d{4}\/\d{2}\/\d{2} \d{1,2}:\d{2}$/);
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/ja.png`, fullPage: true });
  // Switched to English, and remembered over a reload (the server renders it too).
  await page.getByTestId('language').selectOption('en');
  await expect(page.locator('html')).toHaveAttribute('lang', 'en');
  await expect(page.getByTestId('new-chat')).toHaveText('New chat');
  await expect(page.locator('.settings-date')).toHaveText(/^Created [A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2} [AP]M$/);
  // As a browser asks (without text/html, `/` answers `Ollama is running`).
  const html = await (await page.request.get(UI_URL, { headers: { Accept: 'text/html' } })).text();
  expect(html).toContain('<html lang="en"');
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await expect(page.getByTestId('new-chat')).toHaveText('New chat');
  await page.getByTestId('language').selectOption('ja');
  await expect(page.getByTestId('send')).toHaveText('送信');
  // The login page of a server with an API key speaks the same language.
  const login = await (await page.request.get('http://127.0.0.1:3212/login', { headers: { 'Accept-Language': 'ja,en;q=0.5' } })).text();
  expect(login).toContain('<html lang="ja"');
  expect(login).toContain('サインイン');
  await ja.close();
});

test('IME: Enter that confirms a composition never sends, in Chromium and WebKit order', async ({ page }) => {
  await open(page);
  const box = page.getByTestId('composer');
  await box.fill('にほんご');
  const fire = (events: [string, Record<string, unknown>][]) =>
    box.evaluate((el, events) => {
      for (const [type, init] of events) {
        const ev = type.startsWith('composition')
          ? new CompositionEvent(type, { bubbles: true, data: 'にほんご' })
          : new KeyboardEvent(type, { bubbles: true, cancelable: true, ...init });
        if ('keyCode' in init) Object.defineProperty(ev, 'keyCode', { value: init.keyCode });
        el.dispatchEvent(ev);
      }
    }, events);
  // Chromium: the confirming keydown comes while composing, keyCode 229.
  await fire([
    ['compositionstart', {}],
    ['keydown', { key: 'Enter', keyCode: 229, isComposing: true }],
    ['compositionend', {}],
  ]);
  // WebKit: compositionend first, then the keydown, not composing (229).
  await fire([
    ['compositionstart', {}],
    ['compositionend', {}],
    ['keydown', { key: 'Enter', keyCode: 229, isComposing: false }],
  ]);
  // Some WebKit versions: keyCode 13, right after compositionend.
  await fire([
    ['compositionstart', {}],
    ['compositionend', {}],
    ['keydown', { key: 'Enter', keyCode: 13, isComposing: false }],
  ]);
  await page.waitForTimeout(300);
  await expect(page.getByTestId('message')).toHaveCount(0);
  await expect(box).toHaveValue('にほんご');
  // A real Enter afterwards sends.
  await box.press('Enter');
  await done(page);
  await expect(questions(page).locator('.bubble')).toHaveText(['にほんご']);
});

/** Open WebUI's export of one chat: a regenerated first answer. */
const OPEN_WEBUI = JSON.stringify([{
  id: 'e2e-owui', title: 'Kyoto trip', created_at: 1732000000, updated_at: 1732000300,
  chat: {
    title: 'Kyoto trip', models: ['fake:latest'],
    history: {
      currentId: 'a2',
      messages: {
        q1: { id: 'q1', parentId: null, childrenIds: ['a1', 'a1b'], role: 'user', content: 'Plan a day in Kyoto', timestamp: 1732000000 },
        a1: { id: 'a1', parentId: 'q1', childrenIds: ['q2'], role: 'assistant', content: 'Start at Fushimi Inari.', timestamp: 1732000010 },
        a1b: { id: 'a1b', parentId: 'q1', childrenIds: [], role: 'assistant', content: 'Begin with Kiyomizu-dera.', timestamp: 1732000020 },
        q2: { id: 'q2', parentId: 'a1', childrenIds: ['a2'], role: 'user', content: 'And lunch?', timestamp: 1732000030 },
        a2: { id: 'a2', parentId: 'q2', childrenIds: [], role: 'assistant', content: 'Nishiki Market.', timestamp: 1732000040 },
      },
    },
  },
}]);

test('export and import: kinko JSON, Markdown, Open WebUI with branches; a bad file changes nothing', async ({ page }) => {
  await open(page);
  // A bad file: a clear message, nothing added.
  await page.getByTestId('import-chats').setInputFiles({ name: 'bad.json', mimeType: 'application/json', buffer: Buffer.from('{"hello": 1}') });
  await expect(page.getByTestId('notice').locator('span')).toHaveText(/could not be imported: it is neither kinko's export nor Open WebUI's chat export\. Nothing was changed\./);
  await expect(page.getByTestId('chat-item')).toHaveCount(0);

  // Open WebUI's export, branches included.
  await page.getByTestId('import-chats').setInputFiles({ name: 'owui.json', mimeType: 'application/json', buffer: Buffer.from(OPEN_WEBUI) });
  await expect(page.getByTestId('notice').locator('span')).toHaveText('Imported 1 chat.');
  await page.getByTestId('chat-item').filter({ hasText: 'Kyoto trip' }).locator('.chat-open').click();
  expect(await texts(page)).toEqual(['Plan a day in Kyoto', 'Start at Fushimi Inari.', 'And lunch?', 'Nishiki Market.']);
  await expect(answers(page).first().getByTestId('branch-label')).toHaveText('1/2');
  await answers(page).first().getByTestId('branch-next').click();
  expect(await texts(page)).toEqual(['Plan a day in Kyoto', 'Begin with Kiyomizu-dera.']);
  // The same file again adds nothing.
  await page.getByTestId('import-chats').setInputFiles({ name: 'owui.json', mimeType: 'application/json', buffer: Buffer.from(OPEN_WEBUI) });
  await expect(page.getByTestId('notice').locator('span')).toHaveText('Imported 0 chats. 1 already here, skipped.');

  // Export everything as kinko's JSON; it reads back in a fresh browser.
  const [all] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-chats').click()]);
  expect(all.suggestedFilename()).toMatch(/^kinko-chats-\d{4}-\d{2}-\d{2}\.json$/);
  const file = JSON.parse(fs.readFileSync(await all.path(), 'utf8'));
  expect(file.kind).toBe('kinko.chats');
  expect(file.version).toBe(1);
  expect(file.chats).toHaveLength(1);
  expect(file.chats[0].messages).toHaveLength(5);

  // One chat as Markdown: the branch on screen.
  await page.getByTestId('chat-settings').click();
  const [md] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-chat-md').click()]);
  expect(md.suggestedFilename()).toBe('kinko-kyoto-trip.md');
  expect(fs.readFileSync(await md.path(), 'utf8')).toBe(
    '# Kyoto trip\n\n## You\n\nPlan a day in Kyoto\n\n## fake:latest\n\nBegin with Kiyomizu-dera.\n');
  const [one] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-chat').click()]);
  expect(one.suggestedFilename()).toBe('kinko-kyoto-trip.json');
  expect(JSON.parse(fs.readFileSync(await one.path(), 'utf8')).chats[0].title).toBe('Kyoto trip');

  const fresh = await page.context().browser()!.newContext();
  const other = await fresh.newPage();
  await open(other);
  await other.getByTestId('import-chats').setInputFiles(await all.path());
  await expect(other.getByTestId('notice').locator('span')).toHaveText('Imported 1 chat.');
  await other.getByTestId('chat-item').first().locator('.chat-open').click();
  expect(await texts(other)).toEqual(['Plan a day in Kyoto', 'Begin with Kiyomizu-dera.']);
  await fresh.close();
});

test('text files attach (button, drop), are sent inlined with their names; binaries are refused', async ({ page }) => {
  await open(page);
  const sent = requests(page);
  await page.getByTestId('attach').setInputFiles([
    { name: 'notes.md', mimeType: 'text/markdown', buffer: Buffer.from('# Notes\nbuy tea\n') },
    { name: 'logo.png', mimeType: 'image/png', buffer: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0xff]) },
  ]);
  await expect(page.getByTestId('attachment')).toHaveText(['notes.md✕']);
  await expect(page.getByTestId('notice').locator('span')).toHaveText(/logo\.png is not a text file/);
  // Dropped onto the composer.
  await page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['a,b\n1,2\n'], 'table.csv', { type: 'text/csv' }));
    document.querySelector('.composer')!.dispatchEvent(new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: dt }));
  });
  await expect(page.getByTestId('attachment')).toHaveText(['notes.md✕', 'table.csv✕']);
  // Pasted into the message box.
  await page.getByTestId('composer').evaluate((el) => {
    const dt = new DataTransfer();
    dt.items.add(new File(['{"a": 1}'], 'data.json', { type: 'application/json' }));
    el.dispatchEvent(new ClipboardEvent('paste', { bubbles: true, cancelable: true, clipboardData: dt }));
  });
  await expect(page.getByTestId('attachment')).toHaveText(['notes.md✕', 'table.csv✕', 'data.json✕']);
  await page.getByTestId('attachment').nth(2).getByRole('button').click();
  await expect(page.getByTestId('attachment')).toHaveText(['notes.md✕', 'table.csv✕']);
  await say(page, 'summarise these');
  const question = sent[0].messages[0].content;
  expect(question).toBe('summarise these\n\nFile `notes.md`:\n```\n# Notes\nbuy tea\n```\n\nFile `table.csv`:\n```\na,b\n1,2\n```');
  await expect(questions(page).locator('.attachment')).toHaveText(['notes.md', 'table.csv']);
  await expect(page.getByTestId('attachment')).toHaveCount(0);
  // Too big: refused with the limit.
  await page.getByTestId('attach').setInputFiles({ name: 'huge.txt', mimeType: 'text/plain', buffer: Buffer.alloc(300 * 1024, 97) });
  await expect(page.getByTestId('notice').locator('span')).toHaveText('huge.txt is too big to attach (the limit is 256 KB per file).');
});

test('theme and keys: system/light/dark, new chat, search, Esc stops, help', async ({ page }) => {
  await page.emulateMedia({ colorScheme: 'light' });
  await open(page, FAKE_URL);
  const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  expect(await bg()).toBe('rgb(247, 247, 245)');
  await page.getByTestId('theme').selectOption('dark');
  await expect(page.locator('html')).toHaveAttribute('data-theme', 'dark');
  expect(await bg()).toBe('rgb(20, 20, 22)');
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  expect(await bg()).toBe('rgb(20, 20, 22)');
  await expect(page.getByTestId('theme')).toHaveValue('dark');
  await page.getByTestId('theme').selectOption('system');
  await expect(page.locator('html')).not.toHaveAttribute('data-theme', /./);
  await page.emulateMedia({ colorScheme: 'dark' });
  expect(await bg()).toBe('rgb(20, 20, 22)');

  // Esc stops a streaming answer (the engine too: the answer ends stopped).
  await page.getByTestId('composer').fill('a long one');
  await page.getByTestId('composer').press('Enter');
  await expect(page.getByTestId('stop')).toBeVisible();
  await expect(answers(page).last().locator('.md-block').first()).not.toBeEmpty();
  // Polite, once: nothing is announced while the answer streams.
  await expect(page.getByTestId('announcer')).toHaveText('');
  await expect(page.getByTestId('conversation')).not.toHaveAttribute('aria-live', /./);
  await page.keyboard.press('Escape');
  await expect(page.getByTestId('send')).toBeVisible();
  await expect(page.getByTestId('note')).toHaveText('Stopped.');
  const said = (await answers(page).last().locator('.bubble').textContent())!.trim();
  expect(said.length).toBeGreaterThan(0);
  await expect(page.getByTestId('announcer')).toHaveText(said);

  await page.keyboard.press('Control+K');
  await expect(page.getByTestId('chat-search')).toBeFocused();
  await page.keyboard.press('Control+Shift+O');
  await expect(page.getByTestId('message')).toHaveCount(0);
  await expect(page.getByTestId('composer')).toBeFocused();
  await page.keyboard.press('Control+/');
  await expect(page.getByTestId('help-dialog')).toBeVisible();
  await expect(page.getByTestId('help-dialog')).toContainText('Ctrl+Shift+O');
  await expect(page.getByTestId('help-close')).toBeFocused();
  await page.keyboard.press('Escape');
  await expect(page.getByTestId('help-dialog')).toHaveCount(0);
  await page.getByTestId('help').click();
  await expect(page.getByTestId('help-dialog')).toBeVisible();
  await page.getByTestId('help-close').click();
  await expect(page.getByTestId('help-dialog')).toHaveCount(0);
});

test('accessibility: axe-core finds no serious or critical violation', async ({ browser }) => {
  const axe = path.join(__dirname, '..', 'node_modules', 'axe-core', 'axe.min.js');
  // axe is injected as a script, which the page's policy would rightly refuse.
  for (const [lang, scheme] of [['en-US', 'light'], ['ja-JP', 'dark']] as const) {
    const context = await browser.newContext({ bypassCSP: true, locale: lang, colorScheme: scheme });
    const page = await context.newPage();
    await open(page);
    await say(page, 'Hello **there**\n\n```rust\nfn main() {}\n```');
    await page.getByTestId('regenerate').click();
    await done(page);
    await page.getByTestId('chat-settings').click();
    const check = async (what: string) => {
      await page.addScriptTag({ path: axe });
      const result = await page.evaluate(async () => (window as any).axe.run(document, { resultTypes: ['violations'] }));
      const bad = result.violations
        .filter((v: any) => v.impact === 'serious' || v.impact === 'critical')
        .map((v: any) => `${v.id}: ${v.nodes.map((n: any) => n.target.join(' ')).join(', ')}`);
      expect(bad, `${lang} ${scheme} ${what}`).toEqual([]);
    };
    await check('chat with settings');
    await questions(page).first().getByTestId('edit').click();
    await check('editing');
    await page.keyboard.press('Escape');
    await page.getByTestId('help').click();
    await check('help dialog');
    await context.close();
  }
});

test("the settings panel shows a model preset's values where the chat sets none", async ({ page, request }) => {
  // The real server: a preset made from a Modelfile over the default model.
  const REAL_URL = 'http://127.0.0.1:3210';
  const name = 'e2e-preset:latest';
  const made = await request.post(`${REAL_URL}/api/create`, {
    data: { model: name, stream: false, modelfile: 'FROM smollm2:135m\nSYSTEM """Answer like a pirate."""\nPARAMETER temperature 0.3\nPARAMETER num_ctx 1024\n' },
  });
  expect(made.status()).toBe(200);
  try {
    await open(page, REAL_URL);
    await page.getByTestId('model-picker').selectOption(name);
    await page.getByTestId('chat-settings').click();
    await expect(page.getByTestId('system-prompt')).toHaveAttribute('placeholder', 'Answer like a pirate. (model preset)');
    await expect(page.getByTestId('temperature')).toHaveAttribute('placeholder', '0.3 (model preset)');
    await expect(page.getByTestId('top-k')).toHaveAttribute('placeholder', /^\d+ \(server default\)$/);
    await expect(page.getByTestId('num-ctx').locator('option').first()).toHaveText(/^1024 tokens \(default\)/);
    // Set in the chat, the chat's own value wins and the hint says what it replaces.
    await page.getByTestId('temperature').fill('0.9');
    await expect(page.locator('#temperature-hint')).toHaveText('Set for this chat, instead of 0.3 (model preset)');
  } finally {
    await request.delete(`${REAL_URL}/api/delete`, { data: { model: name } });
  }
});

test('a hidden tab (no animation frames) still saves a streaming answer every ~500 ms', async ({ page }) => {
  // Browsers run no requestAnimationFrame callbacks in a hidden tab.
  await page.addInitScript(() => {
    window.requestAnimationFrame = () => 0;
  });
  await open(page);
  const writes = await countWrites(page);
  const words = Array.from({ length: 400 }, (_, i) => `w${i}`).join(' ');
  await page.getByTestId('composer').fill(words);
  await page.getByTestId('composer').press('Enter');
  // While it streams, the stored answer grows.
  await expect.poll(writes, { timeout: 10_000 }).toBeGreaterThanOrEqual(3);
  await done(page);
  await expect(answers(page).last().locator('.bubble')).toHaveText(words);
});

test('an upstream\'s models are in the picker, marked remote under its name, and answer', async ({ page }) => {
  const seen = requests(page);
  await open(page);
  // The upstream is checked in the background: its models come with it.
  const group = page.locator('[data-testid=model-picker] optgroup[data-upstream=lab]');
  await expect(group).toHaveAttribute('label', 'Remote · lab');
  await expect(group.locator('option')).toHaveText(['lab/fake:latest · remote · none · 4k ctx']);
  await expect(page.locator('[data-testid=model-picker] optgroup').first()).toHaveAttribute('label', 'On this machine');
  // Each model says what it can do (a plain chat model: completion only;
  // one whose template renders tools adds ` · tools` to its label).
  const alpha = page.locator('[data-testid=model-picker] option[value="alpha:1b"]');
  await expect(alpha).toHaveAttribute('data-capabilities', 'completion');
  await expect(alpha).toHaveAttribute('title', 'Capabilities: completion');
  await expect(page.getByTestId('empty')).toContainText('A private chat that stays on this machine.');
  await page.getByTestId('model-picker').selectOption('lab/fake:latest');
  // The page says where the conversation goes.
  await expect(page.getByTestId('empty')).toHaveText(
    'This model runs on another machine.kinko sends this conversation to the upstream “lab” that this server is set up to use.');
  await say(page, 'hello from the browser');
  await expect(answers(page).last().locator('.bubble')).toHaveText('hello from the browser');
  await expect(answers(page).last().getByTestId('answer-stats')).toBeVisible();
  expect(seen.at(-1).model).toBe('lab/fake:latest');
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'upstream-picker.png') });
});
