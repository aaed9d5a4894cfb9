import { test, expect, Page, BrowserContext } from '@playwright/test';
import { UI_URL, open, say, seed, countWrites } from './helpers';

// The fake engine on this server echoes each message exactly, fast; it has
// two models, `alpha:1b` and `fake:latest`, and `--default-model fake:latest`.
const SHOTS = process.env.KINKO_SCREENSHOTS;

const titles = (page: Page) => page.getByTestId('chat-item').locator('.chat-title');

/** The titles of the chats stored in IndexedDB now. */
async function storedTitles(page: Page): Promise<string[]> {
  return page.evaluate(async () => {
    const db: IDBDatabase = await new Promise((ok, fail) => {
      const r = indexedDB.open('kinko', 1);
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
    const all: string[] = await new Promise((ok) => {
      const r = db.transaction('chats').objectStore('chats').getAll();
      r.onsuccess = () => ok(r.result);
    });
    db.close();
    return all.map((t) => {
      const c = JSON.parse(t);
      return c.title || c.messages[0]?.content;
    }).sort();
  });
}

function chat(id: string, title: string, messages: number, updated: number) {
  return {
    id, format: 1, title: '', renamed: false, model: 'fake:latest', pinned: false, created: updated, updated,
    messages: Array.from({ length: messages }, (_, i) => ({
      role: i % 2 ? 'assistant' : 'user',
      content: i === 0 ? title : `message ${i} of ${title}`,
    })),
  };
}

test('conversations: default model, new, switch, search, rename, pin, delete with undo', async ({ page }) => {
  await open(page);
  // The server's default model, not the alphabetically first.
  await expect(page.getByTestId('model-picker')).toHaveValue('fake:latest');
  await expect(page.getByTestId('chat-item')).toHaveCount(0);

  await say(page, 'Kyoto trip plans\nwith a second line');
  await expect(titles(page)).toHaveText(['Kyoto trip plans']);
  await expect(page.getByTestId('chat-item').first()).toHaveAttribute('data-active', 'true');

  // A second chat on the other model.
  await page.getByTestId('new-chat').click();
  await expect(page.getByTestId('message')).toHaveCount(0);
  await expect(page.getByTestId('model-picker')).toHaveValue('fake:latest');
  await page.getByTestId('model-picker').selectOption('alpha:1b');
  await say(page, 'Rust lifetimes');
  await say(page, 'and the borrow checker');
  // Most recent activity first.
  await expect(titles(page)).toHaveText(['Rust lifetimes', 'Kyoto trip plans']);

  // Switching brings back each chat with its own model.
  await titles(page).nth(1).click();
  await expect(page.locator('[data-testid=message][data-role=user] .bubble')).toHaveText(['Kyoto trip plans\nwith a second line']);
  await expect(page.getByTestId('model-picker')).toHaveValue('fake:latest');
  await expect(page.getByTestId('chat-item').nth(1)).toHaveAttribute('data-active', 'true');
  await titles(page).nth(0).click();
  await expect(page.getByTestId('message')).toHaveCount(4);
  await expect(page.getByTestId('model-picker')).toHaveValue('alpha:1b');

  // Search looks at titles and at message text.
  await page.getByTestId('chat-search').fill('borrow');
  await expect(titles(page)).toHaveText(['Rust lifetimes']);
  await page.getByTestId('chat-search').fill('KYOTO');
  await expect(titles(page)).toHaveText(['Kyoto trip plans']);
  await page.getByTestId('chat-search').fill('nothing like this');
  await expect(page.getByTestId('chat-item')).toHaveCount(0);
  await page.getByTestId('chat-search').fill('');
  await expect(page.getByTestId('chat-item')).toHaveCount(2);

  // Rename.
  await page.getByTestId('chat-item').nth(1).getByTestId('chat-rename').click();
  const field = page.getByRole('textbox', { name: 'Chat title' });
  await field.fill('Japan 2027');
  await field.press('Enter');
  await expect(titles(page)).toHaveText(['Rust lifetimes', 'Japan 2027']);

  // Pin to top.
  await page.getByTestId('chat-item').nth(1).getByTestId('chat-pin').click();
  await expect(titles(page)).toHaveText(['Japan 2027', 'Rust lifetimes']);
  await expect(page.getByTestId('chat-item').nth(0).getByTestId('chat-pin')).toHaveAttribute('aria-pressed', 'true');
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/conversations.png` });

  // Delete the open chat, then undo: nothing lost, and it is open again.
  await page.getByTestId('chat-item').nth(1).getByTestId('chat-delete').click();
  await expect(titles(page)).toHaveText(['Japan 2027']);
  await page.getByTestId('chat-undo').click();
  await expect(titles(page)).toHaveText(['Japan 2027', 'Rust lifetimes']);
  await expect.poll(() => storedTitles(page)).toEqual(['Japan 2027', 'Rust lifetimes']);

  // Everything above survived in IndexedDB.
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await expect(titles(page)).toHaveText(['Japan 2027', 'Rust lifetimes']);
  await expect(page.getByTestId('message')).toHaveCount(4);

  // A delete without undo stays deleted: the record goes from IndexedDB.
  await page.getByTestId('chat-item').nth(1).getByTestId('chat-delete').click();
  await expect(page.getByTestId('message')).toHaveCount(0);
  await expect.poll(() => storedTitles(page)).toEqual(['Japan 2027']);
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await expect(titles(page)).toHaveText(['Japan 2027']);
});

test('the earlier localStorage conversation is migrated once and never lost', async ({ page }) => {
  const legacy = {
    model: 'alpha:1b',
    num_ctx: 2048,
    messages: [
      { role: 'user', content: 'My old question\nwith two lines' },
      { role: 'assistant', content: 'An **old** answer.' },
      { role: 'user', content: 'second question' },
      { role: 'assistant', content: 'cut off mid', pending: true },
    ],
  };
  await page.goto(`${UI_URL}/health`);
  await page.evaluate((v) => localStorage.setItem('kinko.chat.v1', JSON.stringify(v)), legacy);
  await open(page);
  await expect(titles(page)).toHaveText(['My old question']);
  await titles(page).first().click();
  await expect(page.getByTestId('message')).toHaveCount(4);
  await expect(page.locator('[data-testid=message][data-role=user] .bubble').first()).toHaveText('My old question\nwith two lines');
  await expect(page.locator('[data-testid=message][data-role=assistant] strong')).toHaveText('old');
  await expect(page.getByTestId('note')).toHaveText('Interrupted by a page reload.');
  await expect(page.getByTestId('model-picker')).toHaveValue('alpha:1b');
  await expect(page.getByTestId('num-ctx')).toHaveValue('2048');
  // The old record is still there, and a reload does not copy it twice.
  expect(await page.evaluate(() => localStorage.getItem('kinko.chat.v1'))).toBe(JSON.stringify(legacy));
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await expect(page.getByTestId('chat-item')).toHaveCount(1);
  // Continuing the migrated chat is saved with it.
  await say(page, 'a third question');
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await expect(page.getByTestId('message')).toHaveCount(6);
});

test('two tabs never overwrite each other', async ({ context }) => {
  const a = await context.newPage();
  const b = await context.newPage();
  await open(a);
  await open(b);
  await say(a, 'from tab A');
  await say(b, 'from tab B');
  // Each tab hears of the other's chat.
  await expect(titles(a)).toHaveText(['from tab B', 'from tab A']);
  await expect(titles(b)).toHaveText(['from tab B', 'from tab A']);
  // B continues A's chat; A, which has it open, shows the new turn.
  await titles(b).nth(1).click();
  await say(b, 'B adds to A');
  await expect(a.locator('[data-testid=message][data-role=user] .bubble')).toHaveText(['from tab A', 'B adds to A']);
  // A writes to its chat again: B's turn is kept, and B's own chat too.
  await say(a, 'A again');
  for (const page of [a, b]) {
    await page.reload();
    await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
    await expect(titles(page)).toHaveText(['from tab A', 'from tab B']);
  }
  await titles(b).nth(0).click();
  await expect(b.locator('[data-testid=message][data-role=user] .bubble')).toHaveText(['from tab A', 'B adds to A', 'A again']);
  await titles(b).nth(1).click();
  await expect(b.locator('[data-testid=message][data-role=user] .bubble')).toHaveText(['from tab B']);
});

test('a failed write is shown and loses nothing already saved', async ({ page }) => {
  await open(page);
  await say(page, 'saved before the disk filled');
  // The disk fills up: every IndexedDB write now fails as Chromium's do.
  await page.evaluate(() => {
    const w = window as unknown as { realPut: unknown };
    w.realPut = IDBObjectStore.prototype.put;
    IDBObjectStore.prototype.put = function () {
      throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
    };
  });
  await page.getByTestId('new-chat').click();
  await say(page, 'this one cannot be saved');
  await expect(page.getByTestId('storage-error')).toContainText('could not be saved');
  await expect(page.getByTestId('storage-error')).toContainText('Nothing saved before is lost');
  // The tab still has the unsaved chat.
  await expect(page.locator('[data-testid=message][data-role=user] .bubble')).toHaveText(['this one cannot be saved']);
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/storage-error.png` });
  // Space again: the next change saves the chat and the message goes.
  await page.evaluate(() => {
    IDBObjectStore.prototype.put = (window as unknown as { realPut: typeof IDBObjectStore.prototype.put }).realPut;
  });
  await say(page, 'and now it can');
  await expect(page.getByTestId('storage-error')).toHaveCount(0);
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await expect(titles(page)).toHaveText(['this one cannot be saved', 'saved before the disk filled']);
  await titles(page).nth(1).click();
  await expect(page.locator('[data-testid=message][data-role=assistant] .bubble')).toHaveText(['saved before the disk filled']);
});

test('while an answer streams the chat is saved every ~500 ms, not per token', async ({ page }) => {
  await open(page);
  const writes = await countWrites(page);
  const words = Array.from({ length: 400 }, (_, i) => `w${i}`).join(' ');
  const started = Date.now();
  await say(page, words);
  const seconds = (Date.now() - started) / 1000;
  const puts = await writes();
  // 400 tokens; one write as the question is sent, about two a second
  // while the answer streams, one at its end.
  expect(seconds).toBeGreaterThan(1);
  expect(puts).toBeGreaterThanOrEqual(2);
  expect(puts).toBeLessThanOrEqual(Math.ceil(seconds * 2) + 3);
});

test('a 2,000-message conversation opens at once, its list windowed', async ({ page }) => {
  await open(page);
  const now = Date.now();
  await seed(page, [chat('big', 'The big one', 2000, now), chat('small', 'A small one', 2, now - 1000)]);
  await page.reload();
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
  await expect(titles(page)).toHaveText(['The big one', 'A small one']);
  const started = Date.now();
  await titles(page).first().click();
  await expect(page.getByTestId('message').last().locator('.bubble')).toHaveText('message 1999 of The big one');
  await expect(page.getByTestId('message').last()).toBeInViewport();
  const rendered = await page.getByTestId('message').count();
  expect(rendered).toBeLessThan(200);
  // Scrolling up brings earlier messages in, without a jump.
  await page.getByTestId('conversation').evaluate((el) => (el.scrollTop = 0));
  await expect.poll(() => page.getByTestId('message').count()).toBeGreaterThan(rendered);
  // Search finds text deep inside it.
  await page.getByTestId('chat-search').fill('message 7 of The big');
  await expect(titles(page)).toHaveText(['The big one']);
  console.log(`opened a 2,000-message chat in ${Date.now() - started} ms (${rendered} rendered)`);
});

test('on a narrow screen the sidebar is a drawer', async ({ browser }) => {
  const context: BrowserContext = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  await open(page);
  await say(page, 'phone chat');
  const list = page.getByTestId('chat-list');
  await expect(list).not.toBeInViewport();
  await page.getByTestId('sidebar-toggle').click();
  await expect(list).toBeInViewport();
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/drawer.png` });
  await page.getByTestId('new-chat').click();
  await expect(list).not.toBeInViewport();
  await expect(page.getByTestId('message')).toHaveCount(0);
  await page.getByTestId('sidebar-toggle').click();
  await titles(page).first().click();
  await expect(list).not.toBeInViewport();
  await expect(page.getByTestId('message')).toHaveCount(2);
  await context.close();
});
