// Drives Debian's headless Chromium against a page the tests serve on
// loopback, as a person on a phone would use it: paste a capture into the
// page's textarea, press send, wait for the verdict, screenshot it.
//
//   node capture.mjs <url> <file-with-text-to-paste> <screenshot.png>
//   node capture.mjs --screenshot-only <url> <screenshot.png>
//
// The page must have `textarea#storage`, `button#send` and `#status`, which
// gets `data-state="success"` or `"error"` when it is done.
//
// Prints ONE JSON line on stdout:
//   {"state":"success"|"error"|null, "message":"<#status text>",
//    "status":<HTTP status of the page>, "csp":"<its Content-Security-Policy
//    header>"|null, "console_errors":[…], "requests":[every URL the page
//    asked for], "blocked":[those not on loopback, which were refused]}
// (`state` and `message` are null with --screenshot-only.) Exits non-zero
// with a message on stderr when something fails; a screenshot is still
// attempted so the failure can be looked at.
//
// Chromium is /usr/bin/chromium unless $CHROMIUM names another. It runs
// headless with the flags this machine needs (without the background-
// networking ones Chromium keeps dialling out), in a fresh profile that is
// deleted afterwards. Only loopback is reachable: any other request is
// aborted, so a page can't send traffic off the machine.

import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

// A phone: the helper page is meant to work on one.
const VIEWPORT = { width: 390, height: 844 };

// How long the page may take to give its verdict after `send`.
const VERDICT_TIMEOUT_MS = 15_000;

const USAGE = `usage: node capture.mjs <url> <file-with-text-to-paste> <screenshot.png>
       node capture.mjs --screenshot-only <url> <screenshot.png>`;

function fail(message) {
    process.stderr.write(`capture.mjs: ${message}\n`);
    process.exitCode = 1;
}

function isLoopback(url) {
    let host;
    try {
        host = new URL(url).hostname;
    } catch {
        return false;
    }
    return (
        host === "localhost" ||
        host === "[::1]" ||
        /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
    );
}

async function main(argv) {
    const screenshotOnly = argv[0] === "--screenshot-only";
    const args = screenshotOnly ? argv.slice(1) : argv;
    if (args.length !== (screenshotOnly ? 2 : 3)) {
        fail(USAGE);
        return;
    }
    const url = args[0];
    const pasteFile = screenshotOnly ? null : args[1];
    const screenshot = args[args.length - 1];

    let text = null;
    if (pasteFile !== null) {
        try {
            text = await readFile(pasteFile, "utf8");
        } catch (e) {
            fail(`cannot read ${pasteFile}: ${e.message}`);
            return;
        }
    }

    const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
    const profile = await mkdtemp(join(tmpdir(), "weft-chromium-"));
    let context;
    try {
        try {
            context = await chromium.launchPersistentContext(profile, {
                executablePath,
                headless: true,
                args: FLAGS,
                viewport: VIEWPORT,
                isMobile: true,
                hasTouch: true,
                deviceScaleFactor: 1,
            });
        } catch (e) {
            fail(`cannot start ${executablePath}: ${e.message.split("\n")[0]}`);
            return;
        }
        await run(context, { url, text, screenshot, screenshotOnly });
    } finally {
        if (context) await context.close().catch(() => {});
        await rm(profile, { recursive: true, force: true });
    }
}

async function run(context, { url, text, screenshot, screenshotOnly }) {
    const requests = [];
    const blocked = [];
    const consoleErrors = [];
    context.on("request", (request) => requests.push(request.url()));
    await context.route("**/*", (route) => {
        const requested = route.request().url();
        if (isLoopback(requested)) return route.continue();
        blocked.push(requested);
        return route.abort("blockedbyclient");
    });

    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (message) => {
        if (message.type() === "error") consoleErrors.push(message.text());
    });
    page.on("pageerror", (error) => consoleErrors.push(`uncaught: ${error.message}`));

    const report = {
        state: null,
        message: null,
        status: null,
        csp: null,
        console_errors: consoleErrors,
        requests,
        blocked,
    };
    const shoot = async () => {
        try {
            await page.screenshot({ path: screenshot, fullPage: true });
            return true;
        } catch (e) {
            fail(`cannot take the screenshot ${screenshot}: ${e.message.split("\n")[0]}`);
            return false;
        }
    };

    let response;
    try {
        response = await page.goto(url, { waitUntil: "load", timeout: 15_000 });
    } catch (e) {
        fail(`cannot open ${url}: ${e.message.split("\n")[0]}`);
        await shoot();
        return;
    }
    if (response) {
        report.status = response.status();
        report.csp = (await response.headerValue("content-security-policy")) ?? null;
    }

    if (!screenshotOnly) {
        try {
            await page.fill("textarea#storage", text, { timeout: 5_000 });
            await page.click("button#send", { timeout: 5_000 });
        } catch (e) {
            fail(`cannot paste and send on ${url}: ${e.message.split("\n")[0]}`);
            await shoot();
            return;
        }
        const done = '#status[data-state="success"], #status[data-state="error"]';
        try {
            await page.waitForSelector(done, { timeout: VERDICT_TIMEOUT_MS });
        } catch {
            const state = await page
                .getAttribute("#status", "data-state", { timeout: 1_000 })
                .catch(() => null);
            const shown = await page
                .innerText("#status", { timeout: 1_000 })
                .catch(() => "(no #status)");
            fail(
                `#status never reached data-state success or error within ${VERDICT_TIMEOUT_MS / 1000} s ` +
                    `(data-state ${JSON.stringify(state)}, text ${JSON.stringify(shown.trim())}); ` +
                    `screenshot in ${screenshot}`,
            );
            await shoot();
            return;
        }
        report.state = await page.getAttribute("#status", "data-state");
        report.message = (await page.innerText("#status")).trim();
    }

    if (await shoot()) process.stdout.write(`${JSON.stringify(report)}\n`);
}

await main(process.argv.slice(2)).catch((e) => fail(e.stack || String(e)));
