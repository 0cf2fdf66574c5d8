// Drives Debian's headless Chromium against the host's status page, as an
// operator on a phone would: open it, meet the sign-in form, enter the
// admin token, land on the page, screenshot it.
//
//   node status.mjs <status-url> <file-with-the-admin-token> <screenshot.png>
//
// Screenshots (full page): <screenshot.png> (the status page, phone),
// <screenshot>-sign-in.png (the form, phone) and <screenshot>-wide.png
// (the status page on a laptop-sized screen).
//
// Prints ONE JSON line on stdout:
//   {"sign_in": {"status", "has_form", "text"},   // the page before signing in
//    "status", "url", "csp", "cache_control",     // the page after signing in
//    "text": "<the page's visible text>", "images", "scripts",
//    "cards": [{"plugin": <data-plugin>, "state": <data-state>, "text"}],
//    "overflows": <wider than the phone's screen>,
//    "cookies": [{name, httpOnly, sameSite, path, secure, expires}],
//    "other_route": {"url", "status", "text"},    // another admin route, with the cookie
//    "console_errors": […], "requests": […], "blocked": […]}
// Exits non-zero with a message on stderr when something fails; a
// screenshot is still attempted so the failure can be looked at.
//
// Chromium is /usr/bin/chromium unless $CHROMIUM names another; flags,
// profile and the loopback-only rule are as in capture.mjs. The token is
// read from a file so it is never on a command line.

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

const PHONE = { width: 390, height: 844 };
const WIDE = { width: 1280, height: 800 };
const TIMEOUT_MS = 15_000;

const USAGE = "usage: node status.mjs <status-url> <file-with-the-admin-token> <screenshot.png>";

function fail(message) {
    process.stderr.write(`status.mjs: ${message}\n`);
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

function sibling(screenshot, suffix) {
    return screenshot.replace(/(\.png)?$/, `-${suffix}.png`);
}

async function main(argv) {
    if (argv.length !== 3) {
        fail(USAGE);
        return;
    }
    const [url, tokenFile, screenshot] = argv;
    let token;
    try {
        token = (await readFile(tokenFile, "utf8")).trim();
    } catch (e) {
        fail(`cannot read ${tokenFile}: ${e.message}`);
        return;
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
                viewport: PHONE,
                isMobile: true,
                hasTouch: true,
                deviceScaleFactor: 1,
            });
        } catch (e) {
            fail(`cannot start ${executablePath}: ${e.message.split("\n")[0]}`);
            return;
        }
        await run(context, { url, token, screenshot });
    } finally {
        if (context) await context.close().catch(() => {});
        await rm(profile, { recursive: true, force: true });
    }
}

async function run(context, { url, token, screenshot }) {
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

    const shoot = async (path) => {
        try {
            await page.screenshot({ path, fullPage: true });
            return true;
        } catch (e) {
            fail(`cannot take the screenshot ${path}: ${e.message.split("\n")[0]}`);
            return false;
        }
    };

    // Before signing in: the form, and nothing else.
    let response;
    try {
        response = await page.goto(url, { waitUntil: "load", timeout: TIMEOUT_MS });
    } catch (e) {
        fail(`cannot open ${url}: ${e.message.split("\n")[0]}`);
        await shoot(screenshot);
        return;
    }
    const signIn = {
        status: response ? response.status() : null,
        has_form: (await page.locator("form#sign-in input#token[type=password]").count()) === 1,
        text: (await page.innerText("body")).trim(),
    };
    await shoot(sibling(screenshot, "sign-in"));

    // Sign in: the form posts, the host redirects to the page.
    let landed;
    try {
        await page.fill("input#token", token, { timeout: 5_000 });
        [landed] = await Promise.all([
            page.waitForResponse(
                (r) => r.url() === url && r.request().method() === "GET",
                { timeout: TIMEOUT_MS },
            ),
            page.click("button#submit", { timeout: 5_000 }),
        ]);
        await page.waitForSelector("main#status", { timeout: TIMEOUT_MS });
    } catch (e) {
        fail(`signing in on ${url} did not reach the status page: ${e.message.split("\n")[0]}`);
        await shoot(screenshot);
        return;
    }

    const report = {
        sign_in: signIn,
        status: landed.status(),
        url: page.url(),
        csp: (await landed.headerValue("content-security-policy")) ?? null,
        cache_control: (await landed.headerValue("cache-control")) ?? null,
        text: (await page.innerText("body")).trim(),
        cards: await page.$$eval(".card", (cards) =>
            cards.map((card) => ({
                plugin: card.dataset.plugin ?? null,
                state: card.dataset.state ?? null,
                text: card.innerText,
            })),
        ),
        images: await page.locator("img").count(),
        scripts: await page.locator("script").count(),
        overflows: await page.evaluate(
            () => document.documentElement.scrollWidth > window.innerWidth,
        ),
        cookies: (await context.cookies()).map((c) => ({
            name: c.name,
            httpOnly: c.httpOnly,
            sameSite: c.sameSite,
            path: c.path,
            secure: c.secure,
            expires: c.expires,
        })),
        other_route: null,
        console_errors: consoleErrors,
        requests,
        blocked,
    };
    if (!(await shoot(screenshot))) return;
    await page.setViewportSize(WIDE);
    if (!(await shoot(sibling(screenshot, "wide")))) return;

    // The session opens the status page only: another admin route, in the
    // same browser, is still refused.
    const other = url.replace(/\/status$/, "/plugins");
    try {
        const answer = await page.goto(other, { waitUntil: "load", timeout: TIMEOUT_MS });
        report.other_route = {
            url: other,
            status: answer ? answer.status() : null,
            text: (await page.innerText("body")).trim(),
        };
    } catch (e) {
        fail(`cannot open ${other}: ${e.message.split("\n")[0]}`);
        return;
    }

    process.stdout.write(`${JSON.stringify(report)}\n`);
}

await main(process.argv.slice(2)).catch((e) => fail(e.stack || String(e)));
