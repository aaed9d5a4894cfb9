import { test, expect, Page } from '@playwright/test';
import { UI_URL, open } from './helpers';

// The fake engine on this server echoes each message exactly, so any
// markdown can be streamed through the page.
const SHOTS = process.env.KINKO_SCREENSHOTS;


async function stream(page: Page, text: string) {
  await page.getByTestId('composer').fill(text);
  await page.getByTestId('composer').press('Enter');
  await expect(page.getByTestId('send')).toBeVisible();
  await expect(page.locator('[data-testid=message][data-role=assistant]').last()).toHaveAttribute('class', /^msg assistant$/);
  return page.locator('[data-testid=message][data-role=assistant]').last();
}

const SAMPLE = [
  '# Heading',
  '',
  'Some **bold**, ~~struck~~ and `inline` text with a [link](https://example.com).',
  '',
  '| Name | Size |',
  '|------|-----:|',
  '| kinko | 1 |',
  '',
  '- [x] done',
  '- [ ] to do',
  '',
  '```rust',
  'fn main() {',
  '    let answer = 42; // the answer',
  '}',
  '```',
].join('\n');

test('answers render as markdown with highlighted, copyable code; questions show as typed', async ({ page, context }) => {
  await context.grantPermissions(['clipboard-read', 'clipboard-write']);
  await open(page);
  const answer = await stream(page, SAMPLE);
  await expect(page.locator('[data-testid=message][data-role=user] .bubble')).toHaveText(SAMPLE);
  await expect(answer.locator('h1')).toHaveText('Heading');
  await expect(answer.locator('strong')).toHaveText('bold');
  await expect(answer.locator('del')).toHaveText('struck');
  await expect(answer.locator('a')).toHaveAttribute('href', 'https://example.com');
  await expect(answer.locator('a')).toHaveAttribute('rel', /noopener/);
  await expect(answer.locator('table td')).toHaveText(['kinko', '1']);
  await expect(answer.locator('input[type=checkbox]')).toHaveCount(2);
  await expect(answer.locator('input[type=checkbox]').first()).toBeChecked();
  await expect(answer.locator('.code-lang')).toHaveText('rust');
  await expect(answer.locator('code .tk-k').first()).toHaveText('fn');
  await expect(answer.locator('code .tk-c')).toHaveText('// the answer');
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/markdown.png`, fullPage: true });

  await answer.getByTestId('copy-code').click();
  await expect(answer.getByTestId('copy-code')).toHaveText('Copied');
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe('fn main() {\n    let answer = 42; // the answer\n}\n');
  await page.evaluate(() => navigator.clipboard.writeText(''));
  await answer.getByTestId('copy-message').click();
  await expect.poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe(SAMPLE);
  // A question has its copy button too.
  await page.evaluate(() => navigator.clipboard.writeText(''));
  await page.locator('[data-testid=message][data-role=user]').getByTestId('copy-message').click();
  await expect.poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe(SAMPLE);
});

const PAYLOADS = [
  '<script>window.__xss = "script"</script>',
  '<img src=x onerror="window.__xss=\'img\'">',
  'inline <svg onload="window.__xss=\'svg\'"></svg> and <b onmouseover="window.__xss=1">b</b>',
  '[click](javascript:window.__xss=\'link\')',
  '[tab](java\tscript:window.__xss=1) [entity](&#106;avascript:window.__xss=1)',
  '[data](data:text/html,<script>window.__xss=1</script>)',
  '[vb](vbscript:msgbox(1)) <javascript:window.__xss=1>',
  '![image](javascript:window.__xss=1) ![tracker](http://127.0.0.1:9/pixel.png)',
  '<iframe src="javascript:window.__xss=1"></iframe>',
  '<a href="javascript:window.__xss=1">raw link</a>',
  '```"><img src=x onerror=window.__xss=1>\ncode\n```',
];

test('model output never runs as script (XSS payloads through the stream), and the page has a strict CSP', async ({ page }) => {
  const violations: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') violations.push(m.text()); });
  const response = await page.goto(UI_URL);
  const csp = response!.headers()['content-security-policy'];
  expect(csp).toMatch(/script-src 'self' 'nonce-[A-Za-z0-9_-]{16,}' 'wasm-unsafe-eval'/);
  expect(csp).not.toContain('unsafe-inline');
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');

  for (const p of PAYLOADS) await stream(page, p);
  const conv = page.getByTestId('conversation');
  await expect(page.locator('[data-testid=message][data-role=assistant]')).toHaveCount(PAYLOADS.length);
  // Shown as text.
  await expect(conv).toContainText('<script>window.__xss = "script"</script>');
  await expect(conv).toContainText('<img src=x onerror=');
  // No element the model asked for exists, no handler, no live bad link.
  const found = await conv.evaluate((el) => {
    const bad: string[] = [];
    for (const e of el.querySelectorAll('*')) {
      if (['SCRIPT', 'IMG', 'IFRAME', 'OBJECT', 'EMBED', 'B'].includes(e.tagName) || e.tagName.toLowerCase() === 'svg' && !e.closest('button')) bad.push(e.tagName);
      for (const a of e.getAttributeNames()) if (a.startsWith('on')) bad.push(`${e.tagName}[${a}]`);
      const href = e.getAttribute('href');
      if (href && !/^(https?:|mailto:|\/|#)/i.test(href.trim())) bad.push(`href=${href}`);
    }
    return bad;
  });
  expect(found).toEqual([]);
  await conv.locator('a, .image-link').evaluateAll((links) => links.forEach((l) => (l as HTMLElement).dispatchEvent(new MouseEvent('mouseover'))));
  expect(await page.evaluate(() => (window as unknown as { __xss?: unknown }).__xss)).toBeUndefined();

  // Even markup that reached the page some other way would not run: an
  // inline handler and an inline script without the nonce are refused.
  for (const how of ['handler', 'script']) {
    const ran = await page.evaluate(async (how) => {
      const seen = new Promise<string>((ok) => document.addEventListener('securitypolicyviolation', (e) => ok(e.violatedDirective), { once: true }));
      if (how === 'handler') {
        const div = document.createElement('div');
        div.innerHTML = '<img src="data:," onload="window.__xss = \'handler\'">';
        document.body.appendChild(div);
      } else {
        const s = document.createElement('script');
        s.textContent = 'window.__xss = "inline"';
        document.body.appendChild(s);
      }
      const directive = await Promise.race([seen, new Promise<string>((ok) => setTimeout(() => ok('none'), 2000))]);
      return { directive, xss: (window as unknown as { __xss?: unknown }).__xss };
    }, how);
    expect(ran.xss).toBeUndefined();
    expect(ran.directive).toMatch(/script-src/);
  }
});

test('a thinking section is collapsed, sized, and not sent back', async ({ page }) => {
  await open(page);
  const answer = await stream(page, '<think>First I weigh the options carefully.</think>\n\nThe **answer**.');
  const thinking = answer.getByTestId('thinking');
  await expect(thinking).toHaveCount(1);
  await expect(thinking).not.toHaveAttribute('open', /.*/);
  await expect(thinking.locator('summary')).toHaveText('Thinking · 6 words');
  await expect(answer.locator('.md-block strong')).toHaveText('answer');
  const sent = page.waitForRequest((r) => r.url().endsWith('/api/chat/stream'));
  await page.getByTestId('composer').fill('next');
  await page.getByTestId('composer').press('Enter');
  const history = (await sent).postDataJSON().messages;
  expect(history[1]).toEqual({ role: 'assistant', content: 'The **answer**.' });
  await expect(page.getByTestId('send')).toBeVisible();
});

test('only the streaming message changes, and its finished blocks stay as they are', async ({ page }) => {
  await open(page);
  await stream(page, 'An earlier answer with `code`.');
  const sections = Array.from({ length: 12 }, (_, i) => `## Part ${i}\n\nText of part ${i} with several words in it.\n\n\`\`\`py\nx = ${i}\n\`\`\``).join('\n\n');
  await page.evaluate(() => {
    const w = window as unknown as { outside: number; actions: number; firstBlock: Element | null; replaced: boolean };
    w.outside = 0;
    w.actions = 0;
    w.firstBlock = null;
    w.replaced = false;
    const conv = document.querySelector('[data-testid=conversation]')!;
    const earlier = [...conv.querySelectorAll('[data-testid=message]')];
    new MutationObserver((records) => {
      for (const r of records) {
        const t = r.target instanceof Element ? r.target : r.target.parentElement;
        // An earlier message's buttons change once when the answer starts and
        // once when it ends (Edit and Regenerate wait for it), not per token.
        if (t?.closest('.msg-actions') && earlier.some((m) => m.contains(t))) w.actions += 1;
        else if (earlier.some((m) => m.contains(t))) w.outside += 1;
      }
      const streaming = [...conv.querySelectorAll('[data-testid=message][data-role=assistant]')].pop();
      const first = streaming?.querySelector('.md-block:not(.md-tail)') ?? null;
      if (first && !w.firstBlock) w.firstBlock = first;
      if (w.firstBlock && first !== w.firstBlock) w.replaced = true;
    }).observe(conv, { subtree: true, childList: true, characterData: true, attributes: true });
  });
  await stream(page, sections);
  const result = await page.evaluate(() => {
    const w = window as unknown as { outside: number; actions: number; firstBlock: Element | null; replaced: boolean };
    return { outside: w.outside, actions: w.actions, sawBlock: !!w.firstBlock, replaced: w.replaced, attached: !!w.firstBlock?.isConnected };
  });
  expect(result.actions).toBeLessThanOrEqual(8);
  expect({ ...result, actions: 0 }).toEqual({ outside: 0, actions: 0, sawBlock: true, replaced: false, attached: true });
  const answer = page.locator('[data-testid=message][data-role=assistant]').last();
  await expect(answer.locator('h2')).toHaveCount(12);
  await expect(answer.locator('.code-block')).toHaveCount(12);
});
