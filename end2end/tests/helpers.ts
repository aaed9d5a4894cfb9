// What the browser tests share: opening the page, saying something and
// waiting for the whole answer, and reaching into kinko's IndexedDB.
import { expect, Page } from '@playwright/test';

/** The fake engine that echoes each question exactly, fast; models
 * `alpha:1b` and `fake:latest` (the default). */
export const UI_URL = 'http://127.0.0.1:3213';

/** Open the page and wait until it is hydrated. */
export async function open(page: Page, url = UI_URL) {
  await page.goto(url);
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
}

/** Wait until the last answer has ended and Send is back. */
export async function done(page: Page) {
  await expect(page.locator('[data-testid=message][data-role=assistant]').last()).toHaveAttribute('class', /^msg assistant$/);
  await expect(page.getByTestId('send')).toBeVisible();
}

/** Send `text` and wait for the whole answer. */
export async function say(page: Page, text: string) {
  await page.getByTestId('composer').fill(text);
  await page.getByTestId('composer').press('Enter');
  await done(page);
}

/** Write chats straight into kinko's IndexedDB, as the page stores them. */
export async function seed(page: Page, chats: object[]) {
  await page.evaluate(async (chats) => {
    const db: IDBDatabase = await new Promise((ok, fail) => {
      const r = indexedDB.open('kinko', 1);
      r.onupgradeneeded = () => r.result.createObjectStore('chats');
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
    const tx = db.transaction('chats', 'readwrite');
    for (const c of chats as { id: string }[]) tx.objectStore('chats').put(JSON.stringify(c), c.id);
    await new Promise((ok) => (tx.oncomplete = ok));
    db.close();
  }, chats);
}

/** Count the page's IndexedDB writes from now on; returns the count so far. */
export async function countWrites(page: Page): Promise<() => Promise<number>> {
  await page.evaluate(() => {
    const w = window as unknown as { puts: number };
    w.puts = 0;
    const real = IDBObjectStore.prototype.put;
    IDBObjectStore.prototype.put = function (...args: Parameters<typeof real>) {
      w.puts += 1;
      return real.apply(this, args);
    };
  });
  return () => page.evaluate(() => (window as unknown as { puts: number }).puts);
}
