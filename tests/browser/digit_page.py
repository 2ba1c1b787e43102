#!/usr/bin/env python3
"""Drives Debian's Chromium (through Debian's chromedriver, no browser download) on the digit
page, as a person would: draws real MNIST test digits as pointer strokes, uploads pictures,
reads the answers off the page. Called by tests/digit_page_in_chromium.rs, which starts the
page's server and judges what this prints: one JSON object on the last line of stdout.

Usage: digit_page.py URL CASES.json OUT_DIR
CASES.json: {"digits": [{"label": 3, "pixels": [784 ints]}...],
             "uploads": [{"path": ..., "label": 3 or null}...]}
"""

import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.actions.pointer_input import PointerInput
from selenium.webdriver.common.actions import interaction
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

ANSWER_TIMEOUT = 30


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)


def strokes_of(pixels, threshold=128):
    """Each row's runs of ink as (x0, x1, y) in MNIST pixels."""
    out = []
    for y in range(28):
        x = 0
        while x < 28:
            if pixels[y * 28 + x] >= threshold:
                x0 = x
                while x + 1 < 28 and pixels[y * 28 + x + 1] >= threshold:
                    x += 1
                out.append((x0, x, y))
            x += 1
    return out


def seq(d):
    return int(d.execute_script("return document.getElementById('digit').dataset.seq || '0'"))


def wait_answer(d, after, source):
    """Waits until an answer newer than `after`, for `source` (stroke count or 'upload'), is
    shown and nothing is in flight; returns (digit text, status text)."""
    def done(drv):
        return drv.execute_script(
            "const g = document.getElementById('digit');"
            "return document.body.dataset.state === 'idle' && Number(g.dataset.seq || 0) > arguments[0]"
            " && g.dataset.source === arguments[1];", after, str(source))
    WebDriverWait(d, ANSWER_TIMEOUT, poll_frequency=0.05).until(done)
    return d.find_element(By.ID, "digit").text, d.find_element(By.ID, "status").text


def draw(d, pixels, kind):
    """Draws the digit's ink as strokes with a pointer of `kind` (mouse, pen, touch); returns
    how many strokes."""
    pad = d.find_element(By.ID, "pad")
    rect = d.execute_script("const r = arguments[0].getBoundingClientRect();"
                            "return [r.left, r.top, r.width, r.height];", pad)
    left, top, width, height = rect
    s = width / 28.0
    runs = strokes_of(pixels)
    pointer = {"mouse": interaction.POINTER_MOUSE, "pen": interaction.POINTER_PEN,
               "touch": interaction.POINTER_TOUCH}[kind]
    actions = ActionBuilder(d, mouse=PointerInput(pointer, kind), duration=0)
    p = actions.pointer_action
    for x0, x1, y in runs:
        cy = int(top + (y + 0.5) * s)
        p.move_to_location(int(left + (x0 + 0.5) * s), cy)
        p.pointer_down()
        p.move_to_location(int(left + (x1 + 0.5) * s), cy)
        p.pointer_up()
    actions.perform()
    return len(runs)


def clear(d):
    before = seq(d)
    d.find_element(By.ID, "clear").click()
    WebDriverWait(d, 5).until(lambda drv: seq(drv) > before)


def main():
    url, cases_path, out_dir = sys.argv[1:4]
    cases = json.load(open(cases_path))
    d = browser()
    result = {"drawn": [], "uploads": [], "errors": []}
    try:
        d.get(url)
        WebDriverWait(d, 20).until(lambda drv: drv.execute_script("return document.body.dataset.state") == "idle")
        result["title"] = d.title
        # Keyboard: Tab reaches both buttons.
        body = d.find_element(By.TAG_NAME, "body")
        focused = []
        for _ in range(4):
            body.send_keys(Keys.TAB) if not focused else d.switch_to.active_element.send_keys(Keys.TAB)
            focused.append(d.execute_script("return document.activeElement.id"))
        result["tab_order"] = focused

        kinds = ["mouse", "pen", "touch"]
        for i, case in enumerate(cases["digits"]):
            clear(d)
            before = seq(d)
            kind = kinds[i % len(kinds)]
            n = draw(d, case["pixels"], kind)
            digit, status = wait_answer(d, before, n)
            result["drawn"].append({"label": case["label"], "read": digit, "status": status, "pointer": kind,
                                    "strokes": n})
            if i == 0:
                time.sleep(0.5)  # the bars' transition
                d.save_screenshot(f"{out_dir}/page-desktop.png")
        for case in cases["uploads"]:
            before = seq(d)
            d.find_element(By.ID, "file").send_keys(case["path"])
            digit, status = wait_answer(d, before, "upload")
            error = "error" in (d.find_element(By.ID, "status").get_attribute("class") or "")
            result["uploads"].append({"path": case["path"], "label": case["label"], "read": digit,
                                      "status": status, "error_shown": error})
        # After the failed upload, the page still answers a drawing.
        clear(d)
        before = seq(d)
        n = draw(d, cases["digits"][0]["pixels"], "mouse")
        digit, status = wait_answer(d, before, n)
        result["after_error"] = {"label": cases["digits"][0]["label"], "read": digit}

        # Dark mode and the phone: the page follows prefers-color-scheme, and fits 320 px.
        light = d.execute_script("return getComputedStyle(document.documentElement).backgroundColor")
        d.execute_cdp_cmd("Emulation.setEmulatedMedia",
                          {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        dark = d.execute_script("return getComputedStyle(document.documentElement).backgroundColor")
        result["colors"] = {"light": light, "dark": dark}
        d.execute_cdp_cmd("Emulation.setEmulatedMedia",
                          {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 320, "height": 720, "deviceScaleFactor": 1, "mobile": True})
        d.refresh()
        WebDriverWait(d, 20).until(lambda drv: drv.execute_script("return document.body.dataset.state") == "idle")
        result["phone_overflow_px"] = d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
        before = seq(d)
        n = draw(d, cases["digits"][1]["pixels"], "touch")
        digit, _ = wait_answer(d, before, n)
        result["phone"] = {"label": cases["digits"][1]["label"], "read": digit}
        time.sleep(0.5)
        d.save_screenshot(f"{out_dir}/page-phone.png")

        # What the browser itself saw: console errors, and every response that failed.
        result["console_errors"] = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
        failed = []
        for entry in d.get_log("performance"):
            m = json.loads(entry["message"])["message"]
            if m["method"] == "Network.responseReceived":
                r = m["params"]["response"]
                if r["status"] >= 400:
                    failed.append(f'{r["status"]} {r["url"]}')
            elif m["method"] == "Network.loadingFailed":
                failed.append(f'failed {m["params"].get("errorText")} {m["params"].get("type")}')
        result["failed_requests"] = failed
    except Exception as e:  # reported, judged by the Rust test
        result["errors"].append(f"{type(e).__name__}: {e}")
        try:
            d.save_screenshot(f"{out_dir}/failure.png")
        except Exception:
            pass
    finally:
        d.quit()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
