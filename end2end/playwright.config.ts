// Browser tests against the real kinko binary, in Debian's Chromium (never a
// browser downloaded by Playwright). Two servers: the real engine with the
// default model, and the fake engine (slow, long answers) for Stop.
import { defineConfig } from '@playwright/test';

const bin = process.env.KINKO_BIN;
if (!bin) {
  throw new Error('KINKO_BIN is not set: run the tests with scripts/test.sh');
}
const siteRoot = process.env.KINKO_SITE_ROOT ?? '../target/site';
export const REAL_URL = 'http://127.0.0.1:3210';
export const FAKE_URL = 'http://127.0.0.1:3211';
export const GUARDED_URL = 'http://127.0.0.1:3212';
export const UI_URL = 'http://127.0.0.1:3213';

export default defineConfig({
  testDir: './tests',
  timeout: 90_000,
  expect: { timeout: 30_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list']],
  use: {
    browserName: 'chromium',
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    },
    screenshot: 'only-on-failure',
    trace: 'off',
  },
  webServer: [
    {
      command: `${bin} serve --addr 127.0.0.1:3210 --site-root ${siteRoot}`,
      url: `${REAL_URL}/health`,
      timeout: 60_000,
      reuseExistingServer: false,
      stdout: 'pipe',
      stderr: 'pipe',
    },
    {
      command: `${bin} serve --addr 127.0.0.1:3211 --site-root ${siteRoot} --engine fake --fake-token-delay-ms 40 --fake-min-tokens 2000 --max-tokens-cap 4096 --default-max-tokens 2000 --fake-context 8192 --fake-prompt-ms-per-token 30`,
      url: `${FAKE_URL}/health`,
      timeout: 60_000,
      reuseExistingServer: false,
    },
    {
      // An API key and a two-message history window: login and trim note.
      command: `${bin} serve --addr 127.0.0.1:3212 --site-root ${siteRoot} --engine fake --api-key browser-key-123 --max-history-messages 2`,
      url: `${GUARDED_URL}/health`,
      timeout: 60_000,
      reuseExistingServer: false,
    },
    {
      // Echoes each message exactly and quickly; two models, and a default
      // that is not the alphabetically first; and the guarded server's
      // models as an upstream, `lab/…` (with its key).
      command: `${bin} serve --addr 127.0.0.1:3213 --site-root ${siteRoot} --engine fake --fake-token-delay-ms 4 --fake-models alpha:1b,fake:latest --default-model fake:latest --upstream lab=ollama:http://127.0.0.1:3212`,
      env: { ...process.env, KINKO_UPSTREAM_KEY_LAB: 'browser-key-123' } as Record<string, string>,
      url: `${UI_URL}/health`,
      timeout: 60_000,
      reuseExistingServer: false,
    },
  ],
});
